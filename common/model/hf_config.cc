#include "common/model/hf_config.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace layerfl {
namespace {

using Json = nlohmann::json;

absl::Status Bad(const std::string& source, const std::string& field,
                 const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": ", field, ": ", why));
}

// A positive integer field; `required` or kept at `*out` when absent.
absl::Status ReadInt(const Json& j, const std::string& source,
                     const char* field, bool required, int* out) {
  auto it = j.find(field);
  if (it == j.end()) {
    return required ? Bad(source, field, "missing") : absl::OkStatus();
  }
  if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
      it->get<int64_t>() > (int64_t{1} << 30)) {
    return Bad(source, field,
               absl::StrCat("must be an integer in [0, 2^30], got ",
                            it->dump()));
  }
  *out = static_cast<int>(it->get<int64_t>());
  return absl::OkStatus();
}

absl::Status ReadDouble(const Json& j, const std::string& source,
                        const char* field, double* out) {
  auto it = j.find(field);
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_number() || !(it->get<double>() >= 0)) {
    return Bad(source, field,
               absl::StrCat("must be a number >= 0, got ", it->dump()));
  }
  *out = it->get<double>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HfEncoderConfig> ParseHfEncoderConfig(
    const std::string& json, const std::string& source) {
  const Json j = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a JSON object"));
  }
  HfEncoderConfig c;
  auto type = j.find("model_type");
  if (type == j.end() || !type->is_string()) {
    return Bad(source, "model_type", "missing");
  }
  c.model_type = type->get<std::string>();
  if (c.model_type != "bert" && c.model_type != "roberta" &&
      c.model_type != "xlm-roberta") {
    return Bad(source, "model_type",
               absl::StrCat("'", c.model_type,
                            "' is not one of bert, roberta, xlm-roberta"));
  }
  if (!c.roberta_style()) c.layer_norm_eps = 1e-12;
  for (const auto& [field, out] :
       {std::pair<const char*, int*>{"vocab_size", &c.vocab_size},
        {"hidden_size", &c.hidden_size},
        {"num_hidden_layers", &c.num_hidden_layers},
        {"num_attention_heads", &c.num_attention_heads},
        {"intermediate_size", &c.intermediate_size},
        {"max_position_embeddings", &c.max_position_embeddings},
        {"type_vocab_size", &c.type_vocab_size}}) {
    absl::Status s = ReadInt(j, source, field, true, out);
    if (!s.ok()) return s;
    if (*out == 0) return Bad(source, field, "must be >= 1, got 0");
  }
  absl::Status s = ReadInt(j, source, "pad_token_id", false, &c.pad_token_id);
  if (s.ok()) s = ReadDouble(j, source, "layer_norm_eps", &c.layer_norm_eps);
  if (s.ok()) {
    s = ReadDouble(j, source, "hidden_dropout_prob", &c.hidden_dropout_prob);
  }
  if (s.ok()) {
    s = ReadDouble(j, source, "attention_probs_dropout_prob",
                   &c.attention_probs_dropout_prob);
  }
  if (!s.ok()) return s;
  if (auto act = j.find("hidden_act"); act != j.end()) {
    if (!act->is_string() || act->get<std::string>() != "gelu") {
      return Bad(source, "hidden_act",
                 absl::StrCat("only \"gelu\" is supported, got ", act->dump()));
    }
  }
  if (auto labels = j.find("id2label"); labels != j.end()) {
    if (!labels->is_object()) return Bad(source, "id2label", "not an object");
    c.num_labels = static_cast<int>(labels->size());
  }
  s = ReadInt(j, source, "num_labels", false, &c.num_labels);
  if (!s.ok()) return s;
  if (c.hidden_size % c.num_attention_heads != 0) {
    return Bad(source, "hidden_size",
               absl::StrCat(c.hidden_size, " is not divisible by ",
                            "num_attention_heads ", c.num_attention_heads));
  }
  if (c.pad_token_id >= c.vocab_size) {
    return Bad(source, "pad_token_id",
               absl::StrCat(c.pad_token_id, " is not below vocab_size ",
                            c.vocab_size));
  }
  if (c.roberta_style() && c.max_position_embeddings <= c.pad_token_id + 1) {
    return Bad(source, "max_position_embeddings",
               "leaves no position after the padding offset");
  }
  return c;
}

}  // namespace layerfl
