#ifndef LAYERFL_COMMON_MODEL_WEIGHTS_BRIDGE_H_
#define LAYERFL_COMMON_MODEL_WEIGHTS_BRIDGE_H_

// Conversions between a LibTorch Model and the torch-free ModelWeights the
// coordinator, checkpoints and the wire use. They copy, except BindWeights
// and ExportAndBind, after which the model reads the weights' values.

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/model.h"
#include "common/weights/weights.h"

namespace layerfl {

// The model's parameters grouped by its layer groups (versions 0). Every
// parameter must be float32.
absl::StatusOr<ModelWeights> ExportWeights(Model& model);

// ExportWeights, then BindWeights(model, result), done one parameter at a
// time so that each parameter's own storage is freed as soon as it is
// copied: the peak is the model plus one tensor, not twice the model.
absl::StatusOr<ModelWeights> ExportAndBind(Model& model);

// Copies `weights` into the model (into fresh storage for each parameter,
// so a model bound by BindWeights is unbound, never written through). Group
// names, tensor names and shapes must match the model exactly; nothing is
// changed on error.
absl::Status ImportWeights(Model& model, const ModelWeights& weights);

// Copies only the listed layers of `weights` into the model (same checks).
absl::Status ImportLayers(Model& model, const ModelWeights& weights,
                          const std::vector<int>& layer_indices);

// Points every parameter of the model at the values of `weights` instead of
// copying them (same checks as ImportWeights; nothing is changed on error).
// The model's own storage is released; from then on it reads `weights`'
// buffers, so until it is bound again or destroyed: `weights` must outlive
// every use of the model and its values must not be resized or moved, and
// nothing may write the model's parameters in place (SelectiveTrainer::Train
// gives the groups it trains their own storage first).
absl::Status BindWeights(Model& model, const ModelWeights& weights);

// Drops the model's own parameter values: each parameter becomes a view of
// a single zero broadcast to its shape (no memory; writing into it fails),
// for a model that gets its values from BindWeights or ImportWeights
// before it is next used (a client daemon's, after profiling, before its
// first download).
void ReleaseParameterValues(Model& model);

// float32 LibTorch tensor <-> Tensor32.
Tensor32 ToTensor32(const std::string& name, const at::Tensor& t);
at::Tensor FromTensor32(const Tensor32& t);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_WEIGHTS_BRIDGE_H_
