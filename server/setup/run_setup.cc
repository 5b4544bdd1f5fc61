#include "server/setup/run_setup.h"

#include <filesystem>
#include <unordered_map>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/data/file.h"
#include "common/trainer/examples.h"
#include "common/trainer/pretrain.h"
#include "common/trainer/trainer.h"
#include "common/model/weights_bridge.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/round/selector.h"

namespace layerfl {
namespace {

// Points every parameter of `model` at the values of `weights` (no copy):
// the model then reads the weights' buffers and must not be written or used
// once they are freed or moved. Checks as ImportWeights.
absl::Status AliasWeights(Model& model, const ModelWeights& weights) {
  std::unordered_map<std::string, at::Tensor> by_name;
  for (auto& [name, t] : model.Parameters()) by_name[name] = t;
  const std::vector<LayerGroup>& groups = model.groups();
  if (weights.layers.size() != groups.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights have ", weights.layers.size(),
                     " layer groups, the model has ", groups.size()));
  }
  for (size_t l = 0; l < groups.size(); ++l) {
    const LayerWeights& layer = weights.layers[l];
    if (layer.group != groups[l].name ||
        layer.tensors.size() != groups[l].param_names.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", l, ": weights hold '", layer.group,
                       "', the model has '", groups[l].name, "'"));
    }
    for (size_t i = 0; i < layer.tensors.size(); ++i) {
      const Tensor32& t = layer.tensors[i];
      auto it = by_name.find(t.name);
      if (t.name != groups[l].param_names[i] || it == by_name.end() ||
          !it->second.sizes().equals(t.shape) ||
          it->second.scalar_type() != at::kFloat) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", t.name, "' does not match the model's parameter"));
      }
    }
  }
  at::NoGradGuard no_grad;
  for (const LayerWeights& layer : weights.layers) {
    for (const Tensor32& t : layer.tensors) {
      by_name.at(t.name).set_data(at::from_blob(
          const_cast<float*>(t.values.data()), t.shape, at::kFloat));
    }
  }
  return absl::OkStatus();
}

// Evaluates on the test set. With `alias`, the model is the evaluator's
// alone and its parameters point at the weights being evaluated (bound
// anew at every call) instead of holding a copy of them: the coordinator
// then holds the model's values once, in the engine.
class TorchEvaluator : public Evaluator {
 public:
  TorchEvaluator(std::shared_ptr<Model> model, Examples test,
                 const RunConfig& config, bool alias)
      : model_(std::move(model)),
        test_(std::move(test)),
        trainer_(config.train, config.importance),
        alias_(alias) {}

  absl::StatusOr<EvalMetrics> Evaluate(const ModelWeights& weights) override {
    RETURN_IF_ERROR(alias_ ? AliasWeights(*model_, weights)
                           : ImportWeights(*model_, weights));
    ASSIGN_OR_RETURN(EvalResult r, trainer_.Evaluate(*model_, test_));
    return EvalMetrics{r.accuracy, r.loss};
  }

 private:
  std::shared_ptr<Model> model_;
  const Examples test_;
  const SelectiveTrainer trainer_;
  const bool alias_;
};

}  // namespace

RoundEngine::Deps RunCore::EngineDeps() const {
  RoundEngine::Deps deps;
  deps.clock = Clock::Real();
  deps.selector = selector.get();
  deps.evaluator = evaluator.get();
  deps.store = store.get();
  return deps;
}

absl::StatusOr<RunCore> PrepareRun(const RunConfig& c, std::ostream* log,
                                   int which) {
  RunCore core;
  // The pretraining hold-out is needed only to build a missing checkpoint.
  const bool pretrain = c.model.kind == "vit" && c.pretrain.enabled;
  const bool need_holdout = pretrain && !std::filesystem::exists(c.pretrain.checkpoint);
  ASSIGN_OR_RETURN(TaskExamples task, BuildTaskExamples(c, which, need_holdout));
  core.clients = std::move(task.clients);
  ASSIGN_OR_RETURN(core.model, CreateModel(c.model, c.seed));
  if (pretrain) {
    ASSIGN_OR_RETURN(NamedTensors pretrained, EnsurePretrained(c, task.holdout, log));
    RETURN_IF_ERROR(
        LoadPretrained(*core.model, pretrained, c.pretrain.checkpoint));
  }
  task.holdout = ImageSet();
  ASSIGN_OR_RETURN(core.initial, ExportWeights(*core.model));
  ASSIGN_OR_RETURN(core.selector, CreateLayerSelector(c, core.model->groups()));

  const std::filesystem::path run_dir(c.federated.run_dir);
  core.checkpoint_dir = (run_dir / "checkpoints").string();
  if (!c.federated.resume && std::filesystem::exists(core.checkpoint_dir) &&
      !std::filesystem::is_empty(core.checkpoint_dir)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "federated.resume is false but '", core.checkpoint_dir,
        "' holds checkpoints; set federated.resume: true to continue that run, "
        "or choose another federated.run_dir"));
  }
  ASSIGN_OR_RETURN(core.store, CheckpointStore::Open(
                                   core.checkpoint_dir,
                                   c.federated.keep_checkpoints));
  // What layerfl-export (and a reader) needs to know what the checkpoints
  // hold: the model and where its source checkpoint is.
  RETURN_IF_ERROR(WriteFileAtomically(
      (run_dir / kRunConfigFile).string(), RunConfigToYaml(c)));
  // The coordinator (kNoClients) uses its model for evaluation only: the
  // model's own copy of the values is dropped for views of the initial
  // weights (which the engine takes over), and every evaluation binds it to
  // the weights it evaluates. The simulator's clients share the model and
  // write into it: there it keeps its own values.
  const bool alias = which == kNoClients;
  if (alias) RETURN_IF_ERROR(AliasWeights(*core.model, core.initial));
  core.evaluator = std::make_unique<TorchEvaluator>(
      core.model, std::move(task.test), c, alias);
  return core;
}

absl::StatusOr<std::ofstream> OpenMetrics(const RunConfig& c,
                                          const RoundEngine& engine,
                                          CheckpointStore& store,
                                          std::string* path) {
  *path = (std::filesystem::path(c.federated.run_dir) / "metrics.jsonl").string();
  int64_t last = 0;
  if (engine.resumed()) {
    std::ifstream in(*path);
    for (std::string line; std::getline(in, line);) {
      // A line cut off by a crash does not parse and does not count.
      const nlohmann::json record =
          nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (record.is_object() && record.contains("round") &&
          record["round"].is_number_integer()) {
        last = record["round"].get<int64_t>();
      }
    }
  }
  std::ofstream metrics(*path, engine.resumed() ? std::ios::app : std::ios::trunc);
  if (!metrics) {
    return absl::UnavailableError(absl::StrCat("cannot write '", *path, "'"));
  }
  if (engine.resumed() && last < engine.committed_round()) {
    ASSIGN_OR_RETURN(std::optional<Checkpoint> ckpt, store.LoadLatest());
    if (ckpt.has_value() && ckpt->round == last + 1) {
      metrics << ckpt->metrics_json << "\n";
      metrics.flush();
    }
  }
  return metrics;
}

}  // namespace layerfl
