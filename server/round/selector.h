#ifndef LAYERFL_SERVER_ROUND_SELECTOR_H_
#define LAYERFL_SERVER_ROUND_SELECTOR_H_

// Wires the run config to the round engine: the LayerSelector over the
// registered selection strategies (server/selection), the clients' budgets in
// the configured cost unit, and the engine options.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/layers/layer_groups.h"
#include "server/round/round_engine.h"
#include "server/selection/budget.h"

namespace layerfl {

// The selector for selection.strategy over the model's layer groups, with
// layer costs in budget.unit. Errors name the config field.
absl::StatusOr<std::unique_ptr<LayerSelector>> CreateLayerSelector(
    const RunConfig& config, const std::vector<LayerGroup>& groups);

// The budget section as a BudgetDistribution (validated).
absl::StatusOr<BudgetDistribution> BudgetDistributionFromConfig(
    const RunConfig& config);

// One budget per client id, in budget.unit, drawn from budget.distribution
// (deterministic in config.seed and the id). "declared" is refused here: such
// budgets come from the clients themselves.
absl::StatusOr<std::vector<double>> AssignBudgets(
    const RunConfig& config, const std::vector<std::string>& client_ids);

RoundEngineOptions ToEngineOptions(const RunConfig& config);

// A simulated device's speed relative to this machine: log-uniform in
// [devices.speed_min, devices.speed_max], from (seed, client id) only.
double DeviceSpeed(const RunConfig& config, const std::string& client_id);

// The importance metric clients report for the configured strategy: "rgn" and
// "snr" for those strategies, importance.metric for the others.
std::string ScoreMetricFor(const RunConfig& config);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_ROUND_SELECTOR_H_
