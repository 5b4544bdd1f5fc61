#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/tokenizers/internal.h"
#include "common/tokenizers/tokenizer.h"
#include "common/tokenizers/unicode.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace layerfl::tokenizers {
namespace {

using internal::DecodedChar;
using internal::SpecialToken;
using ::nlohmann::json;

// GPT-2's reversible byte -> character map: the printable bytes of Latin-1
// ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand for themselves, the other
// 68 bytes become U+0100, U+0101, ... in byte order. As UTF-8 strings.
std::array<std::string, 256> ByteToUnicode() {
  std::array<std::string, 256> out;
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) ||
                           (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    internal::AppendUtf8(printable ? static_cast<char32_t>(b) : next++,
                         &out[static_cast<size_t>(b)]);
  }
  return out;
}

enum class CharClass { kLetter, kNumber, kSpace, kOther };

CharClass Classify(const DecodedChar& c) {
  if (!c.valid) return CharClass::kOther;
  if (internal::IsWhiteSpace(c.cp)) return CharClass::kSpace;
  if (internal::IsLetter(c.cp)) return CharClass::kLetter;
  if (internal::IsNumber(c.cp)) return CharClass::kNumber;
  return CharClass::kOther;
}

// The length in characters of the contraction ('s 't 're 've 'm 'll 'd,
// lowercase only) at chars[i], or 0.
size_t ContractionAt(const std::vector<DecodedChar>& chars, size_t i) {
  if (chars[i].cp != U'\'' || i + 1 >= chars.size()) return 0;
  const char32_t a = chars[i + 1].cp;
  if (a == U's' || a == U't' || a == U'm' || a == U'd') return 2;
  if (i + 2 >= chars.size()) return 0;
  const char32_t b = chars[i + 2].cp;
  if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') ||
      (a == U'l' && b == U'l')) {
    return 3;
  }
  return 0;
}

// GPT-2's pre-tokenization, the first match at each position of
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with \s the White_Space property. Returns byte ranges of `text`.
std::vector<absl::string_view> PreTokenize(absl::string_view text) {
  const std::vector<DecodedChar> chars = internal::DecodeUtf8(text);
  std::vector<absl::string_view> words;
  auto emit = [&](size_t from, size_t to) {  // chars[from, to)
    const size_t begin = chars[from].offset;
    const size_t end = chars[to - 1].offset + chars[to - 1].size;
    words.push_back(text.substr(begin, end - begin));
  };
  const size_t n = chars.size();
  size_t i = 0;
  while (i < n) {
    if (const size_t len = ContractionAt(chars, i); len > 0) {
      emit(i, i + len);
      i += len;
      continue;
    }
    // ` ?` then a run of letters, of numbers, or of other characters.
    const size_t j = (chars[i].cp == U' ' && i + 1 < n) ? i + 1 : i;
    const CharClass cls = Classify(chars[j]);
    if (cls != CharClass::kSpace) {
      size_t k = j + 1;
      while (k < n && Classify(chars[k]) == cls) ++k;
      emit(i, k);
      i = k;
      continue;
    }
    // Whitespace: a run at the end is taken whole; before other text, the
    // run less its last character (which goes with the next word), and a
    // single character on its own.
    size_t k = i + 1;
    while (k < n && Classify(chars[k]) == CharClass::kSpace) ++k;
    if (k < n && k - i >= 2) --k;
    emit(i, k);
    i = k;
  }
  return words;
}

struct Merge {
  int32_t rank;
  int32_t merged;
};

struct BpeModel {
  absl::flat_hash_map<std::string, int32_t> ids;
  absl::flat_hash_map<int32_t, std::string> tokens;
  int32_t vocab_size = 0;
  absl::flat_hash_map<std::pair<int32_t, int32_t>, Merge> merges;
};

absl::Status ReadVocabJson(const std::string& path, BpeModel* model) {
  ASSIGN_OR_RETURN(std::string text, internal::ReadFile(path));
  ASSIGN_OR_RETURN(json parsed, internal::ParseJson(path, text));
  if (!parsed.is_object() || parsed.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": want a non-empty JSON object of token -> id"));
  }
  // Only an error looks for the line (a search through the whole text).
  auto where = [&](const std::string& token) {
    return internal::Where(path, internal::LineOfJsonKey(text, token));
  };
  for (const auto& [token, value] : parsed.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(token), "the id of \"", token, "\" is ",
                       value.dump(), ", want a non-negative 32-bit integer"));
    }
    const auto id = static_cast<int32_t>(value.get<int64_t>());
    auto [it, inserted] = model->tokens.try_emplace(id, token);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(token), "id ", id, " is given to both \"",
                       it->second, "\" and \"", token, "\""));
    }
    model->ids.emplace(token, id);
    if (id >= model->vocab_size) model->vocab_size = id + 1;
  }
  return absl::OkStatus();
}

