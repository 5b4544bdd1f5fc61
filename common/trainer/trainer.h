#ifndef LAYERFL_COMMON_TRAINER_TRAINER_H_
#define LAYERFL_COMMON_TRAINER_TRAINER_H_

// The selective trainer: trains a chosen set of layer groups of a Model on
// local examples and returns the sparse per-layer delta; computes per-layer
// importance scores at the current (global) weights; evaluates.
//
// This is LayerFL's LibTorch edge: every c10::Error raised below it is caught
// here and returned as an absl::Status. Not thread-safe; the Model passed in
// must not be used concurrently.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/model/model.h"

namespace layerfl {

// Examples held as tensors: inputs [N, ...] (uint8 images [N, C, H, W],
// float inputs, or int64 tokens) and int64 labels [N].
struct Examples {
  at::Tensor inputs;
  at::Tensor labels;
  // uint8 inputs only: channel c of a batch becomes the float
  // (p / 255 - mean[c]) / std[c] when the batch is taken, so images stay 8-bit
  // in memory. C entries each.
  std::vector<double> mean;
  std::vector<double> std;

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  // The model inputs of examples `index` (int64 [B]) or [start, start + len):
  // normalised as above for uint8 inputs, else the stored rows.
  at::Tensor Inputs(const at::Tensor& index) const;
  at::Tensor Inputs(int64_t start, int64_t len) const;
};

struct LayerScores {
  std::string group;
  double sq_grad_norm = 0.0;  // ||m||^2, m = mean of the per-batch gradients
  double rgn = 0.0;           // ||m|| / ||w|| (0 when ||w|| = 0)
  // ||m||^2 / sum of per-element variances across batches; computed only
  // when the pass's metric is snr (0 otherwise).
  double snr = 0.0;
};

// The trained groups' `w_local - w_global`, by group, each with its
// parameters in model order.
struct GroupDelta {
  std::string group;
  NamedTensors tensors;
};

// What a call cost on this machine: wall-clock seconds, and the peak
// training memory: the bytes of every model parameter plus the peak of the
// tensor bytes the call allocated beyond what existed before it (activations,
// gradients, optimizer state, copies; counted exactly by TensorMemoryMeter).
struct ResourceUsage {
  double seconds = 0.0;
  int64_t peak_bytes = 0;
};

struct TrainResult {
  std::vector<GroupDelta> deltas;  // one per trained group, in model order
  int steps = 0;
  double first_loss = 0.0;  // mean loss of the first step's batch
  double last_loss = 0.0;   // mean loss of the last step's batch
  int64_t trained_params = 0;
  ResourceUsage usage;
  // The trained groups' scores from the first step's gradients, taken at the
  // starting (global) weights before any clipping: bit for bit what
  // Importance computes over that one batch (importance.batches 1, batch
  // size train.batch_size, the same seed). One per entry of `deltas`; empty
  // when no step ran. snr is 0 (one batch has no variance).
  std::vector<LayerScores> first_step_scores;
};

struct EvalResult {
  double accuracy = 0.0;
  double loss = 0.0;  // mean cross-entropy
  int64_t examples = 0;
};

// Sets LibTorch's intra-op thread count (LibTorch starts with 1 here).
// OpenMP reads OMP_WAIT_POLICY only at start-up: run with
// OMP_WAIT_POLICY=PASSIVE (the Makefile does) on shared machines, where
// busy-waiting threads can slow a process 10-30x.
void SetTorchThreads(int threads);

// For a process that trains (client daemon, simulator, experiments): keeps
// freed buffers below 64 MiB in the heap for the next step instead of
// returning them to the kernel (process-wide malloc settings). Not for the
// coordinator, whose large buffers should go back (ReturnFreedMemory).
void TuneMallocForTraining();

class SelectiveTrainer {
 public:
  // `train` and `importance` are copied; they must have passed Validate().
  SelectiveTrainer(const TrainConfig& train,
                   const ImportanceConfig& importance);

  // Trains exactly the groups named in `groups` (every other parameter has
  // requires_grad=false, so no gradient is computed for it) for
  // train.local_steps steps (or train.local_epochs epochs) of cross-entropy,
  // batches drawn from a permutation seeded by `seed`. Parameters that read
  // values in place (BindWeights) are never written: a trained one first
  // gets storage of its own. Optimizer state and gradients are freed before
  // the deltas are taken. The model is left holding w_local; requires_grad is restored
  // to true on every parameter.
  // Errors: unknown or frozen group, empty examples, LibTorch failures.
  absl::StatusOr<TrainResult> Train(Model& model, const Examples& data,
                                    const std::vector<std::string>& groups,
                                    uint64_t seed) const;

  // Scores every non-frozen group from `lowest_group` upward (model order)
  // at the model's current weights over importance.batches batches of
  // importance.batch_size examples (0: train.batch_size); frozen
  // groups and groups below `lowest_group` score 0 and get no gradient, so
  // the backward pass stops at the lowest scored group (what a memory limit
  // needs; lowest_group = the number of groups scores nothing and runs no
  // pass). The pass holds only what `metric` ("" = importance.metric)
  // needs: sq_grad_norm and rgn (both always returned) the scored
  // parameters' gradients, summed over the batches in .grad (float32); snr
  // besides per-element running sums of the gradients and their squares in
  // double (4x the scored parameters' bytes). `usage`, when given, receives
  // what the pass cost. Errors: unknown metric, lowest_group outside
  // [0, groups], empty examples, LibTorch.
  absl::StatusOr<std::vector<LayerScores>> Importance(
      Model& model, const Examples& data, uint64_t seed,
      ResourceUsage* usage = nullptr, int lowest_group = 0,
      const std::string& metric = "") const;

  // Accuracy and mean loss over all examples, in batches; no gradients.
  absl::StatusOr<EvalResult> Evaluate(Model& model, const Examples& data,
                                      int batch_size = 256) const;

 private:
  TrainConfig train_;
  ImportanceConfig importance_;
};

// Bytes of every parameter of `model` (what training holds anyway).
int64_t ParameterBytes(Model& model);

// Picks the metric named by importance.metric out of `scores`.
std::vector<double> ReportedScores(const std::vector<LayerScores>& scores,
                                   const std::string& metric);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_TRAINER_TRAINER_H_
