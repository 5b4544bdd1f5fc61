// Fault scenarios (issue 7), each in bounded time, against an in-process
// coordinator (a real gRPC server on 127.0.0.1:0) with client daemons on
// threads and, where a client must misbehave, a raw protocol client:
//  - a client killed mid-upload (its stream cancelled without WritesDone)
//    contributes nothing: the round commits at quorum and the weights equal a
//    run where that client never uploaded;
//  - a straggler past the deadline: the round commits at quorum, its late
//    upload is refused with "stale_round", and the final weights equal a run
//    in which it never sent that update (so it was mixed into no later round);
//  - the coordinator killed after a commit and restarted on the same
//    checkpoints: clients rejoin and the final weights equal an uninterrupted
//    run;
//  - an upload that stalls while it holds the only place of
//    --max_uploads_in_flight 1 is cut at its stream deadline and the others
//    get in;
//  - a client that lies about its device (CPU quota, peak, memory limit) in
//    its upload: the usage is dropped, the update kept.
// References are in-process engine drives on a fake clock, clients in id
// order (what the service's ordered aggregation reproduces).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <limits>

#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "proto/layerfl.grpc.pb.h"
#include "proto/wire_convert.h"
#include "tests/service_fixture.h"

namespace layerfl {
namespace {

namespace wire = ::layerfl::wire::v1;
using namespace ::layerfl::fixture;  // NOLINT
using ::testing::StartsWith;

constexpr absl::Duration kDeadline = absl::Milliseconds(1500);

// A client speaking the protocol by hand, so that it can misbehave.
class RawClient {
 public:
  RawClient(const std::string& target, int index)
      : index_(index),
        work_(Id(index), Samples(index), absl::ZeroDuration()),
        stub_(wire::Coordinator::NewStub(
            grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))) {}

  bool Join() {
    wire::JoinRequest join;
    join.set_client_id(Id(index_));
    join.set_num_samples(Samples(index_));
    wire::JoinReply reply;
    grpc::ClientContext c;
    Deadline(&c);
    const grpc::Status s = stub_->Join(&c, join, &reply);
    session_ = reply.session();
    return s.ok();
  }

  wire::TaskReply GetTask() {
    wire::GetTaskRequest r;
    r.set_client_id(Id(index_));
    r.set_session(session_);
    r.set_wait_ms(300);
    wire::TaskReply reply;
    grpc::ClientContext c;
    Deadline(&c);
    const grpc::Status s = stub_->GetTask(&c, r, &reply);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return reply;
  }

  grpc::Status Scores(int64_t round) {
    wire::ScoresRequest r;
    r.set_client_id(Id(index_));
    r.set_session(session_);
    r.set_round(round);
    for (int l = 0; l < 4; ++l) r.add_scores(1.0 + l);
    wire::ScoresReply reply;
    grpc::ClientContext c;
    Deadline(&c);
    return stub_->ReportScores(&c, r, &reply);
  }

  // The update FakeWork computes from `global` (what a daemon would upload).
  std::vector<ChunkFrame> Update(const ModelWeights& global, int64_t round,
                                 const std::vector<std::string>& layers) {
    deltas_ = *work_.Train(global, round, layers, {});
    std::vector<LayerSource> sources;
    for (const LayerDelta& d : deltas_) sources.push_back(SourceOf(d));
    return EncodeLayers(sources, Encoding::kFloat32, 8 << 10, false);
  }

  // Uploads `frames`; with `cancel_after` >= 0, writes that many chunks, then
  // cancels the call without WritesDone (the client process dies), or with
  // `stall` keeps the call open, sending nothing more, until the server ends
  // it.
  grpc::Status Upload(int64_t round, const std::vector<std::string>& layers,
                      std::vector<ChunkFrame> frames, int cancel_after = -1,
                      bool stall = false) {
    grpc::ClientContext c;
    Deadline(&c);
    wire::UploadReply reply;
    auto writer = stub_->UploadUpdate(&c, &reply);
    wire::UploadMessage m;
    m.mutable_manifest()->set_client_id(Id(index_));
    m.mutable_manifest()->set_session(session_);
    m.mutable_manifest()->set_round(round);
    m.mutable_manifest()->set_num_samples(Samples(index_));
    for (const std::string& l : layers) m.mutable_manifest()->add_layers(l);
    if (manifest_tweak) manifest_tweak(m.mutable_manifest());
    bool open = writer->Write(m);
    int written = 0;
    for (ChunkFrame& f : frames) {
      if (!open || written == cancel_after) break;
      ToProto(std::move(f), m.mutable_chunk());
      open = writer->Write(m);
      ++written;
    }
    if (stall) {
      return writer->Finish();  // returns once the server ends the call
    }
    if (cancel_after >= 0) {
      c.TryCancel();
    } else if (open) {
      writer->WritesDone();
    }
    return writer->Finish();
  }

