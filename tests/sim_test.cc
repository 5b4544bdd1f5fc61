#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/privacy/rdp_accountant.h"
#include "nlohmann/json.hpp"
#include "server/sim/replay.h"
#include "server/sim/simulator.h"
#include "tests/weights_matchers.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;

RunConfig SmallRun(const std::string& name) {
  RunConfig c;
  c.seed = 7;
  c.threads = 1;
  c.model.dim = 16;
  c.model.depth = 2;
  c.model.heads = 2;
  c.model.mlp_dim = 32;
  c.pretrain.enabled = false;
  c.data.num_clients = 6;
  c.data.partition = "dirichlet";
  c.data.alpha = 1.0;
  c.data.max_test_examples = 300;
  c.train.local_steps = 3;
  c.train.batch_size = 16;
  c.importance.batches = 2;
  c.federated.rounds = 6;
  c.federated.clients_per_round = 4;
  c.federated.min_clients = 2;
  c.federated.selection_period = 2;  // rounds 2, 4, 6 reuse cached scores
  c.federated.run_dir = ::testing::TempDir() + "/sim_" + name;
  c.selection.strategy = "strategic";
  c.selection.lambda = 0.05;
  c.budget.distribution = "uniform";
  c.budget.min = 1;
  c.budget.max = 3;
  std::filesystem::remove_all(c.federated.run_dir);
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  return c;
}

// Metrics lines without their timings (the only part allowed to differ), and
// optionally without bytes_down: virtual clients that "crashed" with the
// simulator lose their cached layers and download everything once more.
std::vector<std::string> MetricsWithoutTiming(const std::string& path,
                                              bool drop_bytes_down = false) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    line = line.substr(0, line.find(",\"timing_ms\""));
    if (drop_bytes_down) {
      const size_t from = line.find(",\"bytes_down\":");
      line.erase(from, line.find(',', from + 1) - from);
    }
    out.push_back(line);
  }
  return out;
}

// Two runs that must be the same run: metrics (timings aside) and final
// weights bit for bit.
void ExpectSameRun(const SimResult& a, const SimResult& b) {
  EXPECT_EQ(MetricsWithoutTiming(a.metrics_path),
            MetricsWithoutTiming(b.metrics_path));
  ExpectBitIdentical(a.final_weights, b.final_weights);
}

// Every client's measured peak memory, training and scoring, stays within
// its memory budget, round after round, while budgets differ enough that
// clients train different numbers of layers and score from different depths.
TEST(SimulatorTest, MeasuredPeakMemoryWithinEveryBudget) {
  RunConfig c = SmallRun("memory");
  c.budget.unit = "memory";
  c.budget.min = 0.4;  // MiB
  c.budget.max = 1.2;
  c.devices.speed_min = 0.5;  // speeds change time, never memory
  c.profile.cache_dir = ::testing::TempDir() + "/sim_memory_profile";
  absl::StatusOr<SimResult> r = RunSimulation(c, SimOptions());
  ASSERT_TRUE(r.ok()) << r.status();
  std::ifstream in(r->metrics_path);
  int checked = 0, scoring_peaks = 0, partial_scores = 0;
  std::set<size_t> sizes;
  double worst = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json rec = nlohmann::json::parse(line);
    std::map<std::string, double> budget;
    for (const auto& client : rec["clients"]) {
      budget[client["id"]] = client["budget"];
      sizes.insert(client["layers"].size());
      // The predicted cost of what it was given fits its budget.
      EXPECT_LE(client["cost"].get<double>(), client["budget"].get<double>());
      // A client whose memory cannot hold the whole scoring pass scores from
      // a higher group: the ones below report 0.
      if (client.contains("scores") && client["scores"][0] == 0.0) {
        ++partial_scores;
      }
    }
    for (const auto& u : rec["usage"]) {
      // The scoring pass is held to the budget too: it back-propagates no
      // deeper than the client's memory holds.
      double score_peak = 0;
      if (u.contains("score_peak_mb")) {
        score_peak = u["score_peak_mb"].get<double>();
        EXPECT_GT(score_peak, 0);
        EXPECT_LE(score_peak, budget[u["id"]]) << line;
        ++scoring_peaks;
      }
      if (!u.contains("peak_mb")) continue;
      const double peak = u["peak_mb"];
      EXPECT_LE(peak, budget[u["id"]]) << line;
      EXPECT_DOUBLE_EQ(u["measured"].get<double>(), std::max(peak, score_peak));
      worst = std::max(worst, u["measured_over_budget"].get<double>());
      ++checked;
    }
  }
  EXPECT_GE(checked, 6 * 2);
  EXPECT_GE(scoring_peaks, 4);  // every scoring round's participants
  EXPECT_GE(partial_scores, 1) << "some budget should stop the scoring pass";
  EXPECT_GE(sizes.size(), 3u) << "budgets should make selections differ";
  RecordProperty("worst_peak_over_budget_ppm", static_cast<int>(worst * 1e6));
}

