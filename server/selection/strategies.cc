// The registered strategies. Each picks, per client, among the selectable
// layers within the room its budget leaves after the common layers, under
// the client's cost (additive, or depth-aware from its cost model);
// selection_internal::Finish adds the common layers and the diagnostics.

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"
#include "server/selection/depth_knapsack.h"
#include "server/selection/rng.h"
#include "server/selection/selection_internal.h"
#include "server/selection/strategic_solver.h"

namespace layerfl::selection_internal {
namespace {

// Walks `order` (positions in Round::selectable) and takes the layers that
// fit the client's room under its cost; with `contiguous`, stops at the
// first that does not, so the selection stays contiguous in that order.
// Returns layer indices.
std::vector<int> TakeWhileFits(const Round& round, size_t client,
                               const std::vector<int>& order, bool contiguous) {
  const ClientCosts& c = round.clients[client];
  std::vector<int> taken;
  int64_t sum = 0, deepest = 0;
  for (int k : order) {
    const int64_t d = std::max(deepest, c.depths[k]);
    if (sum + c.costs[k] + d > c.room) {
      if (contiguous) break;
      continue;
    }
    sum += c.costs[k];
    deepest = d;
    taken.push_back(round.selectable[k]);
  }
  return taken;
}

std::vector<int> Positions(size_t n) {
  std::vector<int> order(n);
  for (size_t k = 0; k < n; ++k) order[k] = static_cast<int>(k);
  return order;
}

class OrderStrategy : public SelectionStrategy {
 public:
  enum class Kind { kFull, kTop, kBottom, kBoth, kHead };
  OrderStrategy(Kind kind, SelectionOptions options)
      : kind_(kind), options_(std::move(options)) {}

  absl::string_view name() const override {
    switch (kind_) {
      case Kind::kFull:
        return "full";
      case Kind::kTop:
        return "top";
      case Kind::kBottom:
        return "bottom";
      case Kind::kBoth:
        return "both";
      case Kind::kHead:
        return "head";
    }
    return "";
  }

  absl::StatusOr<SelectionResult> Select(
      const SelectionInput& input) const override {
    ASSIGN_OR_RETURN(Round round, PrepareRound(input));
    const std::vector<int> s = Positions(round.selectable.size());
    std::vector<int> order;
    switch (kind_) {
      case Kind::kFull:
      case Kind::kBottom:
        order = s;
        break;
      case Kind::kTop:
        order.assign(s.rbegin(), s.rend());
        break;
      case Kind::kBoth:
        for (size_t a = 0, b = s.size(); a < b;) {
          order.push_back(s[a++]);
          if (a < b) order.push_back(s[--b]);
        }
        break;
      case Kind::kHead:
        // The linear probe: the common layers (the new head) alone, or the
        // output-side group when there are none.
        if (round.common.empty() && !s.empty()) order.push_back(s.back());
        break;
    }
    std::vector<std::vector<int>> chosen;
    for (size_t i = 0; i < input.clients.size(); ++i) {
      const ClientCosts& c = round.clients[i];
      if (kind_ == Kind::kFull && c.room < c.SetCost(s)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "client '", input.clients[i].id, "': budget ",
            input.clients[i].budget,
            " cannot hold every trainable layer (selectable cost ",
            static_cast<double>(c.SetCost(s)) * round.tick,
            " after the common layers); strategy 'full' trains them all"));
      }
      chosen.push_back(TakeWhileFits(round, i, order, /*contiguous=*/true));
    }
    return Finish(round, std::move(chosen), options_);
  }

 private:
  const Kind kind_;
  const SelectionOptions options_;
};

// Each client walks its own uniformly random order, drawn from (round seed,
// client id), and takes every layer that still fits.
class RandomStrategy : public SelectionStrategy {
 public:
  explicit RandomStrategy(SelectionOptions options)
      : options_(std::move(options)) {}
  absl::string_view name() const override { return "random"; }

  absl::StatusOr<SelectionResult> Select(
      const SelectionInput& input) const override {
    ASSIGN_OR_RETURN(Round round, PrepareRound(input));
    std::vector<std::vector<int>> chosen;
    for (size_t i = 0; i < input.clients.size(); ++i) {
      DeterministicRng rng(MixSeed(input.seed) ^
                           StableHash(input.clients[i].id));
      std::vector<int> order = Positions(round.selectable.size());
      rng.Shuffle(order);
      chosen.push_back(TakeWhileFits(round, i, order, /*contiguous=*/false));
    }
    return Finish(round, std::move(chosen), options_);
  }

 private:
  const SelectionOptions options_;
};

// Per client, the subset of selectable layers with the largest total score
// that fits (an exact 0-1 knapsack; with equal costs, the highest scores).
class ScoreStrategy : public SelectionStrategy {
 public:
  ScoreStrategy(std::string name, Metric metric, SelectionOptions options)
      : name_(std::move(name)), metric_(metric), options_(std::move(options)) {}
  absl::string_view name() const override { return name_; }

  absl::StatusOr<SelectionResult> Select(
      const SelectionInput& input) const override {
    ASSIGN_OR_RETURN(Round round, PrepareRound(input));
    ASSIGN_OR_RETURN(std::vector<std::vector<double>> scores,
                     MetricScores(round, metric_, /*normalize=*/false,
                                  options_.use_running_importance, name_));
    DepthKnapsack knapsack;
    std::vector<double> values(round.selectable.size());
    std::vector<std::vector<int>> chosen;
    for (size_t i = 0; i < input.clients.size(); ++i) {
      for (size_t k = 0; k < round.selectable.size(); ++k) {
        values[k] = scores[i][round.selectable[k]];
      }
      const ClientCosts& c = round.clients[i];
      const Knapsack::Result r =
          knapsack.Solve(values, c.costs, c.depths, 0, c.room);
      std::vector<int> taken;
      for (int k : r.taken) taken.push_back(round.selectable[k]);
      chosen.push_back(std::move(taken));
    }
    return Finish(round, std::move(chosen), options_);
  }

