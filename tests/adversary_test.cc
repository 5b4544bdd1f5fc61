// The coordinator's service attacked as a malicious client would (issue 22),
// each attack over a real gRPC channel against an in-process coordinator on
// 127.0.0.1: forged and flooded logs, unbounded upload streams, a
// certificate or token used for another client's id, serving beyond
// loopback without authentication.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "common/config/config.h"
#include "proto/layerfl.grpc.pb.h"
#include "tests/service_fixture.h"

namespace layerfl {
namespace {

namespace wire = ::layerfl::wire::v1;
using namespace ::layerfl::fixture;  // NOLINT(build/namespaces)
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kToken[] = "secret";

// The process's resident memory, from /proc/self/status.
int64_t ResidentBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "VmRSS:")) {
      return std::stoll(line.substr(6)) * 1024;
    }
  }
  return -1;
}

// A thread-safe sink for the service's log.
class LogSink : public std::stringbuf {};

std::unique_ptr<wire::Coordinator::Stub> Stub(const std::string& target) {
  return wire::Coordinator::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
}

template <typename Request, typename Reply, typename Call>
grpc::Status Unary(Call call, const Request& request, Reply* reply) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(5));
  return call(&context, request, reply);
}

absl::StatusOr<std::string> Join(wire::Coordinator::Stub& stub,
                                 const std::string& id,
                                 const std::string& token) {
  wire::JoinRequest request;
  request.set_client_id(id);
  request.set_token(token);
  request.set_num_samples(10);
  wire::JoinReply reply;
  grpc::Status s = Unary(
      [&](grpc::ClientContext* c, const wire::JoinRequest& r,
          wire::JoinReply* out) { return stub.Join(c, r, out); },
      request, &reply);
  if (!s.ok()) return absl::UnknownError(s.error_message());
  return reply.session();
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

TEST(AdversaryTest, IdsAndReasonsCannotForgeOrFloodTheLog) {
  std::ostringstream log;
  ServiceOptions options = FastOptions(10);  // no round starts
  options.token = kToken;
  options.wait_for_clients_timeout = absl::Hours(1);
  auto coordinator = std::make_unique<Coordinator>(
      EngineOptions(1, absl::Seconds(60)), options, "127.0.0.1:0", nullptr,
      SmallModel(), &log);
  auto stub = Stub(coordinator->target());

  // A Join with a wrong token whose id forges two log lines.
  const std::string forged =
      "evil\n12:00:00.000 coordinator: round 20 committed (attempt 0): 8 of 8 "
      "clients, accuracy 0.9999\n12:00:00.001 coordinator: the run finished";
  EXPECT_FALSE(Join(*stub, forged, "wrong").ok());
  // A Join with the right token and such an id is refused too.
  absl::StatusOr<std::string> bad_id = Join(*stub, forged, kToken);
  ASSERT_FALSE(bad_id.ok());
  EXPECT_THAT(std::string(bad_id.status().message()),
              StartsWith("bad_request: client_id 'evil\\n12:00"));

  // 20 heartbeats with 2 MB ids.
  const std::string huge(2 << 20, 'x');
  for (int i = 0; i < 20; ++i) {
    wire::HeartbeatRequest request;
    request.set_client_id(huge);
    request.set_session("no-such-session");
    wire::HeartbeatReply reply;
    EXPECT_FALSE(Unary(
                     [&](grpc::ClientContext* c,
                         const wire::HeartbeatRequest& r,
                         wire::HeartbeatReply* out) {
                       return stub->Heartbeat(c, r, out);
                     },
                     request, &reply)
                     .ok());
  }

  // A joined client leaves with a reason that forges a line, and another
  // with a kind of its own.
  absl::StatusOr<std::string> session = Join(*stub, "client-000", kToken);
  ASSERT_TRUE(session.ok()) << session.status();
  absl::StatusOr<std::string> other = Join(*stub, "client-001", kToken);
  ASSERT_TRUE(other.ok()) << other.status();
  for (const auto& [id, s, reason] :
       {std::tuple<std::string, std::string, std::string>{
            "client-000", *session,
            "work_failed: oom\n12:00:00.002 coordinator: the run finished"},
        {"client-001", *other, "kind-" + std::string(5000, 'k') + ": x"}}) {
    wire::LeaveRequest request;
    request.set_client_id(id);
    request.set_session(s);
    request.set_reason(reason);
    wire::LeaveReply reply;
    EXPECT_TRUE(Unary(
                    [&](grpc::ClientContext* c, const wire::LeaveRequest& r,
                        wire::LeaveReply* out) {
                      return stub->Leave(c, r, out);
                    },
                    request, &reply)
                    .ok());
  }
  const ServiceStats stats = coordinator->server().stats();
  EXPECT_EQ(stats.refused.at("unknown_session"), 20);
  EXPECT_EQ(stats.leave_reasons,
            (std::map<std::string, int64_t>{{"other", 1}, {"work_failed", 1}}));
  coordinator.reset();

  const std::string text = log.str();
  // Every line is one of the coordinator's own: none begins with a forged
  // time stamp after an injected newline.
  for (const std::string& line : Lines(text)) {
    EXPECT_THAT(line, Not(StartsWith("12:00:00.00"))) << line;
  }
  EXPECT_THAT(text, HasSubstr("'evil\\n12:00:00.000 coordinator: round 20 "));
  EXPECT_THAT(text, HasSubstr("'work_failed: oom\\n12:00:00.002"));
  // 40 MiB of ids arrived; the log holds their first 64 bytes, at most 5
  // refusals a reason every 10 s.
  EXPECT_LT(text.size(), 16u << 10) << text.size();
  std::cout << "40 MiB of ids and forged lines: " << text.size()
            << " bytes of log\n";
  EXPECT_THAT(text, HasSubstr(absl::StrCat("'", std::string(64, 'x'),
                                           "'...(+", (2 << 20) - 64,
                                           " bytes)")));
  int heartbeat_lines = 0;
  for (const std::string& line : Lines(text)) {
    if (absl::StrContains(line, "refused heartbeat")) ++heartbeat_lines;
  }
  EXPECT_EQ(heartbeat_lines, 5);
}

// A model whose training layers (block1, head: FakeSelector's round 1) hold
// 4 MiB each.
ModelWeights BigModel() {
  ModelWeights m;
  m.layers.push_back({"embed", 0, {MakeTensor("embed.w", {64, 64}, 0.1f)}});
  for (const char* name : {"block0", "block1", "head"}) {
    m.layers.push_back(
        {name, 0, {MakeTensor(absl::StrCat(name, ".w"), {1024, 1024}, 0.01f)}});
  }
  return m;
}

struct Client {
  std::string id, session;
};

// Joins `n` raw clients and answers round 1's scoring, so that each holds
// the task to train block1 and head.
std::vector<Client> JoinAndScore(wire::Coordinator::Stub& stub, int n) {
  std::vector<Client> clients;
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<std::string> s = Join(stub, Id(i), kToken);
    EXPECT_TRUE(s.ok()) << s.status();
    clients.push_back({Id(i), s.ok() ? *s : ""});
  }
  for (const Client& c : clients) {
    for (int attempt = 0; attempt < 50; ++attempt) {
      wire::GetTaskRequest poll;
      poll.set_client_id(c.id);
      poll.set_session(c.session);
      poll.set_wait_ms(200);
      wire::TaskReply task;
      EXPECT_TRUE(Unary(
                      [&](grpc::ClientContext* ctx,
                          const wire::GetTaskRequest& r, wire::TaskReply* out) {
                        return stub.GetTask(ctx, r, out);
                      },
                      poll, &task)
                      .ok());
      if (task.kind() != wire::TaskReply::SCORE) continue;
      wire::ScoresRequest scores;
      scores.set_client_id(c.id);
      scores.set_session(c.session);
      scores.set_round(1);
      for (int l = 0; l < 4; ++l) scores.add_scores(1.0 + l);
      wire::ScoresReply ok;
      EXPECT_TRUE(Unary(
                      [&](grpc::ClientContext* ctx,
                          const wire::ScoresRequest& r, wire::ScoresReply* out) {
                        return stub.ReportScores(ctx, r, out);
                      },
                      scores, &ok)
                      .ok());
      break;
    }
  }
  return clients;
}

