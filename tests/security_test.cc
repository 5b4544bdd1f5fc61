// Per-client tokens, TLS and mutual TLS: a real coordinator server on
// 127.0.0.1:0, client daemons as threads over real gRPC channels, fake local
// work. The certificates (a CA, the server's for localhost/127.0.0.1, a
// client's, and a stranger CA's client) are made by `openssl` into a temp
// dir; without openssl the TLS tests skip.
#include <cmath>
#include <cstdlib>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "client/daemon/daemon.h"
#include "client/daemon/grpc_link.h"
#include "grpcpp/grpcpp.h"
#include "proto/layerfl.grpc.pb.h"
#include "server/round/round_engine.h"
#include "server/service/service.h"

namespace layerfl {
namespace {

namespace wire = ::layerfl::wire::v1;
using ::testing::HasSubstr;
using ::testing::StartsWith;

ModelWeights SmallModel() {
  ModelWeights m;
  for (const char* name : {"embed", "block0", "head"}) {
    Tensor32 t;
    t.name = absl::StrCat(name, ".w");
    t.shape = {32, 16};
    t.values.resize(32 * 16);
    for (size_t i = 0; i < t.values.size(); ++i) t.values[i] = 0.1f * std::sin(0.3f * i);
    m.layers.push_back({name, 0, {t}});
  }
  return m;
}

class FixedSelector : public LayerSelector {
 public:
  bool NeedsScores() const override { return false; }
  absl::StatusOr<SelectionOutcome> Select(
      const std::vector<SelectionCandidate>& candidates, int64_t) override {
    SelectionOutcome out;
    out.layers.assign(candidates.size(), {"block0", "head"});
    out.solver_status = "fixed";
    return out;
  }
  void OnCommitted(const std::vector<SelectionCandidate>&,
                   const SelectionOutcome&) override {}
  std::string SaveState() const override { return ""; }
  absl::Status RestoreState(const std::string&) override { return absl::OkStatus(); }
};

class HalfWork : public ClientWork {
 public:
  int64_t num_samples() const override { return 50; }
  absl::StatusOr<std::vector<double>> Score(const ModelWeights& global, int64_t,
                                            const std::string&, int) override {
    return std::vector<double>(global.layers.size(), 1.0);
  }
  absl::StatusOr<std::vector<LayerDelta>> Train(
      const ModelWeights& global, int64_t,
      const std::vector<std::string>& layers,
      const std::vector<int>&) override {
    std::vector<LayerDelta> out;
    for (const std::string& name : layers) {
      LayerDelta d;
      d.group = name;
      d.tensors = global.layers[global.Find(name)].tensors;
      for (Tensor32& t : d.tensors) {
        for (float& v : t.values) v *= 0.5f;
      }
      out.push_back(std::move(d));
    }
    return out;
  }
};

class Coordinator {
 public:
  explicit Coordinator(ServiceOptions options, int rounds = 2) {
    RoundEngineOptions o;
    o.rounds = rounds;
    o.min_clients = 2;
    o.selection_period = 1;
    o.round_deadline = absl::Seconds(20);
    RoundEngine::Deps deps;
    deps.clock = Clock::Real();
    deps.selector = &selector_;
    auto engine = RoundEngine::Create(o, SmallModel(), deps);
    EXPECT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    options.run_id = "security-test";
    options.tick = absl::Milliseconds(20);
    options.max_poll = absl::Seconds(1);
    options.heartbeat = absl::Milliseconds(500);
    options.linger = absl::Seconds(2);
    ServiceDeps sdeps;
    sdeps.engine = engine_.get();
    sdeps.clock = Clock::Real();
    sdeps.budget = [](const std::string&, double) -> absl::StatusOr<double> {
      return 2.0;
    };
    sdeps.log = std::getenv("LAYERFL_TEST_VERBOSE") ? &std::cerr : nullptr;
    auto server = CoordinatorServer::Start("127.0.0.1:0", options, sdeps);
    EXPECT_TRUE(server.ok()) << server.status();
    if (server.ok()) server_ = std::move(*server);
  }
  ~Coordinator() { server_.reset(); }

  std::string target() const { return absl::StrCat("127.0.0.1:", server_->port()); }
  RoundEngine& engine() { return *engine_; }
  CoordinatorServer& server() { return *server_; }

