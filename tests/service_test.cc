// The coordinator's gRPC service and the client daemon, in one process: a
// real server on localhost:0, client daemons as threads over real gRPC
// channels, a real round engine over a small torch-free model, and fake
// local work. Covers rounds end to end (bit-identical to an in-process
// sequential drive), layer-versioned downloads, upload overhead, stragglers
// dropped at the deadline. Bad input over the wire: wire_refusal_test.cc;
// a restarted coordinator: fault_test.cc.
#include "server/service/service.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/daemon/client_metrics.h"
#include "client/daemon/daemon.h"
#include "client/daemon/grpc_link.h"
#include "grpcpp/grpcpp.h"
#include "proto/layerfl.grpc.pb.h"
#include "proto/wire_convert.h"
#include "server/checkpoint/checkpoint_store.h"
#include "server/round/round_engine.h"
#include "common/util/secret.h"
#include "server/service/held_spill.h"
#include "server/service/sessions.h"
#include "tests/service_fixture.h"

namespace layerfl {
namespace {

namespace wire = ::layerfl::wire::v1;
// The small model, fakes, in-process coordinator and daemon threads.
using namespace ::layerfl::fixture;  // NOLINT(build/namespaces)
using ::testing::HasSubstr;
using ::testing::StartsWith;

int64_t NumelOf(const ModelWeights& m, const std::vector<std::string>& layers) {
  int64_t n = 0;
  for (const std::string& l : layers) n += m.layers[m.Find(l)].numel();
  return n;
}

TEST(ServiceTest, RoundsCompleteBitIdenticalToSequentialDrive) {
  constexpr int kRounds = 4, kClients = 3;
  Coordinator coordinator(EngineOptions(kRounds, absl::Seconds(30)),
                          FastOptions(kClients));
  std::vector<std::unique_ptr<DaemonThread>> daemons;
  for (int i = 0; i < kClients; ++i) {
    // Reverse speed: updates arrive highest id first, so the order in which
    // they are added only matches the simulator's if the service orders them.
    daemons.push_back(std::make_unique<DaemonThread>(
        coordinator.target(),
        std::make_unique<FakeWork>(Id(i), Samples(i),
                                   absl::Milliseconds(60 * (kClients - i))),
        Id(i)));
  }
  std::vector<DaemonResult> results;
  for (auto& d : daemons) {
    const absl::StatusOr<DaemonResult>& r = d->Join();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->last_round, kRounds);
    EXPECT_EQ(r->joins, 1);
    results.push_back(*r);
  }
  ASSERT_TRUE(coordinator.server().Wait().ok());
  EXPECT_EQ(coordinator.engine().committed_round(), kRounds);
  ExpectBitIdentical(coordinator.engine().global(),
                     SequentialDrive(kRounds, kClients));

  // Layer-versioned sync: the first download carries every layer; in round
  // t > 1 a client downloads exactly the layers round t-1 changed.
  const std::vector<RoundRecord> records = coordinator.records();
  ASSERT_EQ(records.size(), static_cast<size_t>(kRounds));
  const ModelWeights model = SmallModel();
  for (const DaemonResult& r : results) {
    int64_t round_seen = 0;
    for (const TaskRecord& t : r.tasks) {
      EXPECT_EQ(t.outcome, "ok");
      if (t.round == round_seen) {
        EXPECT_TRUE(t.download.layers.empty());  // the train task: up to date
        continue;
      }
      round_seen = t.round;
      const std::vector<std::string> want =
          t.round == 1 ? std::vector<std::string>{"embed", "block0", "block1", "head"}
                       : records[t.round - 2].changed_layers;
      EXPECT_EQ(t.download.layers, want) << "round " << t.round;
      EXPECT_EQ(t.download.payload_bytes, NumelOf(model, want) * 4);
      EXPECT_LE(t.download.wire_bytes, t.download.payload_bytes * 1.01 + 200);
    }
  }
  for (size_t t = 1; t < records.size(); ++t) {
    // A round's bytes_down: every client's download of the changed layers.
    EXPECT_LT(records[t].bytes_down, records[0].bytes_down) << t;
  }