// Opens an upload stream, sends its first message and waits (without
// half-closing) for the coordinator to end it, at most `wait`.
template <typename Message>
grpc::Status OpenAndHold(
    const std::function<std::unique_ptr<grpc::ClientWriter<Message>>(
        grpc::ClientContext*, wire::UploadReply*)>& open,
    const Message& first, absl::Duration wait) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + wait));
  wire::UploadReply reply;
  std::unique_ptr<grpc::ClientWriter<Message>> writer = open(&context, &reply);
  writer->Write(first);
  return writer->Finish();
}

class UploadBoundsTest : public ::testing::Test {
 protected:
  void Start(int64_t cap_bytes) {
    ServiceOptions options = FastOptions(3);
    options.token = kToken;
    options.client_timeout = absl::Minutes(5);
    options.max_upload_bytes_in_flight = cap_bytes;
    coordinator_ = std::make_unique<Coordinator>(
        EngineOptions(1, absl::Seconds(120)), options, "127.0.0.1:0", nullptr,
        BigModel());
    stub_ = Stub(coordinator_->target());
    clients_ = JoinAndScore(*stub_, 3);
  }
  wire::UploadMessage Manifest(const Client& c) {
    wire::UploadMessage m;
    wire::UploadManifest* manifest = m.mutable_manifest();
    manifest->set_client_id(c.id);
    manifest->set_session(c.session);
    manifest->set_round(1);
    manifest->set_num_samples(10);
    manifest->add_layers("block1");
    manifest->add_layers("head");
    manifest->set_encoding(wire::FLOAT32);
    return m;
  }
  wire::MaskedMessage MaskedHeader(const Client& c) {
    wire::MaskedMessage m;
    wire::MaskedHeader* h = m.mutable_header();
    h->set_client_id(c.id);
    h->set_session(c.session);
    h->set_round(1);
    h->add_layer_sizes(1 << 20);
    h->add_layer_sizes(1 << 20);
    return m;
  }
  std::function<std::unique_ptr<grpc::ClientWriter<wire::UploadMessage>>(
      grpc::ClientContext*, wire::UploadReply*)>
  Plain() {
    return [this](grpc::ClientContext* c, wire::UploadReply* r) {
      return stub_->UploadUpdate(c, r);
    };
  }
  std::function<std::unique_ptr<grpc::ClientWriter<wire::MaskedMessage>>(
      grpc::ClientContext*, wire::UploadReply*)>
  Masked() {
    return [this](grpc::ClientContext* c, wire::UploadReply* r) {
      return stub_->UploadMasked(c, r);
    };
  }

  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<wire::Coordinator::Stub> stub_;
  std::vector<Client> clients_;
};

