#ifndef LAYERFL_SERVER_SERVICE_MEMORY_RELEASE_H_
#define LAYERFL_SERVER_SERVICE_MEMORY_RELEASE_H_

// When the coordinator gives its heap's free pages back to the kernel
// (ReleaseFreeMemory): once it has been quiet for a whole period after some
// activity — no join, download or upload — and never while a round moves
// data. Releasing during rounds made every buffer of the next transfers a
// fresh page (a fault and a zero-fill each): with a release every 10 s, a
// round of 1,000 1M-parameter updates spent 3 s of system CPU a round on
// page faults (bench/scale). Idle memory still goes back: a burst of
// 10,000 joins is released a period after the last join.
//
// `activity` is any count that moves with the work (joins + bytes moved);
// Due is asked from one thread, at least a few times a period.

#include <cstdint>
#include <optional>

#include "absl/time/time.h"

namespace layerfl {

class QuietRelease {
 public:
  QuietRelease(absl::Duration period, absl::Time start)
      : period_(period), last_change_(start) {}

  // Whether to release now: `activity` has not moved for `period`, and it
  // moved since the last release (or none was made yet).
  bool Due(absl::Time now, int64_t activity) {
    if (period_ <= absl::ZeroDuration()) return false;
    if (activity != activity_) {
      activity_ = activity;
      last_change_ = now;
      return false;
    }
    if (now - last_change_ < period_ || released_at_ == activity) {
      return false;
    }
    released_at_ = activity;
    return true;
  }

 private:
  absl::Duration period_;
  absl::Time last_change_;
  int64_t activity_ = 0;
  std::optional<int64_t> released_at_;
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_MEMORY_RELEASE_H_
