// The registered strategies: hand-computed answers on tiny instances, a
// property test over thousands of random instances, input validation.

#include "server/selection/selection_strategy.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/selection/regulation_stats.h"
#include "server/selection/rng.h"

namespace layerfl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<SelectionStrategy> Make(const std::string& name,
                                        SelectionOptions options = {}) {
  absl::StatusOr<std::unique_ptr<SelectionStrategy>> s =
      CreateSelectionStrategy(name, options);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(s).value();
}

// embed (frozen), block0..block3, head (common); unit costs.
// a: budget 3 (room 2 after the head), b: 2 (room 1), c: 1 (room 0).
SelectionInput TinyInput() {
  SelectionInput in;
  in.layers = {{"embed", 1, true, false},   {"block0", 1, false, false},
               {"block1", 1, false, false}, {"block2", 1, false, false},
               {"block3", 1, false, false}, {"head", 1, false, true}};
  in.clients = {
      {"a", 3, 10, {9, 1, 5, 3, 2, 7}, {0, 4, 3, 2, 1, 0}, {1, 1, 2, 3, 4, 1}, nullptr},
      {"b", 2, 30, {0, 4, 1, 0, 2, 1}, {0, 1, 2, 3, 4, 0}, {4, 3, 2, 1, 1, 1}, nullptr},
      {"c", 1, 20, {1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1}, nullptr},
  };
  return in;
}

std::vector<std::vector<int>> SelectLayers(const std::string& name,
                                           const SelectionInput& in,
                                           SelectionOptions options = {}) {
  absl::StatusOr<SelectionResult> r = Make(name, options)->Select(in);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->layers : std::vector<std::vector<int>>{};
}

TEST(SelectionRegistryTest, EveryStrategyIsRegisteredOnce) {
  EXPECT_THAT(SelectionStrategyNames(),
              ElementsAre("full", "top", "bottom", "both", "random", "head",
                          "rgn", "snr", "importance", "strategic"));
  for (const std::string& name : SelectionStrategyNames()) {
    EXPECT_EQ(Make(name)->name(), name);
  }
}

TEST(SelectionRegistryTest, UnknownNameListsValidOnes) {
  absl::StatusOr<std::unique_ptr<SelectionStrategy>> s =
      CreateSelectionStrategy("pro", {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("'pro'"));
  EXPECT_THAT(s.status().message(), HasSubstr("full, top, bottom, both"));
  EXPECT_THAT(s.status().message(), HasSubstr("strategic"));
}

TEST(SelectionRegistryTest, InvalidOptionsNameTheField) {
  SelectionOptions o;
  o.lambda = -1;
  EXPECT_THAT(CreateSelectionStrategy("strategic", o).status().message(),
              HasSubstr("selection.lambda"));
  o = {};
  o.time_limit_ms = 0;
  EXPECT_THAT(CreateSelectionStrategy("strategic", o).status().message(),
              HasSubstr("selection.time_limit_ms"));
  o = {};
  o.target_gap = std::nan("");
  EXPECT_THAT(CreateSelectionStrategy("top", o).status().message(),
              HasSubstr("selection.target_gap"));
  o = {};
  o.starts = 0;
  EXPECT_THAT(CreateSelectionStrategy("top", o).status().message(),
              HasSubstr("selection.starts"));
}

TEST(SelectionStrategyTest, OrderStrategiesHandComputed) {
  const SelectionInput in = TinyInput();
  EXPECT_THAT(
      SelectLayers("top", in),
      ElementsAre(ElementsAre(3, 4, 5), ElementsAre(4, 5), ElementsAre(5)));
  EXPECT_THAT(
      SelectLayers("bottom", in),
      ElementsAre(ElementsAre(1, 2, 5), ElementsAre(1, 5), ElementsAre(5)));
  // Alternating order: block0, block3, block1, block2.
  EXPECT_THAT(
      SelectLayers("both", in),
      ElementsAre(ElementsAre(1, 4, 5), ElementsAre(1, 5), ElementsAre(5)));
}

TEST(SelectionStrategyTest, OrderStrategiesStopAtFirstLayerThatDoesNotFit) {
  SelectionInput in = TinyInput();
  in.layers[4].cost = 3;     // block3 is expensive
  in.clients[0].budget = 4;  // room 3
  // top: block3 (3) fits alone.
  EXPECT_THAT(SelectLayers("top", in)[0], ElementsAre(4, 5));
  // bottom: block0, block1, block2 (3), never skipping ahead.
  EXPECT_THAT(SelectLayers("bottom", in)[0], ElementsAre(1, 2, 3, 5));
  in.clients[0].budget = 3;  // room 2: top stops at once
  EXPECT_THAT(SelectLayers("top", in)[0], ElementsAre(5));
}

TEST(SelectionStrategyTest, FullTrainsEveryTrainableLayerOrRefuses) {
  SelectionInput in = TinyInput();
  absl::StatusOr<SelectionResult> r = Make("full")->Select(in);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("client 'a'"));
  for (ClientInput& c : in.clients) c.budget = 5;
  EXPECT_THAT(
      SelectLayers("full", in),
      ElementsAre(ElementsAre(1, 2, 3, 4, 5), ElementsAre(1, 2, 3, 4, 5),
                  ElementsAre(1, 2, 3, 4, 5)));
}

