#ifndef LAYERFL_SERVER_EXPORT_EXPORT_H_
#define LAYERFL_SERVER_EXPORT_EXPORT_H_

// layerfl-export: a run's fine-tuned model written back in the layout of the
// Hugging Face checkpoint it started from, so that it loads where that one
// came from. Blocking (reads the checkpoint, writes the files).

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace layerfl {

struct ExportOptions {
  // The run's federated.run_dir (its run_config.yaml and checkpoints/).
  std::string run_dir;
  // Where the model is written (created; files replaced atomically).
  std::string out_dir;
  // The source checkpoint directory; "" = the run config's model.hf_dir
  // (give it when the checkpoint has moved since the run).
  std::string hf_dir;
};

// The latest committed round's weights of the run, over the source
// checkpoint's architecture and config. What was exported: written to
// `log` as one line. Errors: NotFound naming the missing run_config.yaml or
// checkpoint; InvalidArgument when the run's model.kind is not hf, or the
// checkpoint's weights do not fit the source architecture (naming the
// tensor).
absl::Status ExportRun(const ExportOptions& options, std::string* summary);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_EXPORT_EXPORT_H_
