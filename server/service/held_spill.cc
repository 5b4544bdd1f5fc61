#include "server/service/held_spill.h"

#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/codec/codec.h"

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
  // Straight into the tensors, a tensor at a time: the update is in memory
  // once, not also as the file's bytes.
  int64_t numel = 0;
  for (const LayerDelta& d : update) {
    for (const Tensor32& t : d.tensors) {
      int64_t n = 1;
      for (int64_t s : t.shape) n *= s;
      numel += n;
    }
  }
  const auto drop = [&update] {
    for (LayerDelta& d : update) {
      for (Tensor32& t : d.tensors) t.values.clear();
    }
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path));
  }
  in.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(in.tellg());
  in.seekg(0);
  const int64_t want =
      numel * static_cast<int64_t>(sizeof(float)) + sizeof(uint32_t);
  if (size != want) {
    std::remove(path.c_str());
    return absl::DataLossError(absl::StrCat(
        "spilled update ", path, " has ", size, " bytes, expected ", want));
  }
  uint32_t crc = 0;
  for (LayerDelta& d : update) {
    for (Tensor32& t : d.tensors) {
      int64_t n = 1;
      for (int64_t s : t.shape) n *= s;
      std::vector<float>& v = t.values.mutable_vector();
      v.resize(static_cast<size_t>(n));
      const std::streamsize bytes =
          static_cast<std::streamsize>(n * sizeof(float));
      in.read(reinterpret_cast<char*>(v.data()), bytes);
      if (in.gcount() != bytes) break;
      crc = Crc32(absl::string_view(reinterpret_cast<const char*>(v.data()),
                                    static_cast<size_t>(bytes)),
                  crc);
    }
  }
  uint32_t stored = 0;
  in.read(reinterpret_cast<char*>(&stored), sizeof(stored));
  const bool read_all = static_cast<bool>(in);
  in.close();
  std::remove(path.c_str());
  if (!read_all) {
    drop();
    return absl::DataLossError(absl::StrCat("cannot read ", path, " whole"));
  }
  if (crc != stored) {
    drop();
    return absl::DataLossError(
        absl::StrCat("spilled update ", path, " fails its CRC-32"));
  }
  return absl::OkStatus();
}

}  // namespace layerfl
