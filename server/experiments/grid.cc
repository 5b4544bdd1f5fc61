#include "server/experiments/grid.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config/yaml_read.h"
#include "common/util/status_macros.h"
#include "server/selection/selection_strategy.h"
#include "yaml-cpp/yaml.h"

namespace layerfl {
namespace {

using yaml_read::Bind;

// The grid's wording of YAML errors, e.g. "seeds[1]: expected a non-negative
// integer, got '-2'".
yaml_read::Style GridStyle() {
  yaml_read::Style style;
  style.root = "grid";
  style.null_map_is_empty = false;
  style.detailed_numbers = false;
  return style;
}

absl::Status ReadMap(const YAML::Node& node, const std::string& path,
                     const std::vector<yaml_read::Field>& fields) {
  return yaml_read::ReadMap(node, path, fields, GridStyle());
}

absl::Status TypeError(const YAML::Node& node, const std::string& path,
                       absl::string_view expected) {
  return yaml_read::TypeError(node, path, expected, GridStyle());
}

// Names become directory and file names.
absl::Status CheckName(const std::string& path, const std::string& name) {
  const bool ok = !name.empty() && name != "." && name != ".." &&
                  name.find_first_not_of(
                      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789._-") == std::string::npos;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      path,
      ": must be a non-empty name of letters, digits, '.', '_' or '-', "
      "got '",
      name, "'"));
}

// A RunConfig::Validate error about `section.field` is reported as the grid
// entry's field, e.g. "budget.min: ..." -> "budgets[0].min: ...".
absl::Status Reword(const absl::Status& status, const std::string& section,
                    const std::string& entry) {
  if (status.ok()) return status;
  const std::string prefix = section + ".";
  std::string message(status.message());
  if (absl::StartsWith(message, prefix)) {
    message = absl::StrCat(entry, ".", message.substr(prefix.size()));
  } else {
    message = absl::StrCat(entry, ": ", message);
  }
  return absl::Status(status.code(), message);
}

absl::Status ReadBudgets(const YAML::Node& node, const RunConfig& base,
                         std::vector<BudgetSetting>* out) {
  if (!node.IsSequence()) return TypeError(node, "budgets", "a sequence");
  std::set<std::string> names;
  for (size_t i = 0; i < node.size(); ++i) {
    const std::string path = absl::StrCat("budgets[", i, "]");
    BudgetSetting s;
    s.budget = base.budget;
    s.devices = base.devices;
    BudgetConfig& b = s.budget;
    RETURN_IF_ERROR(ReadMap(
        node[i], path,
        {Bind("name", &s.name, /*required=*/true), Bind("unit", &b.unit),
         Bind("distribution", &b.distribution), Bind("value", &b.value),
         Bind("min", &b.min), Bind("max", &b.max), Bind("mean", &b.mean),
         Bind("std", &b.std), Bind("speed_min", &s.devices.speed_min),
         Bind("speed_max", &s.devices.speed_max)}));
    RETURN_IF_ERROR(CheckName(path + ".name", s.name));
    if (!names.insert(s.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".name: duplicate name '", s.name, "'"));
    }
    if (b.distribution == "declared") {
      return absl::InvalidArgumentError(absl::StrCat(
          path,
          ".distribution: 'declared' budgets come from real clients; "
          "the simulator needs fixed, uniform or truncated_normal"));
    }
    RunConfig c = base;
    c.budget = b;
    RETURN_IF_ERROR(Reword(c.Validate(), "budget", path));
    c.devices = s.devices;
    RETURN_IF_ERROR(Reword(c.Validate(), "devices", path));
    out->push_back(std::move(s));
  }
  if (out->empty()) {
    return absl::InvalidArgumentError(
        "budgets: must list at least one setting");
  }
  return absl::OkStatus();
}

absl::Status ReadVariants(const YAML::Node& node, const RunConfig& base,
                          const std::vector<std::string>& strategies,
                          std::vector<StrategyVariant>* out) {
  if (!node.IsDefined() || node.IsNull()) return absl::OkStatus();
  if (!node.IsSequence()) return TypeError(node, "variants", "a sequence");
  std::set<std::string> names(strategies.begin(), strategies.end());
  const std::vector<std::string> known = SelectionStrategyNames();
  for (size_t i = 0; i < node.size(); ++i) {
    const std::string path = absl::StrCat("variants[", i, "]");
    StrategyVariant v;
    v.importance = base.importance;
    ImportanceConfig& imp = v.importance;
    RETURN_IF_ERROR(ReadMap(
        node[i], path,
        {Bind("name", &v.name, /*required=*/true),
         Bind("strategy", &v.strategy, /*required=*/true),
         Bind("metric", &imp.metric), Bind("batches", &imp.batches),
         Bind("batch_size", &imp.batch_size), Bind("source", &imp.source),
         Bind("refresh_period", &imp.refresh_period),
         Bind("decay", &imp.decay), Bind("depth", &imp.depth)}));
    RETURN_IF_ERROR(CheckName(path + ".name", v.name));
    if (!names.insert(v.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".name: duplicate name '", v.name, "'"));
    }
    if (std::find(known.begin(), known.end(), v.strategy) == known.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".strategy: unknown strategy '", v.strategy,
                       "'; valid: ", absl::StrJoin(known, ", ")));
    }
    RunConfig c = base;
    c.selection.strategy = v.strategy;
    c.importance = imp;
    RETURN_IF_ERROR(Reword(c.Validate(), "importance", path));
    out->push_back(std::move(v));
  }
  return absl::OkStatus();
}

