#ifndef LAYERFL_COMMON_MODEL_HF_CONFIG_H_
#define LAYERFL_COMMON_MODEL_HF_CONFIG_H_

// A Hugging Face checkpoint's config.json, as far as LayerFL's
// implementations of its architectures need it. Torch-free.
//
// Supported `model_type`s (the encoders of the paper's text models):
//   "bert"        BertModel / BertForSequenceClassification
//   "roberta"     RobertaModel / RobertaForSequenceClassification
//   "xlm-roberta" the same architecture as RoBERTa

#include <string>

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

// Parses config.json's text; an unsupported model_type, a missing or
// ill-typed field, or inconsistent sizes (hidden_size not divisible by the
// heads) is InvalidArgument "SOURCE: <field>: ...".
absl::StatusOr<HfEncoderConfig> ParseHfEncoderConfig(const std::string& json,
                                                     const std::string& source);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_HF_CONFIG_H_
