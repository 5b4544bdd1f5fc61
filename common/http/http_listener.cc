#include "common/http/http_listener.h"

#include <sodium.h>

#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/util/secret.h"
#include "httplib.h"

namespace layerfl {
namespace {

class HttpListenerImpl final : public HttpListener {
 public:
  HttpListenerImpl(std::string token, std::map<std::string, HttpHandler> routes)
      : token_(std::move(token)), routes_(std::move(routes)) {}

  ~HttpListenerImpl() override {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Listen(const std::string& host, int port) {
    server_.new_task_queue = [] { return new httplib::ThreadPool(4); };
    server_.set_keep_alive_timeout(1);
    server_.set_read_timeout(5, 0);
    server_.set_write_timeout(5, 0);
    server_.set_pre_routing_handler(
        [this](const httplib::Request& req, httplib::Response& res) {
          if (token_.empty()) return httplib::Server::HandlerResponse::Unhandled;
          std::string given;
          const std::string auth = req.get_header_value("Authorization");
          if (absl::StartsWith(auth, "Bearer ")) {
            given = auth.substr(7);
          } else if (req.has_param("token")) {
            given = req.get_param_value("token");
          }
          if (!given.empty() && SecretsEqual(given, token_)) {
            return httplib::Server::HandlerResponse::Unhandled;
          }
          res.status = 401;
          res.set_header("WWW-Authenticate", "Bearer");
          res.set_content("401: this listener needs the run's HTTP token "
                          "(Authorization: Bearer <token> or ?token=)\n",
                          "text/plain; charset=utf-8");
          return httplib::Server::HandlerResponse::Handled;
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
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return absl::OkStatus();
  }

  int port() const override { return port_; }

 private:
  const std::string token_;
  const std::map<std::string, HttpHandler> routes_;
  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(
    const HttpListenerOptions& options,
    std::map<std::string, HttpHandler> routes) {
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
      std::make_unique<HttpListenerImpl>(options.token, std::move(routes));
  if (absl::Status s = listener->Listen(host, port); !s.ok()) return s;
  return std::unique_ptr<HttpListener>(std::move(listener));
}

}  // namespace layerfl
