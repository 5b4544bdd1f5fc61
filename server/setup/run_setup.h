#ifndef LAYERFL_SERVER_SETUP_RUN_SETUP_H_
#define LAYERFL_SERVER_SETUP_RUN_SETUP_H_

// What layerfl-sim and layerfl-coordinator both build before the first round,
// in one place so that the two stay identical (a distributed run must end
// with the simulator's weights): the federated data, the model with its
// pretrained start, the initial weights, the selector, the checkpoint store,
// the evaluator and the metrics file of federated.run_dir.
//
// Blocking (loads data, may pretrain). Not thread-safe.

#include <fstream>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/trainer/examples.h"
#include "common/model/model.h"
#include "common/weights/weights.h"
#include "server/checkpoint/checkpoint_store.h"
#include "server/round/round_engine.h"

namespace layerfl {

// The run's config as it started (RunConfigToYaml, machine-local fields
// included), in federated.run_dir; PrepareRun writes it.
inline constexpr char kRunConfigFile[] = "run_config.yaml";

struct RunCore {
  // The clients' training examples, partition order (PrepareRun's `which`).
  std::vector<Examples> clients;
  std::shared_ptr<Model> model;  // the coordinator's replica (evaluation)
  ModelWeights initial;          // pretrained start, versions 0
  std::unique_ptr<LayerSelector> selector;
  std::unique_ptr<CheckpointStore> store;   // federated.run_dir/checkpoints
  std::unique_ptr<Evaluator> evaluator;     // on the test set, uses `model`
  std::string checkpoint_dir;

  // Deps for RoundEngine::Create (the real clock).
  RoundEngine::Deps EngineDeps() const;
};

// Builds the above for an image (ViT, pretrained start from the hold-out
// when pretrain.enabled) or a text run (its model's own initialisation);
// `which` as BuildTaskExamples: the simulator wants kAllClients, the
// coordinator kNoClients (then, unless a missing pretrained checkpoint must
// be built, only the test set is read). Refuses (FailedPrecondition) a run_dir holding
// checkpoints when federated.resume is false.
absl::StatusOr<RunCore> PrepareRun(const RunConfig& config, std::ostream* log,
                                   int which = kAllClients);

// Opens federated.run_dir/metrics.jsonl: truncated for a new run, appended to
// when `engine` resumed — and then, if a crash lost the line of the last
// committed round (written after its checkpoint), that line is restored from
// the checkpoint's record.
absl::StatusOr<std::ofstream> OpenMetrics(const RunConfig& config,
                                          const RoundEngine& engine,
                                          CheckpointStore& store,
                                          std::string* path);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SETUP_RUN_SETUP_H_