 private:
  FixedSelector selector_;
  std::unique_ptr<RoundEngine> engine_;
  std::unique_ptr<CoordinatorServer> server_;
};

absl::StatusOr<DaemonResult> RunDaemon(GrpcLinkOptions link, const std::string& id,
                                       absl::Duration give_up = absl::Seconds(8)) {
  link.rpc_timeout = absl::Seconds(5);
  std::unique_ptr<CoordinatorLink> l = CreateGrpcLink(link);
  DaemonOptions d;
  d.client_id = id;
  d.poll = absl::Milliseconds(500);
  d.backoff_initial = absl::Milliseconds(50);
  d.backoff_max = absl::Milliseconds(300);
  d.give_up = give_up;
  d.log = std::getenv("LAYERFL_TEST_VERBOSE") ? &std::cerr : nullptr;
  HalfWork work;
  std::atomic<bool> stop{false};
  return RunClientDaemon(d, work, *l, &stop);
}

// Two daemons to the end of the run; both must finish at `rounds`. The
// second uses `second_link` when given (its own certificate).
void ExpectRunCompletes(Coordinator& coordinator, const GrpcLinkOptions& link,
                        int rounds,
                        const GrpcLinkOptions* second_link = nullptr) {
  absl::StatusOr<DaemonResult> r[2] = {absl::UnknownError("not run"),
                                       absl::UnknownError("not run")};
  std::thread a([&] { r[0] = RunDaemon(link, "client-000"); });
  std::thread b([&] {
    r[1] = RunDaemon(second_link != nullptr ? *second_link : link,
                     "client-001");
  });
  a.join();
  b.join();
  for (const auto& x : r) {
    ASSERT_TRUE(x.ok()) << x.status();
    EXPECT_EQ(x->last_round, rounds);
  }
  ASSERT_TRUE(coordinator.server().Wait().ok());
  EXPECT_EQ(coordinator.engine().committed_round(), rounds);
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// ca, server (localhost, 127.0.0.1), client (signed by ca), stranger (a
// client certificate signed by another CA).
class Certs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::system("openssl version > /dev/null 2>&1") != 0) {
      skip_ = "openssl not found";
      return;
    }
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("layerfl-security-", getpid());
    std::filesystem::create_directories(dir_);
    const std::string d = dir_.string();
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::string script = absl::StrCat(
        "set -e; cd '", d, "'\n",
        "ca() { openssl req -x509 ", key, " -days 2 -subj \"/CN=$1\" -keyout $1.key -out $1.pem; }\n",
        "leaf() { openssl req ", key, " -subj \"/CN=$1\" -keyout $1.key -out $1.csr\n",
        "  printf 'subjectAltName=%s\\nextendedKeyUsage=%s\\n' \"$3\" \"$4\" > $1.ext\n",
        "  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 2 "
        "-extfile $1.ext -out $1.pem; }\n",
        "ca ca; ca otherca\n",
        "leaf server ca DNS:localhost,IP:127.0.0.1 serverAuth\n",
        "leaf client-000 ca DNS:client-000 clientAuth\n",
        "leaf client-001 ca DNS:client-001 clientAuth\n",
        "leaf stranger otherca DNS:layerfl-client clientAuth\n");
    std::ofstream(dir_ / "make.sh") << script;
    if (std::system(absl::StrCat("bash '", d, "/make.sh' > '", d, "/make.log' 2>&1").c_str()) != 0) {
      skip_ = "openssl failed: " + ReadFile(dir_ / "make.log");
    }
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }
  static std::string Pem(const std::string& name) { return ReadFile(dir_ / name); }

  ServiceOptions ServerTlsOptions(bool mutual) {
    ServiceOptions o;
    o.wait_for_clients = 2;
    o.tls.cert_pem = Pem("server.pem");
    o.tls.key_pem = Pem("server.key");
    if (mutual) o.tls.client_ca_pem = Pem("ca.pem");
    return o;
  }
  GrpcLinkOptions Link(const Coordinator& c, const std::string& client) {
    GrpcLinkOptions link;
    link.target = c.target();
    link.tls.enabled = true;
    link.tls.ca_pem = Pem("ca.pem");
    if (!client.empty()) {
      link.tls.cert_pem = Pem(client + ".pem");
      link.tls.key_pem = Pem(client + ".key");
    }
    return link;
  }

  static inline std::filesystem::path dir_;
  static inline std::string skip_;
};

