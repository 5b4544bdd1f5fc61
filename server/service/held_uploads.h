#ifndef LAYERFL_SERVER_SERVICE_HELD_UPLOADS_H_
#define LAYERFL_SERVER_SERVICE_HELD_UPLOADS_H_

// Ordered aggregation's waiting room (service.h): decoded updates that
// arrived before their turn, kept in client-id order until they are handed
// to the engine -- in memory while the held values stay within
// max_held_bytes, beyond that in files under spill_dir (held_spill.h),
// handed out as they are when their turn comes (the engine folds an update
// on disk from its file). gRPC-free.
//
// Thread-compatible: used on the service's engine thread only; stats() may
// be read from any thread.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/round/round_engine.h"
#include "server/service/service.h"

namespace layerfl {

// A decoded update waiting for the engine thread.
struct HeldUpload {
  std::string id;
  int64_t round = 0;
  int64_t num_samples = 0;
  std::vector<LayerDelta> update;
  ClientUsage usage;  // what the client says training took
  TransferRecord record;
  std::function<void(const absl::Status&)> done;  // finishes the RPC
  // Gives the upload's place under the service's caps back once the update
  // is held (its RPC stays open until its turn).
  std::function<void()> release;
  // While held: value bytes in memory (0 when on disk), and the file holding
  // the values when on disk (spilled here, or received to disk); the update's
  // tensors then have their shapes and no values.
  int64_t held_bytes = 0;
  std::string spill_path;
  // Set by the reactor's OnCancel: a client that cancelled (or died) before
  // its update reached the engine contributes nothing.
  std::shared_ptr<std::atomic<bool>> cancelled;
};

class HeldUploads {
 public:
  struct Stats {
    int64_t held_bytes = 0;       // values held in memory now
    int64_t peak_held_bytes = 0;  // the most ever held in memory at once
    int64_t spilled = 0;          // updates that waited on disk
  };
  using Submit = std::function<void(HeldUpload&)>;
  // An update handed out with an error instead (Flush's).
  using Fail = std::function<void(HeldUpload&, const absl::Status&)>;

  // `spill_dir` "" = always in memory; `log` (may be null) gets a line per
  // spill.
  HeldUploads(int64_t max_held_bytes, std::string spill_dir,
              std::function<void(const std::string&)> log);

  bool empty() const { return held_.empty(); }
  bool contains(const std::string& id) const { return held_.count(id) > 0; }
  // The lowest held id; empty() must be false.
  const std::string& first_id() const { return held_.begin()->first; }

  // Keeps `u` (one per client id: the caller refuses a second) until its
  // turn: in memory within max_held_bytes, else on disk (in memory when the
  // file cannot be written); one already on disk stays there.
  void Hold(std::shared_ptr<HeldUpload> u);

  // Hands the held updates to `submit`, lowest id first, stopping at the
  // first one `blocked` says must wait. One on disk is handed out with its
  // spill_path: `submit` reads it from there and removes the file.
  void Drain(const std::function<bool(const HeldUpload&)>& blocked,
             const Submit& submit);

  // Hands every held update to `submit` (as Drain, nothing blocked); or,
  // with `instead` not OK, to `fail` with it, their files removed.
  void Flush(const absl::Status& instead, const Submit& submit,
             const Fail& fail);

  Stats stats() const;

 private:
  std::shared_ptr<HeldUpload> PopFirst();

  const int64_t max_held_bytes_;
  const std::string spill_dir_;
  const std::function<void(const std::string&)> log_;
  std::map<std::string, std::shared_ptr<HeldUpload>> held_;
  int64_t held_bytes_ = 0;  // value bytes of held_ in memory
  int64_t spill_seq_ = 0;

  mutable absl::Mutex stats_mu_;
  Stats stats_ ABSL_GUARDED_BY(stats_mu_);
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_HELD_UPLOADS_H_