  // Answers scoring tasks until the first training task, which goes to
  // `train` (its round and layers); false when the run finished or `limit`
  // passed first, or a scoring answer was refused.
  bool UntilTrain(
      absl::Duration limit,
      const std::function<void(int64_t, const std::vector<std::string>&)>&
          train) {
    const absl::Time end = absl::Now() + limit;
    while (absl::Now() < end) {
      const wire::TaskReply t = GetTask();
      if (t.kind() == wire::TaskReply::SCORE) {
        const grpc::Status s = Scores(t.round());
        EXPECT_TRUE(s.ok()) << s.error_message();
        if (!s.ok()) return false;
      } else if (t.kind() == wire::TaskReply::TRAIN) {
        train(t.round(), {t.layers().begin(), t.layers().end()});
        return true;
      } else if (t.kind() == wire::TaskReply::FINISHED) {
        return false;
      }
    }
    return false;
  }

  // Applied to every upload's manifest before it is sent (a lying client).
  std::function<void(wire::UploadManifest*)> manifest_tweak;

  grpc::Status Leave() {
    wire::LeaveRequest r;
    r.set_client_id(Id(index_));
    r.set_session(session_);
    wire::LeaveReply reply;
    grpc::ClientContext c;
    Deadline(&c);
    return stub_->Leave(&c, r, &reply);
  }

 private:
  static void Deadline(grpc::ClientContext* c) {
    c->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::seconds(10));
  }

  int index_;
  FakeWork work_;
  std::unique_ptr<wire::Coordinator::Stub> stub_;
  std::string session_;
  std::vector<LayerDelta> deltas_;
};

