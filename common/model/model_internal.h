#ifndef LAYERFL_COMMON_MODEL_MODEL_INTERNAL_H_
#define LAYERFL_COMMON_MODEL_MODEL_INTERNAL_H_

// Factories behind CreateModel(); private to common/model. Both may throw
// c10::Error; CreateModel catches.

#include "common/model/model.h"

namespace layerfl {

absl::StatusOr<std::unique_ptr<Model>> CreateBuiltinModel(
    const ModelConfig& config, uint64_t seed);

absl::StatusOr<std::unique_ptr<Model>> LoadTorchScriptModel(
    const ModelConfig& config);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_MODEL_INTERNAL_H_
