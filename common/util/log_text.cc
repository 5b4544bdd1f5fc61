#include "common/util/log_text.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace layerfl {

namespace {

// Control characters (and DEL) as C escapes; with `bytes_too`, also the
// backslash and every byte >= 0x80.
std::string Escaped(absl::string_view text, bool bytes_too) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || (bytes_too && (u >= 0x80 || c == '\\'))) {
      out += absl::CHexEscape(absl::string_view(&c, 1));
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string LogQuote(absl::string_view text, size_t max_bytes) {
  const bool cut = text.size() > max_bytes;
  std::string out = absl::StrCat(
      "'", Escaped(cut ? text.substr(0, max_bytes) : text, true), "'");
  if (cut) absl::StrAppend(&out, "...(+", text.size() - max_bytes, " bytes)");
  return out;
}

std::string OneLine(absl::string_view line) { return Escaped(line, false); }

bool PerKeyRateLimit::Allow(const std::string& key, absl::Time now,
                            int64_t* suppressed) {
  Window& w = windows_[key];
  if (now - w.start >= window_) {
    w.start = now;
    w.used = 0;
  }
  if (w.used >= burst_) {
    ++w.suppressed;
    return false;
  }
  ++w.used;
  *suppressed = w.suppressed;
  w.suppressed = 0;
  return true;
}

bool IsValidClientId(absl::string_view id) {
  if (id.empty() || id.size() > 128 || id[0] == '.') return false;
  for (const char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace layerfl
