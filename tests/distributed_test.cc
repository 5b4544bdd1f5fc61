// Multi-process scenarios on 127.0.0.1 with the real binaries: a coordinator
// and 4 client daemons finish configs/distributed_test.yaml with the same
// final weights (bit for bit) and the same metrics as layerfl-sim; downloads
// carry only changed layers; uploads carry little more than their values;
// exit codes and shutdown behave.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "server/checkpoint/checkpoint_store.h"
#include "tests/process_fixture.h"
#include "tests/run_fixture.h"
#include "tests/weights_matchers.h"

namespace layerfl {
namespace {

namespace fs = std::filesystem;
using fixture::Process;
using fixture::ReadFile;

const std::string kBin = LAYERFL_BIN_DIR;
const std::string kSource = LAYERFL_SOURCE_DIR;

// configs/distributed_test.yaml with run_dir <dir>/<name>, and `extra` (YAML)
// appended.
std::string WriteConfig(const std::string& dir, const std::string& name,
                        const std::string& extra = "") {
  const std::string text =
      std::regex_replace(ReadFile(kSource + "/configs/distributed_test.yaml"),
                         std::regex("run_dir: [^\\n]*"),
                         "run_dir: " + dir + "/" + name) +
      extra;
  const std::string path = dir + "/" + name + ".yaml";
  std::ofstream(path) << text;
  return path;
}

using fixture::LatestCheckpoint;
using fixture::RunMetrics;

class DistributedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/share/datasets/fashion-mnist")) {
      GTEST_SKIP() << "Fashion-MNIST is not installed (make setup)";
    }
    dir_ =
        ::testing::TempDir() + "/distributed_test_" + std::to_string(getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  // Logs and run directories stay for a failed test only.
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
  }

  // layerfl-sim on <dir>/<tag>_sim.yaml's run and, meanwhile, a
  // layerfl-coordinator on <tag>_coord.yaml with 4 layerfl-client processes
  // (as RunCoordinatorWithClients), all to exit 0; then both runs end with
  // the same weights, versions, selection state and metrics.
  void RunAndCompareWithTheSimulator(
      const std::string& sim_config, const std::string& coord_config,
      const std::string& sim_dir, const std::string& coord_dir,
      const std::function<std::vector<std::string>(int)>& client_flags,
      absl::Time deadline, int processes = 4) {
    // The simulation runs meanwhile, as its own process.
    Process sim({kBin + "/layerfl-sim", "--config=" + sim_config},
                sim_dir + ".sim.log");
    RunCoordinatorWithClients(coord_config, coord_dir, client_flags, deadline,
                              processes);
    if (HasFatalFailure()) return;
    ASSERT_EQ(sim.Wait(deadline), 0) << sim.Log();

    // The same final weights, bit for bit, and versions.
    const Checkpoint a = LatestCheckpoint(coord_dir);
    const Checkpoint b = LatestCheckpoint(sim_dir);
    EXPECT_EQ(a.round, 3);
    EXPECT_EQ(a.round, b.round);
    ExpectBitIdentical(a.weights, b.weights);
    EXPECT_EQ(a.selection_state, b.selection_state);
    // The same rounds: participants, layers, objective, accuracy and loss.
    EXPECT_EQ(RunMetrics(coord_dir), RunMetrics(sim_dir));
  }

