#include "common/http/http_listener.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "operators-token-1234";
constexpr char kMetrics[] = "layerfl_round 7\n";
constexpr absl::Duration kDeadline = absl::Seconds(2);

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

struct Reply {
  int status = 0;  // 0: no status line before the timeout
  std::string text;
  absl::Duration latency;
};

// Sends `request` on a new connection and reads until the server closes it
// or `timeout` has passed since the connect.
Reply Fetch(int port, const std::string& request,
            absl::Duration timeout = absl::Seconds(5)) {
  Reply reply;
  const absl::Time start = absl::Now();
  const int fd = Connect(port);
  if (fd < 0) return reply;
  const absl::Time until = start + timeout;
  (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  char buf[4096];
  while (absl::Now() < until) {
    pollfd p{fd, POLLIN, 0};
    const int wait_ms = static_cast<int>(
        absl::ToInt64Milliseconds(until - absl::Now()) + 1);
    if (poll(&p, 1, wait_ms) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    reply.text.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  reply.latency = absl::Now() - start;
  std::sscanf(reply.text.c_str(), "HTTP/1.%*d %d", &reply.status);
  return reply;
}

std::string Get(const std::string& target, const std::string& headers = "") {
  return absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: localhost\r\n",
                      headers, "Connection: close\r\n\r\n");
}

std::string Bearer() {
  return absl::StrCat("Authorization: Bearer ", kToken, "\r\n");
}

std::unique_ptr<HttpListener> StartListener(HttpListenerOptions options) {
  options.token = kToken;
  absl::StatusOr<std::unique_ptr<HttpListener>> listener =
      HttpListener::Start(options, {{"/metrics", [] {
                                       return HttpResponse{
                                           200, "text/plain; version=0.0.4",
                                           kMetrics};
                                     }}});
  EXPECT_TRUE(listener.ok()) << listener.status();
  return listener.ok() ? *std::move(listener) : nullptr;
}

// `n` connections that each send "GET /metrics HTTP/1.1\r\n" one byte a
// second, from a background thread that stops after 15 s or with this
// object.
class SlowHeaders {
 public:
  SlowHeaders(int port, int n) {
    for (int i = 0; i < n; ++i) {
      fds_.push_back(Connect(port));
      connected_.push_back(absl::Now());
      closed_after_.push_back(absl::InfiniteDuration());
    }
    thread_ = std::thread([this] { Drip(); });
  }

  ~SlowHeaders() {
    stop_.Notify();
    thread_.join();
    for (int fd : fds_) {
      if (fd >= 0) close(fd);
    }
  }

  bool all_connected() const {
    for (int fd : fds_) {
      if (fd < 0) return false;
    }
    return true;
  }

  // For each connection, how long after its connect the server closed it
  // (EOF or reset); InfiniteDuration if still open at `until`.
  std::vector<absl::Duration> WaitClosed(absl::Time until) {
    std::vector<size_t> open;
    for (size_t i = 0; i < fds_.size(); ++i) {
      if (closed_after_[i] == absl::InfiniteDuration()) open.push_back(i);
    }
    char buf[256];
    while (!open.empty() && absl::Now() < until) {
      std::vector<pollfd> polled;
      for (size_t i : open) polled.push_back(pollfd{fds_[i], POLLIN, 0});
      const int wait_ms = static_cast<int>(
          absl::ToInt64Milliseconds(until - absl::Now()) + 1);
      if (poll(polled.data(), polled.size(), wait_ms) <= 0) continue;
      const absl::Time now = absl::Now();
      std::vector<size_t> still_open;
      for (size_t k = 0; k < open.size(); ++k) {
        const size_t i = open[k];
        if (polled[k].revents != 0 &&
            recv(fds_[i], buf, sizeof(buf), MSG_DONTWAIT) <= 0) {
          closed_after_[i] = now - connected_[i];
        } else {
          still_open.push_back(i);
        }
      }
      open = std::move(still_open);
    }
    return closed_after_;
  }

 private:
  void Drip() {
    const std::string line = "GET /metrics HTTP/1.1\r\n";
    const absl::Time start = absl::Now();
    for (char c : line) {
      for (int fd : fds_) {
        if (fd >= 0) (void)!send(fd, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      }
      if (stop_.WaitForNotificationWithTimeout(absl::Seconds(1)) ||
          absl::Now() - start > absl::Seconds(15)) {
        return;
      }
    }
  }

  std::vector<int> fds_;
  std::vector<absl::Time> connected_;
  std::vector<absl::Duration> closed_after_;
  absl::Notification stop_;
  std::thread thread_;
};

class HttpListenerSlowHeadersTest : public ::testing::TestWithParam<int> {};

TEST_P(HttpListenerSlowHeadersTest, ScrapeAnsweredAndDrippersClosedByDeadline) {
  const int attackers = GetParam();
  HttpListenerOptions options;
  options.request_deadline = kDeadline;
  std::unique_ptr<HttpListener> listener = StartListener(options);
  ASSERT_NE(listener, nullptr);

  SlowHeaders slow(listener->port(), attackers);
  ASSERT_TRUE(slow.all_connected());
  const absl::Time attack_start = absl::Now();
  absl::SleepFor(absl::Seconds(1));

  const absl::Duration limit = kDeadline + absl::Seconds(1);
  const Reply scrape =
      Fetch(listener->port(), Get("/metrics", Bearer()), limit);
  std::cout << "scrape with " << attackers << " slow-header connections: "
            << "HTTP " << scrape.status << " in "
            << absl::FormatDuration(scrape.latency) << std::endl;
  EXPECT_EQ(scrape.status, 200) << scrape.text;
  EXPECT_LT(scrape.latency, limit);
  EXPECT_THAT(scrape.text, HasSubstr(kMetrics));

  const std::vector<absl::Duration> closed =
      slow.WaitClosed(attack_start + kDeadline + absl::Seconds(1));
  for (size_t i = 0; i < closed.size(); ++i) {
    EXPECT_GE(closed[i], kDeadline - absl::Milliseconds(200)) << "conn " << i;
    EXPECT_LE(closed[i], kDeadline + absl::Seconds(1)) << "conn " << i;
  }
  std::cout << "slow connection 0 closed by the server after "
            << absl::FormatDuration(closed[0]) << std::endl;
}

INSTANTIATE_TEST_SUITE_P(Attackers, HttpListenerSlowHeadersTest,
                         ::testing::Values(4, 16));

TEST(HttpListenerTest, PendingConnectionsPastTheCapCloseTheOldest) {
  HttpListenerOptions options;
  options.request_deadline = kDeadline;
  options.max_pending_connections = 4;
  std::unique_ptr<HttpListener> listener = StartListener(options);
  ASSERT_NE(listener, nullptr);

  SlowHeaders slow(listener->port(), 12);
  ASSERT_TRUE(slow.all_connected());
  const std::vector<absl::Duration> closed =
      slow.WaitClosed(absl::Now() + absl::Milliseconds(500));
  int closed_early = 0;
  for (absl::Duration d : closed) {
    if (d < absl::Milliseconds(500)) ++closed_early;
  }
  EXPECT_EQ(closed_early, 8);

  const Reply scrape = Fetch(listener->port(), Get("/metrics", Bearer()),
                             absl::Seconds(1));
  EXPECT_EQ(scrape.status, 200) << scrape.text;
}

TEST(HttpListenerTest, TokenPathsAndMethods) {
  std::unique_ptr<HttpListener> listener = StartListener({});
  ASSERT_NE(listener, nullptr);
  const int port = listener->port();

  const Reply no_token = Fetch(port, Get("/metrics"));
  EXPECT_EQ(no_token.status, 401);
  EXPECT_THAT(no_token.text, Not(HasSubstr(kMetrics)));
  const Reply wrong = Fetch(
      port, Get("/metrics", "Authorization: Bearer operators-token-1235\r\n"));
  EXPECT_EQ(wrong.status, 401);
  EXPECT_THAT(wrong.text, Not(HasSubstr(kMetrics)));
  EXPECT_EQ(Fetch(port, Get("/nope")).status, 401);

  const Reply bearer = Fetch(port, Get("/metrics", Bearer()));
  EXPECT_EQ(bearer.status, 200);
  EXPECT_THAT(bearer.text, HasSubstr(kMetrics));
  EXPECT_THAT(bearer.text, HasSubstr("Connection: close"));
  const Reply query =
      Fetch(port, Get(absl::StrCat("/metrics?token=", kToken)));
  EXPECT_EQ(query.status, 200);
  EXPECT_THAT(query.text, HasSubstr(kMetrics));

  const Reply head = Fetch(
      port, absl::StrCat("HEAD /metrics HTTP/1.1\r\nHost: x\r\n", Bearer(),
                         "Connection: close\r\n\r\n"));
  EXPECT_EQ(head.status, 200);
  EXPECT_THAT(head.text, Not(HasSubstr(kMetrics)));

  EXPECT_EQ(Fetch(port, Get("/nope", Bearer())).status, 404);
  EXPECT_EQ(Fetch(port, absl::StrCat("POST /metrics HTTP/1.1\r\nHost: x\r\n",
                                     Bearer(), "Content-Length: 0\r\n\r\n"))
                .status,
            405);
  EXPECT_EQ(Fetch(port, Get("/metrics",
                            absl::StrCat(Bearer(), "Content-Length: 5\r\n")))
                .status,
            413);
}

int OpenFds() {
  std::filesystem::directory_iterator fds("/proc/self/fd");
  return static_cast<int>(std::distance(begin(fds), end(fds)));
}

TEST(HttpListenerTest, DestructorClosesUnansweredConnections) {
  const int before = OpenFds();
  {
    std::unique_ptr<HttpListener> listener = StartListener({});
    ASSERT_NE(listener, nullptr);
    SlowHeaders slow(listener->port(), 8);
    ASSERT_TRUE(slow.all_connected());
    absl::SleepFor(absl::Milliseconds(100));
    listener.reset();
    for (absl::Duration d : slow.WaitClosed(absl::Now() + absl::Seconds(1))) {
      EXPECT_LT(d, absl::Seconds(1));
    }
  }
  EXPECT_EQ(OpenFds(), before);
}

TEST(HttpListenerTest, OversizedHeadIsRefused) {
  HttpListenerOptions options;
  options.max_request_head_bytes = 1024;
  std::unique_ptr<HttpListener> listener = StartListener(options);
  ASSERT_NE(listener, nullptr);
  const Reply big = Fetch(
      listener->port(),
      Get("/metrics", absl::StrCat(Bearer(), "X-Pad: ", std::string(2000, 'a'),
                                   "\r\n")));
  EXPECT_EQ(big.status, 431);
  EXPECT_EQ(Fetch(listener->port(), Get("/metrics", Bearer())).status, 200);
}

TEST(HttpListenerTest, StartErrorsNameTheAddressOrField) {
  HttpListenerOptions options;
  options.address = "no-port";
  EXPECT_EQ(HttpListener::Start(options, {}).status().code(),
            absl::StatusCode::kInvalidArgument);

  std::unique_ptr<HttpListener> first = StartListener({});
  ASSERT_NE(first, nullptr);
  options.address = absl::StrCat("127.0.0.1:", first->port());
  const absl::Status taken = HttpListener::Start(options, {}).status();
  EXPECT_EQ(taken.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(taken.message(), HasSubstr(options.address));

  options.address = "127.0.0.1:0";
  options.request_deadline = absl::ZeroDuration();
  const absl::Status bad = HttpListener::Start(options, {}).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("request_deadline"));
}

}  // namespace
}  // namespace layerfl
