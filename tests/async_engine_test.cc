// The asynchronous round engine (federated.mode: async): staleness weights
// computed by hand, too_stale refusals, the places handed out, scoring
// before training, deadlines, and a coordinator that dies mid-buffer and
// resumes bit-identical. Every test drives a fake clock.

#include "server/round/async_engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "server/checkpoint/checkpoint_store.h"
#include "server/checkpoint/journal.h"
#include "server/round/round_engine.h"
#include "tests/round_fakes.h"

namespace layerfl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(StalenessWeight, EachFunctionByHand) {
  AsyncOptions o;
  o.staleness = "constant";
  EXPECT_EQ(StalenessWeight(o, 0), 1.0);
  EXPECT_EQ(StalenessWeight(o, 7), 1.0);
  o.staleness = "polynomial";
  o.exponent = 0.5;  // FedBuff's 1 / sqrt(1 + t)
  EXPECT_EQ(StalenessWeight(o, 0), 1.0);
  EXPECT_EQ(StalenessWeight(o, 3), 0.5);
  EXPECT_DOUBLE_EQ(StalenessWeight(o, 1), 1 / std::sqrt(2.0));
  o.exponent = 1.0;
  EXPECT_EQ(StalenessWeight(o, 4), 0.2);
  o.staleness = "hinge";  // a = 10, b = 4 (Xie et al. 2019)
  EXPECT_EQ(StalenessWeight(o, 4), 1.0);
  EXPECT_DOUBLE_EQ(StalenessWeight(o, 5), 1.0 / 11);
  EXPECT_DOUBLE_EQ(StalenessWeight(o, 6), 1.0 / 21);
}

RoundEngineOptions Async(int buffer, int places, int max_staleness = 5) {
  RoundEngineOptions o;
  o.rounds = 10;
  o.clients_per_round = places;
  o.min_clients = 1;
  o.round_deadline = absl::Seconds(10);
  o.async.enabled = true;
  o.async.buffer_size = buffer;
  o.async.max_staleness = max_staleness;
  o.async.staleness = "polynomial";
  o.async.exponent = 1.0;  // s(t) = 1 / (1 + t): round numbers by hand
  return o;
}

using AsyncEngineTest = EngineTest;

std::vector<float> ValuesOf(const RoundEngine& e, int layer) {
  return e.global().layers[layer].tensors[0].values;
}

// Buffer of one: the second client trained from version 0, and layer "a"
// moved once since (weight 1/2) while "b" did not (weight 1).
TEST_F(AsyncEngineTest, EachLayerWeightedByTheVersionsItMoved) {
  RoundEngineOptions o = Async(1, 2);
  o.aggregation.weight_by_samples = false;
  auto e = Make(o);
  selector_.layers["c2"] = {"a", "b"};
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_TRUE(e->round_running());
  EXPECT_EQ(e->phase(), "buffering");
  const Task t1 = e->TaskFor("c1");
  const Task t2 = e->TaskFor("c2");
  ASSERT_EQ(t1.kind, TaskKind::kTrain);
  ASSERT_EQ(t2.kind, TaskKind::kTrain);
  EXPECT_EQ(t1.round, 1);
  EXPECT_THAT(t2.layers, ElementsAre("a", "b"));

  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {2, 4})}).ok());
  EXPECT_EQ(e->committed_round(), 1);
  EXPECT_THAT(ValuesOf(*e, 0), ElementsAre(3.0f, 6.0f));
  EXPECT_THAT(e->layer_versions(), ElementsAre(1, 0));
  // c1 got the place back at once, from version 1.
  EXPECT_EQ(e->TaskFor("c1").round, 2);

  ASSERT_TRUE(
      e->SubmitUpdate("c2", 1, 1, {Delta("a", {2, 2}), Delta("b", {4})}).ok());
  EXPECT_EQ(e->committed_round(), 2);
  EXPECT_THAT(ValuesOf(*e, 0), ElementsAre(4.0f, 7.0f));  // + 1/2 * (2, 2)
  EXPECT_THAT(ValuesOf(*e, 1), ElementsAre(14.0f));       // + 1 * 4
  EXPECT_THAT(e->layer_versions(), ElementsAre(2, 1));
  const std::vector<RoundRecord> records = e->TakeRecords();
  ASSERT_EQ(records.size(), 2u);
  ASSERT_EQ(records[1].clients.size(), 1u);
  EXPECT_EQ(records[1].clients[0].staleness, 1);
  EXPECT_THAT(records[1].clients[0].layer_weights, ElementsAre(0.5, 1.0));
  EXPECT_THAT(records[1].ToJson(),
              HasSubstr("\"staleness\":1,\"layer_weights\":[0.5,1.0]"));
}

