#ifndef LAYERFL_SERVER_SELECTION_RNG_H_
#define LAYERFL_SERVER_SELECTION_RNG_H_

// Random numbers that are identical on every platform and standard library.
// std::mt19937_64's output is fixed by the standard, but the
// std::*_distribution classes are not, so every draw here is derived from raw
// 64-bit words by code in this file.
//
// Thread-compatible: one DeterministicRng per thread.

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "common/util/seed.h"  // MixSeed, StableHash

namespace layerfl {

class DeterministicRng {
 public:
  explicit DeterministicRng(uint64_t seed) : engine_(MixSeed(seed)) {}

  uint64_t NextU64() { return engine_(); }
  // Uniform in [0, 1) with 53 random bits.
  double UniformDouble();
  // Uniform integer in [0, n); n must be >= 1. Unbiased (rejection).
  uint64_t UniformBelow(uint64_t n);
  // Uniform integer in [lo, hi]; requires lo <= hi.
  int64_t UniformInt(int64_t lo, int64_t hi);
  // Fisher-Yates shuffle.
  template <typename T>
  void Shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) {
      std::swap(v[i - 1], v[UniformBelow(i)]);
    }
  }

 private:
  std::mt19937_64 engine_;
};

// Standard normal CDF and its inverse (|error| < 1e-15 after refinement).
double NormalCdf(double x);
double NormalQuantile(double p);  // p in (0, 1)

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_RNG_H_
