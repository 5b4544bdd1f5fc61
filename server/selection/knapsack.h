#ifndef LAYERFL_SERVER_SELECTION_KNAPSACK_H_
#define LAYERFL_SERVER_SELECTION_KNAPSACK_H_

// Exact 0-1 knapsack for the small item counts of layer selection (tens of
// layers): depth-first branch and bound over items sorted by value density,
// with the Dantzig (fractional) bound. Items of value <= 0 or weight above the
// capacity are never taken. Deterministic: equal inputs give equal outputs.
//
// Thread-compatible: a Knapsack holds scratch buffers; use one per thread.

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace layerfl {

class Knapsack {
 public:
  struct Result {
    double value = 0.0;        // sum of the taken items' values
    int64_t weight = 0;        // sum of the taken items' weights
    std::vector<int> taken;    // item indices, ascending
    bool proven_optimal = true;  // false when node_limit cut the search short
  };

  // Maximises sum(values[j]) over a subset whose weights sum to <= capacity.
  // `weights` are >= 1. When all weights are equal the answer is the
  // capacity/weight highest positive values (ties: lower index first). When
  // the search visits more than `node_limit` nodes it returns the best subset
  // found so far (never worse than the greedy-by-density one).
  Result Solve(absl::Span<const double> values, absl::Span<const int64_t> weights,
               int64_t capacity, int64_t node_limit = 1 << 20);

 private:
  double Bound(int k, int64_t room) const;
  void Search(int k, int64_t room, double value);

  int64_t node_limit_ = 0;
  int64_t nodes_ = 0;
  double best_value_ = 0;
  std::vector<int> order_;
  std::vector<double> v_;
  std::vector<int64_t> w_;
  std::vector<char> cur_, best_;
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_KNAPSACK_H_
