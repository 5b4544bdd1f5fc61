// What an operator runs against a live coordinator, with the real binaries
// and real components on loopback: Debian's Prometheus server scrapes the
// coordinator's /metrics (with the HTTP token) during a federated run and
// its query API shows the committed rounds, accuracy and bytes; headless
// Chromium opens the dashboard during the run and renders the committed
// round, a client id and the accuracy chart (the screenshot is kept in the
// test's output directory). The HTTP listener refuses requests without the
// token. Each part is skipped with its reason where its package is missing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/process_fixture.h"

namespace layerfl {
namespace {

namespace fs = std::filesystem;
using fixture::Process;
using fixture::ReadFile;
using ::testing::HasSubstr;

const std::string kBin = LAYERFL_BIN_DIR;
const std::string kSource = LAYERFL_SOURCE_DIR;
const std::string kToken = "op-token-4f1c";
constexpr int kRounds = 30;  // long enough (~10 s) to look at it while it runs

// A free TCP port on 127.0.0.1 (bound, then released for the child).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string WaitForLine(const std::string& path, absl::Time deadline) {
  while (!fs::exists(path) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const std::string text = ReadFile(path);
  return text.substr(0, text.find('\n'));
}

// The coordinator of a short run (configs/distributed_test.yaml, kRounds
// rounds) with its HTTP listener on a free port behind kToken, 4 clients
// without config files, started once for the suite.
class OperationsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists("/usr/share/datasets/fashion-mnist")) {
      skip_ = "Fashion-MNIST is not installed (make setup)";
      return;
    }
    dir_ = new std::string(::testing::TempDir() + "/operations_test_" +
                           std::to_string(getpid()));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
    const std::string config = *dir_ + "/run.yaml";
    std::string text = std::regex_replace(
        ReadFile(kSource + "/configs/distributed_test.yaml"),
        std::regex("run_dir: [^\\n]*"), "run_dir: " + *dir_ + "/run");
    text = std::regex_replace(text, std::regex("rounds: 3"),
                              absl::StrCat("rounds: ", kRounds));
    std::ofstream(config) << text;
    std::ofstream(*dir_ + "/http_token") << kToken << "\n";
    coordinator_ = new Process(
        {kBin + "/layerfl-coordinator", "--config=" + config,
         "--listen=127.0.0.1:0", "--port_file=" + *dir_ + "/port",
         "--metrics_listen=127.0.0.1:0",
         "--metrics_port_file=" + *dir_ + "/http_port",
         "--http_token_file=" + *dir_ + "/http_token",
         "--metrics_linger_s=60", "--tick_ms=20"},
        *dir_ + "/coordinator.log");
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    const std::string port = WaitForLine(*dir_ + "/port", deadline);
    http_port_ = std::atoi(WaitForLine(*dir_ + "/http_port", deadline).c_str());
    if (port.empty() || http_port_ <= 0) {
      skip_ = "the coordinator did not start: " + coordinator_->Log();
      return;
    }
    for (int i = 0; i < 4; ++i) {
      std::vector<std::string> argv = {kBin + "/layerfl-client",
                                       "--coordinator=127.0.0.1:" + port,
                                       absl::StrCat("--partition=", i),
                                       "--poll_ms=1000"};
      if (i == 0) {  // client-000 serves its own metrics
        argv.push_back("--metrics_listen=127.0.0.1:0");
        argv.push_back("--metrics_port_file=" + *dir_ + "/client_http_port");
      }
      clients_[i] =
          new Process(argv, absl::StrCat(*dir_, "/client", i, ".log"));
    }
  }
  static void TearDownTestSuite() {
    for (Process*& c : clients_) {
      delete c;
      c = nullptr;
    }
    if (coordinator_ != nullptr) coordinator_->Signal(SIGTERM);
    delete coordinator_;
    coordinator_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }

  // GET on the coordinator's HTTP listener.
  static httplib::Result Get(const std::string& path,
                             const httplib::Headers& headers = {}) {
    httplib::Client client("127.0.0.1", http_port_);
    client.set_connection_timeout(5);
    client.set_read_timeout(10);
    return client.Get(path, headers);
  }

  static int CommittedRound() {
    httplib::Result r = Get("/api/state?token=" + kToken);
    if (!r || r->status != 200) return -1;
    return nlohmann::json::parse(r->body).at("committed_round").get<int>();
  }

  static inline std::string skip_;
  static inline std::string* dir_ = nullptr;
  static inline Process* coordinator_ = nullptr;
  static inline Process* clients_[4] = {};
  static inline int http_port_ = 0;
};