// Buffer of two, weighted by samples: the divisor adds the sample counts,
// not the staleness weights, so a stale update shrinks instead of being
// renormalised away. A client that fetched after a commit trains fresh.
TEST_F(AsyncEngineTest, BufferDividesBySamplesAndScalesStaleUpdates) {
  auto e = Make(Async(2, 3));
  JoinAll(*e, {{"c1", 1}, {"c2", 3}, {"c3", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {4, 0})}).ok());
  // c1 is handed a task again before any commit: still from version 0.
  EXPECT_EQ(e->TaskFor("c1").round, 1);
  ASSERT_TRUE(e->SubmitUpdate("c2", 1, 3, {Delta("a", {0, 4})}).ok());
  // (1 * (4, 0) + 3 * (0, 4)) / 4 = (1, 3).
  EXPECT_THAT(ValuesOf(*e, 0), ElementsAre(2.0f, 5.0f));
  ASSERT_TRUE(e->SubmitUpdate("c3", 1, 1, {Delta("a", {2, 2})}).ok());
  // c1 fetched version 1 before training: its update is fresh.
  ASSERT_TRUE(e->SubmitUpdate("c1", 2, 1, {Delta("a", {4, 0})}).ok());
  // (1 * 1/2 * (2, 2) + 1 * 1 * (4, 0)) / 2 = (2.5, 0.5).
  EXPECT_THAT(ValuesOf(*e, 0), ElementsAre(4.5f, 5.5f));
  const std::vector<RoundRecord> records = e->TakeRecords();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].clients[0].id, "c3");
  EXPECT_EQ(records[1].clients[0].staleness, 1);
  EXPECT_EQ(records[1].clients[1].id, "c1");
  EXPECT_EQ(records[1].clients[1].staleness, 0);
}

// The transport re-asks waiting polls by TaskChangesSince: a place handed
// on names the clients whose tasks changed (not everyone, so an update
// costs O(1) polls with 10,000 connected), the start and each commit name
// everyone, and nothing changed names nobody.
TEST_F(AsyncEngineTest, TaskChangesNameTheClientsWhosePlaceMoved) {
  auto e = Make(Async(2, 1));
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}});
  const uint64_t e0 = e->task_epoch();
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_TRUE(e->TaskChangesSince(e0).all);
  const uint64_t e1 = e->task_epoch();
  const TaskChanges none = e->TaskChangesSince(e1);
  EXPECT_FALSE(none.all);
  EXPECT_TRUE(none.clients.empty());
  EXPECT_EQ(none.epoch, e1);
  const auto holder = [&]() -> std::string {
    for (const char* id : {"c1", "c2", "c3"}) {
      if (e->TaskFor(id).kind == TaskKind::kTrain) return id;
    }
    return "";
  };
  const std::string first = holder();
  ASSERT_FALSE(first.empty());
  ASSERT_TRUE(e->SubmitUpdate(first, 1, 1, {Delta("a", {1, 1})}).ok());
  const std::string second = holder();  // the place, drawn again
  ASSERT_FALSE(second.empty());
  const TaskChanges moved = e->TaskChangesSince(e1);
  EXPECT_FALSE(moved.all);
  EXPECT_GT(moved.epoch, e1);
  EXPECT_THAT(moved.clients, ::testing::Contains(first));
  EXPECT_THAT(moved.clients, ::testing::Contains(second));
  for (const std::string& id : moved.clients) {
    EXPECT_TRUE(id == first || id == second) << id;
  }
  // The buffer's second update commits: everyone's task may have changed.
  const uint64_t e2 = e->task_epoch();
  ASSERT_TRUE(e->SubmitUpdate(second, 1, 1, {Delta("a", {1, 1})}).ok());
  EXPECT_EQ(e->committed_round(), 1);
  EXPECT_TRUE(e->TaskChangesSince(e2).all);
}

