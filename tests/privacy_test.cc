// The privacy library: the RDP accountant against published figures, the
// noise source's statistics, clipping and the privatised scores.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/privacy/dp.h"
#include "common/privacy/noise.h"
#include "common/privacy/rdp_accountant.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;

// TF Privacy's MNIST DP-SGD tutorial (tutorials/README.md, its table of
// "Select Parameters"): 60000 examples, batches of 256, delta = 1e-5, epsilon
// as that accountant reported it (the classic conversion, the orders of
// RdpAccountant::DefaultOrders, steps = epochs * 60000 // 256).
TEST(RdpAccountantTest, MatchesTfPrivacyMnistTutorialTable) {
  struct Row {
    double sigma;
    int epochs;
    double epsilon;
  };
  const double q = 256.0 / 60000.0;
  for (const Row& row : {Row{1.12, 60, 2.92}, Row{0.6, 30, 9.74},
                         Row{1.2, 10, 1.20}}) {
    const int64_t steps = row.epochs * 60000 / 256;
    absl::StatusOr<double> eps =
        ComputeEpsilon(q, row.sigma, steps, 1e-5, RdpConversion::kClassic);
    ASSERT_TRUE(eps.ok());
    EXPECT_NEAR(*eps, row.epsilon, 0.02 * row.epsilon)
        << "sigma " << row.sigma << " epochs " << row.epochs;
  }
}

// The figure: q = 256/60000, sigma = 1.1, 60 epochs, delta = 1e-5 is
// epsilon ~3.0 (TF Privacy's compute_dp_sgd_privacy); the improved
// conversion is never worse than the classic one.
TEST(RdpAccountantTest, TfPrivacyDefaultSettingNearThree) {
  const double q = 256.0 / 60000.0;
  const int64_t steps = 60 * 60000 / 256;
  absl::StatusOr<double> classic =
      ComputeEpsilon(q, 1.1, steps, 1e-5, RdpConversion::kClassic);
  absl::StatusOr<double> improved =
      ComputeEpsilon(q, 1.1, steps, 1e-5, RdpConversion::kImproved);
  ASSERT_TRUE(classic.ok() && improved.ok());
  EXPECT_NEAR(*classic, 3.0, 0.06);
  EXPECT_LE(*improved, *classic);
  EXPECT_GT(*improved, 0.8 * *classic);
}

// Abadi et al. 2016 (Deep Learning with Differential Privacy, §3.1): with
// q = 0.01, sigma = 4, delta = 1e-5 and 10000 steps the moments accountant
// gives epsilon ~1.26 (strong composition: 9.34).
TEST(RdpAccountantTest, MatchesDpSgdPaperMomentsAccountant) {
  absl::StatusOr<double> eps =
      ComputeEpsilon(0.01, 4.0, 10000, 1e-5, RdpConversion::kClassic);
  ASSERT_TRUE(eps.ok());
  EXPECT_NEAR(*eps, 1.26, 0.02 * 1.26);
}

