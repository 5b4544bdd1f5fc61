#ifndef LAYERFL_COMMON_MODEL_HF_MODEL_H_
#define LAYERFL_COMMON_MODEL_HF_MODEL_H_

// Hugging Face checkpoint directories as LayerFL models, for every supported
// architecture (hf_config.h), dispatching on config.json's model_type: the
// encoders of hf_encoder.h (BERT, RoBERTa, XLM-R) and the vision models of
// hf_vision.h (ViT, CLIP's vision tower). The model always has a
// classification head of model.num_classes outputs, and its parameters carry
// the names of upstream's classifier (BertForSequenceClassification,
// ViTForImageClassification, CLIPForImageClassification, ...).
//
// A checkpoint directory holds config.json and model.safetensors, or
// model.safetensors.index.json and its shards (float32, float16 or
// bfloat16; converted to float32 exactly).
//
// Not thread-safe with respect to LibTorch's global random generator: the
// functions that draw parameters seed it.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/model/hf_config.h"
#include "common/model/model.h"

namespace layerfl {

// What LoadHfModel / CreateHfModel took from the checkpoint.
struct HfLoadReport {
  HfModelConfig config;
  // The model's classification head is the checkpoint's (else one was drawn
  // from the seed and the "head" group marked common).
  bool head_from_checkpoint = false;
  // Tensors of the checkpoint that are not parameters of the model and were
  // left out, in checkpoint order: buffers (position_ids, token_type_ids),
  // pretraining heads (cls.*, lm_head.*), ViTModel's pooler (pooler.*, which
  // ViTForImageClassification does not have), and CLIPModel's text tower and
  // projections (text_model.*, visual_projection.*, text_projection.*,
  // logit_scale).
  std::vector<std::string> ignored;
  // The checkpoint's backbone names carried the classifier's prefix
  // ("bert.", "roberta.", "vit.", "vision_model.") or not (a bare BertModel /
  // RobertaModel / ViTModel).
  bool prefixed = true;
};

// Loads a checkpoint directory into the model its config.json describes.
// Every backbone tensor must be there with the model's shape (an error names
// the tensor and both shapes, or the one missing); a tensor the model does
// not have, other than those HfLoadReport::ignored lists, is an error naming
// it. config.json's "architectures", when it lists any, must agree with the
// tensors on whether there is a classification head (so that CreateHfModel
// builds the same model from config.json alone). A head from the checkpoint
// must have model.num_classes outputs (InvalidArgument naming both);
// without one, the head is drawn from `seed` and the "head" group is marked
// common. Frozen/common groups otherwise come from `config`.
absl::StatusOr<std::unique_ptr<Model>> LoadHfModel(
    const std::string& dir, ModelConfig config, uint64_t seed,
    HfLoadReport* report = nullptr);

// The model LoadHfModel(dir, config, seed) would build, from dir/config.json
// alone (the weights are not read and may be absent, as on a client daemon
// that downloads them): every parameter drawn from `seed`, the new head's
// values equal to LoadHfModel's with the same seed. Whether the checkpoint
// has a head comes from config.json's "architectures"
// (*ForSequenceClassification, *ForImageClassification): without that field,
// InvalidArgument naming it. A stated head size (id2label, num_labels) other
// than model.num_classes is InvalidArgument naming both.
absl::StatusOr<std::unique_ptr<Model>> CreateHfModel(
    const std::string& dir, ModelConfig config, uint64_t seed,
    HfLoadReport* report = nullptr);

// Writes `model` (made by LoadHfModel or CreateHfModel from `source_dir`,
// described by `report`) to `out_dir` as the classifier it is, in upstream's
// layout, so that it loads where it came from: model.safetensors (float32,
// upstream's names, prefixed) and source_dir's config.json with the
// classifier's architecture (report.config.classifier_architecture()), the
// head's size (id2label, label2id; the checkpoint's own label names when the
// size is theirs) and torch_dtype float32. A CLIPVisionModel's config becomes
// a CLIPConfig ("model_type": "clip") with the vision settings under
// "vision_config", as CLIPForImageClassification needs. Files are replaced
// atomically; `out_dir` is created.
absl::Status ExportHfModel(Model& model, const HfLoadReport& report,
                           const std::string& source_dir,
                           const std::string& out_dir);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_HF_MODEL_H_