// 50 concurrent masked streams from one session in a plain run, each
// sending 8 MiB and never half-closing: refused at their header, nothing of
// them buffered.
TEST_F(UploadBoundsTest, MaskedStreamsInAPlainRunAreRefusedAtTheirHeader) {
  Start(int64_t{1} << 30);
  // The 8 chunks of 1 MiB every stream sends after its header (shared).
  std::vector<wire::MaskedMessage> chunks;
  for (int layer = 0; layer < 2; ++layer) {
    for (int part = 0; part < 4; ++part) {
      wire::MaskedMessage m;
      m.mutable_chunk()->set_layer(layer);
      m.mutable_chunk()->set_offset(part * (1 << 18));
      m.mutable_chunk()->mutable_values()->Resize(1 << 18, 7u);
      chunks.push_back(std::move(m));
    }
  }
  const int64_t before = ResidentBytes();
  std::vector<grpc::Status> results(50);
  std::vector<std::thread> threads;
  std::atomic<int> written{0};
  absl::Notification measured;
  for (int i = 0; i < 50; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
      wire::UploadReply reply;
      auto writer = stub_->UploadMasked(&context, &reply);
      if (writer->Write(MaskedHeader(clients_[0]))) {
        // The header's answer has time to arrive: the chunks of a refused
        // stream are then never serialized here, and the growth measured
        // is the coordinator's.
        absl::SleepFor(absl::Milliseconds(200));
        for (const wire::MaskedMessage& c : chunks) {
          if (!writer->Write(c)) break;
        }
      }
      ++written;
      measured.WaitForNotificationWithTimeout(absl::Seconds(15));
      results[i] = writer->Finish();
    });
  }
  while (written.load() < 50) absl::SleepFor(absl::Milliseconds(20));
  absl::SleepFor(absl::Milliseconds(300));
  const int64_t during = ResidentBytes();
  measured.Notify();
  for (std::thread& t : threads) t.join();
  for (const grpc::Status& s : results) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    EXPECT_THAT(s.error_message(), StartsWith("protocol: "));
  }
  // Before: the coordinator buffered every stream's 8 MiB (400 MiB for 50).
  // Bound: 64 MiB of growth for the 50 calls' own state and the chunks
  // already in flight when each was refused (measured: 25 MiB).
  EXPECT_LT(during - before, 64 << 20) << (during - before) / (1 << 20)
                                       << " MiB";
  std::cout << "50 masked streams of 8 MiB: coordinator RSS +"
            << (during - before) / (1 << 20) << " MiB\n";
  EXPECT_EQ(coordinator_->server().stats().refused.at("protocol"), 50);
}

