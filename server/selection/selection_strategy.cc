#include "server/selection/selection_strategy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/util/status_macros.h"
#include "server/selection/regulation_stats.h"
#include "server/selection/selection_internal.h"

namespace layerfl {
namespace {

using selection_internal::Metric;
using selection_internal::Round;

struct RegistryEntry {
  const char* name;
  std::unique_ptr<SelectionStrategy> (*create)(const SelectionOptions&);
};

// The one table of strategies.
constexpr RegistryEntry kRegistry[] = {
    {"full", &selection_internal::NewFullStrategy},
    {"top", &selection_internal::NewTopStrategy},
    {"bottom", &selection_internal::NewBottomStrategy},
    {"both", &selection_internal::NewBothStrategy},
    {"random", &selection_internal::NewRandomStrategy},
    {"head", &selection_internal::NewHeadStrategy},
    {"rgn", &selection_internal::NewRgnStrategy},
    {"snr", &selection_internal::NewSnrStrategy},
    {"importance", &selection_internal::NewImportanceStrategy},
    {"strategic", &selection_internal::NewStrategicStrategy},
};

const char* MetricName(Metric metric) {
  switch (metric) {
    case Metric::kSqGradNorm:
      return "sq_grad_norm";
    case Metric::kRgn:
      return "rgn";
    case Metric::kSnr:
      return "snr";
  }
  return "unknown";
}

const std::vector<double>& MetricVector(const ClientInput& c, Metric metric) {
  switch (metric) {
    case Metric::kRgn:
      return c.rgn;
    case Metric::kSnr:
      return c.snr;
    case Metric::kSqGradNorm:
      break;
  }
  return c.sq_grad_norm;
}

absl::Status CheckScores(const ClientInput& c, Metric metric,
                         absl::Span<const LayerSpec> layers) {
  const std::vector<double>& v = MetricVector(c, metric);
  if (v.empty()) return absl::OkStatus();
  if (v.size() != layers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("client '", c.id, "': ", v.size(), " ", MetricName(metric),
                     " scores for ", layers.size(), " layers"));
  }
  for (size_t l = 0; l < v.size(); ++l) {
    if (!std::isfinite(v[l]) || v[l] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "client '", c.id, "': ", MetricName(metric), " score of layer '",
          layers[l].name, "' must be finite and >= 0, got ", v[l]));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SelectionOptions::Validate() const {
  if (!std::isfinite(lambda) || lambda < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "selection.lambda: must be finite and >= 0, got ", lambda));
  }
  if (!std::isfinite(time_limit_ms) || time_limit_ms <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection.time_limit_ms: must be finite and > 0, got ",
                     time_limit_ms));
  }
  if (!std::isfinite(target_gap) || target_gap < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "selection.target_gap: must be finite and >= 0, got ", target_gap));
  }
  if (starts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection.starts: must be >= 1, got ", starts));
  }
  if (max_exact_variables < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection.max_exact_variables: must be >= 0, got ",
                     max_exact_variables));
  }
  if (max_nodes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection.max_nodes: must be >= 1, got ", max_nodes));
  }
  return absl::OkStatus();
}

