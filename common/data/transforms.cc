#include "common/data/transforms.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/data/rng.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

uint8_t Clamp255(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }

void Blur(int rows, int cols, uint8_t* image) {
  std::vector<uint8_t> in(image, image + int64_t{rows} * cols);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      int sum = 0;
      for (int dr = -1; dr <= 1; ++dr) {
        for (int dc = -1; dc <= 1; ++dc) {
          int rr = std::clamp(r + dr, 0, rows - 1);
          int cc = std::clamp(c + dc, 0, cols - 1);
          sum += in[int64_t{rr} * cols + cc];
        }
      }
      image[int64_t{r} * cols + c] = static_cast<uint8_t>((sum + 4) / 9);
    }
  }
}

}  // namespace

absl::StatusOr<Domain> ParseDomain(std::string_view name) {
  std::vector<std::string> names;
  for (Domain d : kAllDomains) {
    if (DomainName(d) == name) return d;
    names.push_back(DomainName(d));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown image domain \"", absl::string_view(name.data(), name.size()),
      "\"; valid names: ", absl::StrJoin(names, ", ")));
}

std::string DomainName(Domain domain) {
  switch (domain) {
    case Domain::kIdentity:
      return "identity";
    case Domain::kRotate90:
      return "rotate90";
    case Domain::kRotate180:
      return "rotate180";
    case Domain::kInvert:
      return "invert";
    case Domain::kBlur:
      return "blur";
    case Domain::kNoise:
      return "noise";
    case Domain::kContrast:
      return "contrast";
  }
  return absl::StrCat("domain(", static_cast<int>(domain), ")");
}

absl::Status ApplyDomain(Domain domain, int rows, int cols, uint8_t* image,
                         uint64_t seed) {
  if (rows < 1 || cols < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("image size must be at least 1x1, got ", rows, "x", cols));
  }
  const int64_t size = int64_t{rows} * cols;
  switch (domain) {
    case Domain::kIdentity:
      break;
    case Domain::kRotate90: {
      if (rows != cols) {
        return absl::InvalidArgumentError(absl::StrCat(
            "domain rotate90 needs a square image, got ", rows, "x", cols));
      }
      std::vector<uint8_t> in(image, image + size);
      const int n = rows;
      for (int r = 0; r < n; ++r) {
        for (int c = 0; c < n; ++c) {
          image[int64_t{r} * n + c] = in[int64_t{n - 1 - c} * n + r];
        }
      }
      break;
    }
    case Domain::kRotate180:
      std::reverse(image, image + size);
      break;
    case Domain::kInvert:
      for (int64_t i = 0; i < size; ++i) image[i] = 255 - image[i];
      break;
    case Domain::kBlur:
      Blur(rows, cols, image);
      break;
    case Domain::kNoise: {
      std::mt19937_64 rng(seed);
      for (int64_t i = 0; i < size; ++i) {
        int v = static_cast<int>(UniformInt(rng, 65)) - 32;
        image[i] = Clamp255(image[i] + v);
      }
      break;
    }
    case Domain::kContrast:
      for (int64_t i = 0; i < size; ++i) {
        int d = image[i] - 128;
        int half = d >= 0 ? (d + 1) / 2 : -((1 - d) / 2);
        image[i] = Clamp255(128 + half);
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown domain value ", static_cast<int>(domain)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ImageSet> ApplyDomainToAll(const ImageSet& set, Domain domain,
                                          uint64_t seed) {
  if (set.channels != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "domain ", DomainName(domain), " transforms 1-channel images, got ",
        set.channels, " channels"));
  }
  ImageSet out = set;
  for (int64_t i = 0; i < out.size(); ++i) {
    RETURN_IF_ERROR(
        ApplyDomain(domain, out.rows, out.cols, out.mutable_image(i),
                    MixSeed(seed ^ MixSeed(static_cast<uint64_t>(i)))));
  }
  return out;
}

}  // namespace layerfl