TEST_F(AsyncEngineTest, TooStaleRefusedCountedAndThePlaceHandedOn) {
  RoundEngineOptions o = Async(1, 2, /*max_staleness=*/0);
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {2, 4})}).ok());
  const std::vector<float> before = ValuesOf(*e, 0);
  absl::Status s = e->SubmitUpdate("c2", 1, 1, {Delta("a", {100, 100})});
  EXPECT_EQ(ReasonOf(s), RejectReason::kTooStale);
  EXPECT_TRUE(absl::IsFailedPrecondition(s));
  EXPECT_THAT(s.message(), HasSubstr("too_stale: client 'c2' trained from "
                                     "version 0, 1 commits behind"));
  EXPECT_THAT(s.message(), HasSubstr("federated.max_staleness = 0"));
  EXPECT_EQ(ValuesOf(*e, 0), before);
  EXPECT_EQ(e->rejected_total().at("too_stale"), 1);
  // c2's place was withdrawn and drawn again: it trains from version 1.
  const Task t = e->TaskFor("c2");
  EXPECT_EQ(t.kind, TaskKind::kTrain);
  EXPECT_EQ(t.round, 2);
  ASSERT_TRUE(e->SubmitUpdate("c2", 2, 1, {Delta("a", {2, 2})}).ok());
  const std::vector<RoundRecord> records = e->TakeRecords();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].rejected.at("too_stale"), 1);
}

TEST_F(AsyncEngineTest, ResultsOutsideTheTaskAreRefusedByReason) {
  auto e = Make(Async(2, 1));
  JoinAll(*e, {{"c1", 1}, {"c2", 1}});
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c1", 1, 1, {Delta("a", {1, 1})})),
            RejectReason::kNotAssigned);  // not started
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_THAT(e->StartRound().message(), HasSubstr("already running"));
  const std::string holder =
      e->TaskFor("c1").kind == TaskKind::kTrain ? "c1" : "c2";
  const std::string idle = holder == "c1" ? "c2" : "c1";
  EXPECT_EQ(e->TaskFor(idle).kind, TaskKind::kWait);  // one place
  EXPECT_EQ(ReasonOf(e->SubmitUpdate(idle, 1, 1, {Delta("a", {1, 1})})),
            RejectReason::kNotAssigned);
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c9", 1, 1, {Delta("a", {1, 1})})),
            RejectReason::kUnknownClient);
  absl::Status future = e->SubmitUpdate(holder, 3, 1, {Delta("a", {1, 1})});
  EXPECT_EQ(ReasonOf(future), RejectReason::kStaleRound);
  EXPECT_THAT(future.message(), HasSubstr("the global model is at 0"));
  EXPECT_EQ(ReasonOf(e->SubmitScores(holder, 1, {1, 1})),
            RejectReason::kNotAssigned);  // its task is to train
  EXPECT_EQ(ReasonOf(e->SubmitUpdate(holder, 1, 1, {Delta("b", {1})})),
            RejectReason::kNotAssigned);  // not the assigned layer
  EXPECT_EQ(
      ReasonOf(e->SubmitUpdate(holder, 1, 1, {Delta("a", {std::nanf(""), 1})})),
      RejectReason::kNonFinite);
  EXPECT_EQ(ReasonOf(e->SubmitAdvert(holder, 1, SecAggAdvert{})),
            RejectReason::kProtocol);
  EXPECT_THAT(e->TakeRecords(), ::testing::IsEmpty());
  EXPECT_THAT(e->global().layers[0].tensors[0].values, ElementsAre(1, 2));
  // The refused updates changed nothing: the holder's good one goes in.
  EXPECT_TRUE(e->SubmitUpdate(holder, 1, 1, {Delta("a", {1, 1})}).ok());
}

TEST_F(AsyncEngineTest, ScoresFirstThenTrainsFromThemEverySelectionPeriod) {
  selector_.needs_scores = true;
  RoundEngineOptions o = Async(1, 1);
  o.selection_period = 2;
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kScore);
  const uint64_t epoch = e->task_epoch();
  ASSERT_TRUE(e->SubmitScores("c1", 1, {3, 1}).ok());
  EXPECT_GT(e->task_epoch(), epoch);  // its waiting poll is asked again
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kTrain);
  EXPECT_THAT(selector_.last_scores["c1"], ElementsAre(3, 1));
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {1, 1})}).ok());
  // Scored at version 0: trains from those scores at version 1 ...
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kTrain);
  ASSERT_TRUE(e->SubmitUpdate("c1", 2, 1, {Delta("a", {1, 1})}).ok());
  // ... and scores again at version 2.
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kScore);
}

