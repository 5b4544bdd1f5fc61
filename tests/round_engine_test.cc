#include "server/round/round_engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "common/privacy/noise.h"
#include "common/privacy/rdp_accountant.h"
#include "common/secagg/participant.h"
#include "server/round/score_book.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/round/selector.h"
#include "tests/round_fakes.h"

namespace layerfl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using RoundEngineTest = EngineTest;

RoundEngineOptions Opts(int clients_per_round, int min_clients) {
  RoundEngineOptions o;
  o.rounds = 3;
  o.clients_per_round = clients_per_round;
  o.min_clients = min_clients;
  o.round_deadline = absl::Seconds(10);
  o.max_round_retries = 1;
  return o;
}

TEST_F(RoundEngineTest, WeightedAggregationOverTheRound) {
  auto e = Make(Opts(0, 2));
  JoinAll(*e, {{"c1", 1}, {"c2", 3}});
  selector_.layers["c2"] = {"a", "b"};
  ASSERT_TRUE(e->StartRound().ok());
  Task t1 = e->TaskFor("c1");
  EXPECT_EQ(t1.kind, TaskKind::kTrain);
  EXPECT_EQ(t1.round, 1);
  EXPECT_THAT(t1.layers, ElementsAre("a"));
  EXPECT_THAT(e->TaskFor("c2").layers, ElementsAre("a", "b"));
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {4.0f, 8.0f})}).ok());
  EXPECT_TRUE(e->round_running());
  ASSERT_TRUE(e->SubmitUpdate("c2", 1, 3,
                              {Delta("a", {0.0f, 4.0f}), Delta("b", {2.0f})})
                  .ok());
  // a += (1*[4,8] + 3*[0,4]) / 4 = [1, 5]; b += 3*2/3 = 2.
  EXPECT_FALSE(e->round_running());
  EXPECT_EQ(e->committed_round(), 1);
  ModelWeights g = e->global();
  EXPECT_THAT(g.layers[0].tensors[0].values, ElementsAre(2.0f, 7.0f));
  EXPECT_THAT(g.layers[1].tensors[0].values, ElementsAre(12.0f));
  EXPECT_THAT(e->layer_versions(), ElementsAre(1, 1));
  std::vector<RoundRecord> records = e->TakeRecords();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].bytes_up, 5 * 4);  // 2 + 3 floats
  EXPECT_THAT(records[0].changed_layers, ElementsAre("a", "b"));
  EXPECT_THAT(records[0].ToJson(), HasSubstr("\"layers\":[\"a\",\"b\"]"));
}

TEST_F(RoundEngineTest, UntrainedLayerKeepsItsVersion) {
  auto e = Make(Opts(0, 1));
  JoinAll(*e, {{"c1", 5}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 5, {Delta("a", {1.0f, 1.0f})}).ok());
  EXPECT_THAT(e->layer_versions(), ElementsAre(1, 0));
  EXPECT_THAT(e->global().layers[1].tensors[0].values, ElementsAre(10.0f));
}

TEST_F(RoundEngineTest, StragglerDroppedAtDeadlineAndLateUploadRefused) {
  auto e = Make(Opts(0, 2));
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"slow", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {2.0f, 2.0f})}).ok());
  ASSERT_TRUE(e->SubmitUpdate("c2", 1, 1, {Delta("a", {4.0f, 4.0f})}).ok());
  EXPECT_TRUE(e->round_running());  // still waiting for "slow"
  clock_.Advance(absl::Seconds(9));
  ASSERT_TRUE(e->Tick().ok());
  EXPECT_TRUE(e->round_running());
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(e->Tick().ok());
  EXPECT_EQ(e->committed_round(), 1);
  EXPECT_THAT(e->global().layers[0].tensors[0].values, ElementsAre(4.0f, 5.0f));
  // The straggler's upload for round 1 arrives during round 2 and is refused.
  ASSERT_TRUE(e->StartRound().ok());
  absl::Status late =
      e->SubmitUpdate("slow", 1, 1, {Delta("a", {100.0f, 100.0f})});
  EXPECT_EQ(ReasonOf(late), RejectReason::kStaleRound);
  EXPECT_THAT(late.message(),
              HasSubstr("for round 1, but round 2 is training"));
  EXPECT_EQ(e->rejected_total().at("stale_round"), 1);
  auto records = e->TakeRecords();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_FALSE(records[0].clients[2].contributed);
  EXPECT_EQ(records[0].clients[2].id, "slow");
}

TEST_F(RoundEngineTest, LateUploadInSameRoundAfterDropRefused) {
  auto e = Make(Opts(0, 1));
  JoinAll(*e, {{"c1", 1}, {"slow", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {2.0f, 2.0f})}).ok());
  // Scoring-free round; make a second phase by dropping at the deadline while
  // the round is kept open by nothing else: it commits at the deadline.
  clock_.Advance(absl::Seconds(11));
  ASSERT_TRUE(e->Tick().ok());
  EXPECT_EQ(e->committed_round(), 1);
  absl::Status late = e->SubmitUpdate("slow", 1, 1, {Delta("a", {9.0f, 9.0f})});
  EXPECT_EQ(ReasonOf(late), RejectReason::kStaleRound);
  EXPECT_THAT(e->global().layers[0].tensors[0].values, ElementsAre(3.0f, 4.0f));
}

TEST_F(RoundEngineTest, QuorumMissAbandonsRoundThenRunFails) {
  auto e = Make(Opts(0, 2));
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {2.0f, 2.0f})}).ok());
  clock_.Advance(absl::Seconds(11));
  ASSERT_TRUE(e->Tick().ok());  // abandoned, one retry left
  EXPECT_FALSE(e->round_running());
  EXPECT_EQ(e->committed_round(), 0);
  EXPECT_THAT(e->global().layers[0].tensors[0].values, ElementsAre(1.0f, 2.0f));
  EXPECT_THAT(e->layer_versions(), ElementsAre(0, 0));
  // The retry of round 1: c1's earlier update is not carried over.
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("c1").round, 1);
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kTrain);
  clock_.Advance(absl::Seconds(11));
  absl::Status fatal = e->Tick();
  EXPECT_EQ(fatal.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(fatal.message(), HasSubstr("round 1 missed its quorum (0 of 2"));
  EXPECT_FALSE(e->StartRound().ok());
}

TEST_F(RoundEngineTest, SamplesClientsPerRoundDeterministically) {
  auto e1 = Make(Opts(2, 1));
  auto e2 = Make(Opts(2, 1));
  for (auto* e : {e1.get(), e2.get()}) {
    JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}, {"c4", 1}, {"c5", 1}});
    ASSERT_TRUE(e->StartRound().ok());
  }
  std::vector<std::string> p1, p2;
  for (std::string id : {"c1", "c2", "c3", "c4", "c5"}) {
    if (e1->TaskFor(id).kind == TaskKind::kTrain) p1.push_back(id);
    if (e2->TaskFor(id).kind == TaskKind::kTrain) p2.push_back(id);
  }
  EXPECT_EQ(p1.size(), 2u);
  EXPECT_EQ(p1, p2);
}

TEST_F(RoundEngineTest, ScoringPhaseThenTraining) {
  selector_.needs_scores = true;
  auto e = Make(Opts(0, 1));
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kScore);
  // An update during scoring is refused as stale (wrong phase).
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c1", 1, 1, {Delta("a", {1, 1})})),
            RejectReason::kStaleRound);
  // Bad scores are refused, naming the layer.
  absl::Status bad = e->SubmitScores("c1", 1, {1.0, -2.0});
  EXPECT_THAT(bad.message(),
              HasSubstr("score of layer 'b' must be finite and >= 0"));
  EXPECT_EQ(ReasonOf(e->SubmitScores("c1", 1, {1.0})),
            RejectReason::kWrongShape);
  ASSERT_TRUE(e->SubmitScores("c1", 1, {1.0, 2.0}).ok());
  EXPECT_EQ(ReasonOf(e->SubmitScores("c1", 1, {1.0, 2.0})),
            RejectReason::kDuplicate);
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kWait);
  ASSERT_TRUE(e->SubmitScores("c2", 1, {3.0, 4.0}).ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kTrain);
  EXPECT_THAT(selector_.last_scores["c2"], ElementsAre(3.0, 4.0));
}

