#include "client/worker/worker.h"

#include "common/model/weights_bridge.h"
#include "common/util/seed.h"
#include "common/util/status_macros.h"

namespace layerfl {

LocalWorker::LocalWorker(const RunConfig& config, std::string client_id,
                         std::shared_ptr<Model> model, Examples data)
    : seed_(config.seed),
      id_(std::move(client_id)),
      model_(std::move(model)),
      data_(std::move(data)),
      trainer_(config.train, config.importance),
      config_(config) {}

uint64_t LocalWorker::TaskSeed(int64_t round, int task) const {
  return MixSeed(seed_ ^ MixSeed(StableHash(id_) + round * 2 + task));
}

absl::StatusOr<std::vector<double>> LocalWorker::Score(
    const ModelWeights& global, int64_t round, const std::string& metric) {
  RETURN_IF_ERROR(ImportWeights(*model_, global));
  ASSIGN_OR_RETURN(std::vector<LayerScores> scores,
                   trainer_.Importance(*model_, data_, TaskSeed(round, 0),
                                       &score_usage_));
  return ReportedScores(scores, metric);
}

absl::StatusOr<std::vector<LayerDelta>> LocalWorker::Train(
    const ModelWeights& global, int64_t round,
    const std::vector<std::string>& layers) {
  RETURN_IF_ERROR(ImportWeights(*model_, global));
  ASSIGN_OR_RETURN(TrainResult r,
                   trainer_.Train(*model_, data_, layers, TaskSeed(round, 1)));
  train_usage_ = r.usage;
  std::vector<LayerDelta> update;
  for (const GroupDelta& d : r.deltas) {
    LayerDelta delta;
    delta.group = d.group;
    for (const auto& [name, t] : d.tensors) {
      delta.tensors.push_back(ToTensor32(name, t));
    }
    update.push_back(std::move(delta));
  }
  return update;
}

absl::StatusOr<TrainingProfile> LocalWorker::Profile() {
  ProfileOptions options;
  options.steps = config_.profile.steps;
  options.reps = config_.profile.reps;
  return CachedTrainingProfile(config_.profile.cache_dir, *model_, data_,
                               config_.train, config_.importance,
                               config_.threads, options);
}

}  // namespace layerfl
