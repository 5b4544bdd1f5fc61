// The process metrics (common/metrics): what /proc says, in the names the
// Prometheus client libraries use, checked against the kernel's own views
// (/proc/self/status, /proc/self/task) and against what the test does
// (memory touched, files opened, CPU burnt).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "common/metrics/process_metrics.h"
#include "prometheus/text_serializer.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;

int64_t StatusKb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  }
  return -1;
}

TEST(ProcessStatsTest, AgreesWithTheKernelAndFollowsWhatTheProcessDoes) {
  absl::StatusOr<ProcessStats> a = ReadProcessStats();
  ASSERT_TRUE(a.ok()) << a.status();
  const int64_t rss_kb = StatusKb("VmRSS");
  EXPECT_NEAR(a->resident_bytes / 1024.0, rss_kb, 1024);  // within 1 MiB
  EXPECT_NEAR(a->virtual_bytes / 1024.0, StatusKb("VmSize"), 1024);
  EXPECT_NEAR(a->peak_resident_bytes / 1024.0, StatusKb("VmHWM"), 1024);
  EXPECT_GE(a->peak_resident_bytes, a->resident_bytes);
  int64_t tasks = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    (void)e;
    ++tasks;
  }
  EXPECT_EQ(a->threads, tasks);
  EXPECT_GT(a->max_fds, 0);
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  EXPECT_LE(a->start_time_s, now + 1);
  EXPECT_GT(a->start_time_s, now - 600);  // this test process started lately

  // 64 MiB touched: the resident size grows by about as much.
  const auto window = std::chrono::steady_clock::now();
  constexpr size_t kBytes = size_t{64} << 20;
  std::unique_ptr<char[]> block(new char[kBytes]);
  std::memset(block.get(), 1, kBytes);
  // Two more descriptors.
  const int f1 = open("/proc/self/stat", O_RDONLY);
  const int f2 = open("/proc/self/stat", O_RDONLY);
  ASSERT_GE(f1, 0);
  ASSERT_GE(f2, 0);
  // 0.3 s of CPU.
  const auto t0 = std::chrono::steady_clock::now();
  volatile double x = 0;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(300)) {
    for (int i = 0; i < 1000; ++i) x = x + 1e-9 * i;
  }
  absl::StatusOr<ProcessStats> b = ReadProcessStats();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_GE(b->resident_bytes - a->resident_bytes, int64_t{60} << 20);
  EXPECT_GE(b->peak_resident_bytes, b->resident_bytes);
  EXPECT_EQ(b->open_fds - a->open_fds, 2);
  // CPU time ticks in 10 ms; one thread gets at most the wall time of the
  // window (the page faults of the 64 MiB included), a loaded machine less.
  const double wall = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - window)
                          .count();
  EXPECT_GT(b->cpu_seconds - a->cpu_seconds, 0.05);
  EXPECT_LT(b->cpu_seconds - a->cpu_seconds, wall + 0.03);
  close(f1);
  close(f2);
  EXPECT_EQ(block[kBytes - 1], 1);
}

TEST(ProcessCollectorTest, ExportsTheStandardNamesAndTypes) {
  const std::string text =
      prometheus::TextSerializer().Serialize(ProcessCollector().Collect());
  for (const char* line : {"# TYPE process_cpu_seconds_total counter",
                           "# TYPE process_resident_memory_bytes gauge",
                           "# TYPE process_virtual_memory_bytes gauge",
                           "# TYPE process_open_fds gauge",
                           "# TYPE process_max_fds gauge",
                           "# TYPE process_threads gauge",
                           "# TYPE process_start_time_seconds gauge"}) {
    EXPECT_THAT(text, HasSubstr(std::string(line) + "\n")) << text;
  }
  // Appended after a registry's families, not instead of them.
  prometheus::MetricFamily mine;
  mine.name = "layerfl_x";
  mine.help = "x";
  mine.type = prometheus::MetricType::Gauge;
  mine.metric.emplace_back();
  const auto all = WithProcessMetrics({mine});
  ASSERT_EQ(all.size(), 8u);
  EXPECT_EQ(all[0].name, "layerfl_x");
  EXPECT_EQ(all[2].name, "process_resident_memory_bytes");
}

}  // namespace
}  // namespace layerfl
