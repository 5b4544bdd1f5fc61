#include "server/selection/knapsack.h"

#include <algorithm>

namespace layerfl {

Knapsack::Result Knapsack::Solve(absl::Span<const double> values,
                                 absl::Span<const int64_t> weights,
                                 int64_t capacity, int64_t node_limit) {
  Result result;
  order_.clear();
  for (int j = 0; j < static_cast<int>(values.size()); ++j) {
    if (values[j] > 0 && weights[j] <= capacity) order_.push_back(j);
  }
  if (order_.empty()) return result;
  bool uniform = true;
  for (int j : order_) uniform = uniform && weights[j] == weights[order_[0]];
  if (uniform) {
    const int64_t fit = capacity / weights[order_[0]];
    std::stable_sort(order_.begin(), order_.end(),
                     [&](int a, int b) { return values[a] > values[b]; });
    if (static_cast<int64_t>(order_.size()) > fit) order_.resize(fit);
    for (int j : order_) {
      result.value += values[j];
      result.weight += weights[j];
    }
    std::sort(order_.begin(), order_.end());
    result.taken = order_;
    return result;
  }
  // Density order; ties by value then index so the search is deterministic.
  std::sort(order_.begin(), order_.end(), [&](int a, int b) {
    const double da = values[a] * static_cast<double>(weights[b]);
    const double db = values[b] * static_cast<double>(weights[a]);
    if (da != db) return da > db;
    if (values[a] != values[b]) return values[a] > values[b];
    return a < b;
  });
  const int n = static_cast<int>(order_.size());
  v_.resize(n);
  w_.resize(n);
  for (int k = 0; k < n; ++k) {
    v_[k] = values[order_[k]];
    w_[k] = weights[order_[k]];
  }
  cur_.assign(n, 0);
  best_.assign(n, 0);

  // Greedy start: take in density order whatever fits.
  double best_value = 0;
  {
    int64_t room = capacity;
    for (int k = 0; k < n; ++k) {
      if (w_[k] <= room) {
        best_[k] = 1;
        room -= w_[k];
        best_value += v_[k];
      }
    }
  }
  node_limit_ = node_limit;
  nodes_ = 0;
  best_value_ = best_value;
  Search(0, capacity, 0.0);
  result.proven_optimal = nodes_ <= node_limit_;
  for (int t = 0; t < n; ++t) {
    if (best_[t]) {
      result.taken.push_back(order_[t]);
      result.value += v_[t];
      result.weight += w_[t];
    }
  }
  std::sort(result.taken.begin(), result.taken.end());
  return result;
}

double Knapsack::Bound(int k, int64_t room) const {
  double b = 0;
  const int n = static_cast<int>(v_.size());
  for (; k < n; ++k) {
    if (w_[k] <= room) {
      room -= w_[k];
      b += v_[k];
    } else {
      b += v_[k] * static_cast<double>(room) / static_cast<double>(w_[k]);
      break;
    }
  }
  return b;
}

void Knapsack::Search(int k, int64_t room, double value) {
  if (++nodes_ > node_limit_) return;
  if (value > best_value_ * (1 + 1e-12) + 1e-300) {
    best_value_ = value;
    best_ = cur_;
  }
  const int n = static_cast<int>(v_.size());
  if (k == n) return;
  if (value + Bound(k, room) <= best_value_ * (1 + 1e-12)) return;
  if (w_[k] <= room) {
    cur_[k] = 1;
    Search(k + 1, room - w_[k], value + v_[k]);
    cur_[k] = 0;
  }
  Search(k + 1, room, value);
}

}  // namespace layerfl