TEST(SelectionStrategyTest, ScoreStrategiesHandComputed) {
  const SelectionInput in = TinyInput();
  // a: sq over block0..3 = 1, 5, 3, 2 -> block1, block2.
  // b: 4, 1, 0, 2 -> block0.
  EXPECT_THAT(
      SelectLayers("importance", in),
      ElementsAre(ElementsAre(2, 3, 5), ElementsAre(1, 5), ElementsAre(5)));
  // a rgn 4, 3, 2, 1 -> block0, block1; b rgn 1, 2, 3, 4 -> block3.
  EXPECT_THAT(
      SelectLayers("rgn", in),
      ElementsAre(ElementsAre(1, 2, 5), ElementsAre(4, 5), ElementsAre(5)));
  // a snr 1, 2, 3, 4 -> block2, block3; b snr 3, 2, 1, 1 -> block0.
  EXPECT_THAT(
      SelectLayers("snr", in),
      ElementsAre(ElementsAre(3, 4, 5), ElementsAre(1, 5), ElementsAre(5)));
}

TEST(SelectionStrategyTest, ScoreStrategiesSolveTheKnapsackWithCosts) {
  SelectionInput in;
  in.layers = {{"l0", 3}, {"l1", 2}, {"l2", 2}};
  in.clients = {{"a", 4, 1, {5, 3, 3}, {}, {}, nullptr}};
  // Greedy by score takes l0 (5) and stops; the knapsack takes l1 + l2 (6).
  EXPECT_THAT(SelectLayers("importance", in), ElementsAre(ElementsAre(1, 2)));
}

TEST(SelectionStrategyTest, ScoreStrategiesNeedTheirScores) {
  SelectionInput in = TinyInput();
  in.clients[1].snr.clear();
  absl::StatusOr<SelectionResult> r = Make("snr")->Select(in);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("client 'b'"));
  EXPECT_THAT(r.status().message(), HasSubstr("snr"));
  in.clients[1].sq_grad_norm.clear();
  r = Make("strategic")->Select(in);
  EXPECT_THAT(r.status().message(), HasSubstr("client 'b'"));
  // Score-free strategies do not care.
  EXPECT_TRUE(Make("top")->Select(in).ok());
}