absl::Status ValidateSelectionInput(const SelectionInput& input) {
  absl::flat_hash_set<absl::string_view> names;
  int64_t common_cost = 0;
  std::vector<int> common_layers;
  for (const LayerSpec& layer : input.layers) {
    if (layer.name.empty()) {
      return absl::InvalidArgumentError("layer table: empty layer name");
    }
    if (!names.insert(layer.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer table: duplicate layer '", layer.name, "'"));
    }
    if (layer.frozen && layer.common) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer '", layer.name, "': cannot be both frozen and common"));
    }
    if (!layer.frozen && layer.cost < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer '", layer.name, "': cost must be >= 1, got ", layer.cost));
    }
    if (layer.common &&
        __builtin_add_overflow(common_cost, layer.cost, &common_cost)) {
      return absl::InvalidArgumentError("layer table: common cost overflows");
    }
    if (layer.common) {
      common_layers.push_back(static_cast<int>(&layer - input.layers.data()));
    }
  }
  absl::flat_hash_set<absl::string_view> ids;
  for (const ClientInput& c : input.clients) {
    if (c.id.empty()) return absl::InvalidArgumentError("client with empty id");
    if (!ids.insert(c.id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("duplicate client '", c.id, "'"));
    }
    if (!std::isfinite(c.budget) || c.budget < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("client '", c.id,
                       "': budget must be finite and >= 0, got ", c.budget));
    }
    double client_common_cost = static_cast<double>(common_cost);
    if (c.cost != nullptr) {
      RETURN_IF_ERROR(c.cost->Validate(
          input.layers.size(), absl::StrCat("client '", c.id, "': cost")));
      client_common_cost = c.cost->Cost(common_layers);
    }
    if (c.num_samples < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("client '", c.id, "': num_samples must be >= 0, got ",
                       c.num_samples));
    }
    if (c.budget < client_common_cost) {
      std::vector<std::string> common;
      for (int l : common_layers) common.push_back(input.layers[l].name);
      return absl::InvalidArgumentError(absl::StrCat(
          "client '", c.id, "': budget ", c.budget,
          " cannot hold the common layers (", absl::StrJoin(common, ", "),
          ": cost ", client_common_cost, ")"));
    }
    for (Metric m : {Metric::kSqGradNorm, Metric::kRgn, Metric::kSnr}) {
      RETURN_IF_ERROR(CheckScores(c, m, input.layers));
    }
  }
  if (input.stats != nullptr) {
    const std::vector<std::string>& stat_names = input.stats->layer_names();
    for (const std::string& name : stat_names) {
      if (!names.contains(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("regulation stats: unknown layer '", name, "'"));
      }
    }
    for (size_t l = 0; l < input.layers.size(); ++l) {
      if (l >= stat_names.size() || stat_names[l] != input.layers[l].name) {
        return absl::InvalidArgumentError(
            absl::StrCat("regulation stats: layer '", input.layers[l].name,
                         "' missing or out of order"));
      }
    }
  }
  return absl::OkStatus();
}

double EffectiveLambda(const SelectionOptions& options, size_t num_clients) {
  if (!options.normalize_lambda) return options.lambda;
  return options.lambda / std::max(1.0, static_cast<double>(num_clients) - 1.0);
}

