#include "server/experiments/report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace layerfl {
namespace {

using Json = nlohmann::json;

// A JSON number; null (what the engine writes for NaN/Inf) reads as NaN.
bool ReadNumber(const Json& object, const char* key, double* out) {
  const auto it = object.find(key);
  if (it == object.end()) return false;
  if (it->is_null()) {
    *out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  if (!it->is_number()) return false;
  *out = it->get<double>();
  return true;
}

absl::StatusOr<RoundMetrics> ParseRound(const std::string& line) {
  const Json node = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (node.is_discarded()) return absl::InvalidArgumentError("not JSON");
  if (!node.is_object()) {
    return absl::InvalidArgumentError("not a JSON object");
  }
  RoundMetrics m;
  const auto round = node.find("round");
  if (round == node.end() || !round->is_number_integer() ||
      round->get<int64_t>() < 1) {
    return absl::InvalidArgumentError("no positive integer \"round\"");
  }
  m.round = round->get<int64_t>();
  if (node.contains("accuracy")) {
    m.evaluated = true;
    if (!ReadNumber(node, "accuracy", &m.accuracy)) {
      return absl::InvalidArgumentError("\"accuracy\" is not a number");
    }
    if (node.contains("loss") && !ReadNumber(node, "loss", &m.loss)) {
      return absl::InvalidArgumentError("\"loss\" is not a number");
    }
  }
  if (const auto up = node.find("bytes_up"); up != node.end()) {
    if (!up->is_number_integer()) {
      return absl::InvalidArgumentError("\"bytes_up\" is not an integer");
    }
    m.bytes_up = up->get<int64_t>();
  }
  if (const auto timing = node.find("timing_ms");
      timing != node.end() && timing->is_object() &&
      timing->contains("round") &&
      !ReadNumber(*timing, "round", &m.round_ms)) {
    return absl::InvalidArgumentError("\"timing_ms.round\" is not a number");
  }
  if (const auto timing = node.find("timing_ms");
      timing != node.end() && timing->is_object()) {
    m.scoring_phase = timing->contains("score");
  }
  if (const auto usage = node.find("usage");
      usage != node.end() && usage->is_array()) {
    for (const Json& u : *usage) {
      if (!u.is_object()) continue;
      double v = 0;
      if (ReadNumber(u, "train_s", &v)) m.client_seconds += v;
      if (ReadNumber(u, "score_s", &v)) {
        m.client_seconds += v;
        m.scoring_seconds += v;
      }
    }
  }
  if (const auto clients = node.find("clients"); clients != node.end()) {
    if (!clients->is_array()) {
      return absl::InvalidArgumentError("\"clients\" is not an array");
    }
    m.num_clients = static_cast<int>(clients->size());
    for (const Json& client : *clients) {
      if (!client.is_object()) {
        return absl::InvalidArgumentError("a client is not an object");
      }
      const auto layers = client.find("layers");
      if (layers == client.end()) continue;
      if (!layers->is_array()) {
        return absl::InvalidArgumentError(
            "a client's \"layers\" is not an array");
      }
      for (const Json& layer : *layers) {
        if (!layer.is_string()) {
          return absl::InvalidArgumentError("a layer name is not a string");
        }
        ++m.layer_counts[layer.get<std::string>()];
      }
    }
  }
  return m;
}

std::string Percent(const MeanStd& m) {
  if (m.n == 0) return "–";
  if (m.n == 1) return absl::StrFormat("%.2f", 100.0 * m.mean);
  return absl::StrFormat("%.2f ± %.2f", 100.0 * m.mean, 100.0 * m.std);
}

nlohmann::ordered_json MeanStdJson(const MeanStd& m) {
  return {{"mean", m.mean}, {"std", m.std}, {"n", m.n}};
}

std::string CellDir(const std::string& out_dir, const std::string& partition,
                    const std::string& budget, const std::string& strategy,
                    uint64_t seed) {
  return (std::filesystem::path(out_dir) / "runs" / partition / budget /
          strategy / absl::StrCat("seed", seed))
      .string();
}

}  // namespace

absl::StatusOr<std::vector<RoundMetrics>> ReadMetricsFile(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  }
  std::vector<RoundMetrics> rounds;
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    absl::StatusOr<RoundMetrics> m = ParseRound(line);
    if (!m.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_number, ": ", m.status().message()));
    }
    // A re-run round replaces what was recorded for it and after it.
    while (!rounds.empty() && rounds.back().round >= m->round) {
      rounds.pop_back();
    }
    rounds.push_back(*std::move(m));
  }
  return rounds;
}