TEST(SelectionStrategyTest, RandomIsSeededPerRoundAndClient) {
  SelectionInput in = TinyInput();
  const auto first = SelectLayers("random", in);
  EXPECT_EQ(first, SelectLayers("random", in));
  for (size_t i = 0; i < first.size(); ++i) {
    // head plus as many blocks as the room allows.
    EXPECT_EQ(first[i].size(), std::vector<size_t>({3, 2, 1})[i]);
    EXPECT_EQ(first[i].back(), 5);
  }
  std::set<std::vector<std::vector<int>>> seen;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    in.seed = seed;
    seen.insert(SelectLayers("random", in));
  }
  EXPECT_GT(seen.size(), 5u);
  // A client's draw does not depend on the other clients.
  SelectionInput alone = in;
  alone.clients.erase(alone.clients.begin() + 1);
  EXPECT_EQ(SelectLayers("random", alone)[0], SelectLayers("random", in)[0]);
}

// a prefers block0 (1.0 vs 0.6), b block1 (1.0 vs 0.5); one layer each.
SelectionInput TwoClientConflict() {
  SelectionInput in;
  in.layers = {{"block0", 1}, {"block1", 1}};
  in.clients = {{"a", 1, 1, {1.0, 0.6}, {}, {}, nullptr},
                {"b", 1, 1, {0.5, 1.0}, {}, {}, nullptr}};
  return in;
}

TEST(SelectionStrategyTest, StrategicHandComputed) {
  const SelectionInput in = TwoClientConflict();
  SelectionOptions o;
  o.normalize_scores = false;
  o.lambda = 0.1;  // apart: 2 - 2 * 0.1 = 1.8 beats together on block1: 1.6
  absl::StatusOr<SelectionResult> r = Make("strategic", o)->Select(in);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->layers, ElementsAre(ElementsAre(0), ElementsAre(1)));
  EXPECT_EQ(r->diagnostics.status, SolverStatus::kOptimal);
  EXPECT_NEAR(r->diagnostics.objective, 1.8, 1e-12);
  EXPECT_GE(r->diagnostics.upper_bound, r->diagnostics.objective);
  EXPECT_NEAR(r->diagnostics.fallback_objective, 1.8, 1e-12);
  o.lambda = 0.3;
  r = Make("strategic", o)->Select(in);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->layers, ElementsAre(ElementsAre(1), ElementsAre(1)));
  EXPECT_NEAR(r->diagnostics.objective, 1.6, 1e-12);
  EXPECT_THAT(r->layer_counts, ElementsAre(0, 2));
  // Normalised: a (0.625, 0.375), b (1/3, 2/3); the switch is at lambda 1/8.
  o.normalize_scores = true;
  o.lambda = 0.1;
  EXPECT_THAT(Make("strategic", o)->Select(in)->layers,
              ElementsAre(ElementsAre(0), ElementsAre(1)));
  o.lambda = 0.15;
  r = Make("strategic", o)->Select(in);
  EXPECT_THAT(r->layers, ElementsAre(ElementsAre(1), ElementsAre(1)));
  EXPECT_NEAR(r->diagnostics.objective, 0.375 + 2.0 / 3, 1e-12);
}

TEST(SelectionStrategyTest, StrategicObjectiveCountsCommonLayers) {
  SelectionInput in = TinyInput();
  SelectionOptions o;
  o.normalize_scores = false;
  o.lambda = 0;
  absl::StatusOr<SelectionResult> r = Make("strategic", o)->Select(in);
  ASSERT_TRUE(r.ok());
  // lambda = 0: the importance answer.
  EXPECT_EQ(r->layers, SelectLayers("importance", in));
  // a: 5 + 3 + head 7; b: 4 + head 1; c: head 1.
  EXPECT_NEAR(r->diagnostics.objective, 21, 1e-12);
  EXPECT_NEAR(*SelectionObjective(in, r->layers, 0, false), 21, 1e-12);
}

