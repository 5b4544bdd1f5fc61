#include "server/aggregator/aggregator.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/weights/weights.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/weights_matchers.h"

namespace layerfl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

Tensor32 T(std::string name, std::vector<int64_t> shape,
           std::vector<float> values) {
  return Tensor32{std::move(name), std::move(shape), std::move(values)};
}

// embed: [2,2]; block: w [3] + b [1]; head: [2]; frozen: [2] (never trained).
ModelWeights MakeModel() {
  ModelWeights m;
  m.layers.push_back({"embed", 3, {T("embed.w", {2, 2}, {1, 2, 3, 4})}});
  m.layers.push_back(
      {"block",
       0,
       {T("block.w", {3}, {0.5f, -1, 2}), T("block.b", {1}, {0.25f})}});
  m.layers.push_back({"head", 7, {T("head.w", {2}, {-3, 5})}});
  m.layers.push_back({"frozen", 1, {T("frozen.w", {2}, {0.1f, 0.2f})}});
  return m;
}

LayerDelta D(std::string group, std::vector<Tensor32> tensors) {
  return LayerDelta{std::move(group), std::move(tensors)};
}

LayerDelta EmbedDelta(std::vector<float> v) {
  return D("embed", {T("embed.w", {2, 2}, std::move(v))});
}
LayerDelta BlockDelta(std::vector<float> w, std::vector<float> b) {
  return D("block",
           {T("block.w", {3}, std::move(w)), T("block.b", {1}, std::move(b))});
}
LayerDelta HeadDelta(std::vector<float> v) {
  return D("head", {T("head.w", {2}, std::move(v))});
}

TEST(RejectionTest, NamesCodesAndRoundTrip) {
  const std::vector<std::pair<RejectReason, std::string>> all = {
      {RejectReason::kUnknownLayer, "unknown_layer"},
      {RejectReason::kNotAssigned, "not_assigned"},
      {RejectReason::kWrongShape, "wrong_shape"},
      {RejectReason::kNonFinite, "non_finite"},
      {RejectReason::kDuplicate, "duplicate"},
      {RejectReason::kStaleRound, "stale_round"},
      {RejectReason::kUnknownClient, "unknown_client"},
      {RejectReason::kBadSampleCount, "bad_sample_count"},
  };
  for (const auto& [reason, name] : all) {
    EXPECT_EQ(RejectReasonName(reason), name);
    const absl::Status s = Rejection(reason, "some detail");
    EXPECT_EQ(std::string(s.message()), name + ": some detail");
    const bool stale_or_dup = reason == RejectReason::kStaleRound ||
                              reason == RejectReason::kDuplicate;
    EXPECT_EQ(s.code(), stale_or_dup ? absl::StatusCode::kFailedPrecondition
                                     : absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ReasonOf(s), reason);
    // A copy rebuilt from code and message (as through a transport) too.
    EXPECT_EQ(ReasonOf(absl::Status(s.code(), std::string(s.message()))),
              reason);
  }
  EXPECT_EQ(ReasonOf(absl::OkStatus()), std::nullopt);
  EXPECT_EQ(ReasonOf(absl::InvalidArgumentError("bad config")), std::nullopt);
  EXPECT_EQ(ReasonOf(absl::InvalidArgumentError("wrong_shape without colon")),
            std::nullopt);
  EXPECT_EQ(ReasonOf(absl::InternalError("wrong_shape: other code")),
            std::nullopt);
}

TEST(AggregatorOptionsTest, Validate) {
  EXPECT_TRUE(AggregatorOptions{}.Validate().ok());
  for (double lr :
       {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    const absl::Status s = AggregatorOptions{true, lr}.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("server_lr"));
  }
}

