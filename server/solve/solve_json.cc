#include "server/solve/solve_json.h"

#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/selection/cost_model.h"
#include "server/selection/selection_strategy.h"

namespace layerfl {
namespace {

using Json = nlohmann::json;

absl::Status Bad(absl::string_view field, absl::string_view rule,
                 const Json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": ", rule, ", got ", got.dump()));
}

absl::StatusOr<double> NonNegative(const Json& v, absl::string_view field) {
  if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0)
    return Bad(field, "must be a finite number >= 0", v);
  return v.get<double>();
}

absl::StatusOr<std::vector<double>> NonNegativeList(const Json& v,
                                                    absl::string_view field,
                                                    size_t want) {
  if (!v.is_array()) return Bad(field, "must be a list of numbers", v);
  if (v.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", v.size(), " values for ", want, " groups"));
  }
  std::vector<double> out;
  for (size_t k = 0; k < v.size(); ++k) {
    ASSIGN_OR_RETURN(double x,
                     NonNegative(v[k], absl::StrCat(field, "[", k, "]")));
    out.push_back(x);
  }
  return out;
}

absl::Status CheckKeys(const Json& obj, absl::string_view where,
                       std::initializer_list<const char*> known) {
  for (const auto& [key, value] : obj.items()) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, where.empty() ? "" : ".", key, ": unknown key"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const Json*> Required(const Json& obj, const char* key,
                                     absl::string_view where = "") {
  auto it = obj.find(key);
  if (it == obj.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, where.empty() ? "" : ".", key, ": required"));
  }
  return &*it;
}

absl::StatusOr<std::shared_ptr<const CostModel>> ParseCost(
    const Json& v, absl::string_view field, size_t groups) {
  if (!v.is_object()) {
    return Bad(field, "must be an object {fixed, per_layer, depth}", v);
  }
  RETURN_IF_ERROR(CheckKeys(v, field, {"fixed", "per_layer", "depth"}));
  auto model = std::make_shared<CostModel>();
  ASSIGN_OR_RETURN(const Json* fixed, Required(v, "fixed", field));
  ASSIGN_OR_RETURN(model->fixed,
                   NonNegative(*fixed, absl::StrCat(field, ".fixed")));
  ASSIGN_OR_RETURN(const Json* per_layer, Required(v, "per_layer", field));
  ASSIGN_OR_RETURN(
      model->per_layer,
      NonNegativeList(*per_layer, absl::StrCat(field, ".per_layer"), groups));
  ASSIGN_OR_RETURN(const Json* depth, Required(v, "depth", field));
  ASSIGN_OR_RETURN(
      model->depth,
      NonNegativeList(*depth, absl::StrCat(field, ".depth"), groups));
  return std::shared_ptr<const CostModel>(std::move(model));
}

absl::StatusOr<std::vector<std::string>> GroupList(const Json& root,
                                                   const char* key,
                                                   size_t groups) {
  std::vector<std::string> names;
  auto it = root.find(key);
  if (it == root.end()) return names;
  if (!it->is_array()) return Bad(key, "must be a list of group indices", *it);
  for (size_t k = 0; k < it->size(); ++k) {
    const Json& v = (*it)[k];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() >= static_cast<int64_t>(groups)) {
      return Bad(absl::StrCat(key, "[", k, "]"),
                 absl::StrCat("must be a group index in [0, ", groups, ")"), v);
    }
    names.push_back(absl::StrCat(v.get<int64_t>()));
  }
  return names;
}

