#include "server/monitor/run_monitor.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/process_metrics.h"
#include "nlohmann/json.hpp"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace layerfl {
namespace {

// /api/state lists at most this many connected clients.
constexpr size_t kStateClients = 100;

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// Seconds, from 50 ms to about 27 minutes.
Histogram::BucketBoundaries SecondsBuckets() {
  Histogram::BucketBoundaries b;
  for (double v = 0.05; v < 2000; v *= 2) b.push_back(v);
  return b;
}

// A monotone total (taken from the service) exported as a counter: the
// counter moves by the difference since the last look.
class TotalCounter {
 public:
  explicit TotalCounter(Counter* counter) : counter_(counter) {}
  void Set(double total) {
    if (total > last_) counter_->Increment(total - last_);
    last_ = std::max(last_, total);
  }

 private:
  Counter* counter_;
  double last_ = 0;
};

// One committed round, as the dashboard draws it.
struct RoundSummary {
  int64_t round = 0;
  int attempt = 0;
  bool evaluated = false;
  double accuracy = 0, loss = 0, epsilon = 0;
  int participants = 0, contributed = 0;
  double duration_s = 0;
  std::vector<int> layer_counts;  // per model layer: clients that trained it
};

}  // namespace

struct RunMonitor::Impl {
  RunMonitorOptions options;
  std::function<LiveState()> live;
  std::shared_ptr<prometheus::Registry> registry =
      std::make_shared<prometheus::Registry>();

  absl::Mutex mu;
  std::vector<RoundSummary> history ABSL_GUARDED_BY(mu);
  std::map<std::string, TotalCounter> refusals ABSL_GUARDED_BY(mu);
  std::map<std::string, TotalCounter> leaves ABSL_GUARDED_BY(mu);
  std::map<std::string, Gauge*> phases ABSL_GUARDED_BY(mu);

  Family<Counter>& counters(const std::string& name, const std::string& help) {
    return prometheus::BuildCounter().Name(name).Help(help).Register(*registry);
  }
  Family<Gauge>& gauges(const std::string& name, const std::string& help) {
    return prometheus::BuildGauge().Name(name).Help(help).Register(*registry);
  }

  Counter& committed =
      counters("layerfl_rounds_committed_total", "Rounds committed").Add({});
  Counter& abandoned = counters("layerfl_round_attempts_abandoned_total",
                                "Round attempts abandoned (quorum missed) "
                                "before a commit")
                           .Add({});
  Family<Counter>& bytes_down =
      counters("layerfl_bytes_down_total",
               "Bytes of accepted model downloads (kind: wire or payload)");
  Family<Counter>& bytes_up =
      counters("layerfl_bytes_up_total",
               "Bytes of accepted update uploads (kind: wire or payload)");
  TotalCounter down_wire{&bytes_down.Add({{"kind", "wire"}})};
  TotalCounter down_payload{&bytes_down.Add({{"kind", "payload"}})};
  TotalCounter up_wire{&bytes_up.Add({{"kind", "wire"}})};
  TotalCounter up_payload{&bytes_up.Add({{"kind", "payload"}})};
  Family<Counter>& refusal_family =
      counters("layerfl_refusals_total", "Requests refused, by reason");
  Family<Counter>& leave_family = counters(
      "layerfl_client_leaves_total",
      "Clients that left with a reason (their work failed), by its kind");
  TotalCounter timed_out{&counters("layerfl_clients_timed_out_total",
                                   "Clients dropped after client_timeout_s "
                                   "of silence")
                              .Add({})};
  TotalCounter spilled{&counters("layerfl_spilled_updates_total",
                                 "Updates that waited for their turn on disk")
                            .Add({})};