TEST(SimulatorTest, TimeBudgetRunLogsMeasuredOverBudget) {
  RunConfig c = SmallRun("time");
  c.budget.unit = "time";
  c.budget.min = 0.05;
  c.budget.max = 0.2;
  c.federated.rounds = 2;
  c.profile.cache_dir = ::testing::TempDir() + "/sim_time_profile";
  absl::StatusOr<SimResult> r = RunSimulation(c, SimOptions());
  ASSERT_TRUE(r.ok()) << r.status();
  std::ifstream in(r->metrics_path);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  const nlohmann::json rec = nlohmann::json::parse(line);
  ASSERT_FALSE(rec["usage"].empty());
  EXPECT_TRUE(rec["usage"][0].contains("train_s"));
  EXPECT_TRUE(rec["usage"][0].contains("measured_over_budget"));
}

// federated.mode local: every client alone; the same layers every round
// (top's within its budget), nothing uploaded, reproducible, and the layers
// a client does not train stay at the start bit for bit.
TEST(SimulatorTest, LocalOnlyBaseline) {
  RunConfig c = SmallRun("local_a");
  c.federated.mode = "local";
  c.federated.rounds = 3;
  absl::StatusOr<SimResult> a = RunSimulation(c, SimOptions());
  ASSERT_TRUE(a.ok()) << a.status();
  c.federated.run_dir = ::testing::TempDir() + "/sim_local_b";
  std::filesystem::remove_all(c.federated.run_dir);
  absl::StatusOr<SimResult> b = RunSimulation(c, SimOptions());
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectSameRun(*a, *b);
  std::ifstream in(a->metrics_path);
  std::vector<std::string> first_layers;
  int rounds = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json rec = nlohmann::json::parse(line);
    ++rounds;
    EXPECT_EQ(rec["bytes_up"], 0);
    EXPECT_GT(rec["accuracy"].get<double>(), 0.0);
    ASSERT_EQ(rec["clients"].size(), 6u);  // every client, every round
    std::vector<std::string> layers;
    for (const auto& client : rec["clients"]) {
      layers.push_back(client["layers"].dump());
      // top within the budget: a contiguous run ending at the output side.
      EXPECT_LE(client["layers"].size(), client["budget"].get<double>());
    }
    if (first_layers.empty()) first_layers = layers;
    EXPECT_EQ(layers, first_layers);
  }
  EXPECT_EQ(rounds, 3);
  // client-000 trained only its top layers: after 1 round and after 3 the
  // others are the same (the start's, bit for bit), the trained ones moved.
  c.federated.rounds = 1;
  c.federated.run_dir = ::testing::TempDir() + "/sim_local_c";
  std::filesystem::remove_all(c.federated.run_dir);
  absl::StatusOr<SimResult> one = RunSimulation(c, SimOptions());
  ASSERT_TRUE(one.ok()) << one.status();
  const std::string layers0 = first_layers[0];
  int trained = 0, kept = 0;
  for (size_t l = 0; l < a->final_weights.layers.size(); ++l) {
    const LayerWeights& x = a->final_weights.layers[l];
    const LayerWeights& y = one->final_weights.layers[l];
    bool same = true;
    for (size_t t = 0; t < x.tensors.size(); ++t) {
      same = same && x.tensors[t].values == y.tensors[t].values;
    }
    if (layers0.find("\"" + x.group + "\"") != std::string::npos) {
      EXPECT_FALSE(same) << x.group;
      ++trained;
    } else {
      EXPECT_TRUE(same) << x.group;
      ++kept;
    }
  }
  EXPECT_GT(trained, 0);
  EXPECT_GT(kept, 0);
}