bool WaitFor(const std::function<bool()>& done, absl::Duration limit) {
  const absl::Time end = absl::Now() + limit;
  while (!done()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

const ClientRoundRecord* Find(const RoundRecord& r, const std::string& id) {
  for (const ClientRoundRecord& c : r.clients) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

// Client 1 dies in round 1 with `cancel_after` chunks of its update sent.
// With `spill_dir`, the coordinator receives every upload to disk there
// (receive_to_disk), and the dead client's file must be gone at the end.
void KilledMidUpload(int cancel_after_from_end,
                     const std::string& spill_dir = "") {
  constexpr int kClients = 3;
  const absl::Time t0 = absl::Now();
  ServiceOptions options = FastOptions(kClients);
  if (!spill_dir.empty()) {
    std::filesystem::remove_all(spill_dir);
    options.spill_dir = spill_dir;
    options.receive_to_disk = true;
  }
  Coordinator coordinator(EngineOptions(1, kDeadline), options);
  RawClient raw(coordinator.target(), 1);
  ASSERT_TRUE(raw.Join());
  std::vector<std::unique_ptr<DaemonThread>> daemons;
  for (int i : {0, 2}) {
    daemons.push_back(std::make_unique<DaemonThread>(
        coordinator.target(),
        std::make_unique<FakeWork>(Id(i), Samples(i), absl::ZeroDuration()),
        Id(i)));
  }
  bool killed = false;
  raw.UntilTrain(absl::Seconds(10), [&](int64_t round,
                                        const std::vector<std::string>& layers) {
    std::vector<ChunkFrame> frames =
        raw.Update(coordinator.engine().global(), round, layers);
    const int n = static_cast<int>(frames.size());
    ASSERT_GT(n, 3);
    const grpc::Status s = raw.Upload(round, layers, std::move(frames),
                                      n - cancel_after_from_end);
    EXPECT_FALSE(s.ok());
    killed = true;  // and never heard from again
  });
  ASSERT_TRUE(killed);
  for (auto& d : daemons) {
    const absl::StatusOr<DaemonResult>& r = d->Join();
    ASSERT_TRUE(r.ok()) << r.status();
  }
  ASSERT_EQ(coordinator.engine().committed_round(), 1);
  const std::vector<RoundRecord> records = coordinator.records();
  ASSERT_EQ(records.size(), 1u);
  ASSERT_NE(Find(records[0], Id(1)), nullptr);
  EXPECT_FALSE(Find(records[0], Id(1))->contributed);
  EXPECT_TRUE(Find(records[0], Id(0))->contributed);
  EXPECT_TRUE(Find(records[0], Id(2))->contributed);
  for (const TransferRecord& u : coordinator.server().stats().uploads) {
    if (u.client == Id(1)) {
      EXPECT_NE(u.outcome, "ok");
    }
  }
  ExpectBitIdentical(
      coordinator.engine().global(),
      SequentialDrive(1, kClients, [](int i, int64_t) { return i == 1; }));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(20));
}

TEST(FaultTest, ClientKilledMidUploadContributesNothing) {
  KilledMidUpload(/*cancel_after_from_end=*/3);
}

// The same while every upload is received to disk: the half-written file of
// the dead client is removed, nothing of it is folded.
TEST(FaultTest, ClientKilledMidUploadToDiskLeavesNoFile) {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/fault_recv_", ::getpid());
  KilledMidUpload(/*cancel_after_from_end=*/3, dir);
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  std::filesystem::remove_all(dir);
}

// Every chunk written, then the call cancelled before WritesDone: the server
// has the whole update but the client saw CANCELLED. UploadReactor's OnCancel
// marks the upload, and neither the reactor nor the engine thread applies a
// cancelled one (server/service/service.cc).
TEST(FaultTest, ClientKilledAfterLastChunkBeforeClosingContributesNothing) {
  KilledMidUpload(/*cancel_after_from_end=*/0);
}

TEST(FaultTest, StragglerPastDeadlineRefusedStaleAndNeverMixedIn) {
  constexpr int kRounds = 3, kClients = 3;
  const absl::Time t0 = absl::Now();
  Coordinator coordinator(EngineOptions(kRounds, kDeadline),
                          FastOptions(kClients));
  RawClient raw(coordinator.target(), 1);
  ASSERT_TRUE(raw.Join());
  std::vector<std::unique_ptr<DaemonThread>> daemons;
  for (int i : {0, 2}) {
    daemons.push_back(std::make_unique<DaemonThread>(
        coordinator.target(),
        std::make_unique<FakeWork>(Id(i), Samples(i), absl::ZeroDuration()),
        Id(i)));
  }
  // Client 1 answers every round properly except round 1, whose update it
  // sends only once the round has committed without it.
  grpc::Status late = grpc::Status::OK;
  bool late_sent = false, finished = false;
  const absl::Time limit = absl::Now() + absl::Seconds(20);
  while (!finished && absl::Now() < limit) {
    const wire::TaskReply t = raw.GetTask();
    if (t.kind() == wire::TaskReply::SCORE) {
      ASSERT_TRUE(raw.Scores(t.round()).ok());
    } else if (t.kind() == wire::TaskReply::TRAIN) {
      const std::vector<std::string> layers(t.layers().begin(),
                                            t.layers().end());
      std::vector<ChunkFrame> frames =
          raw.Update(coordinator.engine().global(), t.round(), layers);
      if (t.round() == 1) {
        ASSERT_TRUE(
            WaitFor([&] { return coordinator.engine().committed_round() >= 1; },
                    absl::Seconds(10)));
        late = raw.Upload(1, layers, std::move(frames));
        late_sent = true;
      } else {
        const grpc::Status s = raw.Upload(t.round(), layers, std::move(frames));
        EXPECT_TRUE(s.ok()) << t.round() << ": " << s.error_message();
      }
    } else if (t.kind() == wire::TaskReply::FINISHED) {
      finished = true;
    }
  }
  ASSERT_TRUE(late_sent);
  EXPECT_FALSE(late.ok());
  EXPECT_THAT(late.error_message(), StartsWith("stale_round: "));
  for (auto& d : daemons) {
    const absl::StatusOr<DaemonResult>& r = d->Join();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->last_round, kRounds);
  }
  ASSERT_EQ(coordinator.engine().committed_round(), kRounds);
  const std::vector<RoundRecord> records = coordinator.records();
  ASSERT_EQ(records.size(), static_cast<size_t>(kRounds));
  // Round 1 committed at the deadline, at quorum, without it.
  EXPECT_FALSE(Find(records[0], Id(1))->contributed);
  EXPECT_TRUE(Find(records[0], Id(0))->contributed);
  EXPECT_TRUE(Find(records[0], Id(2))->contributed);
  EXPECT_GE(records[0].phase_ms.at("train"),
            absl::ToDoubleMilliseconds(kDeadline) - 100);
  // Its late update was recorded as refused stale, for round 1 only.
  const ServiceStats stats = coordinator.server().stats();
  EXPECT_GE(stats.refused.at("stale_round"), 1);
  int late_records = 0;
  for (const TransferRecord& u : stats.uploads) {
    if (u.client != Id(1)) continue;
    if (u.round == 1) {
      EXPECT_EQ(u.outcome, "stale_round");
      ++late_records;
    } else {
      EXPECT_EQ(u.outcome, "ok") << u.round;  // its own later updates
    }
  }
  EXPECT_EQ(late_records, 1);
  // The weights are those of a run where its round-1 update never existed:
  // it was mixed into no round (its rounds 2 and 3 updates were).
  ExpectBitIdentical(
      coordinator.engine().global(),
      SequentialDrive(kRounds, kClients, [](int i, int64_t round) {
        return i == 1 && round == 1;
      }));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(25));
}

