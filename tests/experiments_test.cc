#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <cmath>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/experiments/grid.h"
#include "server/experiments/report.h"
#include "nlohmann/json.hpp"
#include "server/experiments/runner.h"
#include "server/sim/simulator.h"

namespace layerfl {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Fresh(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/experiments_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void Write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const char kBase[] = R"(
seed: 1
model: {dim: 16, depth: 2, heads: 2, mlp_dim: 32, common: [head]}
data: {partition: iid, num_clients: 6, max_test_examples: 100}
pretrain: {enabled: false}
federated: {rounds: 3, clients_per_round: 4, min_clients: 2}
budget: {unit: layers, distribution: uniform, min: 1, max: 3, mean: 2.0}
)";

const char kGrid[] = R"(
base: base.yaml
out: somewhere
strategies: [top, strategic]
budgets:
  - {name: tn1-3, distribution: truncated_normal, min: 1, max: 3, std: 0.5}
  - {name: fixed2, distribution: fixed, value: 2}
partitions:
  - {name: dir0.1, partition: dirichlet, alpha: 0.1}
  - {name: shift, partition: feature_shift}
seeds: [1, 2, 3]
)";

// A grid directory holding base.yaml; returns the grid's parse result.
absl::StatusOr<ExperimentGrid> ParseWithBase(const std::string& name,
                                             const std::string& grid_yaml) {
  const std::string dir = Fresh(name);
  Write(dir + "/base.yaml", kBase);
  Write(dir + "/grid.yaml", grid_yaml);
  return LoadExperimentGrid(dir + "/grid.yaml");
}

