#ifndef LAYERFL_SERVER_ROUND_ROUND_ENGINE_H_
#define LAYERFL_SERVER_ROUND_ROUND_ENGINE_H_

// The coordinator's round state machine (DESIGN.md §1), free of any transport:
// it knows client ids and messages, never gRPC types. The simulator drives it
// in-process; the gRPC service is a thin adapter over it.
//
// A round goes: sample -> (score) -> select -> train -> aggregate -> evaluate
// -> commit. Clients pull their task (TaskFor) and push results
// (SubmitScores / SubmitUpdate); the engine moves to the next phase as soon as
// every participant has answered, or at the phase deadline (checked by Tick)
// with the participants that answered, if they reach the quorum. A round that
// misses its quorum is abandoned (nothing of it is kept) and retried, up to
// max_round_retries times. Updates are folded into per-layer running sums as
// they arrive; every update is checked first and a refused one changes
// nothing. The committed round is written to the checkpoint store before the
// next round starts.
//
// Scoring: with importance.source pass every participant scores every
// selection_period rounds (and whenever one has no scores yet); with
// source train (scores_from_training) only the participants without scores,
// or due a refresh, score, and the others wait for that phase to end; a
// round where no participant needs a pass has no scoring phase. Their
// updates carry their trained groups' first-step scores (ScoreBook).
//
// Thread-safe: every method may be called from any thread.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/layers/profile.h"
#include "common/secagg/secagg.h"
#include "common/util/clock.h"
#include "common/weights/weights.h"
#include "server/aggregator/aggregator.h"
#include "server/checkpoint/checkpoint_store.h"

namespace layerfl {

struct ClientInfo {
  ClientInfo() = default;
  ClientInfo(std::string id_in, int64_t num_samples_in, double budget_in)
      : id(std::move(id_in)), num_samples(num_samples_in), budget(budget_in) {}

