// One test per bad input over the wire (issue 7), each sent while a round is
// live: two raw gRPC clients join an in-process coordinator (a real server on
// 127.0.0.1:0), round 1 starts, both are asked for scores and then for their
// updates. Client-000 then sends one kind of bad input; the test asserts
//   - the status code and the reason its message starts with,
//   - that the service counted the refusal under that reason,
//   - that the committed state (weights, layer versions, committed round) is
//     bit-identical and the round is still waiting, the server still serving,
//   - and that the round then finishes with two valid updates exactly as an
//     engine fed those two updates directly would: nothing of the refused
//     input was mixed into the aggregate.
// Every test runs with ordered aggregation (the default, updates applied in
// client-id order) and without it (applied on arrival). Ordered, every
// waiting update waits on disk (max_held_bytes 0), and the round finishes
// with client-001's update arriving first: it waits, on disk, for
// client-000's.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "proto/layerfl.grpc.pb.h"
#include "proto/wire_convert.h"
#include "tests/service_fixture.h"

namespace layerfl {
namespace {

namespace wire = ::layerfl::wire::v1;
using namespace ::layerfl::fixture;  // NOLINT(build/namespaces)
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kToken[] = "secret";
constexpr int64_t kSamplesA = 40, kSamplesB = 25;

// Round 1's valid update from a client: FakeSelector assigns block1 and head.
std::vector<LayerDelta> ValidUpdate(float scale) {
  std::vector<LayerDelta> out;
  const ModelWeights m = SmallModel();
  for (const char* name : {"block1", "head"}) {
    LayerDelta d;
    d.group = name;
    for (const Tensor32& t : m.layers[m.Find(name)].tensors) {
      d.tensors.push_back(MakeTensor(t.name, t.shape, scale));
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<double> Scores(double base) {
  return {base, base + 1, base + 2, base + 3};
}

// What the committed model must be after round 1 when exactly the two valid
// updates were applied: an engine fed directly, no transport.
ModelWeights Reference() {
  FakeSelector selector;
  std::unique_ptr<RoundEngine> engine =
      DirectEngine(EngineOptions(1, absl::Seconds(60)), &selector);
  EXPECT_TRUE(engine->Join({"client-000", kSamplesA, 2.0}).ok());
  EXPECT_TRUE(engine->Join({"client-001", kSamplesB, 2.0}).ok());
  EXPECT_TRUE(engine->StartRound().ok());
  EXPECT_TRUE(engine->SubmitScores("client-000", 1, Scores(1)).ok());
  EXPECT_TRUE(engine->SubmitScores("client-001", 1, Scores(2)).ok());
  EXPECT_TRUE(
      engine->SubmitUpdate("client-000", 1, kSamplesA, ValidUpdate(0.3f)).ok());
  EXPECT_TRUE(
      engine->SubmitUpdate("client-001", 1, kSamplesB, ValidUpdate(-0.2f))
          .ok());
  EXPECT_EQ(engine->committed_round(), 1);
  return engine->global();
}

struct Peer {
  std::string id;
  std::string session;
  int64_t samples = 0;
};

// What an upload stream carries besides its chunks.
struct Manifest {
  std::string id;
  std::string session;
  int64_t round = 1;
  int64_t samples = kSamplesA;
  Encoding encoding = Encoding::kFloat32;
  std::vector<std::string> layers;
  std::vector<double> scores;  // importance.source train; empty = none
};

class WireRefusalTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    ServiceOptions options = FastOptions(2);  // round 1 starts at two joins
    options.token = kToken;
    options.max_chunk_bytes = 64 << 10;
    options.client_timeout = absl::Minutes(10);
    options.ordered_aggregation = GetParam();
    options.max_held_bytes = 0;
    spill_dir_ =
        absl::StrCat(::testing::TempDir(), "/wire_spill_", getpid(), "_",
                     ::testing::UnitTest::GetInstance()->random_seed(), "_",
                     spill_counter_++);
    std::filesystem::remove_all(spill_dir_);
    options.spill_dir = spill_dir_;
    coordinator_ = std::make_unique<Coordinator>(
        EngineOptions(1, round_deadline_), options);
    stub_ = wire::Coordinator::NewStub(grpc::CreateChannel(
        coordinator_->target(), grpc::InsecureChannelCredentials()));
    a_ = JoinAs("client-000", kSamplesA);
    b_ = JoinAs("client-001", kSamplesB);
    ASSERT_FALSE(a_.session.empty());
    ASSERT_FALSE(b_.session.empty());
    ASSERT_EQ(AwaitTask(a_).kind(), wire::TaskReply::SCORE);
    ASSERT_EQ(AwaitTask(b_).kind(), wire::TaskReply::SCORE);
  }

  void Deadline(grpc::ClientContext* c) {
    c->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::seconds(10));
  }

  Peer JoinAs(const std::string& id, int64_t samples) {
    wire::JoinRequest join;
    join.set_client_id(id);
    join.set_token(kToken);
    join.set_num_samples(samples);
    wire::JoinReply reply;
    grpc::ClientContext context;
    Deadline(&context);
    grpc::Status s = stub_->Join(&context, join, &reply);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {id, reply.session(), samples};
  }

  // The next task that is not WAIT (bounded: 40 polls of up to 250 ms).
  wire::TaskReply AwaitTask(const Peer& p) {
    wire::TaskReply reply;
    for (int i = 0; i < 40; ++i) {
      wire::GetTaskRequest request;
      request.set_client_id(p.id);
      request.set_session(p.session);
      request.set_wait_ms(250);
      grpc::ClientContext context;
      Deadline(&context);
      reply.Clear();
      grpc::Status s = stub_->GetTask(&context, request, &reply);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok() || reply.kind() != wire::TaskReply::WAIT) break;
    }
    return reply;
  }