std::string Replace(std::string text, const std::string& from,
                    const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

TEST(GridTest, ParsesAGoodGrid) {
  absl::StatusOr<ExperimentGrid> grid = ParseWithBase("good", kGrid);
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_EQ(grid->out, "somewhere");
  EXPECT_THAT(grid->strategies, ElementsAre("top", "strategic"));
  EXPECT_THAT(grid->seeds, ElementsAre(1, 2, 3));
  ASSERT_EQ(grid->budgets.size(), 2u);
  // Overridden fields change; the others keep the base's values.
  EXPECT_EQ(grid->budgets[0].name, "tn1-3");
  EXPECT_EQ(grid->budgets[0].budget.distribution, "truncated_normal");
  EXPECT_EQ(grid->budgets[0].budget.std, 0.5);
  EXPECT_EQ(grid->budgets[0].budget.mean, 2.0);  // from base.yaml
  EXPECT_EQ(grid->budgets[1].budget.value, 2.0);
  ASSERT_EQ(grid->partitions.size(), 2u);
  EXPECT_EQ(grid->partitions[0].data.partition, "dirichlet");
  EXPECT_EQ(grid->partitions[0].data.alpha, 0.1);
  EXPECT_EQ(grid->partitions[1].data.num_clients, 6);  // from base.yaml
  EXPECT_EQ(grid->base.model.dim, 16);

  absl::StatusOr<std::vector<ExperimentCell>> cells = ExpandGrid(*grid, "out");
  ASSERT_TRUE(cells.ok()) << cells.status();
  ASSERT_EQ(cells->size(), 2u * 2u * 2u * 3u);
  // Partitions, then budgets, then strategies, then seeds.
  const ExperimentCell& first = (*cells)[0];
  EXPECT_EQ(first.config.federated.run_dir, "out/runs/dir0.1/tn1-3/top/seed1");
  EXPECT_EQ(first.config.seed, 1u);
  EXPECT_TRUE(first.config.federated.resume);
  const ExperimentCell& last = cells->back();
  EXPECT_EQ(last.config.federated.run_dir,
            "out/runs/shift/fixed2/strategic/seed3");
  EXPECT_EQ(last.config.data.partition, "feature_shift");
  EXPECT_EQ(last.config.selection.strategy, "strategic");
  EXPECT_EQ(last.config.budget.distribution, "fixed");
  EXPECT_EQ(last.config.seed, 3u);
}

TEST(GridTest, FullIgnoresTheBudgetSetting) {
  absl::StatusOr<ExperimentGrid> grid =
      ParseWithBase("full", Replace(kGrid, "[top, strategic]", "[full, top]"));
  ASSERT_TRUE(grid.ok()) << grid.status();
  absl::StatusOr<std::vector<ExperimentCell>> cells = ExpandGrid(*grid, "o");
  ASSERT_TRUE(cells.ok()) << cells.status();
  EXPECT_EQ((*cells)[0].strategy, "full");
  EXPECT_EQ((*cells)[0].config.budget.distribution, "fixed");
  EXPECT_EQ((*cells)[0].config.budget.value, kUnlimitedBudget);
  EXPECT_EQ((*cells)[3].strategy, "top");
  EXPECT_EQ((*cells)[3].config.budget.distribution, "truncated_normal");
}

// variants: rows that run a strategy with another importance section,
// after the strategies' rows of each setting; bad entries name the field.
TEST(GridTest, VariantsRunAStrategyWithAnotherImportanceSection) {
  const std::string yaml =
      kGrid + std::string(
                  "variants:\n"
                  "  - {name: strategic-train, strategy: strategic, source: "
                  "train, batches: 1, decay: 0.5}\n");
  absl::StatusOr<ExperimentGrid> grid = ParseWithBase("variants", yaml);
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_THAT(CellStrategyNames(*grid),
              ElementsAre("top", "strategic", "strategic-train"));
  absl::StatusOr<std::vector<ExperimentCell>> cells = ExpandGrid(*grid, "o");
  ASSERT_TRUE(cells.ok()) << cells.status();
  ASSERT_EQ(cells->size(), 3u * 2u * 2u * 3u);
  const ExperimentCell& v = (*cells)[6];  // after top and strategic x 3 seeds
  EXPECT_EQ(v.strategy, "strategic-train");
  EXPECT_EQ(v.config.selection.strategy, "strategic");
  EXPECT_EQ(v.config.importance.source, "train");
  EXPECT_EQ(v.config.importance.batches, 1);
  EXPECT_EQ(v.config.importance.decay, 0.5);
  EXPECT_EQ(v.config.federated.run_dir,
            "o/runs/dir0.1/tn1-3/strategic-train/seed1");
  EXPECT_EQ((*cells)[0].config.importance.source, "pass");

  const auto error = [&](const std::string& entry) {
    absl::StatusOr<ExperimentGrid> g =
        ParseWithBase("bad_variant",
                      std::string(kGrid) + "variants:\n  - " + entry + "\n");
    EXPECT_FALSE(g.ok()) << entry;
    return g.ok() ? std::string() : std::string(g.status().message());
  };
  EXPECT_THAT(error("{name: top, strategy: top}"),
              HasSubstr("variants[0].name: duplicate name 'top'"));
  EXPECT_THAT(error("{name: x, strategy: fedavg}"),
              HasSubstr("variants[0].strategy: unknown strategy 'fedavg'"));
  EXPECT_THAT(error("{name: x, strategy: snr, source: train}"),
              HasSubstr("variants[0].source: scores from one batch"));
  EXPECT_THAT(error("{name: x, strategy: top, decay: 2}"),
              HasSubstr("variants[0].decay: must be in (0, 1]"));
}

TEST(GridTest, LambdaSweepAndDeviceSpeeds) {
  const std::string yaml = Replace(
      Replace(kGrid, "seeds: [1, 2, 3]", "seeds: [1]\nlambdas: [0, 0.5]"),
      "  - {name: fixed2, distribution: fixed, value: 2}",
      "  - {name: time, unit: time, distribution: uniform, min: 0.1, "
      "max: 0.4, speed_min: 0.25}");
  absl::StatusOr<ExperimentGrid> grid = ParseWithBase("lambdas", yaml);
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_THAT(grid->lambdas, ElementsAre(0, 0.5));
  EXPECT_EQ(grid->budgets[1].devices.speed_min, 0.25);
  EXPECT_EQ(grid->budgets[1].devices.speed_max, 1.0);  // the base's
  // top runs once, strategic once per lambda.
  EXPECT_THAT(CellStrategyNames(*grid),
              ElementsAre("top", "strategic_l0", "strategic_l0.5"));
  absl::StatusOr<std::vector<ExperimentCell>> cells = ExpandGrid(*grid, "o");
  ASSERT_TRUE(cells.ok()) << cells.status();
  ASSERT_EQ(cells->size(), 2u * 2u * 3u);
  EXPECT_EQ((*cells)[0].config.selection.lambda, 0);  // top: the first value
  EXPECT_EQ((*cells)[2].strategy, "strategic_l0.5");
  EXPECT_EQ((*cells)[2].config.selection.strategy, "strategic");
  EXPECT_EQ((*cells)[2].config.selection.lambda, 0.5);
  EXPECT_EQ((*cells)[2].config.federated.run_dir,
            "o/runs/dir0.1/tn1-3/strategic_l0.5/seed1");
  EXPECT_EQ((*cells)[3].config.devices.speed_min, 0.25);
  EXPECT_EQ((*cells)[3].config.budget.unit, "time");
  EXPECT_THAT(ParseWithBase("lambdas_bad", Replace(yaml, "[0, 0.5]", "[0, -1]"))
                  .status()
                  .message(),
              HasSubstr("lambdas[1]: must be finite and >= 0, got -1"));
  EXPECT_THAT(ParseWithBase("lambdas_dup", Replace(yaml, "[0, 0.5]", "[1, 1]"))
                  .status()
                  .message(),
              HasSubstr("lambdas[1]: duplicate value 1"));
  EXPECT_THAT(ParseWithBase("speed_bad",
                            Replace(yaml, "speed_min: 0.25", "speed_min: 0"))
                  .status()
                  .message(),
              HasSubstr("budgets[1].speed_min: must be > 0, got 0"));
}

struct BadGrid {
  const char* what;
  std::string yaml;
  const char* error;
};

TEST(GridTest, RefusesBadGridsNamingTheField) {
  const std::vector<BadGrid> cases = {
      {"unknown top-level key", Replace(kGrid, "seeds:", "seed: 1\nseeds:"),
       "seed: unknown field"},
      {"unknown budget key", Replace(kGrid, "std: 0.5", "sd: 0.5"),
       "budgets[0].sd: unknown field"},
      {"unknown partition key", Replace(kGrid, "alpha: 0.1", "beta: 0.1"),
       "partitions[0].beta: unknown field"},
      {"bad strategy", Replace(kGrid, "[top, strategic]", "[top, fedavg]"),
       "strategies[1]: unknown strategy 'fedavg'; valid: "},
      {"duplicate strategy", Replace(kGrid, "[top, strategic]", "[top, top]"),
       "strategies[1]: duplicate strategy 'top'"},
      {"bad budget value", Replace(kGrid, "min: 1, max: 3", "min: -1, max: 3"),
       "budgets[0].min: must be > 0, got -1"},
      {"budget wrong type", Replace(kGrid, "std: 0.5", "std: wide"),
       "budgets[0].std: expected a finite number, got 'wide'"},
      {"declared budgets",
       Replace(kGrid, "distribution: fixed", "distribution: declared"),
       "budgets[1].distribution: 'declared'"},
      {"bad partition",
       Replace(kGrid, "partition: dirichlet", "partition: shards"),
       "partitions[0].partition: must be one of"},
      {"bad alpha", Replace(kGrid, "alpha: 0.1", "alpha: 0"),
       "partitions[0].alpha: must be > 0, got 0"},
      {"bad name", Replace(kGrid, "name: shift", "name: a/b"),
       "partitions[1].name: must be a non-empty name"},
      {"missing name", Replace(kGrid, "{name: fixed2, ", "{"),
       "budgets[1].name: required field is missing"},
      {"duplicate name", Replace(kGrid, "name: fixed2", "name: tn1-3"),
       "budgets[1].name: duplicate name 'tn1-3'"},
      {"missing seeds", Replace(kGrid, "seeds: [1, 2, 3]", ""),
       "seeds: required field is missing"},
      {"bad seed", Replace(kGrid, "[1, 2, 3]", "[1, -2]"),
       "seeds[1]: expected a non-negative integer, got '-2'"},
      {"empty strategies", Replace(kGrid, "[top, strategic]", "[]"),
       "strategies: must list at least one strategy"},
      {"budgets not a list",
       "base: base.yaml\nstrategies: [top]\nbudgets: 3\n"
       "partitions: [{name: p}]\nseeds: [1]\n",
       "budgets: expected a sequence, got '3'"},
      {"missing base file",
       Replace(kGrid, "base: base.yaml", "base: nope.yaml"), "base: "},
      {"bad cell across sections",
       Replace(kGrid, "partition: feature_shift}",
               "partition: feature_shift, num_clients: 1}"),
       "partitions[1]: federated.min_clients: must be <= data.num_clients"},
  };
  for (const BadGrid& c : cases) {
    absl::StatusOr<ExperimentGrid> grid = ParseWithBase("bad", c.yaml);
    ASSERT_FALSE(grid.ok()) << c.what;
    EXPECT_EQ(grid.status().code(), c.what == std::string("missing base file")
                                        ? absl::StatusCode::kNotFound
                                        : absl::StatusCode::kInvalidArgument)
        << c.what << ": " << grid.status();
    EXPECT_THAT(grid.status().message(), HasSubstr(c.error)) << c.what;
  }
}

TEST(GridTest, MissingGridFileIsNotFound) {
  absl::StatusOr<ExperimentGrid> grid = LoadExperimentGrid("/nonexistent.yaml");
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(grid.status().message(), HasSubstr("/nonexistent.yaml"));
}

// grid.h's header shows a grid file: it must stay one that parses.
TEST(GridTest, HeaderExampleParses) {
  std::ifstream in(std::string(LAYERFL_SOURCE_DIR) +
                   "/server/experiments/grid.h");
  std::string yaml, line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line == "// clang-format off") {
      inside = true;
    } else if (line == "// clang-format on") {
      break;
    } else if (inside) {
      yaml += line.substr(line.rfind("//", 0) == 0 ? 2 : 0) + "\n";
    }
  }
  ASSERT_FALSE(yaml.empty());
  absl::StatusOr<ExperimentGrid> grid =
      ParseExperimentGrid(yaml, std::string(LAYERFL_SOURCE_DIR));
  ASSERT_TRUE(grid.ok()) << grid.status() << "\n" << yaml;
  EXPECT_THAT(grid->strategies, ElementsAre("full", "top", "strategic"));
  EXPECT_EQ(grid->partitions.size(), 2u);
  EXPECT_THAT(grid->seeds, ElementsAre(1, 2, 3));
}

