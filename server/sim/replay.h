#ifndef LAYERFL_SERVER_SIM_REPLAY_H_
#define LAYERFL_SERVER_SIM_REPLAY_H_

// A recorded run played again: the committed rounds of a coordinator's
// metrics.jsonl, each with the clients whose updates it added and the layers
// each of them trained. The simulator replays them (SimOptions::replay)
// instead of sampling and selecting, so that a distributed run whose
// participation changed under faults (a client killed, cut off past a
// deadline, a coordinator restarted) can be checked against the simulator
// bit for bit. Torch-free.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/round/round_engine.h"

namespace layerfl {

struct ReplayRound {
  // The clients whose update the round added ("contributed"), sorted, and
  // the layers each trained.
  std::vector<std::string> ids;
  std::map<std::string, std::vector<std::string>> layers;
  // Secure aggregation: the round's roster size (its quantization scale
  // follows from it; clients that advertised and then dropped count); 0 =
  // not recorded (a plain run).
  int roster = 0;
};

// Rounds 1..N of `metrics_path`, every one committed once. Errors name the
// file and line: not JSON, no round number or clients, a round committed
// twice with different participants, a gap (round k missing before a later
// one), no round at all. NotFound when it cannot be read.
absl::StatusOr<std::map<int64_t, ReplayRound>> ReadReplay(
    const std::string& metrics_path);

// Whether `weights`, a replay's after `round`, equal the latest checkpoint
// of the recorded run in `run_dir` (its checkpoints/) bit for bit: OK, or
// FailedPrecondition naming the rounds or the first tensor and element that
// differ; NotFound when the run has no checkpoint there.
absl::Status CompareWithRecordedRun(const ModelWeights& weights,
                                    int64_t round, const std::string& run_dir);

// A selector that gives each candidate of round r the layers `rounds[r]`
// recorded for it (a candidate it does not list is an Internal error). It
// needs no scores and keeps no statistics.
std::unique_ptr<LayerSelector> CreateReplaySelector(
    std::map<int64_t, ReplayRound> rounds);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SIM_REPLAY_H_