  Gauge& round =
      gauges("layerfl_round", "The running round, or the last committed one")
          .Add({});
  Gauge& committed_round =
      gauges("layerfl_committed_round", "The last committed round").Add({});
  Gauge& rounds_planned =
      gauges("layerfl_rounds_planned", "federated.rounds of the run").Add({});
  Gauge& finished =
      gauges("layerfl_run_finished", "1 once the run is over").Add({});
  Family<Gauge>& phase_family = gauges(
      "layerfl_round_phase",
      "1 for the phase the round is in (not running, scoring, training, ...)");
  Gauge& accuracy = gauges("layerfl_global_accuracy",
                           "Test accuracy of the global model, last "
                           "evaluated round")
                        .Add({});
  Gauge& loss = gauges("layerfl_global_loss",
                       "Test loss of the global model, last evaluated round")
                    .Add({});
  Gauge* epsilon = nullptr;  // private runs only
  Gauge& connected =
      gauges("layerfl_clients_connected", "Clients with a live session")
          .Add({});
  Gauge& polls_waiting =
      gauges("layerfl_polls_waiting",
             "Task long polls held now (a gRPC call each)")
          .Add({});
  Gauge& ever_joined =
      gauges("layerfl_clients_joined", "Clients that ever joined").Add({});
  Gauge& participants = gauges("layerfl_clients_participating",
                               "Participants of the last committed round")
                            .Add({});
  Gauge& contributed = gauges("layerfl_clients_contributed",
                              "Clients whose update the last committed round "
                              "aggregated")
                           .Add({});
  Gauge& objective = gauges("layerfl_solver_objective",
                            "Selection objective of the last committed round")
                         .Add({});
  Gauge& upper_bound = gauges("layerfl_solver_upper_bound",
                              "Solver's upper bound on the objective")
                           .Add({});
  Gauge& gap =
      gauges("layerfl_solver_gap", "Solver's relative optimality gap").Add({});
  Gauge& held = gauges("layerfl_held_update_bytes",
                       "Value bytes of updates waiting in memory for their "
                       "turn")
                    .Add({});
  Gauge& held_peak = gauges("layerfl_held_update_bytes_peak",
                            "Most value bytes that waited in memory at once")
                         .Add({});
  Histogram& round_seconds =
      prometheus::BuildHistogram()
          .Name("layerfl_round_duration_seconds")
          .Help("Committed rounds' duration (the sum of their phases)")
          .Register(*registry)
          .Add({}, SecondsBuckets());
  Family<Histogram>& phase_seconds =
      prometheus::BuildHistogram()
          .Name("layerfl_phase_duration_seconds")
          .Help(
              "Committed rounds' phases (score, train, aggregate, eval, "
              "checkpoint, ...)")
          .Register(*registry);
  // Asynchronous rounds: how many commits old each folded update was.
  Histogram& staleness =
      prometheus::BuildHistogram()
          .Name("layerfl_update_staleness")
          .Help(
              "Asynchronous rounds: commits between the version an update "
              "was trained from and the one it was folded into")
          .Register(*registry)
          .Add({}, Histogram::BucketBoundaries{0, 1, 2, 3, 5, 8, 13, 20, 50});
  Histogram& solve_seconds =
      prometheus::BuildHistogram()
          .Name("layerfl_solver_duration_seconds")
          .Help("Layer selection's solver time per committed round")
          .Register(*registry)
          .Add({}, Histogram::BucketBoundaries{0.001, 0.005, 0.01, 0.05, 0.1,
                                               0.25, 0.5, 1, 2.5, 5});

  // The live view into the gauges and totals. Returns it for the caller.
  LiveState Refresh() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    LiveState s = live();
    const ServiceStats& st = s.service;
    committed_round.Set(static_cast<double>(s.committed_round));
    round.Set(
        static_cast<double>(s.committed_round + (s.round_running ? 1 : 0)));
    rounds_planned.Set(static_cast<double>(options.rounds));
    finished.Set(s.finished ? 1 : 0);
    if (!phases.count(s.phase)) {
      phases[s.phase] = &phase_family.Add({{"phase", s.phase}});
    }
    for (auto& [name, g] : phases) g->Set(name == s.phase ? 1 : 0);
    if (epsilon != nullptr) epsilon->Set(s.epsilon);
    connected.Set(static_cast<double>(st.clients.size()));
    ever_joined.Set(static_cast<double>(st.ever_joined));
    polls_waiting.Set(static_cast<double>(st.polls_waiting));
    held.Set(static_cast<double>(st.held_bytes));
    held_peak.Set(static_cast<double>(st.peak_held_bytes));
    down_wire.Set(static_cast<double>(st.down_wire_bytes));
    down_payload.Set(static_cast<double>(st.down_payload_bytes));
    up_wire.Set(static_cast<double>(st.up_wire_bytes));
    up_payload.Set(static_cast<double>(st.up_payload_bytes));
    timed_out.Set(static_cast<double>(st.timed_out));
    spilled.Set(static_cast<double>(st.spilled));
    const auto totals = [](Family<Counter>& family,
                           std::map<std::string, TotalCounter>& by,
                           const std::map<std::string, int64_t>& now,
                           const char* label) {
      for (const auto& [reason, n] : now) {
        auto it = by.find(reason);
        if (it == by.end()) {
          it = by.emplace(reason, TotalCounter(&family.Add({{label, reason}})))
                   .first;
        }
        it->second.Set(static_cast<double>(n));
      }
    };
    totals(refusal_family, refusals, st.refused, "reason");
    totals(leave_family, leaves, st.leave_reasons, "reason");
    return s;
  }
};

RunMonitor::RunMonitor(RunMonitorOptions options,
                       std::function<LiveState()> live)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->live = std::move(live);
  if (impl_->options.private_run) {
    impl_->epsilon = &impl_
                          ->gauges("layerfl_privacy_epsilon",
                                   "Differential privacy: epsilon spent so "
                                   "far at the run's delta")
                          .Add({});
  }
}

RunMonitor::~RunMonitor() = default;

