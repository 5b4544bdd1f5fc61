// Helpers shared by service_test, fuzz_test and fault_test: the small
// torch-free model, fake selector and local work, an engine behind a real
// server on 127.0.0.1:0, and client daemons on threads.
#ifndef LAYERFL_TESTS_SERVICE_FIXTURE_H_
#define LAYERFL_TESTS_SERVICE_FIXTURE_H_

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/daemon/daemon.h"
#include "client/daemon/grpc_link.h"
#include "server/checkpoint/checkpoint_store.h"
#include "server/round/round_engine.h"
#include "server/service/service.h"
#include "tests/weights_matchers.h"

namespace layerfl {
namespace fixture {

inline Tensor32 MakeTensor(const std::string& name, std::vector<int64_t> shape,
                           float scale) {
  Tensor32 t;
  t.name = name;
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.values.resize(n);
  for (int64_t i = 0; i < n; ++i) t.values[i] = scale * std::sin(0.37f * i);
  return t;
}

// embed 16K values, two blocks of 33K, a head of 1.3K.
inline ModelWeights SmallModel() {
  ModelWeights m;
  m.layers.push_back({"embed", 0, {MakeTensor("embed.w", {256, 64}, 0.1f)}});
  for (int b = 0; b < 2; ++b) {
    const std::string p = absl::StrCat("block", b);
    m.layers.push_back({p,
                        0,
                        {MakeTensor(p + ".w", {128, 256}, 0.05f),
                         MakeTensor(p + ".b", {256}, 0.01f)}});
  }
  m.layers.push_back({"head",
                      0,
                      {MakeTensor("head.w", {10, 128}, 0.2f),
                       MakeTensor("head.b", {10}, 0.0f)}});
  return m;
}

// Client i of the fixtures: its id and sample count.
inline std::string Id(int i) { return absl::StrCat("client-00", i); }
inline int64_t Samples(int i) { return 100 + 37 * i; }

// Every participant trains block<round % 2> and the head; scores are asked
// for every round so that the scoring phase runs too.
class FakeSelector : public LayerSelector {
 public:
  bool NeedsScores() const override { return true; }
  absl::StatusOr<SelectionOutcome> Select(
      const std::vector<SelectionCandidate>& candidates,
      int64_t round) override {
    SelectionOutcome out;
    for (size_t i = 0; i < candidates.size(); ++i) {
      out.layers.push_back({absl::StrCat("block", round % 2), "head"});
    }
    out.solver_status = "fake";
    return out;
  }
  void OnCommitted(const std::vector<SelectionCandidate>&,
                   const SelectionOutcome&) override {}
  std::string SaveState() const override { return ""; }
  absl::Status RestoreState(const std::string&) override {
    return absl::OkStatus();
  }
};

// Deterministic local work: the update depends on the global weights it is
// given, the client and the round. Optionally slow, or hanging in one round.
class FakeWork : public ClientWork {
 public:
  FakeWork(std::string id, int64_t samples, absl::Duration delay)
      : id_(std::move(id)), samples_(samples), delay_(delay) {}
  void HangIn(int64_t round, absl::Duration how_long) {
    hang_round_ = round;
    hang_ = how_long;
  }
  int64_t num_samples() const override { return samples_; }
  absl::StatusOr<std::vector<double>> Score(const ModelWeights& global,
                                            int64_t round, const std::string&,
                                            int) override {
    std::vector<double> s;
    for (size_t l = 0; l < global.layers.size(); ++l) {
      s.push_back(1.0 + (samples_ + l + round) % 5);
    }
    return s;
  }
  absl::StatusOr<std::vector<LayerDelta>> Train(
      const ModelWeights& global, int64_t round,
      const std::vector<std::string>& layers,
      const std::vector<int>& /*layer_participants*/) override {
    absl::SleepFor(delay_);
    if (round == hang_round_) absl::SleepFor(hang_);
    std::vector<LayerDelta> out;
    for (const std::string& name : layers) {
      const LayerWeights& g = global.layers[global.Find(name)];
      LayerDelta d;
      d.group = name;
      for (const Tensor32& t : g.tensors) {
        Tensor32 x = t;
        for (size_t i = 0; i < x.values.size(); ++i) {
          x.values[i] = 0.001f * t.values[i] +
                        0.01f * std::sin(static_cast<float>(i % 97) +
                                         static_cast<float>(round) +
                                         static_cast<float>(samples_));
        }
        d.tensors.push_back(std::move(x));
      }
      out.push_back(std::move(d));
    }
    return out;
  }

