#ifndef LAYERFL_COMMON_MODEL_HF_VISION_H_
#define LAYERFL_COMMON_MODEL_HF_VISION_H_

// Hugging Face's ViT and CLIP vision tower with an image classification
// head, as LibTorch modules whose parameters carry the upstream names of
// ViTForImageClassification ("vit.embeddings.cls_token",
// "vit.encoder.layer.3.attention.attention.query.weight", "vit.layernorm.bias",
// "classifier.weight") and CLIPForImageClassification
// ("vision_model.embeddings.class_embedding",
// "vision_model.encoder.layers.3.self_attn.q_proj.weight",
// "vision_model.post_layernorm.weight", "classifier.weight"), so that a
// checkpoint maps one to one.
//
// Input: float pixel values [B, num_channels, image_size, image_size],
// already normalised (a size or channel count other than the config's throws
// c10::Error naming both, as upstream refuses them without
// interpolate_pos_encoding). Output: logits [B, num_classes].
//   ViT:  the classifier on the [CLS] token of vit.layernorm's output.
//   CLIP: the classifier on the mean of the patch tokens (the class token
//         left out) of the encoder's last hidden state, as upstream's
//         CLIPForImageClassification: post_layernorm, which upstream applies
//         to the pooled class token only, is a parameter that this forward
//         does not use (it gets no gradient and is written back unchanged).
// Groups, input to output: "embeddings" (CLIP: with pre_layrnorm),
// "layer.0" ... "layer.<n-1>", "head" (the final layer norm and the
// classifier).

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/layers/layer_groups.h"
#include "common/model/hf_config.h"
#include "common/model/model.h"

namespace layerfl {

// The groups of `config`'s model, as parameter-name patterns.
std::vector<GroupPatterns> HfVisionGroups(const HfVisionConfig& config);

// A randomly initialised model (from `seed`) with a head of
// model.num_classes outputs; frozen/common groups from `config`.
absl::StatusOr<std::unique_ptr<Model>> CreateHfVision(
    const HfVisionConfig& hf, const ModelConfig& config, uint64_t seed);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_HF_VISION_H_
