#ifndef LAYERFL_COMMON_UTIL_CGROUP_H_
#define LAYERFL_COMMON_UTIL_CGROUP_H_

// The memory and CPU limits of the cgroup a process runs in: what a
// container's mem_limit / cpus (docker, Kubernetes) give it, so that a client
// daemon in a container declares the device it really is. Reads cgroup v2
// (memory.max, cpu.max) and v1 (memory/memory.limit_in_bytes,
// cpu/cpu.cfs_quota_us + cpu.cfs_period_us). Torch-free; no state.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace layerfl {

struct CgroupLimits {
  // Bytes the cgroup may use; nullopt when it has no limit.
  std::optional<int64_t> memory_bytes;
  // CPUs' worth of time per period (quota / period); nullopt when unlimited.
  std::optional<double> cpus;
  // The files the values came from ("" when none was found).
  std::string memory_file, cpu_file;
};

// Reads the limits of the cgroup that `proc_self_cgroup` names, under
// `root`. For each controller the process's own cgroup directory is tried
// first (a process on a host), then the mount's top (inside a container,
// where the runtime mounts the container's cgroup there). A limit file that
// exists but does not parse is InvalidArgument naming the file and its
// text; no cgroup file at all is not an error (no limits).
absl::StatusOr<CgroupLimits> ReadCgroupLimits(
    const std::string& root = "/sys/fs/cgroup",
    const std::string& proc_self_cgroup = "/proc/self/cgroup");

// The MiB of peak training memory a client can declare on a device whose
// memory is `limit_bytes`, with `resident_bytes` already in use by the
// process (libraries, runtime): 3/4 of what is left, the rest being headroom
// for what the training profile does not count (the data, transfer buffers,
// the allocator's free lists). 0 when nothing is left.
double CgroupBudgetMb(int64_t limit_bytes, int64_t resident_bytes);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_UTIL_CGROUP_H_
