#ifndef LAYERFL_COMMON_TOKENIZERS_SPM_MODEL_H_
#define LAYERFL_COMMON_TOKENIZERS_SPM_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// A SentencePiece model, through liblayerfl_spm_shim.so (see spm_shim.h for
// why SentencePiece is kept in its own dlopen()ed object). Internal to
// common/tokenizers.
namespace layerfl::tokenizers::internal {

class SpmModel {
 public:
  // Loads the shim on first use from, in order: $LAYERFL_SPM_SHIM, the
  // directory of the running executable, the build tree. FailedPrecondition
  // when none loads; InvalidArgument naming `path` when SentencePiece cannot
  // load the model.
  static absl::StatusOr<std::unique_ptr<SpmModel>> Load(
      const std::string& path);
  ~SpmModel();

  SpmModel(const SpmModel&) = delete;
  SpmModel& operator=(const SpmModel&) = delete;

  // SentencePiece ids of `text`. Thread-safe.
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text) const;

  int size() const;
  // The piece of `id`; empty when out of range.
  std::string IdToPiece(int id) const;

 private:
  struct Api;
  // The shim's functions, loaded on first use and kept for the process's
  // life.
  static absl::StatusOr<const Api*> LoadApi();
  static absl::StatusOr<const Api*> LoadApiOnce();
  SpmModel(const Api* api, void* model) : api_(api), model_(model) {}

  const Api* api_;
  void* model_;
};

}  // namespace layerfl::tokenizers::internal

#endif  // LAYERFL_COMMON_TOKENIZERS_SPM_MODEL_H_