TEST_F(RoundEngineTest, ScoringDeadlineDropsSilentClientFromTraining) {
  selector_.needs_scores = true;
  auto e = Make(Opts(0, 1));
  JoinAll(*e, {{"c1", 1}, {"quiet", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitScores("c1", 1, {1.0, 2.0}).ok());
  clock_.Advance(absl::Seconds(11));
  ASSERT_TRUE(e->Tick().ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kTrain);
  EXPECT_EQ(e->TaskFor("quiet").kind, TaskKind::kWait);
  EXPECT_EQ(ReasonOf(e->SubmitScores("quiet", 1, {1.0, 1.0})),
            RejectReason::kStaleRound);
}

TEST_F(RoundEngineTest, RefusalsChangeNothingAndAreCounted) {
  auto e = Make(Opts(0, 2));
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("ghost", 1, 1, {Delta("a", {1, 1})})),
            RejectReason::kUnknownClient);
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c1", 1, 1, {Delta("b", {1})})),
            RejectReason::kNotAssigned);
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c1", 1, 1, {Delta("zz", {1})})),
            RejectReason::kUnknownLayer);
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c1", 1, 1, {Delta("a", {1, 1, 1})})),
            RejectReason::kWrongShape);
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c1", 1, 1, {Delta("a", {NAN, 1})})),
            RejectReason::kNonFinite);
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c1", 7, 1, {Delta("a", {1, 1})})),
            RejectReason::kStaleRound);
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c1", 1, int64_t{1} << 62,
                                     {Delta("a", {1, 1})})),
            RejectReason::kBadSampleCount);
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {2, 2})}).ok());
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c1", 1, 1, {Delta("a", {2, 2})})),
            RejectReason::kDuplicate);
  ASSERT_TRUE(e->SubmitUpdate("c2", 1, 1, {Delta("a", {4, 4})}).ok());
  EXPECT_THAT(e->global().layers[0].tensors[0].values, ElementsAre(4.0f, 5.0f));
  auto totals = e->rejected_total();
  EXPECT_EQ(totals["unknown_client"], 1);
  EXPECT_EQ(totals["not_assigned"], 1);
  EXPECT_EQ(totals["unknown_layer"], 1);
  EXPECT_EQ(totals["wrong_shape"], 1);
  EXPECT_EQ(totals["non_finite"], 1);
  EXPECT_EQ(totals["stale_round"], 1);
  EXPECT_EQ(totals["duplicate"], 1);
  EXPECT_EQ(totals["bad_sample_count"], 1);
  EXPECT_EQ(e->TakeRecords()[0].rejected.size(), 8u);
}

TEST_F(RoundEngineTest, LeaveMidRoundCountsAsDropped) {
  auto e = Make(Opts(0, 1));
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {2, 2})}).ok());
  e->Leave("c2");
  EXPECT_EQ(e->committed_round(), 1);
}

TEST_F(RoundEngineTest, FinishesAfterConfiguredRounds) {
  auto e = Make(Opts(0, 1));
  JoinAll(*e, {{"c1", 1}});
  for (int r = 1; r <= 3; ++r) {
    ASSERT_TRUE(e->StartRound().ok());
    ASSERT_TRUE(e->SubmitUpdate("c1", r, 1, {Delta("a", {1, 1})}).ok());
  }
  EXPECT_TRUE(e->finished());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kFinished);
  EXPECT_THAT(e->StartRound().message(), HasSubstr("finished"));
  EXPECT_THAT(e->layer_versions(), ElementsAre(3, 0));
}

TEST_F(RoundEngineTest, ResumesFromLastCheckpoint) {
  const std::string dir = ::testing::TempDir() + "/engine_resume";
  std::filesystem::remove_all(dir);
  auto store = CheckpointStore::Open(dir, 2);
  ASSERT_TRUE(store.ok()) << store.status();
  {
    auto e = Make(Opts(0, 1), store->get());
    EXPECT_FALSE(e->resumed());
    JoinAll(*e, {{"c1", 1}});
    for (int r = 1; r <= 2; ++r) {
      ASSERT_TRUE(e->StartRound().ok());
      ASSERT_TRUE(e->SubmitUpdate("c1", r, 1, {Delta("a", {1, 1})}).ok());
    }
  }
  selector_.commits = -1;
  auto e = Make(Opts(0, 1), store->get());
  EXPECT_TRUE(e->resumed());
  EXPECT_EQ(e->committed_round(), 2);
  EXPECT_EQ(selector_.commits, 2);  // regulation state restored
  EXPECT_THAT(e->global().layers[0].tensors[0].values, ElementsAre(3.0f, 4.0f));
  EXPECT_THAT(e->layer_versions(), ElementsAre(2, 0));
  JoinAll(*e, {{"c1", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("c1").round, 3);
}

TEST_F(RoundEngineTest, CheckpointOfAnotherModelNamesTheTensorAndBothShapes) {
  const std::string dir = ::testing::TempDir() + "/engine_other_model";
  std::filesystem::remove_all(dir);
  auto store = CheckpointStore::Open(dir, 2);
  ASSERT_TRUE(store.ok());
  {
    auto e = Make(Opts(0, 1), store->get());
    JoinAll(*e, {{"c1", 1}});
    ASSERT_TRUE(e->StartRound().ok());
    ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {1, 1})}).ok());
  }
  ModelWeights wider = TwoLayers();
  wider.layers[0].tensors[0].shape = {3};
  wider.layers[0].tensors[0].values = {1, 2, 3};
  RoundEngine::Deps deps;
  deps.clock = &clock_;
  deps.selector = &selector_;
  deps.store = store->get();
  auto refused = RoundEngine::Create(Opts(0, 1), wider, deps);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(),
              HasSubstr("the model's tensor 'a.w' of shape [3] vs the "
                        "checkpoint's 'a.w' of shape [2]"));
}

TEST_F(RoundEngineTest, JoinValidatesFields) {
  auto e = Make(Opts(0, 1));
  EXPECT_THAT(e->Join({"", 1, 1.0}).message(),
              HasSubstr("client id must have 1 to 128 characters, got 0"));
  EXPECT_THAT(e->Join({"a\tb", 1, 1.0}).message(),
              HasSubstr("client id 'a\\tb' may only hold letters, digits"));
  EXPECT_THAT(e->Join({"x", 0, 1.0}).message(),
              HasSubstr("num_samples must be in [1, 10^12], got 0"));
  EXPECT_THAT(e->Join({"x", int64_t{1} << 62, 1.0}).message(),
              HasSubstr("num_samples must be in [1, 10^12]"));
  EXPECT_THAT(e->Join({"x", 1, -1.0}).message(),
              HasSubstr("budget must be > 0"));
  EXPECT_THAT(e->StartRound().message(), HasSubstr("only 0 clients joined"));
}

// --- differential privacy (privacy.dp) ---

RoundEngineOptions DpOpts(int rounds, double z) {
  RoundEngineOptions o = Opts(0, 1);
  o.rounds = rounds;
  o.aggregation.weight_by_samples = false;
  o.privacy.enabled = true;
  o.privacy.clip_norm = 1.0;
  o.privacy.noise_multiplier = z;
  o.privacy.noise_seed = 99;
  return o;
}

