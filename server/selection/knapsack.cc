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
  if (order_.empty()) return result;  // value and bound 0
  bool uniform = true;
  for (int j : order_) uniform = uniform && weights[j] == weights[order_[0]];
  if (uniform) {
    const int64_t fit = capacity / weights[order_[0]];
    // Insertion sort by value, descending; equal values keep index order.
    for (size_t a = 1; a < order_.size(); ++a) {
      const int j = order_[a];
      size_t b = a;
      for (; b > 0 && values[order_[b - 1]] < values[j]; --b) {
        order_[b] = order_[b - 1];
      }
      order_[b] = j;
    }
    if (static_cast<int64_t>(order_.size()) > fit) order_.resize(fit);
    for (int j : order_) {
      result.value += values[j];
      result.weight += weights[j];
    }
    std::sort(order_.begin(), order_.end());
    result.taken = order_;
    result.upper_bound = result.value;
    return result;
  }
  // A few distinct weights (layer groups of a model often share a size):
  // by dominance each weight class contributes its most valuable items, so
  // enumerating how many each class contributes is exact.
  if (SolveByClasses(values, weights, capacity, &result)) return result;

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
  closed_.clear();
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
  result.upper_bound = result.proven_optimal
                           ? result.value
                           : std::max(result.value, Bound(0, capacity));
  return result;
}

bool Knapsack::SolveByClasses(absl::Span<const double> values,
                              absl::Span<const int64_t> weights,
                              int64_t capacity, Result* result) {
  classes_.clear();
  for (int j : order_) {
    auto it =
        std::find_if(classes_.begin(), classes_.end(),
                     [&](const Class& c) { return c.weight == weights[j]; });
    if (it == classes_.end()) {
      if (classes_.size() == kMaxClasses) return false;
      classes_.push_back({weights[j], {}, {0.0}});
      it = classes_.end() - 1;
    }
    it->items.push_back(j);
  }
  double combinations = 1;
  for (size_t d = 0; d + 1 < classes_.size(); ++d) {
    combinations *= static_cast<double>(classes_[d].items.size() + 1);
  }
  if (combinations > kMaxCombinations) return false;
  for (Class& c : classes_) {
    std::stable_sort(c.items.begin(), c.items.end(),
                     [&](int a, int b) { return values[a] > values[b]; });
    for (int j : c.items) c.prefix.push_back(c.prefix.back() + values[j]);
  }
  counts_.assign(classes_.size(), 0);
  best_counts_.assign(classes_.size(), 0);
  double best = -1;
  EnumerateClasses(0, capacity, 0.0, &best);
  for (size_t d = 0; d < classes_.size(); ++d) {
    for (int k = 0; k < best_counts_[d]; ++k) {
      result->taken.push_back(classes_[d].items[k]);
      result->weight += classes_[d].weight;
    }
  }
  result->value = best;
  result->upper_bound = best;
  std::sort(result->taken.begin(), result->taken.end());
  return true;
}

// Class d onward with `room` left; the last class takes as many as fit.
void Knapsack::EnumerateClasses(size_t d, int64_t room, double value,
                                double* best) {
  const Class& c = classes_[d];
  const int most = static_cast<int>(
      std::min<int64_t>(static_cast<int64_t>(c.items.size()), room / c.weight));
  if (d + 1 == classes_.size()) {
    if (value + c.prefix[most] > *best) {
      *best = value + c.prefix[most];
      counts_[d] = most;
      best_counts_ = counts_;
    }
    return;
  }
  for (int k = most; k >= 0; --k) {
    counts_[d] = k;
    EnumerateClasses(d + 1, room - k * c.weight, value + c.prefix[k], best);
  }
}

bool Knapsack::Closed(int64_t weight) const {
  for (int64_t w : closed_) {
    if (w == weight) return true;
  }
  return false;
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
  // Items of one weight come in decreasing value (density order), so once
  // one is skipped the later ones of that weight are dominated.
  if (Closed(w_[k])) {
    Search(k + 1, room, value);
    return;
  }
  if (w_[k] <= room) {
    cur_[k] = 1;
    Search(k + 1, room - w_[k], value + v_[k]);
    cur_[k] = 0;
  }
  closed_.push_back(w_[k]);
  Search(k + 1, room, value);
  closed_.pop_back();
}

}  // namespace layerfl
