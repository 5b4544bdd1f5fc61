#include "client/daemon/client.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "client/daemon/client_metrics.h"
#include "common/trainer/examples.h"
#include "common/trainer/trainer.h"
#include "common/worker/worker.h"
#include "common/data/federated_data.h"
#include "common/data/file.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

class WorkerWork : public ClientWork {
 public:
  explicit WorkerWork(std::unique_ptr<LocalWorker> worker)
      : worker_(std::move(worker)) {}
  int64_t num_samples() const override { return worker_->num_samples(); }
  absl::StatusOr<std::vector<double>> Score(
      const ModelWeights& global, int64_t round, const std::string& metric,
      int score_from) override {
    return worker_->Score(global, round, metric, score_from);
  }
  absl::StatusOr<std::vector<LayerDelta>> Train(
      const ModelWeights& global, int64_t round,
      const std::vector<std::string>& layers,
      const std::vector<int>& layer_participants) override {
    return worker_->Train(global, round, layers, layer_participants);
  }
  WorkCost LastScoreCost() const override {
    return {worker_->last_score_usage().seconds,
            worker_->last_score_usage().peak_bytes};
  }
  WorkCost LastTrainCost() const override {
    return {worker_->last_train_usage().seconds,
            worker_->last_train_usage().peak_bytes};
  }
  absl::StatusOr<TrainingProfile> Profile() { return worker_->Profile(); }

 private:
  std::unique_ptr<LocalWorker> worker_;
};

}  // namespace

absl::StatusOr<DeclaredLimits> DeclaredBudget(const RunConfig& c, double budget,
                                              double budget_s,
                                              double budget_mb) {
  for (const auto& [name, value] :
       {std::pair<const char*, double>{"budget", budget},
        {"budget_s", budget_s},
        {"budget_mb", budget_mb}}) {
    if (!std::isfinite(value) || value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": must be finite and >= 0, got ", value));
    }
  }
  DeclaredLimits out;
  out.budget = budget;
  out.max_time_s = budget_s;
  out.max_memory_mb = budget_mb;
  const double own = c.budget.unit == "time"     ? budget_s
                     : c.budget.unit == "memory" ? budget_mb
                                                 : 0;
  if (own > 0) {
    if (budget > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--budget and --", c.budget.unit == "time" ? "budget_s" : "budget_mb",
          ": both declare this run's budget (budget.unit ", c.budget.unit,
          "); give one"));
    }
    out.budget = own;
  }
  return out;
}

absl::StatusOr<RunConfig> ResolveClientConfig(const ClientOptions& options,
                                              const std::string& client_id,
                                              CoordinatorLink& link,
                                              const std::atomic<bool>* stop) {
  const std::optional<RunConfig>& local = options.local_config;
  if (!local.has_value() && options.config_source != ConfigSource::kRun) {
    return absl::InvalidArgumentError(
        "config: checking or running a local config needs one");
  }
  RunConfig out;
  if (options.config_source == ConfigSource::kLocal) {
    out = *local;
  } else {
    DaemonOptions ask = options.daemon;
    ask.client_id = client_id;
    absl::StatusOr<std::string> yaml = FetchRunConfig(ask, link, stop);
    if (!yaml.ok()) {
      return absl::Status(yaml.status().code(),
                          absl::StrCat("the run's config: ",
                                       yaml.status().message()));
    }
    absl::StatusOr<RunConfig> run = ParseRunConfig(*yaml);
    if (!run.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the coordinator's run config does not parse here: ",
          run.status().message()));
    }
    if (options.config_source == ConfigSource::kCheck) {
      if (absl::Status same = CheckSameRun(*local, *run); !same.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            kNotTheRunsConfig, same.message()));
      }
    }
    if (local.has_value()) {
      ASSIGN_OR_RETURN(out, WithMachineLocalFields(*run, *local));
    } else {
      out = *std::move(run);
    }
  }
  if (options.threads > 0) out.threads = options.threads;
  if (!options.dataset_dir.empty()) out.data.dir = options.dataset_dir;
  if (absl::Status valid = out.Validate(); !valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("with this machine's flags: ", valid.message()));
  }
  return out;
}