// A client that starts its upload and then sends nothing more holds the
// only place of --max_uploads_in_flight 1 until its stream's deadline
// (stream_timeout + a second per MiB): then the coordinator cancels it, the
// other clients' uploads (told "busy" meanwhile) get in, and the round
// commits without the stalled one, as if it had never uploaded.
TEST(FaultTest, AStalledUploadLosesTheOnlyPlaceAtItsStreamDeadline) {
  constexpr int kClients = 3;
  const absl::Time t0 = absl::Now();
  ServiceOptions options = FastOptions(kClients);
  options.max_uploads_in_flight = 1;
  options.stream_timeout = absl::Seconds(2);
  Coordinator coordinator(EngineOptions(1, absl::Seconds(8)), options);
  RawClient raw(coordinator.target(), 1);
  ASSERT_TRUE(raw.Join());
  // The others train for 0.5 s: their uploads come while the stalled one
  // holds the place.
  std::vector<std::unique_ptr<DaemonThread>> daemons;
  for (int i : {0, 2}) {
    daemons.push_back(std::make_unique<DaemonThread>(
        coordinator.target(),
        std::make_unique<FakeWork>(Id(i), Samples(i), absl::Milliseconds(500)),
        Id(i)));
  }
  grpc::Status stalled = grpc::Status::OK;
  absl::Time stalled_at, cut_at;
  bool stalled_sent = false;
  raw.UntilTrain(absl::Seconds(20), [&](int64_t round,
                                        const std::vector<std::string>& layers) {
    std::vector<ChunkFrame> frames =
        raw.Update(coordinator.engine().global(), round, layers);
    stalled_at = absl::Now();
    stalled = raw.Upload(round, layers, std::move(frames),
                         /*cancel_after=*/1, /*stall=*/true);
    cut_at = absl::Now();
    stalled_sent = true;
  });
  ASSERT_TRUE(stalled_sent);
  EXPECT_FALSE(stalled.ok());
  EXPECT_GE(cut_at - stalled_at, absl::Seconds(2));
  EXPECT_LT(cut_at - stalled_at, absl::Seconds(5));
  for (auto& d : daemons) {
    const absl::StatusOr<DaemonResult>& r = d->Join();
    ASSERT_TRUE(r.ok()) << r.status();
  }
  ASSERT_EQ(coordinator.engine().committed_round(), 1);
  const std::vector<RoundRecord> records = coordinator.records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_FALSE(Find(records[0], Id(1))->contributed);
  EXPECT_TRUE(Find(records[0], Id(0))->contributed);
  EXPECT_TRUE(Find(records[0], Id(2))->contributed);
  const ServiceStats stats = coordinator.server().stats();
  EXPECT_GE(stats.refused.count("busy") ? stats.refused.at("busy") : 0, 1);
  ExpectBitIdentical(coordinator.engine().global(),
                     SequentialDrive(1, kClients, [](int i, int64_t) {
                       return i == 1;
                     }));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(20));
}

