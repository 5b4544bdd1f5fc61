#include "common/data/rng.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

namespace layerfl {

uint64_t UniformInt(std::mt19937_64& rng, uint64_t n) {
  // Largest multiple of n that fits: values at or above it are rejected.
  const uint64_t limit = std::numeric_limits<uint64_t>::max() -
                         std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return x % n;
}

double UniformOpen01(std::mt19937_64& rng) {
  return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53;
}

double StandardNormal(std::mt19937_64& rng) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  double u1 = UniformOpen01(rng);
  double u2 = UniformOpen01(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

double LogGamma(std::mt19937_64& rng, double shape) {
  double boost = 0.0;
  if (shape < 1.0) {
    boost = std::log(UniformOpen01(rng)) / shape;
    shape += 1.0;
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    double x = StandardNormal(rng);
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    double u = UniformOpen01(rng);
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) {
      return std::log(d * v) + boost;
    }
  }
}

}  // namespace layerfl
