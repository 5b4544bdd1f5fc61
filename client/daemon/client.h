#ifndef LAYERFL_CLIENT_DAEMON_CLIENT_H_
#define LAYERFL_CLIENT_DAEMON_CLIENT_H_

// layerfl-client: one client of a run, working through LocalWorker on either
//   - its own training data in `data_dir`, the way a deployment keeps each
//     client's data on its own machine: IDX images (LoadClientImages) for
//     image runs, train.tsv + the run's vocab.txt (LoadClientText) for text
//     runs, as layerfl-partition writes them; or
//   - partition `partition` of the run config's data (images or text), built
//     exactly as layerfl-sim builds its virtual client (BuildTaskExamples),
//     so that a distributed run reproduces the simulation.
// Blocking; one per process.

#include <atomic>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "client/daemon/daemon.h"
#include "client/daemon/grpc_link.h"
#include "common/config/config.h"

namespace layerfl {

struct ClientOptions {
  // The client's own data directory; "" = use `partition`.
  std::string data_dir;
  // Index into the run's client partitions when data_dir is "".
  int partition = 0;
  // client_id "" = PartitionClientId(partition); required with data_dir.
  DaemonOptions daemon;
  GrpcLinkOptions link;
  // Set: only measure this machine's training profile (cached as for a run),
  // write it here as one key=value line and return, without connecting.
  std::ostream* print_profile = nullptr;
};

// What a client declares from its flags: `budget` in the run's unit;
// `budget_s` (seconds of compute per round) and `budget_mb` (MiB of peak
// training memory) by this machine's measured profile. A real-unit flag in
// the run's own unit is the budget; in the other unit it is a cap the
// coordinator also holds the client's selections to. 0 = not given. A
// negative value, or --budget together with the real-unit flag of the run's
// own unit, is InvalidArgument naming the flags.
struct DeclaredLimits {
  double budget = 0;         // in the run's unit; 0 = none
  double max_time_s = 0;     // 0 = no cap
  double max_memory_mb = 0;  // 0 = no cap
};
absl::StatusOr<DeclaredLimits> DeclaredBudget(const RunConfig& config,
                                              double budget, double budget_s,
                                              double budget_mb);

// InvalidArgument: the config or options are unusable. Otherwise as
// RunClientDaemon.
absl::Status RunClient(const RunConfig& config, const ClientOptions& options,
                       const std::atomic<bool>* stop);

}  // namespace layerfl

#endif  // LAYERFL_CLIENT_DAEMON_CLIENT_H_
