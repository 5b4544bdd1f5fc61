#ifndef LAYERFL_COMMON_MODEL_HF_CONFIG_H_
#define LAYERFL_COMMON_MODEL_HF_CONFIG_H_

// A Hugging Face checkpoint's config.json, as far as LayerFL's
// implementations of its architectures need it. Torch-free: the library
// layerfl_hf_config links neither LibTorch nor the model code, so data code
// can ask a checkpoint what input it reads (ReadHfInputSpec).
//
// Supported `model_type`s:
//   "bert"              BertModel / BertForSequenceClassification
//   "roberta"           RobertaModel / RobertaForSequenceClassification
//   "xlm-roberta"       the same architecture as RoBERTa
//   "vit"               ViTModel / ViTForImageClassification
//   "clip_vision_model" CLIPVisionModel (CLIP's vision tower alone)
//   "clip"              CLIPModel / CLIPForImageClassification; the vision
//                       tower's settings are under "vision_config" and only
//                       that tower is built
//
// Fields the vision configs leave out take upstream's defaults (ViTConfig,
// CLIPVisionConfig), as transformers' save_pretrained writes only the values
// that differ from them. The encoders' size fields are required.

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace layerfl {

struct HfEncoderConfig {
  std::string model_type;  // "bert", "roberta" or "xlm-roberta"
  int vocab_size = 0;
  int hidden_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int intermediate_size = 0;
  int max_position_embeddings = 0;
  int type_vocab_size = 0;
  double layer_norm_eps = 1e-12;
  int pad_token_id = 0;
  std::string hidden_act = "gelu";  // only "gelu" (exact, erf) is supported
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  // The classification head's outputs when the checkpoint has one
  // (id2label / num_labels); 0 = not stated.
  int num_labels = 0;

  // RoBERTa and XLM-R number positions from pad_token_id + 1 and classify
  // with a dense + tanh + out_proj head on the first token; BERT numbers
  // from 0 and classifies the pooler's output.
  bool roberta_style() const { return model_type != "bert"; }
};

// ViT's or CLIP's vision transformer. Defaults are ViTConfig's; CLIP's
// differ where noted (CLIPVisionConfig).
struct HfVisionConfig {
  // config.json's top-level model_type: "vit", "clip_vision_model" or "clip".
  std::string model_type;
  int hidden_size = 768;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int intermediate_size = 3072;
  // "gelu" (exact, erf) or "quick_gelu" (x * sigmoid(1.702 x)); CLIP's
  // default is "quick_gelu".
  std::string hidden_act = "gelu";
  double layer_norm_eps = 1e-12;  // CLIP: 1e-5
  int image_size = 224;           // square images, image_size x image_size
  int patch_size = 16;            // CLIP: 32
  int num_channels = 3;
  bool qkv_bias = true;  // ViT only: CLIP's projections always have biases
  double hidden_dropout_prob = 0.0;  // ViT only
  // ViT's attention_probs_dropout_prob, CLIP's attention_dropout.
  double attention_dropout = 0.0;

  // CLIP's vision tower (CLIPVisionModel, CLIPModel,
  // CLIPForImageClassification) rather than ViT.
  bool clip() const { return model_type != "vit"; }
  // Patches per side: image_size / patch_size, rounded down as the patch
  // convolution does.
  int grid() const { return image_size / patch_size; }
  // Tokens per image: the class token and one per patch.
  int num_tokens() const { return grid() * grid() + 1; }
};

enum class HfModality { kText, kVision };

// A supported checkpoint's config.json.
struct HfModelConfig {
  std::string model_type;  // as config.json says, one of the list above
  HfModality modality = HfModality::kText;
  HfEncoderConfig encoder;  // kText only
  HfVisionConfig vision;    // kVision only
  // config.json's "architectures", in order; empty when it has none.
  std::vector<std::string> architectures;
  // The classification head's outputs as config.json states them (id2label
  // or num_labels, at the top level for every model_type); 0 = not stated.
  int num_labels = 0;

  // Whether "architectures" names a model with a classification head
  // (*ForSequenceClassification, *ForImageClassification); nullopt when
  // config.json lists no architecture.
  std::optional<bool> classifier() const;
  // The architecture LayerFL's model is, and exports as: e.g.
  // "ViTForImageClassification", "CLIPForImageClassification",
  // "BertForSequenceClassification".
  std::string classifier_architecture() const;
};

// Parses config.json's text. An unsupported model_type, a missing or
// ill-typed field, or inconsistent sizes (hidden_size not divisible by the
// heads, a patch larger than the image) is InvalidArgument
// "SOURCE: <field>: ..." (fields under "vision_config" named so, e.g.
// "vision_config.patch_size").
absl::StatusOr<HfModelConfig> ParseHfModelConfig(const std::string& json,
                                                 const std::string& source);

// ParseHfModelConfig of DIR/config.json; NotFound when it is missing.
absl::StatusOr<HfModelConfig> ReadHfModelConfig(const std::string& dir);

// An encoder's config only (model_type bert, roberta or xlm-roberta).
absl::StatusOr<HfEncoderConfig> ParseHfEncoderConfig(const std::string& json,
                                                     const std::string& source);

// What a checkpoint's model reads as input, for choosing the data's
// preprocessing.
struct HfInputSpec {
  std::string model_type;
  HfModality modality = HfModality::kText;
  // kVision: float pixel values [B, num_channels, image_size, image_size],
  // normalised as the checkpoint's preprocessor_config.json says.
  int image_size = 0;
  int num_channels = 0;
  // kText: int64 token ids [B, T] with T <= max_positions (RoBERTa and XLM-R
  // number positions after pad_token_id, so that is
  // max_position_embeddings - pad_token_id - 1); pad_token_id marks padding.
  int max_positions = 0;
  int vocab_size = 0;
  int pad_token_id = 0;
};

HfInputSpec InputSpecOf(const HfModelConfig& config);

// InputSpecOf(ReadHfModelConfig(dir)). Reads config.json only.
absl::StatusOr<HfInputSpec> ReadHfInputSpec(const std::string& dir);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_HF_CONFIG_H_