// A private run: every round reports its epsilon, which never decreases and
// is what the accountant gives for the rounds run; with a fixed noise seed
// the run is reproducible; without noise seed the noise differs run to run.
TEST(SimulatorTest, DifferentialPrivacyReportsGrowingEpsilon) {
  RunConfig c = SmallRun("dp_a");
  c.federated.rounds = 4;
  c.federated.aggregation = "uniform";
  c.privacy.dp.enabled = true;
  c.privacy.dp.clip_norm = 0.5;
  c.privacy.dp.noise_multiplier = 1.0;
  c.privacy.dp.noise_seed = 5;
  c.privacy.dp.insecure_sampling_seed = 7;  // reproducible participants
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  std::ostringstream progress;
  SimOptions options;
  options.progress = &progress;
  absl::StatusOr<SimResult> a = RunSimulation(c, options);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(progress.str(), HasSubstr("  eps "));
  std::ifstream in(a->metrics_path);
  double last = 0;
  int rounds = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json rec = nlohmann::json::parse(line);
    const double eps = rec["privacy"]["epsilon"].get<double>();
    EXPECT_GT(eps, last);
    last = eps;
    EXPECT_DOUBLE_EQ(rec["privacy"]["clip_norm"].get<double>(), 0.5);
    EXPECT_EQ(rec["privacy"]["sampling"], "insecure_seed");
    // Central mode: the coordinator is trusted with the updates.
    EXPECT_FALSE(rec["privacy"].contains("epsilon_coordinator"));
    // A round that scores (round 1 always) releases scores and update
    // together: multiplier 1 / sqrt(1 + 1); one that reuses scores, 1.
    const double z = rec["privacy"]["noise_multiplier"].get<double>();
    if (rounds == 0) {
      EXPECT_DOUBLE_EQ(z, 1.0 / std::sqrt(2.0));
    } else {
      EXPECT_TRUE(z == 1.0 || z == 1.0 / std::sqrt(2.0)) << z;
    }
    // Every client's reported scores are privatised: >= 0, never all the
    // raw, unnormalised magnitudes.
    for (const auto& client : rec["clients"]) {
      for (const auto& g : client["scores"]) EXPECT_GE(g.get<double>(), 0);
    }
    ++rounds;
  }
  EXPECT_EQ(rounds, 4);
  c.federated.run_dir = ::testing::TempDir() + "/sim_dp_b";
  std::filesystem::remove_all(c.federated.run_dir);
  absl::StatusOr<SimResult> b = RunSimulation(c, SimOptions());
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectBitIdentical(a->final_weights, b->final_weights);
  c.privacy.dp.noise_seed = 0;  // keys from the OS
  c.federated.run_dir = ::testing::TempDir() + "/sim_dp_c";
  std::filesystem::remove_all(c.federated.run_dir);
  absl::StatusOr<SimResult> d = RunSimulation(c, SimOptions());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_NE(a->final_weights.layers.back().tensors[0].values,
            d->final_weights.layers.back().tensors[0].values);
}

// Secure aggregation in the simulator: the model ends as the plain run's up
// to quantization (same selection, same local training), and two runs with
// the same rounding seed end bit-identical although every key is fresh.
TEST(SimulatorTest, SecureAggregationMatchesPlainUpToQuantization) {
  RunConfig plain = SmallRun("sa_plain");
  plain.federated.rounds = 3;
  plain.federated.aggregation = "uniform";
  RunConfig sa = plain;
  sa.federated.run_dir = ::testing::TempDir() + "/sim_sa_a";
  std::filesystem::remove_all(sa.federated.run_dir);
  sa.privacy.secure_aggregation.enabled = true;
  sa.privacy.secure_aggregation.value_range = 4.0;
  sa.privacy.dp.noise_seed = 3;  // seeds the stochastic rounding
  ASSERT_TRUE(sa.Validate().ok()) << sa.Validate();
  absl::StatusOr<SimResult> p = RunSimulation(plain, SimOptions());
  absl::StatusOr<SimResult> a = RunSimulation(sa, SimOptions());
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->rounds_committed, 3);
  double worst = 0;
  for (size_t l = 0; l < p->final_weights.layers.size(); ++l) {
    for (size_t t = 0; t < p->final_weights.layers[l].tensors.size(); ++t) {
      const auto& x = p->final_weights.layers[l].tensors[t].values;
      const auto& y = a->final_weights.layers[l].tensors[t].values;
      for (size_t k = 0; k < x.size(); ++k) {
        worst = std::max(worst, static_cast<double>(std::fabs(x[k] - y[k])));
      }
    }
  }
  EXPECT_LT(worst, 1e-4);
  sa.federated.run_dir = ::testing::TempDir() + "/sim_sa_b";
  std::filesystem::remove_all(sa.federated.run_dir);
  absl::StatusOr<SimResult> b = RunSimulation(sa, SimOptions());
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectBitIdentical(a->final_weights, b->final_weights);
  EXPECT_EQ(MetricsWithoutTiming(a->metrics_path),
            MetricsWithoutTiming(b->metrics_path));
}