 private:
  const std::string name_;
  const Metric metric_;
  const SelectionOptions options_;
};

// The paper's regularised problem on one metric's scores: strategic on
// sq_grad_norm, rgn and snr on theirs.
class StrategicStrategy : public SelectionStrategy {
 public:
  StrategicStrategy(std::string name, Metric metric, SelectionOptions options)
      : name_(std::move(name)), metric_(metric), options_(std::move(options)) {}
  absl::string_view name() const override { return name_; }

  absl::StatusOr<SelectionResult> Select(
      const SelectionInput& input) const override {
    ASSIGN_OR_RETURN(Round round, PrepareRound(input));
    ASSIGN_OR_RETURN(std::vector<std::vector<double>> scores,
                     MetricScores(round, metric_, options_.normalize_scores,
                                  options_.use_running_importance, name_));
    const int n = static_cast<int>(input.clients.size());
    const int m = static_cast<int>(round.selectable.size());
    StrategicProblem problem;
    problem.num_clients = n;
    problem.num_layers = m;
    problem.lambda = EffectiveLambda(options_, input.clients.size());
    for (const ClientCosts& c : round.clients) {
      problem.budgets.push_back(c.room);
      problem.costs.insert(problem.costs.end(), c.costs.begin(), c.costs.end());
      if (round.has_depth) {
        problem.depths.insert(problem.depths.end(), c.depths.begin(),
                              c.depths.end());
      }
    }
    problem.scores.reserve(static_cast<size_t>(n) * m);
    double constant = 0;  // the common layers' scores
    for (int i = 0; i < n; ++i) {
      for (int l : round.selectable) problem.scores.push_back(scores[i][l]);
      for (int l : round.common) constant += scores[i][l];
    }
    StrategicSolverOptions solver;
    solver.time_limit_ms = options_.time_limit_ms;
    solver.target_gap = options_.target_gap;
    solver.num_starts = options_.starts;
    solver.max_exact_variables = options_.max_exact_variables;
    solver.max_nodes = options_.max_nodes;
    solver.seed = input.seed;
    ASSIGN_OR_RETURN(StrategicSolution solution,
                     SolveStrategic(problem, solver));
    std::vector<std::vector<int>> chosen(n);
    for (int i = 0; i < n; ++i) {
      for (int k = 0; k < m; ++k) {
        if (solution.x[static_cast<size_t>(i) * m + k]) {
          chosen[i].push_back(round.selectable[k]);
        }
      }
    }
    SelectionResult result = Finish(round, std::move(chosen), options_);
    SelectionDiagnostics& d = result.diagnostics;
    const SolverStats& st = solution.stats;
    d.status = st.status;
    d.objective = st.objective + constant;
    d.upper_bound = st.upper_bound + constant;
    d.gap = st.gap;
    d.fallback_objective = st.fallback_objective + constant;
    d.solve_ms = st.solve_ms;
    d.nodes = st.nodes;
    d.time_limit_hit = st.time_limit_hit;
    return result;
  }

 private:
  const std::string name_;
  const Metric metric_;
  const SelectionOptions options_;
};

}  // namespace

std::unique_ptr<SelectionStrategy> NewFullStrategy(const SelectionOptions& o) {
  return std::make_unique<OrderStrategy>(OrderStrategy::Kind::kFull, o);
}
std::unique_ptr<SelectionStrategy> NewTopStrategy(const SelectionOptions& o) {
  return std::make_unique<OrderStrategy>(OrderStrategy::Kind::kTop, o);
}
std::unique_ptr<SelectionStrategy> NewBottomStrategy(
    const SelectionOptions& o) {
  return std::make_unique<OrderStrategy>(OrderStrategy::Kind::kBottom, o);
}
std::unique_ptr<SelectionStrategy> NewBothStrategy(const SelectionOptions& o) {
  return std::make_unique<OrderStrategy>(OrderStrategy::Kind::kBoth, o);
}
std::unique_ptr<SelectionStrategy> NewHeadStrategy(const SelectionOptions& o) {
  return std::make_unique<OrderStrategy>(OrderStrategy::Kind::kHead, o);
}
std::unique_ptr<SelectionStrategy> NewRandomStrategy(
    const SelectionOptions& o) {
  return std::make_unique<RandomStrategy>(o);
}
std::unique_ptr<SelectionStrategy> NewRgnStrategy(const SelectionOptions& o) {
  return std::make_unique<StrategicStrategy>("rgn", Metric::kRgn, o);
}
std::unique_ptr<SelectionStrategy> NewSnrStrategy(const SelectionOptions& o) {
  return std::make_unique<StrategicStrategy>("snr", Metric::kSnr, o);
}
std::unique_ptr<SelectionStrategy> NewImportanceStrategy(
    const SelectionOptions& o) {
  return std::make_unique<ScoreStrategy>("importance", Metric::kSqGradNorm, o);
}
std::unique_ptr<SelectionStrategy> NewStrategicStrategy(
    const SelectionOptions& o) {
  return std::make_unique<StrategicStrategy>("strategic", Metric::kSqGradNorm,
                                             o);
}

}  // namespace layerfl::selection_internal
