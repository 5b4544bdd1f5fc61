#ifndef LAYERFL_SERVER_AGGREGATOR_AGGREGATOR_H_
#define LAYERFL_SERVER_AGGREGATOR_AGGREGATOR_H_

// Layer-wise streaming aggregation of sparse client updates (DESIGN.md §1.5,
// §3). Each accepted update is folded into per-layer running weighted sums as
// it arrives, so memory is O(model) however many clients report. Commit then
// applies, for every layer that at least one client trained,
//
//   w_l += server_lr * (sum_i a_i * delta_il) / (sum_i a_i)
//
// over the clients i that trained layer l, with a_i = num_samples_i
// (weight_by_samples) or 1 (uniform), and bumps that layer's version. Layers
// that no client trained are left exactly as they were.
//
// Every update is validated as a whole before it touches the sums; a refused
// update leaves the aggregator bit-for-bit as it was, and its status carries a
// machine-readable RejectReason (see Rejection / ReasonOf).
//
// Torch-free. Sums are float32 (sample-count weights are applied as float32,
// exact up to 2^24 samples); results are deterministic for a given order of
// Add calls.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/privacy/noise.h"
#include "common/weights/weights.h"

namespace layerfl {

// Why an update (or another client message) was refused. The aggregator
// itself produces kUnknownLayer, kNotAssigned, kWrongShape, kNonFinite,
// kDuplicate and kBadSampleCount; kStaleRound and kUnknownClient are for the
// round engine and transports, which know rounds and clients.
enum class RejectReason {
  kUnknownLayer,
  kNotAssigned,
  kWrongShape,
  kNonFinite,
  kDuplicate,
  kStaleRound,
  kUnknownClient,
  kBadSampleCount,
  // A secure-aggregation message refused by the protocol (common/secagg),
  // or a plain update while the run aggregates securely.
  kProtocol,
  // Asynchronous rounds: trained from a global version more than
  // max_staleness commits old.
  kTooStale,
};

// "unknown_layer", "not_assigned", "wrong_shape", "non_finite", "duplicate",
// "stale_round", "unknown_client", "bad_sample_count", "protocol",
// "too_stale".
std::string_view RejectReasonName(RejectReason reason);

// A refusal status whose message is "<reason_name>: <detail>". The code is
// FailedPrecondition for kStaleRound, kTooStale and kDuplicate (the message
// was fine, the moment was not) and InvalidArgument for the others.
absl::Status Rejection(RejectReason reason, std::string detail);

// The reason of a status built by Rejection(), or nullopt for any other status
// (OK included). Survives the status being copied or re-wrapped with the same
// code and message, e.g. through a transport.
std::optional<RejectReason> ReasonOf(const absl::Status& status);

// Central differential privacy of one round's sums (privacy.dp, mode
// central; common/privacy/dp.h). Off while both fields are 0.
struct DpSumOptions {
  // > 0: every update is scaled to at most this L2 norm, all its layers
  // together, as it is folded in (the update itself is not modified).
  double clip_norm = 0;
  // >= 0: Commit adds N(0, noise_std^2) to every value of every layer sum
  // that has contributors, before dividing by their number.
  double noise_std = 0;
  NoiseKey noise_key{};  // the noise's key (common/privacy/noise.h)
};

struct AggregatorOptions {
  // Weight each client's delta by its sample count (FedAvg); false: uniform.
  // Default: true.
  bool weight_by_samples = true;
  // Server step size applied to the averaged delta; finite and > 0.
  // Default: 1.0 (plain averaging).
  double server_lr = 1.0;
  // Off by default; on, weight_by_samples must be false (a sample count would
  // scale a client's sensitivity).
  DpSumOptions dp;

  // InvalidArgument naming the field when an option is out of range.
  absl::Status Validate() const;
};

// What Commit did, layers in model order.
struct AggregateStats {
  std::vector<int> contributors;            // per layer; 0 = left unchanged
  std::vector<std::string> changed_layers;  // groups that were updated
  int num_clients = 0;                      // updates accepted
  // Each accepted update's L2 norm before clipping, in arrival order; filled
  // only when DpSumOptions::clip_norm > 0.
  std::vector<double> update_norms;
};

// The values of an update that is not in memory whole (an update the
// coordinator keeps on disk), read tensor by tensor in the update's order
// (its first layer's tensors in order, then the next layer's, ...). Read in
// two passes, each started by Rewind(): AddFrom checks every value in the
// first and folds in the second.
class DeltaSource {
 public:
  virtual ~DeltaSource() = default;
  virtual absl::Status Rewind() = 0;
  // The next tensor's `numel` values, valid until the next call. An error
  // (the source's own: unreadable, damaged) ends the pass.
  virtual absl::StatusOr<const float*> Next(size_t numel) = 0;
};

// One pass of `values` (rewound first) into the tensors of `update`, which
// hold their shapes: the update in memory whole. The source's error, if any
// (the tensors read until then keep their values).
absl::Status ReadDeltaValues(DeltaSource& values,
                             std::vector<LayerDelta>& update);

// One round's aggregation. Thread-safe: Add, Commit and the accessors may be
// called concurrently from any thread; the data checks of concurrent Adds run
// in parallel, only the folding into the sums is serialised.
class LayerAggregator {
 public:
  // Records the structure of `global` (groups, tensor names, shapes); the
  // values are not read and `global` is not retained, so it may be modified
  // or destroyed afterwards. Commit must be given a model of this structure,
  // normally the same object. Invalid `options` make every Add and Commit
  // fail with Validate()'s error.
  LayerAggregator(const ModelWeights& global, const AggregatorOptions& options);

