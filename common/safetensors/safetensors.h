#ifndef LAYERFL_COMMON_SAFETENSORS_SAFETENSORS_H_
#define LAYERFL_COMMON_SAFETENSORS_SAFETENSORS_H_

// Hugging Face safetensors checkpoints, read and written without LibTorch.
//
// A file is: an 8-byte little-endian u64 N; N bytes of UTF-8 JSON, an object
// mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// plus an optional "__metadata__" object of string values; then the data
// buffer. Offsets are relative to the buffer's start; each tensor is
// row-major, little-endian, and the tensors tile the buffer exactly (no
// holes, no overlaps, nothing after the last one). Writers pad the header
// with spaces to a multiple of 8 so the buffer starts 8-byte aligned.
//
// A sharded checkpoint is a directory with model.safetensors.index.json,
// {"metadata": {...}, "weight_map": {"<tensor>": "<shard file>", ...}}, and the
// shard files it names, each a safetensors file.
//
// Errors: NotFound for a missing file, shard or tensor name; DataLoss for a
// file or index whose contents break the format (every message names the
// file and, where one applies, the tensor); InvalidArgument for a caller's
// mistake (a float read of an integer tensor, bad tensors given to a writer).
// Nothing here throws. Only little-endian hosts are supported.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/weights/weights.h"

namespace layerfl {

// The element types upstream defines, in upstream's order (increasing
// alignment; writers lay tensors out in decreasing order of this enum, then by
// name). The sub-byte F4/F6 types are not supported and are refused on read.
enum class SafetensorsDtype {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kF8E8M0,
  kF8E4M3Fnuz,
  kF8E5M2Fnuz,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kC64,
  kF64,
  kI64,
  kU64,
};

// The header's spelling ("F32", "BF16", "F8_E4M3", "BOOL", ...).
absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype);
// The dtype a header string names, or nullopt for anything else (including
// the unsupported "F4", "F6_E2M3", "F6_E3M2").
std::optional<SafetensorsDtype> ParseSafetensorsDtype(absl::string_view name);
// Bytes per element (1, 2, 4 or 8).
size_t SafetensorsDtypeSize(SafetensorsDtype dtype);

// One tensor as the header describes it.
struct SafetensorsTensorInfo {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // row-major; {} is a scalar (one element)
  uint64_t begin = 0;          // data_offsets, relative to the data buffer
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// One safetensors file, memory-mapped read-only (no copy of the data is
// made) and fully validated by Open: header length at most 100,000,000 bytes
// and inside the file; the header a JSON object with no repeated key; each
// tensor with a known dtype, a shape of non-negative integers whose byte size
// does not overflow, data_offsets [begin, end] inside the buffer with
// end - begin == numel * dtype size; the tensors tiling the buffer exactly;
// "__metadata__" (optional, may be null) an object of strings. Unknown keys
// inside a tensor's entry are ignored, as upstream does.
//
// Immutable after Open: every method is const and thread-safe. Spans returned
// point into the mapping and live as long as this object. The file must not
// be truncated or rewritten in place while open (WriteSafetensors replaces a
// file by rename, which is safe).
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // In file order: by begin offset (zero-size tensors sharing an offset by
  // name).
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  // The tensor called `name`, or nullptr.
  const SafetensorsTensorInfo* Find(absl::string_view name) const;
  // "__metadata__" ({} when absent).
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // The header's length N as stored in the first 8 bytes (the data buffer
  // starts at 8 + N).
  uint64_t header_size() const { return header_size_; }
  // The whole mapped file.
  absl::Span<const uint8_t> mapping() const { return {base_, size_}; }

