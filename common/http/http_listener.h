#ifndef LAYERFL_COMMON_HTTP_HTTP_LISTENER_H_
#define LAYERFL_COMMON_HTTP_HTTP_LISTENER_H_

// A small HTTP/1.1 listener for operators: the Prometheus /metrics of the
// coordinator and the client daemon, the coordinator's dashboard and its
// JSON state. GET (and HEAD) routes only, each answered by a handler called
// on the listener's own worker threads. Binds localhost unless told
// otherwise. With a token set, every request must carry it, as
// "Authorization: Bearer <token>" or "?token=<token>"; others get 401 with
// nothing of the run in the body. Other methods get 405, requests that
// announce a body 413. One request per connection (answered with
// "Connection: close"). Thread-safe.
//
// Slow clients cannot starve it. cpp-httplib 0.11 reads a request on a pool
// thread with only a per-recv timeout, so a client that drips one header
// byte per interval holds that thread for as long as it likes, and more
// threads only raise the number of connections an attacker needs. Here no
// thread ever waits on a client's request: one poll() thread gathers the
// request line and headers of every connection without blocking, and
// closes a connection whose head is not complete `request_deadline` after
// it was accepted (best-effort 408) or that grows past
// `max_request_head_bytes` (431). Only a complete head goes to a worker,
// which runs httplib's parsing and routing over the bytes already read,
// then the handler, and must write the response within `write_deadline`.
// At most `max_pending_connections` connections may be sending their head
// at once; one more closes the oldest of them (best-effort 503), so a flood
// of slow connections cannot lock out a scrape that sends its head at
// once. There is no cap per peer address: on a localhost bind every peer
// is 127.0.0.1, so such a cap would lock out the local scraper together
// with a local attacker.

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

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
  // From accept to the end of the request line and headers, however the
  // bytes trickle in; past it the connection is closed. Default 5 s.
  absl::Duration request_deadline = absl::Seconds(5);
  // Request line plus headers, in bytes; a longer head is refused with 431
  // and closed. Default 8 KiB.
  size_t max_request_head_bytes = 8192;
  // Connections still sending their head; one more closes the oldest of
  // them. Default 64.
  int max_pending_connections = 64;
  // Threads that run handlers and write responses. Default 4.
  int worker_threads = 4;
  // For writing one response, from when its handler is called; past it the
  // connection is closed. Default 5 s.
  absl::Duration write_deadline = absl::Seconds(5);

  // InvalidArgument naming the first field out of range.
  absl::Status Validate() const;
};

class HttpListener {
 public:
  // Listens on options.address and serves `routes` (exact paths, e.g.
  // "/metrics"); anything else is 404. InvalidArgument for a malformed
  // address or options, Unavailable when it cannot be bound (naming it).
  static absl::StatusOr<std::unique_ptr<HttpListener>> Start(
      const HttpListenerOptions& options,
      std::map<std::string, HttpHandler> routes);

  // Stops listening, closes the connections not yet answered and waits for
  // the handlers running.
  virtual ~HttpListener() = default;

  virtual int port() const = 0;
};

}  // namespace layerfl

#endif  // LAYERFL_COMMON_HTTP_HTTP_LISTENER_H_