  // A layerfl-coordinator on `config` (log at <coord_dir>.coordinator.log)
  // and, in `port`, the port it listens on ("" if it did not say by
  // `deadline`).
  std::unique_ptr<Process> StartCoordinator(const std::string& config,
                                            const std::string& coord_dir,
                                            absl::Time deadline,
                                            std::string* port) {
    const std::string port_file = coord_dir + ".port";
    std::vector<std::string> argv = {kBin + "/layerfl-coordinator",
                                     "--config=" + config,
                                     "--listen=127.0.0.1:0",
                                     "--port_file=" + port_file,
                                     "--tick_ms=20", "--metrics_listen="};
    argv.insert(argv.end(), coordinator_flags_.begin(),
                coordinator_flags_.end());
    auto coordinator =
        std::make_unique<Process>(argv, coord_dir + ".coordinator.log");
    while (!fs::exists(port_file) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    port->clear();
    if (fs::exists(port_file)) {
      *port = ReadFile(port_file).substr(0, ReadFile(port_file).find('\n'));
    }
    return coordinator;
  }

  // `n` layerfl-client processes against the coordinator on `port`, client
  // i with `flags(i)`; logs at <coord_dir>.client<i>.log.
  std::vector<std::unique_ptr<Process>> StartClients(
      const std::string& port, const std::string& coord_dir, int n,
      const std::function<std::vector<std::string>(int)>& flags) {
    std::vector<std::unique_ptr<Process>> clients;
    for (int i = 0; i < n; ++i) {
      std::vector<std::string> argv = {kBin + "/layerfl-client",
                                       "--coordinator=127.0.0.1:" + port};
      for (std::string& f : flags(i)) argv.push_back(std::move(f));
      clients.push_back(std::make_unique<Process>(
          argv, absl::StrCat(coord_dir, ".client", i, ".log")));
    }
    return clients;
  }

  // A layerfl-coordinator on `config` and `processes` layerfl-client
  // processes (--coordinator, --poll_ms, --threads=1 plus client_flags(i):
  // no --config
  // unless it says so, the run's config comes from the coordinator); all
  // must exit 0 by `deadline`. Logs at <coord_dir>.coordinator.log and
  // <coord_dir>.client<i>.log.
  void RunCoordinatorWithClients(
      const std::string& config, const std::string& coord_dir,
      const std::function<std::vector<std::string>(int)>& client_flags,
      absl::Time deadline, int processes = 4) {
    std::string port;
    std::unique_ptr<Process> started =
        StartCoordinator(config, coord_dir, deadline, &port);
    Process& coordinator = *started;
    ASSERT_FALSE(port.empty()) << coordinator.Log();
    // threads is machine-local (a client without a config file takes none
    // of the coordinator's): the runs compared here use 1.
    std::vector<std::unique_ptr<Process>> clients =
        StartClients(port, coord_dir, processes, [&](int i) {
          std::vector<std::string> flags = {"--poll_ms=2000", "--threads=1"};
          for (std::string& f : client_flags(i)) flags.push_back(std::move(f));
          return flags;
        });
    for (auto& c : clients) EXPECT_EQ(c->Wait(deadline), 0) << c->Log();
    ASSERT_EQ(coordinator.Wait(deadline), 0) << coordinator.Log();
  }

  std::string dir_;
  std::vector<std::string> coordinator_flags_;  // added to every coordinator
};

TEST_F(DistributedTest, CoordinatorAndFourClientsMatchTheSimulatorBitForBit) {
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  const std::string sim_config = WriteConfig(dir_, "sim");
  // The coordinator sees the test images only (its pretrained start, if
  // any, would be cached; this config has none), every upload is received
  // to disk and folded from there, and every update that waits for its turn
  // waits on disk (run_dir/held): the run must still equal the simulation.
  coordinator_flags_ = {"--receive_to_disk"};
  const std::string test_only = dir_ + "/test_only";
  fs::create_directories(test_only);
  for (const char* f :
       {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    fs::create_symlink(std::string("/usr/share/datasets/fashion-mnist/") + f,
                       test_only + "/" + f);
  }
  const std::string coord_config =
      WriteConfig(dir_, "coord", "transport:\n  max_held_mb: 0\n");
  const std::string with_test_only =
      std::regex_replace(ReadFile(coord_config), std::regex("\ndata:\n"),
                         "\ndata:\n  dir: " + test_only + "\n");
  std::ofstream(coord_config) << with_test_only;
  ASSERT_THAT(ReadFile(coord_config),
              ::testing::HasSubstr("  dir: " + test_only));
  // The clients train on their own copies of their data, as on separate
  // machines (layerfl-partition writes them from the full dataset).
  Process partition({kBin + "/layerfl-partition", "--config=" + sim_config,
                     "--out=" + dir_ + "/private"},
                    dir_ + "/partition.log");
  ASSERT_EQ(partition.Wait(deadline), 0) << partition.Log();
  // Clients 2 and 3 run in one worker process (--ids over their data
  // directories). No client has a config file but client-001, whose file
  // differs from the run's in a field that defines it (train.lr) and in
  // machine-local ones (threads, profile.cache_dir): with --config_mode=run it
  // runs the coordinator's config, so the run is still the simulator's.
  const std::string own = dir_ + "/client1_own.yaml";
  std::ofstream(own) << "threads: 1\ntrain:\n  lr: 0.9\nprofile:\n"
                        "  cache_dir: "
                     << dir_ << "/client1_cache\n";
  RunAndCompareWithTheSimulator(
      sim_config, coord_config, dir_ + "/sim", dir_ + "/coord",
      [this, own](int i) -> std::vector<std::string> {
        // Clients 2 and 3 share one worker process, each on its own data.
        if (i == 2) {
          return {"--ids=client-002..client-003",
                  "--data_root=" + dir_ + "/private"};
        }
        const std::string id = absl::StrCat("client-00", i);
        std::vector<std::string> flags = {
            "--id=" + id, "--data_dir=" + dir_ + "/private/" + id};
        if (i == 1) {
          flags.push_back("--config=" + own);
          flags.push_back("--config_mode=run");
        }
        return flags;
      },
      deadline, /*processes=*/3);
  if (HasFatalFailure()) return;
  const Checkpoint a = LatestCheckpoint(dir_ + "/coord");
  EXPECT_THAT(ReadFile(dir_ + "/coord/metrics.jsonl"),
              ::testing::HasSubstr("\"wire_bytes_up\":"));
  EXPECT_THAT(ReadFile(dir_ + "/sim/metrics.jsonl"),
              ::testing::Not(::testing::HasSubstr("\"wire_bytes_up\":")));

  // Downloads: round 1 carries the whole model to each of the 4 clients;
  // round t > 1 only the layers round t-1 changed.
  std::map<std::string, int64_t> numel;
  for (const LayerWeights& l : a.weights.layers) numel[l.group] = l.numel();
  std::ifstream in(dir_ + "/coord/metrics.jsonl");
  std::vector<std::string> previous_changed;
  int round = 0;
  for (std::string line; std::getline(in, line);) {
    ++round;
    std::smatch m;
    ASSERT_TRUE(
        std::regex_search(line, m, std::regex("\"bytes_down\":([0-9]+)")));
    const int64_t bytes_down = std::stoll(m[1]);
    int64_t want = 0;
    if (round == 1) {
      for (const auto& [group, n] : numel) want += 4 * n * 4;
    } else {
      for (const std::string& g : previous_changed) want += 4 * numel[g] * 4;
    }
    std::cout << "round " << round << ": downloaded " << bytes_down
              << " wire bytes; the changed layers' values weigh " << want
              << "\n";
    EXPECT_GE(bytes_down, want);
    EXPECT_LE(bytes_down, want * 1.02 + 4 * 2 * 1024) << "round " << round;
    ASSERT_TRUE(std::regex_search(
        line, m, std::regex("\"changed_layers\":\\[([^\\]]*)\\]")));
    previous_changed.clear();
    const std::string list = m[1];
    const std::regex quoted("\"([^\"]+)\"");
    for (std::sregex_iterator it(list.begin(), list.end(), quoted), end;
         it != end; ++it) {
      previous_changed.push_back((*it)[1]);
    }
    EXPECT_LT(previous_changed.size(), numel.size())
        << "test needs a sparse round";
  }
  EXPECT_EQ(round, 3);

  // Uploads: wire bytes per update / (its values x 4 bytes).
  const std::string log = ReadFile(dir_ + "/coord.coordinator.log");
  double worst = 0;
  int updates = 0;
  const std::regex update("([0-9]+) wire bytes for ([0-9]+) values");
  for (std::sregex_iterator it(log.begin(), log.end(), update), end; it != end;
       ++it) {
    worst = std::max(worst, std::stod((*it)[1]) / (std::stod((*it)[2]) * 4));
    ++updates;
  }
  std::cout << updates
            << " updates; upload wire bytes / (selected params x 4 bytes), "
            << "worst " << worst << "\n";
  EXPECT_EQ(updates, 12);
  EXPECT_LE(worst, 1.02);
}

// Differential privacy (local mode) and secure aggregation on, over gRPC:
// one client stops dead right after its masked update of the last round was
// accepted (it never answers the unmask step); the round commits at the
// deadline with the other three revealing what is needed, and the run ends
// with the simulator's weights and metrics, bit for bit.
TEST_F(DistributedTest, PrivateSecureRunWithAClientLostAfterUploadMatchesSim) {
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  const std::string privacy =
      "privacy:\n"
      "  dp:\n    enabled: true\n    mode: local\n    clip_norm: 0.5\n"
      "    noise_multiplier: 0.3\n    noise_seed: 11\n"
      "  secure_aggregation:\n    enabled: true\n    threshold: 0.5\n"
      "    value_range: 2.0\n";
  auto uniform = [](const std::string& path, const std::string& deadline_s) {
    std::string text =
        std::regex_replace(ReadFile(path), std::regex("  min_clients: 2\n"),
                           "  min_clients: 2\n  aggregation: uniform\n");
    text = std::regex_replace(text, std::regex("round_deadline_s: 60"),
                              "round_deadline_s: " + deadline_s);
    std::ofstream(path) << text;
  };
  const std::string sim_config = WriteConfig(dir_, "sim", privacy);
  uniform(sim_config, "60");
  const std::string coord_config =
      WriteConfig(dir_, "coord", privacy + "transport:\n  linger_s: 2\n");
  uniform(coord_config, "8");
  Process sim({kBin + "/layerfl-sim", "--config=" + sim_config},
              dir_ + "/sim.sim.log");

  const std::string coord_dir = dir_ + "/coord";
  std::string port;
  std::unique_ptr<Process> started =
      StartCoordinator(coord_config, coord_dir, deadline, &port);
  Process& coordinator = *started;
  ASSERT_FALSE(port.empty()) << coordinator.Log();
  std::vector<std::unique_ptr<Process>> clients =
      StartClients(port, coord_dir, 4, [&](int i) {
        std::vector<std::string> flags = {"--config=" + coord_config,
                                          "--poll_ms=2000",
                                          absl::StrCat("--partition=", i)};
        if (i == 3) flags.push_back("--fault_exit_after_upload=3");
        return flags;
      });
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(clients[i]->Wait(deadline), 0) << clients[i]->Log();
  EXPECT_NE(clients[3]->Wait(deadline), 0);
  EXPECT_THAT(clients[3]->Log(), ::testing::HasSubstr("fault injection"));
  ASSERT_EQ(coordinator.Wait(deadline), 0) << coordinator.Log();
  ASSERT_EQ(sim.Wait(deadline), 0) << sim.Log();

  const std::string log = coordinator.Log();
  EXPECT_THAT(log,
              ::testing::HasSubstr("round 3: masked update from client-003"));
  EXPECT_THAT(log, ::testing::Not(::testing::HasSubstr(
                       "round 3: unmask response from client-003")));
  EXPECT_THAT(log,
              ::testing::HasSubstr("round 3: unmask response from client-000"));
  const Checkpoint a = LatestCheckpoint(coord_dir);
  const Checkpoint b = LatestCheckpoint(dir_ + "/sim");
  EXPECT_EQ(a.round, 3);
  ExpectBitIdentical(a.weights, b.weights);
  EXPECT_EQ(RunMetrics(coord_dir), RunMetrics(dir_ + "/sim"));
  EXPECT_THAT(ReadFile(coord_dir + "/metrics.jsonl"),
              ::testing::HasSubstr("\"privacy\":{\"epsilon\":"));
  EXPECT_THAT(log, ::testing::HasSubstr(
                       "round 3 committed (attempt 0): 4 of 4 clients"));
  EXPECT_THAT(log, ::testing::HasSubstr(", epsilon "));
  // The masked uploads were counted on the wire: at least their values.
  std::smatch m;
  const std::string metrics = ReadFile(coord_dir + "/metrics.jsonl");
  ASSERT_TRUE(
      std::regex_search(metrics, m, std::regex("\"wire_bytes_up\":([0-9]+)")));
  EXPECT_GT(std::stoll(m[1]), 0);
}

// Issue 24's weight check on loopback: a client process killed mid-run
// changes the participation (the round after commits at its deadline
// without it), and layerfl-sim replaying the committed rounds' participants
// and layers (--replay) ends with the coordinator's final weights bit for
// bit.
TEST_F(DistributedTest,
       AClientKilledMidRunEqualsTheReplayOfItsCommittedRounds) {
  const absl::Time deadline = absl::Now() + absl::Seconds(150);
  const auto config = [this](const std::string& name) {
    const std::string path = WriteConfig(dir_, name);
    std::string text = ReadFile(path);
    text = std::regex_replace(text, std::regex("rounds: 3"), "rounds: 4");
    text = std::regex_replace(text, std::regex("round_deadline_s: 60"),
                              "round_deadline_s: 4");
    std::ofstream(path) << text;
    return path;
  };
  const std::string coord_config = config("killed");
  Process partition({kBin + "/layerfl-partition", "--config=" + coord_config,
                     "--out=" + dir_ + "/private"},
                    dir_ + "/partition.log");
  ASSERT_EQ(partition.Wait(deadline), 0) << partition.Log();
  std::string port;
  std::unique_ptr<Process> coordinator =
      StartCoordinator(coord_config, dir_ + "/killed", deadline, &port);
  ASSERT_FALSE(port.empty()) << coordinator->Log();
  std::vector<std::unique_ptr<Process>> clients =
      StartClients(port, dir_ + "/killed", 4, [&](int i) {
        const std::string id = absl::StrCat("client-00", i);
        return std::vector<std::string>{"--poll_ms=500", "--threads=1",
                                        "--id=" + id,
                                        "--data_dir=" + dir_ + "/private/" + id};
      });
  const std::string metrics = dir_ + "/killed/metrics.jsonl";
  while (absl::Now() < deadline && RunMetrics(dir_ + "/killed").empty()) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  clients[2]->Signal(SIGKILL);  // after round 1, never to return
  for (int i : {0, 1, 3}) {
    EXPECT_EQ(clients[i]->Wait(deadline), 0) << clients[i]->Log();
  }
  ASSERT_EQ(coordinator->Wait(deadline), 0) << coordinator->Log();
  // Round 1 added client-002's update; no round after it did (it was dropped
  // at a deadline of round 2, scoring or training, then no longer joined).
  const std::vector<std::string> rounds = absl::StrSplit(
      ReadFile(metrics), '\n', absl::SkipEmpty());
  ASSERT_EQ(rounds.size(), 4u);
  const std::regex contributed(
      "\"id\":\"client-002\",\"budget\":[0-9.]+,\"layers\":\\[[^\\]]*\\],"
      "\"contributed\":true");
  EXPECT_TRUE(std::regex_search(rounds[0], contributed)) << rounds[0];
  for (size_t r = 1; r < rounds.size(); ++r) {
    EXPECT_FALSE(std::regex_search(rounds[r], contributed)) << rounds[r];
  }

  const std::string replay_config = config("replayed");
  Process replay({kBin + "/layerfl-sim", "--config=" + replay_config,
                  "--replay=" + metrics},
                 dir_ + "/replayed.sim.log");
  ASSERT_EQ(replay.Wait(deadline), 0) << replay.Log();
  const Checkpoint a = LatestCheckpoint(dir_ + "/killed");
  const Checkpoint b = LatestCheckpoint(dir_ + "/replayed");
  EXPECT_EQ(a.round, 4);
  EXPECT_EQ(b.round, 4);
  ExpectBitIdentical(a.weights, b.weights);
}

// The same check for a secure run whose clients round from a seed
// (privacy.dp.noise_seed): client-003 sends its key shares in round 2 and
// dies before its masked update, so round 2's roster holds 4 clients and
// its sum 3 updates; the replay, with 3 participants, quantizes with the
// recorded roster's headroom and ends with the coordinator's weights.
TEST_F(DistributedTest,
       ASecureRunWithAClientLostAfterItsSharesEqualsItsReplay) {
  const absl::Time deadline = absl::Now() + absl::Seconds(150);
  const std::string privacy =
      "privacy:\n"
      "  dp:\n    noise_seed: 11\n"
      "  secure_aggregation:\n    enabled: true\n    threshold: 0.5\n"
      "    value_range: 2.0\n";
  const auto config = [&](const std::string& name) {
    const std::string path = WriteConfig(dir_, name, privacy);
    std::string text = ReadFile(path);
    text = std::regex_replace(text, std::regex("  min_clients: 2\n"),
                              "  min_clients: 2\n  aggregation: uniform\n");
    text = std::regex_replace(text, std::regex("round_deadline_s: 60"),
                              "round_deadline_s: 4");
    std::ofstream(path) << text;
    return path;
  };
  const std::string coord_config = config("secure");
  const std::string coord_dir = dir_ + "/secure";
  std::string port;
  std::unique_ptr<Process> coordinator =
      StartCoordinator(coord_config, coord_dir, deadline, &port);
  ASSERT_FALSE(port.empty()) << coordinator->Log();
  std::vector<std::unique_ptr<Process>> clients =
      StartClients(port, coord_dir, 4, [&](int i) {
        std::vector<std::string> flags = {"--config=" + coord_config,
                                          "--poll_ms=500",
                                          absl::StrCat("--partition=", i)};
        if (i == 3) flags.push_back("--fault_exit_after_shares=2");
        return flags;
      });
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(clients[i]->Wait(deadline), 0) << clients[i]->Log();
  }
  EXPECT_NE(clients[3]->Wait(deadline), 0);
  ASSERT_EQ(coordinator->Wait(deadline), 0) << coordinator->Log();
  const std::vector<std::string> rounds = absl::StrSplit(
      ReadFile(coord_dir + "/metrics.jsonl"), '\n', absl::SkipEmpty());
  ASSERT_EQ(rounds.size(), 3u);
  EXPECT_THAT(rounds[1], ::testing::HasSubstr(
                             "\"secure_aggregation\":{\"roster\":4}"));
  EXPECT_THAT(rounds[1], ::testing::ContainsRegex(
                             "\"id\":\"client-003\",[^}]*\"contributed\":"
                             "false"));

  const std::string replay_config = config("secure_replayed");
  Process replay({kBin + "/layerfl-sim", "--config=" + replay_config,
                  "--replay=" + coord_dir + "/metrics.jsonl",
                  "--expect_run_dir=" + coord_dir},
                 dir_ + "/secure_replayed.sim.log");
  ASSERT_EQ(replay.Wait(deadline), 0) << replay.Log();
  EXPECT_THAT(replay.Log(),
              ::testing::HasSubstr("'s round 3 bit for bit"));
  const Checkpoint a = LatestCheckpoint(coord_dir);
  const Checkpoint b = LatestCheckpoint(dir_ + "/secure_replayed");
  EXPECT_EQ(a.round, 3);
  EXPECT_EQ(b.round, 3);
  ExpectBitIdentical(a.weights, b.weights);
}

// A client whose config file is not the run's is refused at start, naming
// the first field that differs with both values, before it joins. A client
// whose local work fails (told to run its own config, --config_mode=local,
// that builds a narrower model than the run's) tells the coordinator why
// before it exits; the round goes on without it at once instead of waiting
// out the 60 s deadline.
TEST_F(DistributedTest, ClientWhoseWorkFailsLeavesWithItsReason) {
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(100);
  const std::string config = WriteConfig(dir_, "coord");
  const std::string narrow = dir_ + "/narrow.yaml";
  std::ofstream(narrow) << std::regex_replace(
      ReadFile(config), std::regex("  dim: 32\n"), "  dim: 16\n");
  ASSERT_THAT(ReadFile(narrow), ::testing::HasSubstr("  dim: 16\n"));
  const std::string coord_dir = dir_ + "/coord";
  std::string port;
  std::unique_ptr<Process> coordinator =
      StartCoordinator(config, coord_dir, deadline, &port);
  ASSERT_FALSE(port.empty()) << coordinator->Log();
  const std::string address = "--coordinator=127.0.0.1:" + port;

  Process differs({kBin + "/layerfl-client", "--config=" + narrow, address,
                   "--partition=3"},
                  coord_dir + ".differs.log");
  EXPECT_EQ(differs.Wait(deadline), 2) << differs.Log();
  EXPECT_THAT(differs.Log(),
              ::testing::HasSubstr("this client's config is not the run's: "
                                   "model.dim: this config has 16, the run's "
                                   "has 32"));
  EXPECT_THAT(differs.Log(), ::testing::HasSubstr("--config_mode=run"));

  std::vector<std::unique_ptr<Process>> clients;
  for (int i = 0; i < 4; ++i) {
    std::vector<std::string> argv = {kBin + "/layerfl-client", address,
                                     "--poll_ms=2000",
                                     absl::StrCat("--partition=", i)};
    if (i == 3) {
      argv.push_back("--config=" + narrow);
      argv.push_back("--config_mode=local");
    }
    clients.push_back(std::make_unique<Process>(
        argv, absl::StrCat(coord_dir, ".client", i, ".log")));
  }
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(clients[i]->Wait(deadline), 0) << clients[i]->Log();
  EXPECT_NE(clients[3]->Wait(deadline), 0);
  ASSERT_EQ(coordinator->Wait(deadline), 0) << coordinator->Log();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::cout << "run with a failing client took " << seconds
            << " s (round deadline 60 s)\n";
  EXPECT_LT(seconds, 40);
  const std::string log = coordinator->Log();
  EXPECT_THAT(log, ::testing::HasSubstr("leave client-003 ('work_failed: "));
  EXPECT_THAT(log, ::testing::HasSubstr("leaves for work_failed so far: 1"));
  // The mismatch names the tensor and both shapes.
  EXPECT_THAT(
      log, ::testing::HasSubstr("of shape [1, 1, 32] does not match model "
                                "parameter 'cls_token' of shape [1, 1, 16]"));
  EXPECT_EQ(LatestCheckpoint(coord_dir).round, 3);
}

// The coordinator process is SIGKILLed after its first committed round and
// started again on the same port and run_dir: it resumes from the last
// checkpoint, the clients reconnect and rejoin, and the run ends with the
// simulator's weights bit for bit, as if nothing had happened.
TEST_F(DistributedTest,
       CoordinatorKilledAndRestartedEndsLikeAnUninterruptedRun) {
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  const std::string sim_config = WriteConfig(dir_, "sim_k");
  const std::string coord_config = WriteConfig(dir_, "coord_k");
  const std::string port_file = dir_ + "/port_k";
  const std::string metrics = dir_ + "/coord_k/metrics.jsonl";
  auto lines = [&] {
    std::ifstream in(metrics);
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  };

  auto first = std::make_unique<Process>(
      std::vector<std::string>{
          kBin + "/layerfl-coordinator", "--config=" + coord_config,
          "--listen=127.0.0.1:0", "--port_file=" + port_file, "--tick_ms=20"},
      dir_ + "/coordinator_k1.log");
  Process sim({kBin + "/layerfl-sim", "--config=" + sim_config},
              dir_ + "/sim_k.log");
  while (!fs::exists(port_file) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(fs::exists(port_file)) << first->Log();
  const std::string port =
      ReadFile(port_file).substr(0, ReadFile(port_file).find('\n'));
  std::vector<std::unique_ptr<Process>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<Process>(
        std::vector<std::string>{
            kBin + "/layerfl-client", "--config=" + coord_config,
            absl::StrCat("--partition=", i), "--coordinator=127.0.0.1:" + port,
            "--poll_ms=2000", "--backoff_max_ms=300", "--give_up_s=60"},
        absl::StrCat(dir_, "/client_k", i, ".log")));
  }
  while (lines() < 1 && absl::Now() < deadline)
    absl::SleepFor(absl::Milliseconds(10));
  first->Signal(SIGKILL);
  EXPECT_EQ(first->Wait(deadline), 128 + SIGKILL);
  const int committed_at_kill = lines();
  ASSERT_GE(committed_at_kill, 1) << first->Log();
  ASSERT_LT(committed_at_kill, 3) << "the run ended before the kill";

