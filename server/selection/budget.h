#ifndef LAYERFL_SERVER_SELECTION_BUDGET_H_
#define LAYERFL_SERVER_SELECTION_BUDGET_H_

// Layer costs and client budgets in one cost unit (DESIGN.md §2):
//  * layers: every layer costs 1 (the paper);
//  * params: a layer costs its parameter count;
//  * memory: the bytes training the layer needs: weights + gradients +
//    optimizer state + the activations kept for its backward pass.
// A client's budget is what it declared when it joined, or a draw from the
// run config's distribution (fixed, uniform, or the paper's truncated normal
// between a minimum and a maximum). Draws depend only on (seed, client id)
// and use this library's own sampling, so they are identical everywhere and
// do not change when other clients join or leave.
//
// Thread-safe: free functions without state.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace layerfl {

enum class CostUnit { kLayers, kParams, kMemoryBytes };

// "layers", "params" or "memory"; anything else is InvalidArgument listing
// the valid names.
absl::StatusOr<CostUnit> ParseCostUnit(absl::string_view name);
const char* CostUnitName(CostUnit unit);

// What a layer group needs when it trains.
struct LayerFootprint {
  std::string name;
  int64_t num_params = 0;  // >= 1
  // Activation bytes kept for this layer's backward pass per step (depends on
  // batch size and sequence length; the caller estimates it). >= 0.
  int64_t activation_bytes = 0;
};

// Bytes per parameter while a layer trains. Defaults: fp32 weights and
// gradients, one optimizer slot (SGD with momentum).
struct MemoryModel {
  int64_t weight_bytes = 4;     // per parameter, >= 0
  int64_t grad_bytes = 4;       // per parameter, >= 0
  int64_t optimizer_slots = 1;  // state tensors per parameter, >= 0
  int64_t slot_bytes = 4;       // bytes per state element, >= 0
};

// The memory model of a training optimizer: "sgd" (one slot when momentum >
// 0, else none), "adam" or "adamw" (two slots). fp32 throughout.
absl::StatusOr<MemoryModel> MemoryModelForOptimizer(absl::string_view optimizer,
                                                    double momentum);

// params * (weight + grad + slots * slot bytes) + activation bytes.
int64_t LayerTrainingBytes(const LayerFootprint& layer,
                           const MemoryModel& memory);

// One cost per layer in `unit`. InvalidArgument naming the layer when a
// count is out of range or a cost overflows int64.
absl::StatusOr<std::vector<int64_t>> LayerCosts(
    absl::Span<const LayerFootprint> layers, CostUnit unit,
    const MemoryModel& memory = MemoryModel());

// The run config's budget distribution, in cost units. Defaults match the
// config's `budget` section.
struct BudgetDistribution {
  enum class Kind {
    kFixed,            // every client gets round(value)
    kUniform,          // an integer uniform in [ceil(min), floor(max)]
    kTruncatedNormal,  // N(mean, std) conditioned on [min, max], rounded
    kDeclared,         // each client's declared budget
  };
  Kind kind = Kind::kTruncatedNormal;
  double value = 2.0;  // kFixed, > 0
  double min = 1.0;    // kUniform / kTruncatedNormal, > 0
  double max = 4.0;    // kUniform / kTruncatedNormal, >= min
  double mean = 2.5;   // kTruncatedNormal, finite
  double std = 1.0;    // kTruncatedNormal, > 0

  // InvalidArgument naming the field, e.g. "budget.std: must be > 0, got 0".
  absl::Status Validate() const;
};

// "fixed", "uniform", "truncated_normal" or "declared".
absl::StatusOr<BudgetDistribution::Kind> ParseBudgetDistribution(
    absl::string_view name);

// Client `client_id`'s budget. kDeclared: the declared value (missing or
// negative -> InvalidArgument naming the client). Otherwise a draw that
// depends only on (seed, client_id), capped by the declared value when there
// is one (a device never trains more than it said it can hold).
absl::StatusOr<int64_t> ResolveClientBudget(const BudgetDistribution& dist,
                                            uint64_t seed,
                                            absl::string_view client_id,
                                            std::optional<int64_t> declared);

// A draw of N(mean, std) conditioned on [min, max] from a uniform u in
// [0, 1), by inverting the CDF (stable far in either tail).
double TruncatedNormalFromUniform(double mean, double std, double min,
                                  double max, double u);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_BUDGET_H_
