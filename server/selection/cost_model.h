#ifndef LAYERFL_SERVER_SELECTION_COST_MODEL_H_
#define LAYERFL_SERVER_SELECTION_COST_MODEL_H_

// What training a set S of layer groups costs one client (DESIGN.md §7),
// groups indexed from the input side (0) to the output side:
//
//   cost(S) = F + sum_{l in S} w_l + sum_{l >= min(S)} a_l,   cost({}) = 0.
//
//  * F, the fixed part: the forward pass through every group (and, in time,
//    the scoring pass when the round scores);
//  * w_l, the per-group part: weight gradients, optimizer state and the
//    weight-gradient compute of a group that trains;
//  * a_l, the depth part: paid for every group from the output down to the
//    lowest group of S, trained or not (frozen groups included), because the
//    backward pass must run through them and keep their activations.
//
// The paper's additive units (layers, params) are the special case F = 0,
// a = 0. Values are in the run's cost unit (budget.h): layers, parameters,
// seconds of client compute per round (time) or bytes of peak training
// memory (memory).
//
// Thread-compatible value type.

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace layerfl {

struct CostModel {
  double fixed = 0.0;             // F, finite and >= 0
  std::vector<double> per_layer;  // w_l, one per group, finite and >= 0
  std::vector<double> depth;      // a_l, one per group, finite and >= 0

  // InvalidArgument naming `what` and the field ("<what>.per_layer[2]: must
  // be finite and >= 0, got -1") when a value is bad or a vector does not
  // have `num_groups` entries.
  absl::Status Validate(size_t num_groups, absl::string_view what) const;

  // cost(S) for group indices in any order (duplicates count once); every
  // index must be in [0, num_groups).
  double Cost(absl::Span<const int> selected) const;

  // sum_{l >= from} a_l: the depth part of a set whose lowest group is
  // `from` (0 for from >= num_groups).
  double DepthFrom(int from) const;
};

// The additive model of the paper's units: F = 0, w = per_layer, a = 0.
CostModel AdditiveCostModel(absl::Span<const double> per_layer);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_COST_MODEL_H_