  LayerAggregator(const LayerAggregator&) = delete;
  LayerAggregator& operator=(const LayerAggregator&) = delete;

  // Folds one client's update into the running sums. `update` must hold
  // exactly the groups in `assigned_groups` (any order), each once, with the
  // global group's tensors (names, order, shapes) and finite values.
  // Refusals (Rejection statuses, nothing changed):
  //   kDuplicate       the client already contributed, or a group appears
  //                    twice in the update
  //   kBadSampleCount  num_samples < 1 while weighting by samples
  //   kUnknownLayer    a group the model does not have
  //   kNotAssigned     a group not in assigned_groups, or an assigned group
  //                    missing from the update (no partial uploads)
  //   kWrongShape      tensor count, name or shape differs from the global
  //   kNonFinite       a NaN or Inf value
  // Other errors: InvalidArgument (no reason) when assigned_groups itself
  // names an unknown group or repeats one (a caller bug); FailedPrecondition
  // after Commit, or when the options are invalid.
  absl::Status Add(const std::string& client_id, int64_t num_samples,
                   const std::vector<LayerDelta>& update,
                   const std::vector<std::string>& assigned_groups);

  // Add with a multiplier per entry of `update` (same order; empty = all
  // 1): entry k's delta is folded in with weight a_i * scales[k] while the
  // layer's divisor still adds a_i, so that a scale < 1 shrinks the client's
  // contribution instead of renormalising it away (asynchronous aggregation's
  // staleness weights: w_l += lr * sum_i a_i s_il delta_il / sum_i a_i).
  // InvalidArgument (no reason) when the sizes differ or a scale is not
  // finite and > 0; otherwise as Add.
  absl::Status AddScaled(const std::string& client_id, int64_t num_samples,
                         const std::vector<LayerDelta>& update,
                         const std::vector<std::string>& assigned_groups,
                         const std::vector<double>& scales);

  // Add for an update whose values come from `values` (two passes, see
  // DeltaSource); `shapes` holds its layers and tensors as Add's `update`
  // does, with their values empty. Refusals as Add's, nothing changed; an
  // error of `values` in the first pass is returned as it is, nothing
  // changed. An error of `values` in the second pass leaves the sums partly
  // folded: the aggregator is then spent (DataLoss now, Add and Commit
  // FailedPrecondition after).
  absl::Status AddFrom(const std::string& client_id, int64_t num_samples,
                       const std::vector<LayerDelta>& shapes,
                       const std::vector<std::string>& assigned_groups,
                       DeltaSource& values);

  // Folds an already summed layer: `sums` (one vector per tensor of the
  // group, its shapes) is the sum of `contributors` (>= 1) clients' deltas,
  // each of weight 1 (uniform aggregation; secure aggregation hands its sums
  // over this way). Once per group, never mixed with Add for that group.
  // InvalidArgument for an unknown group, wrong sizes or non-finite values;
  // FailedPrecondition when the group already has contributors, when
  // weighting by samples, or after Commit.
  absl::Status AddLayerSum(const std::string& group, int contributors,
                           std::vector<std::vector<float>> sums);

  // Number of accepted updates that trained `group` (0 for unknown groups).
  int contributors(const std::string& group) const;
  // Clients whose update was accepted, in arrival order.
  std::vector<std::string> clients() const;

  // Applies the averaged deltas to `global` (see the file comment) and bumps
  // the versions of the changed layers. All or nothing: on error `global` is
  // untouched. Errors: FailedPrecondition when `global` does not have the
  // recorded structure, when already committed, or when the options are
  // invalid; OutOfRange when an updated weight would overflow to Inf. After
  // Commit (successful or not) the aggregator is spent: Add and Commit fail.
  absl::StatusOr<AggregateStats> Commit(ModelWeights& global);

 private:
  struct TensorSpec {
    std::string name;
    std::vector<int64_t> shape;
    size_t numel = 0;
  };
  struct LayerSpec {
    std::string group;
    std::vector<TensorSpec> tensors;
  };
  struct LayerSum {
    int contributors = 0;
    double total_weight = 0.0;
    std::vector<std::vector<float>> sums;  // per tensor; empty until first use
  };

  // Checks everything that does not depend on the aggregator's mutable state;
  // fills `layer_index[k]` with update[k]'s layer.
  // With `source`, the values of `update` are empty and read from it
  // (first pass; `norm_sq` gets their squared L2 norm).
  absl::Status Validate(const std::string& client_id, int64_t num_samples,
                        const std::vector<LayerDelta>& update,
                        const std::vector<std::string>& assigned_groups,
                        DeltaSource* source, std::vector<int>& layer_index,
                        double* norm_sq) const;
  absl::Status AddImpl(const std::string& client_id, int64_t num_samples,
                       const std::vector<LayerDelta>& update,
                       const std::vector<std::string>& assigned_groups,
                       const std::vector<double>& scales,
                       DeltaSource* source);
  absl::Status CheckUsable() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const AggregatorOptions options_;
  const absl::Status options_status_;
  std::vector<LayerSpec> layers_;  // immutable after construction
  absl::flat_hash_map<std::string, int> index_;

  mutable absl::Mutex mu_;
  std::vector<LayerSum> sums_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> clients_ ABSL_GUARDED_BY(mu_);
  std::vector<double> norms_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> client_set_ ABSL_GUARDED_BY(mu_);
  bool spent_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_AGGREGATOR_AGGREGATOR_H_