int64_t LastRecordedRound(const std::string& path) {
  std::ifstream in(path);
  std::string last;
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  }
  if (last.empty()) return 0;
  absl::StatusOr<RoundMetrics> m = ParseRound(last);
  return m.ok() ? m->round : 0;
}

CellSummary SummarizeCell(const std::vector<RoundMetrics>& rounds) {
  CellSummary s;
  bool any_eval = false;
  std::vector<double> evaluated;
  for (const RoundMetrics& r : rounds) {
    s.rounds = std::max(s.rounds, r.round);
    s.bytes_up += r.bytes_up;
    s.wall_seconds += r.round_ms / 1000.0;
    if (r.scoring_phase) {
      ++s.scoring_rounds;
      s.scoring_round_seconds += r.round_ms / 1000.0;
    } else {
      ++s.plain_rounds;
      s.plain_round_seconds += r.round_ms / 1000.0;
    }
    s.client_seconds += r.client_seconds;
    s.scoring_seconds += r.scoring_seconds;
    if (!r.evaluated) continue;
    evaluated.push_back(r.accuracy);
    s.final_accuracy = r.accuracy;
    s.best_accuracy =
        any_eval ? std::max(s.best_accuracy, r.accuracy) : r.accuracy;
    any_eval = true;
  }
  const size_t last = std::min<size_t>(5, evaluated.size());
  for (size_t k = evaluated.size() - last; k < evaluated.size(); ++k) {
    s.last5_accuracy += evaluated[k] / static_cast<double>(last);
  }
  return s;
}

MeanStd ComputeMeanStd(const std::vector<double>& values) {
  MeanStd m;
  m.n = static_cast<int>(values.size());
  if (values.empty()) return m;
  double sum = 0;
  for (double v : values) sum += v;
  m.mean = sum / m.n;
  if (m.n < 2) return m;
  double sq = 0;
  for (double v : values) sq += (v - m.mean) * (v - m.mean);
  m.std = std::sqrt(sq / (m.n - 1));
  return m;
}