 private:
  std::string id_;
  int64_t samples_;
  absl::Duration delay_;
  int64_t hang_round_ = -1;
  absl::Duration hang_;
};

inline RoundEngineOptions EngineOptions(int rounds, absl::Duration deadline) {
  RoundEngineOptions o;
  o.rounds = rounds;
  o.clients_per_round = 0;
  o.min_clients = 2;
  o.selection_period = 1;
  o.round_deadline = deadline;
  o.max_round_retries = 1;
  return o;
}

// An engine over SmallModel() with no transport, as layerfl-sim drives one
// (the references the served runs must match). `selector` and `clock` must
// outlive it.
inline std::unique_ptr<RoundEngine> DirectEngine(
    const RoundEngineOptions& options, LayerSelector* selector,
    Clock* clock = Clock::Real()) {
  RoundEngine::Deps deps;
  deps.clock = clock;
  deps.selector = selector;
  auto engine = RoundEngine::Create(options, SmallModel(), deps);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

// What layerfl-sim does: one engine, clients in id order, no transport, on
// a fake clock. skip(i, round): client i sends no update in that round (it
// is dropped at the train deadline, and the round commits without it).
inline ModelWeights SequentialDrive(
    int rounds, int clients,
    const std::function<bool(int, int64_t)>& skip = [](int, int64_t) {
      return false;
    }) {
  const absl::Duration deadline = absl::Seconds(60);
  FakeSelector selector;
  FakeClock clock;
  std::unique_ptr<RoundEngine> engine =
      DirectEngine(EngineOptions(rounds, deadline), &selector, &clock);
  std::vector<std::unique_ptr<FakeWork>> work;
  for (int i = 0; i < clients; ++i) {
    work.push_back(
        std::make_unique<FakeWork>(Id(i), Samples(i), absl::ZeroDuration()));
    EXPECT_TRUE(engine->Join({Id(i), Samples(i), 2.0}).ok());
  }
  while (!engine->finished()) {
    EXPECT_TRUE(engine->StartRound().ok());
    bool skipped = false;
    for (int phase = 0; phase < 2; ++phase) {
      for (int i = 0; i < clients; ++i) {
        const Task t = engine->TaskFor(Id(i));
        const ModelWeights g = engine->global();
        if (t.kind == TaskKind::kScore && phase == 0) {
          EXPECT_TRUE(
              engine
                  ->SubmitScores(Id(i), t.round,
                                 *work[i]->Score(g, t.round, "", t.score_from))
                  .ok());
        } else if (t.kind == TaskKind::kTrain && phase == 1) {
          if (skip(i, t.round)) {
            skipped = true;
            continue;
          }
          EXPECT_TRUE(
              engine
                  ->SubmitUpdate(Id(i), t.round, Samples(i),
                                 *work[i]->Train(g, t.round, t.layers, {}))
                  .ok());
        }
      }
    }
    if (skipped) {
      clock.Advance(deadline + absl::Seconds(1));
      EXPECT_TRUE(engine->Tick().ok());
    }
  }
  return engine->global();
}

// An engine behind a server on 127.0.0.1 (SmallModel() unless `model` is
// given; the service's log to `log` when given).
class Coordinator {
 public:
  Coordinator(const RoundEngineOptions& engine_options, ServiceOptions options,
              const std::string& address = "127.0.0.1:0",
              CheckpointStore* store = nullptr,
              const ModelWeights& model = SmallModel(),
              std::ostream* log = nullptr) {
    RoundEngine::Deps deps;
    deps.clock = Clock::Real();
    deps.selector = &selector_;
    deps.store = store;
    auto engine = RoundEngine::Create(engine_options, model, deps);
    EXPECT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    if (options.run_id.empty()) options.run_id = "test-run";
    ServiceDeps sdeps;
    sdeps.engine = engine_.get();
    sdeps.clock = Clock::Real();
    sdeps.budget = [](const std::string&, double) -> absl::StatusOr<double> {
      return 2.0;
    };
    sdeps.on_round = [this](const RoundRecord& r) {
      absl::MutexLock lock(&mu_);
      records_.push_back(r);
    };
    sdeps.log = log != nullptr                          ? log
                : std::getenv("LAYERFL_TEST_VERBOSE") ? &std::cerr
                                                      : nullptr;
    auto server = CoordinatorServer::Start(address, options, sdeps);
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  ~Coordinator() { server_.reset(); }

  std::string target() const {
    return absl::StrCat("127.0.0.1:", server_->port());
  }
  RoundEngine& engine() { return *engine_; }
  CoordinatorServer& server() { return *server_; }
  void Stop() { server_.reset(); }
  std::vector<RoundRecord> records() {
    absl::MutexLock lock(&mu_);
    return records_;
  }

 private:
  FakeSelector selector_;
  std::unique_ptr<RoundEngine> engine_;
  std::unique_ptr<CoordinatorServer> server_;
  absl::Mutex mu_;
  std::vector<RoundRecord> records_ ABSL_GUARDED_BY(mu_);
};

inline ServiceOptions FastOptions(int wait_for_clients) {
  ServiceOptions o;
  o.tick = absl::Milliseconds(20);
  o.max_poll = absl::Seconds(1);
  o.heartbeat = absl::Milliseconds(500);
  o.linger = absl::Seconds(3);
  o.wait_for_clients = wait_for_clients;
  o.chunk_bytes = 32 << 10;  // several chunks per layer
  return o;
}

// A client daemon on its own thread.
class DaemonThread {
 public:
  // `tweak`, when given, adjusts the daemon's options before it starts.
  DaemonThread(const std::string& target, std::unique_ptr<FakeWork> work,
               const std::string& id,
               const std::function<void(DaemonOptions&)>& tweak = nullptr)
      : work_(std::move(work)) {
    GrpcLinkOptions link;
    link.target = target;
    link.rpc_timeout = absl::Seconds(5);
    link.chunk_bytes = 16 << 10;
    link_ = CreateGrpcLink(link);
    options_.client_id = id;
    options_.poll = absl::Milliseconds(500);
    options_.backoff_initial = absl::Milliseconds(50);
    options_.backoff_max = absl::Milliseconds(300);
    options_.give_up = absl::Seconds(20);
    options_.log = std::getenv("LAYERFL_TEST_VERBOSE") ? &std::cerr : nullptr;
    if (tweak) tweak(options_);
    thread_ = std::thread([this] {
      result_ = RunClientDaemon(options_, *work_, *link_, &stop_);
      done_.Notify();
    });
  }
  ~DaemonThread() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  const absl::StatusOr<DaemonResult>& Join() {
    thread_.join();
    return result_;
  }
  // Join, or after `limit` stop the daemon and say it was still running
  // (a test fails naming it instead of hanging until ctest's timeout).
  absl::StatusOr<DaemonResult> JoinWithin(absl::Duration limit) {
    if (!done_.WaitForNotificationWithTimeout(limit)) {
      stop_.store(true);
      thread_.join();
      return absl::DeadlineExceededError(absl::StrCat(
          "client daemon '", options_.client_id, "' still running after ",
          absl::FormatDuration(limit), " (stopped; it then returned: ",
          result_.ok() ? "ok" : result_.status().ToString(), ")"));
    }
    thread_.join();
    return result_;
  }

 private:
  std::unique_ptr<FakeWork> work_;
  std::unique_ptr<CoordinatorLink> link_;
  DaemonOptions options_;
  std::atomic<bool> stop_{false};
  absl::Notification done_;
  absl::StatusOr<DaemonResult> result_ = absl::UnknownError("not run");
  std::thread thread_;
};

}  // namespace fixture
}  // namespace layerfl

#endif  // LAYERFL_TESTS_SERVICE_FIXTURE_H_