// A client that lies about its device in its upload (an infinite CPU
// quota, a peak of 2^63-1 bytes, a negative memory limit): the update is
// taken, the absurd usage is dropped (the round's record shows none, its
// JSON stays valid), and the weights are the honest run's.
TEST(FaultTest, ALieAboutTheDeviceIsDroppedAndTheUpdateKept) {
  constexpr int kClients = 2;
  Coordinator coordinator(EngineOptions(1, absl::Seconds(10)),
                          FastOptions(kClients));
  RawClient raw(coordinator.target(), 1);
  raw.manifest_tweak = [](wire::UploadManifest* m) {
    m->set_cpus(std::numeric_limits<double>::infinity());
    m->set_process_peak_bytes(std::numeric_limits<int64_t>::max());
    m->set_memory_limit_bytes(-5);
    m->set_train_s(0.25);
  };
  ASSERT_TRUE(raw.Join());
  DaemonThread honest(
      coordinator.target(),
      std::make_unique<FakeWork>(Id(0), Samples(0), absl::ZeroDuration()),
      Id(0));
  bool sent = false;
  raw.UntilTrain(absl::Seconds(15), [&](int64_t round,
                                        const std::vector<std::string>& layers) {
    const grpc::Status s = raw.Upload(
        round, layers, raw.Update(coordinator.engine().global(), round, layers));
    EXPECT_TRUE(s.ok()) << s.error_message();
    sent = true;
  });
  ASSERT_TRUE(sent);
  ASSERT_TRUE(honest.Join().ok());
  ASSERT_TRUE(coordinator.server().Wait().ok());
  const std::vector<RoundRecord> records = coordinator.records();
  ASSERT_EQ(records.size(), 1u);
  const ClientRoundRecord* liar = Find(records[0], Id(1));
  ASSERT_NE(liar, nullptr);
  EXPECT_TRUE(liar->contributed);
  EXPECT_EQ(liar->usage.cpus, -1);
  EXPECT_EQ(liar->usage.process_peak_bytes, -1);
  EXPECT_EQ(liar->usage.memory_limit_bytes, -1);
  const nlohmann::json json = nlohmann::json::parse(
      records[0].ToJson(), nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(json.is_object()) << records[0].ToJson();
  ExpectBitIdentical(coordinator.engine().global(),
                     SequentialDrive(1, kClients));
}

TEST(FaultTest, CoordinatorRestartedMidRunFinalWeightsEqualUninterrupted) {
  constexpr int kRounds = 4, kClients = 2;
  const absl::Time t0 = absl::Now();
  // Per process: concurrent runs must not share checkpoints.
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/fault_restart_", ::getpid());
  std::filesystem::remove_all(dir);
  auto store = CheckpointStore::Open(dir, 2);
  ASSERT_TRUE(store.ok());
  auto first = std::make_unique<Coordinator>(
      EngineOptions(kRounds, absl::Seconds(30)), FastOptions(kClients),
      "127.0.0.1:0", store->get());
  const std::string target = first->target();
  std::vector<std::unique_ptr<DaemonThread>> daemons;
  for (int i = 0; i < kClients; ++i) {
    daemons.push_back(std::make_unique<DaemonThread>(
        target,
        std::make_unique<FakeWork>(Id(i), Samples(i), absl::Milliseconds(100)),
        Id(i)));
  }
  ASSERT_TRUE(WaitFor([&] { return first->engine().committed_round() >= 2; },
                      absl::Seconds(20)));
  first->Stop();  // killed: server and engine gone, mid round 3
  const int64_t resumed_at = first->engine().committed_round();
  first.reset();
  absl::SleepFor(absl::Milliseconds(300));
  Coordinator second(EngineOptions(kRounds, absl::Seconds(30)),
                     FastOptions(kClients), target, store->get());
  EXPECT_TRUE(second.engine().resumed());
  EXPECT_EQ(second.engine().committed_round(), resumed_at);
  // Every daemon's outcome first, so that one that hangs is named along
  // with what the others did.
  std::vector<absl::StatusOr<DaemonResult>> results;
  for (auto& d : daemons) results.push_back(d->JoinWithin(absl::Seconds(40)));
  for (size_t i = 0; i < results.size(); ++i) {
    const absl::StatusOr<DaemonResult>& r = results[i];
    ASSERT_TRUE(r.ok()) << "daemon " << i << ": " << r.status()
                        << "; coordinator at round "
                        << second.engine().committed_round() << ", phase "
                        << second.engine().phase();
    EXPECT_EQ(r->joins, 2) << "daemon " << i;
    EXPECT_EQ(r->last_round, kRounds) << "daemon " << i;
  }
  const absl::Status waited = second.server().Wait();
  ASSERT_TRUE(waited.ok()) << waited;
  EXPECT_EQ(second.engine().committed_round(), kRounds);
  ExpectBitIdentical(second.engine().global(),
                     SequentialDrive(kRounds, kClients));
  // Same run id: after rejoining, clients kept their replica and downloaded
  // only what changed since -- never the whole model again.
  for (const TransferRecord& d : second.server().stats().downloads) {
    EXPECT_LT(d.layers.size(), 4u) << d.client;
  }
  EXPECT_LT(absl::Now() - t0, absl::Seconds(25));
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

}  // namespace
}  // namespace layerfl
