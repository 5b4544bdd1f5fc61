#include "common/data/text.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/data/file.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

constexpr char kPad[] = "<pad>";
constexpr char kUnk[] = "<unk>";

bool IsWordByte(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         static_cast<unsigned char>(c) >= 0x80;
}

bool AllDigits(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isdigit(static_cast<unsigned char>(c));
  });
}

absl::StatusOr<LabeledText> ParseLine(absl::string_view line,
                                      const std::string& where) {
  size_t tab = line.find('\t');
  if (tab == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": missing tab between label and text"));
  }
  absl::string_view label = line.substr(0, tab);
  absl::string_view text = line.substr(tab + 1);
  if (label.size() > 1 && label[0] == '-' && AllDigits(label.substr(1))) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": label must be non-negative, got ", label));
  }
  if (!AllDigits(label)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": label must be a non-negative integer, got \"", label, "\""));
  }
  int64_t value = 0;
  for (char c : label) {
    value = value * 10 + (c - '0');
    if (value > std::numeric_limits<int>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": label ", label, " is larger than ",
                       std::numeric_limits<int>::max()));
    }
  }
  if (text.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": empty text"));
  }
  return LabeledText{static_cast<int>(value), std::string(text)};
}

}  // namespace

absl::StatusOr<std::vector<LabeledText>> ReadTsv(const std::string& path) {
  ASSIGN_OR_RETURN(std::string contents, ReadMaybeGzippedFile(path));
  std::vector<LabeledText> examples;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    ASSIGN_OR_RETURN(LabeledText example,
                     ParseLine(line, absl::StrCat(path, ":", line_number)));
    examples.push_back(std::move(example));
  }
  if (examples.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("text file ", path, " contains no examples"));
  }
  return examples;
}

Tokenizer::Tokenizer(std::vector<std::string> words)
    : words_(std::move(words)) {
  for (size_t i = 0; i < words_.size(); ++i) {
    ids_.emplace(words_[i], static_cast<int32_t>(i));
  }
}

std::vector<std::string> Tokenizer::Split(const std::string& text) {
  std::vector<std::string> words;
  std::string current;
  for (char c : text) {
    if (IsWordByte(c)) {
      current.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
    } else if (!current.empty()) {
      words.push_back(std::move(current));
      current.clear();
    }
  }
  if (!current.empty()) words.push_back(std::move(current));
  return words;
}

absl::StatusOr<Tokenizer> Tokenizer::Build(
    const std::vector<LabeledText>& corpus, int vocab_size) {
  if (vocab_size < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vocab_size must be >= 2 (<pad> and <unk>), got ", vocab_size));
  }
  std::map<std::string, int64_t> counts;  // Ordered: ties stay alphabetical.
  for (const LabeledText& example : corpus) {
    for (std::string& word : Split(example.text)) ++counts[std::move(word)];
  }
  std::vector<std::pair<std::string, int64_t>> sorted(counts.begin(),
                                                      counts.end());
  std::stable_sort(
      sorted.begin(), sorted.end(),
      [](const auto& a, const auto& b) { return a.second > b.second; });
  std::vector<std::string> words = {kPad, kUnk};
  for (auto& [word, count] : sorted) {
    if (static_cast<int>(words.size()) >= vocab_size) break;
    words.push_back(std::move(word));
  }
  return Tokenizer(std::move(words));
}

absl::StatusOr<Tokenizer> Tokenizer::FromVocab(std::vector<std::string> words) {
  if (words.size() < 2 || words[0] != kPad || words[1] != kUnk) {
    return absl::InvalidArgumentError(
        "vocabulary must start with \"<pad>\", \"<unk>\"");
  }
  if (words.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocabulary has ", words.size(), " words; too many"));
  }
  Tokenizer tokenizer(std::move(words));
  const std::vector<std::string>& w = tokenizer.words_;
  for (size_t i = 2; i < w.size(); ++i) {
    std::vector<std::string> parts = Split(w[i]);
    if (parts.size() != 1 || parts[0] != w[i]) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary word ", i, " \"", w[i],
                       "\" is not a single lowercase token"));
    }
    if (tokenizer.ids_.at(w[i]) != static_cast<int32_t>(i)) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary word ", i, " \"", w[i],
                       "\" duplicates word ", tokenizer.ids_.at(w[i])));
    }
  }
  return tokenizer;
}

std::vector<int32_t> Tokenizer::Encode(const std::string& text,
                                       int max_len) const {
  std::vector<int32_t> ids;
  if (max_len <= 0) return ids;
  ids.reserve(max_len);
  for (const std::string& word : Split(text)) {
    if (static_cast<int>(ids.size()) == max_len) break;
    auto it = ids_.find(word);
    ids.push_back(it == ids_.end() ? kUnkId : it->second);
  }
  ids.resize(max_len, kPadId);
  return ids;
}

TextSet EncodeAll(const Tokenizer& tokenizer,
                  const std::vector<LabeledText>& examples, int max_len) {
  TextSet set;
  set.max_len = std::max(max_len, 0);
  set.tokens.reserve(examples.size() * set.max_len);
  set.labels.reserve(examples.size());
  for (const LabeledText& example : examples) {
    std::vector<int32_t> ids = tokenizer.Encode(example.text, set.max_len);
    set.tokens.insert(set.tokens.end(), ids.begin(), ids.end());
    set.labels.push_back(example.label);
  }
  return set;
}

}  // namespace layerfl
