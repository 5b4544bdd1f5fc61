#include "common/data/idx.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/data/file.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

constexpr uint32_t kImageMagic = 0x00000803;
constexpr uint32_t kLabelMagic = 0x00000801;

uint32_t BigEndian32(const std::string& bytes, size_t offset) {
  auto b = [&](size_t i) {
    return static_cast<uint32_t>(static_cast<uint8_t>(bytes[offset + i]));
  };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

std::string Hex(uint32_t v) {
  return absl::StrCat("0x", absl::Hex(v, absl::kZeroPad8));
}

// Checks the magic and returns the header's int32 dims.
absl::StatusOr<std::vector<int64_t>> ParseHeader(const std::string& bytes,
                                                 const std::string& path,
                                                 uint32_t magic, int ndims) {
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  if (bytes.size() < 4) {
    return absl::DataLossError(
        absl::StrCat("IDX file ", path, " is truncated: expected at least ",
                     header, " header bytes, got ", bytes.size()));
  }
  uint32_t got = BigEndian32(bytes, 0);
  if (got != magic) {
    return absl::InvalidArgumentError(
        absl::StrCat("IDX file ", path, " has wrong magic: expected ",
                     Hex(magic), ", got ", Hex(got)));
  }
  if (bytes.size() < header) {
    return absl::DataLossError(
        absl::StrCat("IDX file ", path, " is truncated: expected at least ",
                     header, " header bytes, got ", bytes.size()));
  }
  std::vector<int64_t> dims;
  for (int i = 0; i < ndims; ++i) {
    dims.push_back(static_cast<int32_t>(BigEndian32(bytes, 4 + 4 * i)));
  }
  return dims;
}

absl::Status CheckSize(const std::string& bytes, const std::string& path,
                       int64_t expected) {
  const auto got = static_cast<int64_t>(bytes.size());
  if (got < expected) {
    return absl::DataLossError(absl::StrCat("IDX file ", path,
                                            " is truncated: expected ",
                                            expected, " bytes, got ", got));
  }
  if (got > expected) {
    return absl::DataLossError(absl::StrCat(
        "IDX file ", path, " has ", got - expected,
        " trailing bytes: expected ", expected, " bytes, got ", got));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FindFile(const std::string& dir,
                                     const std::string& name) {
  std::filesystem::path plain = std::filesystem::path(dir) / name;
  std::filesystem::path gz = std::filesystem::path(dir) / (name + ".gz");
  std::error_code ec;
  if (std::filesystem::exists(plain, ec)) return plain.string();
  if (std::filesystem::exists(gz, ec)) return gz.string();
  return absl::NotFoundError(
      absl::StrCat("IDX file not found: ", plain.string(), " (nor ",
                   gz.string(), ")"));
}

void AppendBigEndian32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    s.push_back(static_cast<char>((v >> shift) & 0xff));
  }
}

}  // namespace

absl::Status WriteIdx(const ImageSet& set, const std::string& images_path,
                      const std::string& labels_path) {
  if (set.channels != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteIdx ", images_path, ": IDX holds 1-channel images, got ",
                     set.channels, " channels"));
  }
  if (set.size() < 1 || set.rows < 1 || set.cols < 1 ||
      set.rows > kMaxIdxImageSide || set.cols > kMaxIdxImageSide) {
    return absl::InvalidArgumentError(absl::StrCat(
        "WriteIdx ", images_path, ": need >= 1 image of [1, ", kMaxIdxImageSide,
        "] per side, got ", set.size(), " of ", set.rows, "x", set.cols));
  }
  if (static_cast<int64_t>(set.pixels.size()) != set.size() * set.image_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "WriteIdx ", images_path, ": ", set.pixels.size(), " pixel bytes for ",
        set.size(), " images of ", set.rows, "x", set.cols));
  }
  std::string labels;
  labels.reserve(8 + set.labels.size());
  AppendBigEndian32(labels, kLabelMagic);
  AppendBigEndian32(labels, static_cast<uint32_t>(set.size()));
  for (size_t i = 0; i < set.labels.size(); ++i) {
    if (set.labels[i] < 0 || set.labels[i] > 255) {
      return absl::InvalidArgumentError(
          absl::StrCat("WriteIdx ", labels_path, ": label ", set.labels[i],
                       " of example ", i, " is outside [0, 255]"));
    }
    labels.push_back(static_cast<char>(set.labels[i]));
  }
  std::string images;
  images.reserve(16 + set.pixels.size());
  AppendBigEndian32(images, kImageMagic);
  AppendBigEndian32(images, static_cast<uint32_t>(set.size()));
  AppendBigEndian32(images, static_cast<uint32_t>(set.rows));
  AppendBigEndian32(images, static_cast<uint32_t>(set.cols));
  images.append(set.pixels.begin(), set.pixels.end());
  RETURN_IF_ERROR(WriteFileAtomically(images_path, images));
  return WriteFileAtomically(labels_path, labels);
}

