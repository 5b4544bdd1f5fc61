#include "common/data/records.h"

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/data/file.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace layerfl {
namespace {

constexpr absl::string_view kBom = "\xEF\xBB\xBF";

absl::string_view StripBom(absl::string_view s) {
  if (absl::StartsWith(s, kBom)) s.remove_prefix(kBom.size());
  return s;
}

absl::Status AtLine(const std::string& path, int line, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", why));
}

// A JSON label or group: a string, or an integer as its decimal text.
absl::StatusOr<std::string> LabelLike(const nlohmann::json& v,
                                      const std::string& name,
                                      const std::string& path, int line) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return v.dump();
  return AtLine(path, line,
                absl::StrCat("field \"", name,
                             "\" must be a string or an integer, got ",
                             v.type_name()));
}

absl::Status CheckRecord(const TextRecord& r, const RecordFields& fields,
                         const std::string& path) {
  if (r.text.empty()) {
    return AtLine(path, r.line,
                  absl::StrCat("empty text (field \"", fields.text, "\")"));
  }
  if (r.label.empty()) {
    return AtLine(path, r.line,
                  absl::StrCat("empty label (field \"", fields.label, "\")"));
  }
  return absl::OkStatus();
}

absl::Status NoRecords(const std::string& path) {
  return absl::InvalidArgumentError(
      absl::StrCat("text file ", path, " contains no examples"));
}

}  // namespace

absl::StatusOr<std::vector<TextRecord>> ReadJsonl(const std::string& path,
                                                  const RecordFields& fields) {
  ASSIGN_OR_RETURN(std::string contents, ReadMaybeGzippedFile(path));
  std::vector<TextRecord> out;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(StripBom(contents), '\n')) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line.begin(), line.end());
    } catch (const nlohmann::json::exception& e) {
      return AtLine(path, line_number, absl::StrCat("invalid JSON: ", e.what()));
    }
    if (!j.is_object()) {
      return AtLine(path, line_number,
                    absl::StrCat("expected a JSON object, got ", j.type_name()));
    }
    TextRecord r;
    r.line = line_number;
    const auto field = [&](const std::string& name) -> absl::StatusOr<const nlohmann::json*> {
      auto it = j.find(name);
      if (it == j.end()) {
        return AtLine(path, line_number,
                      absl::StrCat("missing field \"", name, "\""));
      }
      return &*it;
    };
    ASSIGN_OR_RETURN(const nlohmann::json* text, field(fields.text));
    if (!text->is_string()) {
      return AtLine(path, line_number,
                    absl::StrCat("field \"", fields.text,
                                 "\" must be a string, got ", text->type_name()));
    }
    r.text = text->get<std::string>();
    ASSIGN_OR_RETURN(const nlohmann::json* label, field(fields.label));
    ASSIGN_OR_RETURN(r.label, LabelLike(*label, fields.label, path, line_number));
    if (!fields.group.empty()) {
      ASSIGN_OR_RETURN(const nlohmann::json* group, field(fields.group));
      ASSIGN_OR_RETURN(r.group, LabelLike(*group, fields.group, path, line_number));
    }
    RETURN_IF_ERROR(CheckRecord(r, fields, path));
    out.push_back(std::move(r));
  }
  if (out.empty()) return NoRecords(path);
  return out;
}

