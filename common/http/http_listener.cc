#include "common/http/http_listener.h"

#include <netdb.h>
#include <poll.h>
#include <sodium.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/util/secret.h"
#include "httplib.h"

namespace layerfl {
namespace {

// Milliseconds for poll() until `deadline`, rounded up so that a wait does
// not end just before it; 0 once it has passed.
int PollMillis(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(
      absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))),
      int64_t{1} << 30));
}

// For a connection about to be closed: a complete response if the socket
// takes it at once, else nothing.
void SendBestEffort(int fd, const char* status) {
  const std::string msg = absl::StrCat(
      "HTTP/1.1 ", status,
      "\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  (void)!send(fd, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

void NumericAddress(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  if ((peer ? getpeername(fd, sa, &len) : getsockname(fd, sa, &len)) != 0) {
    return;
  }
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
                  NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
    ip = host;
    if (!absl::SimpleAtoi(serv, &port)) port = 0;
  }
}

// A request whose head was read already: httplib parses it from memory and
// sees the end of the stream after it, so a worker never waits on the
// client's bytes; the response goes to the socket within a deadline.
class HeadStream final : public httplib::Stream {
 public:
  HeadStream(int fd, std::string head, absl::Time write_deadline)
      : fd_(fd), head_(std::move(head)), write_deadline_(write_deadline) {}

  bool is_readable() const override { return read_ < head_.size(); }
  bool is_writable() const override { return absl::Now() < write_deadline_; }

  ssize_t read(char* ptr, size_t size) override {
    const size_t n = std::min(size, head_.size() - read_);
    std::memcpy(ptr, head_.data() + read_, n);
    read_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    while (absl::Now() < write_deadline_) {
      pollfd p{fd_, POLLOUT, 0};
      const int ready = poll(&p, 1, PollMillis(write_deadline_));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return -1;
      const ssize_t n = send(fd_, ptr, size, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 &&
          (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        continue;
      }
      return n;
    }
    return -1;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    NumericAddress(fd_, /*peer=*/true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    NumericAddress(fd_, /*peer=*/false, ip, port);
  }

  // httplib only compares this with FD_SETSIZE, guarding its own select()
  // calls, which this stream never makes.
  socket_t socket() const override { return INVALID_SOCKET; }

 private:
  const int fd_;
  const std::string head_;
  const absl::Time write_deadline_;
  size_t read_ = 0;
};

// Runs each task at once on httplib's accepting thread: the only task it
// queues is handing over an accepted socket, which here never blocks.
class InlineTaskQueue final : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};

// httplib's server without its reading of requests: each accepted socket
// goes to `on_accept` (through httplib's virtual per-connection hook), and a
// request gathered elsewhere comes back through Answer() to httplib's own
// parsing and routing (its protected process_request).
class GatheringServer final : public httplib::Server {
 public:
  explicit GatheringServer(std::function<void(int)> on_accept)
      : on_accept_(std::move(on_accept)) {}

  // Best effort: lengthens the accept queue of the bound socket past
  // httplib's 5, so that a burst of connects is not met with dropped SYNs
  // (each costing its client a second).
  void LengthenBacklog() { (void)::listen(svr_sock_, SOMAXCONN); }

  // Parses, routes and answers the request in `strm`; thread-safe.
  void Answer(httplib::Stream& strm) {
    bool connection_closed = false;
    process_request(strm, /*close_connection=*/true, connection_closed,
                    nullptr);
  }

 private:
  bool process_and_close_socket(socket_t sock) override {
    on_accept_(sock);
    return true;
  }

  const std::function<void(int)> on_accept_;
};

// The one thread that reads request heads, with poll(); see the header.
class HeadGatherer {
 public:
  // Called on the gatherer's thread with a connection (now the callee's)
  // and everything read from it, which holds a complete head.
  using OnHead = std::function<void(int fd, std::string head)>;

  static absl::StatusOr<std::unique_ptr<HeadGatherer>> Start(
      const HttpListenerOptions& options, OnHead on_head) {
    const int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0) {
      return absl::InternalError(
          absl::StrCat("HTTP listener: eventfd: ", std::strerror(errno)));
    }
    auto gatherer = std::unique_ptr<HeadGatherer>(
        new HeadGatherer(options, std::move(on_head), wake_fd));
    gatherer->thread_ = std::thread([g = gatherer.get()] { g->Run(); });
    return gatherer;
  }

  // Closes the connections still sending their head.
  ~HeadGatherer() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    Wake();
    thread_.join();
    for (const Pending& p : pending_) close(p.fd);
    close(wake_fd_);
  }

  // Takes over `fd`, just accepted; its deadline starts now. Thread-safe.
  void Add(int fd) {
    {
      absl::MutexLock lock(&mu_);
      incoming_.push_back({fd, absl::Now() + request_deadline_, {}});
    }
    Wake();
  }

 private:
  struct Pending {
    int fd;
    absl::Time deadline;
    std::string head;
  };
  enum class Progress { kWaiting, kComplete, kClosed };

  HeadGatherer(const HttpListenerOptions& options, OnHead on_head, int wake_fd)
      : request_deadline_(options.request_deadline),
        max_head_bytes_(options.max_request_head_bytes),
        max_pending_(static_cast<size_t>(options.max_pending_connections)),
        on_head_(std::move(on_head)),
        wake_fd_(wake_fd) {}

  void Wake() {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }

  void Run() {
    std::vector<pollfd> fds;
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        for (Pending& p : incoming_) pending_.push_back(std::move(p));
        incoming_.clear();
        if (stopping_) return;
      }
      if (pending_.size() > max_pending_) {
        const auto oldest =
            pending_.begin() +
            static_cast<std::ptrdiff_t>(pending_.size() - max_pending_);
        for (auto it = pending_.begin(); it != oldest; ++it) {
          SendBestEffort(it->fd, "503 Service Unavailable");
          close(it->fd);
        }
        pending_.erase(pending_.begin(), oldest);
      }
      const absl::Time now = absl::Now();
      absl::Time next = absl::InfiniteFuture();
      size_t kept = 0;
      for (size_t i = 0; i < pending_.size(); ++i) {
        Pending& p = pending_[i];
        if (p.deadline <= now) {
          SendBestEffort(p.fd, "408 Request Timeout");
          close(p.fd);
          continue;
        }
        next = std::min(next, p.deadline);
        if (kept != i) pending_[kept] = std::move(p);
        ++kept;
      }
      pending_.resize(kept);

      fds.assign(1, pollfd{wake_fd_, POLLIN, 0});
      for (const Pending& p : pending_) fds.push_back(pollfd{p.fd, POLLIN, 0});
      const int timeout =
          next == absl::InfiniteFuture() ? -1 : PollMillis(next);
      if (poll(fds.data(), fds.size(), timeout) < 0) {
        if (errno != EINTR) absl::SleepFor(absl::Milliseconds(10));
        continue;
      }
      if (fds[0].revents != 0) {
        uint64_t count;
        (void)!read(wake_fd_, &count, sizeof(count));
      }
      kept = 0;
      for (size_t i = 0; i < pending_.size(); ++i) {
        Pending& p = pending_[i];
        const Progress progress =
            fds[i + 1].revents != 0 ? ReadSome(p) : Progress::kWaiting;
        if (progress == Progress::kComplete) {
          on_head_(p.fd, std::move(p.head));
        } else if (progress == Progress::kClosed) {
          close(p.fd);
        } else {
          if (kept != i) pending_[kept] = std::move(p);
          ++kept;
        }
      }
      pending_.resize(kept);
    }
  }

  // One non-blocking read; never reads past max_head_bytes_ in all.
  Progress ReadSome(Pending& p) {
    char buf[4096];
    const size_t room = max_head_bytes_ - p.head.size();
    const ssize_t n =
        recv(p.fd, buf, std::min(sizeof(buf), room), MSG_DONTWAIT);
    if (n < 0) {
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
                 ? Progress::kWaiting
                 : Progress::kClosed;
    }
    if (n == 0) return Progress::kClosed;
    const size_t from = p.head.size() < 3 ? 0 : p.head.size() - 3;
    p.head.append(buf, static_cast<size_t>(n));
    if (p.head.find("\r\n\r\n", from) != std::string::npos) {
      return Progress::kComplete;
    }
    if (p.head.size() >= max_head_bytes_) {
      SendBestEffort(p.fd, "431 Request Header Fields Too Large");
      return Progress::kClosed;
    }
    return Progress::kWaiting;
  }

  const absl::Duration request_deadline_;
  const size_t max_head_bytes_;
  const size_t max_pending_;
  const OnHead on_head_;
  const int wake_fd_;
  std::thread thread_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Pending> incoming_ ABSL_GUARDED_BY(mu_);

  // In accept order; only the gatherer's thread touches it until it ends.
  std::vector<Pending> pending_;
};

