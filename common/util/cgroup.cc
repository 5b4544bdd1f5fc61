#include "common/util/cgroup.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace layerfl {
namespace {

// cgroup v1 reports "no limit" as a huge page-aligned number.
constexpr int64_t kUnlimitedAbove = int64_t{1} << 60;

std::optional<std::string> ReadSmall(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(text.str()));
}

// Controller name ("" for v2) -> the process's cgroup path.
std::vector<std::pair<std::string, std::string>> Memberships(
    const std::string& proc_self_cgroup) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::optional<std::string> text = ReadSmall(proc_self_cgroup);
  if (!text.has_value()) return out;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    // hierarchy-id:controller[,controller...]:path
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    for (absl::string_view c : absl::StrSplit(f[1], ',')) {
      out.emplace_back(std::string(c), std::string(f[2]));
    }
  }
  return out;
}

std::string PathOf(const std::vector<std::pair<std::string, std::string>>& m,
                   const std::string& controller) {
  for (const auto& [c, path] : m) {
    if (c == controller) return path;
  }
  return "";
}

// The first of dir/<own path>/file and dir/file that exists.
std::optional<std::pair<std::string, std::string>> Find(
    const std::filesystem::path& dir, const std::string& own,
    const std::string& file) {
  std::vector<std::filesystem::path> tries;
  if (!own.empty() && own != "/") {
    tries.push_back(dir / std::filesystem::path(own).relative_path() / file);
  }
  tries.push_back(dir / file);
  for (const std::filesystem::path& p : tries) {
    std::optional<std::string> text = ReadSmall(p);
    if (text.has_value()) return std::make_pair(p.string(), *text);
  }
  return std::nullopt;
}

absl::Status Unparsable(const std::string& file, const std::string& text) {
  return absl::InvalidArgumentError(
      absl::StrCat(file, ": cannot read a cgroup limit from '", text, "'"));
}

}  // namespace

double CgroupBudgetMb(int64_t limit_bytes, int64_t resident_bytes) {
  const int64_t left = limit_bytes - resident_bytes;
  if (left <= 0) return 0;
  return std::floor(0.75 * static_cast<double>(left) / (1 << 20));
}

absl::StatusOr<CgroupLimits> ReadCgroupLimits(
    const std::string& root, const std::string& proc_self_cgroup) {
  const auto m = Memberships(proc_self_cgroup);
  const std::filesystem::path top(root);
  CgroupLimits out;

  // Memory: v2, then v1.
  if (auto v2 = Find(top, PathOf(m, ""), "memory.max")) {
    out.memory_file = v2->first;
    int64_t bytes = 0;
    if (v2->second != "max") {
      if (!absl::SimpleAtoi(v2->second, &bytes) || bytes < 0) {
        return Unparsable(v2->first, v2->second);
      }
      out.memory_bytes = bytes;
    }
  } else if (auto v1 = Find(top / "memory", PathOf(m, "memory"),
                            "memory.limit_in_bytes")) {
    out.memory_file = v1->first;
    int64_t bytes = 0;
    if (!absl::SimpleAtoi(v1->second, &bytes) || bytes < 0) {
      return Unparsable(v1->first, v1->second);
    }
    if (bytes < kUnlimitedAbove) out.memory_bytes = bytes;
  }

  // CPU: v2 "quota period" (quota "max" = none), then v1's two files.
  if (auto v2 = Find(top, PathOf(m, ""), "cpu.max")) {
    out.cpu_file = v2->first;
    std::vector<std::string> f = absl::StrSplit(v2->second, ' ');
    double quota = 0, period = 0;
    if (f.size() != 2) return Unparsable(v2->first, v2->second);
    if (f[0] != "max") {
      if (!absl::SimpleAtod(f[0], &quota) ||
          !absl::SimpleAtod(f[1], &period) || quota <= 0 || period <= 0) {
        return Unparsable(v2->first, v2->second);
      }
      out.cpus = quota / period;
    }
  } else if (auto quota = Find(top / "cpu", PathOf(m, "cpu"),
                               "cpu.cfs_quota_us")) {
    out.cpu_file = quota->first;
    int64_t q = 0;
    if (!absl::SimpleAtoi(quota->second, &q)) {
      return Unparsable(quota->first, quota->second);
    }
    if (q > 0) {  // -1 = no quota
      const std::string quota_dir =
          std::filesystem::path(quota->first).parent_path().string();
      const std::string period_file = quota_dir + "/cpu.cfs_period_us";
      const std::optional<std::string> p = ReadSmall(period_file);
      int64_t period = 0;
      if (!p.has_value() || !absl::SimpleAtoi(*p, &period) || period <= 0) {
        return Unparsable(period_file, p.value_or("(missing)"));
      }
      out.cpus = static_cast<double>(q) / static_cast<double>(period);
    }
  }
  return out;
}

}  // namespace layerfl
