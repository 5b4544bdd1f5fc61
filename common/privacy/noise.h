#ifndef LAYERFL_COMMON_PRIVACY_NOISE_H_
#define LAYERFL_COMMON_PRIVACY_NOISE_H_

// Gaussian noise for differential privacy, drawn from libsodium: the bits are
// the keystream of ChaCha20 (IETF) under a 32-byte key, turned into standard
// normals by the Box-Muller transform on 53-bit uniforms. The key comes from
// the operating system (randombytes_buf) in production, or is derived with
// BLAKE2b from a configured seed and labels when a run must be reproducible
// (privacy.dp.noise_seed; the simulator and the daemons then draw the same
// noise). No home-made random source.
//
// Not protected: floating-point artefacts of the transform (the low bits of
// a noised value can leak information, Mironov 2012); see the README.
//
// Not thread-safe; one source per thread.

#include <array>
#include <cstdint>
#include "absl/strings/string_view.h"

namespace layerfl {

using NoiseKey = std::array<unsigned char, 32>;

// Initialises libsodium once (thread-safe); aborts when it cannot, as
// libsodium then has no entropy source.
void EnsureSodium();

// A key from the operating system's CSPRNG.
NoiseKey RandomNoiseKey();
// A key derived from (seed, label): the same inputs give the same key.
NoiseKey DerivedNoiseKey(uint64_t seed, absl::string_view label);

class GaussianSource {
 public:
  explicit GaussianSource(const NoiseKey& key);
  ~GaussianSource();

  GaussianSource(const GaussianSource&) = delete;
  GaussianSource& operator=(const GaussianSource&) = delete;

  // One standard normal draw.
  double Next();
  // A uniform double in [0, 1) with 53 random bits.
  double Uniform();

 private:
  uint64_t NextWord();

  NoiseKey key_;
  std::array<unsigned char, 64> block_{};
  uint32_t counter_ = 0;
  uint64_t nonce_high_ = 0;
  int used_ = 64;
  bool has_spare_ = false;
  double spare_ = 0;
};

}  // namespace layerfl

#endif  // LAYERFL_COMMON_PRIVACY_NOISE_H_