class HttpListenerImpl final : public HttpListener {
 public:
  HttpListenerImpl(const HttpListenerOptions& options,
                   std::map<std::string, HttpHandler> routes)
      : options_(options),
        routes_(std::move(routes)),
        server_([this](int fd) { gatherer_->Add(fd); }) {}

  ~HttpListenerImpl() override {
    server_.stop();
    if (thread_.joinable()) thread_.join();
    gatherer_.reset();
    stopping_.store(true);
    if (pool_ != nullptr) pool_->shutdown();
  }

  absl::Status Listen(const std::string& host, int port) {
    pool_ = std::make_unique<httplib::ThreadPool>(
        static_cast<size_t>(options_.worker_threads));
    absl::StatusOr<std::unique_ptr<HeadGatherer>> gatherer =
        HeadGatherer::Start(options_, [this](int fd, std::string head) {
          pool_->enqueue([this, fd, head = std::move(head)]() mutable {
            Answer(fd, std::move(head));
          });
        });
    if (!gatherer.ok()) return gatherer.status();
    gatherer_ = *std::move(gatherer);

    server_.new_task_queue = [this] {
      running_.Notify();
      return new InlineTaskQueue();
    };
    server_.set_payload_max_length(0);
    // SO_REUSEADDR alone: httplib's SO_REUSEPORT would let a second listener
    // share a port in use instead of failing to bind it.
    server_.set_socket_options([](socket_t sock) {
      const int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    server_.set_pre_routing_handler(
        [this](const httplib::Request& req, httplib::Response& res) {
          return Admit(req, res);
        });
    for (const auto& [path, handler] : routes_) {
      const HttpHandler h = handler;
      server_.Get(path, [h](const httplib::Request&, httplib::Response& res) {
        HttpResponse out = h();
        res.status = out.status;
        res.set_header("Cache-Control", "no-store");
        res.set_content(std::move(out.body), out.content_type);
      });
    }
    if (port == 0) {
      port_ = server_.bind_to_any_port(host);
    } else {
      port_ = server_.bind_to_port(host, port) ? port : -1;
    }
    if (port_ <= 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot listen for HTTP on ", host, ":", port,
          " (address in use or not an address of this machine)"));
    }
    server_.LengthenBacklog();
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // Until httplib's loop runs, stop() would not reach it.
    running_.WaitForNotification();
    return absl::OkStatus();
  }