TEST(SimulatorTest, SameSeedSameMetricsAndWeights) {
  auto a = RunSimulation(SmallRun("det_a"), SimOptions());
  auto b = RunSimulation(SmallRun("det_b"), SimOptions());
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->rounds_committed, 6);
  std::vector<std::string> ma = MetricsWithoutTiming(a->metrics_path);
  ASSERT_EQ(ma.size(), 6u);
  EXPECT_EQ(ma, MetricsWithoutTiming(b->metrics_path));
  EXPECT_THAT(ma[0], HasSubstr("\"accuracy\":"));
  EXPECT_THAT(ma[0], HasSubstr("\"clients\":[{\"id\":\"client-"));
  ExpectBitIdentical(a->final_weights, b->final_weights);
  // Something was trained and shipped.
  EXPECT_GT(a->bytes_up, 0);
  EXPECT_GT(a->bytes_down, a->bytes_up);
}

// Each round's contributors and their layers, from a metrics.jsonl.
std::vector<std::string> Participation(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json r = nlohmann::json::parse(line);
    std::string round = absl::StrCat(r["round"].get<int64_t>(), ":");
    for (const nlohmann::json& c : r["clients"]) {
      if (!c["contributed"].get<bool>()) continue;
      absl::StrAppend(&round, " ", c["id"].get<std::string>(), "=",
                      c["layers"].dump());
    }
    out.push_back(round);
  }
  return out;
}

// A recorded run replayed (its rounds' contributors and layers, no sampling,
// scoring or selection) ends with its weights bit for bit; a record with a
// gap, a client the config does not have, or a secure run is refused naming
// the problem.
TEST(SimulatorTest, AReplayOfTheRecordedRoundsEndsWithTheSameWeights) {
  RunConfig c = SmallRun("replay_src");
  c.federated.rounds = 4;
  auto original = RunSimulation(c, SimOptions());
  ASSERT_TRUE(original.ok()) << original.status();
  const std::vector<std::string> rounds = Participation(original->metrics_path);
  ASSERT_EQ(rounds.size(), 4u);
  EXPECT_NE(rounds[0].substr(2), rounds[1].substr(2));  // participation varies

  RunConfig again = SmallRun("replay_dst");
  again.federated.rounds = 9;  // the record decides
  again.federated.clients_per_round = 1;
  again.federated.min_clients = 5;
  SimOptions replay;
  replay.replay = original->metrics_path;
  auto replayed = RunSimulation(again, replay);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(replayed->rounds_committed, 4);
  EXPECT_EQ(Participation(replayed->metrics_path), rounds);
  ExpectBitIdentical(replayed->final_weights, original->final_weights);
  EXPECT_EQ(replayed->final_accuracy, original->final_accuracy);
  // What layerfl-sim --expect_run_dir checks: equal, and one bit off named.
  EXPECT_TRUE(CompareWithRecordedRun(replayed->final_weights, 4,
                                     c.federated.run_dir)
                  .ok());
  ModelWeights off = replayed->final_weights;
  float& v = off.layers[1].tensors[0].values[3];
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  bits ^= 1;
  std::memcpy(&v, &bits, sizeof(bits));
  const absl::Status differs =
      CompareWithRecordedRun(off, 4, c.federated.run_dir);
  EXPECT_EQ(differs.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(differs.message()),
              HasSubstr(absl::StrCat("tensor '", off.layers[1].tensors[0].name,
                                     "' element 3: ")));
  EXPECT_THAT(std::string(CompareWithRecordedRun(replayed->final_weights, 3,
                                                 c.federated.run_dir)
                              .message()),
              HasSubstr("the replay ended at round 3"));

  // Round 3 left out.
  const std::string gap = ::testing::TempDir() + "/replay_gap.jsonl";
  {
    std::ifstream in(original->metrics_path);
    std::ofstream out(gap);
    int n = 0;
    for (std::string line; std::getline(in, line);) {
      if (++n != 3) out << line << "\n";
    }
  }
  replay.replay = gap;
  auto refused = RunSimulation(SmallRun("replay_gap"), replay);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("round 3 is missing (line 3 records round 4)"));

  RunConfig fewer = SmallRun("replay_fewer");
  fewer.data.num_clients = 2;
  fewer.federated.min_clients = 1;
  fewer.federated.clients_per_round = 2;
  replay.replay = original->metrics_path;
  refused = RunSimulation(fewer, replay);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("which this config does not have (2 clients"));

  RunConfig secure = SmallRun("replay_secure");
  secure.privacy.secure_aggregation.enabled = true;
  refused = RunSimulation(secure, replay);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("round their updates stochastically"));
}

