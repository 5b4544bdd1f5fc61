#ifndef LAYERFL_SERVER_SERVICE_LONG_POLLS_H_
#define LAYERFL_SERVER_SERVICE_LONG_POLLS_H_

// The coordinator's waiting long polls (GetTask), kept so that an idle
// client costs nothing per operation: a poll is asked "do you have a task
// now?" when it arrives, again only when the engine's task epoch changed (a
// phase began or ended, the run ended: RoundEngine::task_epoch), and a last
// time when its wait runs out. Before, every operation re-asked every
// waiting poll, which made joins and rounds quadratic in the connected
// clients (10,000 joins took 105 s).
//
// `P` is the transport's poll (an id, the reply, when it expires). Add is
// thread-safe; Evaluate and FinishAll run on one thread at a time (the
// service's executor).

#include <atomic>
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace layerfl {

template <typename P>
class LongPolls {
 public:
  // A new poll, waiting until `expiry` at the latest.
  void Add(P poll, absl::Time expiry) {
    absl::MutexLock lock(&mu_);
    fresh_.emplace_back(expiry, std::move(poll));
    held_.fetch_add(1, std::memory_order_relaxed);
  }

  // Polls added and not yet answered (any thread; for the metrics).
  int64_t held() const { return held_.load(std::memory_order_relaxed); }

  // `answer(poll, last_chance)` answers the poll and returns true when it
  // has a task (or, with last_chance, always). Asked: every fresh poll; every
  // waiting one when `epoch` differs from the last Evaluate's; then every
  // poll whose expiry is <= now, with last_chance. Returns how many polls
  // `answer` was asked about (what an operation cost).
  template <typename Answer>
  int64_t Evaluate(uint64_t epoch, absl::Time now, Answer&& answer) {
    std::vector<std::pair<absl::Time, P>> ask;
    {
      absl::MutexLock lock(&mu_);
      ask.swap(fresh_);
    }
    if (epoch != epoch_ || !evaluated_) {
      for (auto& [expiry, poll] : waiting_) {
        ask.emplace_back(expiry, std::move(poll));
      }
      waiting_.clear();
      epoch_ = epoch;
      evaluated_ = true;
    }
    int64_t asked = 0;
    for (auto& [expiry, poll] : ask) {
      ++asked;
      if (expiry <= now) {
        answer(poll, /*last_chance=*/true);
        held_.fetch_sub(1, std::memory_order_relaxed);
      } else if (!answer(poll, /*last_chance=*/false)) {
        waiting_.emplace(expiry, std::move(poll));
      } else {
        held_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    while (!waiting_.empty() && waiting_.begin()->first <= now) {
      ++asked;
      answer(waiting_.begin()->second, /*last_chance=*/true);
      waiting_.erase(waiting_.begin());
      held_.fetch_sub(1, std::memory_order_relaxed);
    }
    return asked;
  }

  // Hands every poll, fresh or waiting, to `finish` and forgets it.
  template <typename Finish>
  void FinishAll(Finish&& finish) {
    std::vector<std::pair<absl::Time, P>> all;
    {
      absl::MutexLock lock(&mu_);
      all.swap(fresh_);
    }
    for (auto& [expiry, poll] : all) finish(poll);
    for (auto& [expiry, poll] : waiting_) finish(poll);
    held_.fetch_sub(static_cast<int64_t>(all.size() + waiting_.size()),
                    std::memory_order_relaxed);
    waiting_.clear();
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::pair<absl::Time, P>> fresh_ ABSL_GUARDED_BY(mu_);
  // Evaluate's thread only.
  std::multimap<absl::Time, P> waiting_;
  uint64_t epoch_ = 0;
  bool evaluated_ = false;
  std::atomic<int64_t> held_{0};
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_LONG_POLLS_H_
