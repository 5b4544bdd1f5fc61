#ifndef LAYERFL_COMMON_UTIL_SIGNALS_H_
#define LAYERFL_COMMON_UTIL_SIGNALS_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"

namespace layerfl {

// Takes SIGINT and SIGTERM on a thread of its own, so that a daemon stops
// cleanly instead of dying.
class SignalWatcher {
 public:
  // Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it
  // starts afterwards: call this before starting any) and starts a thread that
  // waits for them. The first one to arrive for the process calls
  // on_signal(signo), once, on that thread; later ones stay blocked and
  // pending. A signal must reach the process (kill(2), a terminal), not one
  // thread (raise(3), pthread_kill(3)). Internal if the mask cannot be set.
  static absl::StatusOr<std::unique_ptr<SignalWatcher>> Start(
      std::function<void(int signo)> on_signal);

  // Stops watching and joins the thread; SIGINT and SIGTERM stay blocked in
  // the thread that called Start().
  virtual ~SignalWatcher() = default;

 protected:
  SignalWatcher() = default;
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;
};

}  // namespace layerfl

#endif  // LAYERFL_COMMON_UTIL_SIGNALS_H_
