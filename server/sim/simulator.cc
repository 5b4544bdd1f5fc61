#include "server/sim/simulator.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/trainer/examples.h"
#include "client/trainer/pretrain.h"
#include "client/trainer/trainer.h"
#include "client/worker/worker.h"
#include "common/data/federated_data.h"
#include "common/model/weights_bridge.h"
#include "common/util/seed.h"
#include "common/util/status_macros.h"
#include "server/checkpoint/checkpoint_store.h"
#include "server/round/round_engine.h"
#include "server/round/selector.h"

namespace layerfl {
namespace {

class TorchEvaluator : public Evaluator {
 public:
  TorchEvaluator(Model& model, const Examples& test, const SelectiveTrainer& t)
      : model_(model), test_(test), trainer_(t) {}
  absl::StatusOr<EvalMetrics> Evaluate(const ModelWeights& weights) override {
    RETURN_IF_ERROR(ImportWeights(model_, weights));
    ASSIGN_OR_RETURN(EvalResult r, trainer_.Evaluate(model_, test_));
    return EvalMetrics{r.accuracy, r.loss};
  }

 private:
  Model& model_;
  const Examples& test_;
  const SelectiveTrainer& trainer_;
};

// A virtual client: its worker and the layer versions its copy would hold.
struct VirtualClient {
  std::unique_ptr<LocalWorker> worker;
  std::vector<int64_t> versions;  // -1 = never downloaded
};

// Brings the shared model to the global weights and counts what a real
// client would download: the layers whose version it does not hold yet.
int64_t Sync(VirtualClient& client, const ModelWeights& global) {
  int64_t bytes = 0;
  for (size_t l = 0; l < global.layers.size(); ++l) {
    if (client.versions[l] != global.layers[l].version) {
      bytes += global.layers[l].numel() * static_cast<int64_t>(sizeof(float));
      client.versions[l] = global.layers[l].version;
    }
  }
  return bytes;
}

std::string Eta(double seconds) {
  if (seconds < 60) return absl::StrFormat("%.0fs", seconds);
  return absl::StrFormat("%dm%02ds", static_cast<int>(seconds) / 60,
                         static_cast<int>(seconds) % 60);
}

}  // namespace

std::string SimClientId(int index) {
  return absl::StrFormat("client-%03d", index);
}

absl::StatusOr<SimResult> RunSimulation(const RunConfig& c,
                                        const SimOptions& options) {
  const auto wall0 = std::chrono::steady_clock::now();
  std::ostream* log = options.progress;
  SetTorchThreads(c.threads);

  ASSIGN_OR_RETURN(FederatedImages images, BuildFederatedImages(c));
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, CreateModel(c.model, c.seed));
  if (c.model.kind == "vit" && c.pretrain.enabled) {
    ASSIGN_OR_RETURN(NamedTensors pretrained,
                     EnsurePretrained(c, images.holdout, log));
    RETURN_IF_ERROR(LoadPretrained(*model, pretrained, c.pretrain.checkpoint));
  }
  ASSIGN_OR_RETURN(ModelWeights initial, ExportWeights(*model));

  std::vector<VirtualClient> clients(images.clients.size());
  std::vector<std::string> ids;
  for (size_t i = 0; i < clients.size(); ++i) {
    ids.push_back(SimClientId(static_cast<int>(i)));
    clients[i].worker = std::make_unique<LocalWorker>(
        c, ids.back(), model, ImagesToExamples(images.clients[i]));
    clients[i].versions.assign(initial.layers.size(), -1);
  }
  images.clients.clear();
  const Examples test = ImagesToExamples(images.test);

  ASSIGN_OR_RETURN(std::unique_ptr<LayerSelector> selector,
                   CreateLayerSelector(c, model->groups()));
  ASSIGN_OR_RETURN(std::vector<double> budgets,
                   AssignBudgets(c, model->groups(), ids));

  const std::filesystem::path run_dir(c.federated.run_dir);
  const std::string ckpt_dir = (run_dir / "checkpoints").string();
  if (!c.federated.resume && std::filesystem::exists(ckpt_dir) &&
      !std::filesystem::is_empty(ckpt_dir)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "federated.resume is false but '", ckpt_dir,
        "' holds checkpoints; set federated.resume: true to continue that run, "
        "or choose another federated.run_dir"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> store,
                   CheckpointStore::Open(ckpt_dir, c.federated.keep_checkpoints));

  SelectiveTrainer trainer(c.train, c.importance);
  TorchEvaluator evaluator(*model, test, trainer);
  RoundEngine::Deps deps;
  deps.clock = Clock::Real();
  deps.selector = selector.get();
  deps.evaluator = &evaluator;
  deps.store = store.get();
  ASSIGN_OR_RETURN(std::unique_ptr<RoundEngine> engine,
                   RoundEngine::Create(ToEngineOptions(c), initial, deps));
  for (size_t i = 0; i < clients.size(); ++i) {
    RETURN_IF_ERROR(engine->Join(
        {ids[i], clients[i].worker->num_samples(), budgets[i]}));
  }