absl::StatusOr<ExperimentReport> BuildReport(
    const ExperimentGrid& grid, const std::string& out_dir,
    const std::vector<std::string>& layers) {
  ExperimentReport report;
  report.layers = layers;
  report.rounds = grid.base.federated.rounds;
  // Per setting and strategy: each finished seed's rounds.
  struct Finished {
    uint64_t seed;
    std::vector<RoundMetrics> rounds;
  };
  std::vector<std::vector<std::vector<Finished>>> finished;
  const std::vector<std::string> strategies = CellStrategyNames(grid);
  for (const PartitionSetting& p : grid.partitions) {
    for (const BudgetSetting& b : grid.budgets) {
      finished.emplace_back();
      for (const std::string& strategy : strategies) {
        finished.back().emplace_back();
        for (uint64_t seed : grid.seeds) {
          ++report.cells_total;
          const std::string path =
              (std::filesystem::path(
                   CellDir(out_dir, p.name, b.name, strategy, seed)) /
               "metrics.jsonl")
                  .string();
          if (LastRecordedRound(path) != report.rounds) continue;
          ASSIGN_OR_RETURN(std::vector<RoundMetrics> rounds,
                           ReadMetricsFile(path));
          ++report.cells_done;
          for (const RoundMetrics& r : rounds) {
            for (const auto& [layer, count] : r.layer_counts) {
              if (std::find(report.layers.begin(), report.layers.end(),
                            layer) == report.layers.end()) {
                report.layers.push_back(layer);
              }
            }
          }
          finished.back().back().push_back({seed, std::move(rounds)});
        }
      }
    }
  }

  size_t setting_index = 0;
  for (const PartitionSetting& p : grid.partitions) {
    for (const BudgetSetting& b : grid.budgets) {
      SettingResult setting;
      setting.partition = p.name;
      setting.budget = b.name;
      for (size_t s = 0; s < strategies.size(); ++s) {
        const std::vector<Finished>& runs = finished[setting_index][s];
        StrategyResult row;
        row.strategy = strategies[s];
        row.seeds_total = static_cast<int>(grid.seeds.size());
        row.seeds_done = static_cast<int>(runs.size());
        std::vector<double> final_acc, best_acc, last5_acc;
        double mb = 0, wall = 0, client = 0, scoring = 0;
        double scoring_round_s = 0, plain_round_s = 0;
        int scoring_rounds = 0, plain_rounds = 0;
        for (const Finished& run : runs) {
          const CellSummary c = SummarizeCell(run.rounds);
          row.seeds.push_back({run.seed, c});
          final_acc.push_back(c.final_accuracy);
          best_acc.push_back(c.best_accuracy);
          last5_acc.push_back(c.last5_accuracy);
          mb += c.bytes_up / 1e6;
          wall += c.wall_seconds;
          client += c.client_seconds;
          scoring += c.scoring_seconds;
          scoring_round_s += c.scoring_round_seconds;
          plain_round_s += c.plain_round_seconds;
          scoring_rounds += c.scoring_rounds;
          plain_rounds += c.plain_rounds;
        }
        if (scoring_rounds > 0) {
          row.round_seconds_scoring = scoring_round_s / scoring_rounds;
        }
        if (plain_rounds > 0) {
          row.round_seconds_plain = plain_round_s / plain_rounds;
        }
        row.final_accuracy = ComputeMeanStd(final_acc);
        row.best_accuracy = ComputeMeanStd(best_acc);
        row.last5_accuracy = ComputeMeanStd(last5_acc);
        if (!runs.empty()) {
          row.mb_uploaded = mb / runs.size();
          row.wall_seconds = wall / runs.size();
          row.client_seconds = client / runs.size();
          row.scoring_share = client > 0 ? scoring / client : 0.0;
          // Rounds every seed evaluated, then the mean accuracy there.
          std::map<int64_t, std::vector<double>> by_round;
          for (const Finished& run : runs) {
            for (const RoundMetrics& r : run.rounds) {
              if (r.evaluated) by_round[r.round].push_back(r.accuracy);
            }
          }
          for (const auto& [round, accs] : by_round) {
            if (accs.size() != runs.size()) continue;
            row.curve_rounds.push_back(round);
            row.curve_accuracy.push_back(ComputeMeanStd(accs).mean);
          }
          const Finished& first = runs.front();
          row.heatmap_seed = first.seed;
          for (const RoundMetrics& r : first.rounds) {
            row.heatmap_rounds.push_back(r.round);
            std::vector<double> fraction(report.layers.size(), 0.0);
            for (size_t l = 0; l < report.layers.size(); ++l) {
              auto it = r.layer_counts.find(report.layers[l]);
              if (it != r.layer_counts.end() && r.num_clients > 0) {
                fraction[l] = static_cast<double>(it->second) / r.num_clients;
              }
            }
            row.heatmap_fraction.push_back(std::move(fraction));
          }
        }
        setting.strategies.push_back(std::move(row));
      }
      report.settings.push_back(std::move(setting));
      ++setting_index;
    }
  }
  return report;
}

namespace {
std::string RoundSeconds(double s) {
  return s < 0 ? "–" : absl::StrFormat("%.2f", s);
}
}  // namespace

