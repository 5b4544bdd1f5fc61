#ifndef LAYERFL_SERVER_SERVICE_STREAMS_H_
#define LAYERFL_SERVER_SERVICE_STREAMS_H_

// The coordinator's open upload and download streams: each one's deadline,
// and for uploads the one-stream-per-client rule and the caps on the
// uploads in memory. Transport-free (a stream is a key and a cancel function);
// thread-safe.

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace layerfl {

class StreamRegistry {
 public:
  // A stream must end within `timeout` of Open, plus a second per MiB it
  // carries. An admitted upload's bytes count against the caps from its
  // header until what it decoded into has left memory (Release, or Close):
  // those updates hold at most `max_upload_bytes` together and, when
  // `max_uploads` > 0, are at most that many.
  StreamRegistry(absl::Duration timeout, int64_t max_upload_bytes,
                 int max_uploads = 0)
      : timeout_(timeout),
        max_upload_bytes_(max_upload_bytes),
        max_uploads_(max_uploads) {}

  // A stream begins. `cancel` ends it from the transport's side; it is
  // called (at most once, with the registry's lock held, so it must not
  // call back into the registry) when the stream passes its deadline.
  void Open(const void* key, std::function<void()> cancel);
  // The stream carries `bytes` (a download): its deadline moves out.
  void AddBytes(const void* key, int64_t bytes);
  // An upload of `bytes` from `client`: OK, or the refusal: "duplicate"
  // (FailedPrecondition) when that client has another upload stream open,
  // "busy" (Unavailable) when the bytes in memory would pass the cap, or
  // max_uploads are in memory already.
  absl::Status AdmitUpload(const void* key, const std::string& client,
                           int64_t bytes);
  // The stream was read to its end: it has no deadline any more. Its bytes
  // still count (the decoded update is in memory) until Release or Close;
  // the client keeps its place until Close.
  void Read(const void* key);
  // The upload's update has left memory (folded, or written to disk to wait
  // for its turn): its bytes leave the caps. At most once; Close after it
  // frees nothing twice.
  void Release(const void* key);
  // The stream is over; unknown keys are ignored (Close may come twice).
  void Close(const void* key);
  // Cancels every stream past its deadline at `now`; what was cancelled,
  // described ("the upload of 'client-007'").
  std::vector<std::string> CancelOverdue(absl::Time now);

  int64_t upload_bytes_in_flight() const;

 private:
  struct Stream {
    std::function<void()> cancel;
    absl::Time deadline;
    std::string uploader;       // set once an upload is admitted
    int64_t held_bytes = 0;  // an admitted upload's, until released
    bool holding = false;    // admitted and not yet released
    bool cancelled = false;
  };

  const absl::Duration timeout_;
  const int64_t max_upload_bytes_;
  const int max_uploads_;
  mutable absl::Mutex mu_;
  std::map<const void*, Stream> streams_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> uploading_ ABSL_GUARDED_BY(mu_);
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int holding_ ABSL_GUARDED_BY(mu_) = 0;  // uploads counted

  // "busy: ..." when `bytes` more would pass a cap, else OK.
  absl::Status CheckCaps(int64_t bytes) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLocked(Stream& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_STREAMS_H_
