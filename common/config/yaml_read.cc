#include "common/config/yaml_read.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <set>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"

namespace layerfl {
namespace yaml_read {
namespace {

template <typename Int>
absl::Status ReadInteger(const YAML::Node& node, const std::string& path,
                         Int* out, const Style& style) {
  const absl::string_view expected =
      std::is_unsigned_v<Int> && !style.detailed_numbers
          ? "a non-negative integer"
          : "an integer";
  if (!IsPlainScalar(node)) return TypeError(node, path, expected, style);
  Int value = 0;
  if (absl::SimpleAtoi(node.Scalar(), &value)) {
    *out = value;
    return absl::OkStatus();
  }
  // An integer that does not fit gets its own message.
  const std::string& text = node.Scalar();
  const size_t sign = text.find_first_not_of("+-") == 1 ? 1 : 0;
  if (style.detailed_numbers && text.size() > sign &&
      text.find_first_not_of("0123456789", sign) == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": expected an integer in [", std::numeric_limits<Int>::min(),
        ", ", std::numeric_limits<Int>::max(), "], got ", text,
        Location(node.Mark())));
  }
  return TypeError(node, path, expected, style);
}

}  // namespace

std::string Location(const YAML::Mark& mark) {
  if (mark.is_null()) return "";
  return absl::StrCat(" (line ", mark.line + 1, ", column ", mark.column + 1,
                      ")");
}

std::string Describe(const YAML::Node& node, const Style& style) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Scalar: {
      double d = 0;
      if (style.detailed_numbers && node.Tag() == "?" &&
          absl::SimpleAtod(node.Scalar(), &d) && std::isfinite(d)) {
        return node.Scalar();
      }
      return absl::StrCat("'", node.Scalar(), "'");
    }
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

absl::Status TypeError(const YAML::Node& node, const std::string& path,
                       absl::string_view expected, const Style& style) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": expected ", expected, ", got ",
                   Describe(node, style), Location(node.Mark())));
}

bool IsPlainScalar(const YAML::Node& node) {
  return node.IsScalar() && node.Tag() != "!";
}

std::string Join(const std::string& path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

absl::Status Read(const YAML::Node& node, const std::string& path, int* out,
                  const Style& style) {
  return ReadInteger(node, path, out, style);
}

absl::Status Read(const YAML::Node& node, const std::string& path, int64_t* out,
                  const Style& style) {
  return ReadInteger(node, path, out, style);
}

absl::Status Read(const YAML::Node& node, const std::string& path,
                  uint64_t* out, const Style& style) {
  return ReadInteger(node, path, out, style);
}

absl::Status Read(const YAML::Node& node, const std::string& path, double* out,
                  const Style& style) {
  double value = 0;
  if (!IsPlainScalar(node) || !absl::SimpleAtod(node.Scalar(), &value)) {
    return TypeError(node, path,
                     style.detailed_numbers ? "a number" : "a finite number",
                     style);
  }
  if (!std::isfinite(value)) {
    if (!style.detailed_numbers) {
      return TypeError(node, path, "a finite number", style);
    }
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a finite number, got ", node.Scalar(),
                     Location(node.Mark())));
  }
  *out = value;
  return absl::OkStatus();
}

absl::Status Read(const YAML::Node& node, const std::string& path, bool* out,
                  const Style& style) {
  if (IsPlainScalar(node)) {
    const std::string& text = node.Scalar();
    if (text == "true" || text == "True" || text == "TRUE") {
      *out = true;
      return absl::OkStatus();
    }
    if (text == "false" || text == "False" || text == "FALSE") {
      *out = false;
      return absl::OkStatus();
    }
  }
  return TypeError(node, path, "a boolean (true or false)", style);
}

absl::Status Read(const YAML::Node& node, const std::string& path,
                  std::string* out, const Style& style) {
  if (!node.IsScalar()) return TypeError(node, path, "a string", style);
  *out = node.Scalar();
  return absl::OkStatus();
}

absl::Status ReadMap(const YAML::Node& node, const std::string& path,
                     const std::vector<Field>& fields, const Style& style) {
  if (style.null_map_is_empty && node.IsNull()) return absl::OkStatus();
  const std::string where = path.empty() ? std::string(style.root) : path;
  if (!node.IsMap()) return TypeError(node, where, "a map", style);
  std::set<std::string> seen;
  for (const auto& entry : node) {
    const YAML::Node& key = entry.first;
    if (!key.IsScalar()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": keys must be strings, got ",
                       Describe(key, style), Location(key.Mark())));
    }
    const std::string field_path = Join(path, key.Scalar());
    const Field* field = nullptr;
    for (const Field& f : fields) {
      if (key.Scalar() == f.name) field = &f;
    }
    if (field == nullptr) {
      std::vector<std::string> names;
      for (const Field& f : fields) names.push_back(f.name);
      return absl::InvalidArgumentError(absl::StrCat(
          field_path, ": unknown field", Location(key.Mark()),
          "; valid fields of ", where, ": ", absl::StrJoin(names, ", ")));
    }
    if (!seen.insert(key.Scalar()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(field_path, ": duplicate field", Location(key.Mark())));
    }
    RETURN_IF_ERROR(field->read(entry.second, field_path, style));
  }
  for (const Field& f : fields) {
    if (f.required && !seen.count(f.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(Join(path, f.name), ": required field is missing"));
    }
  }
  return absl::OkStatus();
}

YAML::Node Write(int value) { return YAML::Node(absl::StrCat(value)); }
YAML::Node Write(int64_t value) { return YAML::Node(absl::StrCat(value)); }
YAML::Node Write(uint64_t value) { return YAML::Node(absl::StrCat(value)); }

YAML::Node Write(double value) {
  char text[64];
  const std::to_chars_result r =
      std::to_chars(text, text + sizeof(text), value);
  return YAML::Node(std::string(text, r.ptr));
}

YAML::Node Write(bool value) { return YAML::Node(value ? "true" : "false"); }

YAML::Node Write(const std::string& value) { return YAML::Node(value); }

YAML::Node WriteMap(const std::vector<Field>& fields) {
  YAML::Node node(YAML::NodeType::Map);
  for (const Field& f : fields) node[f.name] = f.write();
  return node;
}

void ForEachLeaf(const std::vector<Field>& fields, const std::string& prefix,
                 const std::function<void(const std::string& path,
                                          const Field& field)>& visit) {
  for (const Field& f : fields) {
    const std::string path = Join(prefix, f.name);
    if (f.section) {
      ForEachLeaf(f.section(), path, visit);
    } else {
      visit(path, f);
    }
  }
}

std::string FlowText(const YAML::Node& node) {
  YAML::Emitter out;
  out.SetMapFormat(YAML::Flow);
  out.SetSeqFormat(YAML::Flow);
  out << node;
  return out.c_str();
}

}  // namespace yaml_read
}  // namespace layerfl
