#include "client/loadgen/loadgen.h"

#include <atomic>
#include <cmath>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/daemon/grpc_link.h"
#include "common/util/seed.h"

namespace layerfl {
namespace {

// A stream of the client's for one (round, task kind).
std::mt19937_64 Stream(uint64_t seed, const std::string& id, int64_t round,
                       int kind) {
  return std::mt19937_64(
      MixSeed(seed ^ MixSeed(StableHash(id) + static_cast<uint64_t>(round) * 2 +
                             static_cast<uint64_t>(kind))));
}

// Whether the client with this id is in the chosen `fraction` for `what`
// (a pure function of the id, so the same clients every run).
bool Chosen(const std::string& id, const char* what, double fraction) {
  if (fraction <= 0) return false;
  const uint64_t h = StableHash(absl::StrCat(what, "|", id));
  return static_cast<double>(h >> 11) * 0x1.0p-53 < fraction;
}

// Counts what one client's daemon did.
class Counter : public DaemonObserver {
 public:
  void OnJoin(int joins) override { joins_ = joins; }
  void OnTask(const TaskRecord& record, const WorkCost&) override {
    bytes_down_ += record.download.wire_bytes;
    if (record.kind == ClientTaskKind::kScore && record.outcome == "ok") {
      ++scored_;
    }
    if (record.kind == ClientTaskKind::kTrain) {
      if (record.outcome == "ok") {
        ++accepted_;
        bytes_up_ += record.upload.wire_bytes;
      } else {
        ++refused_;
      }
    }
  }
  int joins_ = 0;
  int64_t scored_ = 0, accepted_ = 0, refused_ = 0;
  int64_t bytes_down_ = 0, bytes_up_ = 0;
};

}  // namespace

SyntheticWork::SyntheticWork(std::string client_id, Options options)
    : id_(std::move(client_id)), options_(options) {}

absl::StatusOr<std::vector<double>> SyntheticWork::Score(
    const ModelWeights& global, int64_t round, const std::string&,
    int score_from) {
  if (round == options_.fail_round) {
    return absl::InternalError(
        absl::StrCat("synthetic failure in round ", round));
  }
  absl::SleepFor(options_.delay);
  std::mt19937_64 rng = Stream(options_.seed, id_, round, 0);
  std::uniform_real_distribution<double> u(0.01, 1.0);
  std::vector<double> scores(global.layers.size(), 0.0);
  for (size_t l = 0; l < scores.size(); ++l) {
    const double s = u(rng);
    if (static_cast<int>(l) >= score_from) scores[l] = s;
  }
  return scores;
}

absl::StatusOr<std::vector<LayerDelta>> SyntheticWork::Train(
    const ModelWeights& global, int64_t round,
    const std::vector<std::string>& layers, const std::vector<int>&) {
  if (round == options_.fail_round) {
    return absl::InternalError(
        absl::StrCat("synthetic failure in round ", round));
  }
  absl::SleepFor(options_.delay);
  std::mt19937_64 rng = Stream(options_.seed, id_, round, 1);
  std::uniform_real_distribution<float> u(-options_.delta_scale,
                                          options_.delta_scale);
  std::vector<LayerDelta> update;
  // Model order, as a trainer returns them.
  for (const LayerWeights& layer : global.layers) {
    bool wanted = false;
    for (const std::string& name : layers) wanted = wanted || name == layer.group;
    if (!wanted) continue;
    LayerDelta delta;
    delta.group = layer.group;
    for (const Tensor32& t : layer.tensors) {
      Tensor32 d;
      d.name = t.name;
      d.shape = t.shape;
      d.values.resize(t.values.size());
      for (float& v : d.values) v = u(rng);
      delta.tensors.push_back(std::move(d));
    }
    update.push_back(std::move(delta));
  }
  if (update.size() != layers.size()) {
    return absl::InvalidArgumentError(
        "synthetic training: a task named a layer the model does not have");
  }
  return update;
}

absl::Status LoadGenOptions::Validate() const {
  const auto bad = [](const char* field, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("--", field, ": ", why));
  };
  if (target.empty() && !make_link) return bad("coordinator", "required");
  if (clients < 1) return bad("clients", absl::StrCat("must be >= 1, got ", clients));
  if (first_index < 0) {
    return bad("first_index", absl::StrCat("must be >= 0, got ", first_index));
  }
  if (id_prefix.empty()) return bad("id_prefix", "must not be empty");
  for (const auto& [field, f] :
       {std::pair<const char*, double>{"slow_fraction", slow_fraction},
        {"fail_fraction", fail_fraction},
        {"drop_fraction", drop_fraction}}) {
    if (!(f >= 0 && f <= 1)) {
      return bad(field, absl::StrCat("must be in [0, 1], got ", f));
    }
  }
  if (num_samples < 1) {
    return bad("num_samples", absl::StrCat("must be >= 1, got ", num_samples));
  }
  if (poll <= absl::ZeroDuration()) return bad("poll_ms", "must be > 0");
  if (ramp < absl::ZeroDuration()) return bad("ramp_s", "must be >= 0");
  if (fail_round < 1) {
    return bad("fail_round", absl::StrCat("must be >= 1, got ", fail_round));
  }
  if (drop_round < 1) {
    return bad("drop_round", absl::StrCat("must be >= 1, got ", drop_round));
  }
  return absl::OkStatus();
}

