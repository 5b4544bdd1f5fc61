#ifndef LAYERFL_SERVER_SIM_SIMULATOR_H_
#define LAYERFL_SERVER_SIM_SIMULATOR_H_

// layerfl-sim: many virtual clients in one process, driven through the same
// round engine as the coordinator daemon and trained by the same selective
// trainer as the client daemon. Writes metrics.jsonl and checkpoints under
// federated.run_dir; resumes from the last checkpoint there when
// federated.resume is set. Same config and seed -> identical metrics (timings
// aside) and bit-identical final weights.
//
// Blocking; not thread-safe (one simulation per process: it sets LibTorch's
// thread count).

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/weights/weights.h"

namespace layerfl {

struct SimOptions {
  // Stop (as if the process died) after this many rounds committed by this
  // call; 0 = run to the end. For crash/resume tests.
  int64_t stop_after_rounds = 0;
  // Per-round progress lines; null = silent.
  std::ostream* progress = nullptr;
  // A coordinator's metrics.jsonl (replay.h): run its committed rounds with
  // their recorded participants and layers instead of sampling and
  // selecting (federated.rounds, min_clients and clients_per_round follow
  // the record). Synchronous runs without privacy.dp (its noise is not
  // repeated); a secure run only when its clients rounded from a seed, the
  // config's privacy.dp.noise_seed, which the replay's clients use too
  // (each round quantizes with the recorded roster's headroom). Otherwise
  // FailedPrecondition. "" = off.
  std::string replay;
};

struct SimResult {
  int64_t rounds_committed = 0;  // the last committed round number
  bool resumed = false;
  double final_accuracy = 0.0;  // last evaluation
  double best_accuracy = 0.0;
  double final_loss = 0.0;
  int64_t bytes_up = 0;  // all rounds run by this call
  int64_t bytes_down = 0;
  double wall_seconds = 0.0;
  ModelWeights final_weights;
  std::string metrics_path;
  // Under budget.unit time or memory: measured / budget per client
  // (UsageReport over this call's rounds); printed with the progress.
  std::string usage_report;
};

// The id of the virtual client holding partition `index`: "client-007".
// Client daemons started with --partition 7 use the same id by default, so a
// distributed run reproduces the simulation.
std::string SimClientId(int index);

absl::StatusOr<SimResult> RunSimulation(const RunConfig& config,
                                        const SimOptions& options);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SIM_SIMULATOR_H_