  Process second({kBin + "/layerfl-coordinator", "--config=" + coord_config,
                  "--listen=127.0.0.1:" + port, "--tick_ms=20"},
                 dir_ + "/coordinator_k2.log");
  for (auto& c : clients) EXPECT_EQ(c->Wait(deadline), 0) << c->Log();
  ASSERT_EQ(second.Wait(deadline), 0) << second.Log();
  ASSERT_EQ(sim.Wait(deadline), 0) << sim.Log();
  EXPECT_THAT(second.Log(), ::testing::HasSubstr("resumed from round"));

  const Checkpoint a = LatestCheckpoint(dir_ + "/coord_k");
  const Checkpoint b = LatestCheckpoint(dir_ + "/sim_k");
  EXPECT_EQ(a.round, 3);
  EXPECT_EQ(a.round, b.round);
  ExpectBitIdentical(a.weights, b.weights);
  EXPECT_EQ(RunMetrics(dir_ + "/coord_k"), RunMetrics(dir_ + "/sim_k"));
}

// A text run (configs/text.yaml: Transformer encoder, TSV fixture): the
// coordinator and 4 clients, two on their own data, end like the simulator.
// A federation of 1,000 clients hosted by 4 worker processes (250 client
// daemons each, training in turn on one model replica) ends bit-identical
// to layerfl-sim's 1,000 virtual clients.
TEST_F(DistributedTest, ThousandClientsOnFourWorkersMatchTheSimulator) {
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  const auto write = [&](const std::string& name) {
    std::string text = ReadFile(WriteConfig(dir_, name));
    text = std::regex_replace(text, std::regex("num_clients: 4"),
                              "num_clients: 1000");
    text = std::regex_replace(text, std::regex("clients_per_round: 4"),
                              "clients_per_round: 20");
    text = std::regex_replace(text, std::regex("min_clients: 2"),
                              "min_clients: 20");
    text += "transport:\n  wait_for_clients: 1000\n  wait_for_clients_s: 60\n";
    const std::string path = dir_ + "/" + name + ".yaml";
    std::ofstream(path) << text;
    return path;
  };
  RunAndCompareWithTheSimulator(
      write("k_sim"), write("k_coord"), dir_ + "/k_sim", dir_ + "/k_coord",
      [](int i) -> std::vector<std::string> {
        return {absl::StrCat("--partitions=", 250 * i, "..", 250 * i + 249)};
      },
      deadline, /*processes=*/4);
  if (HasFatalFailure()) return;
  const std::string log = ReadFile(dir_ + "/k_coord.coordinator.log");
  EXPECT_THAT(log, ::testing::HasSubstr("join client-999:"));
  EXPECT_THAT(log, ::testing::HasSubstr("join client-000:"));
}

