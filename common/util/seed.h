#ifndef LAYERFL_COMMON_UTIL_SEED_H_
#define LAYERFL_COMMON_UTIL_SEED_H_

// Seed derivation shared by every module, so that each random stream is a
// pure function of the run seed and what it is for (round, client id, ...).

#include <cstdint>
#include <string_view>

namespace layerfl {

// SplitMix64 finaliser: a bijective 64-bit mix.
inline uint64_t MixSeed(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A stable 64-bit hash of a string (FNV-1a, then MixSeed), e.g. a client id.
inline uint64_t StableHash(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 0x100000001b3ULL;
  }
  return MixSeed(h);
}

}  // namespace layerfl

#endif  // LAYERFL_COMMON_UTIL_SEED_H_
