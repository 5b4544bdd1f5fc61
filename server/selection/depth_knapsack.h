#ifndef LAYERFL_SERVER_SELECTION_DEPTH_KNAPSACK_H_
#define LAYERFL_SERVER_SELECTION_DEPTH_KNAPSACK_H_

// A client's best layer set under a depth-aware cost (cost_model.h):
//
//   maximise sum_{j in S} values[j]
//   subject to sum_{j in S} weights[j] + max(base, max_{j in S} depths[j])
//              <= capacity.
//
// The max term is the backward pass down to the lowest group of S (a larger
// depth = a group nearer the input); `base` is what is paid anyway (the depth
// of groups already in the set). Exact: for every candidate deepest item m
// (depths[m] > base) it solves the 0-1 knapsack over the items no deeper
// than m with m forced in, plus the case where nothing goes deeper than
// `base`, and keeps the best; candidates whose fractional bound cannot beat
// the best so far are skipped. Where every depth is <=
// `base` it is one plain knapsack, as before depth was modelled.
//
// Thread-compatible: holds scratch buffers; use one per thread.

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "server/selection/knapsack.h"

namespace layerfl {

class DepthKnapsack {
 public:
  // `weights` >= 1, `depths` >= 0, `base` >= 0. `depths` may be empty (all
  // zero). Result::weight is the set's whole cost (weights plus the max
  // term, or 0 for the empty set); upper_bound as in Knapsack::Result. A
  // capacity below `base` gives the empty set with value and bound 0.
  Knapsack::Result Solve(absl::Span<const double> values,
                         absl::Span<const int64_t> weights,
                         absl::Span<const int64_t> depths, int64_t base,
                         int64_t capacity, int64_t node_limit = 1 << 20);

 private:
  Knapsack knapsack_;
  std::vector<int> items_, candidates_, density_;
  std::vector<double> v_, cheap_;
  std::vector<int64_t> w_;
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_DEPTH_KNAPSACK_H_
