#include "server/export/export.h"

#include <filesystem>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/config/config.h"
#include "common/model/hf_model.h"
#include "common/model/weights_bridge.h"
#include "common/util/status_macros.h"
#include "server/checkpoint/checkpoint_store.h"
#include "server/setup/run_setup.h"

namespace layerfl {

absl::Status ExportRun(const ExportOptions& options, std::string* summary) {
  const std::filesystem::path run_dir(options.run_dir);
  const std::string config_path = (run_dir / kRunConfigFile).string();
  if (!std::filesystem::exists(config_path)) {
    return absl::NotFoundError(absl::StrCat(
        "--run_dir: '", config_path,
        "' does not exist (is it a run directory of layerfl-coordinator or "
        "layerfl-sim?)"));
  }
  ASSIGN_OR_RETURN(RunConfig config, LoadRunConfig(config_path));
  if (config.model.kind != "hf") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.kind: layerfl-export writes Hugging Face checkpoints; the run's "
        "model.kind is '",
        config.model.kind, "'"));
  }
  const std::string hf_dir =
      options.hf_dir.empty() ? config.model.hf_dir : options.hf_dir;
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> store,
                   CheckpointStore::Open((run_dir / "checkpoints").string(),
                                         config.federated.keep_checkpoints));
  ASSIGN_OR_RETURN(std::optional<Checkpoint> latest, store->LoadLatest());
  if (!latest.has_value()) {
    return absl::NotFoundError(absl::StrCat(
        "--run_dir: '", options.run_dir,
        "' holds no committed round yet (checkpoints/ is empty)"));
  }
  HfLoadReport report;
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                   LoadHfModel(hf_dir, config.model, config.seed, &report));
  absl::Status imported = ImportWeights(*model, latest->weights);
  if (!imported.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the run's weights do not fit the checkpoint in '", hf_dir,
        "': ", imported.message()));
  }
  RETURN_IF_ERROR(ExportHfModel(*model, report, hf_dir, options.out_dir));
  if (summary != nullptr) {
    *summary = absl::StrCat("round ", latest->round, " of ", options.run_dir,
                            " (", latest->weights.numel(),
                            " parameters) written to ", options.out_dir,
                            " in the layout of ", hf_dir);
  }
  return absl::OkStatus();
}

}  // namespace layerfl
