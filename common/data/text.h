#ifndef LAYERFL_COMMON_DATA_TEXT_H_
#define LAYERFL_COMMON_DATA_TEXT_H_

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace layerfl {

struct LabeledText {
  int label = 0;
  std::string text;
};

// Reads a text-classification file, plain or gzip-compressed: one example per
// line as `label<TAB>text`, where label is a non-negative decimal integer and
// text is everything after the first tab (non-empty). Empty lines are skipped;
// a trailing '\r' is dropped (CRLF files). Errors: NotFound for a missing
// file; InvalidArgument naming `path:line` and the problem (missing tab,
// non-integer label, negative label, label too large, empty text) or when the
// file holds no examples.
absl::StatusOr<std::vector<LabeledText>> ReadTsv(const std::string& path);

// Word-level tokenizer. Text is split into words at every ASCII character
// that is not a letter or digit, and ASCII letters are lowercased. Bytes >=
// 0x80 count as word characters, so UTF-8 words stay whole (not lowercased).
// Ids: 0 is <pad>, 1 is <unk>, then known words. Immutable after creation;
// safe to share between threads.
class Tokenizer {
 public:
  static constexpr int32_t kPadId = 0;
  static constexpr int32_t kUnkId = 1;

  // Vocabulary = <pad>, <unk>, then the corpus words by descending count
  // (ties alphabetical, byte order), keeping at most `vocab_size` entries in
  // total. InvalidArgument when vocab_size < 2.
  static absl::StatusOr<Tokenizer> Build(const std::vector<LabeledText>& corpus,
                                         int vocab_size);

  // Rebuilds a tokenizer from `vocab()` of another one, e.g. so every client
  // uses the server's vocabulary. InvalidArgument unless words[0] == "<pad>",
  // words[1] == "<unk>" and the rest are distinct non-empty tokens.
  static absl::StatusOr<Tokenizer> FromVocab(std::vector<std::string> words);

  // Splits `text` into lowercased words (no ids).
  static std::vector<std::string> Split(const std::string& text);

  // Exactly max(max_len, 0) ids: the first words of `text`, unknown words as
  // kUnkId, padded with kPadId at the end.
  std::vector<int32_t> Encode(const std::string& text, int max_len) const;

  int vocab_size() const { return static_cast<int>(words_.size()); }
  // vocab()[id] is the token for id.
  const std::vector<std::string>& vocab() const { return words_; }

 private:
  explicit Tokenizer(std::vector<std::string> words);

  std::vector<std::string> words_;
  std::unordered_map<std::string, int32_t> ids_;
};

// Encoded examples, ready for batching.
struct TextSet {
  int max_len = 0;
  // size() * max_len ids; example i starts at i * max_len.
  std::vector<int32_t> tokens;
  std::vector<int> labels;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

// Encodes every example with `tokenizer.Encode(text, max_len)`.
TextSet EncodeAll(const Tokenizer& tokenizer,
                  const std::vector<LabeledText>& examples, int max_len);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_TEXT_H_