TEST_F(OperationsTest, HttpListenerWantsTheToken) {
  httplib::Result none = Get("/metrics");
  ASSERT_TRUE(none) << httplib::to_string(none.error());
  EXPECT_EQ(none->status, 401);
  EXPECT_THAT(none->body, ::testing::Not(HasSubstr("layerfl_")));
  httplib::Result wrong = Get("/metrics?token=nope");
  EXPECT_EQ(wrong->status, 401);
  httplib::Result bearer_wrong =
      Get("/metrics", {{"Authorization", "Bearer " + kToken + "x"}});
  EXPECT_EQ(bearer_wrong->status, 401);
  httplib::Result query = Get("/metrics?token=" + kToken);
  EXPECT_EQ(query->status, 200);
  EXPECT_THAT(query->body, HasSubstr("# TYPE layerfl_rounds_committed_total counter"));
  httplib::Result bearer =
      Get("/api/state", {{"Authorization", "Bearer " + kToken}});
  EXPECT_EQ(bearer->status, 200);
  EXPECT_EQ(nlohmann::json::parse(bearer->body).at("rounds"), kRounds);
  httplib::Result missing = Get("/nothing?token=" + kToken);
  EXPECT_EQ(missing->status, 404);
  httplib::Result page = Get("/?token=" + kToken);
  EXPECT_EQ(page->status, 200);
  EXPECT_THAT(page->body, HasSubstr("<title>LayerFL coordinator</title>"));
  EXPECT_THAT(page->body, ::testing::Not(HasSubstr("https://")));  // no CDN
}

TEST_F(OperationsTest, ClientDaemonServesItsOwnMetrics) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  const int port =
      std::atoi(WaitForLine(*dir_ + "/client_http_port", deadline).c_str());
  ASSERT_GT(port, 0) << clients_[0]->Log();
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(10);
  std::string text;
  std::smatch m;
  const std::regex trained(
      "layerfl_client_tasks_total\\{[^}]*kind=\"train\"[^}]*outcome=\"ok\""
      "[^}]*\\} ([0-9.e+]+)");
  while (absl::Now() < deadline) {
    httplib::Result r = client.Get("/metrics");
    if (r && r->status == 200) text = r->body;
    if (std::regex_search(text, m, trained)) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(std::regex_search(text, m, trained)) << text;
  EXPECT_GE(std::stod(m[1]), 1);
  EXPECT_THAT(text, HasSubstr("layerfl_client_joins_total{client=\"client-000\"} 1"));
  EXPECT_THAT(text, HasSubstr("layerfl_client_work_seconds_count{client=\"client-000\",kind=\"score\"}"));
  EXPECT_THAT(text, HasSubstr("layerfl_client_bytes_down_total{client=\"client-000\",kind=\"wire\"}"));
  EXPECT_THAT(text, HasSubstr("\nprocess_resident_memory_bytes "));
  ASSERT_TRUE(std::regex_search(
      text, m, std::regex("layerfl_client_last_round\\{[^}]*\\} ([0-9.e+]+)")));
  EXPECT_GE(std::stod(m[1]), 1);
}

