// LoadHfModel, CreateHfModel and ExportHfModel: Hugging Face checkpoint
// directories into and out of the LibTorch models of hf_encoder.cc and
// hf_vision.cc.
#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/data/file.h"
#include "common/model/hf_encoder.h"
#include "common/model/hf_model.h"
#include "common/model/hf_vision.h"
#include "common/safetensors/safetensors.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace layerfl {
namespace {

// How an architecture's checkpoints name their tensors.
struct Layout {
  // The backbone's prefix in the classifier's names.
  std::string prefix;
  // A bare checkpoint (BertModel, ViTModel) stores the backbone without the
  // prefix. CLIP's vision tower is "vision_model." in every layout.
  bool bare_drops_prefix = true;
  // Checkpoint tensors that are not the model's parameters.
  bool (*ignored)(const std::string& name) = nullptr;
};

bool IgnoredByEncoder(const std::string& name) {
  return absl::EndsWith(name, "embeddings.position_ids") ||
         absl::EndsWith(name, "embeddings.token_type_ids") ||
         absl::StartsWith(name, "cls.") || absl::StartsWith(name, "lm_head.");
}

bool IgnoredByViT(const std::string& name) {
  return absl::StartsWith(name, "pooler.") ||
         absl::StartsWith(name, "vit.pooler.");
}

bool IgnoredByClip(const std::string& name) {
  return absl::StartsWith(name, "text_model.") ||
         absl::StartsWith(name, "visual_projection.") ||
         absl::StartsWith(name, "text_projection.") || name == "logit_scale" ||
         name == "vision_model.embeddings.position_ids";
}

Layout LayoutOf(const HfModelConfig& c) {
  if (c.model_type == "bert") return {"bert.", true, IgnoredByEncoder};
  if (c.modality == HfModality::kText) {
    return {"roberta.", true, IgnoredByEncoder};
  }
  if (!c.vision.clip()) return {"vit.", true, IgnoredByViT};
  return {"vision_model.", false, IgnoredByClip};
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IsHead(const std::string& name) {
  return absl::StartsWith(name, "classifier.");
}

// The head's outputs: rows of its last linear layer's weight.
bool IsHeadOutputWeight(const std::string& name) {
  return name == "classifier.weight" || name == "classifier.out_proj.weight";
}

// A model of `hf`'s architecture with a head of model.num_classes outputs,
// drawn from `seed`; a head the checkpoint lacks is marked common.
absl::StatusOr<std::unique_ptr<Model>> Build(const HfModelConfig& hf,
                                             ModelConfig config, uint64_t seed,
                                             bool has_head) {
  if (!has_head &&
      std::find(config.common.begin(), config.common.end(), "head") ==
          config.common.end() &&
      std::find(config.frozen.begin(), config.frozen.end(), "head") ==
          config.frozen.end()) {
    config.common.push_back("head");  // new: every client trains it
  }
  if (hf.modality == HfModality::kVision) {
    return CreateHfVision(hf.vision, config, seed);
  }
  return CreateHfEncoder(hf.encoder, config, seed);
}

absl::Status HeadSizeMatches(const std::string& dir, int outputs,
                             const ModelConfig& config) {
  if (outputs == config.num_classes) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "model.num_classes: the checkpoint's classification head (", dir,
      ") has ", outputs, " outputs, the config asks for ",
      config.num_classes));
}

