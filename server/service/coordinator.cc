#include "server/service/coordinator.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/trainer/examples.h"
#include "client/trainer/pretrain.h"
#include "client/trainer/trainer.h"
#include "common/data/federated_data.h"
#include "common/model/weights_bridge.h"
#include "common/util/status_macros.h"
#include "server/checkpoint/checkpoint_store.h"
#include "server/round/round_engine.h"
#include "server/round/selector.h"
#include "server/selection/budget.h"

namespace layerfl {
namespace {

// The same evaluation as layerfl-sim's.
class TorchEvaluator : public Evaluator {
 public:
  TorchEvaluator(Model& model, Examples test, const SelectiveTrainer& trainer)
      : model_(model), test_(std::move(test)), trainer_(trainer) {}
  absl::StatusOr<EvalMetrics> Evaluate(const ModelWeights& weights) override {
    RETURN_IF_ERROR(ImportWeights(model_, weights));
    ASSIGN_OR_RETURN(EvalResult r, trainer_.Evaluate(model_, test_));
    return EvalMetrics{r.accuracy, r.loss};
  }

 private:
  Model& model_;
  const Examples test_;
  const SelectiveTrainer& trainer_;
};

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.good()) {
      return absl::UnavailableError(absl::StrCat("cannot write '", tmp, "'"));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot rename '", tmp, "': ", ec.message()));
  }
  return absl::OkStatus();
}

// The run's id, kept in run_dir/run_id: reused when resuming, new otherwise.
absl::StatusOr<std::string> RunId(const std::filesystem::path& run_dir,
                                  bool resumed) {
  const std::string path = (run_dir / "run_id").string();
  if (resumed) {
    std::ifstream in(path);
    std::string id;
    if (in >> id && !id.empty()) return id;
  }
  std::mt19937_64 rng{std::random_device{}()};
  const std::string id = absl::StrFormat("%016x", rng());
  RETURN_IF_ERROR(WriteFileAtomically(path, id + "\n"));
  return id;
}

}  // namespace

absl::Status RunCoordinator(const RunConfig& c, const CoordinatorOptions& options,
                            const std::atomic<bool>* stop) {
  std::ostream* log = options.log;
  ServiceOptions service = options.service;
  service.run_id = "pending";
  if (service.wait_for_clients < 0) service.wait_for_clients = c.data.num_clients;
  RETURN_IF_ERROR(service.Validate());
  if (c.model.kind != "vit") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.kind: the coordinator runs image tasks (vit), got '",
        c.model.kind, "'"));
  }
  SetTorchThreads(c.threads);

  // Exactly the simulator's set-up, in the same order.
  ASSIGN_OR_RETURN(FederatedImages images, BuildFederatedImages(c));
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, CreateModel(c.model, c.seed));
  if (c.pretrain.enabled) {
    ASSIGN_OR_RETURN(NamedTensors pretrained,
                     EnsurePretrained(c, images.holdout, log));
    RETURN_IF_ERROR(LoadPretrained(*model, pretrained, c.pretrain.checkpoint));
  }
  ASSIGN_OR_RETURN(ModelWeights initial, ExportWeights(*model));
  images.clients.clear();
  images.holdout = ImageSet();
  Examples test = ImagesToExamples(images.test);

  const std::vector<LayerGroup> groups = model->groups();
  ASSIGN_OR_RETURN(std::unique_ptr<LayerSelector> selector,
                   CreateLayerSelector(c, groups));
  BudgetDistribution dist;
  ASSIGN_OR_RETURN(dist.kind, ParseBudgetDistribution(c.budget.distribution));
  dist.value = c.budget.value;
  dist.min = c.budget.min;
  dist.max = c.budget.max;
  dist.mean = c.budget.mean;
  dist.std = c.budget.std;
  RETURN_IF_ERROR(dist.Validate());

  const std::filesystem::path run_dir(c.federated.run_dir);
  const std::string ckpt_dir = (run_dir / "checkpoints").string();
  if (!c.federated.resume && std::filesystem::exists(ckpt_dir) &&
      !std::filesystem::is_empty(ckpt_dir)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "federated.resume is false but '", ckpt_dir,
        "' holds checkpoints; set federated.resume: true to continue that run, "
        "or choose another federated.run_dir"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> store,
                   CheckpointStore::Open(ckpt_dir, c.federated.keep_checkpoints));

  SelectiveTrainer trainer(c.train, c.importance);
  TorchEvaluator evaluator(*model, std::move(test), trainer);
  RoundEngine::Deps deps;
  deps.clock = Clock::Real();
  deps.selector = selector.get();
  deps.evaluator = &evaluator;
  deps.store = store.get();
  ASSIGN_OR_RETURN(std::unique_ptr<RoundEngine> engine,
                   RoundEngine::Create(ToEngineOptions(c), initial, deps));
  ASSIGN_OR_RETURN(service.run_id, RunId(run_dir, engine->resumed()));
  if (log != nullptr && engine->resumed()) {
    *log << "coordinator: resumed from round " << engine->committed_round()
         << " in " << ckpt_dir << std::endl;
  }

  const std::string metrics_path = (run_dir / "metrics.jsonl").string();
  std::ofstream metrics(metrics_path,
                        engine->resumed() ? std::ios::app : std::ios::trunc);
  if (!metrics) {
    return absl::UnavailableError(absl::StrCat("cannot write '", metrics_path, "'"));
  }
  if (engine->resumed()) {
    // As layerfl-sim: a crash between the checkpoint of round R and its
    // metrics line loses that line; the checkpoint keeps the record.
    std::ifstream in(metrics_path);
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

  ServiceDeps sdeps;
  sdeps.engine = engine.get();
  sdeps.clock = deps.clock;
  sdeps.metric = ScoreMetricFor(c);
  sdeps.log = log;
  sdeps.budget = [&c, &groups, dist](const std::string& id,
                                     double declared) -> absl::StatusOr<double> {
    if (dist.kind != BudgetDistribution::Kind::kDeclared && declared <= 0) {
      // The simulator's own assignment, keyed by client id.
      ASSIGN_OR_RETURN(std::vector<double> b, AssignBudgets(c, groups, {id}));
      return b[0];
    }
    std::optional<int64_t> d;
    if (declared > 0) d = static_cast<int64_t>(declared);
    ASSIGN_OR_RETURN(int64_t b, ResolveClientBudget(dist, c.seed, id, d));
    return static_cast<double>(b);
  };
  sdeps.on_round = [&metrics](const RoundRecord& record) {
    metrics << record.ToJson() << "\n";
    metrics.flush();
  };

  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorServer> server,
                   CoordinatorServer::Start(options.listen, service, sdeps));
  if (!options.port_file.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically(options.port_file,
                                        absl::StrCat(server->port(), "\n")));
  }
  std::atomic<bool> over{false};
  std::thread watcher([&] {
    while (!over.load()) {
      if (stop != nullptr && stop->load()) {
        server->Shutdown();
        return;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  });
  absl::Status result = server->Wait();
  over.store(true);
  watcher.join();
  server.reset();  // stops serving before the engine goes away
  if (result.ok() && log != nullptr) {
    *log << "coordinator: run finished at round " << engine->committed_round()
         << "; checkpoints in " << ckpt_dir << ", metrics in " << metrics_path
         << std::endl;
  }
  return result;
}

}  // namespace layerfl
