#ifndef LAYERFL_COMMON_PRIVACY_DP_H_
#define LAYERFL_COMMON_PRIVACY_DP_H_

// The mechanisms of user-level DP-FedAvg (McMahan et al. 2018) over LayerFL's
// sparse per-layer updates, as plain functions shared by the coordinator (the
// central mode: clip each update, noise each layer's sum) and the clients
// (the privatised importance scores; the local mode's share of the noise):
//
//  - a client's whole update (every layer it trained) is clipped to L2 norm
//    C, so adding or removing one client moves the vector of all layer sums
//    by at most C;
//  - Gaussian noise of std z * C on every value of every layer sum that has
//    contributors makes the round a Gaussian mechanism with multiplier z;
//  - the scores: normalised to sum 1, clipped to L2 norm C_s, noised with std
//    z_s * C_s per layer and clamped at 0, so selection is post-processing.
//
// Adaptive clipping follows Andrew et al. 2021 ("Differentially Private
// Learning with Adaptive Clipping"): C moves geometrically toward the
// `quantile` of the update norms, from a noised count of unclipped updates.
//
// Torch-free and stateless.

#include <initializer_list>
#include <vector>

#include "absl/status/statusor.h"
#include "common/privacy/noise.h"
#include "common/weights/weights.h"

namespace layerfl {

// The L2 norm over every value of every tensor of `update`.
double UpdateNorm(const std::vector<LayerDelta>& update);

// Scales `update` so that its norm is at most `clip_norm` (> 0); returns the
// norm it had.
double ClipUpdate(std::vector<LayerDelta>& update, double clip_norm);

// Adds independent N(0, stddev^2) to every value of `delta` / `update`.
void AddNoise(LayerDelta& delta, double stddev, GaussianSource& source);
void AddNoise(std::vector<LayerDelta>& update, double stddev,
              GaussianSource& source);

// The privatised score vector described above. Non-finite or negative inputs
// count as 0; a vector of zeros stays zeros before the noise.
std::vector<double> PrivatizeScores(const std::vector<double>& scores,
                                    double clip, double noise_multiplier,
                                    GaussianSource& source);

// The next clip norm: clip * exp(-lr * (unclipped_fraction - quantile)).
double NextClipNorm(double clip, double unclipped_fraction, double quantile,
                    double lr);

// The noise multiplier left for the updates when the round's count of
// unclipped updates (bits b - 1/2, sensitivity 1/2) is noised with std
// `count_std`, so that the two together are one Gaussian mechanism of
// multiplier z: (z^-2 - (2 count_std)^-2)^(-1/2). InvalidArgument when
// 2 * count_std <= z (the count alone would spend the whole budget).
absl::StatusOr<double> UpdateNoiseMultiplier(double z, double count_std);

// Gaussian releases with multipliers z_k on the same sample are together one
// Gaussian mechanism with multiplier (sum_k z_k^-2)^(-1/2).
double JointNoiseMultiplier(std::initializer_list<double> multipliers);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_PRIVACY_DP_H_
