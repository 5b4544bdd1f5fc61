#ifndef LAYERFL_COMMON_WORKER_WORKER_H_
#define LAYERFL_COMMON_WORKER_WORKER_H_

// One client's work on its private data, shared by the client daemon and the
// simulator's virtual clients so that both compute exactly the same thing:
// importance scores at the global model, and a sparse update (w_local -
// w_global of the assigned layers). Random streams depend only on
// (run seed, client id, round, task), never on the order clients run in.
//
// Not thread-safe. Workers may share one model replica (the simulator's
// virtual clients do, one at a time): every task binds the model to the
// global weights it is given first (BindWeights: the model reads them in
// place instead of holding a copy), and after the task the model keeps
// reading them (its trained groups excepted), so the caller keeps them
// alive and unchanged until it next uses the model itself, or gives it
// values of its own first (ImportWeights).

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/trainer/profile.h"
#include "common/trainer/trainer.h"
#include "common/config/config.h"
#include "common/model/model.h"
#include "common/privacy/noise.h"
#include "common/weights/weights.h"

namespace layerfl {

class LocalWorker {
 public:
  // `model` is the replica the worker trains (its weights on entry do not
  // matter: every task starts from the global weights it is given).
  LocalWorker(const RunConfig& config, std::string client_id,
              std::shared_ptr<Model> model, Examples data);

  const std::string& id() const { return id_; }
  int64_t num_samples() const { return data_.size(); }
  const Model& model() const { return *model_; }

  // Per-layer scores of `metric` ("sq_grad_norm", "rgn" or "snr") at `global`,
  // of the groups from `score_from` upward (below it 0; the backward pass
  // stops there: see Task::score_from). With privacy.dp on they are
  // privatised before they are returned (normalised, clipped to
  // privacy.dp.score_clip, Gaussian noise; see common/privacy/dp.h).
  absl::StatusOr<std::vector<double>> Score(const ModelWeights& global,
                                            int64_t round,
                                            const std::string& metric,
                                            int score_from = 0);

  // Trains `layers` from `global`; returns their deltas, in model order,
  // each with its first step's score (LayerDelta::score, in the run's
  // metric) when importance.source is train.
  // With privacy.dp in local mode the update is clipped to
  // privacy.dp.clip_norm and each layer gets noise of std
  // noise_multiplier * clip_norm / sqrt(n), n its entry of
  // `layer_participants` (the round's participants given that layer, taken
  // in [1, clients_per_round]; empty or 0 = 1).
  absl::StatusOr<std::vector<LayerDelta>> Train(
      const ModelWeights& global, int64_t round,
      const std::vector<std::string>& layers,
      const std::vector<int>& layer_participants);

  // What the last Score / Train call cost on this machine.
  const ResourceUsage& last_score_usage() const { return score_usage_; }
  const ResourceUsage& last_train_usage() const { return train_usage_; }

  // This machine's training profile for the run (profile.* of the config),
  // cached in profile.cache_dir; measured on this worker's data, before the
  // first task (FailedPrecondition after it).
  absl::StatusOr<TrainingProfile> Profile();

 private:
  uint64_t TaskSeed(int64_t round, int task) const;
  // The key of this client's privacy noise of kind `what` in `round`.
  NoiseKey PrivacyKey(const char* what, int64_t round) const;

  uint64_t seed_;
  std::string id_;
  std::shared_ptr<Model> model_;
  Examples data_;
  SelectiveTrainer trainer_;
  RunConfig config_;
  ResourceUsage score_usage_, train_usage_;
  bool bound_ = false;  // a task bound the model to its global weights
};

}  // namespace layerfl

#endif  // LAYERFL_COMMON_WORKER_WORKER_H_
