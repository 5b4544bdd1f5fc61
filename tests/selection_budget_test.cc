// Layer costs in the three cost units, client budgets from declarations or
// the config distributions, and the platform-independent random numbers
// behind them.

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/selection/budget.h"
#include "server/selection/rng.h"

namespace layerfl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(RngTest, SequencesArePinned) {
  // std::mt19937_64's output is fixed by the C++ standard and every draw here
  // is derived from it by this library's code: these values hold everywhere.
  DeterministicRng rng(42);
  const uint64_t first = rng.NextU64();
  DeterministicRng again(42);
  EXPECT_EQ(again.NextU64(), first);
  std::mt19937_64 reference(MixSeed(42));
  EXPECT_EQ(reference(), first);
  EXPECT_EQ(MixSeed(0), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(StableHash("client-1"), StableHash(std::string("client-1")));
  EXPECT_NE(StableHash("client-1"), StableHash("client-2"));
}

TEST(RngTest, UniformDrawsStayInRange) {
  DeterministicRng rng(1);
  std::vector<int> hits(5, 0);
  for (int k = 0; k < 5000; ++k) {
    const double u = rng.UniformDouble();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    const int64_t v = rng.UniformInt(3, 7);
    ASSERT_GE(v, 3);
    ASSERT_LE(v, 7);
    ++hits[v - 3];
  }
  for (int h : hits) EXPECT_NEAR(h, 1000, 150);
}

TEST(RngTest, NormalQuantileInvertsTheCdf) {
  for (double p :
       {1e-12, 1e-6, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999, 1 - 1e-9}) {
    EXPECT_NEAR(NormalCdf(NormalQuantile(p)), p, 1e-12 + 1e-9 * p) << p;
  }
  EXPECT_NEAR(NormalQuantile(0.975), 1.959963984540054, 1e-9);
}

std::vector<LayerFootprint> Footprints() {
  return {{"embed", 1000}, {"block0", 500}, {"head", 10}};
}

TEST(LayerCostTest, LayersAndParams) {
  EXPECT_THAT(*LayerCosts(Footprints(), CostUnit::kLayers),
              ElementsAre(1, 1, 1));
  EXPECT_THAT(*LayerCosts(Footprints(), CostUnit::kParams),
              ElementsAre(1000, 500, 10));
  // The profiled units carry per-client cost models; the table is neutral.
  EXPECT_THAT(*LayerCosts(Footprints(), CostUnit::kTime), ElementsAre(1, 1, 1));
}

TEST(LayerCostTest, BadFootprintsNameTheLayer) {
  std::vector<LayerFootprint> bad = Footprints();
  bad[1].num_params = 0;
  EXPECT_THAT(LayerCosts(bad, CostUnit::kParams).status().message(),
              HasSubstr("layer 'block0'"));
  EXPECT_TRUE(LayerCosts(bad, CostUnit::kLayers).ok());
}

TEST(BudgetTest, ContinuousDrawsAreRealNumbersWithinBounds) {
  BudgetDistribution d;
  d.continuous = true;
  d.kind = BudgetDistribution::Kind::kUniform;
  d.min = 0.5;
  d.max = 1.5;
  int fractional = 0;
  for (int k = 0; k < 200; ++k) {
    const double b =
        *ResolveClientBudget(d, 3, "c" + std::to_string(k), std::nullopt);
    EXPECT_GE(b, 0.5);
    EXPECT_LE(b, 1.5);
    fractional += b != std::floor(b);
  }
  EXPECT_GT(fractional, 190);
  d.kind = BudgetDistribution::Kind::kFixed;
  d.value = 0.75;
  EXPECT_EQ(*ResolveClientBudget(d, 3, "a", std::nullopt), 0.75);
  EXPECT_EQ(*ResolveClientBudget(d, 3, "a", 0.5), 0.5);  // declared caps it
}

TrainingProfile HandProfile() {
  TrainingProfile p;
  p.groups = {"embed", "block0", "head"};
  p.batch_size = 32;
  p.step_fixed_s = 0.01;
  p.step_per_group_s = {0.004, 0.002, 0.001};
  p.step_depth_s = {0, 0.003, 0.0005};
  p.scoring_s = 0.2;
  p.fixed_bytes = 1000;
  p.per_group_bytes = {300, 200, 100};
  p.depth_bytes = {0, 50, 25};
  return p;
}

TEST(CostModelFromProfileTest, TimeAndMemoryByHand) {
  // 10 steps on a device half as fast, in a round that scores.
  absl::StatusOr<CostModel> time =
      CostModelFromProfile(HandProfile(), CostUnit::kTime, {10, true, 0.5});
  ASSERT_TRUE(time.ok()) << time.status();
  EXPECT_DOUBLE_EQ(time->fixed, 20 * 0.01 + 0.2 / 0.5);
  EXPECT_DOUBLE_EQ(time->per_layer[0], 20 * 0.004);
  EXPECT_DOUBLE_EQ(time->depth[1], 20 * 0.003);
  // Training block0 + head: 0.6 + 0.04 + 0.02 + (0.06 + 0.01).
  EXPECT_NEAR(time->Cost({1, 2}), 0.6 + 0.04 + 0.02 + 0.06 + 0.01, 1e-12);
  absl::StatusOr<CostModel> no_score =
      CostModelFromProfile(HandProfile(), CostUnit::kTime, {10, false, 1});
  EXPECT_DOUBLE_EQ(no_score->fixed, 0.1);
  absl::StatusOr<CostModel> memory =
      CostModelFromProfile(HandProfile(), CostUnit::kMemory, {10, true, 0.5});
  ASSERT_TRUE(memory.ok());
  // Memory does not depend on steps or speed: 1000 + 200 + 100 + 50 + 25.
  EXPECT_DOUBLE_EQ(memory->Cost({1, 2}), 1375);
  EXPECT_DOUBLE_EQ(BudgetInCostUnits(CostUnit::kMemory, 2), 2 * 1048576.0);
  EXPECT_DOUBLE_EQ(BudgetInCostUnits(CostUnit::kTime, 2), 2);
  EXPECT_THAT(CostModelFromProfile(HandProfile(), CostUnit::kLayers, {})
                  .status()
                  .message(),
              HasSubstr("not measured by a profile"));
  EXPECT_THAT(
      CostModelFromProfile(HandProfile(), CostUnit::kTime, {1, false, 0})
          .status()
          .message(),
      HasSubstr("speed"));
  TrainingProfile bad = HandProfile();
  bad.depth_bytes.pop_back();
  EXPECT_THAT(
      CostModelFromProfile(bad, CostUnit::kMemory, {}).status().message(),
      HasSubstr("profile.depth_bytes: 2 values for 3 groups"));
}

TEST(LayerCostTest, ParseNames) {
  EXPECT_EQ(*ParseCostUnit("memory"), CostUnit::kMemory);
  EXPECT_EQ(*ParseCostUnit("time"), CostUnit::kTime);
  EXPECT_EQ(std::string(CostUnitName(CostUnit::kParams)), "params");
  EXPECT_THAT(ParseCostUnit("bytes").status().message(),
              HasSubstr("valid: layers, params, time, memory"));
  EXPECT_EQ(*ParseBudgetDistribution("truncated_normal"),
            BudgetDistribution::Kind::kTruncatedNormal);
  EXPECT_THAT(ParseBudgetDistribution("normal").status().message(),
              HasSubstr("valid: fixed, uniform, truncated_normal, declared"));
}

BudgetDistribution Dist(BudgetDistribution::Kind kind) {
  BudgetDistribution d;
  d.kind = kind;
  return d;
}

TEST(BudgetTest, FixedAndDeclared) {
  BudgetDistribution fixed = Dist(BudgetDistribution::Kind::kFixed);
  fixed.value = 3;
  EXPECT_EQ(*ResolveClientBudget(fixed, 1, "a", std::nullopt), 3);
  // A declared budget caps a drawn one.
  EXPECT_EQ(*ResolveClientBudget(fixed, 1, "a", 2), 2);
  EXPECT_EQ(*ResolveClientBudget(fixed, 1, "a", 9), 3);
  const BudgetDistribution declared = Dist(BudgetDistribution::Kind::kDeclared);
  EXPECT_EQ(*ResolveClientBudget(declared, 1, "a", 1234567), 1234567);
  absl::StatusOr<int64_t> missing =
      ResolveClientBudget(declared, 1, "client-7", std::nullopt);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("client 'client-7'"));
  EXPECT_THAT(
      ResolveClientBudget(declared, 1, "client-8", -5).status().message(),
      HasSubstr("client 'client-8': declared budget must be >= 0"));
}