// Central mode: the coordinator clips each whole update to C and adds
// N(0, (zC)^2) to every value of a layer sum before dividing by its count.
TEST_F(RoundEngineTest, CentralDpClipsEachUpdateAndNoisesTheSums) {
  const double z = 0.5;
  auto e = Make(DpOpts(1, z));
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  // c1: norm 50, scaled to 1 (its sample count does not matter).
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1000, {Delta("a", {30, 40})}).ok());
  // c2: norm 0.5, inside the ball.
  ASSERT_TRUE(e->SubmitUpdate("c2", 1, 1, {Delta("a", {0, 0.5f})}).ok());
  ASSERT_EQ(e->committed_round(), 1);
  GaussianSource noise(DerivedNoiseKey(99, "sums|1|0"));
  const float scale = static_cast<float>(1.0 / 50.0);
  float y0 = 30 * scale, y1 = 40 * scale + 0.5f;
  y0 = static_cast<float>(y0 + z * noise.Next());
  y1 = static_cast<float>(y1 + z * noise.Next());
  ModelWeights g = e->global();
  EXPECT_FLOAT_EQ(g.layers[0].tensors[0].values[0], 1.0f + 0.5f * y0);
  EXPECT_FLOAT_EQ(g.layers[0].tensors[0].values[1], 2.0f + 0.5f * y1);
  EXPECT_THAT(g.layers[1].tensors[0].values, ElementsAre(10.0f));  // no one
  std::vector<RoundRecord> records = e->TakeRecords();
  ASSERT_EQ(records.size(), 1u);
  // Both joined clients took part: q = 1, one Gaussian of multiplier z.
  EXPECT_DOUBLE_EQ(records[0].epsilon, *ComputeEpsilon(1.0, z, 1, 1e-5));
  EXPECT_THAT(records[0].ToJson(), HasSubstr("\"privacy\":{\"epsilon\":"));
  EXPECT_DOUBLE_EQ(e->epsilon(), records[0].epsilon);
}

// An update of norm 10C moves the model by C (noise made negligible).
TEST_F(RoundEngineTest, CentralDpUpdateOfNormTenCArrivesWithNormC) {
  auto e = Make(DpOpts(1, 1e-9));
  JoinAll(*e, {{"c1", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {6, 8})}).ok());
  ModelWeights g = e->global();
  EXPECT_NEAR(g.layers[0].tensors[0].values[0] - 1.0f, 0.6f, 1e-6);
  EXPECT_NEAR(g.layers[0].tensors[0].values[1] - 2.0f, 0.8f, 1e-6);
}

// Epsilon never decreases, is the accountant's over the rounds run, and the
// run stops before a round that would pass the target.
TEST_F(RoundEngineTest, DpEpsilonGrowsAndTargetStopsTheRun) {
  RoundEngineOptions o = DpOpts(10, 1.0);
  o.clients_per_round = 1;  // one of two joined clients: q = 1/2
  const double eps2 = *ComputeEpsilon(0.5, 1.0, 2, 1e-5);
  const double eps3 = *ComputeEpsilon(0.5, 1.0, 3, 1e-5);
  o.privacy.target_epsilon = 0.5 * (eps2 + eps3);
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  double last = 0;
  for (int r = 1; r <= 2; ++r) {
    ASSERT_TRUE(e->StartRound().ok());
    for (const char* id : {"c1", "c2"}) {
      if (e->TaskFor(id).kind == TaskKind::kTrain) {
        ASSERT_TRUE(e->SubmitUpdate(id, r, 1, {Delta("a", {0.1f, 0})}).ok());
      }
    }
    ASSERT_EQ(e->committed_round(), r);
    const double eps = e->epsilon();
    EXPECT_GT(eps, last);
    last = eps;
  }
  EXPECT_DOUBLE_EQ(last, eps2);
  EXPECT_FALSE(e->finished());
  ASSERT_TRUE(e->StartRound().ok());  // ends the run instead
  EXPECT_TRUE(e->finished());
  EXPECT_FALSE(e->round_running());
  EXPECT_EQ(e->committed_round(), 2);
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kFinished);
}

// Adaptive clipping: after a round where every update fit, the clip norm
// shrinks by exp(-lr (b - gamma)), b the noised unclipped fraction.
TEST_F(RoundEngineTest, AdaptiveClipMovesTowardTheQuantile) {
  RoundEngineOptions o = DpOpts(2, 1.0);
  o.privacy.adaptive = true;
  o.privacy.count_noise_std = 2.0;
  o.privacy.target_quantile = 0.5;
  o.privacy.clip_lr = 0.2;
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}, {"c4", 1}});
  for (int r = 1; r <= 2; ++r) {
    ASSERT_TRUE(e->StartRound().ok());
    for (const char* id : {"c1", "c2", "c3", "c4"}) {
      ASSERT_TRUE(e->SubmitUpdate(id, r, 1, {Delta("a", {0.1f, 0})}).ok());
    }
  }
  std::vector<RoundRecord> records = e->TakeRecords();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_DOUBLE_EQ(records[0].clip_norm, 1.0);
  GaussianSource count(DerivedNoiseKey(99, "count|1|0"));
  const double fraction = (4 * 0.5 + 2.0 * count.Next()) / 4 + 0.5;
  EXPECT_DOUBLE_EQ(records[1].clip_norm, std::exp(-0.2 * (fraction - 0.5)));
  // The count shares the budget: the round is still one mechanism of z = 1.
  EXPECT_DOUBLE_EQ(records[0].noise_multiplier, 1.0);
}

// Local mode: the engine adds nothing and clips nothing (the clients did),
// tells each trainer how many share its layers, and accounts a round whose
// contributors fell short with the noise that really arrived.
TEST_F(RoundEngineTest, LocalDpTellsParticipantsAndAccountsDropouts) {
  RoundEngineOptions o = DpOpts(1, 1.0);
  o.privacy.central = false;
  o.min_clients = 1;
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}, {"c4", 1}});
  selector_.layers["c4"] = {"a", "b"};
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_THAT(e->TaskFor("c1").layer_participants, ElementsAre(4));
  EXPECT_THAT(e->TaskFor("c4").layer_participants, ElementsAre(4, 1));
  for (const char* id : {"c1", "c2", "c3"}) {
    ASSERT_TRUE(e->SubmitUpdate(id, 1, 1, {Delta("a", {4, 0})}).ok());
  }
  clock_.Advance(absl::Seconds(11));  // c4 never answers
  ASSERT_TRUE(e->Tick().ok());
  ASSERT_EQ(e->committed_round(), 1);
  // Exactly the mean: no server noise, no clipping.
  EXPECT_THAT(e->global().layers[0].tensors[0].values, ElementsAre(5.0f, 2.0f));
  std::vector<RoundRecord> records = e->TakeRecords();
  EXPECT_DOUBLE_EQ(records[0].noise_multiplier, std::sqrt(3.0 / 4.0));
}

