#ifndef LAYERFL_COMMON_TRAINER_EXAMPLES_H_
#define LAYERFL_COMMON_TRAINER_EXAMPLES_H_

// Conversion of the torch-free data sets into tensors the trainer consumes.

#include <vector>

#include "absl/status/statusor.h"
#include "common/trainer/trainer.h"
#include "common/config/config.h"
#include "common/data/idx.h"
#include "common/data/text.h"

namespace layerfl {

// Images -> uint8 [N, channels, rows, cols] with the set's per-channel mean
// and std (the trainer normalises each batch it takes); labels int64.
Examples ImagesToExamples(const ImageSet& set);

// Token ids -> int64 [N, max_len]; labels int64.
Examples TextToExamples(const TextSet& set);

// The federated task of a config as the trainer's examples, built the same
// way for the simulator, the coordinator and a client daemon: image runs
// (data.dataset fashion_mnist, image_folder: BuildFederatedImages) or text
// runs (tsv, jsonl, csv: BuildFederatedText).
struct TaskExamples {
  // Client partitions: all of them in order, one, or none (see `which`).
  std::vector<Examples> clients;
  Examples test;
  // fashion_mnist runs: the pretraining hold-out, disjoint from every
  // client's data (empty for other runs).
  ImageSet holdout;
};

inline constexpr int kAllClients = -1;
inline constexpr int kNoClients = -2;

// `which`: kAllClients, kNoClients, or one partition index in
// [0, data.num_clients) (then clients holds just that one). An image run
// with kNoClients and !with_holdout reads the test images only (a
// coordinator whose pretrained start is cached needs no training images).
// Errors name the file or config field (BuildFederatedImages,
// BuildFederatedText); InvalidArgument for a partition index out of range.
absl::StatusOr<TaskExamples> BuildTaskExamples(const RunConfig& config,
                                               int which,
                                               bool with_holdout = true);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_TRAINER_EXAMPLES_H_
