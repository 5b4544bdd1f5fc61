// trainer_bench: milliseconds per selective training step of the built-in ViT
// through the real SelectiveTrainer::Train, on random data. The Python twin is
// bench/trainer/trainer_bench.py; bench/trainer/run.sh runs both, interleaved.
//
// Prints one "group NAME PARAMS" line per layer group, then one line
//   result lang=cpp mode=M batch=B threads=T steps=K reps=R first_ms=F
//          median_ms=X min_ms=Y trained_params=N init_loss=L
// (on one line). first_ms is the very first one-step Train call (lazy
// initialisation included); median/min are over `reps` calls of `steps` steps.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/trainer/trainer.h"
#include "common/config/config.h"
#include "common/model/model.h"
#include "common/util/status_macros.h"

ABSL_FLAG(std::string, mode, "full",
          "full (every layer group) or last (only the last block)");
ABSL_FLAG(int, batch, 32, "batch size");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(int, steps, 30, "training steps per timed Train call");
ABSL_FLAG(int, reps, 5, "timed Train calls");
ABSL_FLAG(int, warmup_steps, 10, "untimed steps before the timed calls");
ABSL_FLAG(int, examples, 1024, "random examples to draw batches from");

namespace layerfl {
namespace {

struct BenchOptions {
  std::string mode;
  int batch = 32;
  int threads = 2;
  int steps = 30;
  int reps = 5;
  int warmup_steps = 10;
  int examples = 1024;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

absl::Status RunTrainerBench(const BenchOptions& o) {
  if (o.mode != "full" && o.mode != "last") {
    return absl::InvalidArgumentError(
        absl::StrCat("--mode: must be full or last, got '", o.mode, "'"));
  }
  if (o.steps < 1 || o.reps < 1 || o.warmup_steps < 0 || o.examples < 1) {
    return absl::InvalidArgumentError(
        "--steps, --reps, --examples must be >= 1, --warmup_steps >= 0");
  }
  RunConfig config;
  config.threads = o.threads;
  config.train.batch_size = o.batch;
  RETURN_IF_ERROR(config.Validate());
  SetTorchThreads(config.threads);
  TuneMallocForTraining();

  ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                   CreateModel(config.model, config.seed));
  std::vector<std::string> groups;
  for (const LayerGroup& g : model->groups()) {
    std::printf("group %s %lld\n", g.name.c_str(),
                static_cast<long long>(g.num_params));
    if (o.mode == "full") groups.push_back(g.name);
  }
  if (o.mode == "last") {
    groups.push_back(absl::StrCat("block", config.model.depth - 1));
  }

  at::manual_seed(config.seed);
  const int64_t side = config.model.image_size;
  Examples data{at::randn({o.examples, config.model.channels, side, side}),
                at::randint(config.model.num_classes, {o.examples}, at::kLong)};

  // Loss of the untrained model on the first batch: the Python twin draws the
  // same weights and data from the same seed, so equal values show that both
  // run the same model.
  double init_loss = 0;
  {
    at::NoGradGuard no_grad;
    const int64_t n = std::min<int64_t>(o.batch, o.examples);
    init_loss =
        at::cross_entropy_loss(model->Forward(data.inputs.narrow(0, 0, n)),
                               data.labels.narrow(0, 0, n))
            .item<double>();
  }

  using Clock = std::chrono::steady_clock;
  auto train = [&](int steps, uint64_t seed) -> absl::StatusOr<double> {
    TrainConfig tc = config.train;
    tc.local_steps = steps;
    SelectiveTrainer trainer(tc, config.importance);
    const auto start = Clock::now();
    ASSIGN_OR_RETURN(TrainResult r, trainer.Train(*model, data, groups, seed));
    const double ms =
        std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (r.steps != steps) return absl::InternalError("unexpected step count");
    return ms;
  };

  ASSIGN_OR_RETURN(const double first_ms, train(1, 0));
  if (o.warmup_steps > 0) {
    ASSIGN_OR_RETURN(const double unused, train(o.warmup_steps, 1));
    (void)unused;
  }
  std::vector<double> per_step;
  for (int rep = 0; rep < o.reps; ++rep) {
    ASSIGN_OR_RETURN(const double ms, train(o.steps, 2 + rep));
    per_step.push_back(ms / o.steps);
  }
  int64_t trained = 0;
  for (const LayerGroup& g : model->groups()) {
    if (std::find(groups.begin(), groups.end(), g.name) != groups.end()) {
      trained += g.num_params;
    }
  }
  std::printf(
      "result lang=cpp mode=%s batch=%d threads=%d steps=%d reps=%d "
      "first_ms=%.3f median_ms=%.4f min_ms=%.4f trained_params=%lld "
      "init_loss=%.6f\n",
      o.mode.c_str(), o.batch, o.threads, o.steps, o.reps, first_ms,
      Median(per_step), *std::min_element(per_step.begin(), per_step.end()),
      static_cast<long long>(trained), init_loss);
  return absl::OkStatus();
}

}  // namespace
}  // namespace layerfl

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  layerfl::BenchOptions o;
  o.mode = absl::GetFlag(FLAGS_mode);
  o.batch = absl::GetFlag(FLAGS_batch);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.steps = absl::GetFlag(FLAGS_steps);
  o.reps = absl::GetFlag(FLAGS_reps);
  o.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  o.examples = absl::GetFlag(FLAGS_examples);
  absl::Status status = layerfl::RunTrainerBench(o);
  if (!status.ok()) {
    std::cerr << "trainer_bench: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
