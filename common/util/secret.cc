#include "common/util/secret.h"

#include <sodium.h>

#include <cstdlib>
#include <vector>

namespace layerfl {
namespace {

void InitSodium() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) std::abort();  // no random source: nothing safe to hand out
}

}  // namespace

bool SecretsEqual(const std::string& given, const std::string& secret) {
  InitSodium();
  unsigned char a[crypto_generichash_BYTES], b[crypto_generichash_BYTES];
  crypto_generichash(a, sizeof(a),
                     reinterpret_cast<const unsigned char*>(given.data()),
                     given.size(), nullptr, 0);
  crypto_generichash(b, sizeof(b),
                     reinterpret_cast<const unsigned char*>(secret.data()),
                     secret.size(), nullptr, 0);
  return sodium_memcmp(a, b, sizeof(a)) == 0;
}

std::string RandomHexToken(int bytes) {
  InitSodium();
  std::vector<unsigned char> raw(static_cast<size_t>(bytes));
  randombytes_buf(raw.data(), raw.size());
  std::string hex(raw.size() * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), raw.data(), raw.size());
  hex.pop_back();
  return hex;
}

uint32_t SecureUniform(uint32_t upper) {
  InitSodium();
  return randombytes_uniform(upper);
}

}  // namespace layerfl