  grpc::Status ReportScores(const Peer& p, int64_t round,
                            const std::vector<double>& scores) {
    wire::ScoresRequest request;
    request.set_client_id(p.id);
    request.set_session(p.session);
    request.set_round(round);
    for (double s : scores) request.add_scores(s);
    wire::ScoresReply reply;
    grpc::ClientContext context;
    Deadline(&context);
    return stub_->ReportScores(&context, request, &reply);
  }

  // Both clients score; both are then asked to train block1 and head.
  void ToTraining() {
    ASSERT_TRUE(ReportScores(a_, 1, Scores(1)).ok());
    ASSERT_TRUE(ReportScores(b_, 1, Scores(2)).ok());
    for (const Peer* p : {&a_, &b_}) {
      const wire::TaskReply t = AwaitTask(*p);
      ASSERT_EQ(t.kind(), wire::TaskReply::TRAIN) << p->id;
      ASSERT_EQ(t.round(), 1);
      ASSERT_THAT(t.layers(), ::testing::ElementsAre("block1", "head"));
    }
  }

  Manifest ManifestOf(const Peer& p, const std::vector<LayerDelta>& update) {
    Manifest m;
    m.id = p.id;
    m.session = p.session;
    m.samples = p.samples;
    for (const LayerDelta& d : update) m.layers.push_back(d.group);
    return m;
  }

  static std::vector<ChunkFrame> Frames(const std::vector<LayerDelta>& update,
                                        Encoding encoding = Encoding::kFloat32,
                                        int64_t chunk = 16 << 10,
                                        bool with_specs = false) {
    std::vector<LayerSource> sources;
    for (const LayerDelta& d : update) sources.push_back(SourceOf(d));
    return EncodeLayers(sources, encoding, chunk, with_specs);
  }