TEST(GridTest, RepositoryGridsLoad) {
  for (const char* name : {"paper", "smoke", "budgets", "lambda", "vit12"}) {
    const std::string dir =
        std::string(LAYERFL_SOURCE_DIR) + "/configs/experiments/";
    absl::StatusOr<ExperimentGrid> grid =
        LoadExperimentGrid(dir + name + ".yaml");
    ASSERT_TRUE(grid.ok()) << name << ": " << grid.status();
  }
  absl::StatusOr<ExperimentGrid> paper = LoadExperimentGrid(
      std::string(LAYERFL_SOURCE_DIR) + "/configs/experiments/paper.yaml");
  EXPECT_EQ(paper->strategies.size(), 9u);
  EXPECT_EQ(paper->partitions.size(), 3u);
  EXPECT_EQ(paper->seeds.size(), 3u);
  absl::StatusOr<ExperimentGrid> budgets = LoadExperimentGrid(
      std::string(LAYERFL_SOURCE_DIR) + "/configs/experiments/budgets.yaml");
  EXPECT_EQ(budgets->seeds.size(), 5u);  // the headline table
  ASSERT_EQ(budgets->budgets.size(), 3u);
  EXPECT_EQ(budgets->budgets[1].budget.unit, "time");
  EXPECT_EQ(budgets->budgets[2].budget.unit, "memory");
  absl::StatusOr<ExperimentGrid> vit12 = LoadExperimentGrid(
      std::string(LAYERFL_SOURCE_DIR) + "/configs/experiments/vit12.yaml");
  EXPECT_EQ(vit12->base.model.depth, 12);
}

