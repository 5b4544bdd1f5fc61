#include "server/selection/depth_knapsack.h"

#include <algorithm>
#include <cmath>

namespace layerfl {

Knapsack::Result DepthKnapsack::Solve(absl::Span<const double> values,
                                      absl::Span<const int64_t> weights,
                                      absl::Span<const int64_t> depths,
                                      int64_t base, int64_t capacity,
                                      int64_t node_limit) {
  const int n = static_cast<int>(values.size());
  const auto depth = [&](int j) { return depths.empty() ? 0 : depths[j]; };
  Knapsack::Result best;
  if (capacity < base) return best;

  // Case 0: nothing deeper than base.
  items_.clear();
  v_.clear();
  w_.clear();
  bool any_deeper = false;
  for (int j = 0; j < n; ++j) {
    if (depth(j) <= base) {
      items_.push_back(j);
      v_.push_back(values[j]);
      w_.push_back(weights[j]);
    } else if (values[j] > 0) {
      any_deeper = true;
    }
  }
  {
    Knapsack::Result r = knapsack_.Solve(v_, w_, capacity - base, node_limit);
    for (int& k : r.taken) k = items_[k];
    if (!r.taken.empty() || base > 0) r.weight += base;
    best = std::move(r);
  }
  if (!any_deeper) return best;

  // Candidates for the deepest item, most promising first by their
  // fractional (Dantzig) bound: the forced item plus the densest allowed
  // items filling what is left, the last one fractionally.
  density_.clear();
  for (int j = 0; j < n; ++j) {
    if (values[j] > 0) density_.push_back(j);
  }
  std::stable_sort(density_.begin(), density_.end(), [&](int a, int b) {
    return values[a] * static_cast<double>(weights[b]) >
           values[b] * static_cast<double>(weights[a]);
  });
  candidates_.clear();
  cheap_.assign(n, 0.0);
  for (int m = 0; m < n; ++m) {
    if (depth(m) <= base || values[m] <= 0 ||
        weights[m] + depth(m) > capacity) {
      continue;
    }
    int64_t room = capacity - depth(m) - weights[m];
    double sum = values[m];
    for (int j : density_) {
      if (j == m || depth(j) > depth(m)) continue;
      if (weights[j] <= room) {
        room -= weights[j];
        sum += values[j];
      } else {
        sum += values[j] * static_cast<double>(room) /
               static_cast<double>(weights[j]);
        break;
      }
    }
    cheap_[m] = sum;
    candidates_.push_back(m);
  }
  std::stable_sort(candidates_.begin(), candidates_.end(),
                   [&](int a, int b) { return cheap_[a] > cheap_[b]; });
  double bound = best.upper_bound;
  for (int m : candidates_) {
    if (cheap_[m] <= best.value + 1e-12 * std::abs(cheap_[m])) {
      bound = std::max(bound, cheap_[m]);
      continue;
    }
    items_.clear();
    v_.clear();
    w_.clear();
    for (int j = 0; j < n; ++j) {
      if (j != m && depth(j) <= depth(m)) {
        items_.push_back(j);
        v_.push_back(values[j]);
        w_.push_back(weights[j]);
      }
    }
    Knapsack::Result r =
        knapsack_.Solve(v_, w_, capacity - depth(m) - weights[m], node_limit);
    bound = std::max(bound, values[m] + r.upper_bound);
    if (values[m] + r.value > best.value) {
      for (int& k : r.taken) k = items_[k];
      r.taken.push_back(m);
      std::sort(r.taken.begin(), r.taken.end());
      r.value += values[m];
      r.weight += weights[m] + depth(m);
      r.upper_bound = 0;  // set below
      const bool proven = best.proven_optimal && r.proven_optimal;
      best = std::move(r);
      best.proven_optimal = proven;
    } else {
      best.proven_optimal = best.proven_optimal && r.proven_optimal;
    }
  }
  best.upper_bound = best.proven_optimal ? best.value : bound;
  return best;
}

}  // namespace layerfl
