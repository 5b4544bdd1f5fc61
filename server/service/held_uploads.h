#ifndef LAYERFL_SERVER_SERVICE_HELD_UPLOADS_H_
#define LAYERFL_SERVER_SERVICE_HELD_UPLOADS_H_

// Ordered aggregation's waiting room (service.h): decoded updates that
// arrived before their turn, kept in client-id order until they are handed
// to the engine -- in memory while the held values stay within
// max_held_bytes, beyond that in files under spill_dir (held_spill.h),
// read back when their turn comes. An update read back from disk takes the
// place of an upload in memory (the service's caps on uploads in flight,
// Gate), so that a run allowed one update in memory holds one. gRPC-free.
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
  // The bytes the upload was admitted with (its place under the caps), and
  // what gives that place back once the update is held (its RPC still open).
  int64_t admitted_bytes = 0;
  std::function<void()> release;
  // While held: value bytes in memory (0 when spilled), and the file holding
  // the values when spilled.
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
  // An update handed out with an error instead (spill_lost, or Flush's).
  using Fail = std::function<void(HeldUpload&, const absl::Status&)>;

  // Where an update read back from disk takes its place in memory:
  // `try_take(bytes)` false = not now (Drain stops and is tried again
  // later), `give(bytes)` once it has left memory. Unset = no caps.
  struct Gate {
    std::function<bool(int64_t)> try_take;
    std::function<void(int64_t)> give;
  };

  // `spill_dir` "" = always in memory; `log` (may be null) gets a line per
  // spill.
  HeldUploads(int64_t max_held_bytes, std::string spill_dir,
              std::function<void(const std::string&)> log, Gate gate = {});

  bool empty() const { return held_.empty(); }
  bool contains(const std::string& id) const { return held_.count(id) > 0; }
  // The lowest held id; empty() must be false.
  const std::string& first_id() const { return held_.begin()->first; }

  // Keeps `u` (one per client id: the caller refuses a second) until its
  // turn: in memory within max_held_bytes, else on disk (in memory when the
  // file cannot be written).
  void Hold(std::shared_ptr<HeldUpload> u);

  // Hands the held updates to `submit`, lowest id first, stopping at the
  // first one `blocked` says must wait, or that waits on disk while the gate
  // has no place for it; each is back in memory first (one that cannot be
  // read back goes to `fail` with "spill_lost: ...").
  void Drain(const std::function<bool(const HeldUpload&)>& blocked,
             const Submit& submit, const Fail& fail);

  // Hands every held update to `submit` (as Drain, nothing blocked, the
  // gate passed when it has no place: a deadline does not wait); or, with
  // `instead` not OK, to `fail` with it, their files removed.
  void Flush(const absl::Status& instead, const Submit& submit,
             const Fail& fail);

  Stats stats() const;

 private:
  std::shared_ptr<HeldUpload> PopFirst();
  // Brings a spilled update's values back (removing its file); false, after
  // `fail`, when it cannot be read back.
  bool Restore(HeldUpload& u, const Fail& fail);

  const int64_t max_held_bytes_;
  const std::string spill_dir_;
  const std::function<void(const std::string&)> log_;
  const Gate gate_;
  std::map<std::string, std::shared_ptr<HeldUpload>> held_;
  int64_t held_bytes_ = 0;  // value bytes of held_ in memory
  int64_t spill_seq_ = 0;

  mutable absl::Mutex stats_mu_;
  Stats stats_ ABSL_GUARDED_BY(stats_mu_);
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_HELD_UPLOADS_H_