TEST(SimulatorTest, CrashAfterThreeRoundsThenResumeEqualsUninterruptedRun) {
  auto full = RunSimulation(SmallRun("full"), SimOptions());
  ASSERT_TRUE(full.ok()) << full.status();

  RunConfig c = SmallRun("crash");
  SimOptions crash;
  crash.stop_after_rounds = 3;
  auto first = RunSimulation(c, crash);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->rounds_committed, 3);
  EXPECT_FALSE(first->resumed);

  auto second = RunSimulation(c, SimOptions());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->resumed);
  EXPECT_EQ(second->rounds_committed, 6);
  ExpectBitIdentical(full->final_weights, second->final_weights);
  EXPECT_EQ(MetricsWithoutTiming(full->metrics_path, true),
            MetricsWithoutTiming(second->metrics_path, true));
}

TEST(SimulatorTest, MetricsLineLostInACrashIsRestoredFromTheCheckpoint) {
  RunConfig c = SmallRun("lostline");
  SimOptions crash;
  crash.stop_after_rounds = 2;
  auto first = RunSimulation(c, crash);
  ASSERT_TRUE(first.ok()) << first.status();
  // The crash hit after round 2's checkpoint, before its metrics line.
  std::vector<std::string> lines;
  {
    std::ifstream in(first->metrics_path);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), 2u);
  {
    std::ofstream out(first->metrics_path, std::ios::trunc);
    out << lines[0] << "\n";
  }
  auto second = RunSimulation(c, SimOptions());
  ASSERT_TRUE(second.ok()) << second.status();
  std::vector<std::string> after = MetricsWithoutTiming(second->metrics_path);
  ASSERT_EQ(after.size(), 6u);
  EXPECT_EQ(after[1].substr(0, 40), lines[1].substr(0, 40));
  EXPECT_THAT(after[1], HasSubstr("\"round\":2,"));
}

// A text run (data.dataset tsv, the Transformer encoder) of configs/text.yaml
// on the 4-topic fixture: it learns (chance is 0.25), loss falls, and only
// the budgeted layers travel.
TEST(SimulatorTest, TextRunLearnsTheTopics) {
  const std::string src = LAYERFL_SOURCE_DIR;
  absl::StatusOr<RunConfig> loaded = LoadRunConfig(src + "/configs/text.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  RunConfig c = *loaded;
  c.threads = 1;
  c.federated.rounds = 4;
  c.data.train_tsv = src + "/" + c.data.train_tsv;
  c.data.test_tsv = src + "/" + c.data.test_tsv;
  c.federated.run_dir = ::testing::TempDir() + "/sim_text";
  std::filesystem::remove_all(c.federated.run_dir);
  absl::StatusOr<SimResult> r = RunSimulation(c, SimOptions());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rounds_committed, 4);
  EXPECT_GE(r->final_accuracy, 0.9);
  const std::vector<std::string> lines = MetricsWithoutTiming(r->metrics_path);
  ASSERT_EQ(lines.size(), 4u);
  double first_loss = 0;
  ASSERT_EQ(std::sscanf(lines[0].c_str(),
                        "{\"round\":1,\"attempt\":0,\"accuracy\":%*f,"
                        "\"loss\":%lf",
                        &first_loss),
            1);
  EXPECT_LT(r->final_loss, first_loss);
  // Budget 2 of the 4 groups: every client of every round trains two.
  const std::regex client_layers("\"layers\":\\[(\"[a-z0-9]+\",?)+\\]");
  int records = 0;
  for (const std::string& line : lines) {
    for (auto m = std::sregex_iterator(line.begin(), line.end(), client_layers);
         m != std::sregex_iterator(); ++m) {
      const std::string layers = m->str();
      EXPECT_EQ(std::count(layers.begin(), layers.end(), ','), 1) << layers;
      ++records;
    }
  }
  EXPECT_EQ(records, 4 * 4);
  // The same text run with an image-only partition is refused by name.
  c.data.partition = "feature_shift";
  c.federated.run_dir += "_bad";
  absl::StatusOr<SimResult> bad = RunSimulation(c, SimOptions());
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("data.partition"));
}

