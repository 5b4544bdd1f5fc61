#include "server/selection/budget.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"
#include "server/selection/rng.h"

namespace layerfl {

absl::StatusOr<CostUnit> ParseCostUnit(absl::string_view name) {
  if (name == "layers") return CostUnit::kLayers;
  if (name == "params") return CostUnit::kParams;
  if (name == "time") return CostUnit::kTime;
  if (name == "memory") return CostUnit::kMemory;
  return absl::InvalidArgumentError(
      absl::StrCat("budget.unit: unknown cost unit '", name,
                   "'; valid: layers, params, time, memory"));
}

const char* CostUnitName(CostUnit unit) {
  switch (unit) {
    case CostUnit::kLayers:
      return "layers";
    case CostUnit::kParams:
      return "params";
    case CostUnit::kTime:
      return "time";
    case CostUnit::kMemory:
      return "memory";
  }
  return "unknown";
}

bool IsProfiledUnit(CostUnit unit) {
  return unit == CostUnit::kTime || unit == CostUnit::kMemory;
}

absl::StatusOr<std::vector<int64_t>> LayerCosts(
    absl::Span<const LayerFootprint> layers, CostUnit unit) {
  std::vector<int64_t> costs;
  costs.reserve(layers.size());
  for (const LayerFootprint& layer : layers) {
    if (unit != CostUnit::kParams) {
      costs.push_back(1);
      continue;
    }
    if (layer.num_params < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer '", layer.name,
                       "': num_params must be >= 1, got ", layer.num_params));
    }
    costs.push_back(layer.num_params);
  }
  return costs;
}

absl::StatusOr<CostModel> CostModelFromProfile(const TrainingProfile& profile,
                                               CostUnit unit,
                                               const RoundWork& work) {
  RETURN_IF_ERROR(profile.Validate());
  if (!IsProfiledUnit(unit)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "budget.unit '", CostUnitName(unit), "' is not measured by a profile"));
  }
  if (work.steps < 1 || !(work.speed > 0) || !std::isfinite(work.speed)) {
    return absl::InvalidArgumentError(
        absl::StrCat("round work: steps must be >= 1 and speed finite and > 0, "
                     "got ",
                     work.steps, " and ", work.speed));
  }
  CostModel m;
  if (unit == CostUnit::kTime) {
    const double per_step = work.steps / work.speed;
    m.fixed = per_step * profile.step_fixed_s +
              (work.scores ? ScoringSeconds(profile, work.score_from) /
                                 work.speed
                           : 0.0);
    for (double w : profile.step_per_group_s)
      m.per_layer.push_back(per_step * w);
    for (double a : profile.step_depth_s) m.depth.push_back(per_step * a);
    return m;
  }
  m.fixed = static_cast<double>(profile.fixed_bytes);
  for (int64_t b : profile.per_group_bytes) {
    m.per_layer.push_back(static_cast<double>(b));
  }
  for (int64_t b : profile.depth_bytes)
    m.depth.push_back(static_cast<double>(b));
  return m;
}

double BudgetInCostUnits(CostUnit unit, double budget) {
  return unit == CostUnit::kMemory ? budget * kBytesPerMiB : budget;
}

absl::Status BudgetDistribution::Validate() const {
  const auto bad = [](absl::string_view field, absl::string_view rule,
                      double got) {
    return absl::InvalidArgumentError(
        absl::StrCat("budget.", field, ": ", rule, ", got ", got));
  };
  switch (kind) {
    case Kind::kDeclared:
      return absl::OkStatus();
    case Kind::kFixed:
      if (!std::isfinite(value) || value <= 0) {
        return bad("value", "must be finite and > 0", value);
      }
      if (value >= 9e18) return bad("value", "must be < 9e18", value);
      return absl::OkStatus();
    case Kind::kUniform:
    case Kind::kTruncatedNormal:
      break;
  }
  if (!std::isfinite(min) || min <= 0)
    return bad("min", "must be finite and > 0", min);
  if (!std::isfinite(max) || max < min)
    return bad("max", "must be finite and >= min", max);
  if (max >= 9e18) return bad("max", "must be < 9e18", max);
  if (!continuous && std::ceil(min) > std::floor(max)) {
    return bad("max", "[min, max] must contain an integer", max);
  }
  if (kind == Kind::kTruncatedNormal) {
    if (!std::isfinite(mean)) return bad("mean", "must be finite", mean);
    if (!std::isfinite(std) || std <= 0)
      return bad("std", "must be finite and > 0", std);
  }
  return absl::OkStatus();
}

absl::StatusOr<BudgetDistribution::Kind> ParseBudgetDistribution(
    absl::string_view name) {
  using Kind = BudgetDistribution::Kind;
  if (name == "fixed") return Kind::kFixed;
  if (name == "uniform") return Kind::kUniform;
  if (name == "truncated_normal") return Kind::kTruncatedNormal;
  if (name == "declared") return Kind::kDeclared;
  return absl::InvalidArgumentError(
      absl::StrCat("budget.distribution: unknown distribution '", name,
                   "'; valid: fixed, uniform, truncated_normal, declared"));
}

double TruncatedNormalFromUniform(double mean, double std, double min,
                                  double max, double u) {
  double a = (min - mean) / std;
  double b = (max - mean) / std;
  // Work in the lower tail, where the CDF keeps its relative precision.
  const bool mirror = a > 0;
  if (mirror) {
    const double t = -a;
    a = -b;
    b = t;
  }
  const double pa = NormalCdf(a), pb = NormalCdf(b);
  double z;
  if (!(pb > pa)) {
    z = std::abs(a) < std::abs(b) ? a : b;  // numerically a point
  } else {
    const double p = pa + u * (pb - pa);
    z = p <= 0 ? a : p >= 1 ? b : NormalQuantile(p);
    z = std::min(std::max(z, a), b);
  }
  if (mirror) z = -z;
  return std::min(std::max(mean + std * z, min), max);
}

absl::StatusOr<double> ResolveClientBudget(const BudgetDistribution& dist,
                                           uint64_t seed,
                                           absl::string_view client_id,
                                           std::optional<double> declared) {
  if (absl::Status s = dist.Validate(); !s.ok()) return s;
  if (declared.has_value() && *declared < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("client '", client_id,
                     "': declared budget must be >= 0, got ", *declared));
  }
  using Kind = BudgetDistribution::Kind;
  if (dist.kind == Kind::kDeclared) {
    if (!declared.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "client '", client_id,
          "': budget.distribution is 'declared' but the client declared none"));
    }
    return *declared;
  }
  double budget = 0;
  if (dist.kind == Kind::kFixed) {
    budget = dist.continuous ? dist.value : std::llround(dist.value);
  } else {
    DeterministicRng rng(MixSeed(seed) ^
                         StableHash({client_id.data(), client_id.size()}));
    const int64_t lo = static_cast<int64_t>(std::ceil(dist.min));
    const int64_t hi = static_cast<int64_t>(std::floor(dist.max));
    if (dist.kind == Kind::kUniform) {
      budget = dist.continuous
                   ? dist.min + (dist.max - dist.min) * rng.UniformDouble()
                   : static_cast<double>(rng.UniformInt(lo, hi));
    } else {
      const double x = TruncatedNormalFromUniform(
          dist.mean, dist.std, dist.min, dist.max, rng.UniformDouble());
      budget = dist.continuous
                   ? x
                   : static_cast<double>(
                         std::min(std::max<int64_t>(std::llround(x), lo), hi));
    }
  }
  if (declared.has_value()) budget = std::min(budget, *declared);
  return budget;
}

}  // namespace layerfl
