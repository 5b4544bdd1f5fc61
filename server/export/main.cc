// layerfl-export --run_dir DIR --out DIR [--hf_dir DIR]: a run's fine-tuned
// model as a Hugging Face checkpoint (safetensors + config.json) in the
// layout of the one it started from.
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "server/export/export.h"

ABSL_FLAG(std::string, run_dir, "",
          "the run's federated.run_dir (run_config.yaml and checkpoints/)");
ABSL_FLAG(std::string, out, "", "the directory to write the model to");
ABSL_FLAG(std::string, hf_dir, "",
          "the source checkpoint, when it is no longer at the run config's "
          "model.hf_dir");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  layerfl::ExportOptions options;
  options.run_dir = absl::GetFlag(FLAGS_run_dir);
  options.out_dir = absl::GetFlag(FLAGS_out);
  options.hf_dir = absl::GetFlag(FLAGS_hf_dir);
  if (options.run_dir.empty() || options.out_dir.empty()) {
    std::cerr << "usage: layerfl-export --run_dir DIR --out DIR "
                 "[--hf_dir DIR]\n";
    return 2;
  }
  std::string summary;
  const absl::Status status = layerfl::ExportRun(options, &summary);
  if (!status.ok()) {
    std::cerr << "layerfl-export: " << status.message() << "\n";
    return status.code() == absl::StatusCode::kInvalidArgument ||
                   status.code() == absl::StatusCode::kNotFound
               ? 2
               : 1;
  }
  std::cout << summary << "\n";
  return 0;
}
