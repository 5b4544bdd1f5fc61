#include "common/layers/profile.h"

#include <cmath>
#include <map>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

// Enough digits that Parse reads the same double back.
std::string Exact(double x) { return absl::StrFormat("%.17g", x); }

std::string Doubles(const std::vector<double>& v) {
  return absl::StrJoin(
      v, ",", [](std::string* out, double x) { out->append(Exact(x)); });
}

// A comma-separated list of numbers (doubles round-trip exactly).
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
  RETURN_IF_ERROR(CheckList(step_per_group_s, g, "step_per_group_s"));
  RETURN_IF_ERROR(CheckList(step_depth_s, g, "step_depth_s"));
  RETURN_IF_ERROR(CheckList(per_group_bytes, g, "per_group_bytes"));
  RETURN_IF_ERROR(CheckList(depth_bytes, g, "depth_bytes"));
  // Empty: not measured (a profile from before it was); scoring then goes
  // unlimited.
  if (!scoring_bytes.empty()) {
    RETURN_IF_ERROR(CheckList(scoring_bytes, g, "scoring_bytes"));
  }
  if (scoring_from_s.empty()) return absl::OkStatus();
  return CheckList(scoring_from_s, g, "scoring_from_s");
}

double ScoringSeconds(const TrainingProfile& profile, int from) {
  const int g = static_cast<int>(profile.groups.size());
  if (from >= g) return 0.0;
  if (from <= 0 || profile.scoring_from_s.empty()) return profile.scoring_s;
  return profile.scoring_from_s[from];
}

int LowestScorableGroup(const TrainingProfile& profile, int64_t limit_bytes) {
  const int g = static_cast<int>(profile.scoring_bytes.size());
  if (limit_bytes <= 0 || g == 0) return 0;
  for (int l = 0; l < g; ++l) {
    if (profile.scoring_bytes[l] <= limit_bytes) return l;
  }
  return g;
}

std::string TrainingProfile::Serialize() const {
  return absl::StrCat(
      "groups=", absl::StrJoin(groups, ","), " batch_size=", batch_size,
      " threads=", threads, " step_fixed_s=", Exact(step_fixed_s),
      " step_per_group_s=", Doubles(step_per_group_s),
      " step_depth_s=", Doubles(step_depth_s), " scoring_s=", Exact(scoring_s),
      " fixed_bytes=", fixed_bytes,
      " per_group_bytes=", absl::StrJoin(per_group_bytes, ","),
      " depth_bytes=", absl::StrJoin(depth_bytes, ","),
      " scoring_bytes=", absl::StrJoin(scoring_bytes, ","),
      scoring_from_s.empty() ? ""
                             : absl::StrCat(" scoring_from_s=",
                                            Doubles(scoring_from_s)),
      "\n");
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
  // One scalar field: an integer or a double, by the field's type.
  const auto scalar = [&](const char* key, auto* out) -> absl::Status {
    ASSIGN_OR_RETURN(std::string field, get(key));
    ASSIGN_OR_RETURN(auto values,
                     ParseList<std::decay_t<decltype(*out)>>(field, key));
    if (values.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("profile: ", key, " must be one number"));
    }
    *out = values[0];
    return absl::OkStatus();
  };
  const auto list = [&](const char* key, auto* out) -> absl::Status {
    ASSIGN_OR_RETURN(std::string field, get(key));
    ASSIGN_OR_RETURN(
        *out, ParseList<typename std::decay_t<decltype(*out)>::value_type>(
                  field, key));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(scalar("batch_size", &p.batch_size));
  RETURN_IF_ERROR(scalar("threads", &p.threads));
  RETURN_IF_ERROR(scalar("step_fixed_s", &p.step_fixed_s));
  RETURN_IF_ERROR(scalar("scoring_s", &p.scoring_s));
  RETURN_IF_ERROR(scalar("fixed_bytes", &p.fixed_bytes));
  RETURN_IF_ERROR(list("step_per_group_s", &p.step_per_group_s));
  RETURN_IF_ERROR(list("step_depth_s", &p.step_depth_s));
  RETURN_IF_ERROR(list("per_group_bytes", &p.per_group_bytes));
  RETURN_IF_ERROR(list("depth_bytes", &p.depth_bytes));
  RETURN_IF_ERROR(list("scoring_bytes", &p.scoring_bytes));
  if (kv.count("scoring_from_s")) {  // absent in profiles cached before it
    RETURN_IF_ERROR(list("scoring_from_s", &p.scoring_from_s));
  }
  RETURN_IF_ERROR(p.Validate());
  return p;
}

}  // namespace layerfl
