#ifndef LAYERFL_COMMON_DATA_IMAGE_H_
#define LAYERFL_COMMON_DATA_IMAGE_H_

// Decoding and preprocessing of JPEG/PNG images, torch-free. Every function
// here is deterministic: the same file bytes give the same output bytes on
// every machine (libjpeg-turbo's integer IDCT; resampling in fixed point with
// coefficients computed by correctly rounded double arithmetic, compiled
// without floating-point contraction).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace layerfl {

// An 8-bit image, channel-major (CHW): plane c starts at c * rows * cols and
// is row-major.
struct Image {
  int channels = 0;  // 1 (grey) or 3 (RGB)
  int rows = 0;
  int cols = 0;
  std::vector<uint8_t> pixels;

  uint8_t at(int c, int r, int col) const {
    return pixels[(int64_t{c} * rows + r) * cols + col];
  }
};

// Largest accepted side of a decoded image.
inline constexpr int kMaxImageSide = 16384;

// Decodes JPEG or PNG bytes (told apart by their signature, not by a file
// name) to 3-channel RGB: grey becomes R = G = B, an alpha channel is
// dropped (not composited, as PIL's convert("RGB")), palettes are expanded,
// 16-bit PNG samples keep their high byte. `path` names the source in
// errors. InvalidArgument naming `path` when the bytes are neither format,
// are corrupt or truncated (libjpeg warnings count as errors), the JPEG is
// CMYK, or a side exceeds kMaxImageSide.
absl::StatusOr<Image> DecodeImage(std::string_view bytes,
                                  const std::string& path);

// Reads and decodes the file at `path`: NotFound or the errno-derived code
// when it cannot be read, else as DecodeImage.
absl::StatusOr<Image> DecodeImageFile(const std::string& path);

enum class Resample { kBilinear, kBicubic };

// Resizes to rows x cols (each >= 1) by separable convolution as PIL's
// Image.resize: the filter (bilinear: triangle, support 1; bicubic: Keys
// with a = -0.5, support 2) is widened by the scale factor when shrinking,
// so downscaling averages; coefficients have 22 fractional bits; the
// horizontal pass runs first and is rounded to 8 bits. Returns `in`
// unchanged when the size already matches.
Image Resize(const Image& in, int rows, int cols, Resample resample);

// The rows x cols window centred on `in` as Hugging Face's center_crop:
// top = floor((in.rows - rows) / 2), left likewise (negative when the window
// is larger than the image); where the window extends past the image its
// pixels are 0.
Image CenterCrop(const Image& in, int rows, int cols);

// RGB -> grey by ITU-R 601-2 luma in PIL's fixed point:
// (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16. A grey image
// (channels 1) is returned unchanged.
Image ToGrey(const Image& in);

// How a decoded RGB image becomes a model input.
struct ImagePreprocess {
  int channels = 3;  // 1: ToGrey; 3: RGB
  // Resize: to exactly resize_rows x resize_cols when those are > 0; else
  // when shortest_edge > 0 the shorter side becomes shortest_edge and the
  // longer one floor(shortest_edge * long / short); else no resize.
  int resize_rows = 0;
  int resize_cols = 0;
  int shortest_edge = 0;
  Resample resample = Resample::kBilinear;
  // CenterCrop to crop_rows x crop_cols when both are > 0.
  int crop_rows = 0;
  int crop_cols = 0;
  // The model input of pixel p of channel c: (p / 255 - mean[c]) / std[c];
  // `channels` entries each.
  std::vector<double> mean = {0.5, 0.5, 0.5};
  std::vector<double> std = {0.5, 0.5, 0.5};
};

// The preprocessing a Hugging Face `preprocessor_config.json` describes, for
// image_processor_type (or feature_extractor_type) ViTImageProcessor /
// ViTFeatureExtractor and CLIPImageProcessor / CLIPFeatureExtractor, with
// upstream's defaults for missing keys: do_resize, size ({"height",
// "width"}, {"shortest_edge"}, or a number: square for ViT, shortest edge
// for CLIP), resample (PIL's 2 = bilinear, 3 = bicubic), do_center_crop and
// crop_size (CLIP), do_rescale and rescale_factor, do_normalize, image_mean
// and image_std (3 numbers, or one for all channels). A rescale factor r
// other than 1/255 (or none) is folded into mean and std: (p * r - m) / s =
// (p / 255 - m / (255 r)) / (s / (255 r)). Other keys are ignored.
// Errors: NotFound for a missing file; InvalidArgument naming the file and
// the key for invalid JSON, an unsupported processor type or resample
// value, a wrong type, or a size, crop or std that is not positive.
absl::StatusOr<ImagePreprocess> ReadPreprocessorConfig(const std::string& path);

// Decoded image -> model-input bytes: ToGrey when spec.channels is 1, then
// resize, then center crop. InvalidArgument when spec.channels is not 1 or 3
// or `in` is not RGB.
absl::StatusOr<Image> Preprocess(const Image& in, const ImagePreprocess& spec);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_IMAGE_H_