TEST(SelectionStrategyTest, HeuristicStrategiesReportObjectiveWithoutBound) {
  SelectionOptions o;
  o.normalize_scores = false;
  o.lambda = 0.5;
  absl::StatusOr<SelectionResult> r = Make("top", o)->Select(TinyInput());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->diagnostics.status, SolverStatus::kHeuristic);
  EXPECT_TRUE(std::isnan(r->diagnostics.upper_bound));
  // a: 3 + 2 + 7, b: 2 + 1, c: 1; n = (0, 0, 0, 1, 2, 3) over 3 clients;
  // lambda is normalised by N - 1 = 2.
  EXPECT_NEAR(r->diagnostics.objective, 16 - 0.5 / 2 * (1 * 2 + 2 * 1), 1e-12);
  o.normalize_lambda = false;
  r = Make("top", o)->Select(TinyInput());
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->diagnostics.objective, 16 - 0.5 * (1 * 2 + 2 * 1), 1e-12);
}

TEST(SelectionStrategyTest, RunningImportanceStandsInForMissingScores) {
  SelectionInput in = TwoClientConflict();
  absl::StatusOr<RegulationStats> stats =
      RegulationStats::Create({"block0", "block1"});
  ASSERT_TRUE(stats.ok());
  SelectionResult previous;
  previous.layers = {{0}, {1}};
  ASSERT_TRUE(stats->Update(in, previous).ok());  // importance (0.75, 0.8)
  in.clients[0].sq_grad_norm.clear();
  in.stats = &*stats;
  EXPECT_THAT(SelectLayers("importance", in),
              ElementsAre(ElementsAre(1), ElementsAre(1)));
  SelectionOptions o;
  o.use_running_importance = false;
  EXPECT_THAT(Make("importance", o)->Select(in).status().message(),
              HasSubstr("client 'a'"));
}

TEST(SelectionValidationTest, BadScoresNameClientAndLayer) {
  SelectionInput in = TinyInput();
  in.clients[1].sq_grad_norm[2] = std::nan("");
  absl::StatusOr<SelectionResult> r = Make("top")->Select(in);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("client 'b'"));
  EXPECT_THAT(r.status().message(), HasSubstr("'block1'"));
  in.clients[1].sq_grad_norm[2] = -0.5;
  EXPECT_THAT(ValidateSelectionInput(in).message(), HasSubstr("got -0.5"));
  in = TinyInput();
  in.clients[2].rgn[0] = INFINITY;
  EXPECT_THAT(ValidateSelectionInput(in).message(), HasSubstr("client 'c'"));
  in = TinyInput();
  in.clients[0].snr.pop_back();
  EXPECT_THAT(ValidateSelectionInput(in).message(),
              HasSubstr("client 'a': 5 snr scores for 6 layers"));
}

TEST(SelectionValidationTest, BadBudgetsNameTheClient) {
  SelectionInput in = TinyInput();
  in.clients[1].budget = -2;
  EXPECT_THAT(ValidateSelectionInput(in).message(),
              HasSubstr("client 'b': budget must be finite and >= 0, got -2"));
  in.clients[1].budget = 0;  // cannot hold the head
  const absl::Status s = ValidateSelectionInput(in);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("client 'b'"));
  EXPECT_THAT(s.message(), HasSubstr("common layers (head"));
  for (const std::string& name : SelectionStrategyNames()) {
    EXPECT_FALSE(Make(name)->Select(in).ok()) << name;
  }
}

TEST(SelectionValidationTest, BadTablesAndIdsAreRefused) {
  SelectionInput in = TinyInput();
  in.layers[2].name = "block0";
  EXPECT_THAT(ValidateSelectionInput(in).message(),
              HasSubstr("duplicate layer 'block0'"));
  in = TinyInput();
  in.layers[5].frozen = true;
  EXPECT_THAT(ValidateSelectionInput(in).message(),
              HasSubstr("'head': cannot be both frozen and common"));
  in = TinyInput();
  in.layers[1].cost = 0;
  EXPECT_THAT(ValidateSelectionInput(in).message(),
              HasSubstr("'block0': cost"));
  in = TinyInput();
  in.clients[2].id = "a";
  EXPECT_THAT(ValidateSelectionInput(in).message(),
              HasSubstr("duplicate client 'a'"));
  in = TinyInput();
  in.clients[0].num_samples = -1;
  EXPECT_THAT(ValidateSelectionInput(in).message(), HasSubstr("num_samples"));
}