TEST(BudgetTest, UniformIsDeterministicPerClientAndCoversTheRange) {
  BudgetDistribution d = Dist(BudgetDistribution::Kind::kUniform);
  d.min = 2;
  d.max = 5;
  std::map<int64_t, int> hits;
  for (int k = 0; k < 400; ++k) {
    const std::string id = "client-" + std::to_string(k);
    const int64_t b = *ResolveClientBudget(d, 7, id, std::nullopt);
    EXPECT_EQ(b, *ResolveClientBudget(d, 7, id, std::nullopt));
    ++hits[b];
  }
  EXPECT_EQ(hits.size(), 4u);
  EXPECT_EQ(hits.begin()->first, 2);
  EXPECT_EQ(hits.rbegin()->first, 5);
  int changed = 0;
  for (int k = 0; k < 50; ++k) {
    const std::string id = "client-" + std::to_string(k);
    changed += *ResolveClientBudget(d, 7, id, std::nullopt) !=
               *ResolveClientBudget(d, 8, id, std::nullopt);
  }
  EXPECT_GT(changed, 20);
}

TEST(BudgetTest, TruncatedNormalStaysInBoundsWithTheRightMean) {
  BudgetDistribution d = Dist(BudgetDistribution::Kind::kTruncatedNormal);
  d.min = 1;
  d.max = 12;
  d.mean = 4;
  d.std = 3;
  double sum = 0;
  const int n = 4000;
  for (int k = 0; k < n; ++k) {
    const int64_t b =
        *ResolveClientBudget(d, 3, "c" + std::to_string(k), std::nullopt);
    ASSERT_GE(b, 1);
    ASSERT_LE(b, 12);
    sum += static_cast<double>(b);
  }
  // Mean of N(4, 3) truncated to [1, 12]: 4 + 3 (phi(-1) - phi(8/3)) /
  // (Phi(8/3) - Phi(-1)) = 4.826. Rounding to integers moves it by about
  // (half the mass at each end) / 2; the sampling error is ~0.04.
  EXPECT_NEAR(sum / n, 4.826, 0.12);
}

