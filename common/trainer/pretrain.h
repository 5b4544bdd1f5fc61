#ifndef LAYERFL_COMMON_TRAINER_PRETRAIN_H_
#define LAYERFL_COMMON_TRAINER_PRETRAIN_H_

// LayerFL's own pretrained ViT start (no model hub is reachable): the model is
// trained on images held apart from every federated client, on another task
// (the coarse labels pretrain.label_map gives), and cached in
// pretrain.checkpoint so it is built once.

#include <ostream>

#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/data/idx.h"
#include "common/model/model.h"

namespace layerfl {

// The pretrained parameters, without the task-specific classifier ("head.*"):
// loaded from the cache, or trained on `holdout` and cached (atomically).
// Progress lines go to `log` when it is not null. Blocking (a few minutes on
// 2 cores when the cache is cold).
absl::StatusOr<NamedTensors> EnsurePretrained(const RunConfig& config,
                                              const ImageSet& holdout,
                                              std::ostream* log);

// Loads `pretrained` into `model` (its classifier keeps its fresh init). A
// shape mismatch names the parameter and the checkpoint path.
absl::Status LoadPretrained(Model& model, const NamedTensors& pretrained,
                            const std::string& checkpoint_path);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_TRAINER_PRETRAIN_H_
