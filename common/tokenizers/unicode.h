#ifndef LAYERFL_COMMON_TOKENIZERS_UNICODE_H_
#define LAYERFL_COMMON_TOKENIZERS_UNICODE_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"

// Unicode facts the tokenizers need, from utf8proc's tables (the Unicode
// version of Debian's libutf8proc). Internal to common/tokenizers.
namespace layerfl::tokenizers::internal {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// One code point of a UTF-8 string and the bytes it came from. An invalid
// byte (bad lead or continuation byte, overlong form, surrogate, past
// U+10FFFF, truncated sequence) is one DecodedChar of size 1 with
// valid == false and cp == kReplacementChar.
struct DecodedChar {
  char32_t cp;
  size_t offset;
  size_t size;
  bool valid;
};

std::vector<DecodedChar> DecodeUtf8(absl::string_view text);

void AppendUtf8(char32_t cp, std::string* out);
std::string ToUtf8(std::u32string_view text);

// General categories.
bool IsLetter(char32_t cp);          // L*
bool IsNumber(char32_t cp);          // N*
bool IsPunctuation(char32_t cp);     // P*
bool IsOther(char32_t cp);           // C* (including unassigned)
bool IsSpaceSeparator(char32_t cp);  // Zs
bool IsNonspacingMark(char32_t cp);  // Mn

// The White_Space property (what Python's `regex` module means by \s).
bool IsWhiteSpace(char32_t cp);

// What Python's str.isspace() (and so str.split()) treats as whitespace.
bool IsPythonSpace(char32_t cp);

// Python's str.lower(): the simple lowercase mapping, plus U+0130 -> "i"
// U+0307 and the Final_Sigma rule for U+03A3 (Cased and Case_Ignorable
// approximated from general categories, see unicode.cc).
std::u32string PythonLower(std::u32string_view text);

// Canonical decomposition (NFD) with the nonspacing marks (Mn) removed.
std::u32string StripAccents(std::u32string_view text);

}  // namespace layerfl::tokenizers::internal

#endif  // LAYERFL_COMMON_TOKENIZERS_UNICODE_H_