// federated.mode async over gRPC. With one place, each update is the only
// one in flight, so the arrival order is the order the places are drawn
// and the distributed run must equal the simulation bit for bit (buffers
// of 2: each commit folds two sequential updates, the second trained from
// the same version as the first). The clients of a multi-place run below
// arrive in real-time order instead.
TEST_F(DistributedTest, AsyncOnePlaceMatchesTheSimulatorBitForBit) {
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  const auto write = [&](const std::string& name) {
    std::string text = ReadFile(WriteConfig(dir_, name));
    text = std::regex_replace(text, std::regex("clients_per_round: 4"),
                              "clients_per_round: 1\n  mode: async\n"
                              "  buffer_size: 2");
    text = std::regex_replace(text, std::regex("min_clients: 2"),
                              "min_clients: 1");
    const std::string path = dir_ + "/" + name + ".yaml";
    std::ofstream(path) << text;
    return path;
  };
  RunAndCompareWithTheSimulator(
      write("a_sim"), write("a_coord"), dir_ + "/a_sim", dir_ + "/a_coord",
      [](int i) -> std::vector<std::string> {
        return {absl::StrCat("--partition=", i)};
      },
      deadline);
  if (HasFatalFailure()) return;
  const std::vector<std::string> metrics = RunMetrics(dir_ + "/a_coord");
  ASSERT_EQ(metrics.size(), 3u);
  for (const std::string& line : metrics) {
    EXPECT_THAT(line, ::testing::HasSubstr("\"staleness\":0"));
    EXPECT_THAT(line, ::testing::HasSubstr("\"status\":\"async\""));
  }
}