// One synthetic metrics line.
std::string Line(int round, double accuracy, int64_t bytes_up, double round_ms,
                 const std::vector<std::vector<std::string>>& layers,
                 bool evaluated = true) {
  std::string clients;
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string names;
    for (size_t k = 0; k < layers[i].size(); ++k) {
      absl::StrAppend(&names, k ? "," : "", "\"", layers[i][k], "\"");
    }
    absl::StrAppend(&clients, i ? "," : "", "{\"id\":\"client-00", i,
                    "\",\"budget\":2,\"layers\":[", names,
                    "],\"contributed\":true}");
  }
  return absl::StrCat(
      "{\"round\":", round, ",\"attempt\":0",
      evaluated ? absl::StrFormat(",\"accuracy\":%.17g,\"loss\":0.5", accuracy)
                : "",
      ",\"bytes_up\":", bytes_up,
      ",\"bytes_down\":7,\"changed_layers\":[],\"selection\":{\"objective\":0,"
      "\"upper_bound\":0,\"gap\":0,\"status\":\"optimal\"},\"clients\":[",
      clients, "],\"rejected\":{},\"timing_ms\":{\"round\":",
      absl::StrFormat("%.17g", round_ms), ",\"solve\":0.1}}\n");
}

TEST(ReportTest, ClientSecondsAndLastFiveFromUsage) {
  const std::string path = ::testing::TempDir() + "/usage_metrics.jsonl";
  std::string text;
  for (int r = 1; r <= 7; ++r) {
    // Accuracy 0.1 r; usage: one client scored 0.5 s and trained 1.5 s, the
    // other trained 2 s.
    text += absl::StrFormat(
        "{\"round\":%d,\"accuracy\":%.17g,\"bytes_up\":0,\"clients\":[],"
        "\"timing_ms\":{\"round\":%d%s},\"usage\":[{\"id\":\"a\",\"score_s\":0.5,"
        "\"train_s\":1.5},{\"id\":\"b\",\"train_s\":2}]}\n",
        r, 0.1 * r, r == 1 ? 30 : 10, r == 1 ? ",\"score\":20" : "");
  }
  std::ofstream(path) << text;
  absl::StatusOr<std::vector<RoundMetrics>> rounds = ReadMetricsFile(path);
  ASSERT_TRUE(rounds.ok()) << rounds.status();
  EXPECT_DOUBLE_EQ((*rounds)[0].client_seconds, 4.0);
  EXPECT_DOUBLE_EQ((*rounds)[0].scoring_seconds, 0.5);
  const CellSummary c = SummarizeCell(*rounds);
  EXPECT_DOUBLE_EQ(c.client_seconds, 28.0);
  EXPECT_DOUBLE_EQ(c.scoring_seconds, 3.5);
  // Rounds 3..7: (0.3 + 0.4 + 0.5 + 0.6 + 0.7) / 5.
  EXPECT_NEAR(c.last5_accuracy, 0.5, 1e-12);
  EXPECT_NEAR(c.final_accuracy, 0.7, 1e-12);
  // Round 1 had a scoring phase (30 ms), the six others none (10 ms each).
  EXPECT_EQ(c.scoring_rounds, 1);
  EXPECT_EQ(c.plain_rounds, 6);
  EXPECT_DOUBLE_EQ(c.scoring_round_seconds, 0.03);
  EXPECT_NEAR(c.plain_round_seconds, 0.06, 1e-15);
}

