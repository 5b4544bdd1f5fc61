#include "common/layers/layer_groups.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace layerfl {

bool GlobMatch(const std::string& pattern, const std::string& name) {
  // Iterative wildcard match with single backtrack point (linear in practice).
  size_t p = 0, n = 0, star = std::string::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

absl::StatusOr<std::vector<LayerGroup>> AssignGroups(
    const std::vector<NamedShape>& params,
    const std::vector<GroupPatterns>& declared) {
  absl::flat_hash_set<std::string> seen;
  std::vector<LayerGroup> groups;
  groups.reserve(declared.size());
  for (const GroupPatterns& g : declared) {
    if (!seen.insert(g.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer group '", g.name, "' is declared twice"));
    }
    LayerGroup group;
    group.name = g.name;
    groups.push_back(std::move(group));
  }
  for (const NamedShape& p : params) {
    int owner = -1;
    for (size_t gi = 0; gi < declared.size(); ++gi) {
      bool match = false;
      for (const std::string& pat : declared[gi].patterns) {
        if (GlobMatch(pat, p.name)) {
          match = true;
          break;
        }
      }
      if (!match) continue;
      if (owner >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "parameter '", p.name, "' is matched by two layer groups: '",
            declared[owner].name, "' and '", declared[gi].name, "'"));
      }
      owner = static_cast<int>(gi);
    }
    if (owner < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", p.name, "' is matched by no layer group"));
    }
    groups[owner].param_names.push_back(p.name);
    groups[owner].num_params += p.numel;
  }
  for (const LayerGroup& g : groups) {
    if (g.param_names.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer group '", g.name, "' matches no parameter"));
    }
  }
  return groups;
}

absl::Status MarkGroups(const std::vector<std::string>& frozen,
                        const std::vector<std::string>& common,
                        std::vector<LayerGroup>& groups) {
  auto mark = [&](const std::vector<std::string>& names, const char* field,
                  bool LayerGroup::*flag) -> absl::Status {
    for (const std::string& name : names) {
      absl::StatusOr<int> idx = FindGroup(groups, name);
      if (!idx.ok()) {
        std::vector<std::string> valid;
        for (const LayerGroup& g : groups) valid.push_back(g.name);
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": unknown layer group '", name,
                         "' (groups: ", absl::StrJoin(valid, ", "), ")"));
      }
      groups[*idx].*flag = true;
    }
    return absl::OkStatus();
  };
  if (absl::Status s = mark(frozen, "model.frozen", &LayerGroup::frozen);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = mark(common, "model.common", &LayerGroup::common);
      !s.ok()) {
    return s;
  }
  for (const LayerGroup& g : groups) {
    if (g.frozen && g.common) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.common: layer group '", g.name, "' is also frozen"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> FindGroup(const std::vector<LayerGroup>& groups,
                              const std::string& name) {
  for (size_t i = 0; i < groups.size(); ++i) {
    if (groups[i].name == name) return static_cast<int>(i);
  }
  return absl::NotFoundError(absl::StrCat("unknown layer group '", name, "'"));
}

}  // namespace layerfl
