#ifndef LAYERFL_SERVER_SOLVE_SOLVE_JSON_H_
#define LAYERFL_SERVER_SOLVE_SOLVE_JSON_H_

// The strategic selection problem as JSON, for researchers (layerfl-solve).
// Groups are indexed from the input side (0) to the output side.
//
// Input:
//   {"scores":  [[g_il, ...], ...],   // one row per client, one per group
//    "budgets": [B_i, ...],           // one per client, finite and >= 0
//    "lambda":  0.1,                  // multiplies sum_l n_l (N - n_l)
//    "cost": {"fixed": F, "per_layer": [w_l, ...], "depth": [a_l, ...]},
//    "common": [l, ...],              // optional: trained by every client
//    "frozen": [l, ...],              // optional: never trained
//    "time_limit_ms": 1000,           // optional, > 0
//    "target_gap": 0}                 // optional, >= 0
// A client training the non-empty set S pays F + sum_{l in S} w_l +
// sum_{l >= min(S)} a_l (the empty set costs 0); "cost" may also be a list
// of one such object per client. Scores are taken as given (no
// normalisation) and lambda is the paper's raw weight. Real-valued costs are
// solved in integer ticks, costs rounded up and budgets down, so a returned
// selection always fits; "optimal" is proven for that rounded problem (exact
// when every cost and budget is an integer).
//
// Output:
//   {"selection": [[l, ...], ...], "cost": [c_i, ...], "objective": ...,
//    "upper_bound": ..., "gap": ..., "status": "optimal|feasible_gap",
//    "solve_ms": ...}
// with each client's groups ascending, common groups included.
//
// Thread-safe: no state.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace layerfl {

// InvalidArgument naming the bad field, e.g. "budgets[2]: must be a finite
// number >= 0, got -1" or "cost.depth: 3 values for 4 groups", for malformed
// JSON, missing or unknown keys and out-of-range values.
absl::StatusOr<std::string> SolveStrategicJson(absl::string_view input);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SOLVE_SOLVE_JSON_H_