namespace selection_internal {

int64_t ClientCosts::SetCost(const std::vector<int>& picks) const {
  int64_t sum = 0, deepest = 0;
  for (int k : picks) {
    sum += costs[k];
    deepest = std::max(deepest, depths[k]);
  }
  return sum + deepest;
}

namespace {

// A client's costs in the real unit, in the solver's form (see ClientCosts).
struct RealCosts {
  double room = 0;
  std::vector<double> costs, depths;
};

RealCosts ClientRealCosts(const SelectionInput& input, const ClientInput& c,
                          const std::vector<int>& common,
                          const std::vector<int>& selectable) {
  CostModel additive;
  const CostModel* model = c.cost.get();
  if (model == nullptr) {
    std::vector<double> costs;
    for (const LayerSpec& layer : input.layers) {
      costs.push_back(static_cast<double>(layer.cost));
    }
    additive = AdditiveCostModel(costs);
    model = &additive;
  }
  RealCosts out;
  // With common layers, their set is paid anyway and the others add their
  // own part and the depth below the lowest common layer; without, the
  // first selected layer brings the fixed part.
  const double paid = common.empty() ? 0.0 : model->Cost(common);
  const double paid_depth = common.empty() ? 0.0 : model->DepthFrom(common[0]);
  out.room = c.budget - paid;
  for (int l : selectable) {
    out.costs.push_back(model->per_layer[l]);
    out.depths.push_back(common.empty()
                             ? model->fixed + model->DepthFrom(l)
                             : std::max(0.0, model->DepthFrom(l) - paid_depth));
  }
  return out;
}

bool IsIntegral(double v) { return v == std::floor(v) && std::abs(v) < 9.0e15; }

// Rounded up (costs) and clamped far above any room: an unaffordable cost
// stays unaffordable without overflowing.
int64_t CeilTicks(double v, double tick) {
  return static_cast<int64_t>(std::min(std::ceil(v / tick), 0x1p60));
}

}  // namespace

absl::StatusOr<Round> PrepareRound(const SelectionInput& input) {
  RETURN_IF_ERROR(ValidateSelectionInput(input));
  Round round;
  round.input = &input;
  for (int l = 0; l < static_cast<int>(input.layers.size()); ++l) {
    const LayerSpec& layer = input.layers[l];
    if (layer.common) {
      round.common.push_back(l);
    } else if (!layer.frozen) {
      round.selectable.push_back(l);
    }
  }
  std::vector<RealCosts> real;
  bool integral = true;
  double max_room = 0;
  for (const ClientInput& c : input.clients) {
    real.push_back(ClientRealCosts(input, c, round.common, round.selectable));
    const RealCosts& r = real.back();
    integral = integral && IsIntegral(r.room);
    for (double v : r.costs) integral = integral && IsIntegral(v);
    for (double v : r.depths) {
      integral = integral && IsIntegral(v);
      round.has_depth = round.has_depth || v > 0;
    }
    max_room = std::max(max_room, r.room);
  }
  round.tick = integral || max_room <= 0 ? 1.0 : max_room / 0x1p24;
  for (const RealCosts& r : real) {
    ClientCosts c;
    c.room =
        static_cast<int64_t>(std::max(0.0, std::floor(r.room / round.tick)));
    for (double v : r.costs) {
      c.costs.push_back(std::max<int64_t>(1, CeilTicks(v, round.tick)));
    }
    for (double v : r.depths) c.depths.push_back(CeilTicks(v, round.tick));
    round.clients.push_back(std::move(c));
  }
  return round;
}

absl::StatusOr<std::vector<std::vector<double>>> MetricScores(
    const Round& round, Metric metric, bool normalize,
    bool use_running_importance, absl::string_view strategy) {
  const SelectionInput& input = *round.input;
  std::vector<std::vector<double>> scores;
  scores.reserve(input.clients.size());
  for (const ClientInput& c : input.clients) {
    std::vector<double> v = MetricVector(c, metric);
    if (v.empty()) {
      const RegulationStats* stats = input.stats;
      if (metric == Metric::kSqGradNorm && use_running_importance &&
          stats != nullptr && stats->has_importance()) {
        v = stats->importance();
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "client '", c.id, "': strategy '", strategy, "' needs ",
            MetricName(metric), " scores, none reported"));
      }
    }
    if (normalize) {
      double sum = 0;
      for (int l : round.selectable) sum += v[l];
      if (sum > 0) {
        for (double& s : v) s /= sum;
      }
    }
    scores.push_back(std::move(v));
  }
  return scores;
}

SelectionResult Finish(const Round& round, std::vector<std::vector<int>> chosen,
                       const SelectionOptions& options) {
  const SelectionInput& input = *round.input;
  SelectionResult result;
  result.layer_counts.assign(input.layers.size(), 0);
  for (std::vector<int>& layers : chosen) {
    layers.insert(layers.end(), round.common.begin(), round.common.end());
    std::sort(layers.begin(), layers.end());
    for (int l : layers) ++result.layer_counts[l];
  }
  result.layers = std::move(chosen);
  SelectionDiagnostics& d = result.diagnostics;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  absl::StatusOr<double> objective = SelectionObjective(
      input, result.layers, EffectiveLambda(options, input.clients.size()),
      options.normalize_scores, options.use_running_importance);
  d.status = SolverStatus::kHeuristic;
  d.objective = objective.ok() ? *objective : nan;
  d.upper_bound = d.gap = d.fallback_objective = nan;
  return result;
}

}  // namespace selection_internal