std::string Architectures(const HfModelConfig& hf) {
  return absl::StrCat("[", absl::StrJoin(hf.architectures, ", "), "]");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadHfModel(const std::string& dir,
                                                   ModelConfig config,
                                                   uint64_t seed,
                                                   HfLoadReport* report) {
  ASSIGN_OR_RETURN(HfModelConfig hf, ReadHfModelConfig(dir));
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsCheckpoint> ckpt,
                   SafetensorsCheckpoint::Open(dir));
  const Layout layout = LayoutOf(hf);

  // Checkpoint name -> the model's name for it.
  HfLoadReport r;
  r.config = hf;
  r.prefixed = false;
  std::vector<std::pair<std::string, const SafetensorsCheckpoint::Entry*>>
      mapped;
  int head_outputs = 0;
  for (const SafetensorsCheckpoint::Entry& e : ckpt->tensors()) {
    const std::string& name = e.info->name;
    if (layout.ignored(name)) {
      r.ignored.push_back(name);
      continue;
    }
    if (absl::StartsWith(name, layout.prefix)) r.prefixed = true;
    if (IsHead(name)) r.head_from_checkpoint = true;
    if (IsHeadOutputWeight(name) && !e.info->shape.empty()) {
      head_outputs = static_cast<int>(e.info->shape[0]);
    }
    const bool ours = absl::StartsWith(name, layout.prefix) || IsHead(name) ||
                      !layout.bare_drops_prefix;
    mapped.emplace_back(ours ? name : layout.prefix + name, &e);
  }
  if (hf.classifier().has_value() &&
      *hf.classifier() != r.head_from_checkpoint) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": config.json's architectures ", Architectures(hf),
        *hf.classifier() ? " name a classifier but the checkpoint has no "
                           "classifier.* tensor"
                         : " name no classifier but the checkpoint has "
                           "classifier.* tensors"));
  }
  if (r.head_from_checkpoint) {
    RETURN_IF_ERROR(HeadSizeMatches(
        dir, head_outputs > 0 ? head_outputs : hf.num_labels, config));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                   Build(hf, config, seed, r.head_from_checkpoint));

  std::map<std::string, at::Tensor> params;
  for (const auto& [name, t] : model->Parameters()) params[name] = t;
  const std::string what = absl::StrCat(
      hf.model_type, " model (", hf.classifier_architecture(), ")");
  std::set<std::string> loaded;
  for (const auto& [name, entry] : mapped) {
    const std::string& stored = entry->info->name;
    auto param = params.find(name);
    if (param == params.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, ": tensor '", stored, "' is not a parameter of the ", what));
    }
    const std::vector<int64_t> shape(param->second.sizes().begin(),
                                     param->second.sizes().end());
    if (shape != entry->info->shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, ": tensor '", stored, "' has shape ",
          ShapeString(entry->info->shape), ", the ", what, " has ",
          ShapeString(shape), " (config.json: ", hf.model_type, ")"));
    }
    loaded.insert(name);
  }
  for (const auto& [name, param] : params) {
    if (loaded.count(name) || (IsHead(name) && !r.head_from_checkpoint)) {
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": the checkpoint has no '", name, "' (", what, " with ",
        hf.modality == HfModality::kText ? hf.encoder.num_hidden_layers
                                         : hf.vision.num_hidden_layers,
        " layers)"));
  }
  // Every name and shape checked: the values are copied into the model one
  // tensor at a time (memory: the model and one tensor).
  try {
    at::NoGradGuard no_grad;
    for (const auto& [name, entry] : mapped) {
      ASSIGN_OR_RETURN(std::vector<float> values,
                       entry->file->ReadFloat32(entry->info->name));
      params.at(name).copy_(
          torch::from_blob(values.data(), entry->info->shape, torch::kFloat32));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(dir, ": ", e.what_without_backtrace()));
  }
  if (report != nullptr) *report = std::move(r);
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> CreateHfModel(const std::string& dir,
                                                     ModelConfig config,
                                                     uint64_t seed,
                                                     HfLoadReport* report) {
  ASSIGN_OR_RETURN(HfModelConfig hf, ReadHfModelConfig(dir));
  const std::optional<bool> has_head = hf.classifier();
  if (!has_head.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        (std::filesystem::path(dir) / "config.json").string(),
        ": architectures: missing; it says whether the checkpoint has a "
        "classification head, which building the model without its weights "
        "needs"));
  }
  if (*has_head && hf.num_labels > 0) {
    RETURN_IF_ERROR(HeadSizeMatches(dir, hf.num_labels, config));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                   Build(hf, config, seed, *has_head));
  if (report != nullptr) {
    report->config = std::move(hf);
    report->head_from_checkpoint = *has_head;
    report->ignored.clear();
    // Upstream's bare models (BertModel, ViTModel, ...) save the backbone
    // unprefixed; CLIP's vision tower is "vision_model." in every layout.
    report->prefixed = *has_head || !LayoutOf(report->config).bare_drops_prefix;
  }
  return model;
}

absl::Status ExportHfModel(Model& model, const HfLoadReport& report,
                           const std::string& source_dir,
                           const std::string& out_dir) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat(out_dir, ": cannot create: ", ec.message()));
  }
  std::vector<Tensor32> tensors;
  int64_t labels = 0;
  try {
    torch::NoGradGuard no_grad;
    for (const auto& [name, t] : model.Parameters()) {
      const at::Tensor c = t.detach().to(torch::kFloat32).contiguous();
      Tensor32 out;
      out.name = name;
      out.shape.assign(c.sizes().begin(), c.sizes().end());
      out.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
      if (IsHeadOutputWeight(name)) labels = c.size(0);
      tensors.push_back(std::move(out));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("exporting to ", out_dir, ": ",
                                            e.what_without_backtrace()));
  }
  RETURN_IF_ERROR(WriteSafetensorsFloat32(
      (std::filesystem::path(out_dir) / "model.safetensors").string(), tensors,
      {{"format", "pt"}}));

  const std::string config_path =
      (std::filesystem::path(source_dir) / "config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(config_path));
  nlohmann::json config = nlohmann::json::parse(text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": not a JSON object"));
  }
  if (report.config.model_type == "clip_vision_model") {
    // CLIPForImageClassification takes a CLIPConfig: the vision tower's
    // settings move under "vision_config".
    nlohmann::json vision = config;
    for (const char* key : {"architectures", "id2label", "label2id",
                            "num_labels", "torch_dtype", "dtype",
                            "transformers_version"}) {
      vision.erase(key);
    }
    nlohmann::json clip = nlohmann::json::object();
    for (const char* key : {"torch_dtype", "dtype", "transformers_version"}) {
      if (config.contains(key)) clip[key] = config[key];
    }
    clip["model_type"] = "clip";
    clip["vision_config"] = vision;
    if (config.contains("id2label")) clip["id2label"] = config["id2label"];
    config = std::move(clip);
  }
  config["architectures"] = {report.config.classifier_architecture()};
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (config.contains(key)) config[key] = "float32";
  }
  // The checkpoint's own label names when its head had this size.
  const auto names = config.find("id2label");
  if (names == config.end() || !names->is_object() ||
      static_cast<int64_t>(names->size()) != labels) {
    nlohmann::json id2label = nlohmann::json::object();
    nlohmann::json label2id = nlohmann::json::object();
    for (int64_t i = 0; i < labels; ++i) {
      id2label[std::to_string(i)] = absl::StrCat("LABEL_", i);
      label2id[absl::StrCat("LABEL_", i)] = i;
    }
    config["id2label"] = id2label;
    config["label2id"] = label2id;
  }
  config.erase("num_labels");
  return WriteFileAtomically(
      (std::filesystem::path(out_dir) / "config.json").string(),
      config.dump(2) + "\n");
}

}  // namespace layerfl
