#include "client/daemon/daemon.h"

#include <algorithm>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/secagg/participant.h"

namespace layerfl {
namespace {

class Logger {
 public:
  Logger(std::ostream* out, std::string id) : out_(out), id_(std::move(id)) {}
  void operator()(const std::string& line) {
    if (out_ == nullptr) return;
    absl::MutexLock lock(&mu_);
    *out_ << absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::LocalTimeZone())
          << " " << id_ << ": " << line << std::endl;
  }

 private:
  absl::Mutex mu_;
  std::ostream* out_;
  std::string id_;
};

// Sleeps `d`, waking early when `stop` becomes true.
void SleepUnlessStopped(absl::Duration d, const std::atomic<bool>* stop) {
  const absl::Time until = absl::Now() + d;
  while (absl::Now() < until) {
    if (stop != nullptr && stop->load()) return;
    absl::SleepFor(std::min(absl::Milliseconds(50), until - absl::Now()));
  }
}

class Backoff {
 public:
  explicit Backoff(const DaemonOptions& o)
      : initial_(o.backoff_initial), max_(o.backoff_max), next_(initial_) {}
  absl::Duration Next() {
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    const absl::Duration d = std::min(max_, next_) * jitter(rng_);
    next_ = std::min(max_, next_ * 2);
    return d;
  }
  void Reset() { next_ = initial_; }

 private:
  absl::Duration initial_, max_, next_;
  std::mt19937_64 rng_{std::random_device{}()};
};

// Calls Heartbeat every period while active, on its own thread, unless the
// coordinator hears from the client otherwise: a long poll in flight (held
// at most transport.max_poll_s and half of client_timeout_s by the
// coordinator, which counts its arrival as contact) stands in for
// heartbeats, and the next one is due a period after the poll began. An
// idle client thus costs the coordinator one call per poll instead of one
// per poll and one per period; a client that scores, trains or uploads (no
// poll in flight) still heartbeats. The thread sleeps until the next one is
// due or anything changes (it used to wake every 50 ms: 200,000 wake-ups a
// second for 10,000 clients in one load generator).
class Heartbeater {
 public:
  explicit Heartbeater(CoordinatorLink& link)
      : link_(link), thread_([this] { Loop(); }) {}
  ~Heartbeater() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
      changed_.Signal();
    }
    thread_.join();
  }
  void Activate(absl::Duration period) {
    absl::MutexLock lock(&mu_);
    period_ = std::max(absl::Milliseconds(100), period);
    active_ = true;
    next_ = absl::Now() + period_;  // the join was contact
    changed_.Signal();
  }
  void Deactivate() {
    absl::MutexLock lock(&mu_);
    active_ = false;
    changed_.Signal();
  }
  // A long poll begins / ended.
  void PollBegins() {
    absl::MutexLock lock(&mu_);
    polling_ = true;
    next_ = absl::Now() + period_;
    changed_.Signal();
  }
  void PollEnded() {
    absl::MutexLock lock(&mu_);
    polling_ = false;
    changed_.Signal();
  }

 private:
  void Loop() {
    absl::MutexLock lock(&mu_);
    while (!stop_) {
      if (!active_ || polling_) {
        changed_.Wait(&mu_);
        continue;
      }
      if (absl::Now() < next_) {
        changed_.WaitWithDeadline(&mu_, next_);  // or any change
        continue;
      }
      next_ = absl::Now() + period_;
      mu_.Unlock();
      (void)link_.Heartbeat();  // failures show up on the main loop's calls
      mu_.Lock();
    }
  }

  CoordinatorLink& link_;
  absl::Mutex mu_;
  absl::CondVar changed_;  // signalled on every change below
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool active_ ABSL_GUARDED_BY(mu_) = false;
  bool polling_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration period_ ABSL_GUARDED_BY(mu_) = absl::Seconds(5);
  absl::Time next_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts once the state above exists
};

bool IsUnknownSession(const absl::Status& s) {
  return absl::StartsWith(s.message(), "unknown_session:");
}