TEST(SelectionValidationTest, StatsMustDescribeTheSameLayers) {
  SelectionInput in = TinyInput();
  absl::StatusOr<RegulationStats> stats = RegulationStats::Create(
      {"embed", "block0", "block1", "block2", "blockX", "head"});
  ASSERT_TRUE(stats.ok());
  in.stats = &*stats;
  EXPECT_THAT(ValidateSelectionInput(in).message(),
              HasSubstr("unknown layer 'blockX'"));
}

TEST(SelectionValidationTest, LayerTableAndScoresByName) {
  const std::vector<std::string> names = {"embed", "block0", "head"};
  absl::StatusOr<std::vector<LayerSpec>> table =
      MakeLayerTable(names, {10, 20, 5}, {"embed"}, {"head"});
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_TRUE((*table)[0].frozen);
  EXPECT_TRUE((*table)[2].common);
  EXPECT_EQ((*table)[1].cost, 20);
  EXPECT_THAT(MakeLayerTable(names, {1, 1, 1}, {"emb"}, {}).status().message(),
              HasSubstr("unknown layer 'emb'"));
  EXPECT_THAT(MakeLayerTable(names, {1, 1, 1}, {}, {"tail"}).status().message(),
              HasSubstr("unknown layer 'tail'"));
  EXPECT_THAT(MakeLayerTable(names, {1, 1}, {}, {}).status().message(),
              HasSubstr("3 names but 2 costs"));

  absl::StatusOr<std::vector<double>> scores =
      ScoresByName(*table, {{"head", 3}, {"embed", 1}, {"block0", 2}}, "c1");
  ASSERT_TRUE(scores.ok());
  EXPECT_THAT(*scores, ElementsAre(1, 2, 3));
  EXPECT_THAT(
      ScoresByName(*table, {{"head", 3}, {"embed", 1}, {"block9", 2}}, "c1")
          .status()
          .message(),
      HasSubstr("client 'c1': score for unknown layer 'block9'"));
  EXPECT_THAT(ScoresByName(*table, {{"head", 3}, {"embed", 1}}, "c1")
                  .status()
                  .message(),
              HasSubstr("no score for layer 'block0'"));
  EXPECT_THAT(
      ScoresByName(*table, {{"head", 3}, {"head", 1}}, "c1").status().message(),
      HasSubstr("two scores for layer 'head'"));
  EXPECT_THAT(
      ScoresByName(*table,
                   {{"head", 3}, {"embed", std::nan("")}, {"block0", 1}}, "c1")
          .status()
          .message(),
      HasSubstr("'embed' must be finite"));
}

// Random layer tables (some frozen, some common), costs, budgets that hold
// the common layers, and scores with zeros.
SelectionInput RandomInput(DeterministicRng& rng) {
  SelectionInput in;
  const int num_layers = static_cast<int>(rng.UniformInt(1, 9));
  int64_t common_cost = 0;
  for (int l = 0; l < num_layers; ++l) {
    LayerSpec layer;
    layer.name = "layer" + std::to_string(l);
    layer.cost = rng.UniformInt(1, 4);
    const int64_t kind = rng.UniformInt(0, 9);
    layer.frozen = kind == 0;
    layer.common = kind == 1;
    if (layer.common) common_cost += layer.cost;
    in.layers.push_back(layer);
  }
  const int num_clients = static_cast<int>(rng.UniformInt(0, 8));
  for (int i = 0; i < num_clients; ++i) {
    ClientInput c;
    c.id = "client" + std::to_string(i);
    c.budget = common_cost + rng.UniformInt(0, 12);
    c.num_samples = rng.UniformInt(0, 100);
    for (int l = 0; l < num_layers; ++l) {
      c.sq_grad_norm.push_back(rng.UniformInt(0, 2) == 0 ? 0
                                                         : rng.UniformDouble());
      c.rgn.push_back(rng.UniformDouble());
      c.snr.push_back(static_cast<double>(rng.UniformInt(0, 3)));
    }
    in.clients.push_back(c);
  }
  in.seed = rng.NextU64();
  return in;
}

