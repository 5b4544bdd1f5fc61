#include "client/daemon/client_metrics.h"

#include <map>

#include "absl/synchronization/mutex.h"
#include "common/metrics/process_metrics.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace layerfl {
namespace {

const char* KindName(ClientTaskKind kind) {
  switch (kind) {
    case ClientTaskKind::kScore:
      return "score";
    case ClientTaskKind::kTrain:
      return "train";
    case ClientTaskKind::kAdvertise:
      return "advertise";
    case ClientTaskKind::kShareKeys:
      return "share_keys";
    case ClientTaskKind::kUnmask:
      return "unmask";
    case ClientTaskKind::kWait:
      return "wait";
    case ClientTaskKind::kFinished:
      return "finished";
  }
  return "other";
}

}  // namespace

struct ClientMetrics::Impl {
  explicit Impl(const std::string& id)
      : registry(std::make_shared<prometheus::Registry>()),
        tasks(prometheus::BuildCounter()
                  .Name("layerfl_client_tasks_total")
                  .Help("Tasks worked on, by kind and outcome")
                  .Labels({{"client", id}})
                  .Register(*registry)),
        work_seconds(prometheus::BuildHistogram()
                         .Name("layerfl_client_work_seconds")
                         .Help("Local work per task (kind: score or train)")
                         .Labels({{"client", id}})
                         .Register(*registry)),
        bytes_down(prometheus::BuildCounter()
                       .Name("layerfl_client_bytes_down_total")
                       .Help("Model bytes fetched (kind: wire or payload)")
                       .Labels({{"client", id}})
                       .Register(*registry)),
        bytes_up(prometheus::BuildCounter()
                     .Name("layerfl_client_bytes_up_total")
                     .Help("Update bytes uploaded (kind: wire or payload)")
                     .Labels({{"client", id}})
                     .Register(*registry)),
        joins(prometheus::BuildCounter()
                  .Name("layerfl_client_joins_total")
                  .Help("Joins (the first and every rejoin)")
                  .Labels({{"client", id}})
                  .Register(*registry)
                  .Add({})),
        reconnects(prometheus::BuildCounter()
                       .Name("layerfl_client_reconnects_total")
                       .Help("Rejoins after the first join")
                       .Labels({{"client", id}})
                       .Register(*registry)
                       .Add({})),
        last_round(prometheus::BuildGauge()
                       .Name("layerfl_client_last_round")
                       .Help("The round of the last task worked on")
                       .Labels({{"client", id}})
                       .Register(*registry)
                       .Add({})),
        layers_resumed(prometheus::BuildCounter()
                           .Name("layerfl_client_layers_resumed_total")
                           .Help("Layers a download did not fetch because "
                                 "an earlier one that broke off (or the "
                                 "layer cache) held them")
                           .Labels({{"client", id}})
                           .Register(*registry)
                           .Add({})),
        peak_bytes(prometheus::BuildGauge()
                       .Name("layerfl_client_peak_train_bytes")
                       .Help("Peak training memory of the last local training")
                       .Labels({{"client", id}})
                       .Register(*registry)
                       .Add({})) {}

  std::shared_ptr<prometheus::Registry> registry;
  prometheus::Family<prometheus::Counter>& tasks;
  prometheus::Family<prometheus::Histogram>& work_seconds;
  prometheus::Family<prometheus::Counter>& bytes_down;
  prometheus::Family<prometheus::Counter>& bytes_up;
  prometheus::Counter& joins;
  prometheus::Counter& reconnects;
  prometheus::Gauge& last_round;
  prometheus::Counter& layers_resumed;
  prometheus::Gauge& peak_bytes;
};

ClientMetrics::ClientMetrics(const std::string& client_id)
    : impl_(std::make_unique<Impl>(client_id)) {}

ClientMetrics::~ClientMetrics() = default;

void ClientMetrics::OnJoin(int joins) {
  impl_->joins.Increment();
  if (joins > 1) impl_->reconnects.Increment();
}

void ClientMetrics::OnTask(const TaskRecord& record, const WorkCost& cost) {
  Impl& m = *impl_;
  const std::string kind = KindName(record.kind);
  m.tasks.Add({{"kind", kind}, {"outcome", record.outcome}}).Increment();
  m.last_round.Set(static_cast<double>(record.round));
  if (record.kind == ClientTaskKind::kScore ||
      record.kind == ClientTaskKind::kTrain) {
    m.work_seconds
        .Add({{"kind", kind}},
             prometheus::Histogram::BucketBoundaries{
                 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300})
        .Observe(cost.seconds);
  }
  if (record.kind == ClientTaskKind::kTrain && cost.peak_bytes > 0) {
    m.peak_bytes.Set(static_cast<double>(cost.peak_bytes));
  }
  m.bytes_down.Add({{"kind", "wire"}})
      .Increment(static_cast<double>(record.download.wire_bytes));
  m.bytes_down.Add({{"kind", "payload"}})
      .Increment(static_cast<double>(record.download.payload_bytes));
  m.layers_resumed.Increment(
      static_cast<double>(record.download.resumed_layers));
  m.bytes_up.Add({{"kind", "wire"}})
      .Increment(static_cast<double>(record.upload.wire_bytes));
  m.bytes_up.Add({{"kind", "payload"}})
      .Increment(static_cast<double>(record.upload.payload_bytes));
}

std::string ClientMetrics::MetricsText() const {
  return prometheus::TextSerializer().Serialize(
      WithProcessMetrics(impl_->registry->Collect()));
}

}  // namespace layerfl