TEST_F(RoundEngineTest, DpStateSurvivesResumeAndRefusesAPlainCheckpoint) {
  const std::string dir = ::testing::TempDir() + "/engine_dp_resume";
  std::filesystem::remove_all(dir);
  auto store = CheckpointStore::Open(dir, 2);
  ASSERT_TRUE(store.ok());
  double eps = 0;
  {
    auto e = Make(DpOpts(3, 1.0), store->get());
    JoinAll(*e, {{"c1", 1}});
    for (int r = 1; r <= 2; ++r) {
      ASSERT_TRUE(e->StartRound().ok());
      ASSERT_TRUE(e->SubmitUpdate("c1", r, 1, {Delta("a", {1, 1})}).ok());
    }
    eps = e->epsilon();
  }
  {
    auto e = Make(DpOpts(3, 1.0), store->get());
    EXPECT_TRUE(e->resumed());
    EXPECT_EQ(e->epsilon(), eps);
  }
  // A run without privacy wrote this one.
  const std::string plain = ::testing::TempDir() + "/engine_dp_plain";
  std::filesystem::remove_all(plain);
  auto store2 = CheckpointStore::Open(plain, 2);
  ASSERT_TRUE(store2.ok());
  {
    auto e = Make(Opts(0, 1), store2->get());
    JoinAll(*e, {{"c1", 1}});
    ASSERT_TRUE(e->StartRound().ok());
    ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {1, 1})}).ok());
  }
  RoundEngine::Deps deps;
  deps.clock = &clock_;
  deps.selector = &selector_;
  deps.store = store2->get();
  auto refused = RoundEngine::Create(DpOpts(3, 1.0), TwoLayers(), deps);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("without privacy.dp"));
}

// --- secure aggregation (privacy.secure_aggregation) ---

RoundEngineOptions SecAggOpts() {
  RoundEngineOptions o = Opts(0, 2);
  o.rounds = 2;
  o.aggregation.weight_by_samples = false;
  o.secagg.enabled = true;
  o.secagg.threshold = 0.6;  // 3 of 4
  o.secagg.value_range = 8.0;
  return o;
}

// Drives every client through the secure steps of one round; `no_upload`
// clients vanish before sending their masked update, `silent` ones after.
void SecureRound(RoundEngine& e, FakeClock& clock,
                 std::map<std::string, std::unique_ptr<SecAggParticipant>>& ps,
                 const std::map<std::string, std::vector<LayerDelta>>& updates,
                 const std::set<std::string>& no_upload,
                 const std::set<std::string>& silent) {
  const int64_t round = e.committed_round() + 1;
  for (auto& [id, p] : ps) {
    Task t = e.TaskFor(id);
    ASSERT_EQ(t.kind, TaskKind::kAdvertise) << id;
    ASSERT_TRUE(e.SubmitAdvert(id, round, p->Advertise(round)).ok());
  }
  for (auto& [id, p] : ps) {
    Task t = e.TaskFor(id);
    ASSERT_EQ(t.kind, TaskKind::kShareKeys) << id;
    absl::StatusOr<std::vector<SecAggShare>> shares = p->ShareKeys(*t.roster);
    ASSERT_TRUE(shares.ok()) << shares.status();
    ASSERT_TRUE(e.SubmitShares(id, round, *shares).ok());
  }
  for (auto& [id, p] : ps) {
    Task t = e.TaskFor(id);
    ASSERT_EQ(t.kind, TaskKind::kTrain) << id;
    if (no_upload.count(id)) continue;
    absl::StatusOr<SecAggMaskedInput> in =
        p->Mask(round, t.shares, updates.at(id));
    ASSERT_TRUE(in.ok()) << in.status();
    // The plain path is closed while aggregating securely.
    EXPECT_THAT(e.SubmitUpdate(id, round, 1, updates.at(id)).message(),
                HasSubstr("protocol"));
    ASSERT_TRUE(e.SubmitMasked(id, round, *in).ok());
  }
  if (!no_upload.empty()) {
    clock.Advance(absl::Seconds(11));
    ASSERT_TRUE(e.Tick().ok());
  }
  for (auto& [id, p] : ps) {
    if (no_upload.count(id) || silent.count(id)) continue;
    Task t = e.TaskFor(id);
    ASSERT_EQ(t.kind, TaskKind::kUnmask) << id;
    absl::StatusOr<SecAggUnmaskResponse> r = p->Unmask(*t.unmask);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(e.SubmitUnmask(id, round, *r).ok());
  }
  if (!silent.empty()) {
    clock.Advance(absl::Seconds(11));
    ASSERT_TRUE(e.Tick().ok());
  }
}

std::map<std::string, std::unique_ptr<SecAggParticipant>> Participants(
    const std::vector<std::string>& ids) {
  std::map<std::string, std::unique_ptr<SecAggParticipant>> ps;
  for (const std::string& id : ids) {
    ps[id] = std::make_unique<SecAggParticipant>(
        id, std::vector<std::string>{"a", "b"}, 42);
  }
  return ps;
}

// The securely aggregated mean is the plain one up to the quantization step
// (1 / scale ~ 1.5e-8 here, below float precision at these magnitudes).
TEST_F(RoundEngineTest, SecureAggregationCommitsTheExactPerLayerMean) {
  auto e = Make(SecAggOpts());
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}, {"c4", 1}});
  selector_.layers["c2"] = {"a", "b"};
  selector_.layers["c4"] = {"b"};
  ASSERT_TRUE(e->StartRound().ok());
  auto ps = Participants({"c1", "c2", "c3", "c4"});
  std::map<std::string, std::vector<LayerDelta>> updates = {
      {"c1", {Delta("a", {1.0f, -2.0f})}},
      {"c2", {Delta("a", {3.0f, 0.5f}), Delta("b", {4.0f})}},
      {"c3", {Delta("a", {-1.0f, 0.25f})}},
      {"c4", {Delta("b", {-2.0f})}},
  };
  SecureRound(*e, clock_, ps, updates, {}, {});
  ASSERT_EQ(e->committed_round(), 1);
  ModelWeights g = e->global();
  // a: [1, 2] + mean of c1..c3 = [1, -1.25/3]; b: 10 + mean(4, -2) = 11.
  EXPECT_FLOAT_EQ(g.layers[0].tensors[0].values[0], 1.0f + 1.0f);
  EXPECT_NEAR(g.layers[0].tensors[0].values[1], 2.0f - 1.25f / 3, 1e-6);
  EXPECT_FLOAT_EQ(g.layers[1].tensors[0].values[0], 11.0f);
  std::vector<RoundRecord> records = e->TakeRecords();
  EXPECT_EQ(records[0].bytes_up, (2 + 3 + 2 + 1) * 4);
}

// One client vanishes before uploading (its masks are removed through its
// key shares), one after (its self mask through the others'): the sums are
// those of the three that uploaded.
TEST_F(RoundEngineTest, SecureAggregationSurvivesDropoutsBeforeAndAfterUpload) {
  RoundEngineOptions o = SecAggOpts();
  o.secagg.threshold = 0.5;  // 3 of 5
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}, {"c4", 1}, {"c5", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  auto ps = Participants({"c1", "c2", "c3", "c4", "c5"});
  std::map<std::string, std::vector<LayerDelta>> updates;
  for (int i = 1; i <= 5; ++i) {
    updates["c" + std::to_string(i)] = {Delta("a", {1.0f * i, 0.5f})};
  }
  SecureRound(*e, clock_, ps, updates, {"c2"}, {"c5"});
  ASSERT_EQ(e->committed_round(), 1);
  // Uploaded: c1, c3, c4, c5 -> mean a = [13/4, 0.5].
  ModelWeights g = e->global();
  EXPECT_FLOAT_EQ(g.layers[0].tensors[0].values[0], 1.0f + 13.0f / 4);
  EXPECT_FLOAT_EQ(g.layers[0].tensors[0].values[1], 2.5f);
  std::vector<RoundRecord> records = e->TakeRecords();
  int contributed = 0;
  for (const ClientRoundRecord& c : records[0].clients)
    contributed += c.contributed;
  EXPECT_EQ(contributed, 4);
}

