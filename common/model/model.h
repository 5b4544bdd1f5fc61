#ifndef LAYERFL_COMMON_MODEL_MODEL_H_
#define LAYERFL_COMMON_MODEL_MODEL_H_

// A trainable model with declared layer groups. Implementations: the built-in
// ViT and text Transformer (LibTorch C++ modules), Hugging Face checkpoints
// of the architectures hf_model.h lists, and TorchScript files exported from
// Python. This header includes only ATen's Tensor, not
// torch/torch.h, so code that merely passes tensors around compiles fast.
//
// Not thread-safe: one Model is used by one thread at a time.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/layers/layer_groups.h"

namespace layerfl {

// Parameters by name, in the model's order. The tensors share storage with
// the model that produced them unless stated otherwise.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

class Model {
 public:
  virtual ~Model() = default;

  // Ordered input -> output, with frozen/common flags from the config.
  virtual const std::vector<LayerGroup>& groups() const = 0;

  // Every parameter, aliasing the model's storage.
  virtual NamedTensors Parameters() = 0;

  // Logits [batch, num_classes]. Images: float [B, C, H, W]; text: int64
  // [B, max_len] token ids (0 = padding). May throw c10::Error: callers at the
  // LibTorch edge (the trainer) catch it.
  virtual at::Tensor Forward(const at::Tensor& input) = 0;

  // Switches dropout/normalisation behaviour (train vs eval).
  virtual void SetTraining(bool training) = 0;
};

struct CreateModelOptions {
  // kind "hf" only: read the checkpoint's weights (true, the default), or
  // build the architecture from its config.json alone with every parameter
  // drawn from the seed (false: for a client daemon, which downloads the
  // weights from the coordinator and may not have the safetensors files).
  // Both give the same groups and, for a head the checkpoint lacks, the same
  // head (see hf_model.h: LoadHfModel, CreateHfModel).
  bool load_hf_weights = true;
};

// Builds the model the config describes: "vit", "text", "torchscript"
// (loaded from model.torchscript_path, grouped by model.groups) or "hf" (the
// Hugging Face checkpoint directory model.hf_dir, grouped by its
// architecture; see hf_model.h). Parameters not loaded are initialised from
// `seed`. Frozen/common groups are marked from the config (and a head an
// "hf" checkpoint lacks is marked common).
absl::StatusOr<std::unique_ptr<Model>> CreateModel(
    const ModelConfig& config, uint64_t seed,
    const CreateModelOptions& options = {});

// Seeds the random draws of forward passes in training mode (the Hugging
// Face models' dropout) on the calling thread: each thread draws from its
// own generator, so a task seeded the same draws the same masks in the
// simulator's threads and in a client daemon.
void SeedForwardRandomness(uint64_t seed);

// Deep copies of the parameters (not aliasing the model).
NamedTensors CloneParameters(Model& model);

// Copies `weights` into the model's parameters by name. Every name must exist
// with the same shape and dtype; the model's parameters missing from
// `weights` are left as they are only if `allow_missing` (otherwise an error
// names the first one). Errors name the parameter and both shapes.
absl::Status AssignParameters(Model& model, const NamedTensors& weights,
                              bool allow_missing);

// Writes named tensors to `path` atomically (temp file, fsync, rename).
absl::Status SaveTensors(const NamedTensors& tensors, const std::string& path);

// Reads what SaveTensors wrote; a missing, truncated or foreign file is an
// error naming the path.
absl::StatusOr<NamedTensors> LoadTensors(const std::string& path);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_MODEL_H_
