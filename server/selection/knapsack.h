#ifndef LAYERFL_SERVER_SELECTION_KNAPSACK_H_
#define LAYERFL_SERVER_SELECTION_KNAPSACK_H_

// Exact 0-1 knapsack for the small item counts of layer selection (tens of
// layers). Layer groups of a model often share a size, and among items of one
// weight an optimum takes the most valuable ones; so with up to four distinct
// weights the answer is found by enumerating how many items each weight
// class contributes. Otherwise: depth-first branch and bound over items
// sorted by value density, with the Dantzig (fractional) bound and the same
// equal-weight dominance (having skipped an item, never take a later one of
// the same weight). Items of value <= 0 or weight above the capacity are
// never taken. Deterministic: equal inputs give equal outputs.
//
// Thread-compatible: a Knapsack holds scratch buffers; use one per thread.

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace layerfl {

class Knapsack {
 public:
  struct Result {
    double value = 0.0;          // sum of the taken items' values
    int64_t weight = 0;          // sum of the taken items' weights
    std::vector<int> taken;      // item indices, ascending
    bool proven_optimal = true;  // false when node_limit cut the search short
    // No subset within the capacity is worth more: `value` when proven
    // optimal, else the fractional (Dantzig) bound of the whole instance.
    double upper_bound = 0.0;
  };

  // Maximises sum(values[j]) over a subset whose weights sum to <= capacity.
  // `weights` are >= 1. When all weights are equal the answer is the
  // capacity/weight highest positive values (ties: lower index first). When
  // the search visits more than `node_limit` nodes it returns the best subset
  // found so far (never worse than the greedy-by-density one).
  Result Solve(absl::Span<const double> values,
               absl::Span<const int64_t> weights, int64_t capacity,
               int64_t node_limit = 1 << 20);

 private:
  double Bound(int k, int64_t room) const;
  void Search(int k, int64_t room, double value);
  bool Closed(int64_t weight) const;
  bool SolveByClasses(absl::Span<const double> values,
                      absl::Span<const int64_t> weights, int64_t capacity,
                      Result* result);
  void EnumerateClasses(size_t d, int64_t room, double value, double* best);

  // Items sharing one weight, by decreasing value, with prefix sums.
  struct Class {
    int64_t weight;
    std::vector<int> items;
    std::vector<double> prefix;
  };
  static constexpr size_t kMaxClasses = 4;
  static constexpr double kMaxCombinations = 4096;
  std::vector<Class> classes_;
  std::vector<int> counts_, best_counts_;

  int64_t node_limit_ = 0;
  int64_t nodes_ = 0;
  double best_value_ = 0;
  std::vector<int> order_;
  std::vector<double> v_;
  std::vector<int64_t> w_;
  std::vector<char> cur_, best_;
  std::vector<int64_t> closed_;  // weights skipped on the current path
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_KNAPSACK_H_
