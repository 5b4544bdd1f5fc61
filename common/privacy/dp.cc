#include "common/privacy/dp.h"

#include <cmath>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace layerfl {

double UpdateNorm(const std::vector<LayerDelta>& update) {
  double sq = 0;
  for (const LayerDelta& d : update) {
    for (const Tensor32& t : d.tensors) {
      for (float v : t.values) sq += static_cast<double>(v) * v;
    }
  }
  return std::sqrt(sq);
}

double ClipUpdate(std::vector<LayerDelta>& update, double clip_norm) {
  const double norm = UpdateNorm(update);
  if (norm > clip_norm) {
    const float scale = static_cast<float>(clip_norm / norm);
    for (LayerDelta& d : update) {
      for (Tensor32& t : d.tensors) {
        for (float& v : t.values) v *= scale;
      }
    }
  }
  return norm;
}

void AddNoise(LayerDelta& delta, double stddev, GaussianSource& source) {
  for (Tensor32& t : delta.tensors) {
    for (float& v : t.values) {
      v = static_cast<float>(v + stddev * source.Next());
    }
  }
}

void AddNoise(std::vector<LayerDelta>& update, double stddev,
              GaussianSource& source) {
  for (LayerDelta& d : update) AddNoise(d, stddev, source);
}

std::vector<double> PrivatizeScores(const std::vector<double>& scores,
                                    double clip, double noise_multiplier,
                                    GaussianSource& source) {
  std::vector<double> out(scores.size(), 0.0);
  double sum = 0;
  for (size_t l = 0; l < scores.size(); ++l) {
    if (std::isfinite(scores[l]) && scores[l] > 0) out[l] = scores[l];
    sum += out[l];
  }
  double sq = 0;
  for (double& v : out) {
    if (sum > 0) v /= sum;
    sq += v * v;
  }
  const double norm = std::sqrt(sq);
  const double scale = norm > clip ? clip / norm : 1.0;
  for (double& v : out) {
    v = v * scale + noise_multiplier * clip * source.Next();
    if (v < 0) v = 0;
  }
  return out;
}

double NextClipNorm(double clip, double unclipped_fraction, double quantile,
                    double lr) {
  return clip * std::exp(-lr * (unclipped_fraction - quantile));
}

absl::StatusOr<double> UpdateNoiseMultiplier(double z, double count_std) {
  const double count_z = 2 * count_std;
  if (!(count_z > z)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the clip count's noise std (", count_std,
        ") must exceed noise_multiplier / 2 (", z / 2,
        "), or counting unclipped updates spends the whole budget"));
  }
  return 1.0 / std::sqrt(1.0 / (z * z) - 1.0 / (count_z * count_z));
}

double JointNoiseMultiplier(std::initializer_list<double> multipliers) {
  double inv = 0;
  for (double z : multipliers) inv += 1.0 / (z * z);
  return 1.0 / std::sqrt(inv);
}

}  // namespace layerfl