TEST_F(Certs, RunOverTlsCompletes) {
  Coordinator coordinator(ServerTlsOptions(false));
  ExpectRunCompletes(coordinator, Link(coordinator, ""), 2);
}

TEST_F(Certs, RunOverMutualTlsCompletes) {
  Coordinator coordinator(ServerTlsOptions(true));
  GrpcLinkOptions links[2] = {Link(coordinator, "client-000"),
                              Link(coordinator, "client-001")};
  for (GrpcLinkOptions& link : links) {
    link.target = absl::StrCat("localhost:", coordinator.server().port());
    link.tls.server_name = "localhost";
  }
  ExpectRunCompletes(coordinator, links[0], 2, &links[1]);
}


// Join over a channel with `credentials`; the status.
grpc::Status TryJoin(const std::string& target,
                     std::shared_ptr<grpc::ChannelCredentials> credentials,
                     const std::string& id = "client-000",
                     const std::string& token = "") {
  auto stub = wire::Coordinator::NewStub(grpc::CreateChannel(target, credentials));
  wire::JoinRequest join;
  join.set_client_id(id);
  join.set_token(token);
  join.set_num_samples(10);
  wire::JoinReply reply;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  return stub->Join(&context, join, &reply);
}

// With mutual TLS a certificate is one client: client-001's certificate
// joins as client-001 only.
TEST_F(Certs, MutualTlsBindsTheClientIdToItsCertificate) {
  Coordinator coordinator(ServerTlsOptions(true));
  grpc::SslCredentialsOptions cert001;
  cert001.pem_root_certs = Pem("ca.pem");
  cert001.pem_cert_chain = Pem("client-001.pem");
  cert001.pem_private_key = Pem("client-001.key");
  const grpc::Status taken =
      TryJoin(coordinator.target(), grpc::SslCredentials(cert001), "client-000");
  EXPECT_EQ(taken.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(taken.error_message(),
              HasSubstr("bad_token: client 'client-000' presented a "
                        "certificate for ['client-001']"));
  const grpc::Status own =
      TryJoin(coordinator.target(), grpc::SslCredentials(cert001), "client-001");
  EXPECT_TRUE(own.ok()) << own.error_message();
}

TEST_F(Certs, MutualTlsRefusesClientsWithoutAValidCertificate) {
  Coordinator coordinator(ServerTlsOptions(true));
  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = Pem("ca.pem");
  EXPECT_FALSE(TryJoin(coordinator.target(), grpc::SslCredentials(no_cert)).ok());
  grpc::SslCredentialsOptions stranger = no_cert;
  stranger.pem_cert_chain = Pem("stranger.pem");
  stranger.pem_private_key = Pem("stranger.key");
  EXPECT_FALSE(TryJoin(coordinator.target(), grpc::SslCredentials(stranger)).ok());
  EXPECT_FALSE(TryJoin(coordinator.target(), grpc::InsecureChannelCredentials()).ok());
  grpc::SslCredentialsOptions good = no_cert;
  good.pem_cert_chain = Pem("client-000.pem");
  good.pem_private_key = Pem("client-000.key");
  const grpc::Status ok = TryJoin(coordinator.target(), grpc::SslCredentials(good));
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  // The daemon without a certificate gives up (it never reaches the service).
  GrpcLinkOptions link = Link(coordinator, "");
  absl::StatusOr<DaemonResult> r = RunDaemon(link, "client-001", absl::Seconds(1));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("TLS is on")) << r.status();
}

TEST_F(Certs, TlsServerRefusesAPlaintextClientAndAnUntrustedServerIsRefused) {
  Coordinator coordinator(ServerTlsOptions(false));
  EXPECT_FALSE(TryJoin(coordinator.target(), grpc::InsecureChannelCredentials()).ok());
  grpc::SslCredentialsOptions wrong_ca;
  wrong_ca.pem_root_certs = Pem("otherca.pem");
  EXPECT_FALSE(TryJoin(coordinator.target(), grpc::SslCredentials(wrong_ca)).ok());
}

