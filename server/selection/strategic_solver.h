#ifndef LAYERFL_SERVER_SELECTION_STRATEGIC_SOLVER_H_
#define LAYERFL_SERVER_SELECTION_STRATEGIC_SOLVER_H_

// The paper's strategic layer-selection problem (DESIGN.md §2) on the layers a
// client may choose (common layers are constant and frozen layers absent, so
// both are removed before the solver sees the problem):
//
//   maximise   F(x) = sum_i sum_l x_il g_il  -  lambda * sum_l n_l (N - n_l)
//   subject to sum_l c_il x_il + max_{l: x_il = 1} d_il <= B_i  for every
//              client i (the max is 0 for an empty selection),  x_il in {0,1},
//
// with n_l = sum_i x_il. (sum_l n_l (N - n_l) equals the paper's
// sum_l sum_{i<j} (x_il - x_jl)^2.) The max term is the depth part of the
// cost model (cost_model.h): d_il is what client i's backward pass costs when
// layer l is the lowest it trains; with no depths the constraint is the
// paper's additive knapsack. Costs and depths may differ per client (each
// client's own measured profile).
//
// SolveStrategic always returns a feasible x together with a proven upper
// bound on the optimum:
//  * Heuristic: best-response dynamics. Client i adding layer l when m other
//    clients hold it changes F by g_il - lambda (N - 1 - 2m), so each client's
//    best response to the others is a (depth-aware) knapsack with those
//    values (depth_knapsack.h), and F is
//    an exact potential: every improving response raises F, so the dynamics
//    stop at a local optimum. Starts: the lambda = 0 answer (the paper's top-B
//    fallback), a consensus order (every client walks the layers by total
//    score per cost), the empty selection, and the Lagrangian relaxations'
//    selections repaired to fit the budgets; kicks then move one layer to
//    all-or-none at once (a move no single client would make).
//  * Upper bounds, two Lagrangian relaxations, each valid for any multipliers
//    and lowered by projected subgradient steps (Polyak step to the
//    incumbent):
//     - budget relaxation, one multiplier mu_i >= 0 per client: the problem
//       separates by layer; layer l takes the k clients with the largest
//       g_il - mu_i c_il for the best k after the penalty lambda k (N - k).
//       The depth term is dropped there (a looser constraint, so still a
//       bound). Few multipliers, so it converges fast on large instances;
//     - split relaxation (Lagrangian decomposition), copies z = x with one
//       multiplier u_il per pair: exact per-client knapsacks on g - u plus
//       the per-layer problem on u. At least as strong, and exact at
//       lambda = 0 (u = 0) where the first loses the knapsacks' integrality.
//  * Exact: when N * L <= max_exact_variables, depth-first branch and bound
//    on single pairs x_il (where the split relaxation's two sides disagree),
//    each node bounded by the split relaxation warm-started from its parent,
//    until the gap closes (status kOptimal) or the node or time limit stops
//    it (kFeasibleGap; the bound is then the largest bound of an open node).
//  * Large instances stop once the gap is at most target_gap.
//
// The answer is deterministic for a given problem and options unless the time
// limit binds (SolverStats::time_limit_hit tells).
//
// Thread-safe: the functions keep no state between calls.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace layerfl {

enum class SolverStatus {
  kOptimal,      // proven optimal (gap below 1e-9)
  kFeasibleGap,  // feasible, with a proven upper bound and the gap between them
  kHeuristic,    // no bound computed (the strategy is not an optimiser)
};

// "optimal", "feasible_gap" or "heuristic".
const char* SolverStatusName(SolverStatus status);

struct StrategicProblem {
  int num_clients = 0;
  int num_layers = 0;
  // c_il: [num_layers] (the same for every client) or
  // [num_clients * num_layers] (client-major), each >= 1.
  std::vector<int64_t> costs;
  // d_il: empty (all 0), [num_layers] or [num_clients * num_layers], each
  // >= 0.
  std::vector<int64_t> depths;
  std::vector<int64_t> budgets;  // [num_clients], each >= 0
  // [num_clients * num_layers], client-major: scores[i * num_layers + l];
  // finite and >= 0.
  std::vector<double> scores;
  double lambda = 0.0;  // finite, >= 0

  double score(int i, int l) const { return scores[i * num_layers + l]; }
  int64_t cost(int i, int l) const {
    return costs.size() == static_cast<size_t>(num_layers)
               ? costs[l]
               : costs[static_cast<size_t>(i) * num_layers + l];
  }
  int64_t depth(int i, int l) const {
    if (depths.empty()) return 0;
    return depths.size() == static_cast<size_t>(num_layers)
               ? depths[l]
               : depths[static_cast<size_t>(i) * num_layers + l];
  }
  // Client i's cost of the selection x_i (x_i: num_layers flags).
  int64_t SelectionCost(int i, const uint8_t* x_i) const;

  // InvalidArgument naming the first bad field (and client / layer index).
  absl::Status Validate() const;
};

struct StrategicSolverOptions {
  // Wall-clock limit for the whole solve; the best answer so far is returned
  // when it expires. Default 1000 ms.
  double time_limit_ms = 1000.0;
  // Where branch and bound does not run (N * L > max_exact_variables), stop
  // as soon as (upper_bound - objective) / |objective| <= target_gap. Default
  // 0: keep going until the gap closes or a limit is reached.
  double target_gap = 0.0;
  // Branch and bound runs when num_clients * num_layers <= this. Default 1024
  // (the paper's 20 clients x up to 48 layers).
  int max_exact_variables = 1024;
  // Branch-and-bound node limit (a deterministic work limit). Default 2e6.
  int64_t max_nodes = 2'000'000;
  // Randomised kick rounds of the heuristic after the deterministic starts.
  // Default 8.
  int num_starts = 8;
  // Seeds the visiting orders and kicks of the heuristic. Default 0.
  uint64_t seed = 0;
  // Testing: start branch and bound from the lambda = 0 answer alone, without
  // best-response dynamics, Lagrangian heuristics or kicks. Default false.
  bool bare_branch_and_bound = false;
};

struct SolverStats {
  SolverStatus status = SolverStatus::kHeuristic;
  double objective = 0.0;    // F(x) of the returned x
  double upper_bound = 0.0;  // proven: no feasible x has F(x) > upper_bound
  // (upper_bound - objective) / max(|objective|, 1e-12), 0 when within 1e-9.
  double gap = 0.0;
  double fallback_objective = 0.0;  // F of the lambda = 0 (top-B) selection
  double solve_ms = 0.0;
  int64_t nodes = 0;             // branch-and-bound nodes
  int64_t bound_iterations = 0;  // Lagrangian evaluations
  bool time_limit_hit = false;
};

struct StrategicSolution {
  // [num_clients * num_layers], client-major, 1 = client trains the layer.
  std::vector<uint8_t> x;
  SolverStats stats;
};

// F(x) for a selection of the right size (budgets are not checked).
double StrategicObjective(const StrategicProblem& problem,
                          const std::vector<uint8_t>& x);

// Validates the problem, then solves it as described above.
absl::StatusOr<StrategicSolution> SolveStrategic(
    const StrategicProblem& problem, const StrategicSolverOptions& options);

// Exhaustive search over every client's feasible subsets, for tests and
// reference. ResourceExhausted when there are more than `max_combinations`
// joint selections.
absl::StatusOr<StrategicSolution> SolveStrategicBruteForce(
    const StrategicProblem& problem, int64_t max_combinations = 50'000'000);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_STRATEGIC_SOLVER_H_