std::string ResultsMarkdown(const ExperimentReport& report, bool plots) {
  std::string out = absl::StrCat(
      "# LayerFL experiment results\n\n", report.cells_done, " of ",
      report.cells_total, " cells finished, ", report.rounds,
      " rounds each. Accuracy in % on the held-out test set: mean ± sample "
      "standard deviation over seeds (final = last evaluated round, best = "
      "highest evaluated round, last 5 = mean of the last 5 evaluated "
      "rounds). MB uploaded: clients' sparse updates over the run, mean over "
      "seeds. Client s: the clients' measured scoring + training seconds "
      "summed over the run (on their simulated devices), mean over seeds; "
      "scoring %: the scoring passes' share of them. Wall s: the rounds' own "
      "time (no data loading or pretraining), mean over seeds. Round s: the "
      "mean round with a scoring phase / without one (– where none).\n");
  for (const SettingResult& setting : report.settings) {
    absl::StrAppend(&out, "\n## ", setting.partition, " / ", setting.budget,
                    "\n\n| strategy | seeds | final acc (%) | best acc (%) | "
                    "last 5 (%) | MB uploaded | client s | scoring % | wall s "
                    "| round s (scoring / none) "
                    "|\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const StrategyResult& row : setting.strategies) {
      const bool any = row.seeds_done > 0;
      absl::StrAppend(
          &out, "| ", row.strategy, " | ", row.seeds_done, "/", row.seeds_total,
          " | ", Percent(row.final_accuracy), " | ", Percent(row.best_accuracy),
          " | ", Percent(row.last5_accuracy), " | ",
          any ? absl::StrFormat("%.2f", row.mb_uploaded) : "–", " | ",
          any ? absl::StrFormat("%.1f", row.client_seconds) : "–", " | ",
          any ? absl::StrFormat("%.1f", 100.0 * row.scoring_share) : "–", " | ",
          any ? absl::StrFormat("%.1f", row.wall_seconds) : "–", " | ",
          RoundSeconds(row.round_seconds_scoring), " / ",
          RoundSeconds(row.round_seconds_plain), " |\n");
    }
    if (!plots) continue;
    const std::string tag =
        absl::StrCat(setting.partition, "_", setting.budget);
    absl::StrAppend(&out, "\n![accuracy vs round, ", setting.partition, " / ",
                    setting.budget, "](acc_", tag, ".png)\n![accuracy vs cost, ",
                    setting.partition, " / ", setting.budget, "](cost_", tag,
                    ".png)\n\nLayer-selection "
                    "heatmaps (first seed):");
    for (const StrategyResult& row : setting.strategies) {
      if (row.seeds_done == 0) continue;
      absl::StrAppend(&out, " [", row.strategy, "](heatmap_", tag, "_",
                      row.strategy, ".png)");
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

std::string SummaryJson(const ExperimentReport& report) {
  // Keys in the order written; NaN (no value) dumps as null.
  using Ordered = nlohmann::ordered_json;
  Ordered settings = Ordered::array();
  for (const SettingResult& setting : report.settings) {
    Ordered strategies = Ordered::array();
    for (const StrategyResult& row : setting.strategies) {
      Ordered seeds = Ordered::array();
      for (const auto& seed : row.seeds) {
        const CellSummary& c = seed.summary;
        seeds.push_back({{"seed", seed.seed},
                         {"final_accuracy", c.final_accuracy},
                         {"best_accuracy", c.best_accuracy},
                         {"bytes_up", c.bytes_up},
                         {"wall_seconds", c.wall_seconds}});
      }
      strategies.push_back(
          {{"strategy", row.strategy},
           {"seeds_done", row.seeds_done},
           {"seeds_total", row.seeds_total},
           {"final_accuracy", MeanStdJson(row.final_accuracy)},
           {"best_accuracy", MeanStdJson(row.best_accuracy)},
           {"last5_accuracy", MeanStdJson(row.last5_accuracy)},
           {"client_seconds", row.client_seconds},
           {"scoring_share", row.scoring_share},
           {"mb_uploaded", row.mb_uploaded},
           {"wall_seconds", row.wall_seconds},
           {"round_seconds_scoring", row.round_seconds_scoring},
           {"round_seconds_plain", row.round_seconds_plain},
           {"seeds", std::move(seeds)},
           {"curve",
            {{"rounds", row.curve_rounds}, {"accuracy", row.curve_accuracy}}},
           {"heatmap",
            {{"seed", row.heatmap_seed},
             {"rounds", row.heatmap_rounds},
             {"fraction", row.heatmap_fraction}}}});
    }
    settings.push_back({{"partition", setting.partition},
                        {"budget", setting.budget},
                        {"strategies", std::move(strategies)}});
  }
  const Ordered out = {{"rounds", report.rounds},
                       {"cells_total", report.cells_total},
                       {"cells_done", report.cells_done},
                       {"layers", report.layers},
                       {"settings", std::move(settings)}};
  return out.dump(-1, ' ', false, Ordered::error_handler_t::replace) + "\n";
}

}  // namespace layerfl