// Four places, buffers of three, clients of very different speeds (client
// 0 waits half a second before each upload): every commit holds three
// updates, each accounted in the coordinator's log, and a stale one is
// either folded with its weight or refused too_stale, never lost.
TEST_F(DistributedTest, AsyncFourPlacesCommitsEveryBufferInArrivalOrder) {
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  std::string text = ReadFile(WriteConfig(dir_, "b_coord"));
  text = std::regex_replace(text, std::regex("clients_per_round: 4"),
                            "clients_per_round: 4\n  mode: async\n"
                            "  buffer_size: 3\n  max_staleness: 1");
  text = std::regex_replace(text, std::regex("rounds: 3"), "rounds: 6");
  std::ofstream(dir_ + "/b_coord.yaml") << text;
  RunCoordinatorWithClients(
      dir_ + "/b_coord.yaml", dir_ + "/b_coord",
      [](int i) -> std::vector<std::string> {
        std::vector<std::string> flags = {absl::StrCat("--partition=", i)};
        if (i == 0) flags.push_back("--delay_upload_ms=500");
        return flags;
      },
      deadline);
  if (HasFatalFailure()) return;
  std::ifstream in(dir_ + "/b_coord/metrics.jsonl");
  int commits = 0, folded = 0, stale_folded = 0, too_stale = 0;
  for (std::string line; std::getline(in, line);) {
    ++commits;
    const nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["clients"].size(), 3u) << line;
    for (const auto& c : j["clients"]) {
      ++folded;
      if (c["staleness"].get<int>() > 0) {
        ++stale_folded;
        EXPECT_EQ(c["staleness"].get<int>(), 1) << line;
        for (const auto& w : c["layer_weights"]) {
          EXPECT_LE(w.get<double>(), 1.0);
        }
      }
    }
    if (j["rejected"].contains("too_stale")) {
      too_stale += j["rejected"]["too_stale"].get<int>();
    }
  }
  EXPECT_EQ(commits, 6);
  EXPECT_EQ(folded, 18);
  const std::string log = ReadFile(dir_ + "/b_coord.coordinator.log");
  int accepted = 0;
  const std::regex update("update from client-00[0-3]");
  for (std::sregex_iterator it(log.begin(), log.end(), update), end; it != end;
       ++it) {
    ++accepted;
  }
  EXPECT_EQ(accepted, folded);
  std::cout << commits << " commits, " << folded << " updates folded ("
            << stale_folded << " stale), " << too_stale
            << " refused too_stale\n";
}

