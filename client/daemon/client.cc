#include "client/daemon/client.h"

#include <cctype>
#include <cmath>
#include <filesystem>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "client/daemon/client_metrics.h"
#include "client/daemon/layer_cache.h"
#include "common/data/federated_data.h"
#include "common/data/file.h"
#include "common/metrics/process_metrics.h"
#include "common/model/weights_bridge.h"
#include "common/trainer/examples.h"
#include "common/trainer/trainer.h"
#include "common/util/status_macros.h"
#include "common/worker/worker.h"

namespace layerfl {
namespace {

// The daemon's layer cache in `dir` ("" = none), with the options' fault.
absl::StatusOr<std::unique_ptr<LayerCache>> OpenLayerCache(
    const ClientOptions& options, const std::string& dir) {
  if (dir.empty()) return std::unique_ptr<LayerCache>();
  ASSIGN_OR_RETURN(std::unique_ptr<LayerCache> cache,
                   CreateFileLayerCache(dir));
  if (options.exit_after_download_layers > 0) {
    cache = ExitAfterLayersCache(std::move(cache),
                                 options.exit_after_download_layers);
  }
  return cache;
}

// The token `id` presents: its own (client_tokens), else the shared one.
absl::StatusOr<std::string> TokenFor(const ClientOptions& options,
                                     const std::string& id) {
  if (options.client_tokens.empty()) return options.daemon.token;
  auto it = options.client_tokens.find(id);
  if (it == options.client_tokens.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokens_file: no token for client '", id, "'"));
  }
  return it->second;
}


// One client's work through its LocalWorker. `turn`, when given, is held
// around every task: the clients of a worker process share one model
// replica and take turns on it.
class WorkerWork : public ClientWork {
 public:
  WorkerWork(std::unique_ptr<LocalWorker> worker, const CgroupLimits& device,
             absl::Mutex* turn = nullptr)
      : worker_(std::move(worker)), device_(device), turn_(turn) {}
  int64_t num_samples() const override { return worker_->num_samples(); }
  absl::StatusOr<std::vector<double>> Score(const ModelWeights& global,
                                            int64_t round,
                                            const std::string& metric,
                                            int score_from) override {
    absl::MutexLockMaybe lock(turn_);
    return worker_->Score(global, round, metric, score_from);
  }
  absl::StatusOr<std::vector<LayerDelta>> Train(
      const ModelWeights& global, int64_t round,
      const std::vector<std::string>& layers,
      const std::vector<int>& layer_participants) override {
    absl::MutexLockMaybe lock(turn_);
    return worker_->Train(global, round, layers, layer_participants);
  }
  WorkCost LastScoreCost() const override {
    return WithDevice({worker_->last_score_usage().seconds,
                       worker_->last_score_usage().peak_bytes});
  }
  WorkCost LastTrainCost() const override {
    return WithDevice({worker_->last_train_usage().seconds,
                       worker_->last_train_usage().peak_bytes});
  }
  absl::StatusOr<TrainingProfile> Profile() {
    absl::MutexLockMaybe lock(turn_);
    return worker_->Profile();
  }

 private:
  WorkCost WithDevice(WorkCost cost) const {
    // 0 (unknown) when /proc cannot be read.
    absl::StatusOr<ProcessStats> process = ReadProcessStats();
    if (process.ok()) cost.process_peak_bytes = process->peak_resident_bytes;
    cost.memory_limit_bytes = device_.memory_bytes.value_or(0);
    cost.cpus = device_.cpus.value_or(0);
    return cost;
  }

