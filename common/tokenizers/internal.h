#ifndef LAYERFL_COMMON_TOKENIZERS_INTERNAL_H_
#define LAYERFL_COMMON_TOKENIZERS_INTERNAL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tokenizers/tokenizer.h"
#include "nlohmann/json.hpp"

// Helpers shared by the tokenizers of common/tokenizers; not part of its API.
namespace layerfl::tokenizers::internal {

// The whole file. NotFound naming `path` when it cannot be opened.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// `text` (the contents of `path`) parsed as JSON. InvalidArgument naming
// `path` and the line and column of a syntax error.
absl::StatusOr<nlohmann::json> ParseJson(const std::string& path,
                                         const std::string& text);

// "path:line: " for line > 0, else "path: ", to start an error message.
std::string Where(const std::string& path, int line);

// The 1-based line of the first `"key"` (raw or \u-escaped as json.dumps
// writes it) followed by a colon in `json_text`; 0 when not found.
int LineOfJsonKey(absl::string_view json_text, absl::string_view key);

// A special token to split out of the text.
struct SpecialToken {
  std::string text;
  int32_t id = -1;
  // Also removes the whitespace (Python's str.isspace) right before it.
  bool lstrip = false;
};

// Either a run of plain text or one special token.
struct TextPiece {
  absl::string_view text;
  int32_t special_id = -1;  // >= 0 for a special token.
};

// Splits `text` at each occurrence of a special token (the leftmost match,
// the longest at that position), as upstream's added-tokens trie. Empty text
// pieces are left out.
std::vector<TextPiece> SplitOnSpecialTokens(
    absl::string_view text, const std::vector<SpecialToken>& specials);

// Looks `tokens` up in `vocab` (read from `vocab_path`), filling `ids` and
// returning the tokens to split out of text. unk, cls, sep and pad must be
// there (InvalidArgument naming the file otherwise); a missing mask is -1.
// `mask_lstrip`: the mask token takes the whitespace before it.
absl::StatusOr<std::vector<SpecialToken>> ResolveSpecialTokens(
    const SpecialTokens& tokens,
    const absl::flat_hash_map<std::string, int32_t>& vocab,
    const std::string& vocab_path, bool mask_lstrip, SpecialTokenIds* ids);

}  // namespace layerfl::tokenizers::internal

#endif  // LAYERFL_COMMON_TOKENIZERS_INTERNAL_H_