absl::StatusOr<std::vector<CsvRow>> ParseCsv(const std::string& contents,
                                             const std::string& path) {
  const absl::string_view s = StripBom(contents);
  std::vector<CsvRow> rows;
  size_t i = 0;
  int line = 1;
  const auto at_record_end = [&](size_t j) {
    return j >= s.size() || s[j] == '\n' ||
           (s[j] == '\r' && j + 1 < s.size() && s[j + 1] == '\n');
  };
  while (i < s.size()) {
    CsvRow row;
    row.line = line;
    // An empty line is no record.
    if (at_record_end(i)) {
      i += s[i] == '\r' ? 2 : 1;
      ++line;
      continue;
    }
    while (true) {
      std::string field;
      if (i < s.size() && s[i] == '"') {
        const int opened = line;
        ++i;
        while (true) {
          if (i >= s.size()) {
            return AtLine(path, opened,
                          "unterminated quoted field (no closing '\"')");
          }
          const char c = s[i];
          if (c == '"') {
            if (i + 1 < s.size() && s[i + 1] == '"') {
              field.push_back('"');
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (c == '\n') ++line;
          field.push_back(c);
          ++i;
        }
        if (!at_record_end(i) && s[i] != ',') {
          return AtLine(path, line,
                        absl::StrCat("unexpected character '",
                                     absl::string_view(&s[i], 1),
                                     "' after a closing quote"));
        }
      } else {
        while (!at_record_end(i) && s[i] != ',') {
          if (s[i] == '"') {
            return AtLine(path, line,
                          "quote inside an unquoted field (quote the whole "
                          "field and double the quote)");
          }
          field.push_back(s[i]);
          ++i;
        }
      }
      row.fields.push_back(std::move(field));
      if (i < s.size() && s[i] == ',') {
        ++i;
        continue;
      }
      // End of record.
      if (i < s.size()) {
        i += s[i] == '\r' ? 2 : 1;
        ++line;
      }
      break;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string CsvQuote(const std::string& field) {
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

absl::StatusOr<std::vector<TextRecord>> ReadCsv(const std::string& path,
                                                const RecordFields& fields) {
  ASSIGN_OR_RETURN(std::string contents, ReadMaybeGzippedFile(path));
  ASSIGN_OR_RETURN(std::vector<CsvRow> rows, ParseCsv(contents, path));
  if (rows.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": empty CSV file (no header row)"));
  }
  const CsvRow& header = rows[0];
  std::set<std::string> seen;
  for (const std::string& name : header.fields) {
    if (!seen.insert(name).second) {
      return AtLine(path, header.line,
                    absl::StrCat("header names column \"", name, "\" twice"));
    }
  }
  const auto column = [&](const std::string& name) -> absl::StatusOr<size_t> {
    auto it = std::find(header.fields.begin(), header.fields.end(), name);
    if (it == header.fields.end()) {
      return AtLine(path, header.line,
                    absl::StrCat("no column \"", name, "\" in the header (",
                                 absl::StrJoin(header.fields, ", "), ")"));
    }
    return static_cast<size_t>(it - header.fields.begin());
  };
  ASSIGN_OR_RETURN(const size_t text_col, column(fields.text));
  ASSIGN_OR_RETURN(const size_t label_col, column(fields.label));
  size_t group_col = 0;
  if (!fields.group.empty()) {
    ASSIGN_OR_RETURN(group_col, column(fields.group));
  }
  std::vector<TextRecord> out;
  for (size_t k = 1; k < rows.size(); ++k) {
    const CsvRow& row = rows[k];
    if (row.fields.size() != header.fields.size()) {
      return AtLine(path, row.line,
                    absl::StrCat(row.fields.size(), " fields, the header has ",
                                 header.fields.size()));
    }
    TextRecord r;
    r.line = row.line;
    r.text = row.fields[text_col];
    r.label = row.fields[label_col];
    if (!fields.group.empty()) r.group = row.fields[group_col];
    RETURN_IF_ERROR(CheckRecord(r, fields, path));
    out.push_back(std::move(r));
  }
  if (out.empty()) return NoRecords(path);
  return out;
}

absl::StatusOr<LabelMap> LabelMap::FromNames(std::vector<std::string> names,
                                             const std::string& source) {
  LabelMap map;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": label ", i, " is empty"));
    }
    if (!map.ids_.emplace(names[i], static_cast<int>(i)).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": label \"", names[i], "\" is listed twice"));
    }
  }
  map.names_ = std::move(names);
  return map;
}

LabelMap LabelMap::Sorted(const std::vector<std::string>& labels) {
  std::set<std::string> distinct(labels.begin(), labels.end());
  LabelMap map;
  for (const std::string& name : distinct) {
    map.ids_.emplace(name, static_cast<int>(map.names_.size()));
    map.names_.push_back(name);
  }
  return map;
}

absl::StatusOr<int> LabelMap::Id(const std::string& name) const {
  auto it = ids_.find(name);
  if (it == ids_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown label \"", name, "\""));
  }
  return it->second;
}

absl::StatusOr<std::vector<LabeledText>> MapLabels(
    const std::vector<TextRecord>& records, const LabelMap& labels,
    const std::string& path) {
  std::vector<LabeledText> out;
  out.reserve(records.size());
  for (const TextRecord& r : records) {
    absl::StatusOr<int> id = labels.Id(r.label);
    if (!id.ok()) {
      return AtLine(path, r.line,
                    absl::StrCat("label \"", r.label,
                                 "\" is not one of the run's labels (",
                                 absl::StrJoin(labels.names(), ", "), ")"));
    }
    out.push_back(LabeledText{*id, r.text});
  }
  return out;
}

absl::Status WriteLabelsFile(const LabelMap& labels, const std::string& path) {
  return WriteFileAtomically(path, absl::StrCat(absl::StrJoin(labels.names(), "\n"), "\n"));
}

absl::StatusOr<LabelMap> ReadLabelsFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<std::string> names = absl::StrSplit(text, '\n');
  if (!names.empty() && names.back().empty()) names.pop_back();
  std::set<std::string> seen;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!names[i].empty() && names[i].back() == '\r') names[i].pop_back();
    if (names[i].empty()) {
      return AtLine(path, static_cast<int>(i + 1), "empty label name");
    }
    if (!seen.insert(names[i]).second) {
      return AtLine(path, static_cast<int>(i + 1),
                    absl::StrCat("label \"", names[i], "\" is listed twice"));
    }
  }
  if (names.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no labels"));
  }
  return LabelMap::FromNames(std::move(names), path);
}

}  // namespace layerfl