std::string LoadGenClientId(const std::string& prefix, int index) {
  return absl::StrFormat("%s%05d", prefix, index);
}

std::string LoadGenReport::Summary() const {
  return absl::StrFormat(
      "loadgen: %d clients: %d finished, %d failed, %d dropped, %d errors; "
      "%d joins, %d scores, %d uploads accepted, %d refused; last round %d; "
      "%d bytes down, %d bytes up; %.1f s%s",
      clients, finished, failed, dropped, errors, joins, scored,
      uploads_accepted, uploads_refused, last_round, bytes_down, bytes_up,
      wall_s,
      first_error.empty() ? "" : absl::StrCat("; first error: ", first_error));
}

absl::StatusOr<LoadGenReport> RunLoadGen(const LoadGenOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  const absl::Time start = absl::Now();
  LoadGenReport report;
  report.clients = options.clients;
  absl::Mutex mu;
  std::vector<std::thread> threads;
  threads.reserve(options.clients);
  for (int i = 0; i < options.clients; ++i) {
    threads.emplace_back([&options, &report, &mu, i] {
      absl::SleepFor(options.ramp * i / options.clients);
      const std::string id =
          LoadGenClientId(options.id_prefix, options.first_index + i);
      SyntheticWork::Options work_options;
      work_options.num_samples = options.num_samples;
      work_options.seed = options.seed;
      if (Chosen(id, "slow", options.slow_fraction)) {
        work_options.delay = options.slow_delay;
      }
      const bool fails = Chosen(id, "fail", options.fail_fraction);
      if (fails) work_options.fail_round = options.fail_round;
      const bool drops = !fails && Chosen(id, "drop", options.drop_fraction);
      SyntheticWork work(id, work_options);

      std::unique_ptr<CoordinatorLink> link;
      if (options.make_link) {
        link = options.make_link();
      } else {
        GrpcLinkOptions link_options;
        link_options.target = options.target;
        link_options.own_connection = options.own_connections;
        link = CreateGrpcLink(link_options);
      }
      Counter counter;
      DaemonOptions daemon;
      daemon.client_id = id;
      daemon.token = options.token;
      daemon.poll = options.poll;
      daemon.give_up = options.give_up;
      daemon.observer = &counter;
      if (drops) daemon.exit_after_upload_round = options.drop_round;
      absl::StatusOr<DaemonResult> r =
          RunClientDaemon(daemon, work, *link, nullptr);

      absl::MutexLock lock(&mu);
      report.joins += counter.joins_;
      report.scored += counter.scored_;
      report.uploads_accepted += counter.accepted_;
      report.uploads_refused += counter.refused_;
      report.bytes_down += counter.bytes_down_;
      report.bytes_up += counter.bytes_up_;
      if (r.ok()) {
        ++report.finished;
        report.last_round = std::max(report.last_round, r->last_round);
      } else if (fails && r.status().code() == absl::StatusCode::kInternal) {
        ++report.failed;
      } else if (drops && r.status().code() == absl::StatusCode::kAborted) {
        ++report.dropped;
      } else {
        if (report.errors++ == 0) {
          report.first_error = absl::StrCat(id, ": ", r.status().ToString());
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  report.wall_s = absl::ToDoubleSeconds(absl::Now() - start);
  return report;
}

}  // namespace layerfl
