#ifndef LAYERFL_COMMON_HTTP_HTTP_LISTENER_H_
#define LAYERFL_COMMON_HTTP_HTTP_LISTENER_H_

// A small HTTP/1.1 listener for operators: the Prometheus /metrics of the
// coordinator and the client daemon, the coordinator's dashboard and its
// JSON state. GET (and HEAD) routes only, each answered by a handler called
// on the listener's own threads (cpp-httplib's pool). Binds localhost unless
// told otherwise. With a token set, every request must carry it, as
// "Authorization: Bearer <token>" or "?token=<token>"; others get 401 with
// nothing of the run in the body. Thread-safe.

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace layerfl {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Called for each request of its route; must be thread-safe.
using HttpHandler = std::function<HttpResponse()>;

struct HttpListenerOptions {
  // "host:port"; port 0 picks a free one (see port()). Default localhost.
  std::string address = "127.0.0.1:0";
  // "" = no token needed. Compared in constant time.
  std::string token;
};

class HttpListener {
 public:
  // Listens on options.address and serves `routes` (exact paths, e.g.
  // "/metrics"); anything else is 404. InvalidArgument for a malformed
  // address, Unavailable when it cannot be bound (naming it).
  static absl::StatusOr<std::unique_ptr<HttpListener>> Start(
      const HttpListenerOptions& options,
      std::map<std::string, HttpHandler> routes);

  // Stops listening and waits for the handlers running.
  virtual ~HttpListener() = default;

  virtual int port() const = 0;
};

}  // namespace layerfl

#endif  // LAYERFL_COMMON_HTTP_HTTP_LISTENER_H_
