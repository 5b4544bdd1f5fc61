#ifndef LAYERFL_COMMON_UTIL_LOG_TEXT_H_
#define LAYERFL_COMMON_UTIL_LOG_TEXT_H_

// Text from the network on its way into a log line: escaped so that it
// cannot start a line of its own or drive a terminal, cut so that it cannot
// flood the log, and refusals rate-limited per reason.

#include <cstdint>
#include <map>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace layerfl {

// `text` between single quotes, its control characters, backslashes and
// non-ASCII bytes C-escaped (\n, \x1b, \\, \xNN), cut after `max_bytes`
// of it: "'abc'" or "'abc'...(+12345 bytes)".
std::string LogQuote(absl::string_view text, size_t max_bytes = 64);

// `line` with every control character (and DEL) C-escaped: whatever it
// holds, it stays one line.
std::string OneLine(absl::string_view line);

// Allows at most `burst` events per key in any `window`; Allow says
// whether this one may be logged and, when a window opens again, how many
// were held back in the last one. Not thread-safe.
class PerKeyRateLimit {
 public:
  PerKeyRateLimit(int burst, absl::Duration window)
      : burst_(burst), window_(window) {}

  // True to log the event; `*suppressed` is then the number of events of
  // `key` not logged since the last one that was.
  bool Allow(const std::string& key, absl::Time now, int64_t* suppressed);

 private:
  struct Window {
    absl::Time start = absl::InfinitePast();
    int used = 0;
    int64_t suppressed = 0;
  };
  int burst_;
  absl::Duration window_;
  std::map<std::string, Window> windows_;
};

// A valid client id: 1 to 128 characters of [A-Za-z0-9._:-], not starting
// with '.' (ids name files and lines of persisted state).
bool IsValidClientId(absl::string_view id);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_UTIL_LOG_TEXT_H_
