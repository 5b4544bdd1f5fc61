// layerfl-finetune --config FILE: the single-client fine-tuning demo.
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/util/flags.h"
#include "client/finetune/finetune.h"

ABSL_FLAG(std::string, config, "configs/reference.yaml", "run config (YAML)");

int main(int argc, char** argv) {
  layerfl::ParseFlags(argc, argv, "layerfl-finetune --config FILE");
  absl::StatusOr<layerfl::RunConfig> config =
      layerfl::LoadRunConfig(absl::GetFlag(FLAGS_config));
  if (!config.ok()) {
    std::cerr << "layerfl-finetune: " << config.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<layerfl::FinetuneSummary> summary =
      layerfl::RunFinetuneDemo(*config, std::cout);
  if (!summary.ok()) {
    std::cerr << "layerfl-finetune: " << summary.status().message() << "\n";
    return 1;
  }
  return 0;
}
