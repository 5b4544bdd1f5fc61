#include "common/layers/layer_groups.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace layerfl {
namespace {

using ::testing::HasSubstr;

TEST(GlobMatchTest, WildcardsAndLiterals) {
  EXPECT_TRUE(GlobMatch("blocks.0.*", "blocks.0.qkv.weight"));
  EXPECT_FALSE(GlobMatch("blocks.0.*", "blocks.10.qkv.weight"));
  EXPECT_TRUE(GlobMatch("blocks.?.*", "blocks.3.fc1.bias"));
  EXPECT_FALSE(GlobMatch("blocks.?.*", "blocks.12.fc1.bias"));
  EXPECT_TRUE(GlobMatch("cls_token", "cls_token"));
  EXPECT_FALSE(GlobMatch("cls_token", "cls_token2"));
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_TRUE(GlobMatch("*.bias", "a.b.c.bias"));
  EXPECT_FALSE(GlobMatch("*.bias", "a.b.c.weight"));
  EXPECT_TRUE(GlobMatch("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(GlobMatch("a*b*c", "aXXbYY"));
}

std::vector<NamedShape> Params() {
  return {{"embed.weight", 32}, {"embed.bias", 8}, {"layers.0.weight", 64},
          {"layers.0.bias", 8}, {"layers.1.weight", 64}, {"layers.1.bias", 8},
          {"classifier.weight", 24}, {"classifier.bias", 3}};
}

TEST(AssignGroupsTest, AssignsInDeclaredOrderWithCounts) {
  auto groups = AssignGroups(Params(), {{"embed", {"embed.*"}},
                                        {"l0", {"layers.0.*"}},
                                        {"l1", {"layers.1.*"}},
                                        {"head", {"classifier.*"}}});
  ASSERT_TRUE(groups.ok()) << groups.status();
  ASSERT_EQ(groups->size(), 4u);
  EXPECT_EQ((*groups)[0].name, "embed");
  EXPECT_EQ((*groups)[0].num_params, 40);
  EXPECT_EQ((*groups)[1].num_params, 72);
  EXPECT_EQ((*groups)[3].num_params, 27);
  EXPECT_THAT((*groups)[3].param_names,
              ::testing::ElementsAre("classifier.weight", "classifier.bias"));
}

TEST(AssignGroupsTest, UnmatchedParameterIsNamed) {
  auto groups = AssignGroups(
      Params(), {{"embed", {"embed.*"}}, {"layers", {"layers.*"}}});
  ASSERT_FALSE(groups.ok());
  EXPECT_THAT(groups.status().message(),
              HasSubstr("parameter 'classifier.weight' is matched by no layer group"));
}

TEST(AssignGroupsTest, DoublyMatchedParameterNamesBothGroups) {
  auto groups = AssignGroups(Params(), {{"embed", {"embed.*"}},
                                        {"all_layers", {"layers.*"}},
                                        {"l0", {"layers.0.*"}},
                                        {"head", {"classifier.*"}}});
  ASSERT_FALSE(groups.ok());
  EXPECT_THAT(groups.status().message(),
              HasSubstr("parameter 'layers.0.weight' is matched by two layer "
                        "groups: 'all_layers' and 'l0'"));
}

TEST(AssignGroupsTest, DuplicateAndEmptyGroupsRefused) {
  auto dup = AssignGroups(Params(), {{"a", {"*"}}, {"a", {"x"}}});
  ASSERT_FALSE(dup.ok());
  EXPECT_THAT(dup.status().message(), HasSubstr("'a' is declared twice"));
  auto empty = AssignGroups(Params(), {{"all", {"*"}}, {"ghost", {"nope.*"}}});
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(),
              HasSubstr("layer group 'ghost' matches no parameter"));
}

TEST(MarkGroupsTest, MarksAndRefusesUnknownOrBoth) {
  auto groups = AssignGroups(Params(), {{"embed", {"embed.*"}},
                                        {"layers", {"layers.*"}},
                                        {"head", {"classifier.*"}}});
  ASSERT_TRUE(groups.ok());
  std::vector<LayerGroup> g = *groups;
  ASSERT_TRUE(MarkGroups({"embed"}, {"head"}, g).ok());
  EXPECT_TRUE(g[0].frozen);
  EXPECT_FALSE(g[1].frozen || g[1].common);
  EXPECT_TRUE(g[2].common);

  std::vector<LayerGroup> g2 = *groups;
  absl::Status s = MarkGroups({"embedd"}, {}, g2);
  EXPECT_THAT(s.message(), HasSubstr("model.frozen: unknown layer group 'embedd'"));
  std::vector<LayerGroup> g3 = *groups;
  s = MarkGroups({"head"}, {"head"}, g3);
  EXPECT_THAT(s.message(), HasSubstr("model.common: layer group 'head' is also frozen"));
}

}  // namespace
}  // namespace layerfl
