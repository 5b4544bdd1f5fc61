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

// One client's costs of the selectable layers in the solver's form
// (strategic_solver.h): a set S of them costs sum_{k in S} costs[k] +
// max_{k in S} depths[k] on top of what the common layers cost, in integer
// ticks. Costs are rounded up and room down, so a set that fits in ticks fits
// in the real unit.
struct ClientCosts {
  int64_t room = 0;             // budget - cost of the common layers, >= 0
  std::vector<int64_t> costs;   // [selectable], >= 1
  std::vector<int64_t> depths;  // [selectable], >= 0; all 0 when additive

  // Cost in ticks of the selectable positions `picks` (indices into
  // Round::selectable).
  int64_t SetCost(const std::vector<int>& picks) const;
};

// A validated input with the layer classes and, per client, the room its
// budget leaves after the common layers and the costs of the others.
struct Round {
  const SelectionInput* input = nullptr;
  std::vector<int> common;      // layer indices, ascending
  std::vector<int> selectable;  // neither frozen nor common, ascending
  std::vector<ClientCosts> clients;
  bool has_depth = false;  // some client's cost has a depth part
  // Real cost units per tick: 1 when every cost and budget is an integer
  // (layers, params, bytes), else the largest budget / 2^24.
  double tick = 1.0;
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
std::unique_ptr<SelectionStrategy> NewHeadStrategy(const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewRgnStrategy(const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewSnrStrategy(const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewImportanceStrategy(
    const SelectionOptions& o);
std::unique_ptr<SelectionStrategy> NewStrategicStrategy(
    const SelectionOptions& o);

}  // namespace layerfl::selection_internal

#endif  // LAYERFL_SERVER_SELECTION_SELECTION_INTERNAL_H_