void RunMonitor::RecordRound(const RoundRecord& r) {
  Impl& m = *impl_;
  absl::MutexLock lock(&m.mu);
  m.committed.Increment();
  if (r.attempt > 0) m.abandoned.Increment(r.attempt);
  RoundSummary s;
  s.round = r.round;
  s.attempt = r.attempt;
  s.evaluated = r.evaluated;
  s.accuracy = r.eval.accuracy;
  s.loss = r.eval.loss;
  s.epsilon = r.epsilon;
  s.layer_counts.assign(m.options.layers.size(), 0);
  for (const ClientRoundRecord& c : r.clients) {
    ++s.participants;
    if (c.contributed) ++s.contributed;
    if (c.staleness >= 0) m.staleness.Observe(static_cast<double>(c.staleness));
    for (const std::string& layer : c.layers) {
      const auto it =
          std::find(m.options.layers.begin(), m.options.layers.end(), layer);
      if (it != m.options.layers.end()) {
        ++s.layer_counts[it - m.options.layers.begin()];
      }
    }
  }
  for (const auto& [phase, ms] : r.phase_ms) {
    s.duration_s += ms / 1000.0;
    m.phase_seconds.Add({{"phase", phase}}, SecondsBuckets())
        .Observe(ms / 1000.0);
  }
  m.round_seconds.Observe(s.duration_s);
  m.solve_seconds.Observe(r.solve_ms / 1000.0);
  if (r.evaluated) {
    m.accuracy.Set(r.eval.accuracy);
    m.loss.Set(r.eval.loss);
  }
  m.participants.Set(s.participants);
  m.contributed.Set(s.contributed);
  m.objective.Set(r.objective);
  m.upper_bound.Set(r.upper_bound);
  m.gap.Set(r.gap);
  m.history.push_back(std::move(s));
}

std::string RunMonitor::MetricsText() {
  Impl& m = *impl_;
  absl::MutexLock lock(&m.mu);
  m.Refresh();
  return prometheus::TextSerializer().Serialize(
      WithProcessMetrics(m.registry->Collect()));
}

std::string RunMonitor::StateJson() {
  Impl& m = *impl_;
  absl::MutexLock lock(&m.mu);
  const LiveState s = m.Refresh();
  nlohmann::json j;
  j["run_id"] = m.options.run_id;
  j["rounds"] = m.options.rounds;
  j["strategy"] = m.options.strategy;
  j["budget_unit"] = m.options.budget_unit;
  j["private"] = m.options.private_run;
  j["committed_round"] = s.committed_round;
  j["round"] = s.committed_round + (s.round_running ? 1 : 0);
  j["phase"] = s.phase;
  j["finished"] = s.finished;
  if (m.options.private_run) j["epsilon"] = s.epsilon;
  j["layers"] = m.options.layers;
  nlohmann::json history = nlohmann::json::array();
  for (const RoundSummary& r : m.history) {
    nlohmann::json h = {{"round", r.round},
                        {"attempt", r.attempt},
                        {"participants", r.participants},
                        {"contributed", r.contributed},
                        {"duration_s", r.duration_s},
                        {"layer_counts", r.layer_counts}};
    h["accuracy"] = r.evaluated ? nlohmann::json(r.accuracy) : nullptr;
    h["loss"] = r.evaluated ? nlohmann::json(r.loss) : nullptr;
    if (m.options.private_run) h["epsilon"] = r.epsilon;
    history.push_back(std::move(h));
  }
  j["history"] = std::move(history);
  // The longest silent clients first (those nearest to timing out), at most
  // kStateClients of them: with 10,000 connected, a page refreshed every
  // second cannot list them all. The count is exact.
  std::vector<const ConnectedClient*> listed;
  for (const ConnectedClient& c : s.service.clients) listed.push_back(&c);
  const size_t shown = std::min(listed.size(), kStateClients);
  std::partial_sort(listed.begin(), listed.begin() + shown, listed.end(),
                    [](const ConnectedClient* a, const ConnectedClient* b) {
                      return a->since_contact != b->since_contact
                                 ? a->since_contact > b->since_contact
                                 : a->id < b->id;
                    });
  nlohmann::json clients = nlohmann::json::array();
  for (size_t i = 0; i < shown; ++i) {
    clients.push_back(
        {{"id", listed[i]->id},
         {"budget", listed[i]->budget},
         {"since_contact_s", absl::ToDoubleSeconds(listed[i]->since_contact)}});
  }
  j["clients"] = std::move(clients);
  j["clients_connected"] = s.service.clients.size();
  j["clients_joined"] = s.service.ever_joined;
  j["clients_timed_out"] = s.service.timed_out;
  j["refusals"] = s.service.refused;
  j["leaves"] = s.service.leave_reasons;
  j["bytes"] = {{"down_wire", s.service.down_wire_bytes},
                {"down_payload", s.service.down_payload_bytes},
                {"up_wire", s.service.up_wire_bytes},
                {"up_payload", s.service.up_payload_bytes}};
  return j.dump();
}

std::map<std::string, HttpHandler> RunMonitor::Routes() {
  return {
      {"/",
       [] {
         return HttpResponse{200, "text/html; charset=utf-8", DashboardHtml()};
       }},
      {"/metrics",
       [this] {
         return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                             MetricsText()};
       }},
      {"/api/state",
       [this] {
         return HttpResponse{200, "application/json", StateJson()};
       }},
  };
}

}  // namespace layerfl