TEST(SimulatorTest, RefusesToOverwriteCheckpointsWithoutResume) {
  RunConfig c = SmallRun("noresume");
  SimOptions one;
  one.stop_after_rounds = 1;
  ASSERT_TRUE(RunSimulation(c, one).ok());
  c.federated.resume = false;
  auto again = RunSimulation(c, one);
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(again.status().message(), HasSubstr("federated.resume is false"));
}

// sim.parallel_clients: the virtual clients of a round trained on 3 lanes
// (own replicas and threads), with local DP and secure aggregation on so
// that every step of a round is taken, end bit-identical to one at a time.
TEST(SimulatorTest, ParallelClientsAreBitIdenticalToSequential) {
  RunConfig c = SmallRun("parallel1");
  c.data.num_clients = 7;
  c.federated.clients_per_round = 5;
  c.federated.rounds = 3;
  c.privacy.dp.enabled = true;
  c.privacy.dp.mode = "local";
  c.privacy.dp.noise_seed = 5;  // reproducible noise and rounding
  c.privacy.dp.insecure_sampling_seed = 7;
  c.privacy.secure_aggregation.enabled = true;
  c.privacy.secure_aggregation.value_range = 4.0;
  c.federated.aggregation = "uniform";
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  std::filesystem::remove_all(c.federated.run_dir);
  absl::StatusOr<SimResult> a = RunSimulation(c, SimOptions());
  ASSERT_TRUE(a.ok()) << a.status();
  // Local mode: epsilon against the coordinator is each round's release
  // composed without amplification (q = 1), against the released model
  // with the sampling rate 5 / 7.
  {
    std::ifstream in(a->metrics_path);
    RdpAccountant model, coordinator;
    int rounds = 0;
    for (std::string line; std::getline(in, line); ++rounds) {
      const nlohmann::json rec = nlohmann::json::parse(line);
      const double z = rec["privacy"]["noise_multiplier"].get<double>();
      ASSERT_TRUE(model.Compose(5.0 / 7.0, z).ok());
      ASSERT_TRUE(coordinator.Compose(1.0, z).ok());
      EXPECT_DOUBLE_EQ(rec["privacy"]["epsilon"].get<double>(),
                       model.Epsilon(c.privacy.dp.delta));
      EXPECT_DOUBLE_EQ(rec["privacy"]["epsilon_coordinator"].get<double>(),
                       coordinator.Epsilon(c.privacy.dp.delta));
      EXPECT_GT(rec["privacy"]["epsilon_coordinator"].get<double>(),
                rec["privacy"]["epsilon"].get<double>());
    }
    EXPECT_EQ(rounds, 3);
  }
  c.sim.parallel_clients = 3;
  c.federated.run_dir = ::testing::TempDir() + "/sim_parallel3";
  std::filesystem::remove_all(c.federated.run_dir);
  absl::StatusOr<SimResult> b = RunSimulation(c, SimOptions());
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectSameRun(*a, *b);
  EXPECT_EQ(a->rounds_committed, 3);
}

TEST(SimulatorTest, ParallelClientsValidated) {
  RunConfig c = SmallRun("parallel_bad");
  c.sim.parallel_clients = 0;
  EXPECT_THAT(std::string(c.Validate().message()),
              HasSubstr("sim.parallel_clients: must be >= 1, got 0"));
  c.sim.parallel_clients = 65;
  EXPECT_THAT(std::string(c.Validate().message()),
              HasSubstr("sim.parallel_clients: must be <= 64, got 65"));
}

}  // namespace
}  // namespace layerfl
