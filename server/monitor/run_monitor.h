#ifndef LAYERFL_SERVER_MONITOR_RUN_MONITOR_H_
#define LAYERFL_SERVER_MONITOR_RUN_MONITOR_H_

// What an operator watches of a coordinator's run: Prometheus metrics
// (prometheus-cpp's registry, served in the text exposition format) and the
// dashboard's state (JSON), built from the committed rounds (RecordRound)
// and from a live view of the engine and the service taken at each request.
// Routes() serves them on common/http's listener: "/" the dashboard page
// (self-contained: no CDN), "/metrics", "/api/state". Torch-free;
// thread-safe.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/http/http_listener.h"
#include "server/round/round_engine.h"
#include "server/service/service.h"

namespace layerfl {

// The run as it is now, taken at each request.
struct LiveState {
  int64_t committed_round = 0;
  bool round_running = false;
  std::string phase = "not running";
  bool finished = false;
  double epsilon = 0;  // spent so far (private runs)
  ServiceStats service;
};

struct RunMonitorOptions {
  std::string run_id;
  int64_t rounds = 0;               // the run's federated.rounds
  std::vector<std::string> layers;  // the model's groups, input to output
  std::string strategy;
  std::string budget_unit;
  bool private_run = false;  // privacy.dp on: epsilon is exported
};

class RunMonitor {
 public:
  // `live` is called on the listener's threads; it must be thread-safe.
  RunMonitor(RunMonitorOptions options, std::function<LiveState()> live);
  ~RunMonitor();

  // A committed round (the service's on_round).
  void RecordRound(const RoundRecord& record);

  // Every metric in the Prometheus text format (version 0.0.4).
  std::string MetricsText();
  // The dashboard's state: run, round and phase, per-round history
  // (accuracy, loss, epsilon, per-layer selection counts), the connected
  // clients' count and the 100 longest silent with budgets and last
  // contact, refusals and leaves by reason.
  std::string StateJson();

  std::map<std::string, HttpHandler> Routes();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The dashboard page (server/monitor/dashboard.html, embedded at build).
const std::string& DashboardHtml();

}  // namespace layerfl

#endif  // LAYERFL_SERVER_MONITOR_RUN_MONITOR_H_