  // One UploadUpdate stream: the manifest, the frames, then the close.
  grpc::Status Upload(const Manifest& manifest,
                      std::vector<ChunkFrame> frames) {
    grpc::ClientContext context;
    Deadline(&context);
    wire::UploadReply reply;
    auto writer = stub_->UploadUpdate(&context, &reply);
    wire::UploadMessage m;
    auto* wm = m.mutable_manifest();
    wm->set_client_id(manifest.id);
    wm->set_session(manifest.session);
    wm->set_round(manifest.round);
    wm->set_num_samples(manifest.samples);
    wm->set_encoding(ToProto(manifest.encoding));
    for (const std::string& l : manifest.layers) wm->add_layers(l);
    for (double s : manifest.scores) wm->add_scores(s);
    bool open = writer->Write(m);
    for (ChunkFrame& f : frames) {
      if (!open) break;
      ToProto(std::move(f), m.mutable_chunk());
      open = writer->Write(m);
    }
    if (open) writer->WritesDone();
    return writer->Finish();
  }

  grpc::Status UploadValid(const Peer& p, float scale) {
    const std::vector<LayerDelta> u = ValidUpdate(scale);
    return Upload(ManifestOf(p, u), Frames(u));
  }

  // The call was refused with `code` and a message "<reason>: ...", and the
  // service counted one more refusal under `reason`.
  void ExpectRefused(const grpc::Status& s, grpc::StatusCode code,
                     const std::string& reason,
                     const std::string& detail = "") {
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_THAT(s.error_message(), StartsWith(reason + ": "));
    if (!detail.empty()) {
      EXPECT_THAT(s.error_message(), HasSubstr(detail));
    }
    const ServiceStats stats = coordinator_->server().stats();
    auto it = stats.refused.find(reason);
    EXPECT_EQ(it == stats.refused.end() ? 0 : it->second, ++counted_[reason])
        << reason;
  }

  // Nothing committed changed, round 1 is still live and the server answers.
  void ExpectCommittedStateUnchanged() {
    RoundEngine& engine = coordinator_->engine();
    EXPECT_EQ(engine.committed_round(), 0);
    EXPECT_TRUE(engine.round_running());
    ExpectBitIdentical(engine.global(), SmallModel());
    wire::HeartbeatRequest hb;
    hb.set_client_id(a_.id);
    hb.set_session(a_.session);
    wire::HeartbeatReply reply;
    grpc::ClientContext context;
    Deadline(&context);
    EXPECT_TRUE(stub_->Heartbeat(&context, hb, &reply).ok());
    EXPECT_EQ(reply.committed_round(), 0);
  }

  void TearDown() override { std::filesystem::remove_all(spill_dir_); }

