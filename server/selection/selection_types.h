#ifndef LAYERFL_SERVER_SELECTION_SELECTION_TYPES_H_
#define LAYERFL_SERVER_SELECTION_SELECTION_TYPES_H_

// Plain data passed to and returned by the layer-selection strategies
// (DESIGN.md §2). No torch, gRPC or yaml: the coordinator fills these from its
// own state and the run config.
//
// Thread-compatible value types.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/selection/cost_model.h"
#include "server/selection/strategic_solver.h"

namespace layerfl {

class RegulationStats;

// One layer group of the model, in order from input to output.
struct LayerSpec {
  std::string name;     // unique, non-empty
  int64_t cost = 1;     // additive training cost in the run's cost unit
                        // (budget.h), >= 1 unless frozen; clients with their
                        // own CostModel ignore it
  bool frozen = false;  // never selected
  bool common = false;  // selected for every client; counts against its budget
};

// A client taking part in this round.
struct ClientInput {
  std::string id;           // unique, non-empty
  double budget = 0;        // in cost units, finite and >= 0
  int64_t num_samples = 0;  // >= 0; weights the running importance estimate
  // Per-layer scores in layer-table order, each finite and >= 0. Empty when
  // the client did not report that metric; otherwise exactly one per layer.
  std::vector<double> sq_grad_norm;  // squared gradient norm (the paper's g_il)
  std::vector<double> rgn;           // gradient norm / parameter norm
  std::vector<double> snr;           // mean^2 / variance of the gradient
  // What training a set of layers costs this client (cost_model.h), one entry
  // per layer of the table, in the budget's unit; shared, not copied, when
  // many clients have the same. Null: the layer table's additive costs.
  std::shared_ptr<const CostModel> cost;
};

struct SelectionInput {
  std::vector<LayerSpec> layers;
  std::vector<ClientInput> clients;
  // Optional, not owned, must outlive the Select() call. Its layer names must
  // equal the layer table's. Score strategies use its running importance for
  // clients without sq_grad_norm when SelectionOptions allows it.
  const RegulationStats* stats = nullptr;
  // Per-round seed: the `random` strategy's draws and the solver's restarts.
  uint64_t seed = 0;
};

// Options of every strategy; each strategy reads the fields it needs. The
// defaults match the run config's `selection` section.
struct SelectionOptions {
  // Registry name: full, top, bottom, both, random, head, rgn, snr, importance,
  // strategic. Default "strategic".
  std::string strategy = "strategic";
  // Weight of the disagreement penalty, >= 0. With normalize_lambda the
  // penalty is lambda / (N - 1) * sum_l n_l (N - n_l) for N clients, so that
  // one client taking a layer none of the other N - 1 take costs lambda, and
  // joining a layer all of them take gains lambda, whatever N; with
  // normalised scores a client's whole score mass is 1, so lambda = 0.1
  // gives up such a lone layer unless it carries more than 10% of the
  // client's mass. Used by strategic, rgn and snr; importance is lambda = 0.
  // Default 0.2.
  double lambda = 0.2;
  // Divide lambda by (N - 1) as above. false: lambda multiplies the raw
  // sum_l n_l (N - n_l) (the paper's form; layerfl-solve). Default true.
  bool normalize_lambda = true;
  // Divide each client's scores by their sum over the selectable (not frozen,
  // not common) layers before selecting, so lambda means the same across
  // models. Changes only the strategic objective (per-client rankings are
  // scale-free). Default true.
  bool normalize_scores = true;
  // Strategic solver wall-clock limit, > 0. Default 500 ms.
  double time_limit_ms = 500.0;
  // Strategic solver: on instances above max_exact_variables, stop once the
  // proven relative gap is <= target_gap (>= 0). Smaller instances are solved
  // to proven optimality unless a limit stops them. Default 0.01.
  double target_gap = 0.01;
  // Strategic solver: heuristic kick rounds, >= 1. Default 8.
  int starts = 8;
  // Strategic solver: branch and bound runs when clients x selectable layers
  // <= this, >= 0. Default 1024.
  int max_exact_variables = 1024;
  // Strategic solver: branch-and-bound node limit, >= 1. Default 2,000,000.
  int64_t max_nodes = 2'000'000;
  // Score strategies: a client without sq_grad_norm is scored with the
  // regulation statistics' running importance when the input carries stats
  // that have one; otherwise it is an error. Default true.
  bool use_running_importance = true;

  // InvalidArgument naming the first bad field, e.g.
  // "selection.lambda: must be finite and >= 0, got -1".
  absl::Status Validate() const;
};

struct SelectionDiagnostics {
  // kOptimal / kFeasibleGap from the strategic solver; kHeuristic for every
  // other strategy.
  SolverStatus status = SolverStatus::kHeuristic;
  // The strategic objective of the returned selection (the effective
  // lambda, the possibly normalised scores of the strategy's metric:
  // sq_grad_norm, or rgn / snr for those strategies; common layers
  // included). NaN when some client has no such scores.
  double objective = 0.0;
  // Proven bound on the objective; NaN for heuristic strategies.
  double upper_bound = 0.0;
  // (upper_bound - objective) / |objective| over the selectable layers only,
  // so that common layers do not dilute it; NaN for heuristic strategies.
  double gap = 0.0;
  // Objective of the per-client top-by-score selection (the paper's
  // fallback); NaN when not computed.
  double fallback_objective = 0.0;
  double solve_ms = 0.0;
  int64_t nodes = 0;
  bool time_limit_hit = false;
};

struct SelectionResult {
  // Per client (input order): the selected layer indices, ascending, common
  // layers included, frozen never.
  std::vector<std::vector<int>> layers;
  // n_l: how many clients selected each layer.
  std::vector<int> layer_counts;
  SelectionDiagnostics diagnostics;
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_SELECTION_TYPES_H_