// 50 concurrent plain streams from one session: one admitted, 49 refused by
// the one-stream rule; the other sessions' streams fill the cap of bytes in
// flight and the third is told busy.
TEST_F(UploadBoundsTest, OneStreamPerSessionAndACapOnBytesInFlight) {
  Start(int64_t{20} << 20);  // two 8 MiB updates fit, a third does not
  const int64_t before = ResidentBytes();
  std::vector<grpc::Status> results(50);
  std::vector<std::thread> threads;
  for (int i = 0; i < 50; ++i) {
    threads.emplace_back([&, i] {
      results[i] = OpenAndHold<wire::UploadMessage>(
          Plain(), Manifest(clients_[0]), absl::Seconds(3));
    });
  }
  absl::SleepFor(absl::Milliseconds(500));
  grpc::Status second, third;
  std::thread held([&] {
    second = OpenAndHold<wire::UploadMessage>(Plain(), Manifest(clients_[1]),
                                              absl::Seconds(2));
  });
  absl::SleepFor(absl::Milliseconds(500));
  third = OpenAndHold<wire::UploadMessage>(Plain(), Manifest(clients_[2]),
                                           absl::Seconds(1));
  held.join();
  const int64_t during = ResidentBytes();
  for (std::thread& t : threads) t.join();
  int admitted = 0, duplicate = 0;
  for (const grpc::Status& s : results) {
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) ++admitted;
    if (absl::StartsWith(s.error_message(), "duplicate: ")) ++duplicate;
  }
  EXPECT_EQ(admitted, 1);
  EXPECT_EQ(duplicate, 49);
  // client-001's stream was admitted (held until its deadline); client-002's
  // came while client-000's and client-001's 16 MiB filled the cap.
  EXPECT_EQ(second.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << second.error_message();
  EXPECT_EQ(third.error_code(), grpc::StatusCode::UNAVAILABLE)
      << third.error_message();
  EXPECT_THAT(third.error_message(), StartsWith("busy: "));
  EXPECT_LT(during - before, 32 << 20);
  std::cout << "50 plain streams from one session + 2 others: RSS +"
            << (during - before) / (1 << 20) << " MiB\n";
}

