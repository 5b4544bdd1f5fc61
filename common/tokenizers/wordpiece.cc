#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/tokenizers/internal.h"
#include "common/tokenizers/tokenizer.h"
#include "common/tokenizers/unicode.h"
#include "common/util/status_macros.h"

namespace layerfl::tokenizers {
namespace {

using internal::DecodedChar;
using internal::SpecialToken;

// BERT treats every ASCII character that is not a letter, digit or space as
// punctuation, and the Unicode P* categories.
bool IsBertPunctuation(char32_t cp) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) ||
      (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) {
    return true;
  }
  return internal::IsPunctuation(cp);
}

bool IsBertWhitespace(char32_t cp) {
  return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' ||
         internal::IsSpaceSeparator(cp);
}

bool IsBertControl(char32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  return internal::IsOther(cp);
}

// The CJK Unified Ideographs blocks and their extensions and compatibility
// blocks (not Hangul, Hiragana or Katakana), as upstream lists them.
bool IsCjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

struct Vocab {
  absl::flat_hash_map<std::string, int32_t> ids;
  std::vector<std::string> tokens;  // tokens[id]
};

// Lines as Python's universal newlines split them: at LF, CRLF or CR.
absl::StatusOr<Vocab> ReadVocabTxt(const std::string& path) {
  ASSIGN_OR_RETURN(std::string data, internal::ReadFile(path));
  Vocab vocab;
  size_t i = 0;
  while (i < data.size()) {
    size_t end = data.find_first_of("\r\n", i);
    if (end == std::string::npos) end = data.size();
    const absl::string_view line(data.data() + i, end - i);
    const int line_no = static_cast<int>(vocab.tokens.size()) + 1;
    for (const DecodedChar& c : internal::DecodeUtf8(line)) {
      if (!c.valid) {
        return absl::InvalidArgumentError(absl::StrCat(
            internal::Where(path, line_no), "not valid UTF-8 (byte ",
            c.offset + 1, " of the line)"));
      }
    }
    const auto id = static_cast<int32_t>(vocab.tokens.size());
    vocab.tokens.emplace_back(line);
    vocab.ids.insert_or_assign(std::string(line), id);
    const bool crlf =
        end + 1 < data.size() && data[end] == '\r' && data[end + 1] == '\n';
    i = end + (crlf ? 2 : 1);
  }
  if (vocab.tokens.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(internal::Where(path, 0), "empty vocabulary"));
  }
  return vocab;
}

class WordPieceTokenizer final : public Tokenizer {
 public:
  WordPieceTokenizer(Vocab vocab, WordPieceOptions options,
                     SpecialTokenIds special,
                     std::vector<SpecialToken> split_tokens)
      : vocab_(std::move(vocab)),
        options_(std::move(options)),
        strip_accents_(options_.strip_accents.value_or(options_.do_lower_case)),
        special_(special),
        split_tokens_(std::move(split_tokens)) {}

  absl::StatusOr<std::vector<int32_t>> Tokenize(
      absl::string_view text) const override {
    std::vector<int32_t> ids;
    for (const internal::TextPiece& piece :
         internal::SplitOnSpecialTokens(text, split_tokens_)) {
      if (piece.special_id >= 0) {
        ids.push_back(piece.special_id);
      } else {
        TokenizeText(piece.text, &ids);
      }
    }
    return ids;
  }

  absl::StatusOr<std::string> IdToToken(int32_t id) const override {
    if (id < 0 || static_cast<size_t>(id) >= vocab_.tokens.size()) {
      return absl::NotFoundError(absl::StrCat("no token has id ", id));
    }
    return vocab_.tokens[static_cast<size_t>(id)];
  }

  int32_t vocab_size() const override {
    return static_cast<int32_t>(vocab_.tokens.size());
  }

  const SpecialTokenIds& special_ids() const override { return special_; }

