// Scale: the coordinator's long polls cost nothing per operation while
// clients wait (LongPolls), and layerfl-loadgen's synthetic clients against
// a real layerfl-coordinator on loopback: every round commits with its full
// sample, every accepted upload is in the coordinator's metrics, failing and
// dropping clients are accounted for.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/loadgen/loadgen.h"
#include "nlohmann/json.hpp"
#include "server/service/long_polls.h"
#include "tests/process_fixture.h"

namespace layerfl {
namespace {

namespace fs = std::filesystem;
using fixture::Process;
using fixture::ReadFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kBin = LAYERFL_BIN_DIR;
const std::string kSource = LAYERFL_SOURCE_DIR;

// What the engine says changed (RoundEngine::TaskChangesSince's shape).
struct Changes {
  uint64_t epoch = 0;
  bool all = false;
  std::vector<std::string> clients;
};

TEST(LongPollsTest, AsksWaitingPollsOnlyWhenTheEpochMovesOrTheyExpire) {
  LongPolls<int> polls;
  const absl::Time t0 = absl::UnixEpoch() + absl::Hours(1);
  std::vector<std::pair<int, bool>> asked;  // poll, last chance
  bool have_task = false;
  const auto answer = [&](const std::string& client, int& p, bool last) {
    EXPECT_EQ(client, absl::StrCat("c", p));
    asked.emplace_back(p, last);
    return have_task || last;
  };
  // The engine's epoch: everyone's task may change whenever it moves.
  const auto at = [](uint64_t epoch) {
    return [epoch](uint64_t since) {
      return Changes{epoch, epoch != since, {}};
    };
  };
  for (int p : {1, 2, 3}) {
    polls.Add(absl::StrCat("c", p), p, t0 + absl::Seconds(p));
  }
  EXPECT_EQ(polls.held(), 3);
  EXPECT_EQ(polls.Evaluate(at(7), t0, answer), 3);  // all new: asked once
  polls.Add("c4", 4, t0 + absl::Seconds(10));
  asked.clear();
  EXPECT_EQ(polls.Evaluate(at(7), t0, answer), 1);  // same epoch: the new
  EXPECT_THAT(asked, ElementsAre(std::pair<int, bool>{4, false}));
  asked.clear();
  EXPECT_EQ(polls.Evaluate(at(7), t0, answer), 0);  // nothing new or expired
  // Poll 1's wait runs out: its last chance, then it is gone.
  EXPECT_EQ(polls.Evaluate(at(7), t0 + absl::Seconds(1), answer), 1);
  EXPECT_THAT(asked, ElementsAre(std::pair<int, bool>{1, true}));
  EXPECT_EQ(polls.held(), 3);
  // The epoch moves: every waiting poll is asked again; those with a task
  // are answered and forgotten.
  asked.clear();
  have_task = true;
  EXPECT_EQ(polls.Evaluate(at(8), t0 + absl::Seconds(1), answer), 3);
  EXPECT_EQ(asked.size(), 3u);
  EXPECT_EQ(polls.held(), 0);
  asked.clear();
  EXPECT_EQ(polls.Evaluate(at(9), t0 + absl::Seconds(60), answer), 0);
  // FinishAll hands over fresh and waiting polls alike.
  have_task = false;
  polls.Add("c5", 5, t0 + absl::Seconds(100));
  polls.Add("c6", 6, t0 + absl::Seconds(100));
  EXPECT_EQ(polls.Evaluate(at(9), t0, answer), 2);  // 5, 6 wait
  polls.Add("c7", 7, t0 + absl::Seconds(100));      // fresh
  std::vector<int> finished;
  polls.FinishAll([&](int& p) { finished.push_back(p); });
  EXPECT_THAT(finished, ::testing::UnorderedElementsAre(5, 6, 7));
  EXPECT_EQ(polls.held(), 0);
  EXPECT_EQ(polls.Evaluate(at(10), t0, answer), 0);
}

// The asynchronous engine hands out one place at a time: only the polls of
// the clients it names are asked again, however many wait.
TEST(LongPollsTest, AsksOnlyTheNamedClientsPollsWhenTheChangeIsTargeted) {
  LongPolls<int> polls;
  const absl::Time t0 = absl::UnixEpoch() + absl::Hours(1);
  std::vector<int> asked;
  std::set<int> with_task;
  const auto answer = [&](const std::string& client, int& p, bool last) {
    EXPECT_EQ(client, absl::StrCat("c", p % 1000));
    asked.push_back(p);
    return last || with_task.count(p) > 0;
  };
  for (int p = 0; p < 1000; ++p) {
    polls.Add(absl::StrCat("c", p), p, t0 + absl::Seconds(30));
  }
  polls.Add("c7", 1007, t0 + absl::Seconds(20));  // c7's second poll
  const auto first = [](uint64_t) { return Changes{1, false, {}}; };
  EXPECT_EQ(polls.Evaluate(first, t0, answer), 1001);  // all new
  asked.clear();
  // c7 and c500 were handed places (c500 twice in the list).
  with_task = {7, 1007, 500};
  uint64_t seen = 0;
  const auto targeted = [&](uint64_t since) {
    seen = since;
    return Changes{4, false, {"c7", "c500", "c500", "nobody"}};
  };
  EXPECT_EQ(polls.Evaluate(targeted, t0, answer), 3);
  EXPECT_EQ(seen, 1u);  // asked since the last Evaluate's epoch
  EXPECT_THAT(asked, ::testing::UnorderedElementsAre(7, 1007, 500));
  EXPECT_EQ(polls.held(), 998);
  // Nothing changed: nobody is asked; then c9 alone, which waits on.
  asked.clear();
  EXPECT_EQ(polls.Evaluate([](uint64_t) { return Changes{4, false, {}}; },
                           t0, answer),
            0);
  EXPECT_EQ(polls.Evaluate([](uint64_t) { return Changes{5, false, {"c9"}}; },
                           t0, answer),
            1);
  EXPECT_THAT(asked, ElementsAre(9));
  // The waits run out: every remaining poll's last chance, each once.
  asked.clear();
  EXPECT_EQ(polls.Evaluate([](uint64_t) { return Changes{5, false, {}}; },
                           t0 + absl::Seconds(30), answer),
            998);
  EXPECT_EQ(std::set<int>(asked.begin(), asked.end()).size(), 998u);
  EXPECT_EQ(polls.held(), 0);
}

ModelWeights TwoLayers() {
  ModelWeights w;
  w.layers.push_back({"a", 0, {{"a.w", {2, 3}, std::vector<float>(6, 1.0f)}}});
  w.layers.push_back({"b", 0,
                      {{"b.w", {4}, std::vector<float>(4, 2.0f)},
                       {"b.bias", {1}, {0.5f}}}});
  return w;
}

TEST(SyntheticWorkTest, UpdatesHaveTheLayersShapesAndAreReproducible) {
  SyntheticWork::Options o;
  o.fail_round = 3;
  SyntheticWork work("load-00001", o);
  const ModelWeights g = TwoLayers();
  auto update = work.Train(g, 1, {"b", "a"}, {});
  ASSERT_TRUE(update.ok()) << update.status();
  ASSERT_EQ(update->size(), 2u);  // model order
  EXPECT_EQ((*update)[0].group, "a");
  EXPECT_EQ((*update)[0].tensors[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ((*update)[1].tensors[1].name, "b.bias");
  for (const LayerDelta& d : *update) {
    for (const Tensor32& t : d.tensors) {
      for (float v : t.values) EXPECT_LE(std::abs(v), o.delta_scale);
    }
  }
  auto again = SyntheticWork("load-00001", o).Train(g, 1, {"a", "b"}, {});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[1].tensors[0].values, (*update)[1].tensors[0].values);
  auto other = SyntheticWork("load-00002", o).Train(g, 1, {"a", "b"}, {});
  EXPECT_NE((*other)[1].tensors[0].values, (*update)[1].tensors[0].values);
  EXPECT_THAT(std::string(work.Train(g, 1, {"c"}, {}).status().message()),
              HasSubstr("does not have"));
  // Scores: positive from score_from up, 0 below.
  auto scores = work.Score(g, 1, "rgn", 1);
  ASSERT_TRUE(scores.ok());
  EXPECT_EQ((*scores)[0], 0.0);
  EXPECT_GT((*scores)[1], 0.0);
  // It fails in its fail round, as asked.
  EXPECT_EQ(work.Score(g, 3, "rgn", 0).status().code(),
            absl::StatusCode::kInternal);
}

// A scripted coordinator for one daemon: a long poll that waits `poll`,
// then a scoring task, then the run's end; it records when each heartbeat
// came and when the long poll began and ended.
class ScriptedLink : public CoordinatorLink {
 public:
  explicit ScriptedLink(absl::Duration poll) : poll_(poll) {}
  absl::StatusOr<std::string> GetRunConfig(const std::string&,
                                           const std::string&) override {
    return absl::UnimplementedError("not used");
  }
  absl::StatusOr<JoinInfo> Join(const JoinParams&) override {
    JoinInfo info;
    info.run_id = "run";
    info.heartbeat = absl::Milliseconds(100);
    return info;
  }
  absl::Status Leave(const std::string&) override { return absl::OkStatus(); }
  absl::Status Heartbeat() override {
    absl::MutexLock lock(&mu);
    heartbeats.push_back(absl::Now());
    return absl::OkStatus();
  }
  absl::StatusOr<ClientTask> GetTask(absl::Duration) override {
    ClientTask task;
    if (++polls == 1) {
      absl::MutexLock lock(&mu);
      poll_began = absl::Now();
    }
    if (polls == 1) {
      absl::SleepFor(poll_);
      absl::MutexLock lock(&mu);
      poll_ended = absl::Now();
    }
    task.kind = polls == 1   ? ClientTaskKind::kWait
                : polls == 2 ? ClientTaskKind::kScore
                             : ClientTaskKind::kFinished;
    task.round = 1;
    task.time_left = absl::Seconds(30);
    task.metric = "rgn";
    return task;
  }
  absl::StatusOr<TransferStats> Fetch(Replica& replica, LayerCache*) override {
    replica.run_id = "run";
    replica.committed_round = 0;
    return TransferStats{};
  }
  absl::Status ReportScores(int64_t, const std::vector<double>&,
                            const WorkCost&) override {
    return absl::OkStatus();
  }
  absl::StatusOr<TransferStats> Upload(int64_t, int64_t,
                                       const std::vector<LayerDelta>&,
                                       absl::Duration,
                                       const WorkCost&) override {
    return absl::UnimplementedError("not used");
  }
  absl::Status SendAdvert(int64_t, const SecAggAdvert&) override {
    return absl::UnimplementedError("not used");
  }
  absl::Status SendShares(int64_t, const std::vector<SecAggShare>&) override {
    return absl::UnimplementedError("not used");
  }
  absl::Status SendUnmask(int64_t, const SecAggUnmaskResponse&) override {
    return absl::UnimplementedError("not used");
  }
  absl::StatusOr<TransferStats> UploadMasked(int64_t,
                                             const SecAggMaskedInput&,
                                             absl::Duration,
                                             const WorkCost&) override {
    return absl::UnimplementedError("not used");
  }

  absl::Mutex mu;
  int polls = 0;  // the daemon's thread only
  std::vector<absl::Time> heartbeats ABSL_GUARDED_BY(mu);
  absl::Time poll_began ABSL_GUARDED_BY(mu), poll_ended ABSL_GUARDED_BY(mu);

 private:
  absl::Duration poll_;
};

// An idle client's long poll is its presence (the coordinator counts the
// poll's arrival as contact and holds it at most half of client_timeout_s): no heartbeat goes out while one is in flight, so 10,000
// idle clients cost one call per poll, not one per poll and one per period.
// While it works (no call in flight) it heartbeats every period.
TEST(DaemonHeartbeatTest, NoHeartbeatWhileAPollIsInFlightEveryPeriodWhileWorking) {
  ScriptedLink link(absl::Milliseconds(1200));  // 12 heartbeat periods
  SyntheticWork::Options wo;
  wo.delay = absl::Milliseconds(1200);  // scoring takes 12 periods
  SyntheticWork work("c1", wo);
  DaemonOptions options;
  options.client_id = "c1";
  absl::StatusOr<DaemonResult> result =
      RunClientDaemon(options, work, link, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  absl::MutexLock lock(&link.mu);
  EXPECT_EQ(link.polls, 3);
  // None during the 1.2 s poll (a heartbeat already on its way when the
  // poll began may land in its first moments: 50 ms of margin); then 12
  // periods of scoring (a loaded machine may wake the heartbeat thread late).
  int during_poll = 0, after = 0;
  for (absl::Time t : link.heartbeats) {
    if (t > link.poll_began + absl::Milliseconds(50) && t < link.poll_ended) {
      ++during_poll;
    }
    if (t >= link.poll_ended) ++after;
  }
  EXPECT_EQ(during_poll, 0);
  EXPECT_GE(after, 4);
  EXPECT_LE(after, 14);
}

TEST(LoadGenOptionsTest, RefusalsNameTheFlag) {
  LoadGenOptions o;
  o.target = "127.0.0.1:1";
  o.clients = 0;
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("--clients"));
  o.clients = 1;
  o.drop_fraction = 1.5;
  EXPECT_THAT(std::string(o.Validate().message()),
              HasSubstr("--drop_fraction: must be in [0, 1], got 1.5"));
  o.drop_fraction = 0;
  o.target = "";
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("--coordinator"));
}

class LoadGenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/share/datasets/fashion-mnist")) {
      GTEST_SKIP() << "Fashion-MNIST is not installed (make setup)";
    }
    dir_ = ::testing::TempDir() + "/loadgen_test_" + std::to_string(getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
  }

