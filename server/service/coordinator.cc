#include "server/service/coordinator.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/trainer/trainer.h"
#include "common/data/file.h"
#include "common/util/memory.h"
#include "common/util/status_macros.h"
#include "server/checkpoint/checkpoint_store.h"
#include "server/monitor/run_monitor.h"
#include "server/round/round_engine.h"
#include "server/round/selector.h"
#include "server/selection/budget.h"
#include "server/service/memory_release.h"
#include "server/setup/run_setup.h"

namespace layerfl {
namespace {

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

absl::StatusOr<ServiceOptions> TransportOptions(const RunConfig& c,
                                                ServiceOptions s) {
  const TransportConfig& t = c.transport;
  absl::StatusOr<Encoding> encoding = ParseEncoding(t.encoding);
  if (!encoding.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("transport.encoding: ", encoding.status().message()));
  }
  s.encoding = *encoding;
  s.chunk_bytes = t.chunk_kb * 1024;
  s.max_chunk_bytes = t.max_chunk_kb * 1024;
  // An asynchronous buffer takes updates in the order they arrive: holding
  // one for a lower id would make it wait on clients of other versions.
  s.ordered_aggregation =
      t.ordered_aggregation && c.federated.mode != "async";
  s.max_held_bytes = t.max_held_mb << 20;
  s.spill_dir = (std::filesystem::path(c.federated.run_dir) / "held").string();
  s.wait_for_clients =
      t.wait_for_clients > 0 ? t.wait_for_clients : c.data.num_clients;
  s.wait_for_clients_timeout = absl::Seconds(t.wait_for_clients_s);
  s.client_timeout = absl::Seconds(t.client_timeout_s);
  s.heartbeat = absl::Seconds(t.heartbeat_s);
  s.max_poll = absl::Seconds(t.max_poll_s);
  s.linger = absl::Seconds(t.linger_s);
  s.run_config_yaml = ServedRunConfigYaml(c);
  s.secure_aggregation = c.privacy.secure_aggregation.enabled;
  return s;
}

absl::Status RunCoordinator(const RunConfig& c,
                            const CoordinatorOptions& options,
                            const std::atomic<bool>* stop) {
  std::ostream* log = options.log;
  ASSIGN_OR_RETURN(ServiceOptions service,
                   TransportOptions(c, options.service));
  service.run_id = "pending";
  RETURN_IF_ERROR(service.Validate());
  SetTorchThreads(c.threads);

  // Exactly the simulator's set-up (server/setup), so that a distributed run
  // ends with the simulator's weights; the clients' data stays with them.
  ASSIGN_OR_RETURN(RunCore core, PrepareRun(c, log, kNoClients));
  ASSIGN_OR_RETURN(BudgetDistribution dist, BudgetDistributionFromConfig(c));

  const std::filesystem::path run_dir(c.federated.run_dir);
  RoundEngine::Deps deps = core.EngineDeps();
  std::vector<std::string> layer_names;
  for (const LayerWeights& l : core.initial.layers) {
    layer_names.push_back(l.group);
  }
  // Moved, not copied: the engine holds the one copy of the model's values
  // (the evaluator's model reads them in place; see PrepareRun).
  ASSIGN_OR_RETURN(std::unique_ptr<RoundEngine> engine,
                   RoundEngine::Create(ToEngineOptions(c),
                                       std::move(core.initial), deps));
  ASSIGN_OR_RETURN(service.run_id, RunId(run_dir, engine->resumed()));
  if (log != nullptr && engine->resumed()) {
    *log << "coordinator: resumed from round " << engine->committed_round()
         << " in " << core.checkpoint_dir << std::endl;
  }

  std::string metrics_path;
  ASSIGN_OR_RETURN(std::ofstream metrics,
                   OpenMetrics(c, *engine, *core.store, &metrics_path));

  ServiceDeps sdeps;
  sdeps.engine = engine.get();
  sdeps.clock = deps.clock;
  sdeps.metric = ScoreMetricFor(c);
  sdeps.profiles_required = NeedsProfiles(c);
  sdeps.log = log;
  sdeps.budget = [&c, dist](const std::string& id,
                            double declared) -> absl::StatusOr<double> {
    // A declared budget is a client's word: it must be a sane number before
    // it is converted (1e15 bytes is far above any device's memory).
    if (!std::isfinite(declared) || declared > 1e15) {
      return absl::InvalidArgumentError(absl::StrCat(
          "client '", id, "': declared budget must be finite and <= 1e15, got ",
          declared));
    }
    // No declaration: the configured draw keyed by client id, the simulator's
    // own assignment (and an error under budget.distribution: declared).
    std::optional<double> d;
    if (declared > 0) d = declared;
    return ResolveClientBudget(dist, c.seed, id, d);
  };
  // What operators watch (/metrics, the dashboard): the engine and the
  // service as they are at each request, and every committed round.
  std::atomic<CoordinatorServer*> serving{nullptr};
  RunMonitorOptions watch;
  watch.run_id = service.run_id;
  watch.rounds = c.federated.rounds;
  watch.layers = layer_names;
  watch.strategy = c.selection.strategy;
  watch.budget_unit = c.budget.unit;
  watch.private_run = c.privacy.dp.enabled;
  RoundEngine* eng = engine.get();
  RunMonitor monitor(watch, [eng, &serving] {
    LiveState s;
    s.committed_round = eng->committed_round();
    s.round_running = eng->round_running();
    s.phase = eng->phase();
    s.finished = eng->finished();
    s.epsilon = eng->epsilon();
    if (CoordinatorServer* server = serving.load()) s.service = server->stats();
    return s;
  });
  sdeps.on_round = [&metrics, &monitor](const RoundRecord& record) {
    metrics << record.ToJson() << "\n";
    metrics.flush();
    monitor.RecordRound(record);
  };

  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorServer> server,
                   CoordinatorServer::Start(options.listen, service, sdeps));
  serving.store(server.get());
  std::unique_ptr<HttpListener> http;
  if (!options.http.address.empty()) {
    absl::StatusOr<std::unique_ptr<HttpListener>> listening =
        HttpListener::Start(options.http, monitor.Routes());
    if (!listening.ok()) {
      return absl::Status(listening.status().code(),
                          absl::StrCat("--metrics_listen: ",
                                       listening.status().message()));
    }
    http = *std::move(listening);
    if (log != nullptr) {
      *log << "coordinator: metrics and dashboard on http://"
           << options.http.address.substr(0, options.http.address.rfind(':'))
           << ":" << http->port() << "/"
           << (options.http.token.empty() ? "" : " (token required)")
           << std::endl;
    }
    if (!options.http_port_file.empty()) {
      RETURN_IF_ERROR(WriteFileAtomically(options.http_port_file,
                                          absl::StrCat(http->port(), "\n")));
    }
  }
  if (!options.port_file.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically(options.port_file,
                                        absl::StrCat(server->port(), "\n")));
  }
  std::atomic<bool> over{false};
  std::thread watcher([&] {
    QuietRelease release(options.release_memory_every, absl::Now());
    absl::Time sampled = absl::InfinitePast();
    while (!over.load()) {
      if (stop != nullptr && stop->load()) {
        server->Shutdown();
        return;
      }
      if (options.release_memory_every > absl::ZeroDuration() &&
          absl::Now() - sampled >= absl::Seconds(1)) {
        sampled = absl::Now();
        const ServiceStats st = server->stats();
        if (release.Due(sampled, st.ever_joined + st.down_wire_bytes +
                                     st.up_wire_bytes)) {
          ReleaseFreeMemory();
        }
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  });
  absl::Status result = server->Wait();
  over.store(true);
  watcher.join();
  if (http != nullptr && options.http_linger > absl::ZeroDuration()) {
    if (log != nullptr) {
      *log << "coordinator: the HTTP listener stays for "
           << absl::FormatDuration(options.http_linger) << std::endl;
    }
    const absl::Time until = absl::Now() + options.http_linger;
    while (absl::Now() < until && (stop == nullptr || !stop->load())) {
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  http.reset();  // stops asking the server and the engine
  serving.store(nullptr);
  server.reset();  // stops serving before the engine goes away
  if (result.ok() && log != nullptr) {
    *log << "coordinator: run finished at round " << engine->committed_round()
         << "; checkpoints in " << core.checkpoint_dir << ", metrics in "
         << metrics_path << std::endl;
  }
  return result;
}

}  // namespace layerfl
