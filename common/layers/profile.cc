#include "common/layers/profile.h"

#include <cmath>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

template <typename T>
absl::Status CheckList(const std::vector<T>& v, size_t groups,
                       const char* field) {
  if (v.size() != groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        "profile.", field, ": ", v.size(), " values for ", groups, " groups"));
  }
  for (size_t l = 0; l < v.size(); ++l) {
    const double x = static_cast<double>(v[l]);
    if (!std::isfinite(x) || x < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "profile.", field, "[", l, "]: must be finite and >= 0, got ", x));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckValue(double x, const char* field) {
  if (std::isfinite(x) && x >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("profile.", field, ": must be finite and >= 0, got ", x));
}

std::string Doubles(const std::vector<double>& v) {
  return absl::StrJoin(v, ",", [](std::string* out, double x) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", x);
    out->append(buf);
  });
}

template <typename T>
absl::StatusOr<std::vector<T>> ParseList(absl::string_view text,
                                         absl::string_view key) {
  std::vector<T> out;
  if (text.empty()) return out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    T x;
    bool ok;
    if constexpr (std::is_same_v<T, double>) {
      ok = absl::SimpleAtod(part, &x);
    } else {
      ok = absl::SimpleAtoi(part, &x);
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("profile: bad number '", part, "' in ", key));
    }
    out.push_back(x);
  }
  return out;
}

}  // namespace

absl::Status TrainingProfile::Validate() const {
  const size_t g = groups.size();
  if (g == 0) return absl::InvalidArgumentError("profile.groups: empty");
  if (batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("profile.batch_size: must be >= 1, got ", batch_size));
  }
  RETURN_IF_ERROR(CheckValue(step_fixed_s, "step_fixed_s"));
  RETURN_IF_ERROR(CheckValue(scoring_s, "scoring_s"));
  RETURN_IF_ERROR(CheckValue(static_cast<double>(fixed_bytes), "fixed_bytes"));
  RETURN_IF_ERROR(CheckValue(static_cast<double>(scoring_peak_bytes),
                             "scoring_peak_bytes"));
  RETURN_IF_ERROR(CheckList(step_per_group_s, g, "step_per_group_s"));
  RETURN_IF_ERROR(CheckList(step_depth_s, g, "step_depth_s"));
  RETURN_IF_ERROR(CheckList(per_group_bytes, g, "per_group_bytes"));
  return CheckList(depth_bytes, g, "depth_bytes");
}

std::string TrainingProfile::Serialize() const {
  auto d = [](double x) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", x);
    return std::string(buf);
  };
  return absl::StrCat("groups=", absl::StrJoin(groups, ","),
                      " batch_size=", batch_size, " threads=", threads,
                      " step_fixed_s=", d(step_fixed_s),
                      " step_per_group_s=", Doubles(step_per_group_s),
                      " step_depth_s=", Doubles(step_depth_s),
                      " scoring_s=", d(scoring_s), " fixed_bytes=", fixed_bytes,
                      " per_group_bytes=", absl::StrJoin(per_group_bytes, ","),
                      " depth_bytes=", absl::StrJoin(depth_bytes, ","),
                      " scoring_peak_bytes=", scoring_peak_bytes, "\n");
}

absl::StatusOr<TrainingProfile> TrainingProfile::Parse(
    const std::string& text) {
  std::map<std::string, std::string> kv;
  for (absl::string_view field : absl::StrSplit(
           absl::StripAsciiWhitespace(text), ' ', absl::SkipEmpty())) {
    std::vector<std::string> parts =
        absl::StrSplit(field, absl::MaxSplits('=', 1));
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("profile: field '", field, "' is not key=value"));
    }
    kv[parts[0]] = parts[1];
  }
  const auto get = [&](const char* key) -> absl::StatusOr<std::string> {
    auto it = kv.find(key);
    if (it == kv.end()) {
      return absl::InvalidArgumentError(absl::StrCat("profile: no ", key));
    }
    return it->second;
  };
  TrainingProfile p;
  ASSIGN_OR_RETURN(std::string groups, get("groups"));
  p.groups = absl::StrSplit(groups, ',', absl::SkipEmpty());
  ASSIGN_OR_RETURN(std::string s, get("batch_size"));
  if (!absl::SimpleAtoi(s, &p.batch_size))
    return absl::InvalidArgumentError("profile: bad batch_size");
  ASSIGN_OR_RETURN(s, get("threads"));
  if (!absl::SimpleAtoi(s, &p.threads))
    return absl::InvalidArgumentError("profile: bad threads");
  ASSIGN_OR_RETURN(s, get("step_fixed_s"));
  if (!absl::SimpleAtod(s, &p.step_fixed_s))
    return absl::InvalidArgumentError("profile: bad step_fixed_s");
  ASSIGN_OR_RETURN(s, get("scoring_s"));
  if (!absl::SimpleAtod(s, &p.scoring_s))
    return absl::InvalidArgumentError("profile: bad scoring_s");
  ASSIGN_OR_RETURN(s, get("fixed_bytes"));
  if (!absl::SimpleAtoi(s, &p.fixed_bytes))
    return absl::InvalidArgumentError("profile: bad fixed_bytes");
  ASSIGN_OR_RETURN(s, get("scoring_peak_bytes"));
  if (!absl::SimpleAtoi(s, &p.scoring_peak_bytes))
    return absl::InvalidArgumentError("profile: bad scoring_peak_bytes");
  ASSIGN_OR_RETURN(s, get("step_per_group_s"));
  ASSIGN_OR_RETURN(p.step_per_group_s,
                   ParseList<double>(s, "step_per_group_s"));
  ASSIGN_OR_RETURN(s, get("step_depth_s"));
  ASSIGN_OR_RETURN(p.step_depth_s, ParseList<double>(s, "step_depth_s"));
  ASSIGN_OR_RETURN(s, get("per_group_bytes"));
  ASSIGN_OR_RETURN(p.per_group_bytes, ParseList<int64_t>(s, "per_group_bytes"));
  ASSIGN_OR_RETURN(s, get("depth_bytes"));
  ASSIGN_OR_RETURN(p.depth_bytes, ParseList<int64_t>(s, "depth_bytes"));
  RETURN_IF_ERROR(p.Validate());
  return p;
}

}  // namespace layerfl
