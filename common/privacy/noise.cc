#include "common/privacy/noise.h"

#include <sodium.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace layerfl {

void EnsureSodium() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) std::abort();  // libsodium could not find an entropy source
}

NoiseKey RandomNoiseKey() {
  EnsureSodium();
  NoiseKey key;
  randombytes_buf(key.data(), key.size());
  return key;
}

NoiseKey DerivedNoiseKey(uint64_t seed, absl::string_view label) {
  EnsureSodium();
  const std::string input = absl::StrCat("layerfl-noise|", seed, "|", label);
  NoiseKey key;
  crypto_generichash(key.data(), key.size(),
                     reinterpret_cast<const unsigned char*>(input.data()),
                     input.size(), nullptr, 0);
  return key;
}

GaussianSource::GaussianSource(const NoiseKey& key) : key_(key) {
  EnsureSodium();
}

GaussianSource::~GaussianSource() { sodium_memzero(key_.data(), key_.size()); }

uint64_t GaussianSource::NextWord() {
  if (used_ + 8 > static_cast<int>(block_.size())) {
    // The 96-bit IETF nonce carries the high part of a 96-bit block counter,
    // so a source never repeats a keystream block.
    unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
    std::memcpy(nonce, &nonce_high_, sizeof(nonce_high_));
    block_.fill(0);
    crypto_stream_chacha20_ietf_xor_ic(block_.data(), block_.data(),
                                       block_.size(), nonce, counter_,
                                       key_.data());
    if (++counter_ == 0) ++nonce_high_;
    used_ = 0;
  }
  uint64_t word;
  std::memcpy(&word, block_.data() + used_, sizeof(word));
  used_ += 8;
  return word;
}

double GaussianSource::Uniform() {
  return static_cast<double>(NextWord() >> 11) * 0x1.0p-53;
}

double GaussianSource::Next() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  const double u1 = 1.0 - Uniform();  // (0, 1]: the log is finite
  const double u2 = Uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2 * M_PI * u2);
  has_spare_ = true;
  return r * std::cos(2 * M_PI * u2);
}

}  // namespace layerfl