// Without sampling the Gaussian mechanism's RDP is alpha / (2 z^2) exactly,
// and composition adds.
TEST(RdpAccountantTest, FullBatchIsPlainGaussian) {
  EXPECT_DOUBLE_EQ(SubsampledGaussianRdp(1.0, 2.0, 5.0), 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(SubsampledGaussianRdp(0.0, 2.0, 5.0), 0.0);
  RdpAccountant acc({2.0, 10.0});
  ASSERT_TRUE(acc.Compose(1.0, 1.0, 3).ok());
  EXPECT_DOUBLE_EQ(acc.rdp()[0], 3.0);   // 3 * 2 / 2
  EXPECT_DOUBLE_EQ(acc.rdp()[1], 15.0);  // 3 * 10 / 2
  // Classic conversion at order 2: 3 + log(1e5) / 1.
  EXPECT_NEAR(acc.Epsilon(1e-5, RdpConversion::kClassic),
              std::min(3.0 + std::log(1e5), 15.0 + std::log(1e5) / 9), 1e-12);
}

// Integer and fractional orders use different formulas; they must agree
// where they meet (the fractional series evaluated just off an integer).
TEST(RdpAccountantTest, FractionalSeriesContinuousAtIntegers) {
  for (double q : {0.001, 0.01, 0.1}) {
    for (double z : {0.7, 1.1, 4.0}) {
      for (double a : {2.0, 5.0, 12.0}) {
        const double at = SubsampledGaussianRdp(q, z, a);
        const double near = SubsampledGaussianRdp(q, z, a + 1e-9);
        EXPECT_NEAR(near, at, 1e-6 * std::max(at, 1e-12))
            << q << " " << z << " " << a;
      }
    }
  }
}

TEST(RdpAccountantTest, EpsilonGrowsWithStepsAndFallsWithNoise) {
  double last = 0;
  RdpAccountant acc;
  for (int round = 0; round < 20; ++round) {
    ASSERT_TRUE(acc.Compose(0.1, 1.0).ok());
    const double eps = acc.Epsilon(1e-5);
    EXPECT_GT(eps, last);
    last = eps;
  }
  EXPECT_GT(*ComputeEpsilon(0.1, 0.8, 100, 1e-5),
            *ComputeEpsilon(0.1, 1.6, 100, 1e-5));
}

TEST(RdpAccountantTest, NoiseMultiplierForInvertsEpsilon) {
  const double q = 256.0 / 60000.0;
  const int64_t steps = 60 * 60000 / 256;
  absl::StatusOr<double> z = NoiseMultiplierFor(q, steps, 1e-5, 3.0);
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_NEAR(*ComputeEpsilon(q, *z, steps, 1e-5), 3.0, 1e-3);
  EXPECT_GT(*ComputeEpsilon(q, *z * 0.99, steps, 1e-5), 3.0);
}

TEST(RdpAccountantTest, BadArgumentsNamed) {
  RdpAccountant acc;
  EXPECT_THAT(acc.Compose(1.5, 1.0).message(), HasSubstr("sampling rate q"));
  EXPECT_THAT(acc.Compose(0.1, 0.0).message(), HasSubstr("noise multiplier"));
  EXPECT_THAT(acc.Compose(0.1, 1.0, -1).message(), HasSubstr("steps"));
  EXPECT_THAT(ComputeEpsilon(0.1, 1, 1, 0).status().message(),
              HasSubstr("delta"));
  EXPECT_EQ(acc.Epsilon(1e-5), 0.0);  // nothing composed
}

TEST(RdpAccountantTest, SerializeRoundTripsExactly) {
  RdpAccountant acc;
  ASSERT_TRUE(acc.Compose(0.05, 1.3, 17).ok());
  absl::StatusOr<RdpAccountant> back = RdpAccountant::Parse(acc.Serialize());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->orders(), acc.orders());
  EXPECT_EQ(back->rdp(), acc.rdp());
  EXPECT_EQ(back->Epsilon(1e-5), acc.Epsilon(1e-5));
  EXPECT_THAT(RdpAccountant::Parse("nonsense").status().message(),
              HasSubstr("rdp-v1"));
  EXPECT_THAT(RdpAccountant::Parse("rdp-v1 0x1p+1:-1").status().message(),
              HasSubstr("bad RDP value"));
}

TEST(GaussianSourceTest, MomentsMatchStandardNormal) {
  GaussianSource source(DerivedNoiseKey(7, "moments"));
  const int n = 200000;
  double sum = 0, sq = 0, quart = 0;
  for (int i = 0; i < n; ++i) {
    const double x = source.Next();
    sum += x;
    sq += x * x;
    quart += x * x * x * x;
  }
  const double mean = sum / n, var = sq / n - mean * mean;
  // Standard errors: mean 1/sqrt(n) ~ 0.0022, variance sqrt(2/n) ~ 0.0032.
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(var, 1.0, 0.015);
  EXPECT_NEAR(quart / n, 3.0, 0.06);
}

TEST(GaussianSourceTest, DerivedKeysReproduceRandomKeysDiffer) {
  GaussianSource a(DerivedNoiseKey(1, "x")), b(DerivedNoiseKey(1, "x"));
  GaussianSource c(DerivedNoiseKey(1, "y")), d(DerivedNoiseKey(2, "x"));
  GaussianSource e(RandomNoiseKey()), f(RandomNoiseKey());
  for (int i = 0; i < 5; ++i) {
    const double va = a.Next();
    EXPECT_EQ(va, b.Next());
    EXPECT_NE(va, c.Next());
    EXPECT_NE(va, d.Next());
    EXPECT_NE(e.Next(), f.Next());
  }
}

