#ifndef LAYERFL_SERVER_SELECTION_BUDGET_H_
#define LAYERFL_SERVER_SELECTION_BUDGET_H_

// Layer costs and client budgets in one cost unit (DESIGN.md §2, §7):
//  * layers: every layer costs 1 (the paper);
//  * params: a layer costs its parameter count;
//  * time: seconds of client compute per round (the scoring pass when the
//    round scores, plus the local steps), depth-aware, from the client's
//    measured profile (common/layers/profile.h);
//  * memory: MiB of peak training memory, depth-aware, from the profile.
// A client's budget is what it declared when it joined, or a draw from the
// run config's distribution (fixed, uniform, or the paper's truncated normal
// between a minimum and a maximum). Draws depend only on (seed, client id)
// and use this library's own sampling, so they are identical everywhere and
// do not change when other clients join or leave.
//
// Thread-safe: free functions without state.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/layers/profile.h"
#include "server/selection/cost_model.h"

namespace layerfl {

enum class CostUnit { kLayers, kParams, kTime, kMemory };

// "layers", "params", "time" or "memory"; anything else is InvalidArgument
// listing the valid names.
absl::StatusOr<CostUnit> ParseCostUnit(absl::string_view name);
const char* CostUnitName(CostUnit unit);

// time and memory: costs come from each client's profile, not the layer
// table.
bool IsProfiledUnit(CostUnit unit);

struct LayerFootprint {
  std::string name;
  int64_t num_params = 0;  // >= 1
};

// The layer table's additive cost per layer: 1 (layers), the parameter count
// (params), or 1 for the profiled units, whose clients carry their own cost
// models. InvalidArgument naming the layer when a count is out of range.
absl::StatusOr<std::vector<int64_t>> LayerCosts(
    absl::Span<const LayerFootprint> layers, CostUnit unit);

// What one client does in a round, for its time cost.
struct RoundWork {
  int steps = 1;        // local steps, >= 1
  bool scores = false;  // the round starts with a scoring pass
  // Device speed relative to the profiled machine (2 = twice as fast), > 0.
  double speed = 1.0;
  // The scoring pass runs from this group upward (priced by ScoringSeconds:
  // 0 = the whole pass).
  int score_from = 0;
};

// A client's cost model from its profile: time in seconds per round
// (steps x the per-step parts, plus the scoring pass from work.score_from
// when the round scores, divided by speed), memory in bytes (the peak parts as measured; a MiB
// budget is converted by BudgetInCostUnits). InvalidArgument for other units
// or a bad profile.
absl::StatusOr<CostModel> CostModelFromProfile(const TrainingProfile& profile,
                                               CostUnit unit,
                                               const RoundWork& work);

inline constexpr double kBytesPerMiB = 1024.0 * 1024.0;

// A budget as configured (memory in MiB) in the unit its cost model uses
// (memory in bytes); other units unchanged.
double BudgetInCostUnits(CostUnit unit, double budget);

// The run config's budget distribution, in cost units. Defaults match the
// config's `budget` section.
struct BudgetDistribution {
  enum class Kind {
    kFixed,            // every client gets round(value)
    kUniform,          // an integer uniform in [ceil(min), floor(max)]
    kTruncatedNormal,  // N(mean, std) conditioned on [min, max], rounded
    kDeclared,         // each client's declared budget
  };
  Kind kind = Kind::kTruncatedNormal;
  double value = 2.0;  // kFixed, > 0
  double min = 1.0;    // kUniform / kTruncatedNormal, > 0
  double max = 4.0;    // kUniform / kTruncatedNormal, >= min
  double mean = 2.5;   // kTruncatedNormal, finite
  double std = 1.0;    // kTruncatedNormal, > 0
  // Draws are real numbers (time, memory); otherwise rounded to integers
  // (layers, params). Default false.
  bool continuous = false;

  // InvalidArgument naming the field, e.g. "budget.std: must be > 0, got 0".
  absl::Status Validate() const;
};

// "fixed", "uniform", "truncated_normal" or "declared".
absl::StatusOr<BudgetDistribution::Kind> ParseBudgetDistribution(
    absl::string_view name);

// Client `client_id`'s budget. kDeclared: the declared value (missing or
// negative -> InvalidArgument naming the client). Otherwise a draw that
// depends only on (seed, client_id), capped by the declared value when there
// is one (a device never trains more than it said it can hold).
absl::StatusOr<double> ResolveClientBudget(const BudgetDistribution& dist,
                                           uint64_t seed,
                                           absl::string_view client_id,
                                           std::optional<double> declared);

// A draw of N(mean, std) conditioned on [min, max] from a uniform u in
// [0, 1), by inverting the CDF (stable far in either tail).
double TruncatedNormalFromUniform(double mean, double std, double min,
                                  double max, double u);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_BUDGET_H_
