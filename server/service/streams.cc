#include "server/service/streams.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"
#include "common/util/log_text.h"
#include "server/aggregator/aggregator.h"

namespace layerfl {
namespace {

constexpr double kMiB = 1 << 20;

}  // namespace

void StreamRegistry::Open(const void* key, std::function<void()> cancel) {
  absl::MutexLock lock(&mu_);
  Stream& s = streams_[key];
  s.cancel = std::move(cancel);
  s.deadline = absl::Now() + timeout_;
}

void StreamRegistry::AddBytes(const void* key, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(key);
  if (it != streams_.end()) {
    it->second.deadline += absl::Seconds(static_cast<double>(bytes) / kMiB);
  }
}

absl::Status StreamRegistry::AdmitUpload(const void* key,
                                         const std::string& client,
                                         int64_t bytes) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(key);
  if (it == streams_.end()) {
    return absl::UnavailableError("shutting_down: the stream is gone");
  }
  if (uploading_.count(client)) {
    return Rejection(RejectReason::kDuplicate,
                     absl::StrCat("client '", client,
                                  "' already has an upload stream open"));
  }
  RETURN_IF_ERROR(CheckCaps(bytes));
  uploading_.insert(client);
  in_flight_ += bytes;
  ++holding_;
  it->second.uploader = client;
  it->second.holding = true;
  it->second.held_bytes = bytes;
  it->second.deadline += absl::Seconds(static_cast<double>(bytes) / kMiB);
  return absl::OkStatus();
}

absl::Status StreamRegistry::CheckCaps(int64_t bytes) const {
  if (in_flight_ + bytes > max_upload_bytes_) {
    return absl::UnavailableError(absl::StrCat(
        "busy: ", in_flight_, " bytes of uploads are in memory; this one's ",
        bytes, " would pass the cap of ", max_upload_bytes_,
        "; send it again later"));
  }
  if (max_uploads_ > 0 && holding_ >= max_uploads_) {
    return absl::UnavailableError(absl::StrCat(
        "busy: ", holding_, " uploads are in memory, the cap; send it "
        "again later"));
  }
  return absl::OkStatus();
}

void StreamRegistry::ReleaseLocked(Stream& s) {
  if (!s.holding) return;
  in_flight_ -= s.held_bytes;
  --holding_;
  s.holding = false;
  s.held_bytes = 0;
}

void StreamRegistry::Read(const void* key) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(key);
  if (it == streams_.end()) return;
  it->second.deadline = absl::InfiniteFuture();
}

void StreamRegistry::Release(const void* key) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(key);
  if (it != streams_.end()) ReleaseLocked(it->second);
}

void StreamRegistry::Close(const void* key) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(key);
  if (it == streams_.end()) return;
  ReleaseLocked(it->second);
  if (!it->second.uploader.empty()) uploading_.erase(it->second.uploader);
  streams_.erase(it);
}

std::vector<std::string> StreamRegistry::CancelOverdue(absl::Time now) {
  std::vector<std::string> cancelled;
  absl::MutexLock lock(&mu_);
  for (auto& [key, s] : streams_) {
    if (s.cancelled || now < s.deadline) continue;
    s.cancelled = true;
    // Under the lock: the stream's transport state lives until Close,
    // which waits for it.
    s.cancel();
    cancelled.push_back(s.uploader.empty()
                            ? "a download or an upload before its header"
                            : "the upload of " + LogQuote(s.uploader));
  }
  return cancelled;
}

int64_t StreamRegistry::upload_bytes_in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

}  // namespace layerfl
