#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <memory>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/util/signals.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerfl {
namespace {

TEST(SignalWatcherTest, SigtermToTheProcessCallsBackOnce) {
  std::atomic<int> calls{0};
  std::atomic<int> got{0};
  absl::Notification called;
  absl::StatusOr<std::unique_ptr<SignalWatcher>> watcher =
      SignalWatcher::Start([&](int signo) {
        got.store(signo);
        calls.fetch_add(1);
        called.Notify();
      });
  ASSERT_TRUE(watcher.ok()) << watcher.status();

  // Blocked now, so a SIGTERM to the whole process waits for the watcher
  // instead of killing the test.
  ASSERT_EQ(kill(getpid(), SIGTERM), 0);
  ASSERT_TRUE(called.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(got.load(), SIGTERM);

  // The watcher stopped after the first signal: a second stays pending.
  ASSERT_EQ(kill(getpid(), SIGINT), 0);
  absl::SleepFor(absl::Milliseconds(300));
  watcher->reset();
  EXPECT_EQ(calls.load(), 1);

  sigset_t pending;
  ASSERT_EQ(sigpending(&pending), 0);
  EXPECT_EQ(sigismember(&pending, SIGINT), 1);
  // Take it, so that it cannot reach a later test.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  int sig = 0;
  ASSERT_EQ(sigwait(&set, &sig), 0);
  EXPECT_EQ(sig, SIGINT);
}

TEST(SignalWatcherTest, DestroyedWithoutASignalNeverCallsBack) {
  std::atomic<int> calls{0};
  absl::StatusOr<std::unique_ptr<SignalWatcher>> watcher =
      SignalWatcher::Start([&](int) { calls.fetch_add(1); });
  ASSERT_TRUE(watcher.ok()) << watcher.status();
  watcher->reset();
  EXPECT_EQ(calls.load(), 0);

  // The signal that woke the watcher went to its thread, not the process.
  sigset_t pending;
  ASSERT_EQ(sigpending(&pending), 0);
  EXPECT_EQ(sigismember(&pending, SIGTERM), 0);
}

}  // namespace
}  // namespace layerfl
