#include "server/service/held_spill.h"

#include <cstdio>
#include <cstring>
#include <utility>

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

SpillWriter::SpillWriter(std::string path)
    : path_(std::move(path)),
      out_(path_, std::ios::binary | std::ios::trunc) {}

SpillWriter::~SpillWriter() {
  if (finished_) return;
  out_.close();
  std::remove(path_.c_str());
}

absl::Status SpillWriter::Append(const std::vector<Tensor32>& tensors) {
  for (const Tensor32& t : tensors) {
    const absl::string_view bytes(
        reinterpret_cast<const char*>(t.values.data()),
        t.values.size() * sizeof(float));
    crc_ = Crc32(bytes, crc_);
    out_.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  if (!out_.good()) {
    return absl::UnavailableError(absl::StrCat("cannot write ", path_));
  }
  return absl::OkStatus();
}

absl::Status SpillWriter::Finish() {
  out_.write(reinterpret_cast<const char*>(&crc_), sizeof(crc_));
  out_.close();
  if (!out_.good()) {
    return absl::UnavailableError(absl::StrCat("cannot write ", path_));
  }
  finished_ = true;
  return absl::OkStatus();
}

absl::Status SpillValues(std::vector<LayerDelta>& update,
                         const std::string& path) {
  {
    SpillWriter writer(path);
    for (const LayerDelta& d : update) {
      absl::Status s = writer.Append(d.tensors);
      if (!s.ok()) return s;
    }
    absl::Status s = writer.Finish();
    if (!s.ok()) return s;
  }
  for (LayerDelta& d : update) {
    for (Tensor32& t : d.tensors) t.values.clear();
  }
  return absl::OkStatus();
}

namespace {

class SpilledValues final : public DeltaSource {
 public:
  SpilledValues(std::string path, std::ifstream in, int64_t total)
      : path_(std::move(path)), in_(std::move(in)), total_(total) {}

  absl::Status Rewind() override {
    in_.clear();
    in_.seekg(0);
    read_ = 0;
    crc_ = 0;
    if (!in_) return Damaged("cannot be read from its start");
    return absl::OkStatus();
  }

  absl::StatusOr<const float*> Next(size_t numel) override {
    if (read_ + static_cast<int64_t>(numel) > total_) {
      return Damaged("is read past the values it holds");
    }
    buffer_.resize(numel);
    const std::streamsize bytes =
        static_cast<std::streamsize>(numel * sizeof(float));
    in_.read(reinterpret_cast<char*>(buffer_.data()), bytes);
    if (in_.gcount() != bytes) return Damaged("is cut short");
    crc_ = Crc32(absl::string_view(
                     reinterpret_cast<const char*>(buffer_.data()),
                     static_cast<size_t>(bytes)),
                 crc_);
    read_ += static_cast<int64_t>(numel);
    if (read_ == total_) {
      uint32_t stored = 0;
      in_.read(reinterpret_cast<char*>(&stored), sizeof(stored));
      if (!in_ || stored != crc_) return Damaged("fails its CRC-32");
    }
    return buffer_.data();
  }

 private:
  absl::Status Damaged(const std::string& what) const {
    return absl::DataLossError(absl::StrCat("the update on disk ", path_, " ",
                                            what));
  }

  const std::string path_;
  std::ifstream in_;
  const int64_t total_;  // values in the file
  int64_t read_ = 0;     // values read in this pass
  uint32_t crc_ = 0;
  std::vector<float> buffer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DeltaSource>> OpenSpilledValues(
    const std::string& path, const std::vector<LayerDelta>& shapes) {
  int64_t numel = 0;
  for (const LayerDelta& d : shapes) {
    for (const Tensor32& t : d.tensors) numel += ShapeNumel(t.shape);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  in.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(in.tellg());
  const int64_t want =
      numel * static_cast<int64_t>(sizeof(float)) + sizeof(uint32_t);
  if (size != want) {
    return absl::DataLossError(absl::StrCat("the update on disk ", path,
                                            " has ", size,
                                            " bytes, expected ", want));
  }
  return std::make_unique<SpilledValues>(path, std::move(in), numel);
}

}  // namespace layerfl
