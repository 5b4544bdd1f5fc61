#ifndef LAYERFL_CLIENT_DAEMON_GRPC_LINK_H_
#define LAYERFL_CLIENT_DAEMON_GRPC_LINK_H_

// The CoordinatorLink over gRPC (proto/layerfl.proto). Every call has a
// deadline. Downloads are checked chunk by chunk (common/codec) and applied
// to the replica only once whole; uploads are sent as chunks of the layers
// trained, in the run's encoding. Thread-safe.

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "client/daemon/daemon.h"

namespace layerfl {

// TLS to the coordinator, PEM contents (not paths).
struct ClientTls {
  // Off by default (insecure channel). On: the coordinator's certificate is
  // verified against `ca_pem` ("" = the system's roots).
  bool enabled = false;
  std::string ca_pem;
  // Client certificate chain and key for mutual TLS; both "" = none.
  std::string cert_pem;
  std::string key_pem;
  // The name the coordinator's certificate must carry; "" = the target's
  // host.
  std::string server_name;
};

struct GrpcLinkOptions {
  // The coordinator, "host:port". Required.
  std::string target;
  // Deadline of unary calls; GetTask adds its long-poll wait. Default 30 s.
  absl::Duration rpc_timeout = absl::Seconds(30);
  // A download has rpc_timeout for its manifest, then rpc_timeout plus the
  // bytes the manifest announces at this rate (a large model gets the time
  // it needs, a small one no more), and ends when no chunk arrives for
  // rpc_timeout. Default 1 MiB/s.
  double min_download_bytes_per_s = 1 << 20;
  // Upload chunk payload (capped by what the coordinator accepts). Default
  // 1 MiB.
  int64_t chunk_bytes = int64_t{1} << 20;
  // Largest download chunk payload accepted. Default 4 MiB.
  int64_t max_chunk_bytes = int64_t{4} << 20;
  // gRPC's own reconnect backoff cap. Default 5 s.
  absl::Duration reconnect_backoff_max = absl::Seconds(5);
  // Default: no TLS.
  ClientTls tls;
  // Its own TCP connection even when another channel in the process has the
  // same target and arguments (gRPC shares one by default). Default false.
  bool own_connection = false;
};

std::unique_ptr<CoordinatorLink> CreateGrpcLink(const GrpcLinkOptions& options);

}  // namespace layerfl

#endif  // LAYERFL_CLIENT_DAEMON_GRPC_LINK_H_
