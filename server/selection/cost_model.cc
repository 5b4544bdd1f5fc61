#include "server/selection/cost_model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace layerfl {
namespace {

absl::Status CheckValue(double v, absl::string_view field) {
  if (std::isfinite(v) && v >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": must be finite and >= 0, got ", v));
}

absl::Status CheckVector(const std::vector<double>& v, size_t num_groups,
                         absl::string_view what, absl::string_view name) {
  if (v.size() != num_groups) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ".", name, ": ", v.size(), " values for ",
                     num_groups, " layer groups"));
  }
  for (size_t l = 0; l < v.size(); ++l) {
    absl::Status s =
        CheckValue(v[l], absl::StrCat(what, ".", name, "[", l, "]"));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CostModel::Validate(size_t num_groups,
                                 absl::string_view what) const {
  if (absl::Status s = CheckValue(fixed, absl::StrCat(what, ".fixed")); !s.ok())
    return s;
  if (absl::Status s = CheckVector(per_layer, num_groups, what, "per_layer");
      !s.ok())
    return s;
  return CheckVector(depth, num_groups, what, "depth");
}

double CostModel::Cost(absl::Span<const int> selected) const {
  if (selected.empty()) return 0.0;
  int lowest = std::numeric_limits<int>::max();
  std::vector<bool> seen(per_layer.size(), false);
  double cost = fixed;
  for (int l : selected) {
    lowest = std::min(lowest, l);
    if (!seen[l]) cost += per_layer[l];
    seen[l] = true;
  }
  return cost + DepthFrom(lowest);
}

double CostModel::DepthFrom(int from) const {
  double sum = 0;
  for (int l = static_cast<int>(depth.size()) - 1; l >= std::max(from, 0); --l)
    sum += depth[l];
  return sum;
}

CostModel AdditiveCostModel(absl::Span<const double> per_layer) {
  CostModel m;
  m.per_layer.assign(per_layer.begin(), per_layer.end());
  m.depth.assign(per_layer.size(), 0.0);
  return m;
}

}  // namespace layerfl