// Three clients weighted 1, 2, 1. embed is trained by all, block only by a,
// head only by b, frozen by none.
TEST(LayerAggregatorTest, WeightedAverageMatchesHandComputed) {
  ModelWeights global = MakeModel();
  const ModelWeights before = global;
  LayerAggregator agg(global, AggregatorOptions{});

  ASSERT_TRUE(agg.Add("a", 1,
                      {EmbedDelta({4, 0, 8, -4}),
                       BlockDelta({0.5f, -0.25f, 1}, {-0.125f})},
                      {"embed", "block"})
                  .ok());
  ASSERT_TRUE(agg.Add("b", 2, {HeadDelta({1.5f, -2}), EmbedDelta({2, 2, 2, 2})},
                      {"head", "embed"})
                  .ok());
  ASSERT_TRUE(agg.Add("c", 1, {EmbedDelta({0, 4, -8, 4})}, {"embed"}).ok());

  EXPECT_EQ(agg.contributors("embed"), 3);
  EXPECT_EQ(agg.contributors("block"), 1);
  EXPECT_EQ(agg.contributors("head"), 1);
  EXPECT_EQ(agg.contributors("frozen"), 0);
  EXPECT_EQ(agg.contributors("nope"), 0);
  EXPECT_THAT(agg.clients(), ElementsAre("a", "b", "c"));

  absl::StatusOr<AggregateStats> stats = agg.Commit(global);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_THAT(stats->contributors, ElementsAre(3, 1, 1, 0));
  EXPECT_THAT(stats->changed_layers, ElementsAre("embed", "block", "head"));
  EXPECT_EQ(stats->num_clients, 3);

  // embed: (1*[4,0,8,-4] + 2*[2,2,2,2] + 1*[0,4,-8,4]) / 4 = [2,2,1,1].
  EXPECT_THAT(global.layers[0].tensors[0].values, ElementsAre(3, 4, 4, 5));
  EXPECT_EQ(global.layers[0].version, 4);
  // block: a's delta alone.
  EXPECT_THAT(global.layers[1].tensors[0].values, ElementsAre(1, -1.25f, 3));
  EXPECT_THAT(global.layers[1].tensors[1].values, ElementsAre(0.125f));
  EXPECT_EQ(global.layers[1].version, 1);
  // head: b's delta alone (weight 2 / total 2).
  EXPECT_THAT(global.layers[2].tensors[0].values, ElementsAre(-1.5f, 3));
  EXPECT_EQ(global.layers[2].version, 8);
  // frozen: untouched, bit for bit, same version.
  ModelWeights frozen_only, frozen_before;
  frozen_only.layers = {global.layers[3]};
  frozen_before.layers = {before.layers[3]};
  ExpectBitIdentical(frozen_only, frozen_before);
}

TEST(LayerAggregatorTest, UniformWeightingIgnoresSampleCounts) {
  ModelWeights global = MakeModel();
  LayerAggregator agg(global, AggregatorOptions{false, 1.0});
  ASSERT_TRUE(agg.Add("a", 1, {HeadDelta({1, 3})}, {"head"}).ok());
  // Sample counts are not used, so 0 is accepted.
  ASSERT_TRUE(agg.Add("b", 0, {HeadDelta({3, -1})}, {"head"}).ok());
  ASSERT_TRUE(agg.Commit(global).ok());
  // (1*[1,3] + 1*[3,-1]) / 2 = [2,1].
  EXPECT_THAT(global.layers[2].tensors[0].values, ElementsAre(-1, 6));
}

TEST(LayerAggregatorTest, ServerLearningRateScalesTheStep) {
  ModelWeights global = MakeModel();
  LayerAggregator agg(global, AggregatorOptions{true, 0.5});
  ASSERT_TRUE(agg.Add("a", 1, {HeadDelta({4, 8})}, {"head"}).ok());
  ASSERT_TRUE(agg.Add("b", 3, {HeadDelta({4, 0})}, {"head"}).ok());
  ASSERT_TRUE(agg.Commit(global).ok());
  // 0.5 * (1*[4,8] + 3*[4,0]) / 4 = [2,1].
  EXPECT_THAT(global.layers[2].tensors[0].values, ElementsAre(-1, 6));
  EXPECT_EQ(global.layers[2].version, 8);
}

