#ifndef LAYERFL_COMMON_DATA_RECORDS_H_
#define LAYERFL_COMMON_DATA_RECORDS_H_

// Labelled examples as teams keep them: text in JSONL or CSV files with
// named fields, and the mapping of label names to ids shared with image
// folders. Torch-free; every function is a pure function of its inputs.

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/data/text.h"

namespace layerfl {

// One example as read: the label (and group) as strings.
struct TextRecord {
  std::string text;
  std::string label;
  std::string group;  // empty unless a group field was asked for
  int line = 0;       // 1-based line where the record starts
};

// Which fields of a record hold what. group empty = no group field.
struct RecordFields {
  std::string text = "text";
  std::string label = "label";
  std::string group;
};

// JSONL: one JSON object per line (empty and all-whitespace lines skipped,
// a trailing '\r' dropped, a UTF-8 byte-order mark at the start ignored).
// The text field must be a string; the label and group fields a string or an
// integer (taken as its decimal text). Errors: NotFound for a missing file;
// InvalidArgument naming `path:line` for invalid JSON, a line that is not an
// object, a missing field, a field of the wrong type, an empty text or
// label; and naming `path` when it holds no records.
absl::StatusOr<std::vector<TextRecord>> ReadJsonl(const std::string& path,
                                                  const RecordFields& fields);

// CSV as RFC 4180: comma-separated fields, each optionally in double quotes
// (then holding commas, line breaks and "" for a quote, kept verbatim);
// records end at LF or CRLF; the first record is the header naming the
// columns; empty lines are skipped; a leading UTF-8 byte-order mark is
// ignored. Errors: NotFound for a missing file; InvalidArgument naming
// `path:line` (the line a record starts on) for an unterminated quote, a
// quote inside an unquoted field, characters after a closing quote, a
// record whose field count differs from the header's, a header without a
// named field or with a repeated name, an empty text or label; and naming
// `path` when it holds no records.
absl::StatusOr<std::vector<TextRecord>> ReadCsv(const std::string& path,
                                                const RecordFields& fields);

// Parses CSV text (as ReadCsv, `path` only names it in errors) into records
// of fields, with the 1-based line each record starts on.
struct CsvRow {
  std::vector<std::string> fields;
  int line = 0;
};
absl::StatusOr<std::vector<CsvRow>> ParseCsv(const std::string& text,
                                             const std::string& path);

// A CSV field as ParseCsv reads it back: always quoted, quotes doubled.
std::string CsvQuote(const std::string& field);

// Label names <-> ids.
class LabelMap {
 public:
  // `names` in id order: distinct and non-empty (InvalidArgument naming
  // `source` otherwise).
  static absl::StatusOr<LabelMap> FromNames(std::vector<std::string> names,
                                            const std::string& source);
  // The distinct names of `labels`, sorted bytewise.
  static LabelMap Sorted(const std::vector<std::string>& labels);

  // NotFound when `name` is not a label.
  absl::StatusOr<int> Id(const std::string& name) const;
  const std::vector<std::string>& names() const { return names_; }
  int size() const { return static_cast<int>(names_.size()); }

 private:
  std::vector<std::string> names_;
  std::map<std::string, int> ids_;
};

// The records as labelled text, labels mapped by `labels`. InvalidArgument
// naming `path:line` for a label `labels` does not hold.
absl::StatusOr<std::vector<LabeledText>> MapLabels(
    const std::vector<TextRecord>& records, const LabelMap& labels,
    const std::string& path);

// labels.txt: one name a line in id order (what layerfl-partition writes
// next to a client's share). ReadLabelsFile: NotFound for a missing file,
// InvalidArgument naming `path:line` for an empty or repeated name.
absl::Status WriteLabelsFile(const LabelMap& labels, const std::string& path);
absl::StatusOr<LabelMap> ReadLabelsFile(const std::string& path);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_RECORDS_H_
