#ifndef LAYERFL_CLIENT_FINETUNE_FINETUNE_H_
#define LAYERFL_CLIENT_FINETUNE_FINETUNE_H_

// The single-client fine-tuning demo behind `make demo` (until the federated
// demo): builds or loads the cached pretrained ViT, fine-tunes demo.layers
// (plus the common groups) on one client's partition, and compares with the
// same fine-tuning from random initialisation. Blocking; prints progress to
// `out`.

#include <ostream>

#include "absl/status/status.h"
#include "common/config/config.h"

namespace layerfl {

struct FinetuneSummary {
  double pretrained_accuracy = 0.0;  // test accuracy after the last round
  double random_init_accuracy = 0.0;
  int64_t trained_params = 0;
  int64_t total_params = 0;
};

absl::StatusOr<FinetuneSummary> RunFinetuneDemo(const RunConfig& config,
                                                std::ostream& out);

}  // namespace layerfl

#endif  // LAYERFL_CLIENT_FINETUNE_FINETUNE_H_