std::string ReasonOfStatus(const absl::Status& s) {
  const std::string_view m(s.message().data(), s.message().size());
  const size_t colon = m.find(':');
  if (colon != std::string_view::npos && colon < 32 &&
      m.substr(0, colon).find(' ') == std::string_view::npos) {
    return std::string(m.substr(0, colon));
  }
  return absl::StatusCodeToString(s.code());
}

}  // namespace

bool IsTransient(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    // The coordinator cancelled the call: it was stopping, or cut a stream
    // that ran past its deadline.
    case absl::StatusCode::kCancelled:
      return true;
    default:
      return false;
  }
}

absl::StatusOr<std::string> FetchRunConfig(const DaemonOptions& options,
                                           CoordinatorLink& link,
                                           const std::atomic<bool>* stop) {
  Logger log(options.log, options.client_id);
  Backoff backoff(options);
  const absl::Time start = absl::Now();
  bool told = false;
  while (stop == nullptr || !stop->load()) {
    absl::StatusOr<std::string> yaml =
        link.GetRunConfig(options.client_id, options.token);
    if (yaml.ok() || !IsTransient(yaml.status())) return yaml;
    if (absl::Now() - start > options.give_up) {
      return absl::UnavailableError(
          absl::StrCat("the coordinator was unreachable for ",
                       absl::FormatDuration(options.give_up),
                       " (run config: ", yaml.status().message(), ")"));
    }
    if (!told) {
      log(absl::StrCat("run config: ", yaml.status().message(),
                       "; retrying with backoff"));
      told = true;
    }
    SleepUnlessStopped(backoff.Next(), stop);
  }
  return absl::CancelledError("stopped");
}

namespace {

// How many roster entries train each of `layers` (by name, via the model's
// group order the roster's layer indices refer to).
std::vector<int> LayerParticipants(const SecAggRoster& roster,
                                   const ModelWeights& weights,
                                   const std::vector<std::string>& layers) {
  std::vector<int> out;
  for (const std::string& name : layers) {
    const int index = weights.Find(name);
    int n = 0;
    for (const SecAggRosterEntry& e : roster.entries) {
      n += std::count(e.layers.begin(), e.layers.end(), index) > 0;
    }
    out.push_back(n);
  }
  return out;
}

}  // namespace

