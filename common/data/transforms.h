#ifndef LAYERFL_COMMON_DATA_TRANSFORMS_H_
#define LAYERFL_COMMON_DATA_TRANSFORMS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/data/idx.h"

namespace layerfl {

// Image "domains" for the feature-shift setting. Each is a deterministic
// function of the image (and, for kNoise, the seed) on 8-bit grayscale,
// row-major images:
//   kIdentity   unchanged;
//   kRotate90   rotated 90 degrees clockwise: out[r][c] = in[n-1-c][r]
//               (square images only);
//   kRotate180  out[r][c] = in[rows-1-r][cols-1-c];
//   kInvert     255 - p;
//   kBlur       mean of the 3x3 neighbourhood, out-of-image neighbours
//               replaced by the nearest edge pixel, rounded half up:
//               (sum + 4) / 9;
//   kNoise      p + v clamped to [0, 255], v uniform in [-32, 32] drawn per
//               pixel (row-major) from std::mt19937_64(seed) via UniformInt;
//   kContrast   128 + (p - 128) / 2, halves rounded away from zero.
enum class Domain {
  kIdentity,
  kRotate90,
  kRotate180,
  kInvert,
  kBlur,
  kNoise,
  kContrast,
};

// Every domain, in enum order.
inline constexpr Domain kAllDomains[] = {
    Domain::kIdentity, Domain::kRotate90, Domain::kRotate180, Domain::kInvert,
    Domain::kBlur,     Domain::kNoise,    Domain::kContrast};

// Inverse of DomainName. InvalidArgument listing the valid names otherwise.
absl::StatusOr<Domain> ParseDomain(std::string_view name);

// "identity", "rotate90", "rotate180", "invert", "blur", "noise", "contrast".
std::string DomainName(Domain domain);

// Transforms the rows x cols image at `image` in place. InvalidArgument when
// rows or cols < 1, or for kRotate90 when rows != cols; `image` is untouched
// then.
absl::Status ApplyDomain(Domain domain, int rows, int cols, uint8_t* image,
                         uint64_t seed);

// Returns a copy of `set` with ApplyDomain applied to every image; image i
// uses seed MixSeed(seed ^ MixSeed(i)), so results do not depend on how the
// set is later split. Errors as ApplyDomain; InvalidArgument when the set
// is not 1-channel.
absl::StatusOr<ImageSet> ApplyDomainToAll(const ImageSet& set, Domain domain,
                                          uint64_t seed);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_TRANSFORMS_H_
