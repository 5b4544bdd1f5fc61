#ifndef LAYERFL_SERVER_CHECKPOINT_CHECKPOINT_STORE_H_
#define LAYERFL_SERVER_CHECKPOINT_CHECKPOINT_STORE_H_

// Durable, atomic checkpoints of the coordinator's committed state
// (DESIGN.md §1.6): one file per committed round, `round-%08d.ckpt`, written
// to a temporary file in the same directory, fsync'ed, renamed into place and
// the directory fsync'ed, so a crash leaves either the old or the new
// checkpoint, never a torn one. Torch-free.
//
// File format (little-endian), version 1:
//   magic "LFLCKPT\n" | u32 format version | i64 round
//   | u32 layer count, per layer: str group, i64 version, u32 tensor count,
//       per tensor: str name, u32 rank, i64 dims[rank], u64 numel,
//                   f32 values[numel]
//   | str selection_state | str engine_state | str metrics_json
//   | u32 CRC-32 (zlib) of every byte before it
// where str = u64 length + bytes. Every length is checked against the bytes
// that remain before anything is allocated, so a hostile or damaged file is
// refused with DataLoss and never causes a crash or a large allocation.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/weights/weights.h"

namespace layerfl {

struct Checkpoint {
  int64_t round = 0;            // last committed round, >= 0
  ModelWeights weights;         // with per-layer versions
  std::string selection_state;  // opaque bytes (regulation statistics)
  std::string engine_state;     // opaque bytes (the round engine's own state)
  std::string metrics_json;     // opaque
};

// Encodes/decodes the file format above. `what` names the source in errors
// (normally the file path). Decode errors: DataLoss for damaged or malformed
// bytes, FailedPrecondition for a format version this build cannot read.
std::string EncodeCheckpoint(const Checkpoint& checkpoint);
absl::StatusOr<Checkpoint> DecodeCheckpoint(const std::string& bytes,
                                            const std::string& what);

// A directory of checkpoints owned by one coordinator process. Implementations
// are thread-safe (calls are serialised); two processes must not share a
// directory. Save and the loads block on disk I/O.
class CheckpointStore {
 public:
  // Opens (creating it and its parents when missing) the directory `dir`,
  // keeping the newest `keep` (>= 1) checkpoints.
  static absl::StatusOr<std::unique_ptr<CheckpointStore>> Open(
      const std::string& dir, int keep);

  virtual ~CheckpointStore() = default;

  // Durably writes `checkpoint` as round-<round>.ckpt (replacing a file of the
  // same round), then deletes all but the newest `keep` checkpoints. Returns
  // only after the file and its directory entry are on stable storage.
  // InvalidArgument when round < 0; FailedPrecondition when a newer round is
  // already stored (rounds only move forward); an I/O error leaves the
  // previous checkpoints intact.
  virtual absl::Status Save(const Checkpoint& checkpoint) = 0;

  // The checkpoint with the highest round, or nullopt when there is none.
  // A damaged latest checkpoint is an error (DataLoss naming the file and the
  // damage), never a silent fall-back to an older one. Leftover temporary
  // files of interrupted saves are ignored and deleted.
  virtual absl::StatusOr<std::optional<Checkpoint>> LoadLatest() = 0;

  // Reads one checkpoint file. NotFound when missing; DataLoss when damaged.
  virtual absl::StatusOr<Checkpoint> Load(const std::string& path) = 0;

  // The directory, as given to Open.
  virtual const std::string& dir() const = 0;
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_CHECKPOINT_CHECKPOINT_STORE_H_