  // Sparse uploads: only the selected layers travel, with little overhead.
  const ServiceStats stats = coordinator.server().stats();
  ASSERT_EQ(stats.uploads.size(), static_cast<size_t>(kRounds * kClients));
  double worst = 0;
  for (const TransferRecord& u : stats.uploads) {
    EXPECT_EQ(u.outcome, "ok");
    EXPECT_EQ(u.layers, (std::vector<std::string>{
                            absl::StrCat("block", u.round % 2), "head"}));
    EXPECT_EQ(u.numel, NumelOf(model, u.layers));
    worst = std::max(worst, static_cast<double>(u.wire_bytes) / (u.numel * 4.0));
  }
  std::cout << "upload wire bytes / (selected params x 4 bytes), worst: " << worst
            << "\n";
  EXPECT_LE(worst, 1.02);
  // Each round's record carries the wire bytes of exactly its uploads.
  for (const RoundRecord& r : records) {
    int64_t wire = 0;
    for (const TransferRecord& u : stats.uploads) {
      if (u.round == r.round) wire += u.wire_bytes;
    }
    EXPECT_EQ(r.wire_bytes_up, wire) << "round " << r.round;
    EXPECT_THAT(r.ToJson(), HasSubstr(absl::StrCat("\"wire_bytes_up\":", wire)));
  }
}

// A run of `rounds` with `clients` daemons whose work takes `step` x (clients
// - i) for client i, so that updates arrive highest id first; the weights
// must be the sequential drive's bit for bit. The service's stats after it.
ServiceStats RunHighestIdFirst(const ServiceOptions& options, int rounds,
                               int clients, absl::Duration step) {
  Coordinator coordinator(EngineOptions(rounds, absl::Seconds(30)), options);
  std::vector<std::unique_ptr<DaemonThread>> daemons;
  for (int i = 0; i < clients; ++i) {
    daemons.push_back(std::make_unique<DaemonThread>(
        coordinator.target(),
        std::make_unique<FakeWork>(Id(i), Samples(i), step * (clients - i)),
        Id(i)));
  }
  for (auto& d : daemons) EXPECT_TRUE(d->Join().ok());
  EXPECT_TRUE(coordinator.server().Wait().ok());
  ExpectBitIdentical(coordinator.engine().global(),
                     SequentialDrive(rounds, clients));
  return coordinator.server().stats();
}

TEST(ServiceTest, UpdatesBeyondTheHeldLimitWaitOnDiskAndTheRunIsUnchanged) {
  constexpr int kRounds = 3, kClients = 3;
  const std::string spill_dir = ::testing::TempDir() + "/spill_" + std::to_string(getpid());
  std::filesystem::remove_all(spill_dir);
  ServiceOptions options = FastOptions(kClients);
  // Room for one waiting update (block + head: 34314 values) in memory.
  const int64_t one_update = (128 * 256 + 256 + 10 * 128 + 10) * 4;
  options.max_held_bytes = one_update;
  options.spill_dir = spill_dir;
  // Highest id first: client-002 waits in memory, client-001 on disk,
  // client-000's is applied at once, then the two waiting ones.
  const ServiceStats stats = RunHighestIdFirst(options, kRounds, kClients,
                                               absl::Milliseconds(80));
  std::cout << "spilled " << stats.spilled << " updates; peak held in memory "
            << stats.peak_held_bytes << " bytes (limit " << one_update << ")\n";
  // At most one update a round waits on disk (arrival order may vary
  // under load); an update whose turn it is never goes there.
  EXPECT_GE(stats.spilled, 1);
  EXPECT_LE(stats.spilled, kRounds);
  EXPECT_LE(stats.peak_held_bytes, one_update);
  EXPECT_TRUE(std::filesystem::is_empty(spill_dir));
  std::filesystem::remove_all(spill_dir);
}

// receive_to_disk: every upload goes to spill_dir as it arrives and is
// folded from there; the weights are the sequential drive's bit for bit, no
// update waits in memory, and no file is left.
TEST(ServiceTest, UploadsReceivedToDiskFoldToTheSameWeights) {
  constexpr int kRounds = 3, kClients = 3;
  const std::string spill_dir =
      ::testing::TempDir() + "/recv_" + std::to_string(getpid());
  std::filesystem::remove_all(spill_dir);
  ServiceOptions options = FastOptions(kClients);
  options.spill_dir = spill_dir;
  options.receive_to_disk = true;
  options.max_uploads_in_flight = 1;
  const ServiceStats stats = RunHighestIdFirst(options, kRounds, kClients,
                                               absl::Milliseconds(60));
  EXPECT_EQ(stats.peak_held_bytes, 0);  // what waited, waited on disk
  EXPECT_EQ(stats.spilled, 0);          // and was never spilled: it was there
  EXPECT_TRUE(std::filesystem::is_empty(spill_dir));
  std::filesystem::remove_all(spill_dir);

  ServiceOptions no_dir = FastOptions(kClients);
  no_dir.receive_to_disk = true;
  EXPECT_THAT(std::string(no_dir.Validate().message()),
              HasSubstr("receive_to_disk: needs a spill_dir"));
}

// The values of `update` (whose tensors have their shapes) read back from
// `path` as the engine reads them, then the file removed, as the service does.
absl::Status ReadBack(std::vector<LayerDelta>& update,
                      const std::string& path) {
  absl::StatusOr<std::unique_ptr<DeltaSource>> values =
      OpenSpilledValues(path, update);
  absl::Status s = values.status();
  if (s.ok()) s = ReadDeltaValues(**values, update);
  std::filesystem::remove(path);
  return s;
}

TEST(HeldSpillTest, ValuesRoundTripBitForBitAndDamageIsNamed) {
  const std::string path = ::testing::TempDir() + "/held-test.bin";
  const ModelWeights m = SmallModel();
  std::vector<LayerDelta> update;
  for (const char* name : {"block1", "head"}) {
    update.push_back({name, m.layers[m.Find(name)].tensors});
  }
  update[1].tensors[0].values[5] = -0.0f;
  const std::vector<LayerDelta> original = update;
  EXPECT_EQ(UpdateValueBytes(update), (128 * 256 + 256 + 10 * 128 + 10) * 4);
  ASSERT_TRUE(SpillValues(update, path).ok());
  EXPECT_EQ(UpdateValueBytes(update), 0);  // out of memory
  EXPECT_EQ(update[0].tensors[0].shape, original[0].tensors[0].shape);
  ASSERT_TRUE(ReadBack(update, path).ok());
  EXPECT_FALSE(std::filesystem::exists(path));
  for (size_t l = 0; l < update.size(); ++l) {
    for (size_t t = 0; t < update[l].tensors.size(); ++t) {
      const auto& a = update[l].tensors[t].values;
      const auto& b = original[l].tensors[t].values;
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
    }
  }
  // A flipped bit on disk, a cut file, a missing file: each named.
  ASSERT_TRUE(SpillValues(update, path).ok());
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.put('\x5a');
  }
  absl::Status s = ReadBack(update, path);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(path));
  EXPECT_THAT(s.message(), HasSubstr("CRC-32"));
  update = original;
  ASSERT_TRUE(SpillValues(update, path).ok());
  std::filesystem::resize_file(path, 4000);
  s = ReadBack(update, path);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("has 4000 bytes, expected"));
  s = ReadBack(update, path);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
}