absl::Status ReadMerges(const std::string& path, const std::string& vocab_path,
                        BpeModel* model) {
  ASSIGN_OR_RETURN(std::string data, internal::ReadFile(path));
  std::vector<absl::string_view> lines = absl::StrSplit(data, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  int32_t rank = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    if (absl::EndsWith(line, "\r")) line.remove_suffix(1);
    if (absl::StartsWith(line, "#version")) continue;
    auto where = [&] { return internal::Where(path, static_cast<int>(i) + 1); };
    const std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), "want two tokens separated by one space, got \"", line,
          "\""));
    }
    int32_t part_ids[2];
    for (int k = 0; k < 2; ++k) {
      auto it = model->ids.find(parts[static_cast<size_t>(k)]);
      if (it == model->ids.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), "\"", parts[static_cast<size_t>(k)],
                         "\" is not in ", vocab_path));
      }
      part_ids[k] = it->second;
    }
    const std::string merged = absl::StrCat(parts[0], parts[1]);
    auto it = model->ids.find(merged);
    if (it == model->ids.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), "the merged token \"", merged, "\" is not in ", vocab_path));
    }
    // A repeated merge keeps its later rank, as upstream's dict does.
    model->merges.insert_or_assign({part_ids[0], part_ids[1]},
                                   Merge{rank++, it->second});
  }
  return absl::OkStatus();
}

class ByteLevelBpeTokenizer final : public Tokenizer {
 public:
  ByteLevelBpeTokenizer(BpeModel model, BpeOptions options,
                        SpecialTokenIds special,
                        std::vector<SpecialToken> split_tokens)
      : model_(std::move(model)),
        options_(std::move(options)),
        special_(special),
        split_tokens_(std::move(split_tokens)) {
    const std::array<std::string, 256> chars = ByteToUnicode();
    for (size_t b = 0; b < 256; ++b) {
      auto it = model_.ids.find(chars[b]);
      byte_ids_[b] = it == model_.ids.end() ? -1 : it->second;
    }
  }

  absl::StatusOr<std::vector<int32_t>> Tokenize(
      absl::string_view text) const override {
    std::string prefixed;
    if (options_.add_prefix_space) {
      prefixed = absl::StrCat(" ", text);
      text = prefixed;
    }
    std::vector<int32_t> ids;
    for (const internal::TextPiece& piece :
         internal::SplitOnSpecialTokens(text, split_tokens_)) {
      if (piece.special_id >= 0) {
        ids.push_back(piece.special_id);
        continue;
      }
      for (absl::string_view word : PreTokenize(piece.text)) {
        AppendWord(word, &ids);
      }
    }
    return ids;
  }

  absl::StatusOr<std::string> IdToToken(int32_t id) const override {
    auto it = model_.tokens.find(id);
    if (it == model_.tokens.end()) {
      return absl::NotFoundError(absl::StrCat("no token has id ", id));
    }
    return it->second;
  }

  int32_t vocab_size() const override { return model_.vocab_size; }

  const SpecialTokenIds& special_ids() const override { return special_; }

 private:
  // Bounds the per-word cache; it is emptied when full.
  static constexpr size_t kMaxCachedWords = 1 << 16;

  void AppendWord(absl::string_view word, std::vector<int32_t>* ids) const {
    {
      absl::MutexLock lock(&mu_);
      auto it = cache_.find(word);
      if (it != cache_.end()) {
        ids->insert(ids->end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> pieces = Bpe(word);
    ids->insert(ids->end(), pieces.begin(), pieces.end());
    absl::MutexLock lock(&mu_);
    if (cache_.size() >= kMaxCachedWords) cache_.clear();
    cache_.try_emplace(std::string(word), std::move(pieces));
  }

  // Starts from one symbol a byte and applies the lowest-ranked merge among
  // adjacent pairs, at every occurrence left to right, until none applies.
  // A byte whose character is not in the vocabulary stays unk.
  std::vector<int32_t> Bpe(absl::string_view word) const {
    std::vector<int32_t> symbols;
    symbols.reserve(word.size());
    for (char c : word) {
      symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    }
    std::vector<int32_t> next;
    while (symbols.size() > 1) {
      const Merge* best = nullptr;
      std::pair<int32_t, int32_t> best_pair;
      for (size_t k = 0; k + 1 < symbols.size(); ++k) {
        if (symbols[k] < 0 || symbols[k + 1] < 0) continue;
        auto it =
            model_.merges.find(std::make_pair(symbols[k], symbols[k + 1]));
        if (it != model_.merges.end() &&
            (best == nullptr || it->second.rank < best->rank)) {
          best = &it->second;
          best_pair = it->first;
        }
      }
      if (best == nullptr) break;
      next.clear();
      for (size_t k = 0; k < symbols.size(); ++k) {
        if (k + 1 < symbols.size() && symbols[k] == best_pair.first &&
            symbols[k + 1] == best_pair.second) {
          next.push_back(best->merged);
          ++k;
        } else {
          next.push_back(symbols[k]);
        }
      }
      symbols.swap(next);
    }
    for (int32_t& s : symbols) {
      if (s < 0) s = special_.unk;
    }
    return symbols;
  }

  const BpeModel model_;
  const BpeOptions options_;
  const SpecialTokenIds special_;
  const std::vector<SpecialToken> split_tokens_;
  std::array<int32_t, 256> byte_ids_;

  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateByteLevelBpeTokenizer(
    const std::string& vocab_json, const std::string& merges_txt,
    const BpeOptions& options) {
  BpeModel model;
  RETURN_IF_ERROR(ReadVocabJson(vocab_json, &model));
  RETURN_IF_ERROR(ReadMerges(merges_txt, vocab_json, &model));

  SpecialTokenIds special;
  // RoBERTa's mask token takes the space before it, as a word does.
  ASSIGN_OR_RETURN(
      std::vector<SpecialToken> split_tokens,
      internal::ResolveSpecialTokens(options.special, model.ids, vocab_json,
                                     /*mask_lstrip=*/true, &special));
  return std::make_unique<ByteLevelBpeTokenizer>(
      std::move(model), options, special, std::move(split_tokens));
}

}  // namespace layerfl::tokenizers