TEST_F(DistributedTest, TextRunMatchesTheSimulatorBitForBit) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  std::string text = ReadFile(kSource + "/configs/text.yaml");
  text = std::regex_replace(text, std::regex("_tsv: tests/"),
                            "_tsv: " + kSource + "/tests/");
  text = std::regex_replace(text, std::regex("rounds: 6"), "rounds: 3");
  text = std::regex_replace(text, std::regex("threads: 2"), "threads: 1");
  const auto write = [&](const std::string& name) {
    const std::string path = dir_ + "/" + name + ".yaml";
    std::ofstream(path) << std::regex_replace(
        text, std::regex("run_dir: [^\\n]*"), "run_dir: " + dir_ + "/" + name);
    return path;
  };
  // Clients 0 and 1 hold their own lines and the run's vocabulary
  // (layerfl-partition); 2 and 3 build their partitions from the shared files.
  const std::string coord_config = write("text_coord");
  Process partition({kBin + "/layerfl-partition", "--config=" + coord_config,
                     "--out=" + dir_ + "/text_private", "--clients=0,1"},
                    dir_ + "/text_partition.log");
  ASSERT_EQ(partition.Wait(deadline), 0) << partition.Log();
  RunAndCompareWithTheSimulator(
      write("text_sim"), coord_config, dir_ + "/text_sim", dir_ + "/text_coord",
      [this](int i) -> std::vector<std::string> {
        if (i >= 2) return {absl::StrCat("--partition=", i)};
        const std::string id = absl::StrCat("client-00", i);
        return {"--id=" + id, "--data_dir=" + dir_ + "/text_private/" + id};
      },
      deadline);
  if (HasFatalFailure()) return;
  const std::vector<std::string> metrics = RunMetrics(dir_ + "/text_coord");
  ASSERT_FALSE(metrics.empty());
  EXPECT_THAT(metrics.back(), ::testing::HasSubstr("\"accuracy\":"));
}

// importance.source train over gRPC: the trained groups' scores travel in
// the upload manifests, rounds 2 and 3 run no scoring phase, and the run
// still ends with the simulator's weights bit for bit.
TEST_F(DistributedTest, ScoresFromTrainingMatchTheSimulatorBitForBit) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  const auto write = [&](const std::string& name) {
    const std::string path = WriteConfig(dir_, name);
    const std::string text = std::regex_replace(
        ReadFile(path), std::regex("importance:\n  batches: 2\n"),
        "importance:\n  source: train\n  batches: 1\n  decay: 0.5\n");
    std::ofstream(path) << text;
    EXPECT_THAT(text, ::testing::HasSubstr("source: train"));
    return path;
  };
  const std::string sim_config = write("train_sim");
  const std::string coord_config = write("train_coord");
  RunAndCompareWithTheSimulator(
      sim_config, coord_config, dir_ + "/train_sim", dir_ + "/train_coord",
      [](int i) -> std::vector<std::string> {
        return {absl::StrCat("--partition=", i)};
      },
      deadline);
  if (HasFatalFailure()) return;
  const std::vector<std::string> metrics = RunMetrics(dir_ + "/train_coord");
  ASSERT_EQ(metrics.size(), 3u);
  // (RunMetrics leaves out the timings: who scored is in score_from.)
  EXPECT_THAT(metrics[0], ::testing::HasSubstr("\"score_from\":0"));
  for (int r : {1, 2}) {
    EXPECT_THAT(metrics[r],
                ::testing::Not(::testing::HasSubstr("\"score_from\"")))
        << "round " << r + 1 << " ran a scoring pass";
    EXPECT_TRUE(std::regex_search(
        metrics[r], std::regex("\"score_source\":\\[[^\\]]*\"train\"")))
        << metrics[r];
  }
}

// A profile line (key=value, lists comma-separated) as numbers.
std::map<std::string, std::vector<double>> ParseProfile(
    const std::string& line) {
  std::map<std::string, std::vector<double>> out;
  std::istringstream fields(line);
  for (std::string field; fields >> field;) {
    const size_t eq = field.find('=');
    if (field.substr(0, eq) == "groups") continue;
    std::istringstream values(field.substr(eq + 1));
    for (std::string v; std::getline(values, v, ',');) {
      out[field.substr(0, eq)].push_back(std::stod(v));
    }
  }
  return out;
}

// cost(S) = F + sum_{l in S} w_l + sum_{l >= min S} a_l from the profile.
double ProfileCost(const std::map<std::string, std::vector<double>>& p,
                   const std::string& prefix, const std::vector<int>& set,
                   double scale, double extra) {
  if (set.empty()) return 0;
  const std::vector<double>& w =
      p.at(prefix == "step" ? "step_per_group_s" : "per_group_bytes");
  const std::vector<double>& a =
      p.at(prefix == "step" ? "step_depth_s" : "depth_bytes");
  double v = p.at(prefix == "step" ? "step_fixed_s" : "fixed_bytes")[0];
  for (int l : set) v += w[l];
  for (size_t l = set.front(); l < a.size(); ++l) v += a[l];
  return v * scale + extra;
}