TEST(ServiceTest, Float16HalvesTheBytes) {
  constexpr int kRounds = 2, kClients = 2;
  ServiceOptions options = FastOptions(kClients);
  options.encoding = Encoding::kFloat16;
  Coordinator coordinator(EngineOptions(kRounds, absl::Seconds(30)), options);
  std::vector<std::unique_ptr<DaemonThread>> daemons;
  for (int i = 0; i < kClients; ++i) {
    daemons.push_back(std::make_unique<DaemonThread>(
        coordinator.target(),
        std::make_unique<FakeWork>(Id(i), Samples(i), absl::ZeroDuration()), Id(i)));
  }
  for (auto& d : daemons) {
    const absl::StatusOr<DaemonResult>& r = d->Join();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->tasks.front().download.payload_bytes, SmallModel().numel() * 2);
  }
  ASSERT_TRUE(coordinator.server().Wait().ok());
  double worst = 0;
  for (const TransferRecord& u : coordinator.server().stats().uploads) {
    EXPECT_EQ(u.payload_bytes, u.numel * 2);
    worst = std::max(worst, static_cast<double>(u.wire_bytes) / (u.numel * 2.0));
  }
  std::cout << "float16 upload wire bytes / (selected params x 2 bytes), worst: "
            << worst << "\n";
  EXPECT_LE(worst, 1.02);
  // metrics: about half the float32 payload went over the wire.
  for (const RoundRecord& r : coordinator.records()) {
    EXPECT_GT(r.wire_bytes_up, r.bytes_up / 2) << r.round;
    EXPECT_LE(r.wire_bytes_up, r.bytes_up / 2 * 1.02) << r.round;
  }
}

