#ifndef LAYERFL_COMMON_UTIL_SECRET_H_
#define LAYERFL_COMMON_UTIL_SECRET_H_

// Secrets the daemons hand out and check (join tokens, session ids, the
// operators' HTTP token), through libsodium: never a hand-written compare
// or a general-purpose PRNG.

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace layerfl {

// Whether `given` equals `secret`, in time independent of where they differ
// and of their lengths (both are hashed to 32 bytes with BLAKE2b, then
// compared with sodium_memcmp).
bool SecretsEqual(const std::string& given, const std::string& secret);

// `bytes` bytes from the OS's cryptographic random source
// (randombytes_buf), as 2 * bytes lowercase hex digits.
std::string RandomHexToken(int bytes);

// Uniform in [0, upper) from the OS's cryptographic random source; upper
// >= 1.
uint32_t SecureUniform(uint32_t upper);

// A uniform random permutation of `items` (Fisher-Yates over
// randombytes_uniform): nobody can predict it, not even from the run's
// config. For samples whose secrecy a privacy guarantee relies on.
template <typename T>
void SecureShuffle(std::vector<T>& items) {
  for (size_t i = items.size(); i > 1; --i) {
    std::swap(items[i - 1], items[SecureUniform(static_cast<uint32_t>(i))]);
  }
}

// Parses a per-client tokens file's `text`: one "client_id token" pair per
// line, blank lines and `#` comments ignored. InvalidArgument
// "SOURCE:LINE: ..." on a malformed line, a duplicate id or no pair at all.
absl::StatusOr<std::map<std::string, std::string>> ParseClientTokens(
    const std::string& text, const std::string& source);

// The tokens file a command-line flag names, parsed (ParseClientTokens):
// InvalidArgument "--FLAG: cannot read 'PATH'" or "--FLAG: PATH:LINE: ...".
absl::StatusOr<std::map<std::string, std::string>> ReadClientTokensFile(
    const std::string& flag, const std::string& path);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_UTIL_SECRET_H_