// async_cohort: the drawn client is selected together with the clients
// already training (in id order, at most `cohort` of them); its row is the
// first.
TEST_F(AsyncEngineTest, CohortSelectsWithTheClientsInFlight) {
  RoundEngineOptions o = Async(1, 3);
  o.async.cohort = 1;
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}, {"c2", 1}, {"c3", 1}, {"c4", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_EQ(selector_.seen_candidates.size(), 3u);
  std::vector<std::string> holders;
  for (const std::string id : {"c1", "c2", "c3", "c4"}) {
    if (e->TaskFor(id).kind == TaskKind::kTrain) holders.push_back(id);
  }
  ASSERT_EQ(holders.size(), 3u);
  // The first draw had nobody in flight; the later ones one (the cohort).
  EXPECT_EQ(selector_.seen_candidates[0].size(), 1u);
  EXPECT_EQ(selector_.seen_candidates[1].size(), 2u);
  EXPECT_EQ(selector_.seen_candidates[2].size(), 2u);
  const std::vector<std::string>& third = selector_.seen_candidates[2];
  EXPECT_NE(third[0], third[1]);
  EXPECT_EQ(e->TaskFor(third[1]).kind, TaskKind::kTrain);  // in flight
  // Without a cohort every client is selected alone.
  FakeSelector alone;
  RoundEngine::Deps deps{&clock_, &alone, nullptr, nullptr};
  auto solo = RoundEngine::Create(Async(1, 3), TwoLayers(), deps);
  ASSERT_TRUE(solo.ok());
  JoinAll(**solo, {{"c1", 1}, {"c2", 1}, {"c3", 1}});
  ASSERT_TRUE((*solo)->StartRound().ok());
  for (const auto& ids : alone.seen_candidates) EXPECT_EQ(ids.size(), 1u);
}

