#ifndef LAYERFL_COMMON_DATA_FILE_H_
#define LAYERFL_COMMON_DATA_FILE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace layerfl {

// Reads the whole file at `path` into memory.
// Errors: NotFound when the file does not exist, PermissionDenied (or the
// errno-derived code) when it cannot be opened or read; messages name `path`.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Replaces the file at `path` with `bytes` so that a reader (or a crash) sees
// the old file or the new one, never half of one: writes `path`.tmp, syncs
// it, renames it over `path` and syncs the directory. Missing parent
// directories are created. Errors carry the errno-derived code and name the
// path; the temporary file is removed. `durable` false skips both syncs: the
// old-or-new guarantee then holds against a killed process (the rename is
// atomic) but not a power loss, for caches whose files are checked when read.
absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes,
                                 bool durable = true);

// The file a daemon's flag names (a secret, a certificate): all of it
// (ReadFlagFile), or its first line without surrounding whitespace
// (ReadFlagFileLine, a token). InvalidArgument "--<flag>: cannot read
// '<path>'" when it cannot be read, or for ReadFlagFile is empty.
absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path);
absl::StatusOr<std::string> ReadFlagFileLine(absl::string_view flag,
                                             const std::string& path);

// True when `bytes` starts with the gzip magic bytes 0x1f 0x8b.
bool IsGzip(const std::string& bytes);

// Inflates a gzip stream (one or more concatenated members). `path` is only
// used in error messages. Errors: DataLoss for a corrupt or truncated stream,
// or bytes after the last member that are not another member;
// ResourceExhausted when the output would exceed 4 GiB.
absl::StatusOr<std::string> Gunzip(const std::string& bytes,
                                   const std::string& path);

// ReadFileToString followed by Gunzip when the content is gzip-compressed
// (detected by its magic bytes, not by the file name).
absl::StatusOr<std::string> ReadMaybeGzippedFile(const std::string& path);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_FILE_H_
