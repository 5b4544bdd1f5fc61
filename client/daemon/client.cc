#include "client/daemon/client.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/trainer/examples.h"
#include "client/trainer/trainer.h"
#include "client/worker/worker.h"
#include "common/data/federated_data.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

class WorkerWork : public ClientWork {
 public:
  explicit WorkerWork(std::unique_ptr<LocalWorker> worker)
      : worker_(std::move(worker)) {}
  int64_t num_samples() const override { return worker_->num_samples(); }
  absl::StatusOr<std::vector<double>> Score(const ModelWeights& global,
                                            int64_t round,
                                            const std::string& metric) override {
    return worker_->Score(global, round, metric);
  }
  absl::StatusOr<std::vector<LayerDelta>> Train(
      const ModelWeights& global, int64_t round,
      const std::vector<std::string>& layers) override {
    return worker_->Train(global, round, layers);
  }

 private:
  std::unique_ptr<LocalWorker> worker_;
};

}  // namespace

absl::Status RunClient(const RunConfig& c, const ClientOptions& options,
                       const std::atomic<bool>* stop) {
  if (options.partition < 0 || options.partition >= c.data.num_clients) {
    return absl::InvalidArgumentError(absl::StrCat(
        "partition: must be in [0, data.num_clients = ", c.data.num_clients,
        "), got ", options.partition));
  }
  if (c.model.kind != "vit") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.kind: the client runs image tasks (vit), got '", c.model.kind, "'"));
  }
  if (options.link.target.empty()) {
    return absl::InvalidArgumentError("coordinator: an address is required");
  }
  DaemonOptions daemon = options.daemon;
  if (daemon.client_id.empty()) {
    daemon.client_id = absl::StrFormat("client-%03d", options.partition);
  }
  SetTorchThreads(c.threads);
  ASSIGN_OR_RETURN(FederatedImages images, BuildFederatedImages(c));
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, CreateModel(c.model, c.seed));
  WorkerWork work(std::make_unique<LocalWorker>(
      c, daemon.client_id, std::move(model),
      ImagesToExamples(images.clients[options.partition])));
  images = FederatedImages();
  std::unique_ptr<CoordinatorLink> link = CreateGrpcLink(options.link);
  absl::StatusOr<DaemonResult> result = RunClientDaemon(daemon, work, *link, stop);
  return result.status();
}

}  // namespace layerfl
