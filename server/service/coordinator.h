#ifndef LAYERFL_SERVER_SERVICE_COORDINATOR_H_
#define LAYERFL_SERVER_SERVICE_COORDINATOR_H_

// layerfl-coordinator: the round engine of a run config behind the gRPC
// service. It sets the engine up exactly as layerfl-sim does (model init from
// the config seed, pretrained start, selector, budgets by client id,
// evaluator on the test set, checkpoints in federated.run_dir/checkpoints,
// metrics.jsonl), so that client daemons holding partitions 0..N-1 reproduce
// the simulation: same config and seed -> bit-identical final weights
// (float32 encoding, ordered aggregation).
//
// Blocking; one per process (it sets LibTorch's thread count).

#include <atomic>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/config/config.h"
#include "common/http/http_listener.h"
#include "server/service/service.h"

namespace layerfl {

struct CoordinatorOptions {
  // "host:port" to listen on; port 0 picks a free port. Default all
  // interfaces, port 50051.
  std::string listen = "0.0.0.0:50051";
  // When set, the chosen port is written there (atomically) once listening.
  std::string port_file;
  // Who may join (token / client_tokens, tls) and the ticker period. The
  // transport fields (encoding, chunk sizes, ordered aggregation, waits,
  // timeouts) are replaced by the config's `transport` section
  // (TransportOptions); run_id is kept in federated.run_dir/run_id.
  ServiceOptions service;
  // The HTTP listener for operators (server/monitor: /metrics, the
  // dashboard, /api/state); address "" = none. Default none.
  HttpListenerOptions http{"", ""};
  // Return the heap's free pages to the kernel once the coordinator has
  // been this long without a join, download or upload (a burst of joins or
  // uploads otherwise stays in the RSS: the daemons retain freed memory for
  // reuse; server/service/memory_release.h); zero = never. Default 10 s.
  absl::Duration release_memory_every = absl::Seconds(10);
  // When set, the HTTP listener's port is written there once listening.
  std::string http_port_file;
  // After the run is over the HTTP listener stays this long (or until
  // `stop`), so that a last scrape sees the final numbers. Default 0.
  absl::Duration http_linger = absl::ZeroDuration();
  // Progress and event lines; null = silent. Not owned.
  std::ostream* log = nullptr;
};

// `base` with the transport fields set from config.transport
// (wait_for_clients 0 -> data.num_clients). InvalidArgument naming the
// transport field for an encoding the codec does not know.
absl::StatusOr<ServiceOptions> TransportOptions(const RunConfig& config,
                                                ServiceOptions base);

// Runs the coordinator until the run is over (OK), fails (the error), or
// `stop` becomes true (Cancelled; the last committed round is on disk).
// InvalidArgument means the config or options are unusable.
absl::Status RunCoordinator(const RunConfig& config,
                            const CoordinatorOptions& options,
                            const std::atomic<bool>* stop);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_COORDINATOR_H_
