#ifndef LAYERFL_COMMON_DATA_RNG_H_
#define LAYERFL_COMMON_DATA_RNG_H_

#include <cstdint>
#include <random>
#include <vector>

#include "common/util/seed.h"

namespace layerfl {

// Sampling helpers over std::mt19937_64 whose outputs are fully specified here
// (unlike std::*_distribution), so a seed gives the same result with every
// standard library. Only the engine's raw 64-bit outputs are used.

// MixSeed (seed derivation) comes from common/util/seed.h.

// Uniform integer in [0, n); n must be >= 1. Unbiased (rejection sampling).
uint64_t UniformInt(std::mt19937_64& rng, uint64_t n);

// Uniform double in the open interval (0, 1), 53-bit resolution.
double UniformOpen01(std::mt19937_64& rng);

// Standard normal sample (Box-Muller; one output per call).
double StandardNormal(std::mt19937_64& rng);

// log of a Gamma(shape, 1) sample; shape must be > 0. Marsaglia-Tsang, with
// the shape < 1 boost Gamma(a) = Gamma(a + 1) * U^(1/a) done in log space so
// tiny shapes do not underflow to zero.
double LogGamma(std::mt19937_64& rng, double shape);

// Fisher-Yates shuffle in place (last position first).
template <typename T>
void Shuffle(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(UniformInt(rng, i));
    std::swap(v[i - 1], v[j]);
  }
}

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_RNG_H_