TEST_F(OperationsTest, HeadlessChromiumRendersTheDashboardDuringTheRun) {
  const std::string chromium = "/usr/bin/chromium";
  if (!fs::exists(chromium)) {
    GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (CommittedRound() < 1 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_GE(CommittedRound(), 1) << coordinator_->Log();
  const std::string url = absl::StrCat("http://127.0.0.1:", http_port_,
                                       "/?token=", kToken);
  const std::string out = ::testing::TempDir() + "/operations_dashboard";
  fs::create_directories(out);
  const std::vector<std::string> common = {
      chromium, "--headless", "--no-sandbox", "--disable-gpu",
      "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
      "--user-data-dir=" + *dir_ + "/chromium", "--virtual-time-budget=4000"};
  std::vector<std::string> dump = common;
  dump.push_back("--dump-dom");
  dump.push_back(url);
  Process dom(dump, *dir_ + "/dom.html");
  ASSERT_EQ(dom.Wait(deadline), 0) << dom.Log();
  const std::string html = ReadFile(*dir_ + "/dom.html");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(html, m,
                                std::regex("data-committed=\"([0-9]+)\"")))
      << html;
  EXPECT_GE(std::stoi(m[1]), 1) << html;
  EXPECT_THAT(html, HasSubstr("<td>client-000</td>"));
  // The count comes from clients_connected (4 clients, all listed).
  EXPECT_THAT(html, HasSubstr("<span id=\"nclients\">4</span>")) << html;
  ASSERT_TRUE(std::regex_search(
      html, m, std::regex("id=\"acc-line\" points=\"([^\"]+)\"")))
      << html;
  EXPECT_GE(std::count(m[1].first, m[1].second, ','), 1) << "no point drawn";
  EXPECT_THAT(html, HasSubstr("title=\"block0, round 1: "));  // heatmap
  EXPECT_THAT(html, HasSubstr("<div id=\"error\"></div>"));  // no error shown

  std::vector<std::string> shot = common;
  shot.push_back("--window-size=1200,900");
  shot.push_back("--screenshot=" + out + "/dashboard.png");
  shot.push_back(url);
  Process screenshot(shot, *dir_ + "/screenshot.log");
  ASSERT_EQ(screenshot.Wait(deadline), 0) << screenshot.Log();
  EXPECT_GT(fs::file_size(out + "/dashboard.png"), 10000u);
  std::cout << "dashboard screenshot: " << out << "/dashboard.png\n";
}

TEST_F(OperationsTest, PrometheusScrapesTheRun) {
  const std::string prometheus = "/usr/bin/prometheus";
  if (!fs::exists(prometheus)) {
    GTEST_SKIP() << "prometheus is not installed (scripts/setup.sh installs it)";
  }
  const int port = FreePort();
  const std::string config = *dir_ + "/prometheus.yml";
  std::ofstream(config) << "global:\n  scrape_interval: 1s\n"
                           "scrape_configs:\n  - job_name: layerfl\n"
                           "    authorization:\n      credentials: "
                        << kToken
                        << "\n    static_configs:\n      - targets: ['127.0.0.1:"
                        << http_port_ << "']\n";
  Process server({prometheus, "--config.file=" + config,
                  "--storage.tsdb.path=" + *dir_ + "/tsdb",
                  absl::StrCat("--web.listen-address=127.0.0.1:", port)},
                 *dir_ + "/prometheus.log");
  httplib::Client api("127.0.0.1", port);
  api.set_connection_timeout(2);
  // One value of an instant query, or -1 while there is none.
  const auto query = [&](const std::string& promql) -> double {
    httplib::Result r = api.Get("/api/v1/query",
                                httplib::Params{{"query", promql}},
                                httplib::Headers{});
    if (!r || r->status != 200) return -1;
    const nlohmann::json j = nlohmann::json::parse(r->body, nullptr, false);
    if (j.is_discarded() || j["data"]["result"].empty()) return -1;
    return std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  double committed = -1;
  while (absl::Now() < deadline) {
    committed = query("layerfl_rounds_committed_total");
    if (committed >= kRounds) break;
    absl::SleepFor(absl::Milliseconds(250));
  }
  EXPECT_EQ(committed, kRounds) << server.Log() << coordinator_->Log();
  EXPECT_EQ(query("up{job=\"layerfl\"}"), 1);
  const double accuracy = query("layerfl_global_accuracy");
  EXPECT_GT(accuracy, 0.0);
  EXPECT_LE(accuracy, 1.0);
  EXPECT_GT(query("layerfl_bytes_up_total{kind=\"wire\"}"), 0);
  EXPECT_GT(query("layerfl_bytes_down_total{kind=\"payload\"}"), 0);
  EXPECT_EQ(query("layerfl_rounds_planned"), kRounds);
  EXPECT_GE(query("layerfl_clients_joined"), 4);
  EXPECT_GE(query("layerfl_polls_waiting"), 0);
  // The coordinator's own resources: LibTorch alone makes it > 100 MB; it
  // started during this test suite.
  EXPECT_GT(query("process_resident_memory_bytes{job=\"layerfl\"}"), 100e6);
  EXPECT_GT(query("process_cpu_seconds_total{job=\"layerfl\"}"), 0);
  const double started = query("process_start_time_seconds{job=\"layerfl\"}");
  EXPECT_GT(started, absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()) - 600);
  EXPECT_GE(query("histogram_quantile(0.5, "
                  "layerfl_round_duration_seconds_bucket)"),
            0);
  std::cout << "Prometheus saw " << committed << " committed rounds, accuracy "
            << accuracy << "\n";
  server.Signal(SIGTERM);
  server.Wait(absl::Now() + absl::Seconds(10));
}

}  // namespace
}  // namespace layerfl
