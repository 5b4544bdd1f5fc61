#ifndef LAYERFL_COMMON_LAYERS_PROFILE_H_
#define LAYERFL_COMMON_LAYERS_PROFILE_H_

// What training costs on one machine, per layer group, as the trainer
// measured it (common/trainer/profile.h) in the form of the depth-aware cost
// model (server/selection/cost_model.h): a step that trains the set S of
// groups takes
//   step_fixed_s + sum_{l in S} step_per_group_s[l]
//                + sum_{l >= min(S)} step_depth_s[l]   seconds
// and peaks at the same expression over the *_bytes fields. The client
// reports it at Join; the coordinator turns it into that client's costs.
// Torch-free plain data.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace layerfl {

struct TrainingProfile {
  // What was profiled: the groups in model order and the batch size.
  std::vector<std::string> groups;
  int batch_size = 0;
  int threads = 0;
  std::string machine;  // host and CPU, informative

  double step_fixed_s = 0;               // forward + loss of one step
  std::vector<double> step_per_group_s;  // weight gradients + optimizer
  std::vector<double> step_depth_s;      // backward through the group
  double scoring_s = 0;  // one whole scoring pass (importance.batches)

  int64_t fixed_bytes = 0;               // weights + forward working set
  std::vector<int64_t> per_group_bytes;  // gradients + optimizer state
  std::vector<int64_t> depth_bytes;      // activations kept for backward
  // Peak of a scoring pass that scores the trainable groups from l upward
  // (and back-propagates no lower), per group l; a frozen l scores from the
  // next trainable group. Entry 0 is the whole pass. Empty = not measured
  // (the scoring pass is then not limited).
  std::vector<int64_t> scoring_bytes;
  // Seconds of a scoring pass from group l upward (as scoring_bytes), per
  // group l; entry 0 is the whole pass (scoring_s is what prices it). Empty
  // = not measured (every pass is then priced as the whole one).
  std::vector<double> scoring_from_s;

  // InvalidArgument naming the field ("profile.step_depth_s[2]: must be
  // finite and >= 0, got -1") when a vector does not have one entry per
  // group, a value is negative or not finite, or batch_size < 1.
  absl::Status Validate() const;

  // A one-line text form (key=value fields, lists comma-separated) for the
  // per-machine cache file; Parse reads it back exactly (doubles round-trip).
  std::string Serialize() const;
  static absl::StatusOr<TrainingProfile> Parse(const std::string& text);
};

// The lowest group a client whose memory holds `limit_bytes` can score from:
// the smallest l with profile.scoring_bytes[l] <= limit_bytes, or the number
// of groups when none fits (it then scores nothing). limit_bytes <= 0, or a
// profile without scoring_bytes, means no limit (0).
int LowestScorableGroup(const TrainingProfile& profile, int64_t limit_bytes);

// Seconds of a scoring pass from group `from` upward on the profiled
// machine: scoring_s for from = 0 or a profile without scoring_from_s,
// scoring_from_s[from] otherwise, 0 for from >= the number of groups (the
// pass scores nothing).
double ScoringSeconds(const TrainingProfile& profile, int from);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_LAYERS_PROFILE_H_