TEST_F(AsyncEngineTest, DeadlineWithdrawsThePlaceAndDrawsAgain) {
  auto e = Make(Async(1, 1));
  JoinAll(*e, {{"c1", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  const absl::Time first = e->TaskFor("c1").deadline;
  clock_.Advance(absl::Seconds(9));
  ASSERT_TRUE(e->Tick().ok());
  EXPECT_EQ(e->TaskFor("c1").deadline, first);
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(e->Tick().ok());
  // The only idle client is drawn again, with a new deadline.
  EXPECT_EQ(e->TaskFor("c1").deadline, clock_.Now() + absl::Seconds(10));
  e->Leave("c1");
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kWait);
  EXPECT_EQ(ReasonOf(e->SubmitUpdate("c1", 1, 1, {Delta("a", {1, 1})})),
            RejectReason::kUnknownClient);
}

TEST_F(AsyncEngineTest, FinishesAfterTheConfiguredCommits) {
  RoundEngineOptions o = Async(1, 1);
  o.rounds = 2;
  auto e = Make(o);
  JoinAll(*e, {{"c1", 1}});
  ASSERT_TRUE(e->StartRound().ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 1, 1, {Delta("a", {1, 1})}).ok());
  ASSERT_TRUE(e->SubmitUpdate("c1", 2, 1, {Delta("a", {1, 1})}).ok());
  EXPECT_TRUE(e->finished());
  EXPECT_FALSE(e->round_running());
  EXPECT_EQ(e->TaskFor("c1").kind, TaskKind::kFinished);
  EXPECT_EQ(e->TaskFor("c1").round, 2);
  // An update still in flight when the run ended: stale, saying why.
  absl::Status late = e->SubmitUpdate("c1", 3, 1, {Delta("a", {1, 1})});
  EXPECT_EQ(ReasonOf(late), RejectReason::kStaleRound);
  EXPECT_THAT(late.message(),
              HasSubstr("client 'c1' sent an update after the run finished "
                        "at version 2"));
  EXPECT_EQ(e->committed_round(), 2);
}

TEST(Journal, TornAndDamagedTailsAreDropped) {
  const std::string a = FrameRecord("first"), b = FrameRecord("second");
  JournalContents whole = ParseJournal(a + b);
  EXPECT_THAT(whole.records, ElementsAre("first", "second"));
  EXPECT_EQ(whole.dropped_tail_bytes, 0);
  JournalContents torn = ParseJournal(a + b.substr(0, b.size() - 1));
  EXPECT_THAT(torn.records, ElementsAre("first"));
  EXPECT_EQ(torn.dropped_tail_bytes, static_cast<int64_t>(b.size() - 1));
  std::string flipped = a + b;
  flipped[a.size() + 5] ^= 1;  // a byte of "second"
  EXPECT_THAT(ParseJournal(flipped).records, ElementsAre("first"));

  const std::string path =
      (std::filesystem::path(::testing::TempDir()) / "journal-test").string();
  std::filesystem::remove(path);
  auto j = Journal::Open(path);
  ASSERT_TRUE(j.ok()) << j.status();
  ASSERT_TRUE((*j)->Append("x").ok());
  ASSERT_TRUE((*j)->Append(std::string(3, '\0')).ok());
  auto read = (*j)->Read();
  ASSERT_TRUE(read.ok());
  EXPECT_THAT(read->records, ElementsAre("x", std::string(3, '\0')));
  ASSERT_TRUE((*j)->Reset().ok());
  EXPECT_THAT((*j)->Read()->records, ::testing::IsEmpty());
}

// Four clients, two places, buffers of three, scoring every second version,
// max_staleness 1. Each step the driver picks one task holder, which
// answers from the version it fetched
// when it first saw its task. With `crash_after` > 0 the engine is
// destroyed after that many steps and built again from the store, as a
// coordinator that died and restarted; the clients join again.
struct ScriptResult {
  ModelWeights global;
  std::vector<std::string> records;  // JSON cut before the timings
  int steps = 0;
  int64_t too_stale = 0;
};

ScriptResult RunScript(const std::string& dir, int crash_after) {
  std::filesystem::remove_all(dir);
  FakeClock clock;
  FakeSelector selector;
  selector.needs_scores = true;
  selector.layers = {
      {"c1", {"a"}}, {"c2", {"a", "b"}}, {"c3", {"b"}}, {"c4", {"a", "b"}}};
  RoundEngineOptions o = Async(3, 2, /*max_staleness=*/1);
  o.rounds = 5;
  o.selection_period = 2;
  o.seed = 7;
  o.async.exponent = 0.5;
  auto store = CheckpointStore::Open(dir, 2);
  EXPECT_TRUE(store.ok());
  RoundEngine::Deps deps;
  deps.clock = &clock;
  deps.selector = &selector;
  deps.store = store->get();
  const std::vector<std::string> ids = {"c1", "c2", "c3", "c4"};
  ScriptResult out;
  const auto start = [&]() -> std::unique_ptr<RoundEngine> {
    auto e = RoundEngine::Create(o, TwoLayers(), deps);
    EXPECT_TRUE(e.ok()) << e.status();
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_TRUE((*e)->Join({ids[i], static_cast<int64_t>(i + 1), 2.0}).ok());
    }
    EXPECT_TRUE((*e)->StartRound().ok());
    return std::move(*e);
  };
  const auto take = [&](RoundEngine& e) {
    for (const RoundRecord& r : e.TakeRecords()) {
      const std::string json = r.ToJson();
      out.records.push_back(json.substr(0, json.find("\"timing_ms\"")));
      auto stale = r.rejected.find("too_stale");
      if (stale != r.rejected.end()) out.too_stale += stale->second;
    }
  };
  std::unique_ptr<RoundEngine> e = start();
  std::map<std::string, int64_t> fetched;  // the clients' side
  for (int step = 0; !e->finished() && step < 300; ++step) {
    std::vector<std::string> holders;
    for (const std::string& id : ids) {
      const Task t = e->TaskFor(id);
      if (t.kind != TaskKind::kScore && t.kind != TaskKind::kTrain) continue;
      holders.push_back(id);
      fetched.emplace(id, t.round);  // fetched when first seen
    }
    EXPECT_FALSE(holders.empty());
    if (holders.empty()) break;
    // Mostly the last holder in id order, every seventh step the first: it
    // falls behind by more than max_staleness now and then.
    const std::string id = holders[step % 7 == 6 ? 0 : holders.size() - 1];
    const Task t = e->TaskFor(id);
    const int64_t round = fetched[id];
    fetched.erase(id);
    const float k = static_cast<float>(id[1] - '0');
    if (t.kind == TaskKind::kScore) {
      (void)e->SubmitScores(id, round, {k, 0.5 * step});
    } else {
      std::vector<LayerDelta> update;
      for (const std::string& layer : t.layers) {
        update.push_back(layer == "a"
                             ? Delta("a", {0.1f * k + 0.01f * step, -0.03f * k})
                             : Delta("b", {0.07f * step - 0.2f * k}));
      }
      (void)e->SubmitUpdate(id, round, static_cast<int64_t>(k), update);
    }
    out.steps = step + 1;
    if (step + 1 == crash_after) {
      take(*e);
      e.reset();  // the process dies; nothing in memory survives
      e = start();
    }
  }
  take(*e);
  EXPECT_TRUE(e->finished());
  out.global = e->global();
  return out;
}