std::vector<LayerDelta> Update(std::vector<std::vector<float>> layers) {
  std::vector<LayerDelta> update;
  for (size_t l = 0; l < layers.size(); ++l) {
    LayerDelta d;
    d.group = "g" + std::to_string(l);
    d.tensors.push_back({"t", {static_cast<int64_t>(layers[l].size())},
                         layers[l]});
    update.push_back(d);
  }
  return update;
}

// The clip is over the whole sparse update, every layer together.
TEST(DpTest, UpdateOfNormTenCArrivesWithNormC) {
  std::vector<LayerDelta> u = Update({{3, 0}, {0, 4}});  // norm 5
  EXPECT_DOUBLE_EQ(UpdateNorm(u), 5.0);
  EXPECT_DOUBLE_EQ(ClipUpdate(u, 0.5), 5.0);
  EXPECT_NEAR(UpdateNorm(u), 0.5, 1e-7);
  EXPECT_NEAR(u[0].tensors[0].values[0], 0.3, 1e-7);
  EXPECT_NEAR(u[1].tensors[0].values[1], 0.4, 1e-7);
  std::vector<LayerDelta> small = Update({{0.3f, 0.4f}});
  ClipUpdate(small, 1.0);  // inside the ball: untouched
  EXPECT_EQ(small[0].tensors[0].values, (std::vector<float>{0.3f, 0.4f}));
}

TEST(DpTest, AddedNoiseHasTheAskedStd) {
  std::vector<LayerDelta> u = Update({std::vector<float>(50000, 1.0f),
                                      std::vector<float>(50000, -1.0f)});
  GaussianSource source(DerivedNoiseKey(3, "std"));
  AddNoise(u, 0.25, source);
  double sq = 0;
  int n = 0;
  for (size_t l = 0; l < 2; ++l) {
    for (float v : u[l].tensors[0].values) {
      const double e = v - (l == 0 ? 1.0 : -1.0);
      sq += e * e;
      ++n;
    }
  }
  EXPECT_NEAR(std::sqrt(sq / n), 0.25, 0.25 * 0.01);
}

TEST(DpTest, PrivatizedScoresNormalisedClippedNoised) {
  GaussianSource source(DerivedNoiseKey(1, "scores"));
  // Without noise: normalised to sum 1 (then inside the unit ball).
  std::vector<double> s = PrivatizeScores({2, 6, -1, NAN}, 1.0, 0.0, source);
  EXPECT_THAT(s, ::testing::ElementsAre(0.25, 0.75, 0.0, 0.0));
  // A clip below the normalised norm scales it.
  s = PrivatizeScores({1, 0}, 0.5, 0.0, source);
  EXPECT_THAT(s, ::testing::ElementsAre(0.5, 0.0));
  // With noise the mean over many draws is the clean vector (where not
  // clamped) and every entry is >= 0.
  double mean0 = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::vector<double> v = PrivatizeScores({1, 1}, 1.0, 0.1, source);
    EXPECT_GE(v[0], 0);
    EXPECT_GE(v[1], 0);
    mean0 += v[0] / n;
  }
  EXPECT_NEAR(mean0, 0.5, 0.005);
}

// Andrew et al. 2021: C <- C exp(-lr (b - gamma)).
TEST(DpTest, AdaptiveClipStepAndBudgetSplit) {
  EXPECT_DOUBLE_EQ(NextClipNorm(1.0, 0.5, 0.5, 0.2), 1.0);
  EXPECT_DOUBLE_EQ(NextClipNorm(2.0, 1.0, 0.5, 0.2), 2.0 * std::exp(-0.1));
  EXPECT_DOUBLE_EQ(NextClipNorm(2.0, 0.0, 0.5, 0.2), 2.0 * std::exp(0.1));
  // z = 1 with a count std of 1 (multiplier 2): 1 = z_u^-2 + 1/4.
  absl::StatusOr<double> zu = UpdateNoiseMultiplier(1.0, 1.0);
  ASSERT_TRUE(zu.ok());
  EXPECT_DOUBLE_EQ(*zu, 1.0 / std::sqrt(0.75));
  EXPECT_NEAR(JointNoiseMultiplier({*zu, 2.0}), 1.0, 1e-12);
  EXPECT_THAT(UpdateNoiseMultiplier(1.0, 0.5).status().message(),
              HasSubstr("count"));
}