  // The tensor's raw little-endian bytes, a view into the mapping.
  // NotFound naming the tensor and the file when there is no such tensor.
  absl::StatusOr<absl::Span<const uint8_t>> Bytes(absl::string_view name) const;
  // The tensor's values as float32: F32 as stored, F16 and BF16 converted
  // exactly, F64 rounded to nearest. InvalidArgument for any other dtype.
  // The mapped pages the copy read leave this process's resident memory
  // (the kernel's page cache keeps them; a view from Bytes() stays valid and
  // reads them again), so reading a checkpoint tensor by tensor holds one
  // copy of the model, not the copy plus the mapping.
  absl::StatusOr<std::vector<float>> ReadFloat32(absl::string_view name) const;
  // The values of an I64 tensor. InvalidArgument for any other dtype.
  absl::StatusOr<std::vector<int64_t>> ReadInt64(absl::string_view name) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  const uint8_t* base_ = nullptr;  // mmap'ed, size_ bytes
  size_t size_ = 0;
  uint64_t header_size_ = 0;
  std::vector<SafetensorsTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;  // name -> tensors_ index
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory: a single model.safetensors, or (when that is
// absent) model.safetensors.index.json and the shards it names. Open also
// takes the path of a .safetensors file or of an index file directly.
//
// For a sharded checkpoint Open checks that every shard named exists (a
// missing one is NotFound naming it) and is a valid file as above; shard
// names are plain file names in the index's directory; each tensor in the
// weight_map is in the shard it maps to, each tensor of a shard is in the
// weight_map, and no tensor is in two shards (DataLoss naming the tensor and
// the shards). The index's "metadata" (e.g. total_size) is not checked.
//
// Immutable after Open; thread-safe; owns the mapped files.
class SafetensorsCheckpoint {
 public:
  struct Entry {
    const SafetensorsFile* file;
    const SafetensorsTensorInfo* info;
  };

  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> Open(
      const std::string& path);

  // The file Open read first: the single .safetensors file or the index.
  const std::string& path() const { return path_; }
  // The files, shards in order of file name.
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const {
    return files_;
  }
  // Every tensor, shard by shard, each in file order.
  const std::vector<Entry>& tensors() const { return tensors_; }
  // The tensor called `name` and its file. NotFound naming it.
  absl::StatusOr<Entry> Find(absl::string_view name) const;
  // As SafetensorsFile's, looked up across shards.
  absl::StatusOr<absl::Span<const uint8_t>> Bytes(absl::string_view name) const;
  absl::StatusOr<std::vector<float>> ReadFloat32(absl::string_view name) const;
  absl::StatusOr<std::vector<int64_t>> ReadInt64(absl::string_view name) const;

 private:
  SafetensorsCheckpoint() = default;

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<Entry> tensors_;
  absl::flat_hash_map<std::string, Entry> index_;
};

// A tensor to write: raw row-major little-endian bytes, not owned.
struct SafetensorsTensorData {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  absl::Span<const uint8_t> data;  // numel * dtype size bytes
};

// Writes a safetensors file laid out as upstream's serializer does: tensors
// ordered by decreasing dtype alignment then by name, offsets contiguous,
// the header compact JSON ("__metadata__" first when `metadata` is non-empty,
// its keys sorted; then the tensors in data order, each as dtype, shape,
// data_offsets) padded with spaces to a multiple of 8. The file is replaced
// atomically: written to a temporary file in the same directory, fsync'ed,
// renamed over `path`, the directory fsync'ed; on error nothing is left
// behind and an existing file is untouched. The parent directory must exist.
// InvalidArgument naming the tensor for an empty, repeated or "__metadata__"
// name, a negative dimension, a size overflow, data of the wrong size, or a
// name or metadata string that is not UTF-8; errno-derived errors naming the
// path for I/O failures.
absl::Status WriteSafetensors(
    const std::string& path, absl::Span<const SafetensorsTensorData> tensors,
    const std::map<std::string, std::string>& metadata = {});

// Float32 tensors written as `dtype`: kF32 as is, kF16 or kBF16 rounded to
// nearest even (float16 overflow becomes infinity). InvalidArgument for any
// other dtype, or as WriteSafetensors.
absl::Status WriteSafetensorsFloat32(
    const std::string& path, absl::Span<const Tensor32> tensors,
    const std::map<std::string, std::string>& metadata = {},
    SafetensorsDtype dtype = SafetensorsDtype::kF32);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_SAFETENSORS_SAFETENSORS_H_
