#ifndef LAYERFL_CLIENT_DAEMON_DAEMON_H_
#define LAYERFL_CLIENT_DAEMON_DAEMON_H_

// The client daemon's loop (DESIGN.md §1): join the coordinator, long-poll
// for tasks, keep a replica of the global model up to date by fetching only
// the layers whose version changed (layer-versioned sync), score or train,
// report, and repeat until the run is finished. Torch-free: the work itself
// is injected (ClientWork; LocalWorker in layerfl-client) and so is the
// transport (CoordinatorLink; gRPC in production, fakes in tests).
//
// Failures. A coordinator that is unavailable (down, restarting) is retried
// with exponential backoff, capped at `backoff_max`, for up to `give_up`
// without any successful call; an unknown session (the coordinator restarted
// or dropped this client) leads to joining again; a refused result (stale
// round, dropped at the deadline) is logged and the loop goes on. A failure
// of the local work, or a refusal of the join itself, ends the daemon.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/codec/codec.h"
#include "common/layers/profile.h"
#include "common/secagg/secagg.h"
#include "common/weights/weights.h"

namespace layerfl {

// One client's local work at a given global model (see common/worker).
// What the last Score or Train call of a ClientWork took on this machine;
// zeros when it does not measure.
struct WorkCost {
  double seconds = 0.0;
  int64_t peak_bytes = 0;
  // The process's peak resident memory so far and its cgroup's limits (the
  // device it runs on), reported beside the work; 0 = unknown / none.
  int64_t process_peak_bytes = 0;
  int64_t memory_limit_bytes = 0;
  double cpus = 0.0;
};

class ClientWork {
 public:
  virtual ~ClientWork() = default;
  virtual int64_t num_samples() const = 0;
  // Per-layer importance scores of `metric`, model order, of the groups from
  // `score_from` upward (0 below; see ClientTask::score_from).
  virtual absl::StatusOr<std::vector<double>> Score(const ModelWeights& global,
                                                    int64_t round,
                                                    const std::string& metric,
                                                    int score_from) = 0;
  // The deltas of the trained `layers`, model order; `layer_participants`
  // is the task's (see ClientTask).
  virtual absl::StatusOr<std::vector<LayerDelta>> Train(
      const ModelWeights& global, int64_t round,
      const std::vector<std::string>& layers,
      const std::vector<int>& layer_participants) = 0;
  // What the last Score / Train call took.
  virtual WorkCost LastScoreCost() const { return {}; }
  virtual WorkCost LastTrainCost() const { return {}; }
};

// The client's copy of the global model.
struct Replica {
  std::string run_id;            // "" = holds nothing
  int64_t committed_round = -1;  // the round the weights are as of
  ModelWeights weights;          // layers in model order, with versions
  // A first download of run `partial_run_id` that broke off (or that a
  // restarted daemon found in its LayerCache): the layers that arrived
  // whole, by name. The next Fetch declares them held and asks for the rest
  // only. Empty once `run_id` is set.
  std::string partial_run_id;
  std::map<std::string, LayerWeights> partial;
};

// Keeps a download's layers as they arrive, so that a daemon restarted in
// the middle of a download (or after it) resumes from the last complete
// layer instead of from scratch. Implementations need not be thread-safe
// (one daemon loop uses one). File-backed: CreateFileLayerCache.
class LayerCache {
 public:
  virtual ~LayerCache() = default;
  // Stores `layer` of run `run_id`, replacing that layer's earlier version;
  // layers of another run are dropped first.
  virtual absl::Status Put(const std::string& run_id,
                           const LayerWeights& layer) = 0;
  // What is stored, as a replica's partial download (partial_run_id and
  // partial; empty when nothing is). Damaged entries are skipped and
  // removed, never returned.
  virtual absl::StatusOr<Replica> Load() = 0;
};

struct JoinParams {
  std::string client_id;
  std::string token;
  double budget = 0.0;  // declared; 0 = none
  int64_t num_samples = 0;
  std::shared_ptr<const TrainingProfile> profile;  // null = none
  double max_time_s = 0;  // caps by the profile; 0 = none
  double max_memory_mb = 0;
};

struct JoinInfo {
  std::string run_id;
  Encoding encoding = Encoding::kFloat32;
  int64_t max_chunk_bytes = 0;
  absl::Duration heartbeat = absl::Seconds(5);
  double budget = 0.0;
};

// kAdvertise, kShareKeys, kUnmask: secure aggregation's steps around kTrain.
enum class ClientTaskKind {
  kWait,
  kScore,
  kTrain,
  kFinished,
  kAdvertise,
  kShareKeys,
  kUnmask
};

struct ClientTask {
  ClientTaskKind kind = ClientTaskKind::kWait;
  int64_t round = 0;
  std::vector<std::string> layers;
  // kTrain: per entry of `layers`, the round's participants given it (local
  // differential privacy sizes its noise by it); may be empty.
  std::vector<int> layer_participants;
  absl::Duration time_left = absl::ZeroDuration();
  std::string metric;
  // kScore: the lowest layer group to score; the coordinator lowers no
  // further than the client's memory limit holds by its profile. 0 = all.
  int score_from = 0;
  // Secure aggregation: kShareKeys the roster, kTrain the relayed shares
  // (the update then goes masked), kUnmask the request.
  std::shared_ptr<const SecAggRoster> roster;
  std::vector<SecAggShare> shares;
  std::shared_ptr<const SecAggUnmaskRequest> unmask;
};

struct TransferStats {
  std::vector<std::string> layers;
  int64_t wire_bytes = 0;
  int64_t payload_bytes = 0;
  int64_t numel = 0;
  // Wall seconds of the transfer (set by the daemon).
  double seconds = 0;
  // Fetch: layers not sent because an earlier download that broke off (or
  // the LayerCache of a restarted daemon) already held them.
  int64_t resumed_layers = 0;
  // Fetch: the first error of the LayerCache (it was not written to
  // after); "" = none. The download itself does not fail for it.
  std::string cache_error;
};

// The coordinator as the daemon sees it. Join keeps the session for the
// later calls. Implementations are thread-safe (Heartbeat runs on its own
// thread). Errors are absl::Status with the coordinator's reason prefix.
class CoordinatorLink {
 public:
  virtual ~CoordinatorLink() = default;
  // The run's config as YAML (RunConfigToYaml), before Join.
  virtual absl::StatusOr<std::string> GetRunConfig(
      const std::string& client_id, const std::string& token) = 0;
  virtual absl::StatusOr<JoinInfo> Join(const JoinParams& params) = 0;
  // `reason`: "" when the run is over or the daemon was stopped; else why
  // it leaves ("work_failed: ..."), so the coordinator stops waiting for it.
  virtual absl::Status Leave(const std::string& reason) = 0;
  virtual absl::Status Heartbeat() = 0;
  virtual absl::StatusOr<ClientTask> GetTask(absl::Duration wait) = 0;
  // Brings `replica` up to date: sends the held versions (or, with no
  // complete replica, those of its partial download), receives only the
  // changed layers. Every layer that arrives whole is kept, in the replica
  // and in `cache` (null = none), even when the stream then breaks off: on
  // error the replica holds what it held plus those layers (in `partial`
  // for a first download), never a layer that failed its checks, and the
  // next Fetch resumes. On success the replica is the coordinator's model
  // as of the manifest's round.
  virtual absl::StatusOr<TransferStats> Fetch(Replica& replica,
                                              LayerCache* cache) = 0;
  // `cost`: what scoring / training took, sent along for the metrics.
  virtual absl::Status ReportScores(int64_t round,
                                    const std::vector<double>& scores,
                                    const WorkCost& cost) = 0;
  // `time_left`: how long the coordinator still waits for this update.
  virtual absl::StatusOr<TransferStats> Upload(
      int64_t round, int64_t num_samples, const std::vector<LayerDelta>& update,
      absl::Duration time_left, const WorkCost& cost) = 0;
  // Secure aggregation: the key steps, and the masked update (chunked).
  virtual absl::Status SendAdvert(int64_t round,
                                  const SecAggAdvert& advert) = 0;
  virtual absl::Status SendShares(int64_t round,
                                  const std::vector<SecAggShare>& shares) = 0;
  virtual absl::Status SendUnmask(int64_t round,
                                  const SecAggUnmaskResponse& response) = 0;
  virtual absl::StatusOr<TransferStats> UploadMasked(
      int64_t round, const SecAggMaskedInput& input, absl::Duration time_left,
      const WorkCost& cost) = 0;
};

struct TaskRecord;

// Told what the daemon does, for its metrics (client_metrics.h). Called on
// the daemon's thread; must not block.
class DaemonObserver {
 public:
  virtual ~DaemonObserver() = default;
  // After each successful Join; `joins` counts them (1 + rejoins).
  virtual void OnJoin(int joins) = 0;
  // After each task the daemon worked on: its record, and what the local
  // work took (zeros for tasks without local work).
  virtual void OnTask(const TaskRecord& record, const WorkCost& cost) = 0;
};

struct DaemonOptions {
  std::string client_id;  // required
  std::string token;      // the run's shared secret; "" = none
  double budget = 0.0;    // declared budget; 0 = let the coordinator decide
  // This machine's training profile, sent at Join; null = none (the run's
  // budget.unit is layers or params).
  std::shared_ptr<const TrainingProfile> profile;
  // Caps by the profile the coordinator holds the selections to (besides
  // the budget): seconds per round and MiB of peak memory; 0 = none.
  double max_time_s = 0;
  double max_memory_mb = 0;
  absl::Duration poll = absl::Seconds(5);  // GetTask long-poll wait
  // The run aggregates securely (privacy.secure_aggregation.enabled): an
  // update only ever leaves masked. A TRAIN task this client holds no key
  // state for (it restarted after sharing its keys) or whose relayed shares
  // do not let it mask (fewer than t - 1 peers) is not answered: the daemon
  // leaves the round with the reason ("secagg_state_lost: ...",
  // "secagg_refused: ...") and joins again for the next one.
  bool secure_aggregation = false;
  // Refuse to take part in a run that does not aggregate securely (the
  // coordinator's config is its word: a client that must never send a plain
  // update says so itself). Implied by secagg_identity in layerfl-client.
  bool require_secure_aggregation = false;
  // Secure aggregation: this client's identity (signed adverts, the
  // roster's signatures checked against its operator's peer keys); null =
  // unsigned.
  std::shared_ptr<const SecAggIdentity> secagg_identity;
  // Secure aggregation's stochastic rounding: 0 = from the OS; else
  // reproducible (privacy.dp.noise_seed, as the simulator).
  uint64_t secagg_rounding_seed = 0;
  // Fault injection for tests: after its update of this round is accepted
  // the daemon stops dead (no Leave, no further answer) and returns
  // Aborted; 0 = never.
  int64_t exit_after_upload_round = 0;
  // Fault injection for tests: after its key shares of this round are
  // accepted the daemon stops dead (no Leave) and returns Aborted; 0 =
  // never.
  int64_t exit_after_shares_round = 0;
  // Fault injection for tests and trials: wait this long after training,
  // before each upload, as a slow device or link would; 0 = none.
  absl::Duration delay_upload = absl::ZeroDuration();
  // Reconnect backoff: first delay, cap, and how long without any successful
  // call before giving up (Unavailable).
  absl::Duration backoff_initial = absl::Milliseconds(200);
  absl::Duration backoff_max = absl::Seconds(5);
  absl::Duration give_up = absl::Seconds(120);
  // Keeps downloaded layers as they arrive; at start the daemon resumes
  // from what it holds. Null = memory only. Not owned.
  LayerCache* layer_cache = nullptr;
  // One line per event; null = silent. Not owned.
  std::ostream* log = nullptr;
  // Told of joins and tasks; null = none. Not owned.
  DaemonObserver* observer = nullptr;
};

struct TaskRecord {
  ClientTaskKind kind = ClientTaskKind::kWait;
  int64_t round = 0;
  TransferStats download;
  TransferStats upload;  // kTrain
  std::string outcome;   // "ok" or the refusal's reason
};

struct DaemonResult {
  int64_t last_round = 0;  // the coordinator's last committed round
  int joins = 0;           // 1 + rejoins
  std::vector<TaskRecord> tasks;
};

// Every refusal (a non-transient error of a report or an upload) waits a
// backoff step before the next poll, so that a refused client never loops
// hot.
//
// Runs until the coordinator says the run is finished (OK, after Leave), the
// coordinator stays unreachable for `give_up` (Unavailable), the local work
// fails (its error), the join is refused (the refusal), or `stop` becomes
// true (Cancelled, after Leave). Blocking.
absl::StatusOr<DaemonResult> RunClientDaemon(const DaemonOptions& options,
                                             ClientWork& work,
                                             CoordinatorLink& link,
                                             const std::atomic<bool>* stop);

// The run's config from the coordinator (GetRunConfig with the options'
// client_id and token), a transient failure retried with the options'
// backoff for up to `give_up`; Cancelled once `stop` is true. Blocking.
absl::StatusOr<std::string> FetchRunConfig(const DaemonOptions& options,
                                           CoordinatorLink& link,
                                           const std::atomic<bool>* stop);

// Whether a link error means "try again later" (coordinator down, restarting,
// overloaded or busy, a deadline passed, or the call cancelled by the
// coordinator).
bool IsTransient(const absl::Status& status);

}  // namespace layerfl

#endif  // LAYERFL_CLIENT_DAEMON_DAEMON_H_
