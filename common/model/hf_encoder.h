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
// classification head).

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

// What LoadHfEncoder took from the checkpoint.
struct HfLoadReport {
  HfEncoderConfig config;
  // The checkpoint had a classification head (else one was added, drawn
  // from the seed, and its group marked common).
  bool head_from_checkpoint = false;
  // Tensors of the checkpoint that are not parameters of the encoder and
  // were left out: buffers (position_ids, token_type_ids) and pretraining
  // heads (cls.*, lm_head.*).
  std::vector<std::string> ignored;
  // For writing the model back in the checkpoint's own layout: its tensor
  // names carried the "bert." / "roberta." prefix (a *ForSequence...
  // checkpoint) or not (a bare BertModel / RobertaModel).
  bool prefixed = true;
};

// A Hugging Face checkpoint directory (config.json, and model.safetensors
// or model.safetensors.index.json with its shards; float32, float16 or
// bfloat16) loaded into the encoder: every backbone tensor must be there
// with the encoder's shape (an error names the tensor and both shapes, or
// the one missing); a tensor the encoder does not have, other than the
// buffers and pretraining heads listed in HfLoadReport::ignored, is an error
// naming it. A checkpoint with a classification head must have
// model.num_classes outputs (InvalidArgument naming both); without one, the
// head is drawn from `seed` and the "head" group is marked common.
absl::StatusOr<std::unique_ptr<Model>> LoadHfEncoder(
    const std::string& dir, ModelConfig config, uint64_t seed,
    HfLoadReport* report = nullptr);

// Writes `model` (an encoder LoadHfEncoder made from `source_dir`) to
// `out_dir` in the layout it came from, so that it loads where it came
// from: model.safetensors (float32) with upstream's names, and
// source_dir's config.json with the classification head's size
// (id2label, num_labels) and *ForSequenceClassification as its
// architecture. A bare checkpoint (no prefix, no head) is written as the
// classifier it has become, prefixed. Files are replaced atomically;
// `out_dir` is created.
absl::Status ExportHfEncoder(Model& model, const HfLoadReport& report,
                             const std::string& source_dir,
                             const std::string& out_dir);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_HF_ENCODER_H_