  std::string id;
  int64_t num_samples = 0;  // >= 1
  double budget = 0.0;      // in the run's cost unit, > 0
  // What training costs on the client's machine (budget units time and
  // memory need it); null when it reported none. Shared, immutable.
  std::shared_ptr<const TrainingProfile> profile;
  // Device speed relative to the profiled machine (simulated devices), > 0.
  double speed = 1.0;
  // Caps the client declared besides its budget, by its profile: seconds of
  // compute per round and MiB of peak training memory; 0 = none.
  double max_time_s = 0;
  double max_memory_mb = 0;
};

// One participant's view of the round handed to the selector.
struct SelectionCandidate {
  std::string id;
  int64_t num_samples = 0;
  double budget = 0.0;
  std::vector<double> scores;  // per layer; empty when none were asked for
  bool scored = false;         // `scores` come from this round's scoring pass
  int score_from = 0;          // ... which started at this group
  std::shared_ptr<const TrainingProfile> profile;
  double speed = 1.0;
  double max_time_s = 0;  // as ClientInfo
  double max_memory_mb = 0;
};

struct SelectionOutcome {
  std::vector<std::vector<std::string>> layers;  // per candidate, model order
  // Per candidate: the cost of its selection by its own cost model, in the
  // budget's unit (memory in MiB); empty when the selector does not say.
  std::vector<double> costs;
  double objective = 0.0;
  double upper_bound = 0.0;
  double gap = 0.0;
  std::string solver_status;
  double solve_ms = 0.0;
};

// Picks each participant's layers. Implemented over server/selection by
// CreateLayerSelector (server/round/selector.h); tests use fakes.
class LayerSelector {
 public:
  virtual ~LayerSelector() = default;
  // Whether participants must report importance scores before selection.
  virtual bool NeedsScores() const = 0;
  // Deterministic given (candidates, round) and the selector's state.
  virtual absl::StatusOr<SelectionOutcome> Select(
      const std::vector<SelectionCandidate>& candidates, int64_t round) = 0;
  // Called once per committed round with what was selected and scored, to
  // update the regulation statistics.
  virtual void OnCommitted(const std::vector<SelectionCandidate>& candidates,
                           const SelectionOutcome& outcome) = 0;
  // The lowest group `candidate` (scored = true) should score from this
  // round because it could not afford to train anything below it with the
  // pass priced in (importance.depth: affordable); 0 = no such limit.
  virtual int ScoringDepth(const SelectionCandidate& candidate) const {
    (void)candidate;
    return 0;
  }
  // Regulation statistics as bytes, stored with each checkpoint.
  virtual std::string SaveState() const = 0;
  virtual absl::Status RestoreState(const std::string& bytes) = 0;
};

struct EvalMetrics {
  double accuracy = 0.0;
  double loss = 0.0;
};

// Evaluates the global model on held-out data (blocking).
class Evaluator {
 public:
  virtual ~Evaluator() = default;
  virtual absl::StatusOr<EvalMetrics> Evaluate(const ModelWeights& weights) = 0;
};

// kAdvertise, kShareKeys and kUnmask are the steps secure aggregation adds
// around kTrain (privacy.secure_aggregation; common/secagg/secagg.h).
enum class TaskKind {
  kWait,
  kScore,
  kTrain,
  kFinished,
  kAdvertise,
  kShareKeys,
  kUnmask
};

struct Task {
  TaskKind kind = TaskKind::kWait;
  int64_t round = 0;
  std::vector<std::string> layers;  // kTrain: the groups to train
  // kTrain: per entry of `layers`, how many of the round's participants were
  // given that layer (local differential privacy sizes its noise share by
  // it).
  std::vector<int> layer_participants;
  absl::Time deadline = absl::InfiniteFuture();
  // Secure aggregation. kShareKeys: the round's roster; kTrain: the shares
  // relayed to this client; kUnmask: what the coordinator asks it to reveal.
  std::shared_ptr<const SecAggRoster> roster;
  std::vector<SecAggShare> shares;
  std::shared_ptr<const SecAggUnmaskRequest> unmask;
  // kScore: the lowest layer group to score (groups below report 0 and are
  // not back-propagated through): the client's memory limit (its budget in
  // unit memory, or its declared memory cap) holds no deeper scoring pass
  // by its profile. 0 = all.
  int score_from = 0;
};

// What a participant measured its round took (ReportUsage); -1 = not
// reported.
struct ClientUsage {
  double score_s = -1;      // the scoring pass
  double train_s = -1;      // the local training
  int64_t peak_bytes = -1;  // peak training memory
  // Peak of the scoring pass (held to a memory limit by Task::score_from).
  int64_t score_peak_bytes = -1;
  // The client process's peak resident memory and its device's cgroup
  // limits, as it reported them with its update.
  int64_t process_peak_bytes = -1;
  int64_t memory_limit_bytes = -1;
  double cpus = -1;
};

struct ClientRoundRecord {
  std::string id;
  double budget = 0.0;
  std::vector<std::string> layers;
  bool contributed = false;
  std::vector<double> scores;  // as reported this round; empty if none
  // importance.source train: per layer, the age in rounds of the score
  // selection saw (-1: the cohort's mean stood in) and where it came from
  // ("pass", "train", "cohort"); empty otherwise.
  std::vector<int64_t> score_age;
  std::vector<std::string> score_source;
  int score_from = -1;  // the scoring pass of this round started here; -1 none
  double cost = -1;            // predicted cost of `layers`; -1 unknown
  ClientUsage usage;
  // Asynchronous rounds: the commits since the global version the update
  // was trained from, and the staleness weight each of `layers` was folded
  // in with. -1 / empty in synchronous rounds (and left out of the JSON).
  int64_t staleness = -1;
  std::vector<double> layer_weights;
};

// What one committed round produced; one JSONL line of metrics.
struct RoundRecord {
  int64_t round = 0;
  int attempt = 0;
  bool evaluated = false;
  EvalMetrics eval;
  std::vector<ClientRoundRecord> clients;
  std::vector<std::string> changed_layers;
  double objective = 0.0, upper_bound = 0.0, gap = 0.0, solve_ms = 0.0;
  std::string solver_status;
  int64_t bytes_up = 0;    // delta payload bytes accepted this round (float32)
  int64_t bytes_down = 0;  // weights sent to clients; filled by the transport
  // Wire bytes of the updates the transport accepted in the committed
  // attempt (float16/bfloat16 halve them); -1 = no transport (the
  // simulator), and then left out of the JSON.
  int64_t wire_bytes_up = -1;
  std::map<std::string, int64_t> rejected;  // reason -> count, this round
  std::map<std::string, double>
      phase_ms;  // score/train/aggregate/eval/checkpoint
  // "time" or "memory": the usage entries add measured / budget in that unit.
  std::string budget_unit;
  // Differential privacy (when on): epsilon spent so far at the run's delta,
  // the clip norm this round used, and the noise multiplier it was
  // accounted with (the update's, joint with the scores' when it scored).
  bool private_round = false;
  double epsilon = 0, delta = 0, clip_norm = 0, noise_multiplier = 0;
  // Local mode: epsilon against the coordinator, which knows the sample and
  // sees every round's noised sum (accounted as if every client took part
  // every round: no amplification by subsampling); -1 in central mode,
  // where the coordinator is trusted with the updates.
  double epsilon_coordinator = -1;
  // The participants were drawn from privacy.dp.insecure_sampling_seed, not
  // the OS's CSPRNG: "sampling":"insecure_seed" in the JSON.
  bool insecure_sampling = false;
  // Secure aggregation: how many clients the committed attempt's roster
  // held (its quantization scale follows from it); 0 = not secure.
  int secagg_roster = 0;
  // One JSON line. Everything measured (timings, each client's usage) comes
  // last, after "timing_ms", so that determinism checks can cut it off.
  std::string ToJson() const;
};

// A client's measured usage in the budget's unit (time: score + train
// seconds; memory: peak MiB of training or scoring, the higher), or -1 when the
// unit is not time or memory or the client did not report it.
double MeasuredInBudgetUnit(const ClientRoundRecord& client,
                            const std::string& budget_unit);

// The run's report of measured / budget: per client the rounds, its budget,
// the mean and the largest ratio; over all client-rounds the median, 95th
// percentile and maximum. Empty when no record has measured usage.
std::string UsageReport(const std::vector<RoundRecord>& records);

// Differential privacy as the engine applies and accounts it (privacy.dp of
// the config; common/privacy). The clients privatise their scores (and, in
// local mode, clip and noise their updates) themselves; the engine clips and
// noises in central mode, adapts the clip norm, and accounts every release:
// a committed round is one subsampled Gaussian mechanism on the round's
// sample (rate = participants / joined clients) whose multiplier is the
// update's, joint with the scores' when the round scored; an abandoned
// attempt that collected scores is accounted as the scores' release alone.
struct PrivacyOptions {
  bool enabled = false;
  bool central = true;  // false: local mode
  bool adaptive = false;
  double clip_norm = 1.0;         // the (initial) clip norm, > 0
  double noise_multiplier = 1.0;  // of the whole update release, > 0
  double count_noise_std = 1.0;   // adaptive: the clip count's noise std
  double target_quantile = 0.5;
  double clip_lr = 0.2;
  double score_noise_multiplier = 1.0;
  double delta = 1e-5;
  double target_epsilon = 0;  // 0 = none
  uint64_t noise_seed = 0;    // 0 = keys from the OS
  // 0: each round's participants are drawn with the OS's CSPRNG (the
  // subsampling amplification relies on a sample nobody can predict); any
  // other value seeds the draw (experiments only; marked in the records).
  uint64_t insecure_sampling_seed = 0;
};

// Secure aggregation (privacy.secure_aggregation). After selection a round
// runs four steps among its participants, each with the round deadline:
// advertise keys, share them, train and upload the masked update, reveal
// what unmasking needs. The participants that advertised fix the roster and
// the threshold t = max(2, ceil(threshold * advertisers)); fewer than
// max(t, min_clients) answers at a step abandons the attempt (retried as any
// round that misses quorum). Needs uniform aggregation.
struct SecAggOptions {
  bool enabled = false;
  double threshold = 0.66;   // fraction of the roster, in (0, 1]
  double value_range = 1.0;  // every value is clipped to +-this, > 0
  // A replay (server/sim/replay.h): round r quantizes with the headroom of
  // replay_roster[r] participants, the roster size the recorded run had
  // (RoundRecord::secagg_roster). Empty = the roster's own size.
  std::map<int64_t, int> replay_roster;
};

// Buffered asynchronous aggregation (federated.mode: async; FedBuff,
// Nguyen et al. 2022). Up to clients_per_round clients (0 = every joined
// one) hold a task at once; a free place goes to an idle joined client
// drawn from (seed, draw count). A client scores first when the strategy
// needs scores and its last ones are selection_period or more commits old,
// then trains the layers selected for it from its last scores (alone, or
// with `cohort` of the clients in flight), from the global version it
// fetched. Each arriving update is checked and folded
// into the buffer at once, layer l weighted by StalenessWeight of the
// versions layer l moved since that fetch, and every buffer_size updates
// the buffer is committed as one "round":
//   w_l += server_lr * sum_i a_i s(t_il) delta_il / sum_i a_i
// An update trained from a version more than max_staleness commits old is
// refused (too_stale) and its client's place freed. A task not answered
// within round_deadline frees its place. With a checkpoint store, every
// task handed out, score and update accepted is journaled (durable before
// it is acknowledged) until the next checkpoint, so a coordinator that dies
// mid-buffer resumes with the same buffer and tasks.
struct AsyncOptions {
  bool enabled = false;
  int buffer_size = 10;
  int max_staleness = 20;
  std::string staleness = "polynomial";  // constant, polynomial, hinge
  double exponent = 0.5;                 // polynomial: (1 + t)^-exponent
  double hinge_a = 10.0;  // hinge: 1 while t <= b, then 1 / (a (t - b) + 1)
  int hinge_b = 4;
  // > 0: a client's layers are selected jointly with up to this many of the
  // clients holding training tasks (in id order; those with scores when the
  // strategy needs them), and only its own row is kept.
  int cohort = 0;
};

// s(t) of `options.staleness` for t >= 0 versions moved; in (0, 1].
double StalenessWeight(const AsyncOptions& options, int64_t t);

struct RoundEngineOptions {
  int64_t rounds = 20;
  int clients_per_round = 10;  // 0 = all joined clients
  int min_clients = 1;
  int selection_period = 1;
  int eval_every = 1;
  absl::Duration round_deadline = absl::Seconds(300);
  int max_round_retries = 3;
  AggregatorOptions aggregation;
  uint64_t seed = 1;
  std::string budget_unit = "layers";  // copied into every RoundRecord
  PrivacyOptions privacy;
  SecAggOptions secagg;
  AsyncOptions async;  // privacy and secure aggregation must be off with it
  // importance.source train (synchronous rounds): scores from the first
  // local step, kept per client and layer with their age (ScoreBook); a
  // client runs a scoring pass only when it has none or its last is
  // score_refresh_period (> 0) rounds old.
  bool scores_from_training = false;
  int score_refresh_period = 0;
  double score_decay = 0.8;
};

// What changed for the clients' tasks since an earlier task epoch
// (RoundEngine::TaskChangesSince).
struct TaskChanges {
  uint64_t epoch = 0;  // the task epoch now
  bool all = false;    // anyone's task may have changed
  // Else: only these clients' (may repeat; empty = nobody's).
  std::vector<std::string> clients;
};

class RoundEngine {
 public:
  struct Deps {
    Clock* clock = nullptr;             // required, not owned
    LayerSelector* selector = nullptr;  // required, not owned
    Evaluator* evaluator = nullptr;     // optional, not owned
    CheckpointStore* store = nullptr;   // optional, not owned
  };