absl::Status RunClient(const ClientOptions& options,
                       const std::atomic<bool>* stop) {
  const bool own_data = !options.data_dir.empty();
  if (own_data && options.daemon.client_id.empty()) {
    return absl::InvalidArgumentError(
        "id: a client with its own data_dir needs an id");
  }
  if (options.link.target.empty() && options.print_profile == nullptr) {
    return absl::InvalidArgumentError("coordinator: an address is required");
  }
  DaemonOptions daemon = options.daemon;
  if (daemon.client_id.empty())
    daemon.client_id = PartitionClientId(options.partition);
  std::unique_ptr<CoordinatorLink> link = CreateGrpcLink(options.link);
  ASSIGN_OR_RETURN(const RunConfig c, ResolveClientConfig(options,
                                                          daemon.client_id,
                                                          *link, stop));
  ASSIGN_OR_RETURN(DeclaredLimits limits,
                   DeclaredBudget(c, options.budget, options.budget_s,
                                  options.budget_mb));
  daemon.budget = limits.budget;
  daemon.max_time_s = limits.max_time_s;
  daemon.max_memory_mb = limits.max_memory_mb;
  daemon.secagg_rounding_seed = c.privacy.dp.noise_seed;
  SetTorchThreads(c.threads);
  Examples examples;
  if (own_data) {
    // A missing or malformed data directory is the operator's input.
    const auto bad_dir = [](const absl::Status& s) {
      return absl::InvalidArgumentError(
          absl::StrCat("data_dir: ", s.message()));
    };
    if (c.data.dataset == "tsv") {
      absl::StatusOr<TextSet> loaded = LoadClientText(options.data_dir, c);
      if (!loaded.ok()) return bad_dir(loaded.status());
      examples = TextToExamples(*loaded);
    } else {
      absl::StatusOr<ImageSet> loaded = LoadClientImages(options.data_dir, c);
      if (!loaded.ok()) return bad_dir(loaded.status());
      examples = ImagesToExamples(*loaded);
    }
  } else {
    // Refuses a partition outside [0, data.num_clients), naming it.
    ASSIGN_OR_RETURN(TaskExamples task,
                     BuildTaskExamples(c, options.partition));
    examples = std::move(task.clients[0]);
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, CreateModel(c.model, c.seed));
  WorkerWork work(std::make_unique<LocalWorker>(
      c, daemon.client_id, std::move(model), std::move(examples)));
  if (options.print_profile != nullptr) {
    ASSIGN_OR_RETURN(TrainingProfile profile, work.Profile());
    *options.print_profile << profile.Serialize() << std::flush;
    return absl::OkStatus();
  }
  if (NeedsProfiles(c) || daemon.max_time_s > 0 || daemon.max_memory_mb > 0) {
    // Measured once on this machine (cached in profile.cache_dir) and sent at
    // Join: the coordinator's costs for this client come from it.
    ASSIGN_OR_RETURN(TrainingProfile profile, work.Profile());
    if (daemon.log != nullptr) {
      *daemon.log << "profiled training on " << profile.machine << ": step "
                  << profile.step_fixed_s << " s fixed, peak "
                  << profile.fixed_bytes / (1024.0 * 1024.0) << " MiB fixed"
                  << std::endl;
    }
    daemon.profile =
        std::make_shared<const TrainingProfile>(std::move(profile));
  }
  ClientMetrics metrics(daemon.client_id);
  daemon.observer = &metrics;
  std::unique_ptr<HttpListener> http;
  if (!options.http.address.empty()) {
    absl::StatusOr<std::unique_ptr<HttpListener>> listening =
        HttpListener::Start(
            options.http,
            {{"/metrics", [&metrics] {
                return HttpResponse{200,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                    metrics.MetricsText()};
              }}});
    if (!listening.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metrics_listen: ", listening.status().message()));
    }
    http = *std::move(listening);
    if (!options.http_port_file.empty()) {
      RETURN_IF_ERROR(WriteFileAtomically(options.http_port_file,
                                          absl::StrCat(http->port(), "\n")));
    }
  }
  absl::StatusOr<DaemonResult> result =
      RunClientDaemon(daemon, work, *link, stop);
  return result.status();
}

}  // namespace layerfl
