#include "server/setup/run_setup.h"

#include <filesystem>

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
        batch_size_(config.federated.eval_batch_size),
        alias_(alias) {}

  absl::StatusOr<EvalMetrics> Evaluate(const ModelWeights& weights) override {
    RETURN_IF_ERROR(alias_ ? BindWeights(*model_, weights)
                           : ImportWeights(*model_, weights));
    ASSIGN_OR_RETURN(EvalResult r,
                     trainer_.Evaluate(*model_, test_, batch_size_));
    return EvalMetrics{r.accuracy, r.loss};
  }

 private:
  std::shared_ptr<Model> model_;
  const Examples test_;
  const SelectiveTrainer trainer_;
  const int batch_size_;
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
  // The coordinator (kNoClients) uses its model for evaluation only: the
  // model's own copy of the values is dropped for views of the initial
  // weights (which the engine takes over), and every evaluation binds it to
  // the weights it evaluates. The simulator's clients share the model and
  // bind it to the weights of their tasks, which are gone by the time it
  // evaluates: there each evaluation copies the weights in (ImportWeights).
  const bool alias = which == kNoClients;
  if (alias) {
    ASSIGN_OR_RETURN(core.initial, ExportAndBind(*core.model));
  } else {
    ASSIGN_OR_RETURN(core.initial, ExportWeights(*core.model));
  }
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