  std::unique_ptr<LocalWorker> worker_;
  const CgroupLimits device_;
  absl::Mutex* turn_;
};

// The run's config and the daemon options every client of this process
// starts from: resolved (asked as `client_id`), budget flags applied,
// LibTorch's threads set.
struct PreparedRun {
  RunConfig config;
  DaemonOptions daemon;
};
absl::StatusOr<PreparedRun> PrepareRun(const ClientOptions& options,
                                       const std::string& client_id,
                                       CoordinatorLink& link,
                                       const std::atomic<bool>* stop) {
  PreparedRun out;
  ASSIGN_OR_RETURN(out.config,
                   ResolveClientConfig(options, client_id, link, stop));
  const RunConfig& c = out.config;
  double budget_mb = options.budget_mb;
  const bool told = budget_mb > 0 ||
                    (c.budget.unit == "memory" && options.budget > 0);
  if (options.budget_from_cgroup && !told &&
      options.device.memory_bytes.has_value()) {
    ASSIGN_OR_RETURN(const ProcessStats process, ReadProcessStats());
    const int64_t resident = process.resident_bytes;
    budget_mb = CgroupBudgetMb(*options.device.memory_bytes, resident);
    if (options.daemon.log != nullptr) {
      *options.daemon.log
          << client_id << ": cgroup memory limit "
          << *options.device.memory_bytes / (1 << 20) << " MiB ("
          << options.device.memory_file << "), " << resident / (1 << 20)
          << " MiB resident: declares budget_mb " << budget_mb
          << (c.budget.unit == "memory" ? " (the budget)" : " (a cap)")
          << std::endl;
    }
    if (budget_mb <= 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the cgroup's memory limit (", *options.device.memory_bytes,
          " bytes, ", options.device.memory_file, ") leaves no memory to "
          "train in beside the ", resident, " bytes already resident; give "
          "--budget_mb, or --budget_from_cgroup=false"));
    }
  }
  ASSIGN_OR_RETURN(
      DeclaredLimits limits,
      DeclaredBudget(c, options.budget, options.budget_s, budget_mb));
  out.daemon = options.daemon;
  out.daemon.client_id = client_id;
  ASSIGN_OR_RETURN(out.daemon.token, TokenFor(options, client_id));
  out.daemon.budget = limits.budget;
  out.daemon.max_time_s = limits.max_time_s;
  out.daemon.max_memory_mb = limits.max_memory_mb;
  out.daemon.secure_aggregation = c.privacy.secure_aggregation.enabled;
  if (out.daemon.require_secure_aggregation && !out.daemon.secure_aggregation) {
    return absl::InvalidArgumentError(
        "require_secure_aggregation: the run does not aggregate securely "
        "(privacy.secure_aggregation.enabled: false) and this client sends "
        "its updates only masked");
  }
  out.daemon.secagg_rounding_seed = c.privacy.dp.noise_seed;
  SetTorchThreads(c.threads);
  TuneMallocForTraining();
  return out;
}

// The client's own data directory, as the run's dataset kind reads it; a
// missing or malformed directory is the operator's input (InvalidArgument
// naming `flag`).
absl::StatusOr<Examples> LoadOwnData(const RunConfig& c, const std::string& dir,
                                     const char* flag) {
  const auto bad_dir = [flag](const absl::Status& s) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", s.message()));
  };
  if (IsTextDataset(c.data)) {
    absl::StatusOr<TextSet> loaded = LoadClientText(dir, c);
    if (!loaded.ok()) return bad_dir(loaded.status());
    return TextToExamples(*loaded);
  }
  absl::StatusOr<ImageSet> loaded = LoadClientImages(dir, c);
  if (!loaded.ok()) return bad_dir(loaded.status());
  return ImagesToExamples(*loaded);
}