// A run with budgets in seconds: client-000 declares --budget_s S (its
// budget) and --budget_mb M (a cap) from its own measured profile, chosen so
// that both bind; the coordinator's metrics show every selection of it
// within S and M by that profile, and what it measured within M.
TEST_F(DistributedTest, ClientBudgetInSecondsAndMegabytesByItsOwnProfile) {
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  const std::string cache = dir_ + "/profiles";
  std::string config = WriteConfig(dir_, "real");
  std::string text = std::regex_replace(
      ReadFile(config),
      std::regex("budget:\n  distribution: uniform\n  min: 1\n  max: 3"),
      "budget:\n  unit: time\n  distribution: uniform\n  min: 0.02\n  max: "
      "0.2\n"
      "profile:\n  cache_dir: " +
          cache);
  std::ofstream(config) << text;
  ASSERT_THAT(ReadFile(config), ::testing::HasSubstr("unit: time"));
  // The machine's profile, as every client on it will use it (cached).
  Process print({kBin + "/layerfl-client", "--config=" + config,
                 "--partition=0", "--print_profile"},
                dir_ + "/print_profile.log");
  ASSERT_EQ(print.Wait(deadline), 0) << print.Log();
  const auto p = ParseProfile(print.Log());
  // 3 local steps and a scoring pass every round (selection_period 1).
  const double scoring = p.at("scoring_s")[0];
  // Time affords block0..head; memory only block1 + head (block0's
  // activations do not fit), so the cap binds where the budget does not.
  const double budget_s = ProfileCost(p, "step", {1, 2, 3}, 3, scoring) * 1.001;
  const double budget_mb =
      ProfileCost(p, "bytes", {2, 3}, 1, 0) / 1048576 * 1.001;
  ASSERT_GT(ProfileCost(p, "bytes", {1, 3}, 1, 0) / 1048576, budget_mb);
  ASSERT_GT(budget_s, 0);

  RunCoordinatorWithClients(
      config, dir_ + "/real",
      [&](int i) -> std::vector<std::string> {
        // With the run's own file: checked against the coordinator's.
        std::vector<std::string> flags = {absl::StrCat("--partition=", i),
                                          "--config=" + config};
        if (i == 0) {
          flags.push_back(absl::StrFormat("--budget_s=%.17g", budget_s));
          flags.push_back(absl::StrFormat("--budget_mb=%.17g", budget_mb));
        }
        return flags;
      },
      deadline);
  if (HasFatalFailure()) return;

  const std::vector<std::string> groups = {"embed", "block0", "block1", "head"};
  std::ifstream in(dir_ + "/real/metrics.jsonl");
  int rounds = 0;
  std::set<std::string> chosen;
  for (std::string line; std::getline(in, line);) {
    ++rounds;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(
        line, m,
        std::regex("\\{\"id\":\"client-000\",\"budget\":([^,]+),\"layers\":\\[("
                   "[^\\]]*)\\][^}]*\"cost\":([^,}]+)")))
        << line;
    EXPECT_NEAR(std::stod(m[1]), budget_s, 1e-9 * budget_s) << "its own budget";
    const double cost = std::stod(m[3]);
    std::vector<int> set;
    const std::string list = m[2];
    for (size_t l = 0; l < groups.size(); ++l) {
      if (list.find("\"" + groups[l] + "\"") != std::string::npos)
        set.push_back(l);
    }
    chosen.insert(list);
    // Its scoring pass is held to M, so it starts at a deeper group and is
    // priced from there (the whole pass when it starts at 0).
    const std::string client = m[0];
    std::smatch from;
    ASSERT_TRUE(std::regex_search(client, from,
                                  std::regex("\"score_from\":([0-9]+)")))
        << client;
    const int score_from = std::stoi(from[1]);
    const double priced_scoring =
        score_from == 0 ? scoring : p.at("scoring_from_s")[score_from];
    // Its cost by its own profile is the logged one, within S; its memory
    // by the profile within M.
    EXPECT_NEAR(cost, ProfileCost(p, "step", set, 3, priced_scoring), 1e-6);
    EXPECT_LE(cost, budget_s) << line;
    EXPECT_LE(ProfileCost(p, "bytes", set, 1, 0) / 1048576, budget_mb) << line;
    // What it measured: the peak within M.
    ASSERT_TRUE(std::regex_search(
        line, m,
        std::regex("\\{\"id\":\"client-000\"[^}]*\"peak_mb\":([^,}]+)")))
        << line;
    EXPECT_LE(std::stod(m[1]), budget_mb) << line;
    // The scoring pass too: it stops where the cap does (block1), so it
    // never back-propagates into block0.
    ASSERT_TRUE(std::regex_search(
        line, m,
        std::regex("\\{\"id\":\"client-000\"[^}]*\"score_peak_mb\":([^,}]+)")))
        << line;
    EXPECT_LE(std::stod(m[1]), budget_mb) << line;
  }
  EXPECT_EQ(rounds, 3);
  // It trained something in some round (the limits were meant to bind, not
  // to starve it).
  // (A round may still give it nothing: the regulariser can prefer that
  // when the others, on tighter budgets, train little.)
  EXPECT_THAT(chosen, ::testing::Contains(::testing::Ne("")));
  for (const std::string& c : chosen)
    std::cout << "client-000 trained [" << c << "]\n";
}

// A client killed in the middle of its first download (the fault ends the
// process, as kill -9 would, once 2 layers are in its download cache) and
// started again on the same cache fetches only the layers it lacks, and the
// run still ends with the simulator's weights: the restarted client takes
// the round's task it was given, so participation does not change.
TEST_F(DistributedTest, ClientKilledMidDownloadResumesFromItsLastLayer) {
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  const std::string sim_config = WriteConfig(dir_, "sim");
  const std::string coord_config = WriteConfig(dir_, "coord");
  Process sim({kBin + "/layerfl-sim", "--config=" + sim_config},
              dir_ + "/sim.sim.log");
  const std::string coord_dir = dir_ + "/coord";
  std::string port;
  std::unique_ptr<Process> started =
      StartCoordinator(coord_config, coord_dir, deadline, &port);
  Process& coordinator = *started;
  ASSERT_FALSE(port.empty()) << coordinator.Log();
  const auto client = [&](int i, const std::string& log,
                          std::vector<std::string> extra) {
    std::vector<std::string> argv = {
        kBin + "/layerfl-client", "--coordinator=127.0.0.1:" + port,
        "--poll_ms=2000", "--threads=1", absl::StrCat("--partition=", i)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv, log);
  };
  const std::string cache = "--download_cache_dir=" + dir_ + "/cache0";
  std::vector<std::unique_ptr<Process>> clients;
  clients.push_back(client(0, coord_dir + ".client0.killed.log",
                           {cache, "--fault_exit_after_download_layers=2"}));
  for (int i = 1; i < 4; ++i) {
    clients.push_back(
        client(i, absl::StrCat(coord_dir, ".client", i, ".log"), {}));
  }
  EXPECT_EQ(clients[0]->Wait(deadline), 3) << clients[0]->Log();
  int cached = 0;
  for (const auto& e : fs::directory_iterator(dir_ + "/cache0")) {
    cached += e.path().extension() == ".layer";
  }
  EXPECT_EQ(cached, 2);
  clients[0] = client(0, coord_dir + ".client0.log", {cache});
  for (auto& c : clients) EXPECT_EQ(c->Wait(deadline), 0) << c->Log();
  ASSERT_EQ(coordinator.Wait(deadline), 0) << coordinator.Log();
  ASSERT_EQ(sim.Wait(deadline), 0) << sim.Log();

  // The model has 4 layers (embeddings, 2 blocks, head): the restarted
  // client fetched the 2 it lacked.
  EXPECT_THAT(clients[0]->Log(),
              ::testing::HasSubstr("the layer cache holds 2 layers of run"));
  EXPECT_THAT(clients[0]->Log(),
              ::testing::HasSubstr(
                  "download resumed: 2 layers were already held, 2 fetched"));
  const Checkpoint a = LatestCheckpoint(coord_dir);
  const Checkpoint b = LatestCheckpoint(dir_ + "/sim");
  EXPECT_EQ(a.round, 3);
  ExpectBitIdentical(a.weights, b.weights);
  EXPECT_EQ(RunMetrics(coord_dir), RunMetrics(dir_ + "/sim"));
}