// Fewer updates than the threshold: the attempt is abandoned, nothing of it
// is kept, and the retry starts from the keys again.
TEST_F(RoundEngineTest, SecureAggregationBelowThresholdAbandonsAndRetries) {
  RoundEngineOptions o = SecAggOpts();
  o.secagg.threshold = 1.0;  // every advertiser must upload
  o.min_clients = 1;
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  auto ps = Participants({"c1", "c2", "c3"});
  for (auto& [id, p] : ps)
    ASSERT_TRUE(e->SubmitAdvert(id, 1, p->Advertise(1)).ok());
  for (auto& [id, p] : ps) {
    ASSERT_TRUE(
        e->SubmitShares(id, 1, *p->ShareKeys(*e->TaskFor(id).roster)).ok());
  }
  for (const char* id : {"c1", "c2"}) {
    Task t = e->TaskFor(id);
    ASSERT_TRUE(
        e->SubmitMasked(id, 1, *ps[id]->Mask(1, t.shares, {Delta("a", {1, 1})}))
            .ok());
  }
  clock_.Advance(absl::Seconds(11));
  ASSERT_TRUE(e->Tick().ok());  // c3 never uploaded: 2 < t = 3
  EXPECT_EQ(e->committed_round(), 0);
  EXPECT_FALSE(e->round_running());
  EXPECT_THAT(e->global().layers[0].tensors[0].values, ElementsAre(1.0f, 2.0f));
  EXPECT_THAT(e->layer_versions(), ElementsAre(0, 0));
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kAdvertise);
}

// An active attacker among the participants (issue 22). c5 sends shares
// of the right length that do not authenticate: every honest peer leaves it
// out of its masks and names it, the engine drops it (counted bad_share),
// and the round commits with exactly the honest clients' mean.
TEST_F(RoundEngineTest, SecureAggregationExcludesASenderOfBadShares) {
  RoundEngineOptions o = SecAggOpts();
  o.secagg.threshold = 0.5;  // 3 of 5
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}, {"c4", 1}, {"c5", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  auto ps = Participants({"c1", "c2", "c3", "c4", "c5"});
  for (auto& [id, p] : ps) {
    ASSERT_TRUE(e->SubmitAdvert(id, 1, p->Advertise(1)).ok());
  }
  for (auto& [id, p] : ps) {
    absl::StatusOr<std::vector<SecAggShare>> shares =
        p->ShareKeys(*e->TaskFor(id).roster);
    ASSERT_TRUE(shares.ok()) << shares.status();
    if (id == "c5") {
      for (SecAggShare& share : *shares) {
        for (char& c : share.ciphertext) c = static_cast<char>(c ^ 0x5a);
      }
    }
    ASSERT_TRUE(e->SubmitShares(id, 1, *shares).ok());
  }
  for (auto& [id, p] : ps) {
    const Task t = e->TaskFor(id);
    ASSERT_EQ(t.kind, TaskKind::kTrain) << id;
    const float x = static_cast<float>(id.back() - '0');
    absl::StatusOr<SecAggMaskedInput> in =
        p->Mask(1, t.shares, {Delta("a", {x, 0.5f})});
    ASSERT_TRUE(in.ok()) << id << ": " << in.status();
    EXPECT_EQ(in->excluded, id == "c5" ? std::vector<std::string>{}
                                       : std::vector<std::string>{"c5"})
        << id;
    ASSERT_TRUE(e->SubmitMasked(id, 1, *in).ok()) << id;
  }
  // The unmask step asks the four honest clients only.
  EXPECT_EQ(e->TaskFor("c5").kind, TaskKind::kWait);
  for (const char* id : {"c1", "c2", "c3", "c4"}) {
    const Task t = e->TaskFor(id);
    ASSERT_EQ(t.kind, TaskKind::kUnmask) << id;
    EXPECT_THAT(t.unmask->dropped, ElementsAre("c5"));
    ASSERT_TRUE(e->SubmitUnmask(id, 1, *ps[id]->Unmask(*t.unmask)).ok());
  }
  ASSERT_EQ(e->committed_round(), 1);
  // a = [1, 2] + mean of c1..c4 = [1 + 10/4, 2.5].
  ModelWeights g = e->global();
  EXPECT_FLOAT_EQ(g.layers[0].tensors[0].values[0], 1.0f + 10.0f / 4);
  EXPECT_FLOAT_EQ(g.layers[0].tensors[0].values[1], 2.5f);
  std::vector<RoundRecord> records = e->TakeRecords();
  EXPECT_EQ(records[0].attempt, 0);
  EXPECT_EQ(records[0].rejected.at("bad_share"), 1);
  for (const ClientRoundRecord& c : records[0].clients) {
    EXPECT_EQ(c.contributed, c.id != "c5") << c.id;
  }
}

// c4 reveals a corrupted share at the unmask step: its response is refused
// (bad_share, caught by the dealer's commitment), it is left out of the
// unmasking, the secrets are rebuilt from the others' shares, and the round
// commits in the same attempt with every survivor's update (c4's included).
TEST_F(RoundEngineTest, SecureAggregationExcludesALyingUnmaskResponse) {
  RoundEngineOptions o = SecAggOpts();
  o.secagg.threshold = 0.5;  // 2 of 4
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}, {"c4", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  auto ps = Participants({"c1", "c2", "c3", "c4"});
  for (auto& [id, p] : ps) {
    ASSERT_TRUE(e->SubmitAdvert(id, 1, p->Advertise(1)).ok());
  }
  for (auto& [id, p] : ps) {
    ASSERT_TRUE(
        e->SubmitShares(id, 1, *p->ShareKeys(*e->TaskFor(id).roster)).ok());
  }
  for (auto& [id, p] : ps) {
    const float x = static_cast<float>(id.back() - '0');
    ASSERT_TRUE(e->SubmitMasked(
                      id, 1, *p->Mask(1, e->TaskFor(id).shares,
                                      {Delta("a", {x, 0.5f})}))
                    .ok());
  }
  absl::StatusOr<SecAggUnmaskResponse> lie =
      ps["c4"]->Unmask(*e->TaskFor("c4").unmask);
  ASSERT_TRUE(lie.ok());
  lie->self_mask_shares.at("c1")[0] ^= 1;
  const absl::Status refused = e->SubmitUnmask("c4", 1, *lie);
  EXPECT_THAT(refused.message(), HasSubstr("does not match its commitment"));
  EXPECT_EQ(e->committed_round(), 0);
  for (const char* id : {"c1", "c2", "c3"}) {
    ASSERT_TRUE(
        e->SubmitUnmask(id, 1, *ps[id]->Unmask(*e->TaskFor(id).unmask)).ok());
  }
  ASSERT_EQ(e->committed_round(), 1);
  // a = [1, 2] + mean of c1..c4 = [1 + 10/4, 2.5].
  ModelWeights g = e->global();
  EXPECT_FLOAT_EQ(g.layers[0].tensors[0].values[0], 1.0f + 10.0f / 4);
  EXPECT_FLOAT_EQ(g.layers[0].tensors[0].values[1], 2.5f);
  std::vector<RoundRecord> records = e->TakeRecords();
  EXPECT_EQ(records[0].attempt, 0);
  EXPECT_EQ(records[0].rejected.at("bad_share"), 1);
}