absl::Status ReadPartitions(const YAML::Node& node, const RunConfig& base,
                            std::vector<PartitionSetting>* out) {
  if (!node.IsSequence()) return TypeError(node, "partitions", "a sequence");
  std::set<std::string> names;
  for (size_t i = 0; i < node.size(); ++i) {
    const std::string path = absl::StrCat("partitions[", i, "]");
    PartitionSetting s;
    s.data = base.data;
    DataConfig& d = s.data;
    RETURN_IF_ERROR(ReadMap(
        node[i], path,
        {Bind("name", &s.name, /*required=*/true),
         Bind("partition", &d.partition), Bind("alpha", &d.alpha),
         Bind("domains", &d.domains), Bind("num_clients", &d.num_clients)}));
    RETURN_IF_ERROR(CheckName(path + ".name", s.name));
    if (!names.insert(s.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".name: duplicate name '", s.name, "'"));
    }
    RunConfig c = base;
    c.data = d;
    RETURN_IF_ERROR(Reword(c.Validate(), "data", path));
    out->push_back(std::move(s));
  }
  if (out->empty()) {
    return absl::InvalidArgumentError(
        "partitions: must list at least one setting");
  }
  return absl::OkStatus();
}

absl::Status CheckStrategies(const std::vector<std::string>& strategies) {
  if (strategies.empty()) {
    return absl::InvalidArgumentError(
        "strategies: must list at least one strategy");
  }
  std::vector<std::string> known = SelectionStrategyNames();
  known.push_back(kLocalOnly);
  std::set<std::string> seen;
  for (size_t i = 0; i < strategies.size(); ++i) {
    const std::string& s = strategies[i];
    if (std::find(known.begin(), known.end(), s) == known.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("strategies[", i, "]: unknown strategy '", s,
                       "'; valid: ", absl::StrJoin(known, ", ")));
    }
    if (!seen.insert(s).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("strategies[", i, "]: duplicate strategy '", s, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSeeds(const std::vector<uint64_t>& seeds) {
  if (seeds.empty()) {
    return absl::InvalidArgumentError("seeds: must list at least one seed");
  }
  std::set<uint64_t> seen;
  for (size_t i = 0; i < seeds.size(); ++i) {
    if (!seen.insert(seeds[i]).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("seeds[", i, "]: duplicate seed ", seeds[i]));
    }
  }
  return absl::OkStatus();
}

std::string ResolveBase(const std::string& base, const std::string& base_dir) {
  namespace fs = std::filesystem;
  if (base.empty() || fs::path(base).is_absolute() || fs::exists(base) ||
      base_dir.empty()) {
    return base;
  }
  std::error_code ec;
  fs::path dir = fs::absolute(base_dir, ec);
  for (; !ec && !dir.empty(); dir = dir.parent_path()) {
    if (fs::exists(dir / base)) return (dir / base).string();
    if (dir == dir.parent_path()) break;
  }
  return base;
}

}  // namespace

BudgetConfig FullBudget(const BudgetConfig& budget) {
  BudgetConfig b = budget;
  b.distribution = "fixed";
  b.value = kUnlimitedBudget;
  return b;
}

absl::StatusOr<ExperimentGrid> ParseExperimentGrid(
    const std::string& yaml_text, const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        e.mark.is_null()
            ? absl::StrCat("malformed YAML: ", e.msg)
            : absl::StrCat("malformed YAML at line ", e.mark.line + 1,
                           ", column ", e.mark.column + 1, ": ", e.msg));
  }
  ExperimentGrid grid;
  YAML::Node budgets, partitions, variants;
  auto keep = [](YAML::Node* slot) {
    return [slot](const YAML::Node& node, const std::string&,
                  const yaml_read::Style&) {
      *slot = node;
      return absl::OkStatus();
    };
  };
  RETURN_IF_ERROR(ReadMap(root, "",
                          {Bind("base", &grid.base_path, /*required=*/true),
                           Bind("out", &grid.out),
                           Bind("strategies", &grid.strategies, true),
                           {"variants", keep(&variants), false, nullptr,
                            nullptr},
                           {"budgets", keep(&budgets), true, nullptr, nullptr},
                           {"partitions", keep(&partitions), true, nullptr,
                            nullptr},
                           Bind("seeds", &grid.seeds, true),
                           Bind("lambdas", &grid.lambdas)}));
  grid.base_path = ResolveBase(grid.base_path, base_dir);
  absl::StatusOr<RunConfig> base = LoadRunConfig(grid.base_path);
  if (!base.ok()) {
    return absl::Status(base.status().code(),
                        absl::StrCat("base: ", base.status().message()));
  }
  grid.base = *std::move(base);
  RETURN_IF_ERROR(CheckStrategies(grid.strategies));
  RETURN_IF_ERROR(
      ReadVariants(variants, grid.base, grid.strategies, &grid.variants));
  RETURN_IF_ERROR(ReadBudgets(budgets, grid.base, &grid.budgets));
  RETURN_IF_ERROR(ReadPartitions(partitions, grid.base, &grid.partitions));
  RETURN_IF_ERROR(CheckSeeds(grid.seeds));
  std::set<double> lambdas;
  for (size_t i = 0; i < grid.lambdas.size(); ++i) {
    if (!std::isfinite(grid.lambdas[i]) || grid.lambdas[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "lambdas[", i, "]: must be finite and >= 0, got ", grid.lambdas[i]));
    }
    if (!lambdas.insert(grid.lambdas[i]).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("lambdas[", i, "]: duplicate value ", grid.lambdas[i]));
    }
  }
  // Every combination must be a valid run (e.g. num_clients against
  // clients_per_round is checked across sections).
  RETURN_IF_ERROR(ExpandGrid(grid, grid.out.empty() ? "." : grid.out).status());
  return grid;
}

