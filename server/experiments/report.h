#ifndef LAYERFL_SERVER_EXPERIMENTS_REPORT_H_
#define LAYERFL_SERVER_EXPERIMENTS_REPORT_H_

// What an experiment grid produced, computed from the cells' metrics.jsonl
// files alone (so a report can be rebuilt from a finished or half-finished
// output directory): per cell, per (partition, budget, strategy) over seeds,
// and the two files written into the output directory:
//
//   results.md    one markdown table per partition x budget:
//                 strategy | seeds | final acc | best acc | MB up | wall s
//   summary.json  the same numbers plus the data behind the plots (mean
//                 accuracy per round per strategy; layer-selection fractions
//                 per round for each strategy's first seed)
//
// Definitions (per cell, i.e. one seed):
//   final accuracy  accuracy of the last evaluated round
//   best accuracy   the highest accuracy of any evaluated round
//   last-5 accuracy mean accuracy of the last 5 evaluated rounds (steadier
//                   than the final one)
//   client s        the clients' own compute over the run: sum over rounds
//                   and clients of the measured scoring + training seconds
//                   (usage in metrics.jsonl; on simulated devices, their time)
//   scoring %       the scoring passes' share of the client seconds
//   MB uploaded     sum of bytes_up over the rounds / 1e6
//   wall s          sum of timing_ms.round over the rounds / 1e3 (the rounds'
//                   own time: data loading and pretraining are not in it, and
//                   a resumed cell counts every round once)
// Over seeds: mean and sample standard deviation (n - 1 in the denominator;
// 0 for a single seed). Only finished cells (last round == federated.rounds)
// are aggregated; the "seeds" column says how many of the grid's seeds that is.
//
// Pure functions over files; thread-compatible.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/experiments/grid.h"

namespace layerfl {

// One metrics.jsonl line, the fields the report uses.
struct RoundMetrics {
  int64_t round = 0;
  bool evaluated = false;
  double accuracy = 0.0;
  double loss = 0.0;
  int64_t bytes_up = 0;
  double round_ms = 0.0;
  bool scoring_phase = false;    // timing_ms has a "score" phase
  double client_seconds = 0.0;   // sum of the clients' score_s + train_s
  double scoring_seconds = 0.0;  // sum of their score_s
  int num_clients = 0;           // clients listed for the round
  std::map<std::string, int> layer_counts;  // group -> clients that selected it
};

// Parses a metrics.jsonl file. Blank lines are skipped; a round that appears
// again (a resumed run that re-ran it) replaces the earlier line. A line that
// is not a JSON object with an integer "round" is InvalidArgument naming the
// file and line; a missing file is NotFound.
absl::StatusOr<std::vector<RoundMetrics>> ReadMetricsFile(
    const std::string& path);

// The last complete round in a metrics file, or 0 when there is none (no
// file, empty file, or a last line that is not complete JSON). Never fails.
int64_t LastRecordedRound(const std::string& path);

struct CellSummary {
  double final_accuracy = 0.0;
  double best_accuracy = 0.0;
  double last5_accuracy = 0.0;
  double client_seconds = 0.0;
  double scoring_seconds = 0.0;
  int64_t bytes_up = 0;
  double wall_seconds = 0.0;
  int64_t rounds = 0;  // the last round recorded
  // Rounds with and without a scoring phase, and their summed seconds.
  int scoring_rounds = 0, plain_rounds = 0;
  double scoring_round_seconds = 0.0, plain_round_seconds = 0.0;
};

CellSummary SummarizeCell(const std::vector<RoundMetrics>& rounds);

struct MeanStd {
  double mean = 0.0;
  double std = 0.0;  // sample standard deviation; 0 when fewer than 2 values
  int n = 0;
};

MeanStd ComputeMeanStd(const std::vector<double>& values);

struct SeedResult {
  uint64_t seed = 0;
  CellSummary summary;
};

struct StrategyResult {
  std::string strategy;
  int seeds_done = 0;  // finished cells aggregated
  int seeds_total = 0;
  std::vector<SeedResult> seeds;  // the finished ones, in grid order
  MeanStd final_accuracy;
  MeanStd best_accuracy;
  MeanStd last5_accuracy;
  double client_seconds = 0.0;  // mean over seeds
  double scoring_share = 0.0;   // scoring / client seconds, over all seeds
  double mb_uploaded = 0.0;     // mean over seeds
  double wall_seconds = 0.0;    // mean over seeds
  // Mean seconds of a round with / without a scoring phase, over every
  // seed's rounds; -1 when there was none.
  double round_seconds_scoring = -1.0;
  double round_seconds_plain = -1.0;
  // Accuracy vs round, mean over the finished seeds, at the rounds every one
  // of them evaluated.
  std::vector<int64_t> curve_rounds;
  std::vector<double> curve_accuracy;
  // Layer-selection heatmap of the first finished seed (by grid order):
  // fraction[r][l] = share of round heatmap_rounds[r]'s clients that selected
  // layer l (layers as in ExperimentReport::layers).
  uint64_t heatmap_seed = 0;
  std::vector<int64_t> heatmap_rounds;
  std::vector<std::vector<double>> heatmap_fraction;
};

struct SettingResult {
  std::string partition;
  std::string budget;
  std::vector<StrategyResult> strategies;  // in grid order
};

struct ExperimentReport {
  std::vector<std::string> layers;  // layer groups, input to output
  int64_t rounds = 0;               // federated.rounds of the grid
  int cells_total = 0;
  int cells_done = 0;
  std::vector<SettingResult> settings;  // partitions x budgets, in grid order
};

// Builds the report from the metrics files under `out_dir` (the layout
// ExpandGrid gives). `layers` orders the heatmap rows; groups seen in the
// metrics but not listed are appended. Unfinished cells are left out; a
// finished cell whose file does not parse is an error naming it.
absl::StatusOr<ExperimentReport> BuildReport(
    const ExperimentGrid& grid, const std::string& out_dir,
    const std::vector<std::string>& layers);

// `plots`: link each setting's PNGs (the names plot.py writes) under its
// table.
std::string ResultsMarkdown(const ExperimentReport& report, bool plots);
std::string SummaryJson(const ExperimentReport& report);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_EXPERIMENTS_REPORT_H_
