#include "server/service/held_uploads.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/service/held_spill.h"

namespace layerfl {

HeldUploads::HeldUploads(int64_t max_held_bytes, std::string spill_dir,
                         std::function<void(const std::string&)> log)
    : max_held_bytes_(max_held_bytes),
      spill_dir_(std::move(spill_dir)),
      log_(std::move(log)) {}

void HeldUploads::Hold(std::shared_ptr<HeldUpload> u) {
  const int64_t bytes = UpdateValueBytes(u->update);
  if (u->spill_path.empty() && !spill_dir_.empty() &&
      held_bytes_ + bytes > max_held_bytes_) {
    const std::string path =
        absl::StrCat(spill_dir_, "/held-", ++spill_seq_, ".bin");
    absl::Status s = SpillValues(u->update, path);
    if (s.ok()) {
      u->spill_path = path;
      if (log_) {
        log_(absl::StrFormat(
            "round %d: the update of %s waits for its turn on disk (%d bytes "
            "already wait in memory)",
            u->round, u->id, held_bytes_));
      }
      absl::MutexLock lock(&stats_mu_);
      ++stats_.spilled;
    } else if (log_) {
      log_(absl::StrCat("cannot spill the update of ", u->id,
                        " (kept in memory): ", s.message()));
    }
  }
  if (u->spill_path.empty()) {
    u->held_bytes = bytes;
    held_bytes_ += bytes;
    absl::MutexLock lock(&stats_mu_);
    stats_.held_bytes = held_bytes_;
    stats_.peak_held_bytes = std::max(stats_.peak_held_bytes, held_bytes_);
  }
  const std::string id = u->id;
  held_[id] = std::move(u);
}

std::shared_ptr<HeldUpload> HeldUploads::PopFirst() {
  std::shared_ptr<HeldUpload> u = held_.begin()->second;
  held_.erase(held_.begin());
  held_bytes_ -= u->held_bytes;
  u->held_bytes = 0;
  absl::MutexLock lock(&stats_mu_);
  stats_.held_bytes = held_bytes_;
  return u;
}

void HeldUploads::Drain(const std::function<bool(const HeldUpload&)>& blocked,
                        const Submit& submit) {
  while (!held_.empty()) {
    if (blocked(*held_.begin()->second)) return;
    submit(*PopFirst());
  }
}

void HeldUploads::Flush(const absl::Status& instead, const Submit& submit,
                        const Fail& fail) {
  while (!held_.empty()) {
    std::shared_ptr<HeldUpload> u = PopFirst();
    if (instead.ok()) {
      submit(*u);
      continue;
    }
    if (!u->spill_path.empty()) std::remove(u->spill_path.c_str());
    fail(*u, instead);
  }
}

HeldUploads::Stats HeldUploads::stats() const {
  absl::MutexLock lock(&stats_mu_);
  return stats_;
}

}  // namespace layerfl