TEST_F(DistributedTest, ExitCodes) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  // Bad flags or config: 2.
  Process no_config(
      {kBin + "/layerfl-coordinator", "--config=" + dir_ + "/none.yaml"},
      dir_ + "/a.log");
  EXPECT_EQ(no_config.Wait(deadline), 2);
  Process bad_encoding(
      {kBin + "/layerfl-coordinator",
       "--config=" + WriteConfig(dir_, "x", "transport:\n  encoding: fp8\n")},
      dir_ + "/b.log");
  EXPECT_EQ(bad_encoding.Wait(deadline), 2);
  EXPECT_THAT(bad_encoding.Log(),
              ::testing::HasSubstr(
                  "transport.encoding: must be one of float32, float16, "
                  "bfloat16, got 'fp8'"));
  Process no_partition(
      {kBin + "/layerfl-client", "--config=" + WriteConfig(dir_, "y")},
      dir_ + "/c.log");
  EXPECT_EQ(no_partition.Wait(deadline), 2);
  EXPECT_THAT(no_partition.Log(),
              ::testing::HasSubstr("--partition or --data_dir"));
  Process both({kBin + "/layerfl-client", "--config=" + WriteConfig(dir_, "y2"),
                "--partition=0", "--data_dir=" + dir_},
               dir_ + "/c2.log");
  EXPECT_EQ(both.Wait(deadline), 2);
  EXPECT_THAT(both.Log(), ::testing::HasSubstr("not both"));
  // A worker's ranges: refused before connecting, naming the range.
  for (const auto& [flags, why] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--partitions=5..2"}, "partitions: '5..2' is not a range"},
           {{"--partitions=0..9", "--partition=0"}, "--partitions or --ids"},
           {{"--ids=client-000..node-009", "--data_root=" + dir_},
            "ids: 'client-000..node-009' is not a range"},
           {{"--ids=client-000..client-09", "--data_root=" + dir_},
            "is not a range"},
           {{"--ids=client-000..client-009"}, "--ids needs --data_root"},
           {{"--partition=0", "--data_root=" + dir_},
            "--data_root goes with --ids"}}) {
    std::vector<std::string> argv = {kBin + "/layerfl-client"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    Process worker(argv, dir_ + "/worker_flags.log");
    EXPECT_EQ(worker.Wait(deadline), 2) << flags[0];
    EXPECT_THAT(worker.Log(), ::testing::HasSubstr(why)) << flags[0];
  }
  // Budget flags that contradict each other or the run: 2, naming them.
  const std::string time_config = WriteConfig(dir_, "y5");
  const std::string time_text =
      std::regex_replace(ReadFile(time_config), std::regex("budget:\n"),
                         "budget:\n  unit: time\n");
  std::ofstream(time_config) << time_text;
  Process two_budgets(
      {kBin + "/layerfl-client", "--config=" + time_config, "--partition=0",
       "--budget=2", "--budget_s=1", "--config_mode=local"},
      dir_ + "/c4.log");
  EXPECT_EQ(two_budgets.Wait(deadline), 2) << two_budgets.Log();
  EXPECT_THAT(two_budgets.Log(),
              ::testing::HasSubstr("--budget and --budget_s: both declare this "
                                   "run's budget (budget.unit time)"));
  Process negative({kBin + "/layerfl-client", "--config=" + time_config,
                    "--partition=0", "--budget_mb=-1", "--config_mode=local"},
                   dir_ + "/c5.log");
  EXPECT_EQ(negative.Wait(deadline), 2) << negative.Log();
  EXPECT_THAT(
      negative.Log(),
      ::testing::HasSubstr("--budget_mb: must be finite and >= 0, got -1"));
  // A data directory without the training files: 2, naming the missing file.
  Process empty_dir(
      {kBin + "/layerfl-client", "--config=" + WriteConfig(dir_, "y3"),
       "--id=client-009", "--data_dir=" + dir_ + "/nothing-here",
       "--config_mode=local", "--coordinator=127.0.0.1:1", "--give_up_s=1"},
      dir_ + "/c3.log");
  EXPECT_EQ(empty_dir.Wait(deadline), 2) << empty_dir.Log();
  EXPECT_THAT(empty_dir.Log(),
              ::testing::HasSubstr("data_dir: IDX file not found: " + dir_ +
                                   "/nothing-here/train-images-idx3-ubyte"));

  // layerfl-partition: a partition the config does not have.
  Process no_such_client(
      {kBin + "/layerfl-partition", "--config=" + WriteConfig(dir_, "y4"),
       "--out=" + dir_ + "/shares", "--clients=4"},
      dir_ + "/c4.log");
  EXPECT_EQ(no_such_client.Wait(deadline), 2);
  EXPECT_THAT(no_such_client.Log(), ::testing::HasSubstr("--clients: '4'"));

  // No coordinator: the client backs off, then gives up with 1.
  Process lonely(
      {kBin + "/layerfl-client", "--config=" + WriteConfig(dir_, "z"),
       "--partition=0", "--coordinator=127.0.0.1:1", "--give_up_s=1",
       "--backoff_max_ms=300"},
      dir_ + "/d.log");
  EXPECT_EQ(lonely.Wait(deadline), 1) << lonely.Log();
  EXPECT_THAT(lonely.Log(), ::testing::HasSubstr("unreachable"));

  // SIGTERM: the coordinator stops cleanly with 0.
  const std::string port_file = dir_ + "/port2";
  Process coordinator(
      {kBin + "/layerfl-coordinator", "--config=" + WriteConfig(dir_, "w"),
       "--listen=127.0.0.1:0", "--port_file=" + port_file},
      dir_ + "/e.log");
  while (!fs::exists(port_file) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  coordinator.Signal(SIGTERM);
  EXPECT_EQ(coordinator.Wait(deadline), 0) << coordinator.Log();
  EXPECT_THAT(coordinator.Log(), ::testing::HasSubstr("SIGTERM"));
}

}  // namespace
}  // namespace layerfl