absl::StatusOr<double> SelectionObjective(
    const SelectionInput& input, const std::vector<std::vector<int>>& layers,
    double lambda, bool normalize_scores, bool use_running_importance) {
  ASSIGN_OR_RETURN(Round round, selection_internal::PrepareRound(input));
  if (layers.size() != input.clients.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection has ", layers.size(), " clients, input has ",
                     input.clients.size()));
  }
  ASSIGN_OR_RETURN(std::vector<std::vector<double>> scores,
                   selection_internal::MetricScores(
                       round, Metric::kSqGradNorm, normalize_scores,
                       use_running_importance, "objective"));
  const int num_layers = static_cast<int>(input.layers.size());
  const double n = static_cast<double>(input.clients.size());
  std::vector<int> count(num_layers, 0);
  double value = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    for (int l : layers[i]) {
      if (l < 0 || l >= num_layers) {
        return absl::InvalidArgumentError(
            absl::StrCat("client '", input.clients[i].id, "': layer index ", l,
                         " out of range"));
      }
      value += scores[i][l];
      ++count[l];
    }
  }
  for (int l = 0; l < num_layers; ++l)
    value -= lambda * count[l] * (n - count[l]);
  return value;
}

absl::StatusOr<std::vector<LayerSpec>> MakeLayerTable(
    absl::Span<const std::string> names, absl::Span<const int64_t> costs,
    absl::Span<const std::string> frozen,
    absl::Span<const std::string> common) {
  if (names.size() != costs.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer table: ", names.size(), " names but ", costs.size(), " costs"));
  }
  std::vector<LayerSpec> layers;
  absl::flat_hash_map<std::string, size_t> index;
  for (size_t l = 0; l < names.size(); ++l) {
    if (!index.emplace(names[l], l).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer table: duplicate layer '", names[l], "'"));
    }
    layers.push_back({names[l], costs[l], false, false});
  }
  for (const std::string& name : frozen) {
    auto it = index.find(name);
    if (it == index.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("frozen: unknown layer '", name, "'"));
    }
    layers[it->second].frozen = true;
  }
  for (const std::string& name : common) {
    auto it = index.find(name);
    if (it == index.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("common: unknown layer '", name, "'"));
    }
    layers[it->second].common = true;
  }
  SelectionInput check;
  check.layers = layers;
  RETURN_IF_ERROR(ValidateSelectionInput(check));
  return layers;
}

absl::StatusOr<std::vector<double>> ScoresByName(
    absl::Span<const LayerSpec> layers,
    absl::Span<const std::pair<std::string, double>> named,
    absl::string_view client_id) {
  absl::flat_hash_map<absl::string_view, size_t> index;
  for (size_t l = 0; l < layers.size(); ++l) index.emplace(layers[l].name, l);
  std::vector<double> scores(layers.size(), 0.0);
  std::vector<bool> seen(layers.size(), false);
  for (const auto& [name, score] : named) {
    auto it = index.find(name);
    if (it == index.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "client '", client_id, "': score for unknown layer '", name, "'"));
    }
    if (seen[it->second]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "client '", client_id, "': two scores for layer '", name, "'"));
    }
    if (!std::isfinite(score) || score < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("client '", client_id, "': score of layer '", name,
                       "' must be finite and >= 0, got ", score));
    }
    seen[it->second] = true;
    scores[it->second] = score;
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    if (!seen[l]) {
      return absl::InvalidArgumentError(absl::StrCat("client '", client_id,
                                                     "': no score for layer '",
                                                     layers[l].name, "'"));
    }
  }
  return scores;
}

absl::StatusOr<std::unique_ptr<SelectionStrategy>> CreateSelectionStrategy(
    absl::string_view name, const SelectionOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  for (const RegistryEntry& entry : kRegistry) {
    if (name == entry.name) return entry.create(options);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown selection strategy '", name,
      "'; valid: ", absl::StrJoin(SelectionStrategyNames(), ", ")));
}

std::vector<std::string> SelectionStrategyNames() {
  std::vector<std::string> names;
  for (const RegistryEntry& entry : kRegistry) names.emplace_back(entry.name);
  return names;
}

}  // namespace layerfl
