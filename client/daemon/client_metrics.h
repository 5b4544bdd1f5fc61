#ifndef LAYERFL_CLIENT_DAEMON_CLIENT_METRICS_H_
#define LAYERFL_CLIENT_DAEMON_CLIENT_METRICS_H_

// The client daemon's Prometheus metrics (prometheus-cpp's registry, text
// format), fed by the daemon as its DaemonObserver: tasks by kind and
// outcome, local score/train seconds (histograms) and peak training bytes,
// bytes down and up (wire and payload), joins and reconnects, the last
// round worked on. Torch-free; thread-safe (the listener reads while the
// daemon writes).

#include <memory>
#include <string>

#include "client/daemon/daemon.h"

namespace layerfl {

class ClientMetrics : public DaemonObserver {
 public:
  explicit ClientMetrics(const std::string& client_id);
  ~ClientMetrics() override;

  void OnJoin(int joins) override;
  void OnTask(const TaskRecord& record, const WorkCost& cost) override;

  // Every metric in the Prometheus text format (version 0.0.4), labelled
  // client="<id>".
  std::string MetricsText() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace layerfl

#endif  // LAYERFL_CLIENT_DAEMON_CLIENT_METRICS_H_