  // configs/distributed_test.yaml for `clients` connected clients, `sample`
  // per round, a round deadline, and `transport_extra` YAML for the
  // transport section.
  std::string Config(int clients, int sample, int min_clients,
                     int round_deadline_s, const std::string& transport_extra) {
    std::string text = ReadFile(kSource + "/configs/distributed_test.yaml");
    text = std::regex_replace(text, std::regex("run_dir: [^\\n]*"),
                              "run_dir: " + dir_ + "/run");
    text = std::regex_replace(text, std::regex("clients_per_round: 4"),
                              absl::StrCat("clients_per_round: ", sample));
    text = std::regex_replace(text, std::regex("min_clients: 2"),
                              absl::StrCat("min_clients: ", min_clients));
    text = std::regex_replace(
        text, std::regex("round_deadline_s: 60"),
        absl::StrCat("round_deadline_s: ", round_deadline_s));
    text = std::regex_replace(text, std::regex("num_clients: 4"),
                              absl::StrCat("num_clients: ", clients));
    text += absl::StrCat("transport:\n  wait_for_clients: ", clients,
                         "\n  wait_for_clients_s: 60\n", transport_extra);
    const std::string path = dir_ + "/run.yaml";
    std::ofstream(path) << text;
    return path;
  }

  // Runs a coordinator on `config` and layerfl-loadgen with `flags`; both
  // must exit 0. Returns the loadgen's summary line.
  std::string Run(const std::string& config,
                  const std::vector<std::string>& flags, absl::Time deadline) {
    const std::string port_file = dir_ + "/port";
    Process coordinator({kBin + "/layerfl-coordinator", "--config=" + config,
                         "--listen=127.0.0.1:0", "--port_file=" + port_file,
                         "--tick_ms=20", "--metrics_listen="},
                        dir_ + "/coordinator.log");
    while (!fs::exists(port_file) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    const std::string port = ReadFile(port_file).substr(
        0, ReadFile(port_file).find('\n'));
    EXPECT_FALSE(port.empty()) << coordinator.Log();
    std::vector<std::string> argv = {kBin + "/layerfl-loadgen",
                                     "--coordinator=127.0.0.1:" + port,
                                     "--poll_ms=2000"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    Process loadgen(argv, dir_ + "/loadgen.log");
    EXPECT_EQ(loadgen.Wait(deadline), 0) << loadgen.Log();
    EXPECT_EQ(coordinator.Wait(deadline), 0) << coordinator.Log();
    coordinator_log_ = coordinator.Log();
    return loadgen.Log();
  }

  std::vector<nlohmann::json> Records() {
    std::vector<nlohmann::json> out;
    std::ifstream in(dir_ + "/run/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      out.push_back(nlohmann::json::parse(line));
    }
    return out;
  }

  static int64_t Field(const std::string& summary, const std::string& what) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(summary, m,
                                  std::regex("(\\d+) " + what + "[,;]")))
        << what << " in " << summary;
    return m.empty() ? -1 : std::stoll(m[1]);
  }