absl::StatusOr<ImageSet> ReadIdx(const std::string& images_path,
                                 const std::string& labels_path) {
  ASSIGN_OR_RETURN(std::string images, ReadMaybeGzippedFile(images_path));
  ASSIGN_OR_RETURN(std::vector<int64_t> idims,
                   ParseHeader(images, images_path, kImageMagic, 3));
  const int64_t count = idims[0];
  const int64_t rows = idims[1];
  const int64_t cols = idims[2];
  if (count < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "IDX file ", images_path, ": image count must be >= 1, got ", count));
  }
  if (rows < 1 || rows > kMaxIdxImageSide || cols < 1 ||
      cols > kMaxIdxImageSide) {
    return absl::InvalidArgumentError(
        absl::StrCat("IDX file ", images_path, ": image size ", rows, "x", cols,
                     " is outside [1, ", kMaxIdxImageSide, "] per side"));
  }
  RETURN_IF_ERROR(CheckSize(images, images_path, 16 + count * rows * cols));

  ASSIGN_OR_RETURN(std::string labels, ReadMaybeGzippedFile(labels_path));
  ASSIGN_OR_RETURN(std::vector<int64_t> ldims,
                   ParseHeader(labels, labels_path, kLabelMagic, 1));
  if (ldims[0] != count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "IDX count mismatch: ", images_path, " has ", count, " images but ",
        labels_path, " has ", ldims[0], " labels"));
  }
  RETURN_IF_ERROR(CheckSize(labels, labels_path, 8 + count));

  ImageSet set;
  set.rows = static_cast<int>(rows);
  set.cols = static_cast<int>(cols);
  set.pixels.assign(images.begin() + 16, images.end());
  set.labels.reserve(count);
  for (int64_t i = 0; i < count; ++i) {
    set.labels.push_back(static_cast<uint8_t>(labels[8 + i]));
  }
  return set;
}

absl::StatusOr<ImageSet> LoadFashionMnist(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  ASSIGN_OR_RETURN(std::string images,
                   FindFile(dir, prefix + "-images-idx3-ubyte"));
  ASSIGN_OR_RETURN(std::string labels,
                   FindFile(dir, prefix + "-labels-idx1-ubyte"));
  return ReadIdx(images, labels);
}

absl::StatusOr<ImageSet> Subset(const ImageSet& set,
                                const std::vector<int64_t>& indices) {
  ImageSet out;
  out.channels = set.channels;
  out.rows = set.rows;
  out.cols = set.cols;
  out.mean = set.mean;
  out.std = set.std;
  const int64_t bytes = set.image_bytes();
  out.pixels.reserve(indices.size() * bytes);
  out.labels.reserve(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    int64_t i = indices[k];
    if (i < 0 || i >= set.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Subset: indices[", k, "] = ", i, " is outside [0, ",
                       set.size(), ")"));
    }
    out.pixels.insert(out.pixels.end(), set.image(i), set.image(i) + bytes);
    out.labels.push_back(set.labels[i]);
  }
  return out;
}

}  // namespace layerfl