  // Starts from `initial`, or from the store's latest checkpoint when there
  // is one (`resumed()` tells). A corrupt latest checkpoint is an error.
  // The synchronous engine, or the asynchronous one with options.async.
  static absl::StatusOr<std::unique_ptr<RoundEngine>> Create(
      const RoundEngineOptions& options, ModelWeights initial, Deps deps);

  virtual ~RoundEngine() = default;

  // Registers (or re-registers, e.g. after a reconnect) a client. Clients
  // joining mid-round take part from the next round.
  virtual absl::Status Join(const ClientInfo& client) = 0;
  virtual void Leave(const std::string& client_id) = 0;

  // Begins the next round when none is running and the run is not over.
  // FailedPrecondition when fewer than min_clients have joined. When the
  // round would take epsilon past privacy.target_epsilon it starts nothing
  // and ends the run instead (OK; finished() is then true).
  virtual absl::Status StartRound() = 0;

  // The client's current task: kScore/kTrain while it has one outstanding in
  // the running round, kFinished once the run is over, else kWait.
  virtual Task TaskFor(const std::string& client_id) = 0;

  // Results. Refusals (unknown client, stale round, not a participant,
  // duplicate, malformed update) use aggregator.h's Rejection() so the reason
  // is machine-readable, are counted in the round's metrics, and change
  // nothing.
  virtual absl::Status SubmitScores(const std::string& client_id, int64_t round,
                                    const std::vector<double>& scores) = 0;
  // OK when an update (plain or masked) from `client_id` for `round` would
  // be admitted now, else the refusal its Submit would give for who and
  // when (unknown_client, not_assigned, stale_round, duplicate), not
  // counted: for transports that check a stream at its first message.
  virtual absl::Status CheckUpload(const std::string& client_id,
                                   int64_t round) = 0;
  virtual absl::Status SubmitUpdate(const std::string& client_id, int64_t round,
                                    int64_t num_samples,
                                    const std::vector<LayerDelta>& update) = 0;
  // SubmitUpdate for an update kept on disk: `shapes` holds its layers and
  // tensors with empty values, `values` reads them (aggregator.h's
  // DeltaSource). The synchronous engine folds it a tensor at a time without
  // holding it whole; the default reads it into memory and calls
  // SubmitUpdate. An error of `values` is returned as it is.
  virtual absl::Status SubmitUpdateFrom(const std::string& client_id,
                                        int64_t round, int64_t num_samples,
                                        std::vector<LayerDelta> shapes,
                                        DeltaSource& values);