  std::string dir_;
  std::string coordinator_log_;
};

TEST_F(LoadGenTest, FiveHundredClientsEveryRoundCommitsEveryUploadCounted) {
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  const std::string summary =
      Run(Config(500, 50, 50, 60, ""), {"--clients=500"}, deadline);
  if (HasFatalFailure()) return;
  EXPECT_THAT(summary, HasSubstr("500 clients: 500 finished, 0 failed, "
                                 "0 dropped, 0 errors"));
  EXPECT_EQ(Field(summary, "joins"), 500);
  const std::vector<nlohmann::json> records = Records();
  ASSERT_EQ(records.size(), 3u);
  int64_t contributed = 0, wire_up = 0;
  for (const nlohmann::json& r : records) {
    EXPECT_EQ(r["clients"].size(), 50u) << r.dump();
    for (const auto& c : r["clients"]) contributed += c["contributed"] ? 1 : 0;
    wire_up += r["wire_bytes_up"].get<int64_t>();
    EXPECT_TRUE(r["rejected"].empty()) << r.dump();
  }
  // Every accepted upload, and every byte of it, is in a committed round.
  EXPECT_EQ(contributed, 150);
  EXPECT_EQ(Field(summary, "uploads accepted"), contributed);
  EXPECT_EQ(Field(summary, "refused"), 0);
  EXPECT_EQ(Field(summary, "bytes up"), wire_up);
  EXPECT_EQ(Field(summary, "scores"), 150);  // selection_period 1
}

