#include "common/model/hf_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
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

// A non-negative integer field; `required` or kept at `*out` when absent.
// `path` prefixes the field's name in errors ("vision_config.").
absl::Status ReadInt(const Json& j, const std::string& source,
                     const char* field, bool required, int* out,
                     const std::string& path = "") {
  auto it = j.find(field);
  if (it == j.end()) {
    return required ? Bad(source, path + field, "missing") : absl::OkStatus();
  }
  if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
      it->get<int64_t>() > (int64_t{1} << 30)) {
    return Bad(source, path + field,
               absl::StrCat("must be an integer in [0, 2^30], got ",
                            it->dump()));
  }
  *out = static_cast<int>(it->get<int64_t>());
  return absl::OkStatus();
}

absl::Status ReadDouble(const Json& j, const std::string& source,
                        const char* field, double* out,
                        const std::string& path = "") {
  auto it = j.find(field);
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_number() || !(it->get<double>() >= 0)) {
    return Bad(source, path + field,
               absl::StrCat("must be a number >= 0, got ", it->dump()));
  }
  *out = it->get<double>();
  return absl::OkStatus();
}

// id2label's size, then num_labels, at the top level of `j`.
absl::Status ReadNumLabels(const Json& j, const std::string& source,
                           int* out) {
  if (auto labels = j.find("id2label"); labels != j.end()) {
    if (!labels->is_object()) return Bad(source, "id2label", "not an object");
    *out = static_cast<int>(labels->size());
  }
  return ReadInt(j, source, "num_labels", false, out);
}

absl::StatusOr<Json> ParseObject(const std::string& json,
                                 const std::string& source) {
  Json j = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a JSON object"));
  }
  return j;
}

absl::StatusOr<HfEncoderConfig> EncoderFromJson(const Json& j,
                                                const std::string& source,
                                                const std::string& type) {
  HfEncoderConfig c;
  c.model_type = type;
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
  s = ReadNumLabels(j, source, &c.num_labels);
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

// The vision transformer's settings from `j` (the top level, or CLIPConfig's
// "vision_config" with `path` "vision_config.").
absl::StatusOr<HfVisionConfig> VisionFromJson(const Json& j,
                                              const std::string& source,
                                              const std::string& type,
                                              const std::string& path) {
  HfVisionConfig c;
  c.model_type = type;
  if (c.clip()) {
    c.hidden_act = "quick_gelu";
    c.layer_norm_eps = 1e-5;
    c.patch_size = 32;
  }
  for (const auto& [field, out] :
       {std::pair<const char*, int*>{"hidden_size", &c.hidden_size},
        {"num_hidden_layers", &c.num_hidden_layers},
        {"num_attention_heads", &c.num_attention_heads},
        {"intermediate_size", &c.intermediate_size},
        {"patch_size", &c.patch_size},
        {"num_channels", &c.num_channels}}) {
    absl::Status s = ReadInt(j, source, field, false, out, path);
    if (!s.ok()) return s;
    if (*out == 0) return Bad(source, path + field, "must be >= 1, got 0");
  }
  // image_size: an integer, or upstream's [height, width] when square.
  if (auto size = j.find("image_size"); size != j.end()) {
    if (size->is_array() && size->size() == 2 && (*size)[0] == (*size)[1]) {
      Json side = {{"image_size", (*size)[0]}};
      absl::Status s =
          ReadInt(side, source, "image_size", true, &c.image_size, path);
      if (!s.ok()) return s;
    } else if (size->is_array()) {
      return Bad(source, path + "image_size",
                 absl::StrCat("only square images are supported, got ",
                              size->dump()));
    } else {
      absl::Status s =
          ReadInt(j, source, "image_size", true, &c.image_size, path);
      if (!s.ok()) return s;
    }
  }
  absl::Status s =
      ReadDouble(j, source, "layer_norm_eps", &c.layer_norm_eps, path);
  if (s.ok() && !c.clip()) {
    s = ReadDouble(j, source, "hidden_dropout_prob", &c.hidden_dropout_prob,
                   path);
  }
  if (s.ok()) {
    s = ReadDouble(j, source,
                   c.clip() ? "attention_dropout"
                            : "attention_probs_dropout_prob",
                   &c.attention_dropout, path);
  }
  if (!s.ok()) return s;
  if (auto act = j.find("hidden_act"); act != j.end()) {
    if (!act->is_string() || (act->get<std::string>() != "gelu" &&
                              act->get<std::string>() != "quick_gelu")) {
      return Bad(source, path + "hidden_act",
                 absl::StrCat("only \"gelu\" and \"quick_gelu\" are "
                              "supported, got ",
                              act->dump()));
    }
    c.hidden_act = act->get<std::string>();
  }
  if (!c.clip()) {
    if (auto bias = j.find("qkv_bias"); bias != j.end()) {
      if (!bias->is_boolean()) {
        return Bad(source, path + "qkv_bias",
                   absl::StrCat("must be true or false, got ", bias->dump()));
      }
      c.qkv_bias = bias->get<bool>();
    }
  }
  if (c.image_size == 0) {
    return Bad(source, path + "image_size", "must be >= 1, got 0");
  }
  if (c.hidden_size % c.num_attention_heads != 0) {
    return Bad(source, path + "hidden_size",
               absl::StrCat(c.hidden_size, " is not divisible by ",
                            "num_attention_heads ", c.num_attention_heads));
  }
  if (c.patch_size > c.image_size) {
    return Bad(source, path + "patch_size",
               absl::StrCat(c.patch_size, " is larger than image_size ",
                            c.image_size));
  }
  return c;
}

}  // namespace