TEST(SelectionPropertyTest, BudgetsHeldCommonAlwaysFrozenNever) {
  DeterministicRng rng(31337);
  SelectionOptions o;
  o.lambda = 0.05;
  o.time_limit_ms = 200;
  std::vector<std::unique_ptr<SelectionStrategy>> strategies;
  for (const std::string& name : SelectionStrategyNames()) {
    strategies.push_back(Make(name, o));
  }
  int checked = 0;
  for (int trial = 0; trial < 2500; ++trial) {
    const SelectionInput in = RandomInput(rng);
    for (const auto& strategy : strategies) {
      absl::StatusOr<SelectionResult> r = strategy->Select(in);
      if (strategy->name() == "full" && !r.ok()) {
        EXPECT_THAT(r.status().message(), HasSubstr("strategy 'full'"));
        continue;
      }
      ASSERT_TRUE(r.ok()) << strategy->name() << ": " << r.status();
      ASSERT_EQ(r->layers.size(), in.clients.size());
      std::vector<int> counts(in.layers.size(), 0);
      for (size_t i = 0; i < in.clients.size(); ++i) {
        const std::vector<int>& sel = r->layers[i];
        ASSERT_TRUE(std::is_sorted(sel.begin(), sel.end()));
        ASSERT_TRUE(std::adjacent_find(sel.begin(), sel.end()) == sel.end());
        int64_t cost = 0;
        for (int l : sel) {
          ASSERT_GE(l, 0);
          ASSERT_LT(l, static_cast<int>(in.layers.size()));
          EXPECT_FALSE(in.layers[l].frozen) << strategy->name();
          cost += in.layers[l].cost;
          ++counts[l];
        }
        EXPECT_LE(cost, in.clients[i].budget) << strategy->name();
        for (int l = 0; l < static_cast<int>(in.layers.size()); ++l) {
          if (in.layers[l].common) {
            EXPECT_TRUE(std::binary_search(sel.begin(), sel.end(), l))
                << strategy->name();
          }
        }
      }
      EXPECT_EQ(counts, r->layer_counts) << strategy->name();
      if (strategy->name() == "strategic") {
        EXPECT_GE(r->diagnostics.upper_bound + 1e-9, r->diagnostics.objective);
        const double lambda =
            o.lambda / std::max(1.0, in.clients.size() - 1.0);
        EXPECT_NEAR(*SelectionObjective(in, r->layers, lambda, true),
                    r->diagnostics.objective, 1e-9);
        // Never worse than the paper's top-B fallback.
        EXPECT_GE(r->diagnostics.objective + 1e-9,
                  r->diagnostics.fallback_objective);
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 2500 * 8);
}

TEST(SelectionPropertyTest, StrategicAtLambdaZeroMatchesImportance) {
  DeterministicRng rng(99);
  SelectionOptions o;
  o.lambda = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const SelectionInput in = RandomInput(rng);
    absl::StatusOr<SelectionResult> s = Make("strategic", o)->Select(in);
    absl::StatusOr<SelectionResult> t = Make("importance", o)->Select(in);
    ASSERT_TRUE(s.ok() && t.ok());
    // Equal objective (ties may pick different but equally good sets).
    EXPECT_NEAR(s->diagnostics.objective, t->diagnostics.objective, 1e-9);
  }
}

}  // namespace
}  // namespace layerfl
