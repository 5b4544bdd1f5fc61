#ifndef LAYERFL_COMMON_MODEL_WEIGHTS_BRIDGE_H_
#define LAYERFL_COMMON_MODEL_WEIGHTS_BRIDGE_H_

// Conversions between a LibTorch Model and the torch-free ModelWeights the
// coordinator, checkpoints and the wire use. Copies; never aliases.

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/model.h"
#include "common/weights/weights.h"

namespace layerfl {

// The model's parameters grouped by its layer groups (versions 0). Every
// parameter must be float32.
absl::StatusOr<ModelWeights> ExportWeights(Model& model);

// Copies `weights` into the model. Group names, tensor names and shapes must
// match the model exactly; nothing is changed on error.
absl::Status ImportWeights(Model& model, const ModelWeights& weights);

// Copies only the listed layers of `weights` into the model (same checks).
absl::Status ImportLayers(Model& model, const ModelWeights& weights,
                          const std::vector<int>& layer_indices);

// float32 LibTorch tensor <-> Tensor32.
Tensor32 ToTensor32(const std::string& name, const at::Tensor& t);
at::Tensor FromTensor32(const Tensor32& t);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_WEIGHTS_BRIDGE_H_
