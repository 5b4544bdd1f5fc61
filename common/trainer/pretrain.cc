#include "common/trainer/pretrain.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/trainer/examples.h"
#include "common/trainer/trainer.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

bool IsClassifier(const std::string& name) {
  return absl::StartsWith(name, "head.");
}

}  // namespace

absl::StatusOr<NamedTensors> EnsurePretrained(const RunConfig& config,
                                              const ImageSet& holdout,
                                              std::ostream* log) {
  const std::string& path = config.pretrain.checkpoint;
  if (std::filesystem::exists(path)) {
    if (log) *log << "pretrain: using cached checkpoint " << path << "\n";
    return LoadTensors(path);
  }
  if (config.model.kind != "vit") {
    return absl::FailedPreconditionError(absl::StrCat(
        "pretrain.checkpoint: '", path,
        "' does not exist and only the built-in ViT can be pretrained here"));
  }
  if (holdout.size() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pretrain.checkpoint: '", path,
        "' does not exist and there are no hold-out images to build it from "
        "(data.pretrain_fraction is 0, or only the test images were read)"));
  }
  ImageSet data = holdout;
  const std::vector<int>& map = config.pretrain.label_map;
  int classes = config.model.num_classes;
  if (!map.empty()) {
    classes = *std::max_element(map.begin(), map.end()) + 1;
    for (int& label : data.labels) label = map[label];
  }
  ModelConfig mc = config.model;
  mc.num_classes = classes;
  mc.frozen.clear();
  mc.common.clear();
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                   CreateModel(mc, config.seed ^ 0x9e3779b97f4a7c15ULL));
  TrainConfig tc;
  tc.optimizer = "adam";
  tc.lr = config.pretrain.lr;
  tc.batch_size = config.pretrain.batch_size;
  tc.local_epochs = 1;
  SelectiveTrainer trainer(tc, config.importance);
  Examples examples = ImagesToExamples(data);
  std::vector<std::string> all;
  for (const LayerGroup& g : model->groups()) all.push_back(g.name);
  if (log) {
    *log << "pretrain: no checkpoint at " << path << "; training the ViT on "
         << data.size() << " held-out images, " << classes
         << "-way coarse task, " << config.pretrain.epochs << " epochs\n";
  }
  for (int epoch = 0; epoch < config.pretrain.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(TrainResult r,
                     trainer.Train(*model, examples, all, config.seed + epoch));
    ASSIGN_OR_RETURN(EvalResult ev, trainer.Evaluate(*model, examples));
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    if (log) {
      *log << absl::StrFormat(
          "pretrain: epoch %d/%d  loss %.4f  train-acc %.4f  %.1fs\n",
          epoch + 1, config.pretrain.epochs, ev.loss, ev.accuracy, secs);
    }
  }
  NamedTensors keep;
  for (auto& [name, t] : CloneParameters(*model)) {
    if (!IsClassifier(name)) keep.emplace_back(name, t);
  }
  RETURN_IF_ERROR(SaveTensors(keep, path));
  if (log) *log << "pretrain: cached " << path << "\n";
  return keep;
}

absl::Status LoadPretrained(Model& model, const NamedTensors& pretrained,
                            const std::string& checkpoint_path) {
  // Only the new classifier (the last group) may be missing: a checkpoint of
  // a shallower model must not leave the deeper blocks at random silently.
  std::unordered_set<std::string> have;
  for (const auto& [name, t] : pretrained) have.insert(name);
  const std::vector<LayerGroup>& groups = model.groups();
  for (size_t g = 0; g + 1 < groups.size(); ++g) {
    for (const std::string& p : groups[g].param_names) {
      if (!have.count(p)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "pretrained checkpoint '", checkpoint_path, "' has no '", p,
            "' (group ", groups[g].name,
            "): it is for another model; delete it to rebuild, or set "
            "pretrain.checkpoint to a path of its own"));
      }
    }
  }
  absl::Status s = AssignParameters(model, pretrained, /*allow_missing=*/true);
  if (!s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pretrained checkpoint '", checkpoint_path,
        "' does not fit the configured model (delete it to rebuild): ",
        s.message()));
  }
  return absl::OkStatus();
}

}  // namespace layerfl
