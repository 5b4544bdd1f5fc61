#ifndef LAYERFL_SERVER_EXPERIMENTS_GRID_H_
#define LAYERFL_SERVER_EXPERIMENTS_GRID_H_

// The experiment grid: strategy x budget setting x partition x seed, read from
// one YAML file (configs/experiments/paper.yaml is the reference):
//
// clang-format off
//   base: configs/experiments/base.yaml   # required: the run config every cell starts from
//   out: runs/experiments/paper           # default output directory (--out overrides)
//   strategies: [full, top, strategic]    # required, registered names, distinct
//   budgets:                              # required: named overrides of the base's budget section
//     - {name: tn1-4, distribution: truncated_normal, min: 1, max: 4, mean: 2.5, std: 1.0}
//   partitions:                           # required: named overrides of the base's data section
//     - {name: dirichlet0.1, partition: dirichlet, alpha: 0.1}
//     - {name: feature_shift, partition: feature_shift}
//   seeds: [1, 2, 3]                      # required, distinct
// clang-format on
//
// An optional `variants:` list adds rows that run a registered strategy with
// another importance section, e.g.
//   variants:
//     - {name: strategic-train, strategy: strategic, source: train, batches: 1}
// (any of metric, batches, batch_size, source, refresh_period, decay, depth;
// the rest as the base). Variant names share the strategies' namespace.
// A budget entry takes name plus any of unit, distribution, value, min, max,
// mean, std (the budget section), speed_min, speed_max (the devices
// section); a partition entry takes name plus any of partition, alpha,
// domains, num_clients. An optional `lambdas: [0, 0.2, 1]` sweeps
// selection.lambda (see ExperimentGrid::lambdas). Fields an entry leaves out
// keep the base's values. Names are path components: [A-Za-z0-9._-]+, distinct
// within their list. Unknown keys, wrong types and bad values are
// InvalidArgument naming the field, e.g. "strategies[2]: unknown strategy
// 'fedavg'; valid: ...". Every cell's config is validated while the grid is
// read, so a grid that loads runs without config errors.
//
// Thread-compatible value types.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config/config.h"

namespace layerfl {

struct BudgetSetting {
  std::string name;
  BudgetConfig budget;  // the base's budget section with the entry's overrides
  DevicesConfig devices;  // the base's devices with speed_min / speed_max
};

struct PartitionSetting {
  std::string name;
  DataConfig data;  // the base's data section with the entry's overrides
};

// A row that runs `strategy` with `importance` instead of the base's.
struct StrategyVariant {
  std::string name;
  std::string strategy;
  ImportanceConfig importance;
};

struct ExperimentGrid {
  std::string base_path;  // as resolved (see LoadExperimentGrid)
  RunConfig base;
  std::string out;  // default output directory; may be empty
  std::vector<std::string> strategies;
  std::vector<StrategyVariant> variants;  // rows after the strategies'
  std::vector<BudgetSetting> budgets;
  std::vector<PartitionSetting> partitions;
  std::vector<uint64_t> seeds;
  // Optional: selection.lambda values. With more than one, the strategies
  // that use lambda (strategic, rgn, snr) run once per value, named
  // "<strategy>_l<lambda>"; the others once. Empty: the base's lambda.
  std::vector<double> lambdas;
};

// One run of the grid.
struct ExperimentCell {
  std::string partition;  // setting names
  std::string budget;
  std::string strategy;
  uint64_t seed = 0;
  RunConfig
      config;  // seed, strategy, data, budget and run_dir applied; resume on
};

// Parses grid YAML. A relative `base:` path is looked up relative to the
// current directory, then relative to `base_dir` and each of its parents (so
// a repository-relative path works from anywhere inside the repository).
absl::StatusOr<ExperimentGrid> ParseExperimentGrid(const std::string& yaml_text,
                                                   const std::string& base_dir);

// Reads a grid file (`base_dir` = the file's directory); a missing file is
// NotFound naming the path. Paths inside the base run config (data.dir,
// pretrain.checkpoint) stay relative to the current directory, as for
// layerfl-sim: run from the repository root.
absl::StatusOr<ExperimentGrid> LoadExperimentGrid(const std::string& path);

// `full` is the unconstrained reference (every client trains every layer), so
// its cells ignore the budget setting: the budget is fixed at
// kUnlimitedBudget, in the setting's unit.
inline constexpr double kUnlimitedBudget = 1e15;

// The strategy name of the no-federation baseline: the cell runs with
// federated.mode local (every client alone, `top`'s layers within its
// budget; accuracy = the mean over the clients' own models).
inline constexpr char kLocalOnly[] = "local";
BudgetConfig FullBudget(const BudgetConfig& budget);

// The strategy names cells carry, in grid order: each of `strategies`, and
// with a lambda sweep "<strategy>_l<lambda>" for strategic, rgn and snr.
std::vector<std::string> CellStrategyNames(const ExperimentGrid& grid);

// The cells in report order: partitions, then budgets, then strategies, then
// seeds, each as listed. Each cell's run_dir is
// <out_dir>/runs/<partition>/<budget>/<strategy>/seed<k>. Errors (a cell
// whose config fails RunConfig::Validate) name the cell.
absl::StatusOr<std::vector<ExperimentCell>> ExpandGrid(
    const ExperimentGrid& grid, const std::string& out_dir);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_EXPERIMENTS_GRID_H_