// A stream that never sends its first message is cancelled by the server
// after stream_timeout.
TEST(StreamDeadlineTest, ASilentStreamIsCancelledAtItsDeadline) {
  ServiceOptions options = FastOptions(10);
  options.stream_timeout = absl::Seconds(1);
  Coordinator coordinator(EngineOptions(1, absl::Seconds(60)), options);
  auto stub = Stub(coordinator.target());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  wire::UploadReply reply;
  const absl::Time start = absl::Now();
  std::unique_ptr<grpc::ClientWriter<wire::UploadMessage>> writer =
      stub->UploadUpdate(&context, &reply);
  const grpc::Status s = writer->Finish();
  const absl::Duration took = absl::Now() - start;
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_GE(took, absl::Milliseconds(900));
  EXPECT_LT(took, absl::Seconds(3)) << took;
  std::cout << "silent stream cancelled after " << took << "\n";
}

TEST(ListenSecurityTest, BeyondLoopbackNeedsATokenOrMutualTls) {
  ServiceOptions o;
  EXPECT_TRUE(CheckListenSecurity("127.0.0.1:0", o).ok());
  EXPECT_TRUE(CheckListenSecurity("localhost:50051", o).ok());
  EXPECT_TRUE(CheckListenSecurity("[::1]:50051", o).ok());
  EXPECT_TRUE(CheckListenSecurity("127.3.4.5:1", o).ok());
  for (const char* address :
       {"0.0.0.0:50051", "[::]:50051", "10.0.0.5:1", "coordinator:50051",
        "127.0.0.1.example.com:1", "127.evil:1", "[::ffff:10.0.0.1]:1"}) {
    const absl::Status s = CheckListenSecurity(address, o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_THAT(std::string(s.message()), HasSubstr("--tokens_file"));
  }
  ServiceOptions token = o;
  token.token = "t";
  EXPECT_TRUE(CheckListenSecurity("0.0.0.0:1", token).ok());
  ServiceOptions tokens = o;
  tokens.client_tokens = {{"a", "b"}};
  EXPECT_TRUE(CheckListenSecurity("0.0.0.0:1", tokens).ok());
  ServiceOptions mtls = o;
  mtls.tls.client_ca_pem = "ca";
  EXPECT_TRUE(CheckListenSecurity("0.0.0.0:1", mtls).ok());
  ServiceOptions tls_only = o;
  tls_only.tls.cert_pem = "cert";  // TLS without client certificates
  EXPECT_FALSE(CheckListenSecurity("0.0.0.0:1", tls_only).ok());
  ServiceOptions insecure = o;
  insecure.insecure = true;
  EXPECT_TRUE(CheckListenSecurity("0.0.0.0:1", insecure).ok());
}

TEST(ListenSecurityTest, TheCoordinatorOnAllAddressesWithoutAuthExitsTwo) {
  const std::string command = absl::StrCat(
      LAYERFL_BIN_DIR, "/layerfl-coordinator --config ", LAYERFL_SOURCE_DIR,
      "/configs/distributed.yaml --listen 0.0.0.0:0 --metrics_listen '' 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_THAT(out, HasSubstr("--listen: '0.0.0.0:0' is reachable beyond"));
  EXPECT_THAT(out, HasSubstr("--tokens_file"));
  EXPECT_THAT(out, HasSubstr("--insecure"));
}

// A client that must only ever send masked updates refuses a run whose
// coordinator says it does not aggregate securely (exit 2, naming why),
// before it loads data or joins.
TEST(SecureRunTest, AClientRequiringSecureAggregationRefusesAPlainRun) {
  absl::StatusOr<RunConfig> run = LoadRunConfig(
      std::string(LAYERFL_SOURCE_DIR) + "/configs/distributed.yaml");
  ASSERT_TRUE(run.ok()) << run.status();
  ServiceOptions options = FastOptions(10);
  options.run_config_yaml = ServedRunConfigYaml(*run);
  Coordinator coordinator(EngineOptions(1, absl::Seconds(60)), options);
  const std::string command = absl::StrCat(
      LAYERFL_BIN_DIR, "/layerfl-client --coordinator ", coordinator.target(),
      " --partition 0 --require_secure_aggregation --give_up_s 10 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_THAT(out, HasSubstr("require_secure_aggregation: the run does not "
                             "aggregate securely"));
  EXPECT_TRUE(coordinator.server().stats().clients.empty());
}

// With per-client tokens, client-000's token opens no session for
// client-001, and client-001's live session survives the attempt.
TEST(IdentityTest, APerClientTokenCannotTakeOverAnotherClientsSession) {
  ServiceOptions options = FastOptions(10);
  options.wait_for_clients_timeout = absl::Hours(1);
  options.client_tokens = {{"client-000", "alpha"}, {"client-001", "beta"}};
  Coordinator coordinator(EngineOptions(1, absl::Seconds(60)), options);
  auto stub = Stub(coordinator.target());
  absl::StatusOr<std::string> victim = Join(*stub, "client-001", "beta");
  ASSERT_TRUE(victim.ok()) << victim.status();
  absl::StatusOr<std::string> taken = Join(*stub, "client-001", "alpha");
  ASSERT_FALSE(taken.ok());
  EXPECT_THAT(std::string(taken.status().message()), StartsWith("bad_token"));
  wire::HeartbeatRequest beat;
  beat.set_client_id("client-001");
  beat.set_session(*victim);
  wire::HeartbeatReply reply;
  EXPECT_TRUE(Unary(
                  [&](grpc::ClientContext* c, const wire::HeartbeatRequest& r,
                      wire::HeartbeatReply* out) {
                    return stub->Heartbeat(c, r, out);
                  },
                  beat, &reply)
                  .ok());
}


// Identities for `ids`: each one's Ed25519 key and everyone's public keys,
// as an operator would hand them out.
std::map<std::string, std::shared_ptr<const SecAggIdentity>> Identities(
    const std::vector<std::string>& ids) {
  EXPECT_GE(sodium_init(), 0);
  std::map<std::string, std::string> seeds;
  std::string peers;
  const auto hex = [](const unsigned char* b, size_t n) {
    std::string out(2 * n + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), b, n);
    out.pop_back();
    return out;
  };
  for (const std::string& id : ids) {
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    unsigned char seed[crypto_sign_SEEDBYTES];
    randombytes_buf(seed, sizeof(seed));
    crypto_sign_seed_keypair(pk, sk, seed);
    seeds[id] = hex(seed, sizeof(seed));
    absl::StrAppend(&peers, id, " ", hex(pk, sizeof(pk)), "\n");
  }
  std::map<std::string, std::shared_ptr<const SecAggIdentity>> out;
  for (const std::string& id : ids) {
    absl::StatusOr<SecAggIdentity> i =
        ParseSecAggIdentity(id, seeds[id], "key", peers, "peers");
    EXPECT_TRUE(i.ok()) << i.status();
    out[id] = std::make_shared<const SecAggIdentity>(*i);
  }
  return out;
}

