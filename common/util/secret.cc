#include "common/util/secret.h"

#include <sodium.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

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

absl::StatusOr<std::map<std::string, std::string>> ParseClientTokens(
    const std::string& text, const std::string& source) {
  std::map<std::string, std::string> tokens;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    const size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ":", line_no, ": expected 'client_id token', got ",
          fields.size(), " fields"));
    }
    if (!tokens.emplace(std::string(fields[0]), std::string(fields[1]))
             .second) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ":", line_no, ": client '", fields[0], "' listed twice"));
    }
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": no client tokens"));
  }
  return tokens;
}

absl::StatusOr<std::map<std::string, std::string>> ReadClientTokensFile(
    const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  if (!in || in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": cannot read '", path, "'"));
  }
  absl::StatusOr<std::map<std::string, std::string>> tokens =
      ParseClientTokens(text.str(), path);
  if (!tokens.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", tokens.status().message()));
  }
  return tokens;
}

}  // namespace layerfl
