// Aggregation throughput relative to memcpy, and the coordinator's peak memory
// while updates arrive one at a time (DESIGN.md §3, §6).
//
// Throughput: for each model, `clients` full-model float32 updates are folded
// into a fresh LayerAggregator (validation included, Commit timed apart); the
// same bytes are memcpy'd tensor by tensor into a model-sized buffer in the
// same run. Ratio = fold bytes/s / memcpy bytes/s (target >= 0.5).
//
// Peak memory: in a forked child (clean heap), the global model is built, then
// 100 updates are generated, added and freed one at a time, then committed.
// Reported: VmHWM above the child's baseline RSS, divided by the model size.
//
// Usage: aggregation_bench [--quick]

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/weights/weights.h"
#include "server/aggregator/aggregator.h"

namespace layerfl {
namespace {

struct VitShape {
  const char* label;
  int dim, depth, mlp, patch_dim, tokens, classes;
};

void AddTensor(LayerWeights& layer, const std::string& name,
               std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  layer.tensors.push_back(
      Tensor32{layer.group + "." + name, std::move(shape),
               std::vector<float>(static_cast<size_t>(n), 0.01f)});
}

// A ViT-shaped model: embed, `depth` blocks, head.
ModelWeights MakeVit(const VitShape& s) {
  ModelWeights m;
  LayerWeights embed{"embed", 0, {}};
  AddTensor(embed, "patch.weight", {s.dim, s.patch_dim});
  AddTensor(embed, "patch.bias", {s.dim});
  AddTensor(embed, "pos", {s.tokens, s.dim});
  AddTensor(embed, "cls", {1, s.dim});
  m.layers.push_back(std::move(embed));
  for (int b = 0; b < s.depth; ++b) {
    LayerWeights block{absl::StrCat("block", b), 0, {}};
    AddTensor(block, "ln1.weight", {s.dim});
    AddTensor(block, "ln1.bias", {s.dim});
    AddTensor(block, "qkv.weight", {3 * s.dim, s.dim});
    AddTensor(block, "qkv.bias", {3 * s.dim});
    AddTensor(block, "proj.weight", {s.dim, s.dim});
    AddTensor(block, "proj.bias", {s.dim});
    AddTensor(block, "ln2.weight", {s.dim});
    AddTensor(block, "ln2.bias", {s.dim});
    AddTensor(block, "fc1.weight", {s.mlp, s.dim});
    AddTensor(block, "fc1.bias", {s.mlp});
    AddTensor(block, "fc2.weight", {s.dim, s.mlp});
    AddTensor(block, "fc2.bias", {s.dim});
    m.layers.push_back(std::move(block));
  }
  LayerWeights head{"head", 0, {}};
  AddTensor(head, "norm.weight", {s.dim});
  AddTensor(head, "norm.bias", {s.dim});
  AddTensor(head, "fc.weight", {s.classes, s.dim});
  AddTensor(head, "fc.bias", {s.classes});
  m.layers.push_back(std::move(head));
  return m;
}

// A full-model update with small pseudo-random values.
std::vector<LayerDelta> MakeUpdate(const ModelWeights& m, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  std::vector<LayerDelta> update;
  for (const LayerWeights& layer : m.layers) {
    LayerDelta d{layer.group, {}};
    for (const Tensor32& t : layer.tensors) {
      Tensor32 dt{t.name, t.shape, std::vector<float>(t.values.size())};
      for (float& v : dt.values) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v = static_cast<float>(static_cast<int32_t>(x >> 40) - (1 << 23)) *
            1e-10f;
      }
      d.tensors.push_back(std::move(dt));
    }
    update.push_back(std::move(d));
  }
  return update;
}

std::vector<std::string> Groups(const ModelWeights& m) {
  std::vector<std::string> groups;
  for (const LayerWeights& l : m.layers) groups.push_back(l.group);
  return groups;
}

double Now() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t ProcStatusKb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') {
      return std::stoll(line.substr(n + 1));
    }
  }
  return -1;
}

// Resets VmHWM to the current RSS (Linux >= 4.0).
bool ResetPeakRss() {
  const int fd = ::open("/proc/self/clear_refs", O_WRONLY);
  if (fd < 0) return false;
  const bool ok = ::write(fd, "5", 1) == 1;
  ::close(fd);
  return ok;
}

struct ThroughputRow {
  std::string label;
  int64_t params = 0;
  int clients = 0;
  double fold_gbps = 0, memcpy_gbps = 0, commit_ms = 0;
};

ThroughputRow MeasureThroughput(const VitShape& shape, int clients, int reps) {
  const ModelWeights model = MakeVit(shape);
  const std::vector<std::string> groups = Groups(model);
  const size_t update_bytes = sizeof(float) * model.numel();
  // Distinct updates, cycled, enough to exceed the caches (<= 256 MiB).
  const int distinct = std::max<int>(
      2, std::min<int>(clients, (256 << 20) / static_cast<int>(update_bytes)));
  std::vector<std::vector<LayerDelta>> updates;
  for (int i = 0; i < distinct; ++i)
    updates.push_back(MakeUpdate(model, i + 1));
  const double bytes = static_cast<double>(update_bytes) * clients;

  double best_fold = 1e30, best_copy = 1e30, best_commit = 1e30;
  std::vector<std::vector<float>> dest;
  for (const LayerWeights& l : model.layers) {
    for (const Tensor32& t : l.tensors) dest.emplace_back(t.values.size(), 0.f);
  }
  for (int rep = 0; rep < reps; ++rep) {
    ModelWeights global = model;
    LayerAggregator agg(global, AggregatorOptions{});
    double t0 = Now();
    for (int c = 0; c < clients; ++c) {
      const absl::Status s = agg.Add(absl::StrCat("client", c), 10 + c,
                                     updates[c % distinct], groups);
      if (!s.ok()) {
        std::fprintf(stderr, "Add failed: %s\n", s.ToString().c_str());
        std::exit(1);
      }
    }
    best_fold = std::min(best_fold, Now() - t0);
    t0 = Now();
    if (!agg.Commit(global).ok()) std::exit(1);
    best_commit = std::min(best_commit, Now() - t0);

    t0 = Now();
    for (int c = 0; c < clients; ++c) {
      size_t k = 0;
      for (const LayerDelta& d : updates[c % distinct]) {
        for (const Tensor32& t : d.tensors) {
          std::memcpy(dest[k++].data(), t.values.data(),
                      sizeof(float) * t.values.size());
        }
      }
    }
    best_copy = std::min(best_copy, Now() - t0);
  }
  ThroughputRow row;
  row.label = shape.label;
  row.params = model.numel();
  row.clients = clients;
  row.fold_gbps = bytes / best_fold / 1e9;
  row.memcpy_gbps = bytes / best_copy / 1e9;
  row.commit_ms = best_commit * 1e3;
  return row;
}

