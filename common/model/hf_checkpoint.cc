// LoadHfEncoder: a Hugging Face checkpoint directory into the LibTorch
// encoder of hf_encoder.cc.
#include <algorithm>
#include <filesystem>
#include <set>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/data/file.h"
#include "common/model/hf_encoder.h"
#include "common/safetensors/safetensors.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace layerfl {
namespace {

// Checkpoint tensors that are not the encoder's parameters: buffers that
// older transformers saved, and heads of pretraining objectives.
bool Ignored(const std::string& name) {
  return absl::EndsWith(name, "embeddings.position_ids") ||
         absl::EndsWith(name, "embeddings.token_type_ids") ||
         absl::StartsWith(name, "cls.") || absl::StartsWith(name, "lm_head.");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadHfEncoder(const std::string& dir,
                                                     ModelConfig config,
                                                     uint64_t seed,
                                                     HfLoadReport* report) {
  const std::string config_path =
      (std::filesystem::path(dir) / "config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(config_path));
  ASSIGN_OR_RETURN(HfEncoderConfig hf,
                   ParseHfEncoderConfig(text, config_path));
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsCheckpoint> ckpt,
                   SafetensorsCheckpoint::Open(dir));
  const std::string prefix = hf.model_type == "bert" ? "bert." : "roberta.";

  // Checkpoint name -> the encoder's name for it.
  HfLoadReport r;
  r.config = hf;
  r.prefixed = false;
  std::vector<std::pair<std::string, const SafetensorsCheckpoint::Entry*>>
      mapped;
  for (const SafetensorsCheckpoint::Entry& e : ckpt->tensors()) {
    const std::string& name = e.info->name;
    if (Ignored(name)) {
      r.ignored.push_back(name);
      continue;
    }
    if (absl::StartsWith(name, prefix)) r.prefixed = true;
    if (absl::StartsWith(name, "classifier.")) r.head_from_checkpoint = true;
    const bool ours = absl::StartsWith(name, prefix) ||
                      absl::StartsWith(name, "classifier.");
    mapped.emplace_back(ours ? name : prefix + name, &e);
  }
  if (r.head_from_checkpoint) {
    const int outputs =
        hf.num_labels > 0 ? hf.num_labels : config.num_classes;
    if (outputs != config.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.num_classes: the checkpoint's classification head (", dir,
          ") has ", outputs, " outputs, the config asks for ",
          config.num_classes));
    }
  } else if (std::find(config.common.begin(), config.common.end(), "head") ==
                 config.common.end() &&
             std::find(config.frozen.begin(), config.frozen.end(), "head") ==
                 config.frozen.end()) {
    config.common.push_back("head");  // new: every client trains it
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                   CreateHfEncoder(hf, config, seed));

  std::set<std::string> params;
  for (const auto& [name, t] : model->Parameters()) params.insert(name);
  NamedTensors weights;
  std::set<std::string> loaded;
  try {
    for (const auto& [name, entry] : mapped) {
      if (!params.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            dir, ": tensor '", entry->info->name, "' is not a parameter of the ",
            hf.model_type, " encoder (", prefix, "*, classifier.*)"));
      }
      ASSIGN_OR_RETURN(std::vector<float> values,
                       entry->file->ReadFloat32(entry->info->name));
      at::Tensor t = torch::from_blob(values.data(),
                                      {static_cast<int64_t>(values.size())},
                                      torch::kFloat32)
                         .clone()
                         .reshape(entry->info->shape);
      weights.emplace_back(name, std::move(t));
      loaded.insert(name);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(dir, ": ", e.what_without_backtrace()));
  }
  for (const std::string& name : params) {
    if (loaded.count(name) || absl::StartsWith(name, "classifier.")) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": the checkpoint has no '", name, "' (", hf.model_type,
        " with ", hf.num_hidden_layers, " layers)"));
  }
  RETURN_IF_ERROR(AssignParameters(*model, weights,
                                   /*allow_missing=*/!r.head_from_checkpoint));
  if (report != nullptr) *report = std::move(r);
  return model;
}

absl::Status ExportHfEncoder(Model& model, const HfLoadReport& report,
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
      if (name == "classifier.weight" || name == "classifier.out_proj.weight") {
        labels = c.size(0);
      }
      tensors.push_back(std::move(out));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("exporting to ", out_dir, ": ", e.what_without_backtrace()));
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
  const std::string& type = report.config.model_type;
  config["architectures"] = {type == "bert"      ? "BertForSequenceClassification"
                             : type == "roberta" ? "RobertaForSequenceClassification"
                                                 : "XLMRobertaForSequenceClassification"};
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
