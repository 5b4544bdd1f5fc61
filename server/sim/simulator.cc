#include "server/sim/simulator.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/data/federated_data.h"
#include "common/secagg/participant.h"
#include "common/trainer/examples.h"
#include "common/trainer/trainer.h"
#include "common/util/clock.h"
#include "common/util/seed.h"
#include "common/util/status_macros.h"
#include "common/worker/worker.h"
#include "server/round/round_engine.h"
#include "server/round/selector.h"
#include "server/sim/replay.h"
#include "server/setup/run_setup.h"

namespace layerfl {
namespace {

// A virtual client: its worker and the layer versions its copy would hold.
struct VirtualClient {
  std::unique_ptr<LocalWorker> worker;
  std::vector<int64_t> versions;              // -1 = never downloaded
  std::unique_ptr<SecAggParticipant> secagg;  // secure aggregation only
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

// Under a time or memory budget every virtual client uses this machine's
// profile, measured (or read from profile.cache_dir) by `worker`; null
// otherwise.
absl::StatusOr<std::shared_ptr<const TrainingProfile>> MachineProfile(
    const RunConfig& c, LocalWorker* worker) {
  if (!NeedsProfiles(c) || worker == nullptr) return nullptr;
  ASSIGN_OR_RETURN(TrainingProfile p, worker->Profile());
  return std::make_shared<const TrainingProfile>(std::move(p));
}

// w += delta for the layers of `delta` (shapes as the model's).
void ApplyDelta(const std::vector<LayerDelta>& update, ModelWeights& w) {
  for (const LayerDelta& d : update) {
    for (LayerWeights& layer : w.layers) {
      if (layer.group != d.group) continue;
      for (size_t t = 0; t < d.tensors.size(); ++t) {
        std::vector<float>& values = layer.tensors[t].values.mutable_vector();
        for (size_t k = 0; k < values.size(); ++k) {
          values[k] += d.tensors[t].values[k];
        }
      }
    }
  }
}

// federated.mode: local. Every client trains alone from the same start: its
// layers are `top`'s within its budget (its device speed and profile as in
// a federated run), picked once; after every round each client's own model
// is evaluated and the round's accuracy and loss are their means.
absl::StatusOr<SimResult> RunLocalOnly(const RunConfig& c,
                                       const SimOptions& options) {
  namespace fs = std::filesystem;
  const auto wall0 = std::chrono::steady_clock::now();
  std::ostream* log = options.progress;
  SetTorchThreads(c.threads);
  TuneMallocForTraining();
  ASSIGN_OR_RETURN(RunCore core, PrepareRun(c, log));
  const size_t n = core.clients.size();
  std::vector<std::string> ids;
  std::vector<std::unique_ptr<LocalWorker>> workers;
  for (size_t i = 0; i < n; ++i) {
    ids.push_back(SimClientId(static_cast<int>(i)));
    workers.push_back(std::make_unique<LocalWorker>(
        c, ids.back(), core.model, std::move(core.clients[i])));
  }
  ASSIGN_OR_RETURN(std::vector<double> budgets, AssignBudgets(c, ids));
  ASSIGN_OR_RETURN(std::shared_ptr<const TrainingProfile> profile,
                   MachineProfile(c, n > 0 ? workers[0].get() : nullptr));
  RunConfig top = c;
  top.selection.strategy = "top";
  ASSIGN_OR_RETURN(std::unique_ptr<LayerSelector> selector,
                   CreateLayerSelector(top, core.model->groups()));
  std::vector<SelectionCandidate> candidates;
  for (size_t i = 0; i < n; ++i) {
    SelectionCandidate cand;
    cand.id = ids[i];
    cand.num_samples = workers[i]->num_samples();
    cand.budget = budgets[i];
    cand.profile = profile;
    cand.speed = DeviceSpeed(c, ids[i]);
    candidates.push_back(std::move(cand));
  }
  ASSIGN_OR_RETURN(SelectionOutcome chosen, selector->Select(candidates, 1));

  std::error_code ec;
  fs::create_directories(c.federated.run_dir, ec);
  SimResult result;
  result.metrics_path =
      (fs::path(c.federated.run_dir) / "metrics.jsonl").string();
  std::ofstream metrics(result.metrics_path, std::ios::trunc);
  if (!metrics) {
    return absl::InternalError(
        absl::StrCat("cannot write ", result.metrics_path));
  }
  std::vector<ModelWeights> weights(n, core.initial);
  std::vector<RoundRecord> usage_records;
  for (int64_t round = 1; round <= c.federated.rounds; ++round) {
    const auto round0 = std::chrono::steady_clock::now();
    RoundRecord record;
    record.round = round;
    record.budget_unit = c.budget.unit;
    record.solver_status = "local";
    double accuracy = 0, loss = 0;
    for (size_t i = 0; i < n; ++i) {
      ASSIGN_OR_RETURN(
          std::vector<LayerDelta> update,
          workers[i]->Train(weights[i], round, chosen.layers[i], {}));
      ApplyDelta(update, weights[i]);
      ClientRoundRecord cr;
      cr.id = ids[i];
      cr.budget = budgets[i];
      cr.layers = chosen.layers[i];
      cr.contributed = true;
      cr.cost = chosen.costs[i];
      cr.usage.train_s =
          workers[i]->last_train_usage().seconds / candidates[i].speed;
      cr.usage.peak_bytes = workers[i]->last_train_usage().peak_bytes;
      record.clients.push_back(std::move(cr));
      ASSIGN_OR_RETURN(EvalMetrics eval, core.evaluator->Evaluate(weights[i]));
      accuracy += eval.accuracy / static_cast<double>(n);
      loss += eval.loss / static_cast<double>(n);
    }
    record.evaluated = true;
    record.eval = {accuracy, loss};
    record.phase_ms["round"] = std::chrono::duration<double, std::milli>(
                                   std::chrono::steady_clock::now() - round0)
                                   .count();
    metrics << record.ToJson() << "\n" << std::flush;
    result.final_accuracy = accuracy;
    result.final_loss = loss;
    result.best_accuracy = std::max(result.best_accuracy, accuracy);
    if (NeedsProfiles(c)) usage_records.push_back(record);
    if (log) {
      *log << absl::StrFormat(
                  "local round %3d/%d  mean client acc %.4f  loss %.4f\n",
                  round, c.federated.rounds, accuracy, loss)
           << std::flush;
    }
  }
  result.usage_report = UsageReport(usage_records);
  if (log && !result.usage_report.empty()) *log << result.usage_report;
  result.rounds_committed = c.federated.rounds;
  if (!weights.empty()) result.final_weights = weights[0];
  result.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0)
          .count();
  return result;
}

// A scoring or training task of virtual client `k`.
struct Job {
  size_t k;
  Task task;
};

// Score or train one job on its client's worker; what it produced (scores
// or update) and its usage on the simulated device.
struct JobResult {
  absl::Status status;
  std::vector<double> scores;
  std::vector<LayerDelta> update;
  ClientUsage usage;
};

JobResult Work(VirtualClient& client, const Job& job,
               const ModelWeights& global, const std::string& metric,
               double speed) {
  LocalWorker& worker = *client.worker;
  JobResult r;
  if (job.task.kind == TaskKind::kScore) {
    absl::StatusOr<std::vector<double>> scores =
        worker.Score(global, job.task.round, metric, job.task.score_from);
    r.status = scores.status();
    if (!scores.ok()) return r;
    r.scores = *std::move(scores);
    r.usage.score_s = worker.last_score_usage().seconds / speed;
    r.usage.score_peak_bytes = worker.last_score_usage().peak_bytes;
    return r;
  }
  absl::StatusOr<std::vector<LayerDelta>> update = worker.Train(
      global, job.task.round, job.task.layers, job.task.layer_participants);
  r.status = update.status();
  if (!update.ok()) return r;
  r.update = *std::move(update);
  r.usage.train_s = worker.last_train_usage().seconds / speed;
  r.usage.peak_bytes = worker.last_train_usage().peak_bytes;
  return r;
}

// Hands one job's result to the engine (masked under secure aggregation).
absl::Status Submit(VirtualClient& client, const Job& job, JobResult& r,
                    RoundEngine& engine) {
  RETURN_IF_ERROR(r.status);
  const std::string& id = client.worker->id();
  RETURN_IF_ERROR(engine.ReportUsage(id, job.task.round, r.usage));
  if (job.task.kind == TaskKind::kScore) {
    return engine.SubmitScores(id, job.task.round, r.scores);
  }
  if (client.secagg != nullptr) {
    ASSIGN_OR_RETURN(
        SecAggMaskedInput masked,
        client.secagg->Mask(job.task.round, job.task.shares, r.update));
    return engine.SubmitMasked(id, job.task.round, masked);
  }
  return engine.SubmitUpdate(id, job.task.round, client.worker->num_samples(),
                             r.update);
}

// Runs a pass's jobs: one at a time, each submitted as it is done; or on
// `parallel` lanes (lane k % parallel runs client k's jobs, on its own
// replica, with `threads` intra-op threads), all submitted afterwards in id
// order, so that the engine sees exactly the sequential run.
absl::Status RunJobs(const std::vector<Job>& jobs,
                     const std::optional<ModelWeights>& global, int parallel,
                     int threads, std::vector<VirtualClient>& clients,
                     const std::string& metric,
                     const std::vector<double>& speeds, RoundEngine& engine) {
  if (jobs.empty()) return absl::OkStatus();
  if (parallel <= 1) {
    for (const Job& job : jobs) {
      JobResult r = Work(clients[job.k], job, *global, metric, speeds[job.k]);
      RETURN_IF_ERROR(Submit(clients[job.k], job, r, engine));
    }
    return absl::OkStatus();
  }
  std::vector<JobResult> results(jobs.size());
  std::vector<std::thread> lanes;
  for (int lane = 0; lane < parallel; ++lane) {
    lanes.emplace_back([&, lane] {
      SetTorchThreads(threads);  // this thread's own intra-op threads
      for (size_t j = 0; j < jobs.size(); ++j) {
        if (static_cast<int>(jobs[j].k % parallel) != lane) continue;
        results[j] = Work(clients[jobs[j].k], jobs[j], *global, metric,
                          speeds[jobs[j].k]);
      }
    });
  }
  for (std::thread& t : lanes) t.join();
  for (size_t j = 0; j < jobs.size(); ++j) {
    RETURN_IF_ERROR(Submit(clients[jobs[j].k], jobs[j], results[j], engine));
  }
  return absl::OkStatus();
}

// The simulated seconds `job` takes on a device of `speed`.
double SimulatedSeconds(const RunConfig& c, const Job& job, double speed) {
  return (job.task.kind == TaskKind::kScore ? c.devices.score_s
                                            : c.devices.train_s) /
         speed;
}

// A job whose result reaches the engine at simulated time `at`.
struct InFlight {
  double at = 0;
  int64_t seq = 0;  // ties in `at` go in the order handed out
  Job job;
  JobResult result;
};

// federated.mode async: every virtual client that holds a task computes it
// at once from the global model of that moment (what it would fetch) and
// its result arrives devices.{score,train}_s / speed simulated seconds
// later, on `clock`; arrivals go to the engine in time order. Calls
// `on_records` after each arrival; stops after `stop_after` commits by this
// call (0 = none).
absl::Status RunAsyncClients(
    const RunConfig& c, RoundEngine& engine, FakeClock& clock,
    std::vector<VirtualClient>& clients, const std::string& metric,
    const std::vector<double>& speeds, int64_t stop_after,
    const std::function<void(int64_t bytes_down, double sim_s)>& on_records) {
  RETURN_IF_ERROR(engine.StartRound());
  const int64_t first = engine.committed_round();
  std::vector<InFlight> in_flight;
  std::vector<bool> busy(clients.size(), false);
  int64_t seq = 0, bytes_down = 0;
  double now = 0;
  const auto later = [](const InFlight& a, const InFlight& b) {
    return a.at != b.at ? a.at > b.at : a.seq > b.seq;
  };
  while (!engine.finished()) {
    if (stop_after > 0 && engine.committed_round() - first >= stop_after) {
      break;
    }
    std::optional<ModelWeights> global;
    for (size_t k = 0; k < clients.size(); ++k) {
      if (busy[k]) continue;
      Task task = engine.TaskFor(clients[k].worker->id());
      if (task.kind != TaskKind::kScore && task.kind != TaskKind::kTrain) {
        continue;
      }
      if (!global.has_value()) global = engine.global();
      bytes_down += Sync(clients[k], *global);
      InFlight f;
      f.job = {k, std::move(task)};
      f.at = now + SimulatedSeconds(c, f.job, speeds[k]);
      f.seq = seq++;
      f.result = Work(clients[k], f.job, *global, metric, speeds[k]);
      RETURN_IF_ERROR(f.result.status);
      busy[k] = true;
      in_flight.push_back(std::move(f));
      std::push_heap(in_flight.begin(), in_flight.end(), later);
    }
    if (in_flight.empty()) {
      return absl::InternalError(absl::StrCat(
          "async simulation: no virtual client holds a task after commit ",
          engine.committed_round()));
    }
    std::pop_heap(in_flight.begin(), in_flight.end(), later);
    InFlight f = std::move(in_flight.back());
    in_flight.pop_back();
    clock.Advance(absl::Seconds(f.at - now));
    now = f.at;
    busy[f.job.k] = false;
    RETURN_IF_ERROR(engine.Tick());
    absl::Status s = Submit(clients[f.job.k], f.job, f.result, engine);
    // A refusal (too stale, or its place withdrawn at the deadline) is the
    // engine's to count; the client asks for its next task.
    if (!s.ok() && !ReasonOf(s).has_value() && !absl::IsFailedPrecondition(s)) {
      return s;
    }
    on_records(bytes_down, now);
    bytes_down = 0;
  }
  return absl::OkStatus();
}

}  // namespace

std::string SimClientId(int index) { return PartitionClientId(index); }

absl::StatusOr<SimResult> RunSimulation(const RunConfig& config,
                                        const SimOptions& options) {
  if (config.federated.mode == "local") return RunLocalOnly(config, options);
  RunConfig c = config;
  std::optional<std::map<int64_t, ReplayRound>> replay;
  if (!options.replay.empty()) {
    const auto refuse = [&](const std::string& why) {
      return absl::FailedPreconditionError(
          absl::StrCat("replay of ", options.replay, ": ", why));
    };
    if (c.federated.mode != "sync") {
      return refuse("only synchronous runs can be replayed");
    }
    if (c.privacy.secure_aggregation.enabled && c.privacy.dp.noise_seed == 0) {
      return refuse(
          "the run aggregates securely and privacy.dp.noise_seed is 0: its "
          "clients round their updates stochastically from the OS, so no "
          "replay equals it bit for bit (a run whose clients rounded from a "
          "noise_seed replays with the same one)");
    }
    if (c.privacy.dp.enabled) {
      return refuse("privacy.dp draws noise that a replay does not repeat");
    }
    ASSIGN_OR_RETURN(replay, ReadReplay(options.replay));
    // Budgets only shaped the recorded selections, which are replayed as
    // they were (a recorded run's clients may have declared theirs).
    c.budget = BudgetConfig();
    c.budget.distribution = "fixed";
    for (const auto& [round, r] : *replay) {
      if (c.privacy.secure_aggregation.enabled != (r.roster > 0)) {
        return refuse(absl::StrCat(
            "round ", round,
            c.privacy.secure_aggregation.enabled
                ? " has no secure_aggregation.roster: the recorded run was "
                  "not secure, this config is"
                : " was aggregated securely, this config is not"));
      }
    }
    c.federated.rounds = static_cast<int>(replay->size());
    c.federated.min_clients = 1;
    c.federated.clients_per_round = 0;
  }
  const auto wall0 = std::chrono::steady_clock::now();
  std::ostream* log = options.progress;
  SetTorchThreads(c.threads);
  TuneMallocForTraining();

  ASSIGN_OR_RETURN(RunCore core, PrepareRun(c, log));
  std::vector<VirtualClient> clients(core.clients.size());
  std::vector<std::string> ids;
  // One model replica per parallel lane; lane k % P serves client k, so a
  // replica is only ever trained by its own lane's thread. Every task loads
  // the global weights it is given first: replicas change nothing computed.
  const int parallel = std::max(
      1,
      std::min<int>(c.sim.parallel_clients, static_cast<int>(clients.size())));
  std::vector<std::shared_ptr<Model>> replicas = {core.model};
  for (int r = 1; r < parallel; ++r) {
    ASSIGN_OR_RETURN(std::shared_ptr<Model> replica,
                     CreateModel(c.model, c.seed));
    replicas.push_back(std::move(replica));
  }
  for (size_t i = 0; i < clients.size(); ++i) {
    ids.push_back(SimClientId(static_cast<int>(i)));
    clients[i].worker = std::make_unique<LocalWorker>(
        c, ids.back(), replicas[i % parallel], std::move(core.clients[i]));
    clients[i].versions.assign(core.initial.layers.size(), -1);
    if (c.privacy.secure_aggregation.enabled) {
      std::vector<std::string> groups;
      for (const LayerWeights& l : core.initial.layers)
        groups.push_back(l.group);
      clients[i].secagg = std::make_unique<SecAggParticipant>(
          ids.back(), groups, c.privacy.dp.noise_seed);
    }
  }
  core.clients.clear();
  ASSIGN_OR_RETURN(std::vector<double> budgets, AssignBudgets(c, ids));
  // The asynchronous run's arrivals are ordered by a simulated clock.
  const bool async = c.federated.mode == "async";
  FakeClock sim_clock;
  RoundEngine::Deps deps = core.EngineDeps();
  if (async) deps.clock = &sim_clock;
  RoundEngineOptions engine_options = ToEngineOptions(c);
  std::unique_ptr<LayerSelector> replay_selector;
  if (replay.has_value()) {
    for (const auto& [round, r] : *replay) {
      if (r.roster > 0) engine_options.secagg.replay_roster[round] = r.roster;
    }
    for (const auto& [round, r] : *replay) {
      for (const std::string& id : r.ids) {
        if (std::find(ids.begin(), ids.end(), id) == ids.end()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "replay of ", options.replay, ": round ", round,
              " names client '", id, "', which this config does not have (",
              ids.size(), " clients: data.num_clients)"));
        }
      }
    }
    replay_selector = CreateReplaySelector(*replay);
    deps.selector = replay_selector.get();
  }
  ASSIGN_OR_RETURN(std::unique_ptr<RoundEngine> engine,
                   RoundEngine::Create(engine_options, core.initial, deps));
  // Under a time or memory budget every virtual client gets this machine's
  // profile (measured once, cached) and its device's speed.
  ASSIGN_OR_RETURN(
      std::shared_ptr<const TrainingProfile> profile,
      MachineProfile(c, clients.empty() ? nullptr : clients[0].worker.get()));
  std::vector<double> speeds;
  std::vector<ClientInfo> infos;
  for (size_t i = 0; i < clients.size(); ++i) {
    speeds.push_back(DeviceSpeed(c, ids[i]));
    ClientInfo info(ids[i], clients[i].worker->num_samples(), budgets[i]);
    info.profile = profile;
    info.speed = speeds.back();
    RETURN_IF_ERROR(engine->Join(info));
    infos.push_back(std::move(info));
  }

  SimResult result;
  result.resumed = engine->resumed();
  ASSIGN_OR_RETURN(std::ofstream metrics,
                   OpenMetrics(c, *engine, *core.store, &result.metrics_path));
  if (log && result.resumed) {
    *log << "sim: resumed from round " << engine->committed_round() << " in "
         << core.checkpoint_dir << "\n";
  }
  const std::string metric = ScoreMetricFor(c);
  const int64_t first_round = engine->committed_round() + 1;
  std::vector<RoundRecord> usage_records;
  int64_t run_here = 0;
  // Writes the records committed since the last call: the round's
  // download bytes, its wall time and the simulated clock (sim_clock: the
  // simulated seconds since this call began, from devices.{score,train}_s
  // and each client's speed; a synchronous pass waits for its slowest
  // participant).
  double sim_seconds = 0;
  const auto write_records = [&](int64_t bytes_down, double round_secs) {
    for (RoundRecord& record : engine->TakeRecords()) {
      if (NeedsProfiles(c)) usage_records.push_back(record);
      record.bytes_down = bytes_down;
      record.phase_ms["round"] = round_secs * 1000.0;
      record.phase_ms["sim_clock"] = sim_seconds * 1000.0;
      metrics << record.ToJson() << "\n";
      result.bytes_up += record.bytes_up;
      result.bytes_down += record.bytes_down;
      if (record.evaluated) {
        result.final_accuracy = record.eval.accuracy;
        result.final_loss = record.eval.loss;
        result.best_accuracy =
            std::max(result.best_accuracy, record.eval.accuracy);
      }
      if (log) {
        const double elapsed = std::chrono::duration<double>(
                                   std::chrono::steady_clock::now() - wall0)
                                   .count();
        const int64_t done = record.round - first_round + 1;
        const double eta = elapsed / done * (c.federated.rounds - record.round);
        *log
            << absl::StrFormat(
                   "round %3d/%d  acc %s  loss %s  up %7.2f MB  down %7.2f MB  "
                   "%5.1fs%s  ETA %s\n",
                   record.round, c.federated.rounds,
                   record.evaluated
                       ? absl::StrFormat("%.4f", record.eval.accuracy)
                       : std::string("  -   "),
                   record.evaluated ? absl::StrFormat("%.4f", record.eval.loss)
                                    : std::string("  -   "),
                   record.bytes_up / 1e6, record.bytes_down / 1e6, round_secs,
                   record.private_round
                       ? absl::StrFormat("  eps %.3f", record.epsilon)
                       : std::string(),
                   Eta(eta))
            << std::flush;
      }
    }
    metrics.flush();
  };
  int64_t pending_down = 0;
  int64_t committed_seen = engine->committed_round();
  if (async) {
    auto last = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(RunAsyncClients(
        c, *engine, sim_clock, clients, metric, speeds,
        options.stop_after_rounds, [&](int64_t bytes_down, double sim_s) {
          sim_seconds = sim_s;
          const auto t = std::chrono::steady_clock::now();
          pending_down += bytes_down;
          if (engine->committed_round() == committed_seen) return;
          committed_seen = engine->committed_round();
          write_records(pending_down,
                        std::chrono::duration<double>(t - last).count());
          pending_down = 0;
          last = t;
        }));
  }
  while (!async && !engine->finished()) {
    if (options.stop_after_rounds > 0 &&
        run_here >= options.stop_after_rounds) {
      break;
    }
    const auto round0 = std::chrono::steady_clock::now();
    if (replay.has_value()) {
      // The round's recorded participants are the only clients joined.
      const ReplayRound& r = replay->at(engine->committed_round() + 1);
      for (const ClientInfo& info : infos) {
        if (std::binary_search(r.ids.begin(), r.ids.end(), info.id)) {
          RETURN_IF_ERROR(engine->Join(info));
        } else {
          engine->Leave(info.id);
        }
      }
    }
    RETURN_IF_ERROR(engine->StartRound());
    if (engine->finished()) {
      if (log) {
        *log << absl::StrFormat(
            "sim: stopped after round %d: another round would take epsilon "
            "past privacy.dp.target_epsilon = %g (spent %.4g)\n",
            engine->committed_round(), c.privacy.dp.target_epsilon,
            engine->epsilon());
      }
      break;
    }
    int64_t bytes_down = 0;
    const int64_t round = engine->committed_round() + 1;
    // Every step of the round (scoring when the strategy asks, the secure
    // aggregation steps when on, training) for all participants in id order:
    // a step ends with its last participant, so each pass sees one step.
    while (engine->round_running()) {
      bool any = false;
      // This pass's scoring or training tasks, run after it (in parallel
      // with sim.parallel_clients > 1) and submitted in id order. The global
      // weights do not change within a pass.
      std::vector<Job> jobs;
      std::optional<ModelWeights> global;
      const auto global_for_pass = [&]() -> const ModelWeights& {
        if (!global.has_value()) global = engine->global();
        return *global;
      };
      for (size_t k = 0; k < clients.size(); ++k) {
        VirtualClient& client = clients[k];
        LocalWorker& worker = *client.worker;
        Task task = engine->TaskFor(worker.id());
        if (task.kind == TaskKind::kWait || task.kind == TaskKind::kFinished) {
          continue;
        }
        any = true;
        const std::string& id = worker.id();
        if (task.kind == TaskKind::kAdvertise) {
          RETURN_IF_ERROR(engine->SubmitAdvert(
              id, task.round, client.secagg->Advertise(task.round)));
          continue;
        }
        if (task.kind == TaskKind::kShareKeys) {
          ASSIGN_OR_RETURN(std::vector<SecAggShare> shares,
                           client.secagg->ShareKeys(*task.roster));
          RETURN_IF_ERROR(engine->SubmitShares(id, task.round, shares));
          continue;
        }
        if (task.kind == TaskKind::kUnmask) {
          ASSIGN_OR_RETURN(SecAggUnmaskResponse response,
                           client.secagg->Unmask(*task.unmask));
          RETURN_IF_ERROR(engine->SubmitUnmask(id, task.round, response));
          continue;
        }
        bytes_down += Sync(client, global_for_pass());
        jobs.push_back({k, std::move(task)});
      }
      // A synchronous pass lasts as long as its slowest participant.
      double pass_s = 0;
      for (const Job& job : jobs) {
        pass_s = std::max(pass_s, SimulatedSeconds(c, job, speeds[job.k]));
      }
      sim_seconds += pass_s;
      RETURN_IF_ERROR(RunJobs(jobs, global, parallel, c.threads, clients,
                              metric, speeds, *engine));
      if (!any) break;
    }
    RETURN_IF_ERROR(engine->Tick());
    if (engine->round_running()) {
      return absl::InternalError(
          absl::StrCat("round ", round, " did not complete in the simulator"));
    }
    ++run_here;
    const double round_secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - round0)
            .count();
    write_records(bytes_down, round_secs);
  }
  result.usage_report = UsageReport(usage_records);
  if (log && !result.usage_report.empty()) *log << result.usage_report;
  result.rounds_committed = engine->committed_round();
  result.final_weights = engine->global();
  result.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0)
          .count();
  return result;
}

}  // namespace layerfl
