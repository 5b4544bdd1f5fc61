#ifndef LAYERFL_SERVER_CHECKPOINT_JOURNAL_H_
#define LAYERFL_SERVER_CHECKPOINT_JOURNAL_H_

// An append-only journal of records written between two checkpoints, so
// that what was accepted since the last commit survives a crash (the
// asynchronous round engine journals every update folded into its buffer).
// Each record is framed as
//   u32 length | bytes[length] | u32 CRC-32 (zlib) of the bytes
// little-endian, and is on stable storage (fdatasync) when Append returns.
// Reading stops at the first frame that is cut short or fails its CRC: a
// crash in the middle of an Append leaves a torn last frame, which is
// dropped (its writer was never told it succeeded). Torch-free.
//
// Thread-compatible: one writer (calls are serialised by the caller).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace layerfl {

struct JournalContents {
  std::vector<std::string> records;  // in the order appended
  // Bytes after the last whole record (a torn append); 0 normally.
  int64_t dropped_tail_bytes = 0;
};

class Journal {
 public:
  // Opens `path` for appending, creating it when missing; its records are
  // kept. Errors name the path.
  static absl::StatusOr<std::unique_ptr<Journal>> Open(const std::string& path);

  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Appends one record durably. A record is at most 2^31 bytes. On error
  // the journal may hold a torn frame, which reading drops.
  absl::Status Append(const std::string& record);

  // Every whole record from the start of the file.
  absl::StatusOr<JournalContents> Read() const;

  // Empties the journal durably (truncate + fsync).
  absl::Status Reset();

  const std::string& path() const { return path_; }

 private:
  Journal(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  std::string path_;
  int fd_ = -1;
};

// Parses journal bytes (the framing above): the records of a journal file,
// or of a string of frames built with FrameRecord.
JournalContents ParseJournal(const std::string& bytes);

// One record framed as Append writes it.
std::string FrameRecord(const std::string& record);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_CHECKPOINT_JOURNAL_H_
