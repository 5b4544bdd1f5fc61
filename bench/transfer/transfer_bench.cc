// Checkpoint broadcast throughput: a client's FetchLayers of a whole ~10M
// parameter model over gRPC on loopback (coordinator service + client link,
// chunks checked and decoded into float32 tensors), divided by raw TCP
// loopback throughput of the same float32 bytes measured in the same run.
// Also the codec alone (encode + check + decode in memory) for context, and
// a held update of the whole model spilled to disk and read back (ordered
// aggregation beyond transport.max_held_mb) next to receiving it over TCP.
//
//   transfer_bench [--reps N] [--quick] [--spill_only] [--spill_dir DIR]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/daemon/grpc_link.h"
#include "common/codec/codec.h"
#include "common/util/memory.h"
#include "server/round/round_engine.h"
#include "server/service/held_spill.h"
#include "server/service/service.h"

namespace layerfl {
namespace {

using Steady = std::chrono::steady_clock;

double Seconds(Steady::time_point a, Steady::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

Tensor32 MakeTensor(const std::string& name, std::vector<int64_t> shape) {
  Tensor32 t;
  t.name = name;
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.values.resize(n);
  for (int64_t i = 0; i < n; ++i) t.values[i] = 0.02f * std::sin(0.001f * i) + 1e-4f * (i % 7);
  return t;
}

// ~10.0M parameters in 14 layers, ViT-like proportions.
ModelWeights BigModel() {
  ModelWeights m;
  m.layers.push_back({"embed", 0, {MakeTensor("embed.w", {1000, 512})}});
  for (int b = 0; b < 12; ++b) {
    const std::string p = absl::StrCat("block", b);
    m.layers.push_back({p, 0,
                        {MakeTensor(p + ".w", {768, 1024}), MakeTensor(p + ".b", {1024}),
                         MakeTensor(p + ".ln", {768})}});
  }
  m.layers.push_back({"head", 0, {MakeTensor("head.w", {10, 768}), MakeTensor("head.b", {10})}});
  return m;
}

class NoSelector : public LayerSelector {
 public:
  bool NeedsScores() const override { return false; }
  absl::StatusOr<SelectionOutcome> Select(const std::vector<SelectionCandidate>&,
                                          int64_t) override {
    return SelectionOutcome();
  }
  void OnCommitted(const std::vector<SelectionCandidate>&,
                   const SelectionOutcome&) override {}
  std::string SaveState() const override { return ""; }
  absl::Status RestoreState(const std::string&) override { return absl::OkStatus(); }
};

struct Timing {
  double best = 0;  // seconds
  double median = 0;
};

Timing Summarise(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return {t.front(), t[t.size() / 2]};
}

// Raw TCP on one connection: the client asks with one byte, the server answers
// with the payload written in 1 MiB pieces; the client reads it all.
class RawTcp {
 public:
  explicit RawTcp(const std::vector<char>& payload)
      : payload_(payload), into_(payload.size()) {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(listener_, 1);
    socklen_t len = sizeof(addr);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    server_ = std::thread([this] { Serve(); });
    client_ = socket(AF_INET, SOCK_STREAM, 0);
    connect(client_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  }
  ~RawTcp() {
    close(client_);
    server_.join();
    close(listener_);
  }
  // Seconds for one transfer.
  double Once() {
    const auto t0 = Steady::now();
    const char go = 'g';
    send(client_, &go, 1, 0);
    size_t got = 0;
    while (got < into_.size()) {
      const ssize_t n = recv(client_, into_.data() + got, into_.size() - got, 0);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    return Seconds(t0, Steady::now());
  }

 private:
  void Serve() {
    const int s = accept(listener_, nullptr, nullptr);
    char go;
    while (recv(s, &go, 1, MSG_WAITALL) == 1) {
      size_t sent = 0;
      while (sent < payload_.size()) {
        const size_t n = std::min<size_t>(1 << 20, payload_.size() - sent);
        const ssize_t w = send(s, payload_.data() + sent, n, 0);
        if (w <= 0) break;
        sent += static_cast<size_t>(w);
      }
    }
    close(s);
  }

  const std::vector<char>& payload_;
  std::vector<char> into_;
  int listener_ = -1;
  int client_ = -1;
  std::thread server_;
};

// A coordinator service over `model` and a client link to it; Once() is a
// client's full download (empty replica), every chunk checked and decoded.
class GrpcFetch {
 public:
  GrpcFetch(const ModelWeights& model, Encoding encoding, int64_t chunk_bytes)
      : numel_(model.numel()) {
    RoundEngine::Deps deps;
    deps.clock = Clock::Real();
    deps.selector = &selector_;
    RoundEngineOptions eo;
    eo.rounds = 1;
    engine_ = std::move(*RoundEngine::Create(eo, model, deps));
    ServiceOptions options;
    options.run_id = "bench";
    options.encoding = encoding;
    options.chunk_bytes = chunk_bytes;
    options.wait_for_clients = 1000;  // no round starts
    options.wait_for_clients_timeout = absl::Hours(1);
    ServiceDeps sdeps;
    sdeps.engine = engine_.get();
    sdeps.clock = Clock::Real();
    sdeps.budget = [](const std::string&, double) -> absl::StatusOr<double> { return 1; };
    // Start encodes, checksums and serializes the whole model: what the
    // coordinator does once per commit for the layers that changed.
    const auto t0 = Steady::now();
    auto server = CoordinatorServer::Start("127.0.0.1:0", options, sdeps);
    encode_seconds = Seconds(t0, Steady::now());
    if (!server.ok()) {
      std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
      std::exit(1);
    }
    server_ = std::move(*server);
    GrpcLinkOptions lo;
    lo.target = absl::StrCat("127.0.0.1:", server_->port());
    link_ = CreateGrpcLink(lo);
    JoinParams join;
    join.client_id = "bench-client";
    join.num_samples = 1;
    if (!link_->Join(join).ok()) std::exit(1);
    Once();  // warm-up: connection, allocator
  }
  ~GrpcFetch() { server_.reset(); }

  double Once() {
    Replica replica;
    const auto t0 = Steady::now();
    absl::StatusOr<TransferStats> stats = link_->Fetch(replica, nullptr);
    const double s = Seconds(t0, Steady::now());
    if (!stats.ok() || stats->numel != numel_) {
      std::fprintf(stderr, "fetch failed: %s\n",
                   std::string(stats.status().message()).c_str());
      std::exit(1);
    }
    wire_bytes = stats->wire_bytes;
    return s;
  }
  int64_t wire_bytes = 0;
  double encode_seconds = 0;

 private:
  int64_t numel_;
  NoSelector selector_;
  std::unique_ptr<RoundEngine> engine_;
  std::unique_ptr<CoordinatorServer> server_;
  std::unique_ptr<CoordinatorLink> link_;
};

// The codec alone: encode, check and decode the whole model in memory.
Timing CodecOnly(const ModelWeights& model, Encoding encoding, int reps) {
  std::vector<LayerSource> sources;
  std::vector<ExpectedLayer> expected;
  for (const LayerWeights& l : model.layers) {
    sources.push_back(SourceOf(l));
    expected.push_back({l.group, std::nullopt});
  }
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Steady::now();
    LayerStreamEncoder encoder(sources, encoding, 1 << 20, true);
    DecoderLimits limits;
    limits.encoding = encoding;
    LayerStreamDecoder decoder(expected, {}, limits);
    ChunkFrame frame;
    while (encoder.Next(&frame)) {
      if (!decoder.Add(frame).ok()) std::exit(1);
    }
    if (!decoder.Finish().ok()) std::exit(1);
    times.push_back(Seconds(t0, Steady::now()));
  }
  return Summarise(times);
}

// One held update of the whole model to disk and back (ordered aggregation
// beyond transport.max_held_mb), interleaved with raw TCP carrying the same
// bytes: what waiting on disk costs next to receiving the update at all.
void SpillVsReceive(const ModelWeights& model, RawTcp& tcp, size_t bytes, int reps,
                    const std::string& dir) {
  std::vector<LayerDelta> update;
  for (const LayerWeights& l : model.layers) update.push_back({l.group, l.tensors});
  const std::string path = dir + "/held-bench.bin";
  std::vector<double> t_tcp, t_spill;
  for (int r = 0; r < reps; ++r) {
    t_tcp.push_back(tcp.Once());
    const auto t0 = Steady::now();
    bool ok = SpillValues(update, path).ok();
    // As the engine folds it: a checking pass, then a folding pass (here
    // the values go back into the update).
    absl::StatusOr<std::unique_ptr<DeltaSource>> values =
        OpenSpilledValues(path, update);
    ok = ok && values.ok();
    for (int pass = 0; ok && pass < 2; ++pass) {
      ok = (*values)->Rewind().ok();
      for (LayerDelta& d : update) {
        for (Tensor32& t : d.tensors) {
          if (!ok) break;
          const size_t n = static_cast<size_t>(ShapeNumel(t.shape));
          absl::StatusOr<const float*> x = (*values)->Next(n);
          ok = x.ok();
          if (ok && pass == 1) t.values = std::vector<float>(*x, *x + n);
        }
      }
    }
    std::remove(path.c_str());
    if (!ok) {
      std::fprintf(stderr, "spill failed in %s\n", dir.c_str());
      std::exit(1);
    }
    t_spill.push_back(Seconds(t0, Steady::now()));
  }
  const Timing a = Summarise(t_tcp), b = Summarise(t_spill);
  std::printf(
      "held update on disk (SpillValues + the engine's two read passes, %.1f MB, CRC each "
      "time, in %s):\n"
      "  spill + two reads %.1f ms best, %.1f ms median; raw TCP receipt %.1f ms best, "
      "%.1f ms median\n"
      "  receipt / spill round trip: %.2f best, %.2f median\n",
      bytes / 1e6, dir.c_str(), b.best * 1e3, b.median * 1e3, a.best * 1e3,
      a.median * 1e3, a.best / b.best, a.median / b.median);
}

}  // namespace
}  // namespace layerfl

int main(int argc, char** argv) {
  using namespace layerfl;
  int reps = 9;
  int only = -1;  // --case I: run only the I-th gRPC case (for profiling)
  bool spill_only = false;
  std::string spill_dir = "/tmp";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--spill_only") == 0) {
      spill_only = true;
    } else if (std::strcmp(argv[i], "--spill_dir") == 0 && i + 1 < argc) {
      spill_dir = argv[++i];
    } else if (std::strcmp(argv[i], "--case") == 0 && i + 1 < argc) {
      only = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      reps = 2;
    } else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr,
                   "usage: %s [--reps N] [--quick] [--case I] [--spill_only] [--spill_dir D]\n",
                   argv[0]);
      return 2;
    }
  }
  // As layerfl-coordinator and layerfl-client do: freed buffers are reused.
  RetainFreedMemory();
  const ModelWeights model = BigModel();
  const int64_t params = model.numel();
  std::vector<char> raw(static_cast<size_t>(params) * 4);
  {
    size_t at = 0;
    for (const LayerWeights& l : model.layers) {
      for (const Tensor32& t : l.tensors) {
        std::memcpy(raw.data() + at, t.values.data(), t.values.size() * 4);
        at += t.values.size() * 4;
      }
    }
  }
  std::printf(
      "LayerFL transfer benchmark: checkpoint broadcast = one client's FetchLayers\n"
      "of the whole model (empty replica: every layer sent, every chunk CRC-checked\n"
      "and decoded into float32 tensors) over gRPC on 127.0.0.1, vs raw TCP sending\n"
      "the same float32 bytes on 127.0.0.1, interleaved rep by rep in the same run.\n"
      "%lld params (%.1f MB as float32), %d reps. Target: ratio >= 0.5.\n\n",
      static_cast<long long>(params), raw.size() / 1e6, reps);

  RawTcp tcp(raw);
  tcp.Once();
  if (spill_only) {
    SpillVsReceive(model, tcp, raw.size(), reps, spill_dir);
    return 0;
  }
  std::printf("%-9s %6s %8s | %8s %8s | %9s %8s | %6s %6s | %9s %6s | %9s\n",
              "encoding", "chunk", "wire MB", "TCP MB/s", "(median)", "gRPC MB/s",
              "(median)", "ratio", "(med)", "Mparam/s", "ratio", "encode ms");
  struct Case {
    Encoding encoding;
    int64_t chunk;
  };
  const std::vector<Case> cases = {
      {Encoding::kFloat32, 64 << 10}, {Encoding::kFloat32, 256 << 10},
      {Encoding::kFloat32, 1 << 20},  {Encoding::kFloat32, 3 << 20},
      {Encoding::kFloat16, 1 << 20},  {Encoding::kBFloat16, 1 << 20}};
  for (size_t i = 0; i < cases.size(); ++i) {
    if (only >= 0 && static_cast<size_t>(only) != i) continue;
    const Case& c = cases[i];
    GrpcFetch fetch(model, c.encoding, c.chunk);
    // Interleaved, so that both see the same machine load.
    std::vector<double> t_tcp, t_grpc;
    for (int r = 0; r < reps; ++r) {
      t_tcp.push_back(tcp.Once());
      t_grpc.push_back(fetch.Once());
    }
    const Timing a = Summarise(t_tcp), b = Summarise(t_grpc);
    const double tcp_best = raw.size() / a.best / 1e6;
    const double tcp_med = raw.size() / a.median / 1e6;
    const double grpc_best = fetch.wire_bytes / b.best / 1e6;
    const double grpc_med = fetch.wire_bytes / b.median / 1e6;
    std::printf(
        "%-9s %5lldK %8.2f | %8.0f %8.0f | %9.0f %8.0f | %6.2f %6.2f | %9.0f %6.2f | %9.1f\n",
                std::string(EncodingName(c.encoding)).c_str(),
                static_cast<long long>(c.chunk >> 10), fetch.wire_bytes / 1e6, tcp_best,
                tcp_med, grpc_best, grpc_med, grpc_best / tcp_best, grpc_med / tcp_med,
                params / b.best / 1e6, a.best / b.best, fetch.encode_seconds * 1e3);
  }
  std::printf(
      "\nratio: gRPC wire bytes/s over raw TCP bytes/s (best of each; (med): of the\n"
      "medians). Mparam/s ratio: parameters delivered per second over raw TCP\n"
      "carrying the same parameters as float32 (float16/bfloat16 put half the\n"
      "bytes on the wire). encode ms: the coordinator encoding, checksumming and\n"
      "serializing the whole model, done once per commit (changed layers only)\n"
      "and shared by every client's download; not in the per-fetch times.\n\n");
  if (only >= 0) return 0;
  std::printf("codec alone (encode + CRC + check + decode, 1 MiB chunks, in memory):\n");
  for (Encoding e : {Encoding::kFloat32, Encoding::kFloat16, Encoding::kBFloat16}) {
    const Timing t = CodecOnly(model, e, reps);
    std::printf("  %-9s %8.1f Mparams/s  (%.0f MB/s of float32)\n",
                std::string(EncodingName(e)).c_str(), params / t.best / 1e6,
                raw.size() / t.best / 1e6);
  }
  std::printf("\n");
  SpillVsReceive(model, tcp, raw.size(), reps, spill_dir);
  return 0;
}
