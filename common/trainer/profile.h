#ifndef LAYERFL_COMMON_TRAINER_PROFILE_H_
#define LAYERFL_COMMON_TRAINER_PROFILE_H_

// Measures what training costs on this machine, per layer group, in the form
// of the depth-aware cost model (common/layers/profile.h).
//
// Method: whole SelectiveTrainer::Train calls (so every copy, gradient and
// optimizer state a real round allocates is counted) of `steps` steps at the
// run's batch size with lr = 0 (the weights do not move), for the empty set,
// every trainable group alone and every suffix of the trainable groups
// (group l and all trainable groups above it). With single(l) = F + w_l +
// D(l) and suffix(l) = F + sum_{k >= l} w_k + D(l), the differences give
// every w_l and depth part a_l = D(l) - D(next trainable group); the lowest
// trainable group's two parts are paid together and are booked as w. Times
// are medians over `reps` calls divided by `steps` (so per-call overhead is
// spread over the steps: conservative for longer rounds); bytes are peaks.
// Frozen groups get w = a = 0: the backward through them is booked on the
// trainable group below. Negative differences (timing noise) become 0. The
// scoring pass is timed whole (scoring_s) and from each group upward
// (scoring_from_s), medians over `reps` calls.
//
// Not thread-safe: uses and restores `model`'s training state.

#include <string>

#include "absl/status/statusor.h"
#include "common/trainer/trainer.h"
#include "common/config/config.h"
#include "common/layers/profile.h"
#include "common/model/model.h"

namespace layerfl {

struct ProfileOptions {
  int steps = 4;  // steps per measured Train call, >= 1
  int reps = 3;   // measured calls per set (after one warm-up), >= 1
};

absl::StatusOr<TrainingProfile> ProfileTraining(
    Model& model, const Examples& data, const TrainConfig& train,
    const ImportanceConfig& importance, const ProfileOptions& options = {});

// Measures the scoring part of `p` (scoring_s, scoring_bytes,
// scoring_from_s) with `trainer`'s importance config; the rest of `p` is
// left as it is. `trainer` should train with lr 0.
absl::Status MeasureScoring(const SelectiveTrainer& trainer, Model& model,
                            const Examples& data, const ProfileOptions& options,
                            TrainingProfile& p);

// The profile for this machine (host name and CPU model), model (groups and
// their parameter counts), batch size, thread count, optimizer, scoring
// batches and metric (importance.metric: the scoring pass's memory depends
// on it), read from `cache_dir`/profile-<hash>.txt, or measured and written
// there (temp file + rename) when missing or unreadable; a cached profile
// without scoring_from_s gets it measured and added, its other fields kept.
// The training part (every field but the scoring pass's) is also cached
// without the scoring batches and metric (`cache_dir`/training-<hash>.txt):
// a profile for another scoring configuration takes its training costs from
// there and measures only its scoring pass, so that every strategy of a run
// prices training alike. An empty cache_dir measures without caching.
absl::StatusOr<TrainingProfile> CachedTrainingProfile(
    const std::string& cache_dir, Model& model, const Examples& data,
    const TrainConfig& train, const ImportanceConfig& importance, int threads,
    const ProfileOptions& options = {});

}  // namespace layerfl

#endif  // LAYERFL_COMMON_TRAINER_PROFILE_H_
