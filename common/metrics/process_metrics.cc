#include "common/metrics/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace layerfl {
namespace {

absl::StatusOr<std::string> ReadProc(const char* path) {
  std::ifstream in(path);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The value of the line "<key> <value>" of a /proc file's `text`, stripped
// of blanks and of `unit`; "" when there is no such line.
absl::string_view LineValue(absl::string_view text, absl::string_view key,
                            absl::string_view unit = "") {
  const size_t at = text.find(absl::StrCat("\n", key));
  if (at == absl::string_view::npos) return "";
  const size_t from = at + 1 + key.size();
  const size_t end = text.find('\n', from);
  return absl::StripAsciiWhitespace(absl::StripSuffix(
      absl::StripAsciiWhitespace(text.substr(from, end - from)), unit));
}

}  // namespace

absl::StatusOr<ProcessStats> ReadProcessStats() {
  absl::StatusOr<std::string> stat = ReadProc("/proc/self/stat");
  if (!stat.ok()) return stat.status();
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // the fields are counted from the last ')'. After it, field 3 (state) is
  // index 0: utime 14, stime 15, num_threads 20, starttime 22, vsize 23,
  // rss 24 (in pages) are indices 11, 12, 17, 19, 20, 21.
  const size_t close = stat->rfind(')');
  if (close == std::string::npos) {
    return absl::DataLossError("/proc/self/stat: no ')' after the name");
  }
  const std::vector<std::string> f = absl::StrSplit(
      stat->substr(close + 1), ' ', absl::SkipEmpty());
  if (f.size() < 22) {
    return absl::DataLossError(absl::StrCat("/proc/self/stat: ", f.size(),
                                            " fields after the name, want 22"));
  }
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  const int64_t page = sysconf(_SC_PAGESIZE);
  double utime = 0, stime = 0, started_ticks = 0;
  ProcessStats s;
  int64_t rss_pages = 0;
  if (!absl::SimpleAtod(f[11], &utime) || !absl::SimpleAtod(f[12], &stime) ||
      !absl::SimpleAtoi(f[17], &s.threads) ||
      !absl::SimpleAtod(f[19], &started_ticks) ||
      !absl::SimpleAtoi(f[20], &s.virtual_bytes) ||
      !absl::SimpleAtoi(f[21], &rss_pages)) {
    return absl::DataLossError("/proc/self/stat: a field is not a number");
  }
  s.cpu_seconds = (utime + stime) / tick;
  s.resident_bytes = rss_pages * page;
  // starttime counts ticks since boot; /proc/stat's btime is the boot.
  absl::StatusOr<std::string> boot = ReadProc("/proc/stat");
  if (!boot.ok()) return boot.status();
  double btime = 0;
  if (!absl::SimpleAtod(LineValue(*boot, "btime "), &btime)) {
    return absl::DataLossError("/proc/stat: no btime line");
  }
  s.start_time_s = btime + started_ticks / tick;
  absl::StatusOr<std::string> status = ReadProc("/proc/self/status");
  if (!status.ok()) return status.status();
  int64_t hwm_kb = 0;
  if (!absl::SimpleAtoi(LineValue(*status, "VmHWM:", "kB"), &hwm_kb)) {
    return absl::DataLossError("/proc/self/status: no VmHWM line");
  }
  s.peak_resident_bytes = hwm_kb * 1024;
  std::error_code error;
  for (std::filesystem::directory_iterator it("/proc/self/fd", error), end;
       !error && it != end; it.increment(error)) {
    ++s.open_fds;
  }
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot list /proc/self/fd: ", error.message()));
  }
  --s.open_fds;  // the listing's own descriptor
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    s.max_fds = static_cast<int64_t>(limit.rlim_cur);
  }
  return s;
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  absl::StatusOr<ProcessStats> s = ReadProcessStats();
  if (!s.ok()) return {};
  const auto family = [](const char* name, const char* help,
                         prometheus::MetricType type, double value) {
    prometheus::MetricFamily f;
    f.name = name;
    f.help = help;
    f.type = type;
    prometheus::ClientMetric m;
    if (type == prometheus::MetricType::Counter) {
      m.counter.value = value;
    } else {
      m.gauge.value = value;
    }
    f.metric.push_back(m);
    return f;
  };
  using prometheus::MetricType;
  return {
      family("process_cpu_seconds_total",
             "Total user and system CPU time spent in seconds.",
             MetricType::Counter, s->cpu_seconds),
      family("process_resident_memory_bytes", "Resident memory size in bytes.",
             MetricType::Gauge, static_cast<double>(s->resident_bytes)),
      family("process_virtual_memory_bytes", "Virtual memory size in bytes.",
             MetricType::Gauge, static_cast<double>(s->virtual_bytes)),
      family("process_open_fds", "Number of open file descriptors.",
             MetricType::Gauge, static_cast<double>(s->open_fds)),
      family("process_max_fds", "Maximum number of open file descriptors.",
             MetricType::Gauge, static_cast<double>(s->max_fds)),
      family("process_threads", "Number of OS threads in the process.",
             MetricType::Gauge, static_cast<double>(s->threads)),
      family("process_start_time_seconds",
             "Start time of the process since unix epoch in seconds.",
             MetricType::Gauge, s->start_time_s),
  };
}

std::vector<prometheus::MetricFamily> WithProcessMetrics(
    std::vector<prometheus::MetricFamily> families) {
  for (prometheus::MetricFamily& f : ProcessCollector().Collect()) {
    families.push_back(std::move(f));
  }
  return families;
}

}  // namespace layerfl