// Whether the coordinator needs this client's profile; then measured (once
// per machine, cached in profile.cache_dir) and set in `daemon`.
absl::Status MaybeProfile(const RunConfig& c, WorkerWork& work,
                          DaemonOptions& daemon) {
  if (!NeedsProfiles(c) && daemon.max_time_s <= 0 &&
      daemon.max_memory_mb <= 0) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(TrainingProfile profile, work.Profile());
  if (daemon.log != nullptr) {
    *daemon.log << "profiled training on " << profile.machine << ": step "
                << profile.step_fixed_s << " s fixed, peak "
                << profile.fixed_bytes / (1024.0 * 1024.0) << " MiB fixed"
                << std::endl;
  }
  daemon.profile = std::make_shared<const TrainingProfile>(std::move(profile));
  return absl::OkStatus();
}

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
    ASSIGN_OR_RETURN(ask.token, TokenFor(options, client_id));
    absl::StatusOr<std::string> yaml = FetchRunConfig(ask, link, stop);
    if (!yaml.ok()) {
      return absl::Status(
          yaml.status().code(),
          absl::StrCat("the run's config: ", yaml.status().message()));
    }
    absl::StatusOr<RunConfig> run = ParseRunConfig(*yaml);
    if (!run.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the coordinator's run config does not parse here: ",
                       run.status().message()));
    }
    if (options.config_source == ConfigSource::kCheck) {
      if (absl::Status same = CheckSameRun(*local, *run); !same.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(kNotTheRunsConfig, same.message()));
      }
    }
    // Without a file of its own the client takes none of the coordinator's
    // machine-local fields (its threads, paths, profile settings).
    ASSIGN_OR_RETURN(out, local.has_value()
                              ? WithMachineLocalFields(*run, *local)
                              : WithDefaultMachineLocalFields(*run));
  }
  if (options.threads > 0) out.threads = options.threads;
  if (!options.dataset_dir.empty()) out.data.dir = options.dataset_dir;
  if (!options.hf_dir.empty()) out.model.hf_dir = options.hf_dir;
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
  std::unique_ptr<CoordinatorLink> link = CreateGrpcLink(options.link);
  ASSIGN_OR_RETURN(PreparedRun prepared,
                   PrepareRun(options,
                              options.daemon.client_id.empty()
                                  ? PartitionClientId(options.partition)
                                  : options.daemon.client_id,
                              *link, stop));
  const RunConfig& c = prepared.config;
  DaemonOptions& daemon = prepared.daemon;
  Examples examples;
  if (own_data) {
    ASSIGN_OR_RETURN(examples, LoadOwnData(c, options.data_dir, "data_dir"));
  } else {
    // Refuses a partition outside [0, data.num_clients), naming it.
    ASSIGN_OR_RETURN(TaskExamples task,
                     BuildTaskExamples(c, options.partition));
    examples = std::move(task.clients[0]);
  }
  // The weights come from the coordinator: a Hugging Face model is built
  // from its config.json alone.
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model,
                   CreateModel(c.model, c.seed, {/*load_hf_weights=*/false}));
  WorkerWork work(std::make_unique<LocalWorker>(c, daemon.client_id, model,
                                                std::move(examples)),
                  options.device);
  if (options.print_profile != nullptr) {
    ASSIGN_OR_RETURN(TrainingProfile profile, work.Profile());
    *options.print_profile << profile.Serialize() << std::flush;
    return absl::OkStatus();
  }
  // Sent at Join: the coordinator's costs for this client come from it.
  RETURN_IF_ERROR(MaybeProfile(c, work, daemon));
  // From here the model reads the downloaded weights in place (LocalWorker
  // binds it to them): its own values would be a second copy.
  ReleaseParameterValues(*model);
  ClientMetrics metrics(daemon.client_id);
  daemon.observer = &metrics;
  std::unique_ptr<HttpListener> http;
  if (!options.http.address.empty()) {
    absl::StatusOr<std::unique_ptr<HttpListener>> listening =
        HttpListener::Start(options.http,
                            {{"/metrics", [&metrics] {
                                return HttpResponse{
                                    200,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                    metrics.MetricsText()};
                              }}});
    if (!listening.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics_listen: ", listening.status().message()));
    }
    http = *std::move(listening);
    if (!options.http_port_file.empty()) {
      RETURN_IF_ERROR(WriteFileAtomically(options.http_port_file,
                                          absl::StrCat(http->port(), "\n")));
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<LayerCache> cache,
                   OpenLayerCache(options, options.download_cache_dir));
  daemon.layer_cache = cache.get();
  absl::StatusOr<DaemonResult> result =
      RunClientDaemon(daemon, work, *link, stop);
  return result.status();
}

absl::StatusOr<std::vector<std::string>> ParseIdRange(
    const std::string& range) {
  const size_t dots = range.find("..");
  if (dots == std::string::npos) {
    if (range.empty()) return absl::InvalidArgumentError("ids: empty");
    return std::vector<std::string>{range};
  }
  const std::string first = range.substr(0, dots);
  const std::string last = range.substr(dots + 2);
  const auto digits = [](const std::string& s) {
    size_t i = s.size();
    while (i > 0 && std::isdigit(static_cast<unsigned char>(s[i - 1]))) --i;
    return i;
  };
  const size_t a = digits(first), b = digits(last);
  int64_t from = 0, to = 0;
  if (a == first.size() || first.size() != last.size() || a != b ||
      first.substr(0, a) != last.substr(0, b) ||
      !absl::SimpleAtoi(first.substr(a), &from) ||
      !absl::SimpleAtoi(last.substr(b), &to) || from > to) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ids: '", range,
        "' is not a range like client-000..client-099 (same prefix, numbers "
        "of the same width, first <= last)"));
  }
  std::vector<std::string> ids;
  const int width = static_cast<int>(first.size() - a);
  for (int64_t i = from; i <= to; ++i) {
    ids.push_back(
        absl::StrCat(first.substr(0, a), absl::StrFormat("%0*d", width, i)));
  }
  return ids;
}

absl::StatusOr<std::pair<int, int>> ParsePartitionRange(
    const std::string& range) {
  const size_t dots = range.find("..");
  int first = 0, last = 0;
  if (dots == std::string::npos ||
      !absl::SimpleAtoi(range.substr(0, dots), &first) ||
      !absl::SimpleAtoi(range.substr(dots + 2), &last) || first < 0 ||
      first > last) {
    return absl::InvalidArgumentError(
        absl::StrCat("partitions: '", range,
                     "' is not a range like 0..249 (0 <= first <= last)"));
  }
  return std::make_pair(first, last);
}

