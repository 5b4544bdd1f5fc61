// The asynchronous buffer's journal (server/checkpoint/journal.h): what one
// durable append costs, for a task record (~100 bytes: every task handed
// out) and an update record (1 MiB: a ~260k-parameter sparse update), against
// the same appends with the write alone (no fdatasync), in the same run on
// the same file system. Usage: journal_bench [DIR] (default: the current
// directory; the journal is removed afterwards).

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/checkpoint/journal.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point a,
               std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Median over `reps` of the seconds per record of `n` appends of `record`.
double Durable(const std::string& path, const std::string& record, int n,
               int reps) {
  std::vector<double> per;
  for (int r = 0; r < reps; ++r) {
    std::remove(path.c_str());
    auto journal = layerfl::Journal::Open(path);
    if (!journal.ok()) {
      std::fprintf(stderr, "%s\n", journal.status().ToString().c_str());
      std::exit(1);
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      if (!(*journal)->Append(record).ok()) std::exit(1);
    }
    per.push_back(Seconds(t0, std::chrono::steady_clock::now()) / n);
  }
  std::sort(per.begin(), per.end());
  return per[per.size() / 2];
}

// The same frames written with write(2) alone, no sync.
double WriteOnly(const std::string& path, const std::string& record, int n,
                 int reps) {
  const std::string frame = layerfl::FrameRecord(record);
  std::vector<double> per;
  for (int r = 0; r < reps; ++r) {
    std::remove(path.c_str());
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      if (::write(fd, frame.data(), frame.size()) !=
          static_cast<ssize_t>(frame.size())) {
        std::exit(1);
      }
    }
    per.push_back(Seconds(t0, std::chrono::steady_clock::now()) / n);
    ::close(fd);
  }
  std::sort(per.begin(), per.end());
  return per[per.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : ".";
  const std::string path = absl::StrCat(dir, "/journal_bench.journal");
  std::printf(
      "journal appends (fdatasync each) vs write(2) alone, same run, %s\n",
      dir.c_str());
  std::printf("%-10s %8s %14s %14s %12s %10s\n", "record", "n", "durable us",
              "write-only us", "durable/s", "ratio");
  for (const auto& [name, bytes, n] :
       {std::tuple<const char*, size_t, int>{"task", 100, 400},
        {"update", size_t{1} << 20, 40}}) {
    const std::string record(bytes, 'x');
    const double durable = Durable(path, record, n, 5);
    const double plain = WriteOnly(path, record, n, 5);
    std::printf("%-10s %8d %14.1f %14.1f %12.0f %10.1f\n", name, n,
                durable * 1e6, plain * 1e6, 1 / durable, durable / plain);
  }
  std::remove(path.c_str());
  return 0;
}
