// Regulation statistics: per-round updates, the running importance, and the
// byte round trip used by checkpoints.

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/selection/regulation_stats.h"

namespace layerfl {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

SelectionInput Round(std::vector<double> a, std::vector<double> b) {
  SelectionInput in;
  in.layers = {{"embed", 1}, {"block0", 1}, {"head", 1, false, true}};
  in.clients = {{"a", 3, 1, std::move(a), {}, {}, nullptr},
                {"b", 3, 3, std::move(b), {}, {}, nullptr}};
  return in;
}

SelectionResult Picks(std::vector<std::vector<int>> layers) {
  SelectionResult r;
  r.layers = std::move(layers);
  return r;
}

RegulationStats Fresh() {
  absl::StatusOr<RegulationStats> stats =
      RegulationStats::Create({"embed", "block0", "head"}, 0.5);
  EXPECT_TRUE(stats.ok());
  return *stats;
}

TEST(RegulationStatsTest, CountsAndSampleWeightedRunningImportance) {
  RegulationStats stats = Fresh();
  EXPECT_FALSE(stats.has_importance());
  EXPECT_THAT(stats.SelectionFrequency(), ElementsAre(0, 0, 0));
  ASSERT_TRUE(
      stats.Update(Round({4, 0, 8}, {0, 4, 0}), Picks({{0, 2}, {1, 2}})).ok());
  EXPECT_EQ(stats.rounds(), 1);
  EXPECT_EQ(stats.client_rounds(), 2);
  EXPECT_THAT(stats.selection_counts(), ElementsAre(1, 1, 2));
  EXPECT_THAT(stats.last_round_counts(), ElementsAre(1, 1, 2));
  // Weights 1 and 3: (4, 12, 8) / 4.
  EXPECT_TRUE(stats.has_importance());
  EXPECT_THAT(stats.importance(), ElementsAre(1, 3, 2));

  ASSERT_TRUE(
      stats.Update(Round({3, 3, 3}, {3, 3, 3}), Picks({{2}, {2}})).ok());
  EXPECT_THAT(stats.selection_counts(), ElementsAre(1, 1, 4));
  EXPECT_THAT(stats.last_round_counts(), ElementsAre(0, 0, 2));
  // decay 0.5: 0.5 * old + 0.5 * 3.
  EXPECT_THAT(stats.importance(), ElementsAre(2, 3, 2.5));
  EXPECT_THAT(stats.SelectionFrequency(),
              ElementsAre(DoubleNear(0.25, 1e-12), DoubleNear(0.25, 1e-12),
                          DoubleNear(1.0, 1e-12)));

  // A round without scores moves the counts only.
  SelectionInput unscored = Round({}, {});
  ASSERT_TRUE(stats.Update(unscored, Picks({{0, 2}, {2}})).ok());
  EXPECT_THAT(stats.importance(), ElementsAre(2, 3, 2.5));
  EXPECT_EQ(stats.rounds(), 3);
}

TEST(RegulationStatsTest, MismatchesAreRefusedAndChangeNothing) {
  RegulationStats stats = Fresh();
  SelectionInput in = Round({1, 1, 1}, {1, 1, 1});
  in.layers[1].name = "block9";
  EXPECT_THAT(stats.Update(in, Picks({{2}, {2}})).message(),
              HasSubstr("'block9'"));
  in = Round({1, 1, 1}, {1, 1, 1});
  EXPECT_THAT(stats.Update(in, Picks({{2}})).message(), HasSubstr("1 clients"));
  EXPECT_THAT(stats.Update(in, Picks({{2}, {7}})).message(),
              HasSubstr("client 'b' has layer index 7"));
  in.clients[0].sq_grad_norm = {1, -1, 1};
  EXPECT_THAT(stats.Update(in, Picks({{2}, {2}})).message(),
              HasSubstr("client 'a' layer 'block0'"));
  EXPECT_EQ(stats.rounds(), 0);
  EXPECT_THAT(stats.selection_counts(), ElementsAre(0, 0, 0));
}

TEST(RegulationStatsTest, CreateValidates) {
  EXPECT_THAT(RegulationStats::Create({"a", "a"}).status().message(),
              HasSubstr("duplicate layer 'a'"));
  EXPECT_THAT(RegulationStats::Create({"a"}, 1.0).status().message(),
              HasSubstr("decay"));
}

TEST(RegulationStatsTest, SerializeRoundTrip) {
  RegulationStats stats = Fresh();
  ASSERT_TRUE(
      stats.Update(Round({4, 0, 8}, {0, 4, 0}), Picks({{0, 2}, {1, 2}})).ok());
  ASSERT_TRUE(
      stats.Update(Round({0.1, 1e-30, 3}, {7, 3, 3}), Picks({{2}, {1, 2}}))
          .ok());
  const std::string bytes = stats.Serialize();
  absl::StatusOr<RegulationStats> back = RegulationStats::Deserialize(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layer_names(), stats.layer_names());
  EXPECT_EQ(back->decay(), stats.decay());
  EXPECT_EQ(back->rounds(), stats.rounds());
  EXPECT_EQ(back->client_rounds(), stats.client_rounds());
  EXPECT_EQ(back->selection_counts(), stats.selection_counts());
  EXPECT_EQ(back->last_round_counts(), stats.last_round_counts());
  EXPECT_EQ(back->has_importance(), stats.has_importance());
  EXPECT_EQ(back->importance(), stats.importance());  // bit-exact
  EXPECT_EQ(back->Serialize(), bytes);
  // Updating the restored copy matches updating the original.
  ASSERT_TRUE(
      stats.Update(Round({1, 2, 3}, {3, 2, 1}), Picks({{0}, {0}})).ok());
  ASSERT_TRUE(
      back->Update(Round({1, 2, 3}, {3, 2, 1}), Picks({{0}, {0}})).ok());
  EXPECT_EQ(back->Serialize(), stats.Serialize());

  const std::string empty = Fresh().Serialize();
  EXPECT_TRUE(RegulationStats::Deserialize(empty).ok());
}

TEST(RegulationStatsTest, CorruptBytesAreDataLoss) {
  RegulationStats stats = Fresh();
  ASSERT_TRUE(
      stats.Update(Round({1, 2, 3}, {3, 2, 1}), Picks({{0}, {0}})).ok());
  const std::string bytes = stats.Serialize();
  for (size_t k = 0; k < bytes.size(); k += 7) {
    std::string flipped = bytes;
    flipped[k] ^= 0x20;
    EXPECT_EQ(RegulationStats::Deserialize(flipped).status().code(),
              absl::StatusCode::kDataLoss)
        << "byte " << k;
  }
  for (size_t len : {size_t{0}, size_t{5}, size_t{20}, bytes.size() - 1}) {
    EXPECT_EQ(
        RegulationStats::Deserialize(bytes.substr(0, len)).status().code(),
        absl::StatusCode::kDataLoss)
        << "length " << len;
  }
  EXPECT_EQ(RegulationStats::Deserialize(bytes + "x").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      RegulationStats::Deserialize("XXXX" + bytes.substr(4)).status().message(),
      HasSubstr("bad magic"));
}

}  // namespace
}  // namespace layerfl
