#ifndef LAYERFL_COMMON_WEIGHTS_WEIGHTS_H_
#define LAYERFL_COMMON_WEIGHTS_WEIGHTS_H_

// Torch-free model weights as the coordinator sees them: float32 tensors
// grouped by layer group, each group with a version that is bumped whenever
// aggregation changes it. The coordinator, the checkpoint store and the wire
// codec work on these; only the client converts them to LibTorch tensors.

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace layerfl {

// Float32 values that copies share until one of them is written (copy on
// write): a copy of a model's weights costs no memory until it or the
// original changes, so the coordinator's download snapshot, its checkpoint
// and its evaluation read the engine's values instead of holding their own.
// Const access never copies; non-const access (data(), operator[], begin(),
// resize, ...) first copies values another object still shares. One object
// is not thread-safe; copies may be used from different threads.
class SharedFloats {
 public:
  using value_type = float;
  using size_type = size_t;
  using reference = float&;
  using const_reference = const float&;
  using iterator = float*;
  using const_iterator = const float*;

  SharedFloats() = default;
  SharedFloats(std::vector<float> values);  // NOLINT: implicit by design
  SharedFloats(std::initializer_list<float> values)
      : SharedFloats(std::vector<float>(values)) {}

  size_t size() const { return v_ ? v_->size() : 0; }
  bool empty() const { return size() == 0; }
  const float* data() const { return v_ ? v_->data() : nullptr; }
  const float* begin() const { return data(); }
  const float* end() const { return data() + size(); }
  const float& operator[](size_t i) const { return (*v_)[i]; }

  float* data() { return Unique().data(); }
  float* begin() { return data(); }
  float* end() { return data() + size(); }
  float& operator[](size_t i) { return Unique()[i]; }

  void resize(size_t n) { Unique().resize(n); }
  void reserve(size_t n) { Unique().reserve(n); }
  void push_back(float v) { Unique().push_back(v); }
  void clear() { v_.reset(); }
  void shrink_to_fit() {
    if (v_ != nullptr) Unique().shrink_to_fit();
  }
  void assign(size_t n, float value) { Unique().assign(n, value); }
  template <typename It>
  void assign(It first, It last) {
    Unique().assign(first, last);
  }
  // Appends [first, last) at `pos`, which must be end().
  template <typename It>
  void insert(const float* pos, It first, It last) {
    const size_t at = static_cast<size_t>(pos - std::as_const(*this).data());
    std::vector<float>& v = Unique();
    v.insert(v.begin() + static_cast<ptrdiff_t>(at), first, last);
  }
  void swap(SharedFloats& other) noexcept { v_.swap(other.v_); }

  // The values as a vector, for code that reads std::vector<float>.
  const std::vector<float>& vector() const;
  operator const std::vector<float>&() const { return vector(); }  // NOLINT
  // Writable, after copying values another object shares.
  std::vector<float>& mutable_vector() { return Unique(); }
  // Whether the two hold the same buffer (neither has written since one was
  // copied from the other).
  bool SharesWith(const SharedFloats& other) const {
    return v_ != nullptr && v_ == other.v_;
  }

 private:
  std::vector<float>& Unique();

  std::shared_ptr<std::vector<float>> v_;
};

bool operator==(const SharedFloats& a, const SharedFloats& b);
inline bool operator!=(const SharedFloats& a, const SharedFloats& b) {
  return !(a == b);
}

// The number of values of a row-major tensor of `shape` (1 for a scalar).
int64_t ShapeNumel(const std::vector<int64_t>& shape);

struct Tensor32 {
  std::string name;            // full parameter name, e.g. "blocks.0.qkv.weight"
  std::vector<int64_t> shape;  // row-major
  SharedFloats values;         // product(shape) elements
  int64_t numel() const { return static_cast<int64_t>(values.size()); }
};

// One layer group's parameters, in model order.
struct LayerWeights {
  std::string group;
  int64_t version = 0;  // 0 = as initialised; +1 per aggregation that changed it
  std::vector<Tensor32> tensors;
  int64_t numel() const;
};

// The whole model, groups in order from input to output.
struct ModelWeights {
  std::vector<LayerWeights> layers;
  int64_t numel() const;
  // Index of the group, or -1.
  int Find(const std::string& group) const;
};

// A client's sparse update: `w_local - w_global` for its trained groups only.
struct LayerDelta {
  std::string group;
  std::vector<Tensor32> tensors;  // same names/shapes as the global group
  // The group's importance score from the first local step, taken at the
  // global model (importance.source: train); < 0 = not reported.
  double score = -1;
};

// Checks that `delta` has exactly the tensors of `layer` (names, order,
// shapes) and only finite values. The error names the tensor and what is wrong.
absl::Status CheckDeltaMatches(const LayerWeights& layer, const LayerDelta& delta);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_WEIGHTS_WEIGHTS_H_
