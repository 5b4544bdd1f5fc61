// Fuzz-style hardening (issue 7): thousands of random and mutated messages
// against an in-process coordinator (a real gRPC server on 127.0.0.1:0, one
// joined session, no round running). Uploads are valid streams mutated in one
// to three ways (bit flips, CRCs, offsets, lengths, shapes, layer names,
// encodings, headers, truncation, duplication, reordering, random bytes) or
// manifests gone wrong; scores, tasks, heartbeats, joins, leaves and fetches
// carry random fields, stale/future rounds, unknown ids and sessions. A fixed
// seed makes the sequence the same every run. Afterwards the coordinator
// still answers, its committed state (weights, layer versions, committed
// round) is bit-identical, every refusal named its reason, and the service's
// refusal stats counted each of them.
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "grpcpp/grpcpp.h"
#include "proto/layerfl.grpc.pb.h"
#include "proto/wire_convert.h"
#include "tests/service_fixture.h"

namespace layerfl {
namespace {

namespace wire = ::layerfl::wire::v1;
using namespace ::layerfl::fixture;  // NOLINT

constexpr int kMessages = 5000;
constexpr absl::Duration kBudget = absl::Seconds(15);

class FuzzTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Round 1 starts at two joins; both score, and client-000 then holds
    // the task of training round 1 (uploads are admitted at their header
    // only then), which nobody ever completes: nothing commits.
    ServiceOptions options = FastOptions(2);
    options.wait_for_clients_timeout = absl::Hours(1);
    options.token = "secret";
    options.max_chunk_bytes = 64 << 10;
    options.client_timeout = absl::Minutes(10);
    coordinator_ = std::make_unique<Coordinator>(
        EngineOptions(3, absl::Seconds(30)), options);
    stub_ = wire::Coordinator::NewStub(grpc::CreateChannel(
        coordinator_->target(), grpc::InsecureChannelCredentials()));
    wire::JoinRequest join;
    join.set_client_id("client-000");
    join.set_token("secret");
    join.set_num_samples(10);
    wire::JoinReply reply;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->Join(&context, join, &reply).ok());
    session_ = reply.session();
    join.set_client_id("client-001");
    grpc::ClientContext context1;
    wire::JoinReply reply1;
    ASSERT_TRUE(stub_->Join(&context1, join, &reply1).ok());
    for (const auto& [id, session] :
         {std::pair<std::string, std::string>{"client-000", session_},
          {"client-001", reply1.session()}}) {
      for (int attempt = 0; attempt < 50; ++attempt) {
        wire::GetTaskRequest poll;
        poll.set_client_id(id);
        poll.set_session(session);
        poll.set_wait_ms(200);
        wire::TaskReply task;
        grpc::ClientContext c;
        ASSERT_TRUE(stub_->GetTask(&c, poll, &task).ok());
        if (task.kind() != wire::TaskReply::SCORE) continue;
        wire::ScoresRequest scores;
        scores.set_client_id(id);
        scores.set_session(session);
        scores.set_round(1);
        for (int l = 0; l < 4; ++l) scores.add_scores(1.0 + l);
        wire::ScoresReply ok;
        grpc::ClientContext c2;
        ASSERT_TRUE(stub_->ReportScores(&c2, scores, &ok).ok());
        break;
      }
    }
    ASSERT_EQ(coordinator_->engine().TaskFor("client-000").kind,
              TaskKind::kTrain);
  }

  void Deadline(grpc::ClientContext* c) {
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  // Records the outcome of one call: ok, or the reason its message names.
  void Note(const grpc::Status& s, bool must_fail, const std::string& what) {
    if (s.ok()) {
      ++oks_;
      EXPECT_FALSE(must_fail) << what << " was accepted";
      return;
    }
    const std::string& m = s.error_message();
    const size_t colon = m.find(": ");
    if (colon == std::string::npos || colon == 0 ||
        m.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") < colon) {
      ADD_FAILURE() << what << ": refusal without a reason: code "
                    << s.error_code() << " '" << m << "'";
      return;
    }
    ++seen_[m.substr(0, colon)];
  }

  std::string RandomBytes(size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(rng_() & 0xff);
    return s;
  }
  // Printable ASCII: proto3 string fields must be valid UTF-8 (gRPC refuses
  // anything else before the service sees it).
  std::string RandomText(size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(' ' + rng_() % 95);
    return s;
  }
  std::string RandomId() {
    switch (rng_() % 4) {
      case 0: return "";
      case 1: return "client-000";
      case 2: return absl::StrCat("client-", rng_() % 1000);
      default: return RandomText(rng_() % 40);
    }
  }
  std::string RandomSession() {
    switch (rng_() % 4) {
      case 0: return "";
      case 1: return session_ + "x";
      case 2: return session_.substr(0, session_.size() / 2);
      default: return RandomText(rng_() % 64);
    }
  }
  int64_t RandomRound() {
    static const int64_t kRounds[] = {1, 0, -1, 2, 7, 1 << 30,
                                      std::numeric_limits<int64_t>::max(),
                                      std::numeric_limits<int64_t>::min()};
    return kRounds[rng_() % 8];
  }
  double RandomDouble() {
    static const double kOdd[] = {std::nan(""), -std::nan(""),
                                  std::numeric_limits<double>::infinity(),
                                  -std::numeric_limits<double>::infinity(),
                                  -1.0, 0.0, 1e308, -1e-300, 5e-324};
    if (rng_() % 2) return kOdd[rng_() % 9];
    return std::uniform_real_distribution<double>(-10, 10)(rng_);
  }

  // A well-formed upload of a random set of layers, then mutated. Every set
  // names a layer client-000 was not assigned (it trains block1 and head),
  // so that even an upload the mutations left intact is refused.
  void FuzzUpload(int i) {
    static const std::vector<std::vector<std::string>> kSets = {
        {"block0"}, {"block0", "head"}, {"embed", "block1"}, {"embed"},
        {"embed", "block0", "block1", "head"}, {}};
    std::vector<std::string> layers = kSets[rng_() % kSets.size()];
    const int64_t chunk = int64_t{4} << (10 + rng_() % 4);  // 4K..32K
    std::vector<LayerSource> sources;
    for (const std::string& l : layers) {
      sources.push_back(SourceOf(model_.layers[model_.Find(l)]));
    }
    std::vector<ChunkFrame> frames =
        EncodeLayers(sources, Encoding::kFloat32, chunk, rng_() % 4 == 0);

    wire::UploadMessage manifest;
    auto* m = manifest.mutable_manifest();
    m->set_client_id("client-000");
    m->set_session(session_);
    m->set_round(rng_() % 2 ? 1 : RandomRound());
    m->set_num_samples(rng_() % 8 == 0 ? -static_cast<int64_t>(rng_() % 5) : 10);
    m->set_encoding(wire::FLOAT32);
    for (const std::string& l : layers) m->add_layers(l);
    bool send_manifest = true, second_manifest = false;
    std::vector<wire::UploadMessage> chunks;
    for (ChunkFrame& f : frames) {
      wire::UploadMessage c;
      ToProto(std::move(f), c.mutable_chunk());
      chunks.push_back(std::move(c));
    }
    const int mutations = 1 + rng_() % 3;
    std::string kinds;
    for (int k = 0; k < mutations; ++k) {
      const int kind = rng_() % 22;
      kinds += absl::StrCat(kind, ",");
      wire::Chunk* c = chunks.empty()
                           ? nullptr
                           : chunks[rng_() % chunks.size()].mutable_chunk();
      switch (kind) {
        case 0:  // a flipped bit in transit
          if (c && !c->data().empty()) {
            (*c->mutable_data())[rng_() % c->data().size()] ^=
                static_cast<char>(1 << (rng_() % 8));
          }
          break;
        case 1:  // a wrong CRC
          if (c) c->set_crc32(c->crc32() ^ (1u << (rng_() % 32)));
          break;
        case 2:  // a shifted offset
          if (c) c->set_offset(c->offset() + (rng_() % 2 ? 4 : -4));
          break;
        case 3:  // a random offset
          if (c) c->set_offset(rng_());
          break;
        case 4:  // a shortened chunk, CRC fixed up
          if (c && !c->data().empty()) {
            c->mutable_data()->resize(rng_() % c->data().size());
            c->set_crc32(Crc32(c->data()));
          }
          break;
        case 5:  // a longer chunk, CRC fixed up
          if (c) {
            c->mutable_data()->append(RandomBytes(1 + rng_() % 9));
            c->set_crc32(Crc32(c->data()));
          }
          break;
        case 6:  // random bytes in place of the values, CRC fixed up (NaN/Inf)
          if (c) {
            *c->mutable_data() = RandomBytes(c->data().size());
            c->set_crc32(Crc32(c->data()));
          }
          break;
        case 7:  // a wrong payload length
          if (c && c->has_header()) {
            c->mutable_header()->set_payload_bytes(
                c->header().payload_bytes() + (rng_() % 2 ? 4 : -4));
          }
          break;
        case 8:  // a wrong layout fingerprint
          if (c && c->has_header()) {
            c->mutable_header()->set_layout(c->header().layout() ^ 1);
          }
          break;
        case 9:  // another layer's name, or an unknown one
          if (c && c->has_header()) {
            static const char* kNames[] = {"embed", "block0", "block1", "head",
                                           "block9", "", "head.w"};
            c->mutable_header()->set_layer(kNames[rng_() % 7]);
          }
          break;
        case 10:  // another encoding (some unknown to the enum)
          if (c && c->has_header()) {
            c->mutable_header()->set_encoding(
                static_cast<wire::Encoding>(1 + rng_() % 6));
          }
          break;
        case 11:  // wrong shapes
          if (c && c->has_header()) {
            auto* t = c->mutable_header()->add_tensors();
            t->set_name(rng_() % 2 ? "head.w" : RandomText(5));
            t->add_shape(static_cast<int64_t>(rng_() % 7) - 2);
            t->add_shape(1 << (rng_() % 31));
          }
          break;
        case 12:  // a header dropped
          if (c) c->clear_header();
          break;
        case 13:  // a header on a middle chunk
          if (c && !c->has_header() && !chunks.empty() &&
              chunks[0].chunk().has_header()) {
            *c->mutable_header() = chunks[0].chunk().header();
          }
          break;
        case 14:  // the stream cut short
          if (!chunks.empty()) chunks.resize(rng_() % chunks.size());
          break;
        case 15:  // a chunk sent twice
          if (c) chunks.insert(chunks.begin() + rng_() % (chunks.size() + 1),
                               chunks[rng_() % chunks.size()]);
          break;
        case 16:  // two chunks swapped
          if (chunks.size() >= 2) {
            std::swap(chunks[rng_() % chunks.size()], chunks[rng_() % chunks.size()]);
          }
          break;
        case 17:  // an oversized chunk (the limit is 64 KiB)
          if (c) {
            *c->mutable_data() = RandomBytes((64 << 10) + 4 * (1 + rng_() % 100));
            c->set_crc32(Crc32(c->data()));
          }
          break;
        case 18:  // a manifest gone wrong
          switch (rng_() % 6) {
            case 0: m->set_client_id(RandomId()); break;
            case 1: m->set_session(RandomSession()); break;
            case 2: m->set_encoding(static_cast<wire::Encoding>(1 + rng_() % 6)); break;
            case 3: m->add_layers(rng_() % 2 ? "head" : "nope"); break;
            case 4: m->clear_layers(); break;
            default: m->set_round(RandomRound()); break;
          }
          break;
        case 19:  // no manifest, or two
          if (rng_() % 2) send_manifest = false; else second_manifest = true;
          break;
        case 20:  // a random chunk appended
          {
            wire::UploadMessage r;
            r.mutable_chunk()->set_offset(rng_() % 4 == 0 ? 0 : rng_());
            *r.mutable_chunk()->mutable_data() = RandomBytes(rng_() % 4096);
            r.mutable_chunk()->set_crc32(rng_() % 2 ? Crc32(r.chunk().data())
                                                    : static_cast<uint32_t>(rng_()));
            chunks.insert(chunks.begin() + rng_() % (chunks.size() + 1), r);
          }
          break;
        default:  // an empty message
          chunks.insert(chunks.begin() + rng_() % (chunks.size() + 1),
                        wire::UploadMessage());
          break;
      }
    }
    grpc::ClientContext context;
    Deadline(&context);
    wire::UploadReply reply;
    auto writer = stub_->UploadUpdate(&context, &reply);
    bool open = true;
    if (send_manifest) open = writer->Write(manifest);
    if (second_manifest && open) open = writer->Write(manifest);
    for (const wire::UploadMessage& c : chunks) {
      if (!open) break;
      open = writer->Write(c);
    }
    if (open) writer->WritesDone();
    // Nothing may be accepted, however well-formed.
    Note(writer->Finish(), true, absl::StrCat("upload #", i, " (mutations ", kinds, ")"));
  }

  void FuzzOther(int i) {
    const std::string what = absl::StrCat("message #", i);
    switch (rng_() % 7) {
      case 0: {  // scores: stale/future rounds, wrong lengths, NaN, negative
        wire::ScoresRequest r;
        const bool mine = rng_() % 2;
        r.set_client_id(mine ? "client-000" : RandomId());
        r.set_session(mine ? session_ : RandomSession());
        r.set_round(rng_() % 2 ? 1 : RandomRound());
        const int n = rng_() % 7;
        for (int k = 0; k < n; ++k) r.add_scores(RandomDouble());
        wire::ScoresReply reply;
        grpc::ClientContext c;
        Deadline(&c);
        Note(stub_->ReportScores(&c, r, &reply), true, what + " scores");
        break;
      }
      case 1: {  // tasks
        wire::GetTaskRequest r;
        const bool mine = rng_() % 3 == 0;
        r.set_client_id(mine ? "client-000" : RandomId());
        r.set_session(mine ? session_ : RandomSession());
        r.set_wait_ms(rng_() % 2 ? -static_cast<int64_t>(rng_() % 1000) : 0);
        wire::TaskReply reply;
        grpc::ClientContext c;
        Deadline(&c);
        const grpc::Status s = stub_->GetTask(&c, r, &reply);
        Note(s, !mine, what + " get_task");
        if (s.ok()) {  // its task, still: training round 1
          EXPECT_EQ(reply.kind(), wire::TaskReply::TRAIN) << what;
          EXPECT_EQ(reply.round(), 1) << what;
        }
        break;
      }
      case 2: {  // heartbeats
        wire::HeartbeatRequest r;
        const bool mine = rng_() % 3 == 0;
        r.set_client_id(mine ? "client-000" : RandomId());
        r.set_session(mine ? session_ : RandomSession());
        wire::HeartbeatReply reply;
        grpc::ClientContext c;
        Deadline(&c);
        const grpc::Status s = stub_->Heartbeat(&c, r, &reply);
        Note(s, !mine, what + " heartbeat");
        if (s.ok()) {
          EXPECT_EQ(reply.committed_round(), 0) << what;
        }
        break;
      }
      case 3: {  // joins: wrong tokens; odd fields with the right one
        wire::JoinRequest r;
        const bool right = rng_() % 4 == 0;
        // Never "client-000": a rejoin would end the session the fuzz uses.
        r.set_client_id(right ? absl::StrCat("fuzz-", rng_() % 50)
                              : absl::StrCat("j", RandomId()));
        r.set_token(right ? "secret" : (rng_() % 2 ? "" : RandomText(rng_() % 20)));
        r.set_budget(RandomDouble());
        r.set_num_samples(rng_() % 2 ? 10 : static_cast<int64_t>(rng_()) - (1ll << 31));
        wire::JoinReply reply;
        grpc::ClientContext c;
        Deadline(&c);
        Note(stub_->Join(&c, r, &reply), !right, what + " join");
        break;
      }
      case 4: {  // leaves of unknown clients or sessions
        wire::LeaveRequest r;
        r.set_client_id(RandomId());
        r.set_session(RandomSession());
        wire::LeaveReply reply;
        grpc::ClientContext c;
        Deadline(&c);
        Note(stub_->Leave(&c, r, &reply), true, what + " leave");
        break;
      }
      case 5: {  // fetches: forged sessions, or odd held versions
        wire::FetchRequest r;
        const bool mine = rng_() % 4 == 0;
        r.set_client_id(mine ? "client-000" : RandomId());
        r.set_session(mine ? session_ : RandomSession());
        r.set_run_id(rng_() % 2 ? "test-run" : RandomText(rng_() % 10));
        const int n = rng_() % 6;
        for (int k = 0; k < n; ++k) {
          auto* h = r.add_held();
          static const char* kNames[] = {"embed", "block0", "head", "zzz", ""};
          h->set_layer(kNames[rng_() % 5]);
          h->set_version(RandomRound());
        }
        grpc::ClientContext c;
        Deadline(&c);
        auto reader = stub_->FetchLayers(&c, r);
        wire::FetchReply reply;
        while (reader->Read(&reply)) {
        }
        Note(reader->Finish(), !mine, what + " fetch");
        break;
      }
      default: {  // chunk data of pure random bytes after a valid manifest
        grpc::ClientContext context;
        Deadline(&context);
        wire::UploadReply reply;
        auto writer = stub_->UploadUpdate(&context, &reply);
        wire::UploadMessage m;
        m.mutable_manifest()->set_client_id("client-000");
        m.mutable_manifest()->set_session(session_);
        m.mutable_manifest()->set_round(1);
        m.mutable_manifest()->set_num_samples(10);
        m.mutable_manifest()->add_layers("head");
        // Drawn before sending: how far the writes get depends on the
        // server, the random sequence must not.
        const int n = 1 + rng_() % 4;
        std::vector<wire::UploadMessage> chunks(n);
        for (wire::UploadMessage& c : chunks) {
          if (!c.ParseFromString(RandomBytes(rng_() % 600))) {
            c.Clear();
            *c.mutable_chunk()->mutable_data() = RandomBytes(rng_() % 600);
          }
        }
        bool open = writer->Write(m);
        for (const wire::UploadMessage& c : chunks) {
          if (!open) break;
          open = writer->Write(c);
        }
        if (open) writer->WritesDone();
        Note(writer->Finish(), true, what + " random upload");
        break;
      }
    }
  }

  ModelWeights model_ = SmallModel();
  std::mt19937_64 rng_{20261125};
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<wire::Coordinator::Stub> stub_;
  std::string session_;
  std::map<std::string, int64_t> seen_;  // refusals by reason, client side
  int64_t oks_ = 0;
};