  // The secure-aggregation steps (Task's kAdvertise, kShareKeys, kTrain,
  // kUnmask). Refusals as the other results, with reason kProtocol for what
  // common/secagg refuses; SubmitUpdate is refused (kProtocol) while secure
  // aggregation is on, and these while it is off.
  virtual absl::Status SubmitAdvert(const std::string& client_id, int64_t round,
                                    const SecAggAdvert& advert) = 0;
  virtual absl::Status SubmitShares(const std::string& client_id, int64_t round,
                                    const std::vector<SecAggShare>& shares) = 0;
  virtual absl::Status SubmitMasked(const std::string& client_id, int64_t round,
                                    const SecAggMaskedInput& input) = 0;
  virtual absl::Status SubmitUnmask(const std::string& client_id, int64_t round,
                                    const SecAggUnmaskResponse& response) = 0;

  // What a participant of the running round measured (a client's word, for
  // the metrics only): its fields >= 0 replace the ones recorded so far.
  // Send it before the scores or update it belongs to. Not a participant of
  // `round`, or a negative / non-finite value where one is given:
  // InvalidArgument / FailedPrecondition; never counted as a refusal, never
  // touches the model.
  virtual absl::Status ReportUsage(const std::string& client_id, int64_t round,
                                   const ClientUsage& usage) = 0;