TEST(LayerAggregatorTest, NoUpdatesLeavesModelBitIdentical) {
  ModelWeights global = MakeModel();
  const ModelWeights before = global;
  LayerAggregator agg(global, AggregatorOptions{});
  absl::StatusOr<AggregateStats> stats = agg.Commit(global);
  ASSERT_TRUE(stats.ok());
  EXPECT_TRUE(stats->changed_layers.empty());
  EXPECT_THAT(stats->contributors, ElementsAre(0, 0, 0, 0));
  ExpectBitIdentical(global, before);
}

TEST(LayerAggregatorTest, EmptyAssignmentIsAContribution) {
  ModelWeights global = MakeModel();
  const ModelWeights before = global;
  LayerAggregator agg(global, AggregatorOptions{});
  ASSERT_TRUE(agg.Add("idle", 5, {}, {}).ok());
  EXPECT_THAT(agg.clients(), ElementsAre("idle"));
  EXPECT_EQ(ReasonOf(agg.Add("idle", 5, {}, {})), RejectReason::kDuplicate);
  ASSERT_TRUE(agg.Commit(global).ok());
  ExpectBitIdentical(global, before);
}

TEST(LayerAggregatorTest, GlobalIsNotRetained) {
  ModelWeights global = MakeModel();
  auto agg = [&] {
    ModelWeights copy = global;
    return std::make_unique<LayerAggregator>(copy, AggregatorOptions{});
  }();
  ASSERT_TRUE(agg->Add("a", 1, {HeadDelta({1, 1})}, {"head"}).ok());
  ASSERT_TRUE(agg->Commit(global).ok());
  EXPECT_THAT(global.layers[2].tensors[0].values, ElementsAre(-2, 6));
}

struct BadCase {
  std::string label;
  std::string client;
  int64_t samples;
  std::vector<LayerDelta> update;
  std::vector<std::string> assigned;
  std::optional<RejectReason> reason;  // nullopt: error without a reason
};

std::vector<BadCase> BadCases() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const LayerDelta good_embed = EmbedDelta({1, 1, 1, 1});
  const LayerDelta good_block = BlockDelta({1, 2, 3}, {4});
  return {
      {"duplicate client",
       "a",
       1,
       {good_embed},
       {"embed"},
       RejectReason::kDuplicate},
      {"zero samples",
       "x",
       0,
       {good_embed},
       {"embed"},
       RejectReason::kBadSampleCount},
      {"negative samples",
       "x",
       -4,
       {good_embed},
       {"embed"},
       RejectReason::kBadSampleCount},
      {"unknown layer",
       "x",
       1,
       {good_embed, D("decoder", {T("decoder.w", {1}, {1})})},
       {"embed"},
       RejectReason::kUnknownLayer},
      {"not assigned",
       "x",
       1,
       {good_embed, good_block},
       {"embed"},
       RejectReason::kNotAssigned},
      {"assigned layer missing",
       "x",
       1,
       {good_embed},
       {"embed", "block"},
       RejectReason::kNotAssigned},
      {"layer twice",
       "x",
       1,
       {good_embed, good_embed},
       {"embed"},
       RejectReason::kDuplicate},
      {"wrong shape",
       "x",
       1,
       {good_embed,
        D("block", {T("block.w", {1, 3}, {1, 2, 3}), T("block.b", {1}, {4})})},
       {"embed", "block"},
       RejectReason::kWrongShape},
      {"values do not fill shape",
       "x",
       1,
       {good_embed,
        D("block", {T("block.w", {3}, {1, 2}), T("block.b", {1}, {4})})},
       {"embed", "block"},
       RejectReason::kWrongShape},
      {"wrong tensor name",
       "x",
       1,
       {good_embed,
        D("block", {T("block.b", {3}, {1, 2, 3}), T("block.w", {1}, {4})})},
       {"embed", "block"},
       RejectReason::kWrongShape},
      {"missing tensor",
       "x",
       1,
       {good_embed, D("block", {T("block.w", {3}, {1, 2, 3})})},
       {"embed", "block"},
       RejectReason::kWrongShape},
      // Non-finite values in the last tensor of the last layer: the earlier
      // layers must not have been folded in.
      {"nan",
       "x",
       1,
       {good_embed, BlockDelta({1, 2, 3}, {nan})},
       {"embed", "block"},
       RejectReason::kNonFinite},
      {"+inf",
       "x",
       1,
       {good_embed, BlockDelta({1, inf, 3}, {4})},
       {"embed", "block"},
       RejectReason::kNonFinite},
      {"-inf",
       "x",
       1,
       {EmbedDelta({1, 1, 1, -inf}), good_block},
       {"embed", "block"},
       RejectReason::kNonFinite},
      {"assignment names unknown layer",
       "x",
       1,
       {good_embed},
       {"embed", "decoder"},
       std::nullopt},
      {"assignment repeats a layer",
       "x",
       1,
       {good_embed},
       {"embed", "embed"},
       std::nullopt},
  };
}