// An attempt a cheater broke (here its exclusion leaves fewer updates than
// min_clients) is abandoned without using up max_round_retries: with none
// allowed the run goes on to the next attempt instead of failing.
TEST_F(RoundEngineTest, AnAttemptACheaterBrokeDoesNotUseUpTheRetries) {
  RoundEngineOptions o = SecAggOpts();
  o.min_clients = 3;
  o.max_round_retries = 0;
  o.secagg.threshold = 0.6;  // 2 of 3
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  auto ps = Participants({"c1", "c2", "c3"});
  for (auto& [id, p] : ps) {
    ASSERT_TRUE(e->SubmitAdvert(id, 1, p->Advertise(1)).ok());
  }
  for (auto& [id, p] : ps) {
    std::vector<SecAggShare> shares = *p->ShareKeys(*e->TaskFor(id).roster);
    if (id == "c3") {
      for (SecAggShare& share : shares) share.ciphertext[0] ^= 1;
    }
    ASSERT_TRUE(e->SubmitShares(id, 1, shares).ok());
  }
  for (auto& [id, p] : ps) {
    ASSERT_TRUE(e->SubmitMasked(id, 1,
                                *p->Mask(1, e->TaskFor(id).shares,
                                         {Delta("a", {1.0f, 1.0f})}))
                    .ok());
  }
  for (const char* id : {"c1", "c2"}) {
    ASSERT_TRUE(
        e->SubmitUnmask(id, 1, *ps[id]->Unmask(*e->TaskFor(id).unmask)).ok());
  }
  // Two updates left of min_clients 3: abandoned, model untouched ...
  EXPECT_EQ(e->committed_round(), 0);
  EXPECT_FALSE(e->round_running());
  EXPECT_THAT(e->global().layers[0].tensors[0].values, ElementsAre(1.0f, 2.0f));
  // ... and the next attempt starts although no retry was allowed.
  EXPECT_TRUE(e->Tick().ok());
  EXPECT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kAdvertise);
}

// A cheater that accuses as many honest peers as it may (n - t) strands
// every holder and breaks the attempt; it cannot do so again: it sits out
// the round's next attempt (it accused two peers), its two victims too
// while enough others remain, and the round commits on the next attempt
// although no retry was allowed.
TEST_F(RoundEngineTest, ACheaterThatAccusesHonestPeersCannotStallTheRound) {
  RoundEngineOptions o = SecAggOpts();
  o.min_clients = 3;
  o.max_round_retries = 0;
  o.secagg.threshold = 0.5;  // a majority: 4 of 6
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}, {"c4", 1}, {"c5", 1},
               {"c6", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  auto ps = Participants({"c1", "c2", "c3", "c4", "c5", "c6"});
  for (auto& [id, p] : ps) {
    ASSERT_TRUE(e->SubmitAdvert(id, 1, p->Advertise(1)).ok());
  }
  for (auto& [id, p] : ps) {
    ASSERT_TRUE(
        e->SubmitShares(id, 1, *p->ShareKeys(*e->TaskFor(id).roster)).ok());
  }
  for (auto& [id, p] : ps) {
    absl::StatusOr<SecAggMaskedInput> in =
        p->Mask(1, e->TaskFor(id).shares, {Delta("a", {1.0f, 1.0f})});
    ASSERT_TRUE(in.ok()) << in.status();
    if (id == "c6") in->excluded = {"c1", "c2"};  // a lie: their shares were fine
    ASSERT_TRUE(e->SubmitMasked(id, 1, *in).ok()) << id;
  }
  EXPECT_EQ(e->committed_round(), 0);
  EXPECT_FALSE(e->round_running());  // broken: too few survivors
  ASSERT_TRUE(e->StartRound().ok());
  for (const char* out : {"c1", "c2", "c6"}) {
    EXPECT_EQ(e->TaskFor(out).kind, TaskKind::kWait) << out;
  }
  auto again = Participants({"c3", "c4", "c5"});
  for (auto& [id, p] : again) {
    ASSERT_EQ(e->TaskFor(id).kind, TaskKind::kAdvertise) << id;
    ASSERT_TRUE(e->SubmitAdvert(id, 1, p->Advertise(1)).ok());
  }
  for (auto& [id, p] : again) {
    ASSERT_TRUE(
        e->SubmitShares(id, 1, *p->ShareKeys(*e->TaskFor(id).roster)).ok());
  }
  for (auto& [id, p] : again) {
    ASSERT_TRUE(e->SubmitMasked(id, 1,
                                *p->Mask(1, e->TaskFor(id).shares,
                                         {Delta("a", {3.0f, 0.0f})}))
                    .ok());
  }
  for (auto& [id, p] : again) {
    ASSERT_TRUE(
        e->SubmitUnmask(id, 1, *p->Unmask(*e->TaskFor(id).unmask)).ok());
  }
  ASSERT_EQ(e->committed_round(), 1);
  EXPECT_FLOAT_EQ(e->global().layers[0].tensors[0].values[0], 1.0f + 3.0f);
  std::vector<RoundRecord> records = e->TakeRecords();
  EXPECT_EQ(records[0].attempt, 1);
}

TEST_F(RoundEngineTest, SecureStepsRefusedWhenOffAndForOthers) {
  auto plain = Make(Opts(0, 1));
  JoinAll(*plain, {{"c1", 1}});
  ASSERT_TRUE(plain->StartRound().ok());
  SecAggParticipant p("c1", {"a", "b"}, 1);
  EXPECT_THAT(plain->SubmitAdvert("c1", 1, p.Advertise(1)).message(),
              HasSubstr("protocol: client 'c1' sent a key advert; this run "
                        "does not aggregate securely"));
  auto e = Make(SecAggOpts());
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  SecAggParticipant q("c2", {"a", "b"}, 1);
  EXPECT_THAT(e->SubmitAdvert("c1", 1, q.Advertise(1)).message(),
              HasSubstr("sent the key advert of 'c2'"));
  EXPECT_THAT(e->SubmitShares("c1", 1, {}).message(), HasSubstr("stale_round"));
  EXPECT_EQ(e->rejected_total().at("protocol"), 1);
}

// A scoring task goes no deeper than the client's memory limit holds by its
// profile: its budget in unit memory, or its declared cap, the lower.
TEST_F(RoundEngineTest, ScoringTaskStopsAtWhatTheMemoryLimitHolds) {
  selector_.needs_scores = true;
  RoundEngineOptions o = Opts(0, 4);
  o.budget_unit = "memory";
  auto e = Make(o);
  auto profile = std::make_shared<TrainingProfile>();
  profile->groups = {"a", "b"};
  // Scoring from a peaks at 3 MiB, from b at 1 MiB.
  profile->scoring_bytes = {3 << 20, 1 << 20};
  auto join = [&](const std::string& id, double budget_mb, double cap_mb,
                  bool with_profile) {
    ClientInfo c(id, 10, budget_mb);
    c.max_memory_mb = cap_mb;
    if (with_profile) c.profile = profile;
    ASSERT_TRUE(e->Join(c).ok());
  };
  join("roomy", 3.0, 0, true);        // holds the whole pass
  join("tight", 2.0, 0, true);        // only b's
  join("capped", 8.0, 0.5, true);     // the cap holds nothing
  join("unprofiled", 0.5, 0, false);  // nothing to go by: everything
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("roomy").kind, TaskKind::kScore);
  EXPECT_EQ(e->TaskFor("roomy").score_from, 0);
  EXPECT_EQ(e->TaskFor("tight").score_from, 1);
  EXPECT_EQ(e->TaskFor("capped").score_from, 2);
  EXPECT_EQ(e->TaskFor("unprofiled").score_from, 0);
}

// Under a time budget only a declared memory cap limits the scoring pass.
TEST_F(RoundEngineTest, ScoringDepthUnderATimeBudgetFollowsTheCap) {
  selector_.needs_scores = true;
  RoundEngineOptions o = Opts(0, 2);
  o.budget_unit = "time";
  auto e = Make(o);
  auto profile = std::make_shared<TrainingProfile>();
  profile->groups = {"a", "b"};
  profile->scoring_bytes = {3 << 20, 1 << 20};
  ClientInfo free_client("free", 10, 0.5);  // 0.5 s: not a memory limit
  free_client.profile = profile;
  ClientInfo capped("capped", 10, 0.5);
  capped.profile = profile;
  capped.max_memory_mb = 2.0;
  ASSERT_TRUE(e->Join(free_client).ok());
  ASSERT_TRUE(e->Join(capped).ok());
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("free").score_from, 0);
  EXPECT_EQ(e->TaskFor("capped").score_from, 1);
}