TEST(ClientTokensTest, EachClientMustPresentItsOwnToken) {
  ServiceOptions options;
  options.wait_for_clients = 10;  // no round starts
  options.wait_for_clients_timeout = absl::Hours(1);
  options.client_tokens = {{"client-000", "alpha"}, {"client-001", "beta"}};
  Coordinator coordinator(options);
  auto insecure = grpc::InsecureChannelCredentials();
  for (const auto& [id, token] :
       {std::pair<std::string, std::string>{"client-000", "beta"},
        {"client-000", ""},
        {"client-000", "alphaX"},
        {"client-009", "alpha"},
        {"", "alpha"}}) {
    const grpc::Status s = TryJoin(coordinator.target(), insecure, id, token);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << id << " " << token;
    EXPECT_THAT(s.error_message(), StartsWith("bad_token: ")) << id << " " << token;
  }
  EXPECT_TRUE(TryJoin(coordinator.target(), insecure, "client-000", "alpha").ok());
  EXPECT_TRUE(TryJoin(coordinator.target(), insecure, "client-001", "beta").ok());
  EXPECT_EQ(coordinator.server().stats().refused.at("bad_token"), 5);
}

TEST(ClientTokensTest, FileParsing) {
  auto t = ParseClientTokens("# ids and tokens\nclient-000 alpha\n\n  client-001\tbeta  # b\n",
                             "tokens.txt");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, (std::map<std::string, std::string>{{"client-000", "alpha"},
                                                    {"client-001", "beta"}}));
  auto bad = ParseClientTokens("client-000 alpha\n# c\nclient-001\n", "tokens.txt");
  EXPECT_THAT(std::string(bad.status().message()), StartsWith("tokens.txt:3: "));
  auto three = ParseClientTokens("a b c\n", "f");
  EXPECT_THAT(std::string(three.status().message()), StartsWith("f:1: "));
  auto dup = ParseClientTokens("a x\na y\n", "f");
  EXPECT_THAT(std::string(dup.status().message()), StartsWith("f:2: "));
  EXPECT_FALSE(ParseClientTokens("# nothing\n", "f").ok());
}

TEST(ClientTokensTest, SharedAndPerClientTokensAreExclusive) {
  ServiceOptions o;
  o.run_id = "x";
  o.token = "shared";
  o.client_tokens = {{"a", "b"}};
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("exclusive"));
  o.token.clear();
  EXPECT_TRUE(o.Validate().ok());
  o.tls.cert_pem = "x";
  EXPECT_FALSE(o.Validate().ok());  // no key
}

// Runs `command` with stderr captured; exit code and stderr.
std::pair<int, std::string> RunCommand(const std::string& command) {
  const std::filesystem::path err = std::filesystem::temp_directory_path() /
                                    absl::StrCat("layerfl-security-err-", getpid());
  const int status = std::system(absl::StrCat(command, " 2> '", err.string(), "'").c_str());
  std::string text = ReadFile(err);
  std::filesystem::remove(err);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

TEST(SecurityFlagsTest, BadFilesAndFlagCombinationsExitTwoNamingThem) {
  const std::string bin = LAYERFL_BIN_DIR;
  const std::string config =
      absl::StrCat(" --config ", LAYERFL_SOURCE_DIR, "/configs/distributed.yaml");
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    absl::StrCat("layerfl-security-flags-", getpid());
  std::filesystem::create_directories(dir);
  const std::string tokens = (dir / "tokens.txt").string();
  std::ofstream(tokens) << "# comment\nclient-000 alpha\nclient-001\n";
  const std::string coordinator = bin + "/layerfl-coordinator" + config;
  const std::string client = bin + "/layerfl-client" + config + " --partition 0";
  for (const auto& [command, expect] :
       {std::pair<std::string, std::string>{
            coordinator + " --tokens_file " + tokens, tokens + ":3:"},
        {coordinator + " --tokens_file /no/such/tokens", "--tokens_file: cannot read '/no/such/tokens'"},
        {coordinator + " --tokens_file " + tokens + " --token x", "--tokens_file and --token/--token_file"},
        {coordinator + " --tls_cert /no/such.pem --tls_key /no/such.key", "--tls_cert: cannot read '/no/such.pem'"},
        {coordinator + " --tls_client_ca /no/ca.pem", "--tls_client_ca: cannot read '/no/ca.pem'"},
        {client + " --tls_ca /no/ca.pem", "--tls_ca: cannot read '/no/ca.pem'"},
        {client + " --tls_ca " + tokens + " --tls_cert /no/c.pem --tls_key " + tokens,
         "--tls_cert: cannot read '/no/c.pem'"}}) {
    const auto [code, err] = RunCommand(command);
    EXPECT_EQ(code, 2) << command << "\n" << err;
    EXPECT_THAT(err, HasSubstr(expect)) << command;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace layerfl