  int port() const override { return port_; }

 private:
  httplib::Server::HandlerResponse Admit(const httplib::Request& req,
                                         httplib::Response& res) const {
    using httplib::Server;
    if (req.method != "GET" && req.method != "HEAD") {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      return Server::HandlerResponse::Handled;
    }
    const std::string length = req.get_header_value("Content-Length");
    if ((!length.empty() && length != "0") ||
        req.has_header("Transfer-Encoding")) {
      res.status = 413;
      return Server::HandlerResponse::Handled;
    }
    if (options_.token.empty()) return Server::HandlerResponse::Unhandled;
    std::string given;
    const std::string auth = req.get_header_value("Authorization");
    if (absl::StartsWith(auth, "Bearer ")) {
      given = auth.substr(7);
    } else if (req.has_param("token")) {
      given = req.get_param_value("token");
    }
    if (!given.empty() && SecretsEqual(given, options_.token)) {
      return Server::HandlerResponse::Unhandled;
    }
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer");
    res.set_content("401: this listener needs the run's HTTP token "
                    "(Authorization: Bearer <token> or ?token=)\n",
                    "text/plain; charset=utf-8");
    return Server::HandlerResponse::Handled;
  }

  // On a worker: answers the request gathered from `fd`, then closes it.
  void Answer(int fd, std::string head) {
    if (!stopping_.load()) {
      HeadStream strm(fd, std::move(head),
                      absl::Now() + options_.write_deadline);
      server_.Answer(strm);
    }
    close(fd);
  }

  const HttpListenerOptions options_;
  const std::map<std::string, HttpHandler> routes_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<httplib::ThreadPool> pool_;
  std::unique_ptr<HeadGatherer> gatherer_;
  GatheringServer server_;
  absl::Notification running_;
  int port_ = -1;
  std::thread thread_;
};

}  // namespace

absl::Status HttpListenerOptions::Validate() const {
  auto bad = [](const char* field, const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP listener option ", field, ": ", why));
  };
  if (request_deadline <= absl::ZeroDuration()) {
    return bad("request_deadline",
               absl::StrCat("must be > 0, got ",
                            absl::FormatDuration(request_deadline)));
  }
  if (write_deadline <= absl::ZeroDuration()) {
    return bad("write_deadline", absl::StrCat("must be > 0, got ",
                                              absl::FormatDuration(
                                                  write_deadline)));
  }
  if (max_request_head_bytes < 64) {
    return bad("max_request_head_bytes",
               absl::StrCat("must be >= 64, got ", max_request_head_bytes));
  }
  if (max_pending_connections < 1) {
    return bad("max_pending_connections",
               absl::StrCat("must be >= 1, got ", max_pending_connections));
  }
  if (worker_threads < 1) {
    return bad("worker_threads",
               absl::StrCat("must be >= 1, got ", worker_threads));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(
    const HttpListenerOptions& options,
    std::map<std::string, HttpHandler> routes) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  const size_t colon = options.address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(options.address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP listen address: expected host:port, got '", options.address,
        "'"));
  }
  std::string host = options.address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // [::1]
  }
  if (sodium_init() < 0) {
    return absl::InternalError("libsodium could not be initialised");
  }
  auto listener =
      std::make_unique<HttpListenerImpl>(options, std::move(routes));
  if (absl::Status s = listener->Listen(host, port); !s.ok()) return s;
  return std::unique_ptr<HttpListener>(std::move(listener));
}

}  // namespace layerfl