  // Ordered aggregation: client-001 sends its valid update first, on a
  // thread; it waits on disk for client-000 (asserted: one more spilled
  // update, nothing committed). Returns the thread; `status` gets its result.
  std::thread UploadBWhileItWaits(grpc::Status* status) {
    const int64_t spilled = coordinator_->server().stats().spilled;
    std::thread t([this, status] { *status = UploadValid(b_, -0.2f); });
    for (int i = 0;
         i < 500 && coordinator_->server().stats().spilled == spilled; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_EQ(coordinator_->server().stats().spilled, spilled + 1);
    EXPECT_EQ(coordinator_->engine().committed_round(), 0);
    return t;
  }

  // Client-000 (unless it already has) and client-001 send their valid
  // updates (ordered: client-001's first, waiting on disk); round 1 commits
  // exactly as Reference() does.
  void FinishRoundLikeTheReference(bool a_already_uploaded = false) {
    const bool b_first = GetParam() && !a_already_uploaded;
    grpc::Status b_status;
    std::thread b;
    if (b_first) b = UploadBWhileItWaits(&b_status);
    if (!a_already_uploaded) {
      grpc::Status s = UploadValid(a_, 0.3f);
      EXPECT_TRUE(s.ok()) << s.error_message();
    }
    if (b_first) {
      b.join();
    } else {
      b_status = UploadValid(b_, -0.2f);
    }
    ASSERT_TRUE(b_status.ok()) << b_status.error_message();
    for (int i = 0; i < 500 && coordinator_->engine().committed_round() < 1;
         ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    ASSERT_EQ(coordinator_->engine().committed_round(), 1);
    ExpectBitIdentical(coordinator_->engine().global(), Reference());
    // The round's record reaches the observer just after the commit.
    for (int i = 0; i < 500 && coordinator_->records().empty(); ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    const std::vector<RoundRecord> records = coordinator_->records();
    ASSERT_EQ(records.size(), 1u);
    int contributed = 0;
    for (const ClientRoundRecord& c : records[0].clients)
      contributed += c.contributed;
    EXPECT_EQ(contributed, 2);
  }

  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<wire::Coordinator::Stub> stub_;
  Peer a_, b_;
  std::map<std::string, int64_t> counted_;
  std::string spill_dir_;
  static inline int spill_counter_ = 0;
  absl::Duration round_deadline_ = absl::Seconds(60);
};

constexpr auto kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
constexpr auto kDataLoss = grpc::StatusCode::DATA_LOSS;

// --- identity ---

TEST_P(WireRefusalTest, WrongTokenAtJoin) {
  wire::JoinRequest join;
  join.set_client_id("client-002");
  join.set_token("guess");
  join.set_num_samples(10);
  wire::JoinReply reply;
  grpc::ClientContext context;
  Deadline(&context);
  ExpectRefused(stub_->Join(&context, join, &reply),
                grpc::StatusCode::UNAUTHENTICATED, "bad_token");
  ToTraining();
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, UnknownClientUpload) {
  ToTraining();
  // A client that never joined, borrowing a live session string.
  const Peer stranger{"client-777", a_.session, kSamplesA};
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  ExpectRefused(Upload(ManifestOf(stranger, u), Frames(u)),
                grpc::StatusCode::UNAUTHENTICATED, "unknown_session",
                "client 'client-777'");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, UnknownClientScores) {
  const Peer stranger{"client-777", b_.session, 1};
  ExpectRefused(ReportScores(stranger, 1, Scores(1)),
                grpc::StatusCode::UNAUTHENTICATED, "unknown_session",
                "client 'client-777'");
  ToTraining();
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, ForgedSession) {
  ToTraining();
  const Peer forged{a_.id, a_.session + "0", kSamplesA};
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  ExpectRefused(Upload(ManifestOf(forged, u), Frames(u)),
                grpc::StatusCode::UNAUTHENTICATED, "unknown_session");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

// --- damaged or cut streams ---

TEST_P(WireRefusalTest, BadChecksum) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  std::vector<ChunkFrame> frames = Frames(u);
  frames[1].crc32 ^= 0x1;
  ExpectRefused(Upload(ManifestOf(a_, u), frames), kDataLoss, "bad_checksum");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, BitFlippedInTransit) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  std::vector<ChunkFrame> frames = Frames(u);
  frames[2].data[7] ^= 0x40;
  ExpectRefused(Upload(ManifestOf(a_, u), frames), kDataLoss, "bad_checksum");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, TruncatedStream) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  std::vector<ChunkFrame> frames = Frames(u);
  frames.pop_back();  // the last chunk of the head never arrives
  ExpectRefused(Upload(ManifestOf(a_, u), frames), kDataLoss, "truncated",
                "head");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, OversizedChunk) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  // 96 KiB chunks; the coordinator accepts 64 KiB.
  ExpectRefused(
      Upload(ManifestOf(a_, u), Frames(u, Encoding::kFloat32, 96 << 10)),
      kInvalid, "oversized_chunk", "65536");
  // A message beyond the transport's own cap (max_chunk_bytes + 64 KiB) is
  // stopped by gRPC before the service sees it: RESOURCE_EXHAUSTED, with
  // gRPC's message naming both sizes (and not in the service's counts).
  grpc::Status s =
      Upload(ManifestOf(a_, u), Frames(u, Encoding::kFloat32, 256 << 10));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("larger than max"));
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, DuplicatedChunk) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  std::vector<ChunkFrame> frames = Frames(u);
  frames.insert(frames.begin() + 2, frames[1]);  // sent twice in a row
  ExpectRefused(Upload(ManifestOf(a_, u), frames), kInvalid, "out_of_order");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, LayerSentTwice) {
  ToTraining();
  std::vector<LayerDelta> u = ValidUpdate(0.3f);
  Manifest m = ManifestOf(a_, u);
  u.push_back(u.back());  // the head again, not announced
  ExpectRefused(Upload(m, Frames(u)), kInvalid, "unexpected_layer");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

// --- wrong layout or type ---

TEST_P(WireRefusalTest, WrongShape) {
  ToTraining();
  std::vector<LayerDelta> u = ValidUpdate(0.3f);
  u[1].tensors[0] = MakeTensor("head.w", {10, 127}, 0.3f);
  ExpectRefused(
      Upload(ManifestOf(a_, u), Frames(u, Encoding::kFloat32, 16 << 10, true)),
      kInvalid, "wrong_shape", "head");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, WrongLength) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  std::vector<ChunkFrame> frames = Frames(u);
  frames[0].header->payload_bytes -= 4;
  ExpectRefused(Upload(ManifestOf(a_, u), frames), kInvalid, "wrong_length");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, WrongDtype) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  Manifest m = ManifestOf(a_, u);
  m.encoding = Encoding::kFloat16;  // the run is float32
  ExpectRefused(Upload(m, Frames(u, Encoding::kFloat16)), kInvalid,
                "bad_encoding", "the run uses float32");
  // The manifest says float32 but the chunks are bfloat16.
  ExpectRefused(Upload(ManifestOf(a_, u), Frames(u, Encoding::kBFloat16)),
                kInvalid, "bad_encoding");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

