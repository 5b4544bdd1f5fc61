#ifndef LAYERFL_COMMON_UTIL_SECRET_H_
#define LAYERFL_COMMON_UTIL_SECRET_H_

// Secrets the daemons hand out and check (join tokens, session ids, the
// operators' HTTP token), through libsodium: never a hand-written compare
// or a general-purpose PRNG.

#include <string>

namespace layerfl {

// Whether `given` equals `secret`, in time independent of where they differ
// and of their lengths (both are hashed to 32 bytes with BLAKE2b, then
// compared with sodium_memcmp).
bool SecretsEqual(const std::string& given, const std::string& secret);

// `bytes` bytes from the OS's cryptographic random source
// (randombytes_buf), as 2 * bytes lowercase hex digits.
std::string RandomHexToken(int bytes);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_UTIL_SECRET_H_