absl::StatusOr<DaemonResult> RunClientDaemon(const DaemonOptions& options,
                                             ClientWork& work,
                                             CoordinatorLink& link,
                                             const std::atomic<bool>* stop) {
  Logger log(options.log, options.client_id);
  Backoff backoff(options);
  // Refusals back off on their own schedule: a successful poll in between
  // must not reset it (a refused client would retry every initial step).
  Backoff refused_backoff(options);
  Heartbeater heartbeat(link);
  DaemonResult result;
  Replica replica;
  // Secure aggregation: this client's side, made at its first key step.
  std::unique_ptr<SecAggParticipant> secagg;
  int64_t secagg_round = -1;  // the round its keys were advertised for
  // The masked input of secagg_round once made: a retry (busy, a cut
  // stream) resends it as it is (the keys mask one input once).
  std::optional<SecAggMaskedInput> masked_input;
  bool joined = false;
  absl::Time last_ok = absl::Now();
  std::string last_problem;

  const auto stopped = [&] { return stop != nullptr && stop->load(); };
  const auto succeeded = [&] {
    last_ok = absl::Now();
    backoff.Reset();
    if (!last_problem.empty()) log("the coordinator answers again");
    last_problem.clear();
  };
  // A transient failure: wait (backoff) and go on, or give up.
  const auto wait_and_retry = [&](const std::string& what,
                                  const absl::Status& s) -> absl::Status {
    if (absl::Now() - last_ok > options.give_up) {
      return absl::UnavailableError(
          absl::StrCat("the coordinator was unreachable for ",
                       absl::FormatDuration(options.give_up), " (", what, ": ",
                       s.message(), ")"));
    }
    const absl::Duration delay = backoff.Next();
    const std::string problem = absl::StrCat(what, ": ", s.message());
    if (problem != last_problem) {
      log(absl::StrCat(
          problem, "; retrying with backoff (now ",
          absl::FormatDuration(absl::Trunc(delay, absl::Milliseconds(1))),
          ")"));
      last_problem = problem;
    }
    SleepUnlessStopped(delay, stop);
    return absl::OkStatus();
  };
  // After a failed call: rejoin, retry, or stop with the error.
  const auto handle = [&](const std::string& what,
                          const absl::Status& s) -> absl::Status {
    if (IsUnknownSession(s)) {
      log(absl::StrCat(what, ": ", s.message()));
      joined = false;
      heartbeat.Deactivate();
      return absl::OkStatus();
    }
    if (IsTransient(s)) return wait_and_retry(what, s);
    return s;
  };

  if (options.layer_cache != nullptr) {
    absl::StatusOr<Replica> cached = options.layer_cache->Load();
    if (!cached.ok()) return cached.status();
    if (!cached->partial.empty()) {
      log(absl::StrFormat("the layer cache holds %d layers of run %s",
                          cached->partial.size(), cached->partial_run_id));
      replica = *std::move(cached);
    }
  }

  while (!stopped()) {
    if (!joined) {
      absl::StatusOr<JoinInfo> info = link.Join(
          {options.client_id, options.token, options.budget, work.num_samples(),
           options.profile, options.max_time_s, options.max_memory_mb});
      if (!info.ok()) {
        if (!IsTransient(info.status())) {
          log(absl::StrCat("join refused: ", info.status().message()));
          return info.status();
        }
        if (absl::Status s = wait_and_retry("join", info.status()); !s.ok())
          return s;
        continue;
      }
      succeeded();
      joined = true;
      ++result.joins;
      if (options.observer != nullptr) options.observer->OnJoin(result.joins);
      heartbeat.Activate(info->heartbeat);
      if (replica.run_id != info->run_id && !replica.run_id.empty()) {
        log(absl::StrCat("run ", info->run_id, " is not the run of the held ",
                         "weights (", replica.run_id, "); dropping them"));
        replica = Replica();
      }
      if (!replica.partial.empty() && replica.partial_run_id != info->run_id) {
        log(absl::StrCat("run ", info->run_id, " is not the run of the ",
                         "partial download (", replica.partial_run_id,
                         "); dropping it"));
        replica = Replica();
      }
      log(absl::StrFormat("joined run %s (%d samples, budget %g, %s)",
                          info->run_id, work.num_samples(), info->budget,
                          EncodingName(info->encoding)));
      continue;
    }

    // The local work failed (model mismatch, bad data, out of memory): tell
    // the coordinator why, so that the round goes on without this client,
    // then end.
    const auto work_failed = [&](const char* what, const absl::Status& s) {
      const std::string why =
          absl::StrCat("work_failed: ", what, " failed: ", s.message());
      log(why);
      heartbeat.Deactivate();
      (void)link.Leave(why);
      return s;
    };
    heartbeat.PollBegins();
    absl::StatusOr<ClientTask> task = link.GetTask(options.poll);
    heartbeat.PollEnded();
    if (!task.ok()) {
      if (absl::Status s = handle("get task", task.status()); !s.ok()) return s;
      continue;
    }
    succeeded();
    if (task->kind == ClientTaskKind::kWait) continue;
    if (task->kind == ClientTaskKind::kFinished) {
      result.last_round = task->round;
      log(absl::StrCat("the run is finished (round ", task->round,
                       "); leaving"));
      heartbeat.Deactivate();
      (void)link.Leave("");
      return result;
    }

    const absl::Time task_deadline = absl::Now() + task->time_left;
    TaskRecord record;
    record.kind = task->kind;
    record.round = task->round;
    const absl::Time fetch_start = absl::Now();
    absl::StatusOr<TransferStats> fetched =
        link.Fetch(replica, options.layer_cache);
    if (fetched.ok()) {
      fetched->seconds = absl::ToDoubleSeconds(absl::Now() - fetch_start);
    }
    if (!fetched.ok()) {
      if (IsUnknownSession(fetched.status()) || IsTransient(fetched.status())) {
        if (absl::Status s = handle("fetch", fetched.status()); !s.ok())
          return s;
      } else {
        // Damaged or refused download: nothing was applied; try again.
        log(absl::StrCat("fetch refused: ", fetched.status().message()));
        SleepUnlessStopped(backoff.Next(), stop);
      }
      continue;
    }
    record.download = *fetched;
    if (fetched->resumed_layers > 0) {
      log(absl::StrFormat("download resumed: %d layers were already held, "
                          "%d fetched",
                          fetched->resumed_layers, fetched->layers.size()));
    }
    if (!fetched->cache_error.empty()) {
      log(absl::StrCat("the layer cache failed (downloads go on without it): ",
                       fetched->cache_error));
    }
    if (replica.committed_round != task->round - 1) {
      log(absl::StrCat("task for round ", task->round,
                       " is stale: the model is at round ",
                       replica.committed_round));
      continue;
    }
    const std::string down =
        absl::StrFormat("%d layers, %d bytes in %.3f s", fetched->layers.size(),
                        fetched->wire_bytes, fetched->seconds);
    absl::Status sent;
    if (task->kind == ClientTaskKind::kAdvertise) {
      if (secagg == nullptr) {
        std::vector<std::string> groups;
        for (const LayerWeights& l : replica.weights.layers) {
          groups.push_back(l.group);
        }
        secagg = std::make_unique<SecAggParticipant>(
            options.client_id, std::move(groups), options.secagg_rounding_seed,
            options.secagg_identity);
      }
      sent = link.SendAdvert(task->round, secagg->Advertise(task->round));
      secagg_round = task->round;
      masked_input.reset();
      if (sent.ok())
        log(absl::StrFormat("round %d: keys advertised", task->round));
    } else if (task->kind == ClientTaskKind::kShareKeys) {
      absl::StatusOr<std::vector<SecAggShare>> shares =
          secagg == nullptr ? absl::FailedPreconditionError(
                                  "malformed: a key-share task before keys "
                                  "were advertised")
                            : secagg->ShareKeys(*task->roster);
      sent =
          shares.ok() ? link.SendShares(task->round, *shares) : shares.status();
      if (sent.ok()) {
        log(absl::StrFormat("round %d: key shares sent to %d peers",
                            task->round, shares->size()));
        if (task->round == options.exit_after_shares_round) {
          heartbeat.Deactivate();
          return absl::AbortedError(absl::StrCat(
              "fault injection: exiting after the key shares of round ",
              task->round));
        }
      }
    } else if (task->kind == ClientTaskKind::kUnmask) {
      absl::StatusOr<SecAggUnmaskResponse> response =
          secagg == nullptr ? absl::FailedPreconditionError(
                                  "malformed: an unmask task before keys were "
                                  "advertised")
                            : secagg->Unmask(*task->unmask);
      sent = response.ok() ? link.SendUnmask(task->round, *response)
                           : response.status();
      if (sent.ok()) {
        log(absl::StrFormat("round %d: unmask shares sent", task->round));
      }
    } else if (task->kind == ClientTaskKind::kScore) {
      absl::StatusOr<std::vector<double>> scores = work.Score(
          replica.weights, task->round, task->metric, task->score_from);
      if (!scores.ok()) {
        return work_failed("scoring", scores.status());
      }
      sent = link.ReportScores(task->round, *scores, work.LastScoreCost());
      if (sent.ok()) {
        log(absl::StrFormat("round %d: scored (%s) [fetched %s]", task->round,
                            task->metric, down));
      }
    } else if (options.secure_aggregation &&
               (secagg == nullptr || secagg_round != task->round)) {
      // The keys this round's shares were made with are gone (this process
      // started after they were shared): it cannot mask, and never sends
      // an update in the clear. Out of this round, back for the next.
      const std::string why = absl::StrCat(
          "secagg_state_lost: no key state for round ", task->round,
          " (this client started after sharing its keys); sitting it out");
      log(why);
      heartbeat.Deactivate();
      (void)link.Leave(why);
      joined = false;
      continue;
    } else if (options.secure_aggregation && masked_input.has_value()) {
      // The upload of this round's masked input failed before: again, as
      // it was (not retrained: its masks are spent).
      const absl::Duration left =
          std::max(absl::ZeroDuration(), task_deadline - absl::Now());
      absl::StatusOr<TransferStats> up = link.UploadMasked(
          task->round, *masked_input, left, work.LastTrainCost());
      sent = up.status();
      if (up.ok()) {
        record.upload = *up;
        log(absl::StrFormat("round %d: masked update sent again, %d bytes",
                            task->round, up->wire_bytes));
      }
    } else {
      std::vector<int> participants = task->layer_participants;
      if (options.secure_aggregation && secagg->roster() != nullptr) {
        // Local DP sizes each client's share of the noise by the layer's
        // participants: counted from the roster this client masks with,
        // not taken from the coordinator's word.
        participants = LayerParticipants(*secagg->roster(), replica.weights,
                                         task->layers);
      }
      absl::StatusOr<std::vector<LayerDelta>> update = work.Train(
          replica.weights, task->round, task->layers, participants);
      if (!update.ok()) {
        return work_failed("training", update.status());
      }
      if (options.delay_upload > absl::ZeroDuration()) {
        SleepUnlessStopped(options.delay_upload, stop);
      }
      const absl::Duration left =
          std::max(absl::ZeroDuration(), task_deadline - absl::Now());
      absl::StatusOr<TransferStats> up;
      const absl::Time upload_start = absl::Now();
      if (options.secure_aggregation) {
        // Secure aggregation: the update goes masked, or not at all.
        absl::StatusOr<SecAggMaskedInput> masked =
            secagg->Mask(task->round, task->shares, *update);
        if (!masked.ok()) {
          const std::string why =
              absl::StrCat("secagg_refused: round ", task->round, ": ",
                           masked.status().message());
          log(why);
          heartbeat.Deactivate();
          (void)link.Leave(why);
          joined = false;
          continue;
        }
        if (!masked->excluded.empty()) {
          log(absl::StrFormat(
              "round %d: left out of the masks (their shares failed): %s",
              task->round, absl::StrJoin(masked->excluded, ",")));
        }
        masked_input = *std::move(masked);
        up = link.UploadMasked(task->round, *masked_input, left,
                               work.LastTrainCost());
      } else {
        up = link.Upload(task->round, work.num_samples(), *update, left,
                         work.LastTrainCost());
      }
      sent = up.status();
      if (up.ok()) {
        up->seconds = absl::ToDoubleSeconds(absl::Now() - upload_start);
        record.upload = *up;
        log(absl::StrFormat(
            "round %d: trained [%s], uploaded %d bytes for %d values in "
            "%.3f s [fetched %s]",
            task->round, absl::StrJoin(task->layers, ","), up->wire_bytes,
            up->numel, up->seconds, down));
        if (task->round == options.exit_after_upload_round) {
          // Fault injection: vanish as a killed process would (no Leave),
          // the accepted upload told to the observer first.
          record.outcome = "ok";
          if (options.observer != nullptr) {
            options.observer->OnTask(record, work.LastTrainCost());
          }
          heartbeat.Deactivate();
          return absl::AbortedError(absl::StrCat(
              "fault injection: exiting after the upload of round ",
              task->round));
        }
      }
    }
    record.outcome = sent.ok() ? "ok" : ReasonOfStatus(sent);
    result.tasks.push_back(record);
    if (options.observer != nullptr) {
      options.observer->OnTask(
          record, task->kind == ClientTaskKind::kScore   ? work.LastScoreCost()
                  : task->kind == ClientTaskKind::kTrain ? work.LastTrainCost()
                                                         : WorkCost{});
    }
    if (!sent.ok()) {
      if (IsUnknownSession(sent) || IsTransient(sent)) {
        if (absl::Status s = handle("report", sent); !s.ok()) return s;
      } else {
        // Refused: the same task asked again at once would loop hot.
        const absl::Duration delay = refused_backoff.Next();
        log(absl::StrCat(
            "round ", task->round, ": refused: ", sent.message(),
            "; next poll in ",
            absl::FormatDuration(absl::Trunc(delay, absl::Milliseconds(1)))));
        SleepUnlessStopped(delay, stop);
      }
      continue;
    }
    refused_backoff.Reset();
    succeeded();
  }
  heartbeat.Deactivate();
  if (joined) (void)link.Leave("");
  return absl::CancelledError("the client daemon was asked to stop");
}

}  // namespace layerfl
