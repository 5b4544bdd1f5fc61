#include "common/tokenizers/internal.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/tokenizers/unicode.h"

namespace layerfl::tokenizers::internal {
namespace {

// `key` as json.dumps(ensure_ascii=True) writes it, quotes included.
std::string AsciiJsonString(absl::string_view key) {
  std::string out = "\"";
  for (const DecodedChar& c : DecodeUtf8(key)) {
    if (c.cp == '"' || c.cp == '\\') {
      absl::StrAppend(&out, "\\", std::string(1, static_cast<char>(c.cp)));
    } else if (c.cp >= 0x20 && c.cp < 0x7F) {
      out.push_back(static_cast<char>(c.cp));
    } else if (c.cp < 0x10000) {
      absl::StrAppendFormat(&out, "\\u%04x", static_cast<uint32_t>(c.cp));
    } else {
      const uint32_t v = static_cast<uint32_t>(c.cp) - 0x10000;
      absl::StrAppendFormat(&out, "\\u%04x\\u%04x", 0xD800 + (v >> 10),
                            0xDC00 + (v & 0x3FF));
    }
  }
  out.push_back('"');
  return out;
}

// Raw UTF-8 with only quotes and backslashes escaped (ensure_ascii=False).
std::string RawJsonString(absl::string_view key) {
  std::string out = "\"";
  for (char c : key) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

size_t FindKey(absl::string_view text, absl::string_view quoted) {
  size_t pos = text.find(quoted);
  while (pos != absl::string_view::npos) {
    size_t after = pos + quoted.size();
    while (after < text.size() &&
           (text[after] == ' ' || text[after] == '\t' || text[after] == '\n' ||
            text[after] == '\r')) {
      ++after;
    }
    if (after < text.size() && text[after] == ':') return pos;
    pos = text.find(quoted, pos + 1);
  }
  return absl::string_view::npos;
}

// `end` moved back over the Python whitespace that ends text[begin, end).
size_t TrimTrailingSpace(absl::string_view text, size_t begin, size_t end) {
  while (end > begin) {
    size_t last = end - 1;  // Start of the last code point.
    while (last > begin &&
           (static_cast<unsigned char>(text[last]) & 0xC0) == 0x80) {
      --last;
    }
    const std::vector<DecodedChar> c =
        DecodeUtf8(text.substr(last, end - last));
    if (c.size() != 1 || !c[0].valid || !IsPythonSpace(c[0].cp)) break;
    end = last;
  }
  return end;
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream data;
  data << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return data.str();
}

absl::StatusOr<nlohmann::json> ParseJson(const std::string& path,
                                         const std::string& text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // Drop the "[json.exception.parse_error.101] " prefix; the rest names
    // the line and column.
    std::string what = e.what();
    const size_t close = what.find("] ");
    if (close != std::string::npos) what = what.substr(close + 2);
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  }
}

std::string Where(const std::string& path, int line) {
  if (line > 0) return absl::StrCat(path, ":", line, ": ");
  return absl::StrCat(path, ": ");
}

int LineOfJsonKey(absl::string_view json_text, absl::string_view key) {
  size_t pos = FindKey(json_text, RawJsonString(key));
  if (pos == absl::string_view::npos) {
    pos = FindKey(json_text, AsciiJsonString(key));
  }
  if (pos == absl::string_view::npos) return 0;
  return 1 + static_cast<int>(
                 std::count(json_text.begin(), json_text.begin() + pos, '\n'));
}

std::vector<TextPiece> SplitOnSpecialTokens(
    absl::string_view text, const std::vector<SpecialToken>& specials) {
  std::vector<TextPiece> pieces;
  size_t plain_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    const SpecialToken* match = nullptr;
    for (const SpecialToken& s : specials) {
      if (s.text.empty() || s.text.size() > text.size() - i) continue;
      if (text.compare(i, s.text.size(), s.text) != 0) continue;
      if (match == nullptr || s.text.size() > match->text.size()) match = &s;
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    const size_t plain_end =
        match->lstrip ? TrimTrailingSpace(text, plain_start, i) : i;
    if (plain_end > plain_start) {
      pieces.push_back({text.substr(plain_start, plain_end - plain_start)});
    }
    pieces.push_back({absl::string_view(), match->id});
    i += match->text.size();
    plain_start = i;
  }
  if (plain_start < text.size()) pieces.push_back({text.substr(plain_start)});
  return pieces;
}

absl::StatusOr<std::vector<SpecialToken>> ResolveSpecialTokens(
    const SpecialTokens& tokens,
    const absl::flat_hash_map<std::string, int32_t>& vocab,
    const std::string& vocab_path, bool mask_lstrip, SpecialTokenIds* ids) {
  struct Wanted {
    const std::string& text;
    const char* name;
    int32_t* id;
    bool required;
    bool lstrip;
  };
  const Wanted wanted[] = {
      {tokens.unk, "unk_token", &ids->unk, true, false},
      {tokens.cls, "cls_token", &ids->cls, true, false},
      {tokens.sep, "sep_token", &ids->sep, true, false},
      {tokens.pad, "pad_token", &ids->pad, true, false},
      {tokens.mask, "mask_token", &ids->mask, false, mask_lstrip},
  };
  std::vector<SpecialToken> split;
  for (const Wanted& w : wanted) {
    auto it = w.text.empty() ? vocab.end() : vocab.find(w.text);
    if (it == vocab.end()) {
      if (!w.required) {
        *w.id = -1;
        continue;
      }
      return absl::InvalidArgumentError(
          absl::StrCat(Where(vocab_path, 0), "no \"", w.text, "\" (", w.name,
                       ") in the vocabulary"));
    }
    *w.id = it->second;
    split.push_back({w.text, it->second, w.lstrip});
  }
  return split;
}

}  // namespace layerfl::tokenizers::internal