absl::Status RunHostedClients(const ClientOptions& options,
                              const HostedClients& hosted,
                              const std::atomic<bool>* stop) {
  const bool by_partition = hosted.first_partition >= 0;
  if (by_partition == !hosted.ids.empty()) {
    return absl::InvalidArgumentError(
        "hosted clients: give partitions or ids, one of them");
  }
  if (!by_partition && hosted.data_root.empty()) {
    return absl::InvalidArgumentError("data_root: ids need a data root");
  }
  if (options.link.target.empty()) {
    return absl::InvalidArgumentError("coordinator: an address is required");
  }
  if (!options.http.address.empty()) {
    return absl::InvalidArgumentError(
        "metrics_listen: serves one client's metrics; not with several "
        "hosted clients");
  }
  std::vector<std::string> ids = hosted.ids;
  if (by_partition) {
    for (int i = hosted.first_partition; i <= hosted.last_partition; ++i) {
      ids.push_back(PartitionClientId(i));
    }
  }
  std::vector<std::string> tokens;
  for (const std::string& id : ids) {
    ASSIGN_OR_RETURN(std::string token, TokenFor(options, id));
    tokens.push_back(std::move(token));
  }
  // The run, asked once (as the first client).
  std::unique_ptr<CoordinatorLink> first_link = CreateGrpcLink(options.link);
  ASSIGN_OR_RETURN(PreparedRun prepared,
                   PrepareRun(options, ids[0], *first_link, stop));
  const RunConfig& c = prepared.config;
  std::vector<Examples> data;
  if (by_partition) {
    if (hosted.last_partition >= c.data.num_clients) {
      return absl::InvalidArgumentError(absl::StrCat(
          "partitions: ", hosted.first_partition, "..", hosted.last_partition,
          " goes beyond the run's data.num_clients ", c.data.num_clients));
    }
    ASSIGN_OR_RETURN(TaskExamples task, BuildTaskExamples(c, kAllClients));
    for (int i = hosted.first_partition; i <= hosted.last_partition; ++i) {
      data.push_back(std::move(task.clients[i]));
    }
  } else {
    for (const std::string& id : ids) {
      ASSIGN_OR_RETURN(
          Examples examples,
          LoadOwnData(c,
                      (std::filesystem::path(hosted.data_root) / id).string(),
                      "data_root"));
      data.push_back(std::move(examples));
    }
  }
  // One model replica, taken in turns; every task loads the global weights
  // it is given first, so sharing changes nothing a client computes.
  // The weights come from the coordinator: a Hugging Face model is built
  // from its config.json alone.
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model,
                   CreateModel(c.model, c.seed, {/*load_hf_weights=*/false}));
  absl::Mutex turn;
  std::vector<std::unique_ptr<WorkerWork>> work;
  for (size_t k = 0; k < ids.size(); ++k) {
    work.push_back(std::make_unique<WorkerWork>(
        std::make_unique<LocalWorker>(c, ids[k], model, std::move(data[k])),
        options.device, &turn));
  }
  // One machine, one profile (measured on the first client's data).
  RETURN_IF_ERROR(MaybeProfile(c, *work[0], prepared.daemon));
  ReleaseParameterValues(*model);  // as in RunClient
  std::vector<absl::Status> results(ids.size());
  std::vector<std::thread> threads;
  for (size_t k = 0; k < ids.size(); ++k) {
    threads.emplace_back([&, k] {
      DaemonOptions daemon = prepared.daemon;
      daemon.client_id = ids[k];
      daemon.token = tokens[k];
      absl::StatusOr<std::unique_ptr<LayerCache>> cache = OpenLayerCache(
          options, options.download_cache_dir.empty()
                       ? ""
                       : (std::filesystem::path(options.download_cache_dir) /
                          ids[k])
                             .string());
      if (!cache.ok()) {
        results[k] = cache.status();
        return;
      }
      daemon.layer_cache = cache->get();
      std::unique_ptr<CoordinatorLink> link = CreateGrpcLink(options.link);
      absl::StatusOr<DaemonResult> r =
          RunClientDaemon(daemon, *work[k], *link, stop);
      results[k] = r.status();
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t k = 0; k < ids.size(); ++k) {
    if (!results[k].ok()) {
      return absl::Status(results[k].code(),
                          absl::StrCat(ids[k], ": ", results[k].message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace layerfl
