#ifndef LAYERFL_COMMON_METRICS_PROCESS_METRICS_H_
#define LAYERFL_COMMON_METRICS_PROCESS_METRICS_H_

// The process's own resources, as the Prometheus client libraries export
// them under their standard names (process_resident_memory_bytes,
// process_cpu_seconds_total, ...), read from /proc at each scrape: what an
// operator watches to see a coordinator hold 10,000 clients (memory per
// client, CPU per round) without a separate node exporter. Linux only;
// torch-free.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace layerfl {

struct ProcessStats {
  double cpu_seconds = 0;      // user + system
  int64_t resident_bytes = 0;  // RSS
  int64_t peak_resident_bytes = 0;  // VmHWM: the RSS's peak so far
  int64_t virtual_bytes = 0;
  int64_t open_fds = 0;
  int64_t max_fds = 0;         // the soft RLIMIT_NOFILE
  int64_t threads = 0;
  double start_time_s = 0;     // since the Unix epoch
};

// This process's stats now. An error names the /proc file that could not be
// read or parsed.
absl::StatusOr<ProcessStats> ReadProcessStats();

// process_cpu_seconds_total (counter), process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_threads, process_start_time_seconds (gauges). None when /proc
// cannot be read.
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

// `families` (a registry's) followed by ProcessCollector's, to serialize.
std::vector<prometheus::MetricFamily> WithProcessMetrics(
    std::vector<prometheus::MetricFamily> families);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_METRICS_PROCESS_METRICS_H_