  // Enforces the current phase's deadline: drops participants that have not
  // answered, then moves on (quorum met) or abandons the round for a retry.
  // An error means the run cannot go on (retries exhausted, evaluation or
  // checkpoint failure).
  virtual absl::Status Tick() = 0;

  // Snapshot accessors.
  virtual int64_t committed_round() const = 0;  // 0 before the first commit
  virtual bool round_running() const = 0;
  // The running round's phase ("scoring", "advertising keys", "sharing
  // keys", "training", "unmasking"), or "not running".
  virtual std::string phase() const = 0;
  // Changes whenever a client told to wait may have a task now: a phase
  // begins or ends, or the run ends. The transport re-asks TaskFor for its
  // waiting long polls only then (so that an idle client costs nothing per
  // operation).
  virtual uint64_t task_epoch() const = 0;
  // Since `since` (an earlier task_epoch()): whose TaskFor answers may have
  // changed — everyone's, or only some clients' (the asynchronous engine
  // hands one place at a time: re-asking 10,000 waiting polls per update
  // would make each update cost O(connected clients)). The default:
  // everyone's whenever the epoch moved.
  virtual TaskChanges TaskChangesSince(uint64_t since) const {
    TaskChanges c;
    c.epoch = task_epoch();
    c.all = c.epoch != since;
    return c;
  }
  // The run is over: every round committed, or (privacy.dp.target_epsilon)
  // the next round would spend more than the target.
  virtual bool finished() const = 0;
  // Epsilon spent so far (0 without differential privacy).
  virtual double epsilon() const = 0;
  virtual bool resumed() const = 0;
  // A copy of the global model (the model's size again: the simulator's
  // and tests' accessor).
  virtual ModelWeights global() const = 0;
  // Calls `visit` with the global model under the engine's lock, without a
  // copy; `visit` must not block or call into the engine.
  virtual void VisitGlobal(
      absl::FunctionRef<void(const ModelWeights&)> visit) const = 0;
  // Versions of every layer in model order.
  virtual std::vector<int64_t> layer_versions() const = 0;
  // Records of rounds committed since the last call (oldest first).
  virtual std::vector<RoundRecord> TakeRecords() = 0;
  // Total refusals by reason over the engine's life.
  virtual std::map<std::string, int64_t> rejected_total() const = 0;
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_ROUND_ROUND_ENGINE_H_