  SimResult result;
  result.resumed = engine->resumed();
  result.metrics_path = (run_dir / "metrics.jsonl").string();
  std::ofstream metrics(result.metrics_path, result.resumed
                                                 ? std::ios::app
                                                 : std::ios::trunc);
  if (!metrics) {
    return absl::UnavailableError(
        absl::StrCat("cannot write '", result.metrics_path, "'"));
  }
  if (result.resumed) {
    // A crash between the checkpoint of round R and its metrics line loses
    // that line; the checkpoint keeps the round's record, so write it back.
    std::ifstream in(result.metrics_path);
    int64_t last = 0;
    for (std::string line; std::getline(in, line);) {
      long long r = 0;
      if (std::sscanf(line.c_str(), "{\"round\":%lld", &r) == 1) last = r;
    }
    if (last < engine->committed_round()) {
      ASSIGN_OR_RETURN(std::optional<Checkpoint> ckpt, store->LoadLatest());
      if (ckpt.has_value() && ckpt->round == last + 1) {
        metrics << ckpt->metrics_json << "\n";
        metrics.flush();
      }
    }
  }
  if (log && result.resumed) {
    *log << "sim: resumed from round " << engine->committed_round() << " in "
         << ckpt_dir << "\n";
  }
  const std::string metric = ScoreMetricFor(c);
  const int64_t first_round = engine->committed_round() + 1;
  int64_t run_here = 0;
  while (!engine->finished()) {
    if (options.stop_after_rounds > 0 && run_here >= options.stop_after_rounds) {
      break;
    }
    const auto round0 = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(engine->StartRound());
    int64_t bytes_down = 0;
    const int64_t round = engine->committed_round() + 1;
    // Scoring (when the strategy asks), then training; clients in id order.
    for (int phase = 0; phase < 2 && engine->round_running(); ++phase) {
      for (VirtualClient& client : clients) {
        LocalWorker& worker = *client.worker;
        Task task = engine->TaskFor(worker.id());
        const TaskKind wanted = phase == 0 ? TaskKind::kScore : TaskKind::kTrain;
        if (task.kind != wanted) continue;
        ModelWeights global = engine->global();
        bytes_down += Sync(client, global);
        if (task.kind == TaskKind::kScore) {
          ASSIGN_OR_RETURN(std::vector<double> scores,
                           worker.Score(global, task.round, metric));
          RETURN_IF_ERROR(engine->SubmitScores(worker.id(), task.round, scores));
          continue;
        }
        ASSIGN_OR_RETURN(std::vector<LayerDelta> update,
                         worker.Train(global, task.round, task.layers));
        RETURN_IF_ERROR(engine->SubmitUpdate(worker.id(), task.round,
                                             worker.num_samples(), update));
      }
    }
    RETURN_IF_ERROR(engine->Tick());
    if (engine->round_running()) {
      return absl::InternalError(
          absl::StrCat("round ", round, " did not complete in the simulator"));
    }
    ++run_here;
    const double round_secs = std::chrono::duration<double>(
                                  std::chrono::steady_clock::now() - round0)
                                  .count();
    for (RoundRecord& record : engine->TakeRecords()) {
      record.bytes_down = bytes_down;
      record.phase_ms["round"] = round_secs * 1000.0;
      metrics << record.ToJson() << "\n";
      result.bytes_up += record.bytes_up;
      result.bytes_down += record.bytes_down;
      if (record.evaluated) {
        result.final_accuracy = record.eval.accuracy;
        result.final_loss = record.eval.loss;
        result.best_accuracy = std::max(result.best_accuracy, record.eval.accuracy);
      }
      if (log) {
        const double elapsed = std::chrono::duration<double>(
                                   std::chrono::steady_clock::now() - wall0)
                                   .count();
        const int64_t done = record.round - first_round + 1;
        const double eta =
            elapsed / done * (c.federated.rounds - record.round);
        *log << absl::StrFormat(
            "round %3d/%d  acc %s  loss %s  up %7.2f MB  down %7.2f MB  "
            "%5.1fs  ETA %s\n",
            record.round, c.federated.rounds,
            record.evaluated ? absl::StrFormat("%.4f", record.eval.accuracy)
                             : std::string("  -   "),
            record.evaluated ? absl::StrFormat("%.4f", record.eval.loss)
                             : std::string("  -   "),
            record.bytes_up / 1e6, record.bytes_down / 1e6, round_secs,
            Eta(eta));
      }
    }
    metrics.flush();
  }
  result.rounds_committed = engine->committed_round();
  result.final_weights = engine->global();
  result.wall_seconds = std::chrono::duration<double>(
                            std::chrono::steady_clock::now() - wall0)
                            .count();
  return result;
}

}  // namespace layerfl
