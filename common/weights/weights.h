#ifndef LAYERFL_COMMON_WEIGHTS_WEIGHTS_H_
#define LAYERFL_COMMON_WEIGHTS_WEIGHTS_H_

// Torch-free model weights as the coordinator sees them: float32 tensors
// grouped by layer group, each group with a version that is bumped whenever
// aggregation changes it. The coordinator, the checkpoint store and the wire
// codec work on these; only the client converts them to LibTorch tensors.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace layerfl {

struct Tensor32 {
  std::string name;            // full parameter name, e.g. "blocks.0.qkv.weight"
  std::vector<int64_t> shape;  // row-major
  std::vector<float> values;   // product(shape) elements
  int64_t numel() const { return static_cast<int64_t>(values.size()); }
};

// One layer group's parameters, in model order.
struct LayerWeights {
  std::string group;
  int64_t version = 0;  // 0 = as initialised; +1 per aggregation that changed it
  std::vector<Tensor32> tensors;
  int64_t numel() const;
};

// The whole model, groups in order from input to output.
struct ModelWeights {
  std::vector<LayerWeights> layers;
  int64_t numel() const;
  // Index of the group, or -1.
  int Find(const std::string& group) const;
};

// A client's sparse update: `w_local - w_global` for its trained groups only.
struct LayerDelta {
  std::string group;
  std::vector<Tensor32> tensors;  // same names/shapes as the global group
};

// Checks that `delta` has exactly the tensors of `layer` (names, order,
// shapes) and only finite values. The error names the tensor and what is wrong.
absl::Status CheckDeltaMatches(const LayerWeights& layer, const LayerDelta& delta);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_WEIGHTS_WEIGHTS_H_