TEST(ReportTest, MeanAndSampleStd) {
  MeanStd m = ComputeMeanStd({0.5, 0.6, 0.7});
  EXPECT_EQ(m.n, 3);
  EXPECT_NEAR(m.mean, 0.6, 1e-12);
  EXPECT_NEAR(m.std, 0.1, 1e-12);  // sqrt((0.01 + 0 + 0.01) / 2)
  m = ComputeMeanStd({2.0, 4.0});
  EXPECT_NEAR(m.std, std::sqrt(2.0), 1e-12);
  m = ComputeMeanStd({0.3});
  EXPECT_EQ(m.mean, 0.3);
  EXPECT_EQ(m.std, 0.0);
  EXPECT_EQ(ComputeMeanStd({}).n, 0);
}

TEST(ReportTest, ReadsMetricsReplacingReRunRoundsAndNamingBadLines) {
  const std::string dir = Fresh("read");
  const std::string path = dir + "/metrics.jsonl";
  Write(path, Line(1, 0.1, 10, 100, {{"a"}}) + Line(2, 0.2, 10, 100, {{"a"}}) +
                  "\n" + Line(2, 0.25, 20, 100, {{"b"}, {"a", "b"}}) +
                  Line(3, 0.0, 30, 300, {}, /*evaluated=*/false));
  absl::StatusOr<std::vector<RoundMetrics>> rounds = ReadMetricsFile(path);
  ASSERT_TRUE(rounds.ok()) << rounds.status();
  ASSERT_EQ(rounds->size(), 3u);
  EXPECT_EQ((*rounds)[1].accuracy, 0.25);
  EXPECT_EQ((*rounds)[1].num_clients, 2);
  EXPECT_EQ((*rounds)[1].layer_counts.at("b"), 2);
  EXPECT_EQ((*rounds)[1].layer_counts.at("a"), 1);
  EXPECT_FALSE((*rounds)[2].evaluated);
  EXPECT_EQ(LastRecordedRound(path), 3);

  const CellSummary s = SummarizeCell(*rounds);
  EXPECT_EQ(s.final_accuracy, 0.25);  // round 3 was not evaluated
  EXPECT_EQ(s.best_accuracy, 0.25);
  EXPECT_EQ(s.bytes_up, 10 + 20 + 30);
  EXPECT_NEAR(s.wall_seconds, 0.5, 1e-12);
  EXPECT_EQ(s.rounds, 3);

  Write(path, Line(1, 0.1, 10, 100, {}) + "{\"round\":2,\"accur");
  EXPECT_EQ(LastRecordedRound(path), 0);  // cut off: not a finished round
  rounds = ReadMetricsFile(path);
  ASSERT_FALSE(rounds.ok());
  EXPECT_THAT(rounds.status().message(), HasSubstr(path + ":2: "));
  // A bad value is refused naming its field.
  for (const auto& [line, field] : std::vector<std::pair<std::string, std::string>>{
           {"{\"round\":0}", "\"round\""},
           {"{\"round\":\"1\"}", "\"round\""},
           {"{\"round\":1,\"accuracy\":\"high\"}", "\"accuracy\""},
           {"{\"round\":1,\"bytes_up\":1.5}", "\"bytes_up\""},
           {"{\"round\":1,\"timing_ms\":{\"round\":[]}}", "\"timing_ms.round\""},
           {"{\"round\":1,\"clients\":{}}", "\"clients\""},
           {"{\"round\":1,\"clients\":[{\"layers\":[1]}]}", "layer name"},
           {"[1,2]", "not a JSON object"}}) {
    Write(path, line + "\n");
    rounds = ReadMetricsFile(path);
    ASSERT_FALSE(rounds.ok()) << line;
    EXPECT_THAT(rounds.status().message(), HasSubstr(field)) << line;
  }
  // null is what the engine writes for a NaN accuracy.
  Write(path, "{\"round\":1,\"accuracy\":null}\n");
  rounds = ReadMetricsFile(path);
  ASSERT_TRUE(rounds.ok()) << rounds.status();
  EXPECT_TRUE(std::isnan((*rounds)[0].accuracy));
  EXPECT_EQ(ReadMetricsFile(dir + "/none.jsonl").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(LastRecordedRound(dir + "/none.jsonl"), 0);
}

// Aggregation over seeds from hand-made metrics files: strategy "top" has
// three finished seeds, "strategic" two finished and one interrupted.
TEST(ReportTest, AggregatesSeedsByHand) {
  absl::StatusOr<ExperimentGrid> grid = ParseWithBase(
      "agg",
      Replace(
          Replace(kGrid, "  - {name: fixed2, distribution: fixed, value: 2}\n",
                  ""),
          "  - {name: shift, partition: feature_shift}\n", ""));
  ASSERT_TRUE(grid.ok()) << grid.status();
  ASSERT_EQ(grid->base.federated.rounds, 3);
  const std::string out = Fresh("agg_out");
  auto cell = [&](const std::string& strategy, int seed) {
    return absl::StrCat(out, "/runs/dir0.1/tn1-3/", strategy, "/seed", seed,
                        "/metrics.jsonl");
  };
  using L = std::vector<std::vector<std::string>>;
  // top: final 0.5/0.6/0.7, best 0.55/0.6/0.75; bytes 3e6/6e6/9e6; wall
  // 1.5/3/4.5 s.
  const double final_acc[3] = {0.5, 0.6, 0.7};
  const double best_acc[3] = {0.55, 0.6, 0.75};
  for (int s = 0; s < 3; ++s) {
    const int64_t b = (s + 1) * 1000000;
    const double ms = (s + 1) * 500.0;
    Write(cell("top", s + 1),
          Line(1, 0.1 * (s + 1), b, ms, L{{"head"}, {"block1", "head"}}) +
              Line(2, best_acc[s], b, ms, L{{"block1", "head"}, {"head"}}) +
              Line(3, final_acc[s], b, ms, L{{"embed", "head"}, {"head"}}));
  }
  // strategic: seeds 1, 2 finished (0.8 and 0.9 throughout), seed 3 stopped.
  Write(cell("strategic", 1), Line(1, 0.8, 2, 100, L{{"head"}}) +
                                  Line(2, 0.8, 2, 100, L{{"head"}}) +
                                  Line(3, 0.8, 2, 100, L{{"head"}}));
  Write(cell("strategic", 2), Line(1, 0.9, 4, 300, L{{"head"}}) +
                                  Line(2, 0.9, 4, 300, L{{"head"}}) +
                                  Line(3, 0.9, 4, 300, L{{"head"}}));
  Write(cell("strategic", 3), Line(1, 0.1, 4, 300, L{{"head"}}));

  absl::StatusOr<ExperimentReport> report =
      BuildReport(*grid, out, {"embed", "block0", "block1", "head"});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->cells_total, 6);
  EXPECT_EQ(report->cells_done, 5);
  ASSERT_EQ(report->settings.size(), 1u);
  ASSERT_EQ(report->settings[0].strategies.size(), 2u);

  const StrategyResult& top = report->settings[0].strategies[0];
  EXPECT_EQ(top.strategy, "top");
  EXPECT_EQ(top.seeds_done, 3);
  EXPECT_NEAR(top.final_accuracy.mean, 0.6, 1e-12);
  EXPECT_NEAR(top.final_accuracy.std, 0.1, 1e-12);
  EXPECT_NEAR(top.best_accuracy.mean, (0.55 + 0.6 + 0.75) / 3, 1e-12);
  const double bm = (0.55 + 0.6 + 0.75) / 3;
  EXPECT_NEAR(top.best_accuracy.std,
              std::sqrt(((0.55 - bm) * (0.55 - bm) + (0.6 - bm) * (0.6 - bm) +
                         (0.75 - bm) * (0.75 - bm)) /
                        2),
              1e-12);
  EXPECT_NEAR(top.mb_uploaded, (3.0 + 6.0 + 9.0) / 3, 1e-9);
  EXPECT_NEAR(top.wall_seconds, (1.5 + 3.0 + 4.5) / 3, 1e-9);
  // Accuracy curve: mean over seeds per round.
  EXPECT_THAT(top.curve_rounds, ElementsAre(1, 2, 3));
  EXPECT_NEAR(top.curve_accuracy[0], 0.2, 1e-12);
  EXPECT_NEAR(top.curve_accuracy[1], bm, 1e-12);
  EXPECT_NEAR(top.curve_accuracy[2], 0.6, 1e-12);
  // Heatmap of seed 1: share of the round's 2 clients per layer.
  EXPECT_EQ(top.heatmap_seed, 1u);
  ASSERT_EQ(top.heatmap_fraction.size(), 3u);
  EXPECT_THAT(top.heatmap_fraction[0], ElementsAre(0.0, 0.0, 0.5, 1.0));
  EXPECT_THAT(top.heatmap_fraction[1], ElementsAre(0.0, 0.0, 0.5, 1.0));
  EXPECT_THAT(top.heatmap_fraction[2], ElementsAre(0.5, 0.0, 0.0, 1.0));

  const StrategyResult& strategic = report->settings[0].strategies[1];
  EXPECT_EQ(strategic.seeds_done, 2);
  EXPECT_EQ(strategic.seeds_total, 3);
  EXPECT_NEAR(strategic.final_accuracy.mean, 0.85, 1e-12);
  EXPECT_NEAR(strategic.final_accuracy.std, std::sqrt(0.005), 1e-12);
  EXPECT_NEAR(strategic.mb_uploaded, 9e-6, 1e-15);  // (6 + 12) / 2 bytes

  const std::string md = ResultsMarkdown(*report, /*plots=*/true);
  EXPECT_THAT(md, HasSubstr("5 of 6 cells finished"));
  EXPECT_THAT(md, HasSubstr("## dir0.1 / tn1-3"));
  // Last 5 = all 3 rounds here: (0.1 + 0.55 + 0.5) / 3, (0.2 + 0.6 + 0.6) /
  // 3, (0.3 + 0.75 + 0.7) / 3 -> mean 0.4778.
  EXPECT_NEAR(top.last5_accuracy.mean, (1.15 + 1.4 + 1.75) / 9, 1e-12);
  EXPECT_THAT(md, HasSubstr("| top | 3/3 | 60.00 ± 10.00 | 63.33 ± 10.41 | "
                            "47.78 ± 10.05 | 6.00 | 0.0 | 0.0 | 3.0 |"));
  EXPECT_THAT(md, HasSubstr("| strategic | 2/3 | 85.00 ± 7.07 | 85.00 ± 7.07 | "
                            "85.00 ± 7.07 | 0.00 | 0.0 | 0.0 | 0.6 |"));
  EXPECT_THAT(md, HasSubstr("(acc_dir0.1_tn1-3.png)"));
  EXPECT_THAT(md, HasSubstr("[strategic](heatmap_dir0.1_tn1-3_strategic.png)"));
  const nlohmann::json json = nlohmann::json::parse(SummaryJson(*report));
  EXPECT_EQ(json["cells_done"], 5);
  EXPECT_EQ(json["layers"],
            nlohmann::json({"embed", "block0", "block1", "head"}));
  const nlohmann::json& row = json["settings"][0]["strategies"][0];
  EXPECT_EQ(row["strategy"], "top");
  EXPECT_NEAR(row["final_accuracy"]["mean"].get<double>(), 0.6, 1e-12);
  EXPECT_NEAR(row["final_accuracy"]["std"].get<double>(), 0.1, 1e-12);
  EXPECT_EQ(row["final_accuracy"]["n"], 3);
  EXPECT_EQ(row["seeds"].size(), 3u);
  // The interrupted seed has no values: NaN is written as null, not as a
  // token JSON readers refuse.
  EXPECT_THAT(SummaryJson(*report), Not(HasSubstr("nan")));
}