LayerDelta Scored(const std::string& group, std::vector<float> v,
                  double score) {
  LayerDelta d = Delta(group, std::move(v));
  d.score = score;
  return d;
}

// importance.source train: each client scores once; then its updates carry
// its trained layers' scores, and a round whose sampled clients all hold
// scores runs no scoring phase: its first task trains (one phase fewer).
TEST_F(RoundEngineTest, ScoresFromTrainingSkipTheScoringPhase) {
  selector_.needs_scores = true;
  selector_.layers["c1"] = {"a", "b"};
  RoundEngineOptions o = Opts(0, 1);
  o.scores_from_training = true;
  o.score_decay = 0.5;
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kScore);
  ASSERT_TRUE(e->SubmitScores("c1", 1, {1.0, 2.0}).ok());
  ASSERT_TRUE(e->SubmitScores("c2", 1, {3.0, 4.0}).ok());
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1,
                              {Scored("a", {1, 1}, 5.0), Scored("b", {1}, 6.0)})
                  .ok());
  ASSERT_TRUE(e->SubmitUpdate("c2", 1, 1, {Scored("a", {1, 1}, 7.0)}).ok());
  ASSERT_EQ(e->committed_round(), 1);

  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kTrain);
  EXPECT_EQ(e->TaskFor("c2").kind, TaskKind::kTrain);
  // Age 1, decay 0.5: half the own score, half the cohort's mean (a: 5 and
  // 7 from training; b: c1's 6 from training, c2's 4 from its pass).
  EXPECT_THAT(selector_.last_scores["c1"], ElementsAre(5.5, 5.5));
  EXPECT_THAT(selector_.last_scores["c2"], ElementsAre(6.5, 4.5));
  ASSERT_TRUE(e->SubmitUpdate("c1", 2, 1, {Delta("a", {0, 0}), Delta("b", {0})})
                  .ok());
  ASSERT_TRUE(e->SubmitUpdate("c2", 2, 1, {Delta("a", {0, 0})}).ok());
  std::vector<RoundRecord> records = e->TakeRecords();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].phase_ms.count("score"), 1u);
  EXPECT_EQ(records[0].phase_ms.at("score"), 0.0);  // both answered at once
  EXPECT_EQ(records[1].phase_ms.count("score"), 0u);
  const ClientRoundRecord& c2 = records[1].clients[1];
  ASSERT_EQ(c2.id, "c2");
  EXPECT_THAT(c2.score_age, ElementsAre(1, 1));
  EXPECT_THAT(c2.score_source, ElementsAre("train", "pass"));
  EXPECT_EQ(c2.score_from, -1);  // it ran no pass this round
  const nlohmann::json line = nlohmann::json::parse(records[1].ToJson());
  EXPECT_EQ(line["clients"][1]["score_source"][1], "pass");
  EXPECT_FALSE(line["clients"][1].contains("score_from"));
}

// The scores kept from training survive a restart with their rounds and
// sources: the resumed engine runs no scoring phase and selects from the
// same values.
TEST_F(RoundEngineTest, ScoresFromTrainingSurviveAResume) {
  const std::string dir = ::testing::TempDir() + "/engine_resume_scores";
  std::filesystem::remove_all(dir);
  auto store = CheckpointStore::Open(dir, 2);
  ASSERT_TRUE(store.ok()) << store.status();
  selector_.needs_scores = true;
  RoundEngineOptions o = Opts(0, 1);
  o.scores_from_training = true;
  o.score_decay = 0.5;
  {
    auto e = Make(o, store->get());
    JoinAll(*e, {{"c1", 1}, {"c2", 1}});
    ASSERT_TRUE(e->StartRound().ok());
    ASSERT_TRUE(e->SubmitScores("c1", 1, {1.0, 2.0}).ok());
    ASSERT_TRUE(e->SubmitScores("c2", 1, {3.0, 4.0}).ok());
    ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Scored("a", {1, 1}, 5.0)}).ok());
    ASSERT_TRUE(e->SubmitUpdate("c2", 1, 1, {Scored("a", {1, 1}, 7.0)}).ok());
  }
  auto e = Make(o, store->get());
  ASSERT_TRUE(e->resumed());
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kTrain);
  // a: 0.5 * 5 + 0.5 * 6; b (c1's pass): 0.5 * 2 + 0.5 * 3.
  EXPECT_THAT(selector_.last_scores["c1"], ElementsAre(5.5, 2.5));
}

// Only the sampled clients without scores run a pass; the others wait for
// the phase to end and are selected from what they hold.
TEST_F(RoundEngineTest, ScoresFromTrainingScoreOnlyTheNewcomer) {
  selector_.needs_scores = true;
  RoundEngineOptions o = Opts(0, 1);
  o.scores_from_training = true;
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitScores("c1", 1, {1.0, 2.0}).ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Scored("a", {1, 1}, 3.0)}).ok());
  JoinAll(*e, {{"new", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kWait);
  EXPECT_EQ(e->TaskFor("new").kind, TaskKind::kScore);
  // Its pass is its own: a score for c1 is a duplicate.
  EXPECT_EQ(ReasonOf(e->SubmitScores("c1", 2, {1.0, 1.0})),
            RejectReason::kDuplicate);
  ASSERT_TRUE(e->SubmitScores("new", 2, {9.0, 1.0}).ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kTrain);
  // c1 at age 1 (decay 0.8) toward the cohort's means: a (3, 9) and b (2, 1).
  EXPECT_THAT(selector_.last_scores["c1"],
              ElementsAre(0.8 * 3.0 + (1 - 0.8) * 6.0,
                          0.8 * 2.0 + (1 - 0.8) * 1.5));
  EXPECT_THAT(selector_.last_scores["new"], ElementsAre(9.0, 1.0));
  // A free score that is not finite is refused, naming the layer.
  absl::Status bad = e->SubmitUpdate(
      "new", 2, 1, {Scored("a", {1, 1}, std::nan(""))});
  EXPECT_THAT(bad.message(), HasSubstr("layer 'a': score nan is not finite"));
}

// importance.depth affordable under a time budget, by hand. One local
// step, speed 1; groups embed, block, head (common). Training from embed
// costs 0.1 + 0.05 + 0.01 + 0.2 + 0.1 = 0.46 s and its pass 1.0 s; from
// block 0.26 + 0.4; head alone 0.11 + 0.1.
TEST(SelectorTest, AffordableScoringDepthIsTheLowestGroupThatFits) {
  RunConfig config;
  config.selection.strategy = "strategic";
  config.budget.unit = "time";
  config.train.local_steps = 1;
  config.importance.depth = "affordable";
  std::vector<LayerGroup> groups = {{"embed", {"e"}, 10, false, false, 0},
                                    {"block", {"b"}, 10, false, false, 0},
                                    {"head", {"h"}, 10, false, true, 0}};
  auto profile = std::make_shared<TrainingProfile>();
  profile->groups = {"embed", "block", "head"};
  profile->batch_size = 32;
  profile->step_fixed_s = 0.1;
  profile->step_per_group_s = {0.05, 0.05, 0.01};
  profile->step_depth_s = {0.2, 0.1, 0.0};
  profile->scoring_s = 1.0;
  profile->scoring_from_s = {1.0, 0.4, 0.1};
  profile->fixed_bytes = 1;
  profile->per_group_bytes = {1, 1, 1};
  profile->depth_bytes = {1, 1, 1};
  absl::StatusOr<std::unique_ptr<LayerSelector>> selector =
      CreateLayerSelector(config, groups);
  ASSERT_TRUE(selector.ok()) << selector.status();
  SelectionCandidate c;
  c.id = "c";
  c.num_samples = 10;
  c.profile = profile;
  c.scored = true;
  for (auto [budget, from] : {std::pair<double, int>{1.47, 0},
                             {1.45, 1}, {0.67, 1}, {0.65, 2}, {0.22, 2},
                             {0.2, 3}}) {
    c.budget = budget;
    EXPECT_EQ((*selector)->ScoringDepth(c), from) << budget;
  }
  c.budget = 1.47;
  c.max_time_s = 1.0;  // a declared cap counts too
  EXPECT_EQ((*selector)->ScoringDepth(c), 1);
  c.max_time_s = 0;
  // The selection is priced with the pass it ran: from block, 0.4 s.
  c.budget = 1.0;
  c.score_from = 1;
  c.scores = {0.0, 5.0, 1.0};
  absl::StatusOr<SelectionOutcome> out = (*selector)->Select({c}, 1);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->layers[0], ElementsAre("block", "head"));
  EXPECT_NEAR(out->costs[0], 0.26 + 0.4, 1e-12);
  // depth full: no limit beyond memory.
  config.importance.depth = "full";
  selector = CreateLayerSelector(config, groups);
  ASSERT_TRUE(selector.ok());
  c.budget = 0.2;
  EXPECT_EQ((*selector)->ScoringDepth(c), 0);
}