absl::StatusOr<std::string> Solve(const Json& root) {
  if (!root.is_object()) return Bad("input", "must be a JSON object", root);
  RETURN_IF_ERROR(CheckKeys(root, "",
                            {"scores", "budgets", "lambda", "cost", "common",
                             "frozen", "time_limit_ms", "target_gap"}));
  ASSIGN_OR_RETURN(const Json* scores, Required(root, "scores"));
  if (!scores->is_array() || scores->empty() || !(*scores)[0].is_array()) {
    return Bad("scores", "must be a non-empty list of per-client lists",
               *scores);
  }
  const size_t clients = scores->size();
  const size_t groups = (*scores)[0].size();
  if (groups == 0)
    return Bad("scores[0]", "must have one score per group", (*scores)[0]);

  SelectionInput input;
  std::vector<std::string> names;
  for (size_t l = 0; l < groups; ++l) names.push_back(absl::StrCat(l));
  ASSIGN_OR_RETURN(std::vector<std::string> common,
                   GroupList(root, "common", groups));
  ASSIGN_OR_RETURN(std::vector<std::string> frozen,
                   GroupList(root, "frozen", groups));
  std::vector<int64_t> unit(groups, 1);
  absl::StatusOr<std::vector<LayerSpec>> layers =
      MakeLayerTable(names, unit, frozen, common);
  if (!layers.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("common/frozen: ", layers.status().message()));
  }
  input.layers = std::move(*layers);

  ASSIGN_OR_RETURN(const Json* budgets, Required(root, "budgets"));
  if (!budgets->is_array() || budgets->size() != clients) {
    return Bad("budgets",
               absl::StrCat("must be a list of ", clients,
                            " budgets (one per row of scores)"),
               *budgets);
  }
  ASSIGN_OR_RETURN(const Json* cost, Required(root, "cost"));
  if (cost->is_array() && cost->size() != clients) {
    return Bad("cost",
               absl::StrCat("as a list must have ", clients,
                            " entries (one per client)"),
               *cost);
  }
  std::shared_ptr<const CostModel> shared;
  if (!cost->is_array()) {
    ASSIGN_OR_RETURN(shared, ParseCost(*cost, "cost", groups));
  }
  for (size_t i = 0; i < clients; ++i) {
    ClientInput c;
    c.id = absl::StrCat(i);
    const std::string row = absl::StrCat("scores[", i, "]");
    ASSIGN_OR_RETURN(c.sq_grad_norm,
                     NonNegativeList((*scores)[i], row, groups));
    ASSIGN_OR_RETURN(
        c.budget, NonNegative((*budgets)[i], absl::StrCat("budgets[", i, "]")));
    if (shared != nullptr) {
      c.cost = shared;
    } else {
      ASSIGN_OR_RETURN(
          c.cost, ParseCost((*cost)[i], absl::StrCat("cost[", i, "]"), groups));
    }
    input.clients.push_back(std::move(c));
  }

  std::vector<int> common_groups;
  for (size_t l = 0; l < groups; ++l) {
    if (input.layers[l].common) common_groups.push_back(static_cast<int>(l));
  }
  for (size_t i = 0; i < clients; ++i) {
    const ClientInput& c = input.clients[i];
    const double paid = c.cost->Cost(common_groups);
    if (c.budget < paid) {
      return absl::InvalidArgumentError(
          absl::StrCat("budgets[", i, "]: ", c.budget,
                       " cannot hold the common groups (cost ", paid, ")"));
    }
  }

  SelectionOptions options;
  options.normalize_scores = false;
  options.normalize_lambda = false;
  options.use_running_importance = false;
  ASSIGN_OR_RETURN(const Json* lambda, Required(root, "lambda"));
  ASSIGN_OR_RETURN(options.lambda, NonNegative(*lambda, "lambda"));
  options.time_limit_ms = 1000;
  options.target_gap = 0;
  if (auto it = root.find("time_limit_ms"); it != root.end()) {
    ASSIGN_OR_RETURN(options.time_limit_ms, NonNegative(*it, "time_limit_ms"));
    if (options.time_limit_ms == 0)
      return Bad("time_limit_ms", "must be > 0", *it);
  }
  if (auto it = root.find("target_gap"); it != root.end()) {
    ASSIGN_OR_RETURN(options.target_gap, NonNegative(*it, "target_gap"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SelectionStrategy> strategy,
                   CreateSelectionStrategy("strategic", options));
  absl::StatusOr<SelectionResult> result = strategy->Select(input);
  if (!result.ok()) {
    return result.status();
  }
  Json out;
  out["selection"] = Json::array();
  out["cost"] = Json::array();
  for (size_t i = 0; i < clients; ++i) {
    out["selection"].push_back(result->layers[i]);
    out["cost"].push_back(input.clients[i].cost->Cost(result->layers[i]));
  }
  const SelectionDiagnostics& d = result->diagnostics;
  out["objective"] = d.objective;
  out["upper_bound"] = d.upper_bound;
  out["gap"] = d.gap;
  out["status"] = SolverStatusName(d.status);
  out["solve_ms"] = d.solve_ms;
  return out.dump() + "\n";
}

}  // namespace

absl::StatusOr<std::string> SolveStrategicJson(absl::string_view input) {
  Json root;
  try {
    root = Json::parse(input.begin(), input.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("input: not JSON: ", e.what()));
  }
  return Solve(root);
}

}  // namespace layerfl