TEST(BudgetTest, TruncatedNormalInverseCdf) {
  EXPECT_DOUBLE_EQ(TruncatedNormalFromUniform(0, 1, -1, 1, 0.5), 0.0);
  EXPECT_NEAR(TruncatedNormalFromUniform(0, 1, -1, 1, 0.0), -1.0, 1e-12);
  EXPECT_NEAR(TruncatedNormalFromUniform(0, 1, -1, 1, 1 - 1e-16), 1.0, 1e-9);
  // Far in the tails the draw stays finite and inside the interval.
  for (double u : {0.0, 0.25, 0.5, 0.999}) {
    const double hi = TruncatedNormalFromUniform(0, 1, 30, 31, u);
    EXPECT_GE(hi, 30);
    EXPECT_LE(hi, 31);
    const double lo = TruncatedNormalFromUniform(0, 1, -41, -40, u);
    EXPECT_GE(lo, -41);
    EXPECT_LE(lo, -40);
  }
  // Monotone in u.
  double last = -1e300;
  for (int k = 0; k < 100; ++k) {
    const double x = TruncatedNormalFromUniform(2, 0.5, 1, 4, k / 100.0);
    EXPECT_GE(x, last);
    last = x;
  }
}

TEST(BudgetTest, ValidateNamesTheField) {
  BudgetDistribution d = Dist(BudgetDistribution::Kind::kTruncatedNormal);
  d.std = 0;
  EXPECT_THAT(d.Validate().message(), HasSubstr("budget.std"));
  d = Dist(BudgetDistribution::Kind::kUniform);
  d.min = 3;
  d.max = 2;
  EXPECT_THAT(d.Validate().message(), HasSubstr("budget.max"));
  d.min = 2.2;
  d.max = 2.8;
  EXPECT_THAT(d.Validate().message(), HasSubstr("must contain an integer"));
  d = Dist(BudgetDistribution::Kind::kFixed);
  d.value = -1;
  EXPECT_THAT(d.Validate().message(), HasSubstr("budget.value"));
  EXPECT_FALSE(ResolveClientBudget(d, 0, "a", std::nullopt).ok());
}

}  // namespace
}  // namespace layerfl