// ScoreBook by hand: decay toward the cohort's mean, a newer score replaces
// an older one (never the reverse), and its lines read back exactly; a
// damaged line is refused naming the client.
TEST(ScoreBookTest, DecaysTowardTheCohortAndReadsBackExactly) {
  ScoreBook book(3);
  book.Record("x", 0, 4.0, 1, ScoreSource::kPass);
  book.Record("x", 1, 0.1, 1, ScoreSource::kPass);
  book.Record("y", 0, 2.0, 3, ScoreSource::kTrain);
  book.Record("y", 0, 9.0, 2, ScoreSource::kPass);  // older: ignored
  book.RecordPass("x", 1);
  EXPECT_TRUE(book.Has("x"));
  EXPECT_FALSE(book.Has("z"));
  EXPECT_EQ(book.LastPass("x"), 1);
  EXPECT_EQ(book.LastPass("y"), -1);
  // Round 3, decay 0.5: x's group 0 is 2 rounds old: 0.25 * 4 + 0.75 * 3.
  SeenScores x = book.For("x", 3, 0.5);
  EXPECT_THAT(x.scores, ElementsAre(0.25 * 4.0 + 0.75 * 3.0, 0.1, 0.0));
  EXPECT_THAT(x.age, ElementsAre(2, 2, -1));
  EXPECT_EQ(x.source[0], ScoreSource::kPass);
  EXPECT_EQ(x.source[2], ScoreSource::kCohort);
  // A group it never measured reads the cohort's mean; frozen ones 0.
  SeenScores y = book.For("y", 3, 0.5, /*frozen=*/{1});
  EXPECT_THAT(y.scores, ElementsAre(2.0, 0.0, 0.0));
  ScoreBook copy(3);
  for (absl::string_view line :
       absl::StrSplit(book.Serialize(), '\n', absl::SkipEmpty())) {
    ASSERT_TRUE(copy.RestoreLine(absl::StrSplit(line, '\t')).ok()) << line;
  }
  EXPECT_EQ(copy.Serialize(), book.Serialize());
  EXPECT_EQ(copy.For("x", 3, 0.5).scores, x.scores);
  absl::Status bad =
      copy.RestoreLine({"@scores", "x", "1", "4/1/p,0.1/1/p,-3/0/c"});
  EXPECT_EQ(bad.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(bad.message(), HasSubstr("client 'x': bad score"));
  EXPECT_THAT(copy.RestoreLine({"@scores", "x", "1", "4/1/p"}).message(),
              HasSubstr("bad number of scores"));
}

// The round's measured memory is the higher of training's and scoring's.
TEST(RoundRecordTest, MeasuredMemoryIncludesTheScoringPass) {
  ClientRoundRecord c;
  c.usage.peak_bytes = 1 << 20;
  c.usage.score_peak_bytes = 3 << 20;
  EXPECT_EQ(MeasuredInBudgetUnit(c, "memory"), 3.0);
  c.usage.peak_bytes = -1;  // scored, did not train
  EXPECT_EQ(MeasuredInBudgetUnit(c, "memory"), 3.0);
  c.usage.score_peak_bytes = -1;
  EXPECT_EQ(MeasuredInBudgetUnit(c, "memory"), -1);
}

// The metrics line is real JSON: names with quotes and control characters
// are escaped, NaN is null, doubles read back bit for bit, and the keys keep
// their order (timings after everything deterministic).
TEST(RoundRecordTest, ToJsonRoundTripsThroughAJsonParser) {
  RoundRecord r;
  r.round = 7;
  r.attempt = 2;
  r.evaluated = true;
  r.eval.accuracy = 0.1 + 0.2;  // 0.30000000000000004: needs all digits
  r.eval.loss = std::nan("");
  r.bytes_up = 1234;
  r.bytes_down = 5678;
  r.changed_layers = {"a\"b", "tab\there"};
  r.objective = 1.0 / 3.0;
  r.solver_status = "optimal";
  ClientRoundRecord c;
  c.id = "client-\x01";
  c.budget = 2.5;
  c.layers = {"a\"b"};
  c.contributed = true;
  c.scores = {0.25, 1e-300};
  c.cost = 3;
  c.usage.train_s = 0.5;
  c.usage.peak_bytes = 2 * 1024 * 1024;
  r.clients = {c};
  r.budget_unit = "time";
  r.rejected = {{"stale", 2}};
  r.phase_ms = {{"train", 12.5}};
  const std::string line = r.ToJson();
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["round"], 7);
  EXPECT_EQ(j["attempt"], 2);
  EXPECT_EQ(j["accuracy"].get<double>(), 0.1 + 0.2);
  EXPECT_TRUE(j["loss"].is_null());
  EXPECT_EQ(j["bytes_up"], 1234);
  EXPECT_EQ(j["changed_layers"], nlohmann::json({"a\"b", "tab\there"}));
  EXPECT_EQ(j["selection"]["objective"].get<double>(), 1.0 / 3.0);
  EXPECT_EQ(j["selection"]["status"], "optimal");
  EXPECT_EQ(j["clients"][0]["id"], "client-\x01");
  EXPECT_EQ(j["clients"][0]["budget"].get<double>(), 2.5);
  EXPECT_EQ(j["clients"][0]["scores"][1].get<double>(), 1e-300);
  EXPECT_EQ(j["clients"][0]["cost"].get<double>(), 3.0);
  EXPECT_EQ(j["rejected"]["stale"], 2);
  EXPECT_FALSE(j.contains("privacy"));
  EXPECT_FALSE(j.contains("wire_bytes_up"));
  EXPECT_EQ(j["timing_ms"]["train"].get<double>(), 12.5);
  EXPECT_EQ(j["usage"][0]["peak_mb"].get<double>(), 2.0);
  EXPECT_EQ(j["usage"][0]["measured_over_budget"].get<double>(), 0.5 / 2.5);
  // Order: what determinism checks compare comes before the timings.
  EXPECT_LT(line.find("\"rejected\""), line.find("\"timing_ms\""));
  EXPECT_LT(line.find("\"timing_ms\""), line.find("\"usage\""));
  EXPECT_EQ(line.rfind("{\"round\":7,\"attempt\":2,", 0), 0u);
}

}  // namespace
}  // namespace layerfl