// For every kind of bad update: refused with its reason, nothing changes, and
// committing afterwards gives bit-for-bit the model of a run without it.
TEST(LayerAggregatorTest, RefusedUpdatesLeaveStateBitIdentical) {
  const auto add_good = [](LayerAggregator& agg, const std::string& id) {
    const float s = id == "a" ? 1.0f : 0.3f;
    ASSERT_TRUE(agg.Add(id, id == "a" ? 3 : 5,
                        {EmbedDelta({0.1f * s, 0.7f, -0.3f, s}),
                         BlockDelta({s, 0.2f, 0.9f}, {-0.6f * s})},
                        {"embed", "block"})
                    .ok());
  };
  ModelWeights expected = MakeModel();
  {
    LayerAggregator agg(expected, AggregatorOptions{true, 0.7});
    add_good(agg, "a");
    add_good(agg, "b");
    ASSERT_TRUE(agg.Commit(expected).ok());
  }

  for (const BadCase& bad : BadCases()) {
    SCOPED_TRACE(bad.label);
    ModelWeights global = MakeModel();
    LayerAggregator agg(global, AggregatorOptions{true, 0.7});
    add_good(agg, "a");
    const absl::Status s =
        agg.Add(bad.client, bad.samples, bad.update, bad.assigned);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(ReasonOf(s), bad.reason) << s;
    if (!bad.reason) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    }
    EXPECT_THAT(agg.clients(), ElementsAre("a"));
    EXPECT_EQ(agg.contributors("embed"), 1);
    EXPECT_EQ(agg.contributors("block"), 1);
    add_good(agg, "b");
    ASSERT_TRUE(agg.Commit(global).ok());
    ExpectBitIdentical(global, expected);
  }
}

// Values read from memory a tensor at a time, as an update on disk is read;
// `fail_at` = the index of the Next call (over all passes) that fails.
class VectorSource : public DeltaSource {
 public:
  VectorSource(const std::vector<LayerDelta>& update, int fail_at = -1)
      : fail_at_(fail_at) {
    for (const LayerDelta& d : update) {
      for (const Tensor32& t : d.tensors) tensors_.push_back(t.values);
    }
  }
  absl::Status Rewind() override {
    next_ = 0;
    ++passes;
    return absl::OkStatus();
  }
  absl::StatusOr<const float*> Next(size_t numel) override {
    if (calls_++ == fail_at_) return absl::DataLossError("disk went away");
    const std::vector<float>& v = tensors_.at(next_++);
    EXPECT_EQ(v.size(), numel);
    return v.data();
  }
  int passes = 0;

