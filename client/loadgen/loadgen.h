#ifndef LAYERFL_CLIENT_LOADGEN_LOADGEN_H_
#define LAYERFL_CLIENT_LOADGEN_LOADGEN_H_

// A load generator for the coordinator (layerfl-loadgen): N synthetic
// clients in one process, each a real client daemon (RunClientDaemon) with
// its own id, session, heartbeats, long polls, layer-versioned fetches and
// uploads over its own CoordinatorLink, whose local work is synthetic:
// scores are pseudo-random, updates are random deltas of the assigned
// layers' shapes. Some clients can be made slow (a delay per task), failing
// (their work fails in a given round: they Leave with the reason) or
// dropping (they stop dead after their upload of a given round, as a crashed
// device). A benchmark and a test tool, not a second daemon.
//
// Torch-free. One thread per client (and the daemon's heartbeat thread).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/daemon/daemon.h"

namespace layerfl {

// One synthetic client's work. Deterministic in (seed, client id, round).
class SyntheticWork : public ClientWork {
 public:
  struct Options {
    int64_t num_samples = 100;  // >= 1
    absl::Duration delay = absl::ZeroDuration();  // per Score / Train call
    int64_t fail_round = 0;     // Score/Train of this round fails; 0 = never
    float delta_scale = 1e-3f;  // updates are uniform in +-delta_scale
    uint64_t seed = 1;
  };
  SyntheticWork(std::string client_id, Options options);

  int64_t num_samples() const override { return options_.num_samples; }
  absl::StatusOr<std::vector<double>> Score(const ModelWeights& global,
                                            int64_t round,
                                            const std::string& metric,
                                            int score_from) override;
  absl::StatusOr<std::vector<LayerDelta>> Train(
      const ModelWeights& global, int64_t round,
      const std::vector<std::string>& layers,
      const std::vector<int>& layer_participants) override;

 private:
  std::string id_;
  Options options_;
};

struct LoadGenOptions {
  std::string target;           // coordinator "host:port"; required
  int clients = 0;              // >= 1
  std::string id_prefix = "load-";  // ids <prefix>00000, <prefix>00001, ...
  int first_index = 0;          // the first id's number
  std::string token;            // the run's shared secret; "" = none
  absl::Duration poll = absl::Seconds(5);  // long-poll wait per GetTask
  // Fractions of the clients (by a hash of the id, so the same ones every
  // time) that are slow, fail in `fail_round`, or drop after their upload
  // of `drop_round`.
  double slow_fraction = 0;
  absl::Duration slow_delay = absl::Seconds(1);
  double fail_fraction = 0;
  int64_t fail_round = 2;
  double drop_fraction = 0;
  int64_t drop_round = 1;
  int64_t num_samples = 100;
  uint64_t seed = 1;
  // Clients start evenly spread over this long (devices do not all connect
  // in the same millisecond); 0 = all at once.
  absl::Duration ramp = absl::ZeroDuration();
  // How long a client keeps retrying an unreachable coordinator.
  absl::Duration give_up = absl::Seconds(120);
  // Each client on its own TCP connection, as separate devices would be
  // (false: gRPC multiplexes identical channels over one connection).
  bool own_connections = false;
  // Builds one client's link; null = a gRPC link to `target`.
  std::function<std::unique_ptr<CoordinatorLink>()> make_link;

  // InvalidArgument naming the field.
  absl::Status Validate() const;
};

// What the clients saw, summed over them.
struct LoadGenReport {
  int clients = 0;
  int finished = 0;  // saw the run finish (OK)
  int failed = 0;    // left because their work failed, as asked
  int dropped = 0;   // stopped dead after an upload, as asked
  int errors = 0;    // anything else (first one in `first_error`)
  std::string first_error;
  int64_t joins = 0;
  int64_t scored = 0;            // score tasks answered and accepted
  int64_t uploads_accepted = 0;  // train tasks whose upload was accepted
  int64_t uploads_refused = 0;
  int64_t bytes_down = 0;  // wire bytes
  int64_t bytes_up = 0;
  int64_t last_round = 0;  // the largest last committed round any saw
  double wall_s = 0;

  // One line: "loadgen: 500 clients: 500 finished, 0 failed, ...".
  std::string Summary() const;
};

// Runs every client until each has returned; blocking. Errors only for bad
// options; what the clients met is in the report.
absl::StatusOr<LoadGenReport> RunLoadGen(const LoadGenOptions& options);

// The id of client `index` ("<prefix>%05d").
std::string LoadGenClientId(const std::string& prefix, int index);

}  // namespace layerfl

#endif  // LAYERFL_CLIENT_LOADGEN_LOADGEN_H_