// 5% fail in round 2 (they leave with the reason), 5% stop dead after their
// round-1 upload (the coordinator times them out); every round still
// commits and the leaves are counted by reason.
TEST_F(LoadGenTest, FailingAndDroppingClientsAreAccountedFor) {
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  const std::string summary =
      Run(Config(200, 40, 20, 4, "  client_timeout_s: 2\n  heartbeat_s: 1\n"),
          {"--clients=200", "--fail_fraction=0.05", "--fail_round=2",
           "--drop_fraction=0.05", "--drop_round=1"},
          deadline);
  if (HasFatalFailure()) return;
  const int64_t failed = Field(summary, "failed");
  const int64_t dropped = Field(summary, "dropped");
  EXPECT_GE(failed, 1) << summary;
  EXPECT_GE(dropped, 1) << summary;
  EXPECT_EQ(Field(summary, "errors"), 0) << summary;
  EXPECT_EQ(Field(summary, "finished"), 200 - failed - dropped);
  const std::vector<nlohmann::json> records = Records();
  ASSERT_EQ(records.size(), 3u);
  int64_t contributed = 0;
  for (const nlohmann::json& r : records) {
    for (const auto& c : r["clients"]) contributed += c["contributed"] ? 1 : 0;
  }
  EXPECT_EQ(Field(summary, "uploads accepted"), contributed);
  // Only clients that scored in round 2 meet their failure there.
  EXPECT_THAT(coordinator_log_,
              HasSubstr("synthetic failure in round 2'); leaves for "
                        "work_failed so far: 1"));
  EXPECT_THAT(coordinator_log_, HasSubstr("timed out"));
}

}  // namespace
}  // namespace layerfl