// The smoke grid, made smaller still, end to end through the simulator.
TEST(RunnerTest, TinyGridEndToEndSkipsAndContinues) {
  absl::StatusOr<ExperimentGrid> grid = LoadExperimentGrid(
      std::string(LAYERFL_SOURCE_DIR) + "/configs/experiments/smoke.yaml");
  ASSERT_TRUE(grid.ok()) << grid.status();
  grid->base.data.max_test_examples = 100;
  grid->base.train.local_steps = 2;
  grid->base.train.batch_size = 8;
  for (PartitionSetting& p : grid->partitions) {
    p.data.max_test_examples = 100;
    p.data.num_clients = 4;
  }
  grid->base.federated.clients_per_round = 3;
  const std::string out = Fresh("e2e");
  ExperimentOptions options;
  options.out_dir = out;
  options.plot_script =
      std::string(LAYERFL_SOURCE_DIR) + "/server/experiments/plot.py";
  std::stringstream progress;
  options.progress = &progress;

  // An interrupted first cell: one of its two rounds done.
  absl::StatusOr<std::vector<ExperimentCell>> cells = ExpandGrid(*grid, out);
  ASSERT_TRUE(cells.ok()) << cells.status();
  ASSERT_EQ(cells->size(), 2u);
  SimOptions one;
  one.stop_after_rounds = 1;
  ASSERT_TRUE(RunSimulation((*cells)[0].config, one).ok());
  ASSERT_EQ(LastRecordedRound(
                out + "/runs/dirichlet0.5/u1-3/top/seed1/metrics.jsonl"),
            1);

  absl::StatusOr<ExperimentOutcome> outcome = RunExperiments(*grid, options);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(outcome->failed.empty()) << outcome->failed[0];
  EXPECT_EQ(outcome->cells_total, 2);
  EXPECT_EQ(outcome->cells_run, 2);
  EXPECT_EQ(outcome->cells_skipped, 0);
  EXPECT_THAT(progress.str(), HasSubstr("[1/2] dirichlet0.5/u1-3/top/seed1"));
  EXPECT_THAT(progress.str(), HasSubstr("ETA"));
  for (const char* s : {"top", "strategic"}) {
    const std::string dir =
        absl::StrCat(out, "/runs/dirichlet0.5/u1-3/", s, "/seed1");
    absl::StatusOr<std::vector<RoundMetrics>> rounds =
        ReadMetricsFile(dir + "/metrics.jsonl");
    ASSERT_TRUE(rounds.ok()) << rounds.status();
    ASSERT_EQ(rounds->size(), 2u) << s;
    EXPECT_EQ((*rounds)[0].round, 1);
    EXPECT_EQ((*rounds)[1].round, 2);
    EXPECT_TRUE(fs::exists(dir + "/log.txt"));
  }
  const std::string md = Read(out + "/results.md");
  EXPECT_THAT(md, HasSubstr("2 of 2 cells finished"));
  EXPECT_THAT(md, HasSubstr("## dirichlet0.5 / u1-3"));
  EXPECT_THAT(md, HasSubstr("| top | 1/1 | "));
  EXPECT_THAT(md, HasSubstr("| strategic | 1/1 | "));
  EXPECT_THAT(Read(out + "/summary.json"), HasSubstr("\"cells_done\":2"));
  if (outcome->plotted) {
    EXPECT_TRUE(fs::exists(out + "/acc_dirichlet0.5_u1-3.png"));
    EXPECT_TRUE(fs::exists(out + "/heatmap_dirichlet0.5_u1-3_strategic.png"));
  } else {
    EXPECT_THAT(outcome->plot_message, HasSubstr("matplotlib"));
  }

  // Everything finished: a second run only rebuilds the report.
  std::stringstream again;
  options.progress = &again;
  outcome = RunExperiments(*grid, options);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->cells_run, 0);
  EXPECT_EQ(outcome->cells_skipped, 2);
  EXPECT_THAT(again.str(), HasSubstr("2 already finished, 0 to run"));
}