absl::StatusOr<ExperimentGrid> LoadExperimentGrid(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read grid file '", path, "'"));
  }
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ExperimentGrid> grid = ParseExperimentGrid(
      text.str(), std::filesystem::path(path).parent_path().string());
  if (!grid.ok()) {
    return absl::Status(grid.status().code(),
                        absl::StrCat(path, ": ", grid.status().message()));
  }
  return grid;
}

std::vector<std::string> CellStrategyNames(const ExperimentGrid& grid) {
  std::vector<std::string> names;
  for (const std::string& strategy : grid.strategies) {
    const bool sweeps =
        grid.lambdas.size() > 1 &&
        (strategy == "strategic" || strategy == "rgn" || strategy == "snr");
    if (!sweeps) {
      names.push_back(strategy);
      continue;
    }
    for (double lambda : grid.lambdas) {
      names.push_back(absl::StrCat(strategy, "_l", lambda));
    }
  }
  for (const StrategyVariant& v : grid.variants) names.push_back(v.name);
  return names;
}

absl::StatusOr<std::vector<ExperimentCell>> ExpandGrid(
    const ExperimentGrid& grid, const std::string& out_dir) {
  namespace fs = std::filesystem;
  std::vector<ExperimentCell> cells;
  // One cell: the base with the settings' sections, `strategy` run as the
  // row `name` with `lambda` and `importance`.
  const auto add = [&](const PartitionSetting& p, const BudgetSetting& b,
                       const std::string& name, const std::string& strategy,
                       double lambda, const ImportanceConfig& importance,
                       uint64_t seed) -> absl::Status {
    ExperimentCell cell;
    cell.partition = p.name;
    cell.budget = b.name;
    cell.strategy = name;
    cell.seed = seed;
    RunConfig& c = cell.config;
    c = grid.base;
    c.seed = seed;
    c.data = p.data;
    c.budget = strategy == "full" ? FullBudget(b.budget) : b.budget;
    c.devices = b.devices;
    c.selection.lambda = lambda;
    c.selection.strategy = strategy;
    c.importance = importance;
    if (strategy == kLocalOnly) {  // each client alone, top's layers
      c.federated.mode = "local";
      c.selection.strategy = "top";
    }
    c.federated.resume = true;
    c.federated.run_dir = (fs::path(out_dir) / "runs" / p.name / b.name /
                           name / absl::StrCat("seed", seed))
                              .string();
    absl::Status valid = c.Validate();
    if (!valid.ok()) {
      return absl::Status(valid.code(),
                          absl::StrCat("cell ", p.name, "/", b.name, "/", name,
                                       "/seed", seed, ": ", valid.message()));
    }
    cells.push_back(std::move(cell));
    return absl::OkStatus();
  };
  const double first_lambda =
      grid.lambdas.empty() ? grid.base.selection.lambda : grid.lambdas[0];
  for (const PartitionSetting& p : grid.partitions) {
    for (const BudgetSetting& b : grid.budgets) {
      for (const std::string& strategy : grid.strategies) {
        const bool sweeps =
            grid.lambdas.size() > 1 &&
            (strategy == "strategic" || strategy == "rgn" || strategy == "snr");
        const std::vector<double> lambdas =
            sweeps ? grid.lambdas : std::vector<double>{first_lambda};
        for (double lambda : lambdas) {
          const std::string name =
              sweeps ? absl::StrCat(strategy, "_l", lambda) : strategy;
          for (uint64_t seed : grid.seeds) {
            RETURN_IF_ERROR(add(p, b, name, strategy, lambda,
                                grid.base.importance, seed));
          }
        }
      }
      for (const StrategyVariant& v : grid.variants) {
        for (uint64_t seed : grid.seeds) {
          RETURN_IF_ERROR(add(p, b, v.name, v.strategy, first_lambda,
                              v.importance, seed));
        }
      }
    }
  }
  return cells;
}

}  // namespace layerfl
