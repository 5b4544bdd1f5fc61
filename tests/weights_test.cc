// SharedFloats: copies share values until one is written (copy on write).

#include "common/weights/weights.h"

#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerfl {
namespace {

using ::testing::ElementsAre;

TEST(SharedFloatsTest, ACopySharesUntilEitherIsWritten) {
  SharedFloats a = {1.0f, 2.0f, 3.0f};
  SharedFloats b = a;
  EXPECT_TRUE(b.SharesWith(a));
  // Reading (const) never copies.
  const SharedFloats& read = b;
  EXPECT_EQ(read.data(), std::as_const(a).data());
  EXPECT_EQ(read[1], 2.0f);
  float sum = 0;
  for (float v : read) sum += v;
  EXPECT_EQ(sum, 6.0f);
  EXPECT_TRUE(b.SharesWith(a));

  b[0] = 9.0f;  // b gets its own values; a keeps its
  EXPECT_FALSE(b.SharesWith(a));
  EXPECT_THAT(a, ElementsAre(1.0f, 2.0f, 3.0f));
  EXPECT_THAT(b, ElementsAre(9.0f, 2.0f, 3.0f));
  // Writing values no one else holds writes them in place.
  const float* before = std::as_const(b).data();
  b[1] = 8.0f;
  EXPECT_EQ(std::as_const(b).data(), before);

  SharedFloats c = a;
  a.resize(1);  // the writer copies, also when it shrinks
  EXPECT_THAT(c, ElementsAre(1.0f, 2.0f, 3.0f));
  EXPECT_THAT(a, ElementsAre(1.0f));
}

TEST(SharedFloatsTest, ReplacingValuesLeavesCopiesWithTheOldOnes) {
  // What a commit does to the engine's model while a download snapshot
  // still holds the previous version.
  Tensor32 global{"w", {2}, {1.0f, 2.0f}};
  const Tensor32 snapshot = global;
  global.values = std::vector<float>{5.0f, 6.0f};
  EXPECT_THAT(snapshot.values, ElementsAre(1.0f, 2.0f));
  EXPECT_THAT(global.values, ElementsAre(5.0f, 6.0f));
}

TEST(SharedFloatsTest, VectorOperations) {
  SharedFloats v;
  EXPECT_TRUE(v.empty());
  EXPECT_EQ(std::as_const(v).data(), nullptr);
  EXPECT_TRUE(v.vector().empty());
  const float more[] = {4.0f, 5.0f};
  v.push_back(3.0f);
  v.insert(v.end(), more, more + 2);
  EXPECT_THAT(v, ElementsAre(3.0f, 4.0f, 5.0f));
  // insert at a shared buffer's end(): the copy happens before the position
  // is taken.
  SharedFloats w = v;
  w.insert(std::as_const(w).end(), more, more + 1);
  EXPECT_THAT(w, ElementsAre(3.0f, 4.0f, 5.0f, 4.0f));
  EXPECT_THAT(v, ElementsAre(3.0f, 4.0f, 5.0f));
  w.assign(size_t{2}, 7.0f);
  EXPECT_THAT(w, ElementsAre(7.0f, 7.0f));
  EXPECT_EQ(w, (std::vector<float>{7.0f, 7.0f}));
  EXPECT_NE(w, v);
  const std::vector<float>& as_vector = v;
  EXPECT_EQ(as_vector.size(), 3u);
  w.clear();
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(v.size(), 3u);
}

}  // namespace
}  // namespace layerfl