TEST(RunnerTest, MissingMatplotlibStillWritesTheReport) {
  absl::StatusOr<ExperimentGrid> grid = LoadExperimentGrid(
      std::string(LAYERFL_SOURCE_DIR) + "/configs/experiments/smoke.yaml");
  ASSERT_TRUE(grid.ok()) << grid.status();
  const std::string out = Fresh("noplot");
  // One finished cell from synthetic metrics; nothing is run.
  Write(out + "/runs/dirichlet0.5/u1-3/top/seed1/metrics.jsonl",
        Line(1, 0.3, 5, 10, {{"head"}}) + Line(2, 0.4, 5, 10, {{"head"}}));
  ExperimentOptions options;
  options.out_dir = out;
  options.run = false;
  options.python = "/bin/false";  // exists, but cannot import matplotlib
  options.plot_script = "plot.py";
  absl::StatusOr<ExperimentOutcome> outcome = RunExperiments(*grid, options);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_FALSE(outcome->plotted);
  EXPECT_THAT(outcome->plot_message,
              HasSubstr("apt-get install -y python3-matplotlib"));
  const std::string md = Read(out + "/results.md");
  EXPECT_THAT(md, HasSubstr("1 of 2 cells finished"));
  EXPECT_THAT(md, HasSubstr("| top | 1/1 | 40.00 | 40.00 | 35.00 | 0.00 | "
                            "0.0 | 0.0 | 0.0 |"));
  EXPECT_THAT(md, HasSubstr("| strategic | 0/1 | – | – | – | – |"));
  EXPECT_THAT(md, ::testing::Not(HasSubstr(".png")));
}

TEST(RunnerTest, RefusesASecondRunnerOnTheSameOutputDirectory) {
  absl::StatusOr<ExperimentGrid> grid = LoadExperimentGrid(
      std::string(LAYERFL_SOURCE_DIR) + "/configs/experiments/smoke.yaml");
  ASSERT_TRUE(grid.ok()) << grid.status();
  const std::string out = Fresh("locked");
  const int fd = open((out + "/.lock").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX | LOCK_NB), 0);
  ExperimentOptions options;
  options.out_dir = out;
  absl::StatusOr<ExperimentOutcome> outcome = RunExperiments(*grid, options);
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(outcome.status().message(),
              HasSubstr("another layerfl-experiments is running"));
  EXPECT_FALSE(fs::exists(out + "/runs"));  // nothing was touched
  close(fd);
}

}  // namespace
}  // namespace layerfl
