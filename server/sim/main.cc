// layerfl-sim --config FILE: a federated run with virtual clients in one
// process (see server/sim/simulator.h).
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "common/util/flags.h"
#include "server/sim/replay.h"
#include "server/sim/simulator.h"

ABSL_FLAG(std::string, config, "configs/demo.yaml", "run config (YAML)");
ABSL_FLAG(std::string, replay, "",
          "a coordinator's metrics.jsonl: run its committed rounds with their "
          "recorded participants and layers (synchronous plain runs; write to "
          "another federated.run_dir) and compare the final checkpoints");
ABSL_FLAG(std::string, expect_run_dir, "",
          "with --replay: the recorded run's federated.run_dir; exit 1 unless "
          "the replay ends with its latest checkpoint's weights, bit for bit");

int main(int argc, char** argv) {
  layerfl::ParseFlags(argc, argv,
                      "layerfl-sim --config FILE [--replay METRICS_JSONL]");
  absl::StatusOr<layerfl::RunConfig> config =
      layerfl::LoadRunConfig(absl::GetFlag(FLAGS_config));
  if (!config.ok()) {
    std::cerr << "layerfl-sim: " << config.status().message() << "\n";
    return 2;
  }
  if (!absl::GetFlag(FLAGS_expect_run_dir).empty() &&
      absl::GetFlag(FLAGS_replay).empty()) {
    std::cerr << "layerfl-sim: --expect_run_dir needs --replay\n";
    return 2;
  }
  layerfl::SimOptions options;
  options.progress = &std::cout;
  options.replay = absl::GetFlag(FLAGS_replay);
  absl::StatusOr<layerfl::SimResult> result =
      layerfl::RunSimulation(*config, options);
  if (!result.ok()) {
    std::cerr << "layerfl-sim: " << result.status().message() << "\n";
    return 1;
  }
  std::cout << absl::StrFormat(
      "sim: %d rounds, final accuracy %.4f (best %.4f), uploaded %.2f MB, "
      "downloaded %.2f MB, %.1fs; metrics in %s\n",
      result->rounds_committed, result->final_accuracy, result->best_accuracy,
      result->bytes_up / 1e6, result->bytes_down / 1e6, result->wall_seconds,
      result->metrics_path);
  if (const std::string run = absl::GetFlag(FLAGS_expect_run_dir);
      !run.empty()) {
    const absl::Status same = layerfl::CompareWithRecordedRun(
        result->final_weights, result->rounds_committed, run);
    if (!same.ok()) {
      std::cerr << "layerfl-sim: " << same.message() << "\n";
      return 1;
    }
    std::cout << "sim: the replay's weights equal " << run << "'s round "
              << result->rounds_committed << " bit for bit\n";
  }
  return 0;
}