// The command-line tool prints what the library computes.
TEST(PrivacyToolTest, PrintsEpsilonAndSigma) {
  auto run = [](const std::string& args) {
    std::string out;
    FILE* p = popen((std::string(LAYERFL_BIN_DIR) + "/layerfl-privacy " + args +
                     " 2>&1")
                        .c_str(),
                    "r");
    char buf[256];
    while (fgets(buf, sizeof(buf), p)) out += buf;
    const int rc = pclose(p);
    return std::make_pair(WEXITSTATUS(rc), out);
  };
  auto [rc, out] = run("--q 0.0042666 --sigma 1.1 --steps 14062 --delta 1e-5");
  EXPECT_EQ(rc, 0) << out;
  const double expected = *ComputeEpsilon(0.0042666, 1.1, 14062, 1e-5);
  const size_t at = out.rfind("epsilon=");
  ASSERT_NE(at, std::string::npos) << out;
  EXPECT_NEAR(std::stod(out.substr(at + 8)), expected, 1e-5 * expected);
  std::tie(rc, out) =
      run("--q 0.0042666 --target_epsilon 3 --steps 14062 --delta 1e-5");
  EXPECT_EQ(rc, 0) << out;
  ASSERT_NE(out.rfind("sigma="), std::string::npos) << out;
  std::tie(rc, out) = run("--q 2 --sigma 1 --steps 3");
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(out, HasSubstr("--q"));
  std::tie(rc, out) = run("--q 0.1 --steps 3");
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(out, HasSubstr("--sigma"));

  // Local mode: also epsilon against the coordinator, which picks the
  // sample (no amplification: the Gaussian mechanism every round). By hand,
  // classic conversion: RDP(a) = T a / (2 s^2), epsilon = min over a of
  // RDP(a) + log(1/delta) / (a - 1) = T / (2 s^2) + 2 sqrt(T log(1/delta) /
  // (2 s^2)); T = 4, s = 2, delta = 1e-5: 0.5 + 2 sqrt(5.7565) = 5.29853.
  std::tie(rc, out) =
      run("--q 0.5 --sigma 2 --steps 4 --delta 1e-5 --mode local "
          "--conversion classic");
  EXPECT_EQ(rc, 0) << out;
  const size_t c = out.find("epsilon_coordinator=");
  ASSERT_NE(c, std::string::npos) << out;
  const double by_hand =
      4.0 / 8.0 + 2.0 * std::sqrt(4.0 * std::log(1e5) / 8.0);
  const double coordinator = std::stod(out.substr(c + 20));
  EXPECT_GE(coordinator, by_hand - 1e-9);  // the orders are a grid
  EXPECT_NEAR(coordinator, by_hand, 1e-3 * by_hand) << out;
  // Against the released model the sample is secret: amplified, smaller,
  // and what the accountant gives for q = 0.5.
  const double model = std::stod(out.substr(out.rfind("epsilon=") + 8));
  RdpAccountant amplified;
  ASSERT_TRUE(amplified.Compose(0.5, 2.0, 4).ok());
  EXPECT_NEAR(model, amplified.Epsilon(1e-5, RdpConversion::kClassic),
              1e-5 * model);
  EXPECT_LT(model, coordinator);
  // The case: sigma 1, q = 0.01, 1,000 rounds: 2.10 against the
  // model, 655 against the coordinator.
  std::tie(rc, out) = run("--q 0.01 --sigma 1 --steps 1000 --mode local");
  EXPECT_THAT(out, HasSubstr("epsilon_coordinator=654.8"));
  EXPECT_THAT(out, HasSubstr("epsilon=2.101"));
  std::tie(rc, out) = run("--q 0.01 --sigma 1 --steps 3 --mode both");
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(out, HasSubstr("--mode"));
}

}  // namespace
}  // namespace layerfl
