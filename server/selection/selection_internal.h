#ifndef LAYERFL_SERVER_SELECTION_SELECTION_INTERNAL_H_
#define LAYERFL_SERVER_SELECTION_SELECTION_INTERNAL_H_

// Shared by the strategy implementations; not part of the library's API.

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/selection/selection_strategy.h"
#include "server/selection/selection_types.h"

namespace layerfl::selection_internal {

// A validated input with the layer classes and budgets left after the common
// layers.
struct Round {
  const SelectionInput* input = nullptr;
  std::vector<int> common;      // layer indices, ascending
  std::vector<int> selectable;  // neither frozen nor common, ascending
  std::vector<int64_t> room;    // per client: budget - cost of common layers
};

absl::StatusOr<Round> PrepareRound(const SelectionInput& input);

enum class Metric { kSqGradNorm, kRgn, kSnr };

// Per client, one score per layer of the table. sq_grad_norm falls back to the
// stats' running importance when allowed; a missing vector is otherwise
// InvalidArgument naming the client and the strategy. With `normalize`, each
// client's scores are divided by their sum over the selectable layers (left
// as they are when that sum is 0).
absl::StatusOr<std::vector<std::vector<double>>> MetricScores(
    const Round& round, Metric metric, bool normalize,
    bool use_running_importance, absl::string_view strategy);

// The result for per-client choices among the selectable layers: adds the
// common layers, sorts, counts, and fills diagnostics.objective (NaN when
// some client has no scores); the other diagnostics are left heuristic.
SelectionResult Finish(const Round& round, std::vector<std::vector<int>> chosen,
                       const SelectionOptions& options);

// Strategy factories, registered by name in selection_strategy.cc.
std::unique_ptr<SelectionStrategy> NewFullStrategy(const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewTopStrategy(const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewBottomStrategy(const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewBothStrategy(const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewRandomStrategy(const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewRgnStrategy(const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewSnrStrategy(const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewImportanceStrategy(
    const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewStrategicStrategy(
    const SelectionOptions& o);

}  // namespace layerfl::selection_internal

#endif  // LAYERFL_SERVER_SELECTION_SELECTION_INTERNAL_H_
