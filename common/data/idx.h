#ifndef LAYERFL_COMMON_DATA_IDX_H_
#define LAYERFL_COMMON_DATA_IDX_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace layerfl {

// Fashion-MNIST normalisation (mean and std of the training pixels / 255).
inline constexpr double kFashionMnistMean = 0.2860;
inline constexpr double kFashionMnistStd = 0.3530;

// A set of 8-bit images with integer labels, held in memory as bytes (a
// float copy of a 224x224 RGB image would take 600 KB; the trainer
// normalises a batch when it takes it).
struct ImageSet {
  int channels = 1;  // 1 (grey) or 3 (RGB)
  int rows = 0;
  int cols = 0;
  // size() * channels * rows * cols bytes; image i starts at
  // i * image_bytes(), channel-major (CHW), each plane row-major.
  std::vector<uint8_t> pixels;
  std::vector<int> labels;
  // The model input of pixel p of channel c is (p / 255 - mean[c]) / std[c];
  // `channels` entries each. The defaults are Fashion-MNIST's (IDX sets).
  std::vector<double> mean = {kFashionMnistMean};
  std::vector<double> std = {kFashionMnistStd};

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t image_bytes() const { return int64_t{channels} * rows * cols; }
  const uint8_t* image(int64_t i) const {
    return pixels.data() + i * image_bytes();
  }
  uint8_t* mutable_image(int64_t i) {
    return pixels.data() + i * image_bytes();
  }
};

// Largest accepted image side; larger IDX dims are treated as corrupt.
inline constexpr int kMaxIdxImageSide = 4096;

// Reads an IDX image file (magic 0x00000803, dims count/rows/cols) and an IDX
// label file (magic 0x00000801, dim count), each plain or gzip-compressed
// (detected by the 0x1f 0x8b magic, not by the name). All header integers are
// big-endian int32.
//
// Errors (each message names the offending path):
//   NotFound         a file does not exist;
//   InvalidArgument  wrong magic (expected and got, in hex), zero or absurd
//                    dimensions (count < 1, rows/cols outside
//                    [1, kMaxIdxImageSide]), image count != label count;
//   DataLoss         file shorter than its header says (expected vs got
//                    bytes), trailing bytes after the data, corrupt gzip.
absl::StatusOr<ImageSet> ReadIdx(const std::string& images_path,
                                 const std::string& labels_path);

// Loads Fashion-MNIST from `dir`: train-{images-idx3,labels-idx1}-ubyte when
// `train`, else t10k-*. For each file the plain name is tried first, then the
// name with ".gz". NotFound lists both candidates when neither exists.
absl::StatusOr<ImageSet> LoadFashionMnist(const std::string& dir, bool train);

// Writes `set` as an IDX image file and an IDX label file (plain, the format
// ReadIdx reads), each through a temporary file renamed into place, so a
// reader never sees half a file. InvalidArgument when the set is empty or
// not one channel, its pixels do not match size() * rows * cols, or a label
// is outside [0, 255];
// the errno-derived code naming the path when a file cannot be written.
absl::Status WriteIdx(const ImageSet& set, const std::string& images_path,
                      const std::string& labels_path);

// Copies the examples at `indices` (in that order, repeats allowed) into a new
// set with the same shape and normalisation. InvalidArgument when an index is outside
// [0, set.size()).
absl::StatusOr<ImageSet> Subset(const ImageSet& set,
                                const std::vector<int64_t>& indices);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_IDX_H_