struct MemoryResult {
  int64_t model_kb = 0, baseline_kb = 0, peak_kb = 0;
  bool reset_ok = false;
};

// Runs in a forked child so that the heap starts clean.
MemoryResult MeasurePeakMemory(const VitShape& shape, int clients) {
  int fds[2];
  if (::pipe(fds) != 0) std::exit(1);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    MemoryResult r;
    r.reset_ok = ResetPeakRss();
    r.baseline_kb = ProcStatusKb("VmRSS");
    {
      ModelWeights global = MakeVit(shape);
      r.model_kb = global.numel() * 4 / 1024;
      const std::vector<std::string> groups = Groups(global);
      LayerAggregator agg(global, AggregatorOptions{});
      for (int c = 0; c < clients; ++c) {
        const std::vector<LayerDelta> update = MakeUpdate(global, c + 1);
        if (!agg.Add(absl::StrCat("client", c), 1 + c, update, groups).ok()) {
          _exit(2);
        }
      }
      if (!agg.Commit(global).ok()) _exit(3);
    }
    r.peak_kb = ProcStatusKb("VmHWM");
    if (::write(fds[1], &r, sizeof(r)) != sizeof(r)) _exit(4);
    _exit(0);
  }
  ::close(fds[1]);
  MemoryResult r;
  const bool got = ::read(fds[0], &r, sizeof(r)) == sizeof(r);
  ::close(fds[0]);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  if (!got || !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    std::fprintf(stderr, "memory child failed\n");
    std::exit(1);
  }
  return r;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, 10, "model name") == 0) {
      return line.substr(line.find(':') + 2);
    }
  }
  return "unknown";
}

int Run(bool quick) {
  const VitShape small{"vit-139k", 64, 4, 128, 49, 17, 10};
  const VitShape large{"vit-11M", 384, 6, 1536, 768, 197, 100};

  std::printf("LayerFL aggregation benchmark (single thread)\n");
  std::printf("host: %s, %ld cores%s\n\n", CpuModel().c_str(),
              ::sysconf(_SC_NPROCESSORS_ONLN), quick ? ", --quick" : "");

  // Memory first: forks before this process has a large heap.
  const int kUpdates = 100;
  std::vector<std::pair<std::string, MemoryResult>> mem;
  for (const VitShape& s : {small, large}) {
    mem.emplace_back(s.label, MeasurePeakMemory(s, quick ? 10 : kUpdates));
  }

  std::vector<ThroughputRow> rows;
  rows.push_back(MeasureThroughput(small, 100, quick ? 2 : 7));
  rows.push_back(MeasureThroughput(large, 20, quick ? 1 : 5));

  std::printf(
      "Aggregation throughput: float32 delta bytes folded per second by\n"
      "LayerAggregator::Add (checks included), vs memcpy of the same bytes,\n"
      "same run (best of reps). Target ratio >= 0.5.\n\n");
  std::printf("%-9s %10s %7s %12s %10s %11s %6s %10s\n", "model", "params",
              "clients", "MB/update", "fold GB/s", "memcpy GB/s", "ratio",
              "commit ms");
  for (const ThroughputRow& r : rows) {
    std::printf("%-9s %10" PRId64 " %7d %12.2f %10.2f %11.2f %6.2f %10.2f\n",
                r.label.c_str(), r.params, r.clients,
                r.params * 4.0 / (1 << 20), r.fold_gbps, r.memcpy_gbps,
                r.fold_gbps / r.memcpy_gbps, r.commit_ms);
  }

  std::printf(
      "\nCoordinator peak memory: %d full-model updates arriving one at a\n"
      "time (each generated, added, freed), then Commit. Peak = VmHWM above\n"
      "the baseline RSS; expected ~3x model (global + sums + one update in\n"
      "flight), vs %dx if updates were buffered.\n\n",
      quick ? 10 : kUpdates, quick ? 10 : kUpdates);
  std::printf("%-9s %10s %12s %12s %8s\n", "model", "model MB", "baseline MB",
              "peak+ MB", "x model");
  for (const auto& [label, r] : mem) {
    const int64_t above = r.peak_kb - r.baseline_kb;
    std::printf("%-9s %10.2f %12.2f %12.2f %8.2f%s\n", label.c_str(),
                r.model_kb / 1024.0, r.baseline_kb / 1024.0, above / 1024.0,
                static_cast<double>(above) / r.model_kb,
                r.reset_ok ? "" : "  (VmHWM not reset: includes startup)");
  }
  return 0;
}

}  // namespace
}  // namespace layerfl

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  return layerfl::Run(quick);
}