TEST(ServiceTest, SilentClientDroppedAtDeadlineRoundCompletesAtQuorum) {
  constexpr int kClients = 3;
  Coordinator coordinator(EngineOptions(2, absl::Seconds(2)), FastOptions(kClients));
  std::vector<std::unique_ptr<DaemonThread>> daemons;
  for (int i = 0; i < kClients; ++i) {
    auto work = std::make_unique<FakeWork>(Id(i), Samples(i), absl::ZeroDuration());
    if (i == 1) work->HangIn(1, absl::Seconds(3));  // stops answering in round 1
    daemons.push_back(
        std::make_unique<DaemonThread>(coordinator.target(), std::move(work), Id(i)));
  }
  const absl::Time t0 = absl::Now();
  for (auto& d : daemons) {
    const absl::StatusOr<DaemonResult>& r = d->Join();
    ASSERT_TRUE(r.ok()) << r.status();
  }
  ASSERT_TRUE(coordinator.server().Wait().ok());
  const std::vector<RoundRecord> records = coordinator.records();
  ASSERT_EQ(records.size(), 2u);
  // Round 1 committed at the deadline with the two clients that answered.
  ASSERT_EQ(records[0].clients.size(), 3u);
  EXPECT_TRUE(records[0].clients[0].contributed);
  EXPECT_FALSE(records[0].clients[1].contributed);
  EXPECT_TRUE(records[0].clients[2].contributed);
  EXPECT_GE(records[0].phase_ms.at("train"), 1900);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(15));
  // Its late update was refused as stale and the daemon went on.
  const ServiceStats stats = coordinator.server().stats();
  EXPECT_GE(stats.refused.at("stale_round"), 1);
  bool late_refused = false;
  for (const TransferRecord& u : stats.uploads) {
    if (u.client == Id(1) && u.round == 1) late_refused = u.outcome == "stale_round";
  }
  EXPECT_TRUE(late_refused);
}

// A bare Join of `id` (10 samples), as a client would send it.
grpc::Status JoinAs(wire::Coordinator::Stub& stub, const std::string& id,
                    wire::JoinReply* joined) {
  wire::JoinRequest join;
  join.set_client_id(id);
  join.set_num_samples(10);
  grpc::ClientContext context;
  return stub.Join(&context, join, joined);
}

TEST(ServiceTest, ClientThatStopsHeartbeatingLeavesAndMustRejoin) {
  ServiceOptions options = FastOptions(5);
  options.client_timeout = absl::Milliseconds(300);
  Coordinator coordinator(EngineOptions(1, absl::Seconds(30)), options);
  auto stub = wire::Coordinator::NewStub(
      grpc::CreateChannel(coordinator.target(), grpc::InsecureChannelCredentials()));
  wire::JoinReply joined;
  ASSERT_TRUE(JoinAs(*stub, "client-000", &joined).ok());
  wire::HeartbeatRequest hb;
  hb.set_client_id("client-000");
  hb.set_session(joined.session());
  wire::HeartbeatReply reply;
  for (int i = 0; i < 5; ++i) {  // heartbeats keep the session alive
    absl::SleepFor(absl::Milliseconds(150));
    grpc::ClientContext context;
    ASSERT_TRUE(stub->Heartbeat(&context, hb, &reply).ok()) << i;
  }
  absl::SleepFor(absl::Milliseconds(700));  // silence: timed out
  grpc::ClientContext context;
  const grpc::Status s = stub->Heartbeat(&context, hb, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), StartsWith("unknown_session: "));
}

// Daemons do not heartbeat while a poll is in flight, so a held poll must
// end before the client would time out: it is held at most half of
// client_timeout (here 200 ms, though max_poll is 10 s and the client asked
// for 10 s), and a client that only polls stays in the run.
TEST(ServiceTest, PollsAreHeldAtMostHalfTheClientTimeoutAndKeepTheSessionAlive) {
  ServiceOptions options = FastOptions(5);  // no round: every poll waits
  options.client_timeout = absl::Milliseconds(400);
  options.max_poll = absl::Seconds(10);
  Coordinator coordinator(EngineOptions(1, absl::Seconds(30)), options);
  auto stub = wire::Coordinator::NewStub(
      grpc::CreateChannel(coordinator.target(), grpc::InsecureChannelCredentials()));
  wire::JoinReply joined;
  ASSERT_TRUE(JoinAs(*stub, "client-000", &joined).ok());
  wire::GetTaskRequest poll;
  poll.set_client_id("client-000");
  poll.set_session(joined.session());
  poll.set_wait_ms(10000);
  const absl::Time start = absl::Now();
  for (int i = 0; i < 6; ++i) {  // 6 x 200 ms: three client timeouts
    const absl::Time t0 = absl::Now();
    grpc::ClientContext context;
    wire::TaskReply reply;
    ASSERT_TRUE(stub->GetTask(&context, poll, &reply).ok()) << i;
    EXPECT_EQ(reply.kind(), wire::TaskReply::WAIT) << i;
    EXPECT_GE(absl::Now() - t0, absl::Milliseconds(150)) << i;
    EXPECT_LT(absl::Now() - t0, absl::Milliseconds(390)) << i;
  }
  EXPECT_GT(absl::Now() - start, absl::Milliseconds(1000));
}