 private:
  std::vector<std::vector<float>> tensors_;
  size_t next_ = 0;
  int calls_ = 0;
  const int fail_at_;
};

std::vector<LayerDelta> Shapes(std::vector<LayerDelta> update) {
  for (LayerDelta& d : update) {
    for (Tensor32& t : d.tensors) t.values.clear();
  }
  return update;
}

// AddFrom (an update read a tensor at a time, twice) folds exactly what Add
// folds; a non-finite value or an error of the source in the first pass
// changes nothing; an error in the second pass spends the aggregator.
TEST(LayerAggregatorTest, AnUpdateReadFromASourceFoldsBitIdenticallyToAdd) {
  const std::vector<LayerDelta> a = {BlockDelta({0.1f, -0.7f, 3.3f}, {1e-3f}),
                                     HeadDelta({0.25f, 1.5f})};
  const std::vector<LayerDelta> b = {BlockDelta({-0.3f, 0.9f, 0.01f}, {2.0f}),
                                     HeadDelta({-1.25f, 0.125f})};
  const std::vector<std::string> groups = {"block", "head"};
  ModelWeights expected = MakeModel();
  {
    LayerAggregator agg(expected, AggregatorOptions{true, 0.7});
    ASSERT_TRUE(agg.Add("a", 3, a, groups).ok());
    ASSERT_TRUE(agg.Add("b", 5, b, groups).ok());
    ASSERT_TRUE(agg.Commit(expected).ok());
  }
  ModelWeights global = MakeModel();
  LayerAggregator agg(global, AggregatorOptions{true, 0.7});
  VectorSource a_values(a);
  ASSERT_TRUE(agg.AddFrom("a", 3, Shapes(a), groups, a_values).ok());
  EXPECT_EQ(a_values.passes, 2);
  std::vector<LayerDelta> nan = b;
  nan[1].tensors[0].values[1] = std::nanf("");
  VectorSource nan_values(nan);
  const absl::Status refused =
      agg.AddFrom("b", 5, Shapes(nan), groups, nan_values);
  EXPECT_EQ(ReasonOf(refused), RejectReason::kNonFinite);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("tensor 'head.w'"));
  VectorSource broken(b, /*fail_at=*/1);  // the first pass's second tensor
  EXPECT_EQ(agg.AddFrom("b", 5, Shapes(b), groups, broken).code(),
            absl::StatusCode::kDataLoss);
  VectorSource b_values(b);
  ASSERT_TRUE(agg.AddFrom("b", 5, Shapes(b), groups, b_values).ok());
  ASSERT_TRUE(agg.Commit(global).ok());
  ExpectBitIdentical(global, expected);

  ModelWeights other = MakeModel();
  LayerAggregator spent(other, AggregatorOptions{true, 0.7});
  VectorSource late(a, /*fail_at=*/4);  // the second pass's second tensor
  const absl::Status lost = spent.AddFrom("a", 3, Shapes(a), groups, late);
  EXPECT_EQ(lost.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(lost.message()),
              HasSubstr("sums are incomplete and this aggregator is spent"));
  EXPECT_EQ(spent.Add("b", 5, b, groups).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(spent.Commit(other).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ExpectBitIdentical(other, MakeModel());
}

TEST(LayerAggregatorTest, RejectionMessagesNameTheProblem) {
  ModelWeights global = MakeModel();
  LayerAggregator agg(global, AggregatorOptions{});
  const absl::Status s =
      agg.Add("c7", 1, {BlockDelta({1, std::nanf(""), 3}, {4})}, {"block"});
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("non_finite: tensor 'block.w' from client 'c7'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("element 1"));
  const absl::Status m = agg.Add("c7", 1, {}, {"head"});
  EXPECT_THAT(std::string(m.message()),
              HasSubstr("not_assigned: assigned layer 'head' missing"));
}

TEST(LayerAggregatorTest, SpentAfterCommit) {
  ModelWeights global = MakeModel();
  LayerAggregator agg(global, AggregatorOptions{});
  ASSERT_TRUE(agg.Add("a", 1, {HeadDelta({1, 1})}, {"head"}).ok());
  ASSERT_TRUE(agg.Commit(global).ok());
  const ModelWeights after = global;
  EXPECT_EQ(agg.Add("b", 1, {HeadDelta({1, 1})}, {"head"}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(agg.Commit(global).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ExpectBitIdentical(global, after);
}

TEST(LayerAggregatorTest, InvalidOptionsRefuseEverything) {
  ModelWeights global = MakeModel();
  const ModelWeights before = global;
  LayerAggregator agg(global, AggregatorOptions{true, -1.0});
  const absl::Status s = agg.Add("a", 1, {HeadDelta({1, 1})}, {"head"});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("server_lr"));
  EXPECT_FALSE(agg.Commit(global).ok());
  ExpectBitIdentical(global, before);
}

TEST(LayerAggregatorTest, CommitIntoDifferentStructureFailsUntouched) {
  ModelWeights global = MakeModel();
  LayerAggregator agg(global, AggregatorOptions{});
  ASSERT_TRUE(agg.Add("a", 1, {HeadDelta({1, 1})}, {"head"}).ok());
  ModelWeights other = MakeModel();
  other.layers[1].tensors[0].shape = {1, 3};
  const ModelWeights other_before = other;
  const absl::StatusOr<AggregateStats> stats = agg.Commit(other);
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kFailedPrecondition);
  ExpectBitIdentical(other, other_before);
}

TEST(LayerAggregatorTest, OverflowingAggregateFailsUntouched) {
  ModelWeights global = MakeModel();
  const ModelWeights before = global;
  LayerAggregator agg(global, AggregatorOptions{});
  const float big = 3e38f;
  ASSERT_TRUE(agg.Add("a", 1, {EmbedDelta({1, 1, 1, 1}), HeadDelta({big, 1})},
                      {"embed", "head"})
                  .ok());
  ASSERT_TRUE(agg.Add("b", 1, {HeadDelta({big, 1})}, {"head"}).ok());
  const absl::StatusOr<AggregateStats> stats = agg.Commit(global);
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr("head.w"));
  ExpectBitIdentical(global, before);
}

// Integer-valued deltas keep every partial sum exact, so the result does not
// depend on the order in which concurrent Adds are folded.
TEST(LayerAggregatorTest, ConcurrentAddsAreSafe) {
  ModelWeights global = MakeModel();
  LayerAggregator agg(global, AggregatorOptions{});
  constexpr int kThreads = 7;
  std::vector<std::thread> threads;
  std::vector<absl::Status> dup(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&agg, &dup, i] {
      const float v = static_cast<float>(i);
      EXPECT_TRUE(agg.Add(absl::StrCat("c", i), 1,
                          {EmbedDelta({v, -v, 2 * v, 1})}, {"embed"})
                      .ok());
      dup[i] = agg.Add("same", 1, {EmbedDelta({0, 0, 0, 0})}, {"embed"});
    });
  }
  for (std::thread& t : threads) t.join();
  int accepted = 0;
  for (const absl::Status& s : dup) {
    if (s.ok()) {
      ++accepted;
    } else {
      EXPECT_EQ(ReasonOf(s), RejectReason::kDuplicate);
    }
  }
  EXPECT_EQ(accepted, 1);
  EXPECT_EQ(agg.contributors("embed"), kThreads + 1);
  ASSERT_TRUE(agg.Commit(global).ok());
  // Sum over i < 7 of [i, -i, 2i, 1] = [21, -21, 42, 7], over 8 clients.
  EXPECT_THAT(global.layers[0].tensors[0].values,
              ElementsAre(3.625f, -0.625f, 8.25f, 4.875f));
}

}  // namespace
}  // namespace layerfl
