#ifndef LAYERFL_SERVER_SELECTION_SELECTION_STRATEGY_H_
#define LAYERFL_SERVER_SELECTION_SELECTION_STRATEGY_H_

// Layer-selection strategies (DESIGN.md §2) behind one interface, created by
// name from a registry table:
//
//   full        every trainable layer (budgets must hold them all)
//   top         the layers nearest the output, while they fit
//   bottom      the layers nearest the input, while they fit
//   both        alternately from the input and the output end, while they fit
//   random      a uniformly random order per client; every layer that fits
//   head        the linear probe: the common layers only (the output-side
//               group when there are none, if it fits)
//   rgn         the strategic problem on the rgn scores (gradient norm /
//               parameter norm) with the same regulariser; lambda = 0 is each
//               client's max total rgn within its budget
//   snr         the same on the snr scores (mean^2 / variance)
//   importance  max total sq_grad_norm within the budget, no regulariser
//   strategic   the paper's problem: max sum_i sum_l x_il g_il
//               - lambda' sum_l n_l (N - n_l) within every budget (exact
//               solver on small instances, bounded heuristic on large ones;
//               lambda' = SelectionOptions::lambda, normalised by N - 1)
//
// Common layers are selected for every client and count against its budget;
// frozen layers are never selected. "While they fit" means the walk stops at
// the first layer that does not fit (the selection stays contiguous); the
// score strategies never take a layer whose score is 0.
//
// Thread-safety: strategies are immutable after creation; Select() is const
// and may be called concurrently.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/selection/selection_types.h"

namespace layerfl {

class SelectionStrategy {
 public:
  virtual ~SelectionStrategy() = default;

  // The registry name.
  virtual absl::string_view name() const = 0;

  // Validates `input` (ValidateSelectionInput plus the scores this strategy
  // reads) and selects each client's layers. Errors are InvalidArgument
  // naming the client and/or layer. Blocking; the strategic solver honours
  // SelectionOptions::time_limit_ms.
  virtual absl::StatusOr<SelectionResult> Select(
      const SelectionInput& input) const = 0;
};

// The strategy registered as `name`, configured by `options` (validated; its
// `strategy` field is ignored). Unknown names are InvalidArgument listing the
// valid ones.
absl::StatusOr<std::unique_ptr<SelectionStrategy>> CreateSelectionStrategy(
    absl::string_view name, const SelectionOptions& options);

// The registered names, in registry order.
std::vector<std::string> SelectionStrategyNames();

// Checks the layer table (unique non-empty names, cost >= 1 unless frozen, not
// both frozen and common), the clients (unique non-empty ids, budget >= 0 and
// able to hold the common layers, num_samples >= 0, every score vector empty
// or one finite non-negative value per layer) and the stats' layer names.
// InvalidArgument naming the offending client and/or layer.
absl::Status ValidateSelectionInput(const SelectionInput& input);

// The strategic objective of any selection (per-client layer indices):
// sum of the clients' sq_grad_norm (divided per client by their sum over the
// selectable layers when `normalize_scores`) over their layers, minus lambda
// sum_l n_l (N - n_l) (lambda raw: not divided by N - 1 here). Scores come from
// the input, or from the running importance when `use_running_importance` and a
// client has none.
absl::StatusOr<double> SelectionObjective(
    const SelectionInput& input, const std::vector<std::vector<int>>& layers,
    double lambda, bool normalize_scores, bool use_running_importance = true);

// The weight of the raw penalty sum_l n_l (N - n_l) for `num_clients`
// clients: options.lambda / max(1, N - 1) with normalize_lambda, else
// options.lambda.
double EffectiveLambda(const SelectionOptions& options, size_t num_clients);

// A layer table from parallel names/costs, with the frozen and common groups
// given by name. InvalidArgument naming an unknown or duplicated layer.
absl::StatusOr<std::vector<LayerSpec>> MakeLayerTable(
    absl::Span<const std::string> names, absl::Span<const int64_t> costs,
    absl::Span<const std::string> frozen, absl::Span<const std::string> common);

// A score vector in layer-table order from (layer name, score) pairs, e.g. as
// a client reports them. InvalidArgument naming the client and the unknown,
// duplicated or missing layer, or a NaN/negative score.
absl::StatusOr<std::vector<double>> ScoresByName(
    absl::Span<const LayerSpec> layers,
    absl::Span<const std::pair<std::string, double>> named,
    absl::string_view client_id);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_SELECTION_STRATEGY_H_
