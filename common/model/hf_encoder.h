#ifndef LAYERFL_COMMON_MODEL_HF_ENCODER_H_
#define LAYERFL_COMMON_MODEL_HF_ENCODER_H_

// The encoders of Hugging Face's BERT, RoBERTa and XLM-R with a sequence
// classification head, as LibTorch modules whose parameters carry the
// upstream names of BertForSequenceClassification /
// RobertaForSequenceClassification ("bert.embeddings.word_embeddings.weight",
// "roberta.encoder.layer.3.attention.self.query.bias", "classifier.weight",
// "classifier.out_proj.weight", ...), so that a checkpoint maps one to one.
//
// Input: int64 token ids [B, T]; pad_token_id marks padding, which is not
// attended to (RoBERTa's positions also skip it, as upstream). Output: logits
// [B, num_classes]. Groups, input to output: "embeddings", "layer.0" ...
// "layer.<n-1>", "head" (BERT's pooler and classifier; RoBERTa's
// classification head). Checkpoints load through hf_model.h.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/layers/layer_groups.h"
#include "common/model/hf_config.h"
#include "common/model/model.h"

namespace layerfl {

// The groups of `config`'s encoder, as parameter-name patterns.
std::vector<GroupPatterns> HfEncoderGroups(const HfEncoderConfig& config);

// A randomly initialised encoder (from `seed`) with a head of
// model.num_classes outputs; frozen/common groups from `config`.
absl::StatusOr<std::unique_ptr<Model>> CreateHfEncoder(
    const HfEncoderConfig& hf, const ModelConfig& config, uint64_t seed);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_HF_ENCODER_H_