// --- wrong layers ---

TEST_P(WireRefusalTest, UnknownLayer) {
  ToTraining();
  Manifest m = ManifestOf(a_, ValidUpdate(0.3f));
  m.layers = {"block9"};
  ExpectRefused(Upload(m, {}), kInvalid, "unknown_layer", "block9");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, LayerNotAnnounced) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  Manifest m = ManifestOf(a_, u);
  m.layers = {"head"};  // block1 arrives first
  ExpectRefused(Upload(m, Frames(u)), kInvalid, "unexpected_layer");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, LayerNotAssigned) {
  ToTraining();
  // block0 is a well-formed layer of the model, but this round assigned
  // block1 and head.
  std::vector<LayerDelta> u = ValidUpdate(0.3f);
  const ModelWeights model = SmallModel();
  LayerDelta block0;
  block0.group = "block0";
  for (const Tensor32& t : model.layers[model.Find("block0")].tensors) {
    block0.tensors.push_back(MakeTensor(t.name, t.shape, 0.3f));
  }
  u[0] = std::move(block0);
  ExpectRefused(Upload(ManifestOf(a_, u), Frames(u)), kInvalid, "not_assigned",
                "block0");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

// --- bad values ---

TEST_P(WireRefusalTest, NaNInAnUpdate) {
  ToTraining();
  std::vector<LayerDelta> u = ValidUpdate(0.3f);
  u[0].tensors[0].values[1234] = std::numeric_limits<float>::quiet_NaN();
  ExpectRefused(Upload(ManifestOf(a_, u), Frames(u)), kInvalid, "non_finite",
                "block1");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, InfinityInAnUpdate) {
  ToTraining();
  std::vector<LayerDelta> u = ValidUpdate(0.3f);
  u[1].tensors[1].values[3] = -std::numeric_limits<float>::infinity();
  ExpectRefused(Upload(ManifestOf(a_, u), Frames(u)), kInvalid, "non_finite",
                "head");
  std::vector<LayerDelta> v = ValidUpdate(0.3f);
  v[0].tensors[1].values[0] = std::numeric_limits<float>::infinity();
  ExpectRefused(Upload(ManifestOf(a_, v), Frames(v)), kInvalid, "non_finite",
                "block1");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, NonFiniteScores) {
  ExpectRefused(ReportScores(a_, 1, {1, std::nan(""), 1, 1}), kInvalid,
                "non_finite", "block0");
  ExpectRefused(
      ReportScores(a_, 1, {1, 1, std::numeric_limits<double>::infinity(), 1}),
      kInvalid, "non_finite", "block1");
  ExpectRefused(ReportScores(a_, 1, {1, 1, 1, -2}), kInvalid, "non_finite");
  ExpectRefused(ReportScores(a_, 1, {1, 1, 1}), kInvalid, "wrong_shape");
  // Client-000 is still asked for its scores.
  EXPECT_EQ(AwaitTask(a_).kind(), wire::TaskReply::SCORE);
  ToTraining();
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

// The first step's scores an upload may carry (importance.source train):
// one finite, non-negative score per announced layer, or none.
TEST_P(WireRefusalTest, BadFirstStepScores) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  Manifest m = ManifestOf(a_, u);
  m.scores = {1.0};
  ExpectRefused(Upload(m, Frames(u)), kInvalid, "bad_request",
                "1 scores for 2 layers");
  m.scores = {1.0, -1.0};
  ExpectRefused(Upload(m, Frames(u)), kInvalid, "bad_request",
                "score of layer 'head' is -1");
  m.scores = {std::nan(""), 1.0};
  ExpectRefused(Upload(m, Frames(u)), kInvalid, "bad_request", "'block1'");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, BadSampleCount) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  Manifest m = ManifestOf(a_, u);
  m.samples = 0;
  ExpectRefused(Upload(m, Frames(u)), kInvalid, "bad_sample_count");
  m.samples = int64_t{1} << 50;
  ExpectRefused(Upload(m, Frames(u)), kInvalid, "bad_sample_count");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

// --- wrong moment ---

TEST_P(WireRefusalTest, DuplicateUpload) {
  ToTraining();
  ASSERT_TRUE(UploadValid(a_, 0.3f).ok());
  // The same update again, and a different one: both refused; the first
  // counts once.
  ExpectRefused(UploadValid(a_, 0.3f), grpc::StatusCode::FAILED_PRECONDITION,
                "duplicate", "client-000");
  ExpectRefused(UploadValid(a_, 0.9f), grpc::StatusCode::FAILED_PRECONDITION,
                "duplicate");
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference(/*a_already_uploaded=*/true);
}

TEST_P(WireRefusalTest, DuplicateScores) {
  ASSERT_TRUE(ReportScores(a_, 1, Scores(1)).ok());
  ExpectRefused(ReportScores(a_, 1, Scores(5)),
                grpc::StatusCode::FAILED_PRECONDITION, "duplicate");
  ASSERT_TRUE(ReportScores(b_, 1, Scores(2)).ok());
  for (const Peer* p : {&a_, &b_}) {
    ASSERT_EQ(AwaitTask(*p).kind(), wire::TaskReply::TRAIN);
  }
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, StaleAndFutureRounds) {
  ToTraining();
  const std::vector<LayerDelta> u = ValidUpdate(0.3f);
  for (int64_t round : {int64_t{0}, int64_t{2}, int64_t{-1},
                        std::numeric_limits<int64_t>::max()}) {
    Manifest m = ManifestOf(a_, u);
    m.round = round;
    ExpectRefused(Upload(m, Frames(u)), grpc::StatusCode::FAILED_PRECONDITION,
                  "stale_round", absl::StrCat("round ", round));
  }
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

TEST_P(WireRefusalTest, UpdateDuringScoring) {
  // A well-formed update before the round reached its training phase.
  ExpectRefused(UploadValid(a_, 0.3f), grpc::StatusCode::FAILED_PRECONDITION,
                "stale_round", "scoring");
  ToTraining();
  ExpectCommittedStateUnchanged();
  FinishRoundLikeTheReference();
}

// Refusals that concern an update waiting for its turn: ordered aggregation
// only (on arrival nothing waits).
class WaitingRefusalTest : public WireRefusalTest {};

TEST_P(WaitingRefusalTest, DuplicateWhileWaiting) {
  ToTraining();
  grpc::Status first;
  std::thread b = UploadBWhileItWaits(&first);
  // Its waiting update's stream is still open: the second stream is
  // refused at its first message.
  ExpectRefused(UploadValid(b_, 0.7f), grpc::StatusCode::FAILED_PRECONDITION,
                "duplicate", "already has an upload stream open");
  ExpectCommittedStateUnchanged();
  grpc::Status a = UploadValid(a_, 0.3f);
  EXPECT_TRUE(a.ok()) << a.error_message();
  b.join();
  EXPECT_TRUE(first.ok()) << first.error_message();
  // Client-000 then client-001's first update: exactly the reference.
  for (int i = 0; i < 500 && coordinator_->engine().committed_round() < 1;
       ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(coordinator_->engine().committed_round(), 1);
  ExpectBitIdentical(coordinator_->engine().global(), Reference());
}

TEST_P(WaitingRefusalTest, WaitingUpdateDamagedOnDisk) {
  ToTraining();
  grpc::Status b_status;
  std::thread b = UploadBWhileItWaits(&b_status);
  // The file it waits in is damaged (one byte) before its turn.
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(spill_dir_)) {
    files.push_back(e.path());
  }
  EXPECT_EQ(files.size(), 1u);  // (no ASSERT: client-001's call must be joined)
  if (!files.empty()) {
    std::fstream f(files[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);
    f.put('\x7f');
  }
  grpc::Status a = UploadValid(a_, 0.3f);
  EXPECT_TRUE(a.ok()) << a.error_message();
  b.join();
  ExpectRefused(b_status, grpc::StatusCode::INTERNAL, "spill_lost", "CRC-32");
  EXPECT_TRUE(std::filesystem::is_empty(spill_dir_));
  ExpectCommittedStateUnchanged();  // client-001 still owes its update
  // Sent again, it completes the round exactly as the reference.
  FinishRoundLikeTheReference(/*a_already_uploaded=*/true);
}

// A round whose first attempt misses its quorum (client-001 never answers
// before the 1 s deadline) is tried again from scoring; the abandoned
// attempt's update leaves nothing behind: not in the weights, not in the
// committed record's wire bytes.
class RetriedRoundTest : public WireRefusalTest {
 protected:
  RetriedRoundTest() { round_deadline_ = absl::Seconds(1); }
};

TEST_P(RetriedRoundTest, AnAbandonedAttemptLeavesNothingBehind) {
  ToTraining();
  ASSERT_TRUE(UploadValid(a_, 0.9f).ok());  // attempt 0 only
  const wire::TaskReply again = AwaitTask(a_);
  ASSERT_EQ(again.kind(), wire::TaskReply::SCORE);
  EXPECT_EQ(again.round(), 1);
  ExpectCommittedStateUnchanged();
  ASSERT_EQ(AwaitTask(b_).kind(), wire::TaskReply::SCORE);
  ToTraining();
  FinishRoundLikeTheReference();  // weights: attempt 1's two updates only
  const std::vector<RoundRecord> records = coordinator_->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].attempt, 1);
  const ServiceStats stats = coordinator_->server().stats();
  int64_t ok_wire = 0;
  for (const TransferRecord& u : stats.uploads) {
    if (u.outcome == "ok") ok_wire += u.wire_bytes;
  }
  ASSERT_GE(stats.uploads.size(), 3u);
  EXPECT_EQ(stats.uploads[0].client, "client-000");  // the abandoned one
  EXPECT_EQ(records[0].wire_bytes_up, ok_wire - stats.uploads[0].wire_bytes);
}

INSTANTIATE_TEST_SUITE_P(Aggregation, WireRefusalTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "Ordered" : "OnArrival";
                         });
INSTANTIATE_TEST_SUITE_P(Aggregation, RetriedRoundTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "Ordered" : "OnArrival";
                         });
INSTANTIATE_TEST_SUITE_P(Aggregation, WaitingRefusalTest,
                         ::testing::Values(true),
                         [](const ::testing::TestParamInfo<bool>&) {
                           return "Ordered";
                         });

}  // namespace
}  // namespace layerfl
