// Bit-for-bit model equality for tests: the same groups, versions, tensor
// names and shapes, and the same value bytes (so -0.0 != 0.0 and NaN
// payloads count).
#ifndef LAYERFL_TESTS_WEIGHTS_MATCHERS_H_
#define LAYERFL_TESTS_WEIGHTS_MATCHERS_H_

#include <cstring>

#include <gtest/gtest.h>

#include "common/weights/weights.h"

namespace layerfl {

inline void ExpectBitIdentical(const ModelWeights& a, const ModelWeights& b) {
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const LayerWeights& x = a.layers[l];
    const LayerWeights& y = b.layers[l];
    EXPECT_EQ(x.group, y.group);
    EXPECT_EQ(x.version, y.version) << x.group;
    ASSERT_EQ(x.tensors.size(), y.tensors.size()) << x.group;
    for (size_t t = 0; t < x.tensors.size(); ++t) {
      const Tensor32& p = x.tensors[t];
      const Tensor32& q = y.tensors[t];
      EXPECT_EQ(p.name, q.name);
      EXPECT_EQ(p.shape, q.shape) << p.name;
      ASSERT_EQ(p.values.size(), q.values.size()) << p.name;
      if (p.values.empty()) continue;
      EXPECT_EQ(0, std::memcmp(p.values.data(), q.values.data(),
                               p.values.size() * sizeof(float)))
          << p.name;
    }
  }
}

}  // namespace layerfl

#endif  // LAYERFL_TESTS_WEIGHTS_MATCHERS_H_
