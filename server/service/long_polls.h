#ifndef LAYERFL_SERVER_SERVICE_LONG_POLLS_H_
#define LAYERFL_SERVER_SERVICE_LONG_POLLS_H_

// The coordinator's waiting long polls (GetTask), kept so that an idle
// client costs nothing per operation: a poll is asked "do you have a task
// now?" when it arrives, again only when the engine says its client's task
// may have changed (RoundEngine::TaskChangesSince: everyone's when a phase
// began or ended or the run ended; one client's when the asynchronous
// engine hands it a place), and a last time when its wait runs out.
// Before, every operation re-asked every waiting poll, which made joins and
// rounds quadratic in the connected clients (10,000 joins took 105 s).
//
// `P` is the transport's poll (the reply, its call); each is filed under
// its client's id. Add and held() are thread-safe; Evaluate and FinishAll
// run on one thread at a time (the service's executor).

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace layerfl {

template <typename P>
class LongPolls {
 public:
  // A new poll of `client`, waiting until `expiry` at the latest.
  void Add(std::string client, P poll, absl::Time expiry) {
    absl::MutexLock lock(&mu_);
    fresh_.push_back({expiry, {std::move(client), std::move(poll)}});
    held_.fetch_add(1, std::memory_order_relaxed);
  }

  // Polls added and not yet answered (any thread; for the metrics).
  int64_t held() const { return held_.load(std::memory_order_relaxed); }

  // `answer(client, poll, last_chance)` answers the poll and returns true
  // when it has a task (or, with last_chance, always). `changes_since(epoch)`
  // returns what changed since the last Evaluate's epoch (a TaskChanges:
  // `epoch`, `all`, `clients`). Asked: every fresh poll; every waiting one
  // when `all` (or on the first Evaluate), else the waiting polls of
  // `clients`; then every poll whose expiry is <= now, with last_chance.
  // Returns how many polls `answer` was asked about (what an operation
  // cost).
  template <typename ChangesSince, typename Answer>
  int64_t Evaluate(ChangesSince&& changes_since, absl::Time now,
                   Answer&& answer) {
    std::vector<std::pair<absl::Time, Entry>> ask;
    {
      absl::MutexLock lock(&mu_);
      ask.swap(fresh_);
    }
    const auto changes = changes_since(epoch_);
    if (changes.all || !evaluated_) {
      for (auto& [expiry, entry] : waiting_) {
        ask.emplace_back(expiry, std::move(entry));
      }
      waiting_.clear();
      by_client_.clear();
    } else {
      for (const std::string& client : changes.clients) {
        auto [first, last] = by_client_.equal_range(client);
        for (auto it = first; it != last; ++it) {
          ask.emplace_back(it->second->first, std::move(it->second->second));
          waiting_.erase(it->second);
        }
        by_client_.erase(first, last);
      }
    }
    epoch_ = changes.epoch;
    evaluated_ = true;
    int64_t asked = 0;
    for (auto& [expiry, entry] : ask) {
      ++asked;
      if (expiry <= now) {
        answer(entry.client, entry.poll, /*last_chance=*/true);
        held_.fetch_sub(1, std::memory_order_relaxed);
      } else if (!answer(entry.client, entry.poll, /*last_chance=*/false)) {
        const std::string client = entry.client;
        by_client_.emplace(client, waiting_.emplace(expiry, std::move(entry)));
      } else {
        held_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    while (!waiting_.empty() && waiting_.begin()->first <= now) {
      ++asked;
      const auto it = waiting_.begin();
      answer(it->second.client, it->second.poll, /*last_chance=*/true);
      auto [first, last] = by_client_.equal_range(it->second.client);
      for (auto b = first; b != last; ++b) {
        if (b->second == it) {
          by_client_.erase(b);
          break;
        }
      }
      waiting_.erase(it);
      held_.fetch_sub(1, std::memory_order_relaxed);
    }
    return asked;
  }

  // Hands every poll, fresh or waiting, to `finish` and forgets it.
  template <typename Finish>
  void FinishAll(Finish&& finish) {
    std::vector<std::pair<absl::Time, Entry>> all;
    {
      absl::MutexLock lock(&mu_);
      all.swap(fresh_);
    }
    for (auto& [expiry, entry] : all) finish(entry.poll);
    for (auto& [expiry, entry] : waiting_) finish(entry.poll);
    held_.fetch_sub(static_cast<int64_t>(all.size() + waiting_.size()),
                    std::memory_order_relaxed);
    waiting_.clear();
    by_client_.clear();
  }

 private:
  struct Entry {
    std::string client;
    P poll;
  };
  using Waiting = std::multimap<absl::Time, Entry>;

  mutable absl::Mutex mu_;
  std::vector<std::pair<absl::Time, Entry>> fresh_ ABSL_GUARDED_BY(mu_);
  // Evaluate's thread only: the waiting polls by expiry, and by client.
  Waiting waiting_;
  std::unordered_multimap<std::string, typename Waiting::iterator> by_client_;
  uint64_t epoch_ = 0;
  bool evaluated_ = false;
  std::atomic<int64_t> held_{0};
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_LONG_POLLS_H_
