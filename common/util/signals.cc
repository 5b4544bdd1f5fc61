#include "common/util/signals.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace layerfl {
namespace {

class ThreadSignalWatcher : public SignalWatcher {
 public:
  ThreadSignalWatcher(sigset_t set, std::function<void(int)> on_signal)
      : thread_([this, set, callback = std::move(on_signal)] {
          Watch(set, callback);
        }) {}

  ~ThreadSignalWatcher() override {
    done_.store(true);
    // Wakes the watcher now rather than at its next timeout; it sees done_
    // and returns without calling on_signal.
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }

 private:
  void Watch(sigset_t set, const std::function<void(int)>& on_signal) {
    while (!done_.load()) {
      timespec timeout{0, 200 * 1000 * 1000};
      const int sig = sigtimedwait(&set, nullptr, &timeout);
      if (done_.load()) return;
      if (sig == SIGINT || sig == SIGTERM) {
        on_signal(sig);
        return;
      }
    }
  }

  std::atomic<bool> done_{false};
  std::thread thread_;  // Last: it runs Watch(), which reads done_.
};

}  // namespace

absl::StatusOr<std::unique_ptr<SignalWatcher>> SignalWatcher::Start(
    std::function<void(int signo)> on_signal) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (const int err = pthread_sigmask(SIG_BLOCK, &set, nullptr); err != 0) {
    return absl::InternalError(
        absl::StrCat("cannot block SIGINT/SIGTERM: ", std::strerror(err)));
  }
  return std::make_unique<ThreadSignalWatcher>(set, std::move(on_signal));
}

}  // namespace layerfl