// Secure aggregation with signed adverts (every client holds its identity
// key and the others' public keys), client-002 killed after sharing its
// keys of round 1 and restarted: the new process holds no key state for
// round 1, so it leaves that round (secagg_state_lost) instead of
// uploading, and takes part in round 2. No plain update reaches the
// coordinator, nothing is held or spilled, and both rounds commit.
TEST(SecureRunTest, AClientRestartedAfterSharingNeverSendsAPlainUpdate) {
  const auto identities = Identities({Id(0), Id(1), Id(2)});
  std::ostringstream log;
  RoundEngineOptions engine = EngineOptions(2, absl::Seconds(30));
  engine.secagg.enabled = true;
  engine.secagg.threshold = 0.66;
  engine.aggregation.weight_by_samples = false;
  ServiceOptions options = FastOptions(3);
  options.secure_aggregation = true;
  options.max_held_bytes = 0;  // anything held would be spilled
  const std::string spill =
      absl::StrCat(::testing::TempDir(), "/secure_spill_", getpid());
  std::filesystem::remove_all(spill);
  options.spill_dir = spill;
  auto coordinator = std::make_unique<Coordinator>(
      engine, options, "127.0.0.1:0", nullptr, SmallModel(), &log);
  const auto secure = [&identities](DaemonOptions& d) {
    d.secure_aggregation = true;
    d.secagg_identity = identities.at(d.client_id);
  };
  std::vector<std::unique_ptr<DaemonThread>> daemons;
  for (int i = 0; i < 2; ++i) {
    daemons.push_back(std::make_unique<DaemonThread>(
        coordinator->target(),
        std::make_unique<FakeWork>(Id(i), Samples(i), absl::ZeroDuration()),
        Id(i), secure));
  }
  auto killed = std::make_unique<DaemonThread>(
      coordinator->target(),
      std::make_unique<FakeWork>(Id(2), Samples(2), absl::ZeroDuration()),
      Id(2), [&](DaemonOptions& d) {
        secure(d);
        d.exit_after_shares_round = 1;
      });
  const absl::StatusOr<DaemonResult> first = killed->JoinWithin(absl::Seconds(30));
  EXPECT_EQ(first.status().code(), absl::StatusCode::kAborted) << first.status();
  daemons.push_back(std::make_unique<DaemonThread>(
      coordinator->target(),
      std::make_unique<FakeWork>(Id(2), Samples(2), absl::ZeroDuration()),
      Id(2), secure));
  for (auto& d : daemons) {
    const absl::StatusOr<DaemonResult> r = d->JoinWithin(absl::Seconds(60));
    EXPECT_TRUE(r.ok()) << r.status();
  }
  ASSERT_TRUE(coordinator->server().Wait().ok());
  const std::vector<RoundRecord> records = coordinator->records();
  ASSERT_EQ(records.size(), 2u);
  const ServiceStats stats = coordinator->server().stats();
  EXPECT_EQ(stats.refused.count("protocol"), 0u)
      << "a plain update reached the coordinator";
  EXPECT_EQ(stats.spilled, 0);
  EXPECT_EQ(stats.peak_held_bytes, 0);
  for (const TransferRecord& u : stats.uploads) {
    EXPECT_FALSE(u.client == Id(2) && u.round == 1) << u.outcome;
  }
  const std::map<std::string, int64_t> leaves = stats.leave_reasons;
  EXPECT_EQ(leaves.count("secagg_state_lost") ? leaves.at("secagg_state_lost")
                                               : 0,
            1);
  // Round 1 summed client-000's and client-001's masked updates; round 2
  // all three.
  int contributed[2] = {0, 0};
  for (int r = 0; r < 2; ++r) {
    for (const ClientRoundRecord& c : records[r].clients) {
      contributed[r] += c.contributed;
      if (c.id == Id(2)) {
        EXPECT_EQ(c.contributed, r == 1) << r;
      }
    }
  }
  EXPECT_EQ(contributed[0], 2);
  EXPECT_EQ(contributed[1], 3);
  coordinator.reset();
  EXPECT_THAT(log.str(), HasSubstr("leave client-002 ('secagg_state_lost: "));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(spill, ec)) {
    ADD_FAILURE() << "left on disk: " << entry.path();
  }
}

}  // namespace
}  // namespace layerfl
