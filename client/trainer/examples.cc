#include "client/trainer/examples.h"

#include <ATen/ATen.h>

namespace layerfl {

Examples ImagesToExamples(const ImageSet& set) {
  Examples e;
  const int64_t n = set.size();
  at::Tensor raw = at::from_blob(const_cast<uint8_t*>(set.pixels.data()),
                                 {n, 1, set.rows, set.cols}, at::kByte);
  e.inputs = (raw.to(at::kFloat) / 255.0 - kFashionMnistMean) / kFashionMnistStd;
  std::vector<int64_t> labels(set.labels.begin(), set.labels.end());
  e.labels = at::from_blob(labels.data(), {n}, at::kLong).clone();
  return e;
}

Examples TextToExamples(const TextSet& set) {
  Examples e;
  const int64_t n = set.size();
  std::vector<int64_t> tokens(set.tokens.begin(), set.tokens.end());
  e.inputs = at::from_blob(tokens.data(), {n, set.max_len}, at::kLong).clone();
  std::vector<int64_t> labels(set.labels.begin(), set.labels.end());
  e.labels = at::from_blob(labels.data(), {n}, at::kLong).clone();
  return e;
}

}  // namespace layerfl
