#ifndef LAYERFL_COMMON_CONFIG_YAML_READ_H_
#define LAYERFL_COMMON_CONFIG_YAML_READ_H_

// Typed reading of YAML nodes whose errors are InvalidArgument naming the
// field path and the position, e.g.
// "federated.rounds: expected an integer, got 'ten' (line 3, column 11)",
// and the writing back of the same values (Write, WriteMap): a written
// node reads back to the value it was written from, bit for bit. Used by
// the run config (config.cc) and the experiment grid
// (server/experiments/grid.cc). Stateless and thread-safe.

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/util/status_macros.h"
#include "yaml-cpp/yaml.h"

namespace layerfl {
namespace yaml_read {

// How errors word what was found. The defaults are the run config's wording;
// the experiment grid keeps its own.
struct Style {
  // What the map read at path "" is called in errors ("config", "grid").
  absl::string_view root = "config";
  // A null map (a section with every line commented out) keeps all defaults;
  // false: it is an error ("expected a map, got null").
  bool null_map_is_empty = true;
  // true: a plain scalar that reads as a finite number is shown unquoted
  // ("got 3"), an integer out of range names the range, a number that is not
  // finite gets its own message, and an unsigned integer is "an integer".
  // false: every scalar is quoted ("got '3'"), and numbers are "an integer",
  // "a non-negative integer" or "a finite number".
  bool detailed_numbers = true;
};

// " (line L, column C)", 1-based; "" for a null mark.
std::string Location(const YAML::Mark& mark);

// The node as shown after "got": null, a sequence, a map, or the scalar
// (quoted unless a plain finite number under style.detailed_numbers, so that
// 'abc' and '0.1', a quoted string, read as strings).
std::string Describe(const YAML::Node& node, const Style& style);

// "<path>: expected <expected>, got <Describe(node)><Location>".
absl::Status TypeError(const YAML::Node& node, const std::string& path,
                       absl::string_view expected, const Style& style);

// True for a scalar written without quotes (numbers must not be quoted).
bool IsPlainScalar(const YAML::Node& node);

// "path.key", or "key" at the root.
std::string Join(const std::string& path, absl::string_view key);

// Each reads `node` into *out; on error *out is unchanged.
absl::Status Read(const YAML::Node& node, const std::string& path, int* out,
                  const Style& style);
absl::Status Read(const YAML::Node& node, const std::string& path, int64_t* out,
                  const Style& style);
absl::Status Read(const YAML::Node& node, const std::string& path,
                  uint64_t* out, const Style& style);
absl::Status Read(const YAML::Node& node, const std::string& path, double* out,
                  const Style& style);
// YAML 1.2 booleans only: true/false (also True, TRUE, ...), unquoted; the
// YAML 1.1 spellings yes/no/on/off are refused as ambiguous.
absl::Status Read(const YAML::Node& node, const std::string& path, bool* out,
                  const Style& style);
absl::Status Read(const YAML::Node& node, const std::string& path,
                  std::string* out, const Style& style);

// A sequence; element i is read at "path[i]". Elements of a type of the
// caller's are read by a Read() overload found next to that type.
template <typename T>
absl::Status Read(const YAML::Node& node, const std::string& path,
                  std::vector<T>* out, const Style& style) {
  if (!node.IsSequence()) return TypeError(node, path, "a sequence", style);
  std::vector<T> values(node.size());
  for (size_t i = 0; i < node.size(); ++i) {
    RETURN_IF_ERROR(
        Read(node[i], absl::StrCat(path, "[", i, "]"), &values[i], style));
  }
  *out = std::move(values);
  return absl::OkStatus();
}

// The node Read() reads back to `value`: integers and booleans as plain
// scalars, doubles in the shortest text that parses back to the same bits.
YAML::Node Write(int value);
YAML::Node Write(int64_t value);
YAML::Node Write(uint64_t value);
YAML::Node Write(double value);
YAML::Node Write(bool value);
YAML::Node Write(const std::string& value);

template <typename T>
YAML::Node Write(const std::vector<T>& values) {
  YAML::Node node(YAML::NodeType::Sequence);
  for (const T& v : values) node.push_back(Write(v));
  return node;
}

struct Field;

// One key of a map: how to read its value, found at the given path, and how
// to write it back. A section (a nested map) also lists its own fields.
struct Field {
  using Reader = std::function<absl::Status(
      const YAML::Node& node, const std::string& path, const Style& style)>;
  using Writer = std::function<YAML::Node()>;
  const char* name;
  Reader read;
  bool required = false;
  Writer write;
  std::function<std::vector<Field>()> section;  // null for a leaf
};

// A field read with Read() into *out and written from it; *out must outlive
// the field.
template <typename T>
Field Bind(const char* name, T* out, bool required = false) {
  return {name,
          [out](const YAML::Node& node, const std::string& path,
                const Style& style) { return Read(node, path, out, style); },
          required, [out] { return Write(*out); }, nullptr};
}

// Reads a map whose keys must all be among `fields`, each at most once, and
// must include the required ones. Errors name unknown keys with the valid
// ones.
absl::Status ReadMap(const YAML::Node& node, const std::string& path,
                     const std::vector<Field>& fields, const Style& style);

// A map with every one of `fields`, in their order.
YAML::Node WriteMap(const std::vector<Field>& fields);

// A nested map: the section *out, whose fields `fields(out)` lists.
template <typename Section>
Field BindSection(const char* name, Section* out,
                  std::vector<Field> (*fields)(Section*)) {
  return {name,
          [out, fields](const YAML::Node& node, const std::string& path,
                        const Style& style) {
            return ReadMap(node, path, fields(out), style);
          },
          false, [out, fields] { return WriteMap(fields(out)); },
          [out, fields] { return fields(out); }};
}

// Calls visit(path, field) for every leaf field under `fields` (sections
// recursed into), in order; `path` is the leaf's dotted path under `prefix`.
void ForEachLeaf(const std::vector<Field>& fields, const std::string& prefix,
                 const std::function<void(const std::string& path,
                                          const Field& field)>& visit);

// A node's YAML text on one line (flow style), for messages.
std::string FlowText(const YAML::Node& node);

}  // namespace yaml_read
}  // namespace layerfl

#endif  // LAYERFL_COMMON_CONFIG_YAML_READ_H_
