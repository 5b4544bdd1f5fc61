#include "common/worker/worker.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/model/weights_bridge.h"
#include "common/privacy/dp.h"
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
    const ModelWeights& global, int64_t round, const std::string& metric,
    int score_from) {
  RETURN_IF_ERROR(BindWeights(*model_, global));
  bound_ = true;
  ASSIGN_OR_RETURN(std::vector<LayerScores> scores,
                   trainer_.Importance(*model_, data_, TaskSeed(round, 0),
                                       &score_usage_, score_from, metric));
  std::vector<double> reported = ReportedScores(scores, metric);
  const DpConfig& dp = config_.privacy.dp;
  if (dp.enabled) {
    GaussianSource noise(PrivacyKey("scores", round));
    reported = PrivatizeScores(reported, dp.score_clip,
                               dp.score_noise_multiplier, noise);
  }
  return reported;
}

NoiseKey LocalWorker::PrivacyKey(const char* what, int64_t round) const {
  const uint64_t seed = config_.privacy.dp.noise_seed;
  if (seed == 0) return RandomNoiseKey();
  return DerivedNoiseKey(seed, absl::StrCat(what, "|", id_, "|", round));
}

absl::StatusOr<std::vector<LayerDelta>> LocalWorker::Train(
    const ModelWeights& global, int64_t round,
    const std::vector<std::string>& layers,
    const std::vector<int>& layer_participants) {
  RETURN_IF_ERROR(BindWeights(*model_, global));
  bound_ = true;
  ASSIGN_OR_RETURN(TrainResult r,
                   trainer_.Train(*model_, data_, layers, TaskSeed(round, 1)));
  train_usage_ = r.usage;
  std::vector<LayerDelta> update;
  const bool free_scores = config_.importance.source == "train";
  const std::string metric = config_.selection.strategy == "rgn"
                                 ? "rgn"
                                 : config_.importance.metric;
  for (size_t k = 0; k < r.deltas.size(); ++k) {
    GroupDelta& d = r.deltas[k];
    LayerDelta delta;
    delta.group = d.group;
    if (free_scores && k < r.first_step_scores.size()) {
      delta.score = ReportedScores({r.first_step_scores[k]}, metric)[0];
    }
    for (auto& [name, t] : d.tensors) {
      delta.tensors.push_back(ToTensor32(name, t));
      t = at::Tensor();  // one copy of each delta at a time
    }
    update.push_back(std::move(delta));
  }
  const DpConfig& dp = config_.privacy.dp;
  if (dp.enabled && dp.mode == "local") {
    // A coordinator cannot shrink the noise by claiming more participants
    // than a round has.
    const int max_n = MaxClientsPerRound(config_);
    ClipUpdate(update, dp.clip_norm);
    GaussianSource noise(PrivacyKey("update", round));
    for (size_t k = 0; k < update.size(); ++k) {
      int n = 1;
      for (size_t j = 0; j < layers.size() && j < layer_participants.size();
           ++j) {
        if (layers[j] == update[k].group) n = layer_participants[j];
      }
      n = std::clamp(n, 1, std::max(1, max_n));
      AddNoise(update[k], dp.noise_multiplier * dp.clip_norm / std::sqrt(n),
               noise);
    }
  }
  return update;
}

absl::StatusOr<TrainingProfile> LocalWorker::Profile() {
  if (bound_) {
    // The model reads the last task's global weights, which may be gone.
    return absl::FailedPreconditionError(
        "profile: measured before the first task only");
  }
  ProfileOptions options;
  options.steps = config_.profile.steps;
  options.reps = config_.profile.reps;
  // The scoring pass is measured with the metric the run scores with
  // (ScoreMetricFor in server/round/selector.h: the rgn and snr strategies
  // rank by their own).
  ImportanceConfig importance = config_.importance;
  if (config_.selection.strategy == "rgn" ||
      config_.selection.strategy == "snr") {
    importance.metric = config_.selection.strategy;
  }
  return CachedTrainingProfile(config_.profile.cache_dir, *model_, data_,
                               config_.train, importance,
                               config_.threads, options);
}

}  // namespace layerfl
