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
//
// The run's config comes from the coordinator (GetRunConfig, before Join):
// a client needs no config file. One that has its own either checks it
// against the run's (refused at start, naming the first field that differs)
// or supplies only the machine-local fields (IsMachineLocalField: threads,
// paths, profiling) to the coordinator's config.

#include <atomic>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "client/daemon/daemon.h"
#include "common/util/cgroup.h"
#include "client/daemon/grpc_link.h"
#include "common/config/config.h"
#include "common/http/http_listener.h"

namespace layerfl {

// Where a client's run config comes from.
enum class ConfigSource {
  // The coordinator's; `local_config`, when set, gives only the
  // machine-local fields.
  kRun,
  // `local_config`, once checked against the coordinator's: a field that
  // defines the run and differs refuses the start (FailedPrecondition naming
  // it). A coordinator that does not serve its config is not asked again.
  kCheck,
  // `local_config` as it is, without asking (the coordinator then refuses
  // or fails what does not fit; tests of those failures).
  kLocal,
};

struct ClientOptions {
  // This machine's config file, parsed; required unless config_source is
  // kRun.
  std::optional<RunConfig> local_config;
  ConfigSource config_source = ConfigSource::kRun;
  // Machine-local overrides after the config is resolved: > 0 sets
  // `threads`, non-empty sets data.dir (where the full dataset lives, for
  // --partition) and model.hf_dir (a Hugging Face model's checkpoint
  // directory: its config.json and tokenizer files; the weights come from
  // the coordinator).
  int threads = 0;
  std::string dataset_dir;
  std::string hf_dir;
  // The budget flags as given (see DeclaredBudget); resolved once the run's
  // budget.unit is known.
  double budget = 0, budget_s = 0, budget_mb = 0;
  // The client's own data directory; "" = use `partition`.
  std::string data_dir;
  // Index into the run's client partitions when data_dir is "".
  int partition = 0;
  // client_id "" = PartitionClientId(partition); required with data_dir.
  // daemon.token is the token every hosted id presents unless
  // client_tokens is set.
  DaemonOptions daemon;
  // Per-client tokens (a tokens file: client id -> token): each id presents
  // its own; an id without one is InvalidArgument naming it. Empty = none.
  std::map<std::string, std::string> client_tokens;
  GrpcLinkOptions link;
  // Where downloaded layers are kept as they arrive, so that a restarted
  // daemon resumes a download (and holds the model) from what it had (a
  // hosted client: its own subdirectory, named by its id). "" = none.
  std::string download_cache_dir;
  // Fault injection for tests and trials: the process ends at once (as if
  // killed) after this many downloaded layers are cached; 0 = never. Needs
  // download_cache_dir.
  int64_t exit_after_download_layers = 0;
  // This daemon's Prometheus /metrics (client_metrics.h); address "" =
  // none (the default: several clients may share a machine).
  HttpListenerOptions http{"", ""};
  // When set, the metrics listener's port is written there once listening.
  std::string http_port_file;
  // Set: only measure this machine's training profile (cached as for a run),
  // write it here as one key=value line and return, without connecting.
  std::ostream* print_profile = nullptr;
  // The limits of the cgroup the daemon runs in (a container's mem_limit
  // and cpus; main reads them), reported with every update. With a memory
  // limit, no budget_mb and budget_from_cgroup, the client declares
  // budget_mb = CgroupBudgetMb(limit, its resident memory at that point):
  // its budget when budget.unit is memory (unless --budget gives one), else
  // a cap.
  CgroupLimits device;
  bool budget_from_cgroup = true;
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

// How the refusal of a local config that is not the run's begins.
inline constexpr char kNotTheRunsConfig[] =
    "config: this client's config is not the run's: ";

// The config this client runs (see ConfigSource), from `link`'s
// coordinator when it is asked. InvalidArgument: the run's YAML does not
// parse, or (kCheck) the local config differs from the run's: message
// kNotTheRunsConfig + "<field>: this config has <v>, the run's has <w>".
absl::StatusOr<RunConfig> ResolveClientConfig(const ClientOptions& options,
                                              const std::string& client_id,
                                              CoordinatorLink& link,
                                              const std::atomic<bool>* stop);

// InvalidArgument: the config or options are unusable, or the local config
// is not the run's. Otherwise as RunClientDaemon.
absl::Status RunClient(const ClientOptions& options,
                       const std::atomic<bool>* stop);

// Many clients in one process (a worker): each is its own client daemon
// (own id, session, heartbeats, polls, replica) on its own thread, and all
// share one model replica and the machine's cores, training one at a time as
// their tasks come, so that K workers on K machines host a federation of
// thousands. Each computes exactly what a one-client process (and the
// simulator's virtual client) with the same id and data computes.
struct HostedClients {
  // Partitions first..last (inclusive) of the run config's data, as
  // --partition; ids PartitionClientId(i).
  int first_partition = -1, last_partition = -1;
  // Or these ids, each with its own data in data_root/<id> (as --data_dir).
  std::vector<std::string> ids;
  std::string data_root;
};

// "client-000..client-099" -> client-000, client-001, ..., client-099: the
// same prefix, a numeric suffix of the same width, first <= last. A single
// id is itself. InvalidArgument naming the range otherwise.
absl::StatusOr<std::vector<std::string>> ParseIdRange(const std::string& range);

// "0..249" -> {0, 249}; InvalidArgument naming the range otherwise.
absl::StatusOr<std::pair<int, int>> ParsePartitionRange(
    const std::string& range);

// Runs every hosted client until each has returned (options.data_dir and
// partition are not used; options.daemon.client_id neither). OK when every
// client saw the run finish; else the first client error, prefixed with its
// id.
absl::Status RunHostedClients(const ClientOptions& options,
                              const HostedClients& hosted,
                              const std::atomic<bool>* stop);

}  // namespace layerfl

#endif  // LAYERFL_CLIENT_DAEMON_CLIENT_H_