std::optional<bool> HfModelConfig::classifier() const {
  if (architectures.empty()) return std::nullopt;
  for (const std::string& a : architectures) {
    if (absl::EndsWith(a, "ForSequenceClassification") ||
        absl::EndsWith(a, "ForImageClassification")) {
      return true;
    }
  }
  return false;
}

std::string HfModelConfig::classifier_architecture() const {
  if (model_type == "bert") return "BertForSequenceClassification";
  if (model_type == "roberta") return "RobertaForSequenceClassification";
  if (model_type == "xlm-roberta") return "XLMRobertaForSequenceClassification";
  if (model_type == "vit") return "ViTForImageClassification";
  return "CLIPForImageClassification";
}

absl::StatusOr<HfModelConfig> ParseHfModelConfig(const std::string& json,
                                                 const std::string& source) {
  absl::StatusOr<Json> parsed = ParseObject(json, source);
  if (!parsed.ok()) return parsed.status();
  const Json& j = *parsed;
  HfModelConfig c;
  auto type = j.find("model_type");
  if (type == j.end() || !type->is_string()) {
    return Bad(source, "model_type", "missing");
  }
  c.model_type = type->get<std::string>();
  if (auto archs = j.find("architectures");
      archs != j.end() && !archs->is_null()) {
    if (!archs->is_array()) {
      return Bad(source, "architectures", "not a list of strings");
    }
    for (const Json& a : *archs) {
      if (!a.is_string()) {
        return Bad(source, "architectures", "not a list of strings");
      }
      c.architectures.push_back(a.get<std::string>());
    }
  }
  if (c.model_type == "bert" || c.model_type == "roberta" ||
      c.model_type == "xlm-roberta") {
    absl::StatusOr<HfEncoderConfig> e =
        EncoderFromJson(j, source, c.model_type);
    if (!e.ok()) return e.status();
    c.modality = HfModality::kText;
    c.encoder = *std::move(e);
    c.num_labels = c.encoder.num_labels;
    return c;
  }
  absl::StatusOr<HfVisionConfig> v;
  if (c.model_type == "vit" || c.model_type == "clip_vision_model") {
    v = VisionFromJson(j, source, c.model_type, "");
  } else if (c.model_type == "clip") {
    auto vision = j.find("vision_config");
    if (vision != j.end() && !vision->is_null() && !vision->is_object()) {
      return Bad(source, "vision_config", "not an object");
    }
    const Json empty = Json::object();
    v = VisionFromJson(vision == j.end() || vision->is_null() ? empty : *vision,
                       source, c.model_type, "vision_config.");
  } else {
    return Bad(source, "model_type",
               absl::StrCat("'", c.model_type,
                            "' is not one of bert, roberta, xlm-roberta, vit, "
                            "clip_vision_model, clip"));
  }
  if (!v.ok()) return v.status();
  c.modality = HfModality::kVision;
  c.vision = *std::move(v);
  absl::Status s = ReadNumLabels(j, source, &c.num_labels);
  if (!s.ok()) return s;
  return c;
}

absl::StatusOr<HfModelConfig> ReadHfModelConfig(const std::string& dir) {
  const std::string path =
      (std::filesystem::path(dir) / "config.json").string();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("file not found: ", path));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::UnavailableError(absl::StrCat("cannot read ", path));
  }
  return ParseHfModelConfig(text.str(), path);
}

absl::StatusOr<HfEncoderConfig> ParseHfEncoderConfig(
    const std::string& json, const std::string& source) {
  absl::StatusOr<Json> j = ParseObject(json, source);
  if (!j.ok()) return j.status();
  auto type = j->find("model_type");
  if (type == j->end() || !type->is_string()) {
    return Bad(source, "model_type", "missing");
  }
  const std::string t = type->get<std::string>();
  if (t != "bert" && t != "roberta" && t != "xlm-roberta") {
    return Bad(source, "model_type",
               absl::StrCat("'", t,
                            "' is not one of bert, roberta, xlm-roberta"));
  }
  return EncoderFromJson(*j, source, t);
}

HfInputSpec InputSpecOf(const HfModelConfig& config) {
  HfInputSpec spec;
  spec.model_type = config.model_type;
  spec.modality = config.modality;
  if (config.modality == HfModality::kVision) {
    spec.image_size = config.vision.image_size;
    spec.num_channels = config.vision.num_channels;
  } else {
    const HfEncoderConfig& e = config.encoder;
    spec.max_positions = e.roberta_style()
                             ? e.max_position_embeddings - e.pad_token_id - 1
                             : e.max_position_embeddings;
    spec.vocab_size = e.vocab_size;
    spec.pad_token_id = e.pad_token_id;
  }
  return spec;
}

absl::StatusOr<HfInputSpec> ReadHfInputSpec(const std::string& dir) {
  absl::StatusOr<HfModelConfig> config = ReadHfModelConfig(dir);
  if (!config.ok()) return config.status();
  return InputSpecOf(*config);
}

}  // namespace layerfl
