// score_variance --config FILE [--clients 5] [--draws 20]: how far cheap
// importance scores are from the full pass, per layer group. For each of the
// first --clients clients of the run (its data partition, the pretrained
// start), the reference is sq_grad_norm over one epoch of the client's own
// examples (every example once, batches of train.batch_size); each cheap
// estimator (batches x batch size) is drawn --draws times with different
// seeds. Prints, per estimator and group, the mean of score / reference
// (bias: a one-batch score adds the batch's gradient noise), the relative
// standard deviation across draws, and how often the estimator's top group
// (among the non-common ones) is the reference's.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "common/model/weights_bridge.h"
#include "common/trainer/trainer.h"
#include "server/setup/run_setup.h"

ABSL_FLAG(std::string, config, "configs/experiments/base.yaml", "run config");
ABSL_FLAG(int, clients, 5, "clients measured (the first ones)");
ABSL_FLAG(int, draws, 20, "draws of each cheap estimator");

namespace layerfl {
namespace {

struct Estimator {
  int batches;
  int batch_size;
};

int Run() {
  absl::StatusOr<RunConfig> config =
      LoadRunConfig(absl::GetFlag(FLAGS_config));
  if (!config.ok()) {
    std::cerr << config.status() << "\n";
    return 2;
  }
  config->federated.run_dir = "/tmp/layerfl_score_variance";
  config->federated.resume = true;
  SetTorchThreads(config->threads);
  absl::StatusOr<RunCore> core = PrepareRun(*config, &std::cerr);
  if (!core.ok()) {
    std::cerr << core.status() << "\n";
    return 1;
  }
  Model& model = *core->model;
  if (absl::Status s = ImportWeights(model, core->initial); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  const std::vector<LayerGroup>& groups = model.groups();
  const int g = static_cast<int>(groups.size());
  const int b = config->train.batch_size;
  const std::vector<Estimator> estimators = {
      {config->importance.batches, b}, {1, b}, {1, std::max(1, b / 4)}};
  const int clients =
      std::min<int>(absl::GetFlag(FLAGS_clients), core->clients.size());
  const int draws = absl::GetFlag(FLAGS_draws);
  // ratio[e][l]: score / reference over clients x draws.
  std::vector<std::vector<std::vector<double>>> ratio(
      estimators.size(), std::vector<std::vector<double>>(g));
  std::vector<int> top_agrees(estimators.size(), 0);
  const auto top = [&](const std::vector<LayerScores>& s) {
    int best = -1;
    for (int l = 0; l < g; ++l) {
      if (groups[l].common || groups[l].frozen) continue;
      if (best < 0 || s[l].sq_grad_norm > s[best].sq_grad_norm) best = l;
    }
    return best;
  };
  for (int c = 0; c < clients; ++c) {
    const Examples& data = core->clients[c];
    ImportanceConfig full;
    full.batches = static_cast<int>((data.size() + b - 1) / b);
    absl::StatusOr<std::vector<LayerScores>> reference =
        SelectiveTrainer(config->train, full).Importance(model, data, 1);
    if (!reference.ok()) {
      std::cerr << reference.status() << "\n";
      return 1;
    }
    for (size_t e = 0; e < estimators.size(); ++e) {
      ImportanceConfig imp;
      imp.batches = estimators[e].batches;
      imp.batch_size = estimators[e].batch_size;
      const SelectiveTrainer trainer(config->train, imp);
      for (int d = 0; d < draws; ++d) {
        absl::StatusOr<std::vector<LayerScores>> s =
            trainer.Importance(model, data, 1000 + d);
        if (!s.ok()) {
          std::cerr << s.status() << "\n";
          return 1;
        }
        for (int l = 0; l < g; ++l) {
          if ((*reference)[l].sq_grad_norm > 0) {
            ratio[e][l].push_back((*s)[l].sq_grad_norm /
                                  (*reference)[l].sq_grad_norm);
          }
        }
        top_agrees[e] += top(*s) == top(*reference);
      }
    }
  }
  std::printf(
      "score / full pass (one epoch of the client's data), %d clients x %d "
      "draws: mean ratio (bias) and relative std across draws, per group\n",
      clients, draws);
  for (size_t e = 0; e < estimators.size(); ++e) {
    std::printf("\n%d batch(es) of %d: top non-common group as the full "
                "pass's in %.0f%% of draws\n",
                estimators[e].batches, estimators[e].batch_size,
                100.0 * top_agrees[e] / (clients * draws));
    for (int l = 0; l < g; ++l) {
      const std::vector<double>& r = ratio[e][l];
      if (r.empty()) continue;
      double mean = 0, sq = 0;
      for (double x : r) mean += x;
      mean /= r.size();
      for (double x : r) sq += (x - mean) * (x - mean);
      const double sd = r.size() > 1 ? std::sqrt(sq / (r.size() - 1)) : 0;
      std::printf("  %-8s mean ratio %6.2f   relative std %5.2f\n",
                  groups[l].name.c_str(), mean, mean > 0 ? sd / mean : 0.0);
    }
  }
  return 0;
}

}  // namespace
}  // namespace layerfl

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return layerfl::Run();
}
