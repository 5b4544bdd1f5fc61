#include "server/selection/budget.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/selection/rng.h"

namespace layerfl {
namespace {

// a * b + c with overflow detection; false on overflow.
bool MulAdd(int64_t a, int64_t b, int64_t c, int64_t* out) {
  int64_t product;
  if (__builtin_mul_overflow(a, b, &product)) return false;
  return !__builtin_add_overflow(product, c, out);
}

}  // namespace

absl::StatusOr<CostUnit> ParseCostUnit(absl::string_view name) {
  if (name == "layers") return CostUnit::kLayers;
  if (name == "params") return CostUnit::kParams;
  if (name == "memory") return CostUnit::kMemoryBytes;
  return absl::InvalidArgumentError(
      absl::StrCat("budget.unit: unknown cost unit '", name,
                   "'; valid: layers, params, memory"));
}

const char* CostUnitName(CostUnit unit) {
  switch (unit) {
    case CostUnit::kLayers:
      return "layers";
    case CostUnit::kParams:
      return "params";
    case CostUnit::kMemoryBytes:
      return "memory";
  }
  return "unknown";
}

absl::StatusOr<MemoryModel> MemoryModelForOptimizer(absl::string_view optimizer,
                                                    double momentum) {
  MemoryModel memory;
  if (optimizer == "sgd") {
    memory.optimizer_slots = momentum > 0 ? 1 : 0;
  } else if (optimizer == "adam" || optimizer == "adamw") {
    memory.optimizer_slots = 2;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown optimizer '", optimizer, "'; valid: sgd, adam, adamw"));
  }
  return memory;
}

int64_t LayerTrainingBytes(const LayerFootprint& layer,
                           const MemoryModel& memory) {
  const int64_t per_param = memory.weight_bytes + memory.grad_bytes +
                            memory.optimizer_slots * memory.slot_bytes;
  return layer.num_params * per_param + layer.activation_bytes;
}

absl::StatusOr<std::vector<int64_t>> LayerCosts(
    absl::Span<const LayerFootprint> layers, CostUnit unit,
    const MemoryModel& memory) {
  if (memory.weight_bytes < 0 || memory.grad_bytes < 0 ||
      memory.optimizer_slots < 0 || memory.slot_bytes < 0) {
    return absl::InvalidArgumentError("memory model: byte counts must be >= 0");
  }
  std::vector<int64_t> costs;
  costs.reserve(layers.size());
  for (const LayerFootprint& layer : layers) {
    if (unit == CostUnit::kLayers) {
      costs.push_back(1);
      continue;
    }
    if (layer.num_params < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer '", layer.name,
                       "': num_params must be >= 1, got ", layer.num_params));
    }
    if (layer.activation_bytes < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer '", layer.name, "': activation_bytes must be >= 0, got ",
          layer.activation_bytes));
    }
    if (unit == CostUnit::kParams) {
      costs.push_back(layer.num_params);
      continue;
    }
    int64_t per_param, bytes;
    if (!MulAdd(memory.optimizer_slots, memory.slot_bytes,
                memory.weight_bytes + memory.grad_bytes, &per_param) ||
        !MulAdd(layer.num_params, per_param, layer.activation_bytes, &bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer '", layer.name, "': memory cost overflows"));
    }
    costs.push_back(std::max<int64_t>(bytes, 1));
  }
  return costs;
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
  if (std::ceil(min) > std::floor(max)) {
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

absl::StatusOr<int64_t> ResolveClientBudget(const BudgetDistribution& dist,
                                            uint64_t seed,
                                            absl::string_view client_id,
                                            std::optional<int64_t> declared) {
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
  int64_t budget = 0;
  if (dist.kind == Kind::kFixed) {
    budget = std::llround(dist.value);
  } else {
    DeterministicRng rng(MixSeed(seed) ^
                         StableHash({client_id.data(), client_id.size()}));
    const int64_t lo = static_cast<int64_t>(std::ceil(dist.min));
    const int64_t hi = static_cast<int64_t>(std::floor(dist.max));
    if (dist.kind == Kind::kUniform) {
      budget = rng.UniformInt(lo, hi);
    } else {
      const double x = TruncatedNormalFromUniform(
          dist.mean, dist.std, dist.min, dist.max, rng.UniformDouble());
      budget = std::min(std::max<int64_t>(std::llround(x), lo), hi);
    }
  }
  if (declared.has_value()) budget = std::min(budget, *declared);
  return budget;
}

}  // namespace layerfl