TEST(AsyncEngineResume, CrashAfterAnyStepResumesBitIdentical) {
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / "async-resume").string();
  const ScriptResult whole = RunScript(dir, 0);
  ASSERT_EQ(whole.records.size(), 5u);
  EXPECT_GT(whole.too_stale, 0);  // the script does reach the limit
  int mid_buffer = 0;
  for (int crash = 1; crash < whole.steps; ++crash) {
    SCOPED_TRACE(absl::StrCat("crash after step ", crash));
    const ScriptResult resumed = RunScript(dir, crash);
    EXPECT_EQ(resumed.steps, whole.steps);
    EXPECT_EQ(resumed.records, whole.records);
    ASSERT_EQ(resumed.global.layers.size(), whole.global.layers.size());
    for (size_t l = 0; l < whole.global.layers.size(); ++l) {
      EXPECT_EQ(resumed.global.layers[l].version,
                whole.global.layers[l].version);
      EXPECT_EQ(resumed.global.layers[l].tensors[0].values,
                whole.global.layers[l].tensors[0].values);  // bit for bit
    }
    ++mid_buffer;
  }
  EXPECT_GT(mid_buffer, 10);
}

TEST(AsyncEngineResume, NeitherEngineContinuesTheOthersCheckpoints) {
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / "async-switch").string();
  RunScript(dir, 0);  // an asynchronous run's checkpoints
  FakeClock clock;
  FakeSelector selector;
  auto store = CheckpointStore::Open(dir, 2);
  ASSERT_TRUE(store.ok());
  RoundEngine::Deps deps{&clock, &selector, nullptr, store->get()};
  RoundEngineOptions sync = Async(3, 2, 1);
  sync.async.enabled = false;
  sync.rounds = 9;
  auto e = RoundEngine::Create(sync, TwoLayers(), deps);
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(e.status().message(),
              HasSubstr("was written by an asynchronous run (federated.mode: "
                        "async); a synchronous run cannot continue it"));

  // A synchronous run's checkpoint, then an asynchronous engine on it.
  const std::string sync_dir =
      (std::filesystem::path(::testing::TempDir()) / "sync-switch").string();
  std::filesystem::remove_all(sync_dir);
  auto sync_store = CheckpointStore::Open(sync_dir, 2);
  ASSERT_TRUE(sync_store.ok());
  deps.store = sync_store->get();
  auto s = RoundEngine::Create(sync, TwoLayers(), deps);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->Join({"c1", 1, 2.0}).ok());
  ASSERT_TRUE((*s)->StartRound().ok());
  ASSERT_TRUE((*s)->SubmitUpdate("c1", 1, 1, {Delta("a", {1, 1})}).ok());
  ASSERT_EQ((*s)->committed_round(), 1);
  RoundEngineOptions async = Async(3, 2, 1);
  auto a = RoundEngine::Create(async, TwoLayers(), deps);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(),
              HasSubstr("the checkpoint of round 1 was written by a "
                        "synchronous run; federated.mode: async cannot "
                        "continue it"));
}

TEST(AsyncEngineResume, ADamagedJournalIsRefusedNamingIt) {
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / "async-damaged").string();
  RunScript(dir, 0);
  const std::string path =
      (std::filesystem::path(dir) / kAsyncJournalName).string();
  // A whole record of an unknown kind after the header of the last commit.
  auto j = Journal::Open(path);
  ASSERT_TRUE(j.ok());
  ASSERT_TRUE((*j)->Append("Zjunk").ok());
  FakeClock clock;
  FakeSelector selector;
  auto store = CheckpointStore::Open(dir, 2);
  ASSERT_TRUE(store.ok());
  RoundEngine::Deps deps{&clock, &selector, nullptr, store->get()};
  RoundEngineOptions o = Async(3, 2, 1);
  o.rounds = 5;
  auto e = RoundEngine::Create(o, TwoLayers(), deps);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(absl::IsDataLoss(e.status()));
  EXPECT_THAT(e.status().message(), HasSubstr(path));
  EXPECT_THAT(e.status().message(), HasSubstr("record 1"));
  EXPECT_THAT(e.status().message(), HasSubstr("unknown kind"));
}

}  // namespace
}  // namespace layerfl
