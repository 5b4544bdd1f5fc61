#include "server/service/held_spill.h"

#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/codec/codec.h"
#include "common/data/file.h"

namespace layerfl {

int64_t UpdateValueBytes(const std::vector<LayerDelta>& update) {
  int64_t n = 0;
  for (const LayerDelta& d : update) {
    for (const Tensor32& t : d.tensors) n += t.numel();
  }
  return n * static_cast<int64_t>(sizeof(float));
}

absl::Status SpillValues(std::vector<LayerDelta>& update,
                         const std::string& path) {
  uint32_t crc = 0;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    for (const LayerDelta& d : update) {
      for (const Tensor32& t : d.tensors) {
        const absl::string_view bytes(
            reinterpret_cast<const char*>(t.values.data()),
            t.values.size() * sizeof(float));
        crc = Crc32(bytes, crc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      }
    }
    out.write(reinterpret_cast<const char*>(&crc), sizeof(crc));
    out.flush();
    if (!out.good()) {
      std::remove(path.c_str());
      return absl::UnavailableError(absl::StrCat("cannot write ", path));
    }
  }
  for (LayerDelta& d : update) {
    for (Tensor32& t : d.tensors) t.values.clear();
  }
  return absl::OkStatus();
}

absl::Status RestoreValues(std::vector<LayerDelta>& update,
                           const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  std::remove(path.c_str());
  if (!bytes.ok()) return bytes.status();
  int64_t numel = 0;
  for (const LayerDelta& d : update) {
    for (const Tensor32& t : d.tensors) {
      int64_t n = 1;
      for (int64_t s : t.shape) n *= s;
      numel += n;
    }
  }
  const size_t want =
      static_cast<size_t>(numel) * sizeof(float) + sizeof(uint32_t);
  if (bytes->size() != want) {
    return absl::DataLossError(absl::StrCat("spilled update ", path, " has ",
                                            bytes->size(), " bytes, expected ",
                                            want));
  }
  uint32_t stored = 0;
  std::memcpy(&stored, bytes->data() + want - sizeof(stored), sizeof(stored));
  const absl::string_view values(bytes->data(), want - sizeof(stored));
  if (Crc32(values) != stored) {
    return absl::DataLossError(
        absl::StrCat("spilled update ", path, " fails its CRC-32"));
  }
  size_t offset = 0;
  for (LayerDelta& d : update) {
    for (Tensor32& t : d.tensors) {
      int64_t n = 1;
      for (int64_t s : t.shape) n *= s;
      t.values.resize(static_cast<size_t>(n));
      std::memcpy(t.values.data(), values.data() + offset, n * sizeof(float));
      offset += n * sizeof(float);
    }
  }
  return absl::OkStatus();
}

}  // namespace layerfl
