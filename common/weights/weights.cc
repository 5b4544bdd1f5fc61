#include "common/weights/weights.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace layerfl {

SharedFloats::SharedFloats(std::vector<float> values)
    : v_(std::make_shared<std::vector<float>>(std::move(values))) {}

const std::vector<float>& SharedFloats::vector() const {
  static const std::vector<float>* const kEmpty = new std::vector<float>();
  return v_ ? *v_ : *kEmpty;
}

int64_t ShapeNumel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float>& SharedFloats::Unique() {
  if (v_ == nullptr) {
    v_ = std::make_shared<std::vector<float>>();
  } else if (v_.use_count() > 1) {
    v_ = std::make_shared<std::vector<float>>(*v_);
  }
  return *v_;
}

bool operator==(const SharedFloats& a, const SharedFloats& b) {
  return a.SharesWith(b) || a.vector() == b.vector();
}

int64_t LayerWeights::numel() const {
  int64_t n = 0;
  for (const Tensor32& t : tensors) n += t.numel();
  return n;
}

int64_t ModelWeights::numel() const {
  int64_t n = 0;
  for (const LayerWeights& l : layers) n += l.numel();
  return n;
}

int ModelWeights::Find(const std::string& group) const {
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].group == group) return static_cast<int>(i);
  }
  return -1;
}

absl::Status CheckDeltaMatches(const LayerWeights& layer,
                               const LayerDelta& delta) {
  if (delta.tensors.size() != layer.tensors.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer '", layer.group, "': expected ", layer.tensors.size(),
        " tensors, got ", delta.tensors.size()));
  }
  for (size_t i = 0; i < layer.tensors.size(); ++i) {
    const Tensor32& want = layer.tensors[i];
    const Tensor32& got = delta.tensors[i];
    if (got.name != want.name) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer '", layer.group, "': tensor ", i, " should be '",
                       want.name, "', got '", got.name, "'"));
    }
    if (got.shape != want.shape || got.values.size() != want.values.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", want.name, "': wrong shape: expected [",
          absl::StrJoin(want.shape, ", "), "], got [",
          absl::StrJoin(got.shape, ", "), "] with ", got.values.size(),
          " values"));
    }
    for (size_t k = 0; k < got.values.size(); ++k) {
      if (!std::isfinite(got.values[k])) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", want.name, "': non-finite value ",
                         got.values[k], " at element ", k));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace layerfl