TEST_F(FuzzTest, ThousandsOfBadMessagesRefusedAndCommittedStateUnchanged) {
  const ModelWeights before = coordinator_->engine().global();
  const int64_t round_before = coordinator_->engine().committed_round();
  const ServiceStats stats_before = coordinator_->server().stats();
  const absl::Time start = absl::Now();
  int sent = 0;
  for (; sent < kMessages && absl::Now() - start < kBudget; ++sent) {
    if (rng_() % 2) {
      FuzzUpload(sent);
    } else {
      FuzzOther(sent);
    }
    if (HasFatalFailure()) return;
  }
  const absl::Duration took = absl::Now() - start;
  int64_t refused = 0;
  for (const auto& [reason, n] : seen_) refused += n;
  std::cout << "fuzz: " << sent << " messages in " << took << ", " << refused
            << " refused, " << oks_ << " accepted (own session's polls, "
            << "heartbeats, fetches, joins)\n";
  for (const auto& [reason, n] : seen_) std::cout << "  " << reason << ": " << n << "\n";
  EXPECT_GE(sent, 1000);

  // Still serving.
  wire::HeartbeatRequest hb;
  hb.set_client_id("client-000");
  hb.set_session(session_);
  wire::HeartbeatReply reply;
  grpc::ClientContext context;
  Deadline(&context);
  ASSERT_TRUE(stub_->Heartbeat(&context, hb, &reply).ok());
  EXPECT_EQ(reply.committed_round(), round_before);

  // Committed state bit-identical: weights, layer versions, round.
  EXPECT_EQ(coordinator_->engine().committed_round(), round_before);
  // Round 1 still waits for client-000's update (and client-001's).
  EXPECT_TRUE(coordinator_->engine().round_running());
  EXPECT_EQ(coordinator_->engine().TaskFor("client-000").kind, TaskKind::kTrain);
  ExpectBitIdentical(coordinator_->engine().global(), before);
  ExpectBitIdentical(coordinator_->engine().global(), SmallModel());
  EXPECT_TRUE(coordinator_->records().empty());

  // Every refusal the clients saw was counted under its reason.
  const ServiceStats stats = coordinator_->server().stats();
  for (const auto& [reason, n] : seen_) {
    const int64_t had =
        stats_before.refused.count(reason) ? stats_before.refused.at(reason) : 0;
    const int64_t now = stats.refused.count(reason) ? stats.refused.at(reason) : 0;
    EXPECT_EQ(now - had, n) << reason;
  }
  // A spread of reasons was exercised.
  for (const char* reason :
       {"bad_checksum", "truncated", "wrong_length", "unknown_layer",
        "unexpected_layer", "oversized_chunk", "bad_encoding", "stale_round",
        "unknown_session", "bad_token"}) {
    EXPECT_GE(seen_.count(reason) ? seen_.at(reason) : 0, 1) << reason;
  }
}

}  // namespace
}  // namespace layerfl