// stats().polls_waiting: the long polls held now (an operator's view of what
// idle clients cost), back to 0 once they are answered.
TEST(ServiceTest, CountsTheLongPollsItHolds) {
  ServiceOptions options = FastOptions(5);  // no round: every poll waits
  Coordinator coordinator(EngineOptions(1, absl::Seconds(30)), options);
  auto stub = wire::Coordinator::NewStub(
      grpc::CreateChannel(coordinator.target(), grpc::InsecureChannelCredentials()));
  std::vector<std::thread> polls;
  for (int i = 0; i < 3; ++i) {
    wire::JoinReply joined;
    ASSERT_TRUE(JoinAs(*stub, Id(i), &joined).ok());
    polls.emplace_back([&stub, i, session = joined.session()] {
      wire::GetTaskRequest poll;
      poll.set_client_id(Id(i));
      poll.set_session(session);
      poll.set_wait_ms(800);
      grpc::ClientContext context;
      wire::TaskReply reply;
      EXPECT_TRUE(stub->GetTask(&context, poll, &reply).ok());
    });
  }
  int64_t most = 0;
  for (int i = 0; i < 100 && most < 3; ++i) {  // bounded: 0.5 s
    most = std::max(most, coordinator.server().stats().polls_waiting);
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(most, 3);
  for (std::thread& t : polls) t.join();
  EXPECT_EQ(coordinator.server().stats().polls_waiting, 0);
}

// GetRunConfig: the run's YAML to a client with the run's token (before any
// Join), bad_token to one without, and FAILED_PRECONDITION from a
// coordinator that does not serve its config; the refusals are counted.
TEST(ServiceTest, GetRunConfigServesTheRunsYamlOnlyWithTheToken) {
  ServiceOptions options = FastOptions(5);
  options.token = "s3cret";
  options.run_config_yaml = "seed: 7\ntrain:\n  lr: 0.25\n";
  Coordinator coordinator(EngineOptions(1, absl::Seconds(30)), options);
  auto stub = wire::Coordinator::NewStub(
      grpc::CreateChannel(coordinator.target(), grpc::InsecureChannelCredentials()));
  wire::RunConfigRequest request;
  request.set_client_id("client-000");
  request.set_token("s3cret");
  wire::RunConfigReply reply;
  {
    grpc::ClientContext context;
    const grpc::Status s = stub->GetRunConfig(&context, request, &reply);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(reply.config_yaml(), options.run_config_yaml);
  EXPECT_EQ(reply.run_id(), "test-run");
  request.set_token("guess");
  {
    grpc::ClientContext context;
    const grpc::Status s = stub->GetRunConfig(&context, request, &reply);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(s.error_message(), StartsWith("bad_token: "));
  }
  EXPECT_EQ(coordinator.server().stats().refused.at("bad_token"), 1);

  ServiceOptions silent = FastOptions(5);
  Coordinator other(EngineOptions(1, absl::Seconds(30)), silent);
  auto other_stub = wire::Coordinator::NewStub(
      grpc::CreateChannel(other.target(), grpc::InsecureChannelCredentials()));
  request.set_token("");
  grpc::ClientContext context;
  const grpc::Status s = other_stub->GetRunConfig(&context, request, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("does not serve its run config"));
}

// The daemon's metrics from hand-made task records: counts, bytes and the
// last round exactly as fed.
TEST(ClientMetricsTest, CountsWhatTheDaemonReports) {
  ClientMetrics metrics("client-007");
  metrics.OnJoin(1);
  metrics.OnJoin(2);  // a rejoin
  TaskRecord score;
  score.kind = ClientTaskKind::kScore;
  score.round = 3;
  score.download.wire_bytes = 1000;
  score.download.payload_bytes = 900;
  score.outcome = "ok";
  metrics.OnTask(score, {0.2, 0});
  TaskRecord train = score;
  train.kind = ClientTaskKind::kTrain;
  train.round = 4;
  train.download = {};
  train.upload.wire_bytes = 540;
  train.upload.payload_bytes = 512;
  metrics.OnTask(train, {1.5, 4096});
  train.outcome = "stale_round";
  metrics.OnTask(train, {0.5, 2048});
  const std::string text = metrics.MetricsText();
  const std::string c = "client=\"client-007\"";
  for (const std::string& line : {
           "layerfl_client_joins_total{" + c + "} 2",
           "layerfl_client_reconnects_total{" + c + "} 1",
           "layerfl_client_tasks_total{" + c + ",kind=\"score\",outcome=\"ok\"} 1",
           "layerfl_client_tasks_total{" + c + ",kind=\"train\",outcome=\"ok\"} 1",
           "layerfl_client_tasks_total{" + c +
               ",kind=\"train\",outcome=\"stale_round\"} 1",
           "layerfl_client_bytes_down_total{" + c + ",kind=\"wire\"} 1000",
           "layerfl_client_bytes_down_total{" + c + ",kind=\"payload\"} 900",
           "layerfl_client_bytes_up_total{" + c + ",kind=\"wire\"} 1080",
           "layerfl_client_bytes_up_total{" + c + ",kind=\"payload\"} 1024",
           "layerfl_client_last_round{" + c + "} 4",
           "layerfl_client_peak_train_bytes{" + c + "} 2048",
           "layerfl_client_work_seconds_count{" + c + ",kind=\"train\"} 2",
           "layerfl_client_work_seconds_sum{" + c + ",kind=\"train\"} 2",
           "layerfl_client_work_seconds_sum{" + c + ",kind=\"score\"} 0.2"}) {
    EXPECT_THAT(text, HasSubstr(line + "\n")) << text;
  }
}

TEST(SecretTest, ComparesAndMakesRandomTokens) {
  EXPECT_TRUE(SecretsEqual("s3cret", "s3cret"));
  EXPECT_FALSE(SecretsEqual("s3cret", "s3creT"));
  EXPECT_FALSE(SecretsEqual("s3cret", "s3cret "));  // a longer guess
  EXPECT_FALSE(SecretsEqual("", "s3cret"));
  EXPECT_TRUE(SecretsEqual("", ""));
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string t = RandomHexToken(16);
    ASSERT_EQ(t.size(), 32u);
    EXPECT_EQ(t.find_first_not_of("0123456789abcdef"), std::string::npos);
    seen.insert(t);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(SessionTableTest, OpenTouchExpireAndFinish) {
  SessionTable table;
  const absl::Time t0 = absl::UnixEpoch() + absl::Hours(1);
  const std::string a = table.Open("a", 2.0, t0);
  const std::string b = table.Open("b", 3.0, t0);
  EXPECT_NE(a, b);
  EXPECT_EQ(table.size(), 2);
  EXPECT_FALSE(table.Touch("a", b, t0 + absl::Seconds(5)));  // b's session
  EXPECT_FALSE(table.Touch("c", a, t0 + absl::Seconds(5)));  // no such id
  EXPECT_TRUE(table.Touch("a", a, t0 + absl::Seconds(8)));
  const std::vector<SessionTable::Entry> entries =
      table.Entries(t0 + absl::Seconds(10));
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].id, "a");
  EXPECT_EQ(entries[0].budget, 2.0);
  EXPECT_EQ(entries[0].since_contact, absl::Seconds(2));
  EXPECT_EQ(entries[1].since_contact, absl::Seconds(10));
  // b was last heard 10 s ago: gone after a 9 s timeout, a stays.
  EXPECT_THAT(table.Expire(t0 + absl::Seconds(10), absl::Seconds(9)),
              ::testing::ElementsAre("b"));
  EXPECT_FALSE(table.Touch("b", b, t0 + absl::Seconds(10)));
  // A rejoin replaces the session: the old one no longer works.
  const std::string a2 = table.Open("a", 2.0, t0 + absl::Seconds(11));
  EXPECT_FALSE(table.Touch("a", a, t0 + absl::Seconds(12)));
  EXPECT_TRUE(table.Touch("a", a2, t0 + absl::Seconds(12)));
  EXPECT_FALSE(table.AllToldFinished());
  table.MarkToldFinished("a");
  table.MarkToldFinished("zz");  // no session: nothing
  EXPECT_TRUE(table.AllToldFinished());
  table.Close("a");
  EXPECT_EQ(table.size(), 0);
}

}  // namespace
}  // namespace layerfl