 private:
  // BasicTokenizer: clean, space out CJK, split on whitespace, then each
  // word is lowercased / stripped of accents and split on punctuation.
  void TokenizeText(absl::string_view text, std::vector<int32_t>* ids) const {
    std::u32string cleaned;
    cleaned.reserve(text.size());
    for (const DecodedChar& c : internal::DecodeUtf8(text)) {
      const char32_t cp = c.cp;  // kReplacementChar for invalid bytes.
      if (cp == 0 || cp == internal::kReplacementChar || IsBertControl(cp)) {
        continue;
      }
      if (IsBertWhitespace(cp)) {
        cleaned.push_back(U' ');
      } else if (options_.tokenize_chinese_chars && IsCjk(cp)) {
        cleaned.push_back(U' ');
        cleaned.push_back(cp);
        cleaned.push_back(U' ');
      } else {
        cleaned.push_back(cp);
      }
    }
    const std::u32string_view all(cleaned);
    size_t i = 0;
    while (i < all.size()) {
      while (i < all.size() && internal::IsPythonSpace(all[i])) ++i;
      size_t end = i;
      while (end < all.size() && !internal::IsPythonSpace(all[end])) ++end;
      if (end > i) AddWhitespaceToken(all.substr(i, end - i), ids);
      i = end;
    }
  }

  void AddWhitespaceToken(std::u32string_view token,
                          std::vector<int32_t>* ids) const {
    // Upstream never splits its special tokens (here only reachable when
    // cleaning joined one, e.g. "[CL\x01S]").
    const std::string utf8 = internal::ToUtf8(token);
    for (const SpecialToken& s : split_tokens_) {
      if (s.text == utf8) {
        ids->push_back(s.id);
        return;
      }
    }
    std::u32string word(token);
    if (options_.do_lower_case) word = internal::PythonLower(word);
    if (strip_accents_) word = internal::StripAccents(word);
    // Split on punctuation; whitespace cannot be left here except what
    // lowercasing or decomposition made, which upstream's re-split drops.
    const std::u32string_view chars(word);
    size_t start = 0;
    for (size_t k = 0; k < chars.size(); ++k) {
      const bool space = internal::IsPythonSpace(chars[k]);
      if (!space && !IsBertPunctuation(chars[k])) continue;
      if (k > start) AddWordPieces(chars.substr(start, k - start), ids);
      if (!space) AddWordPieces(chars.substr(k, 1), ids);
      start = k + 1;
    }
    if (chars.size() > start) AddWordPieces(chars.substr(start), ids);
  }

  // Greedy longest-match-first; the whole word is unk when a position has no
  // match or the word is too long.
  void AddWordPieces(std::u32string_view word,
                     std::vector<int32_t>* ids) const {
    if (word.size() > static_cast<size_t>(options_.max_input_chars_per_word)) {
      ids->push_back(special_.unk);
      return;
    }
    std::string utf8;
    std::vector<size_t> offset(word.size() + 1);
    for (size_t k = 0; k < word.size(); ++k) {
      offset[k] = utf8.size();
      internal::AppendUtf8(word[k], &utf8);
    }
    offset[word.size()] = utf8.size();

    std::vector<int32_t> pieces;
    std::string key;
    size_t start = 0;
    while (start < word.size()) {
      int32_t found = -1;
      size_t end = word.size();
      for (; end > start; --end) {
        key.assign(start > 0 ? "##" : "");
        key.append(utf8, offset[start], offset[end] - offset[start]);
        auto it = vocab_.ids.find(key);
        if (it != vocab_.ids.end()) {
          found = it->second;
          break;
        }
      }
      if (found < 0) {
        ids->push_back(special_.unk);
        return;
      }
      pieces.push_back(found);
      start = end;
    }
    ids->insert(ids->end(), pieces.begin(), pieces.end());
  }

  const Vocab vocab_;
  const WordPieceOptions options_;
  const bool strip_accents_;
  const SpecialTokenIds special_;
  const std::vector<SpecialToken> split_tokens_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateWordPieceTokenizer(
    const std::string& vocab_txt, const WordPieceOptions& options) {
  if (options.max_input_chars_per_word < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_input_chars_per_word must be >= 0, got ",
                     options.max_input_chars_per_word));
  }
  ASSIGN_OR_RETURN(Vocab vocab, ReadVocabTxt(vocab_txt));

  SpecialTokenIds special;
  ASSIGN_OR_RETURN(
      std::vector<SpecialToken> split_tokens,
      internal::ResolveSpecialTokens(options.special, vocab.ids, vocab_txt,
                                     /*mask_lstrip=*/false, &special));
  return std::make_unique<WordPieceTokenizer>(std::move(vocab), options,
                                              special, std::move(split_tokens));
}

}  // namespace layerfl::tokenizers
