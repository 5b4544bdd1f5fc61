#include "common/tokenizers/spm_model.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/tokenizers/spm_shim.h"

namespace layerfl::tokenizers::internal {

struct SpmModel::Api {
  LayerflSpmLoadFn load = nullptr;
  LayerflSpmFreeFn free = nullptr;
  LayerflSpmEncodeFn encode = nullptr;
  LayerflSpmSizeFn size = nullptr;
  LayerflSpmIdToPieceFn id_to_piece = nullptr;
};

namespace {

constexpr char kShimName[] = "liblayerfl_spm_shim.so";

// Sanitizer runtimes refuse RTLD_DEEPBIND; their builds load the shim
// without it (and so without the isolation from a loaded system protobuf).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL;
#else
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

void AppendChars(void* context, const char* data, size_t size) {
  static_cast<std::string*>(context)->append(data, size);
}

void AppendInts(void* context, const int* data, size_t size) {
  static_cast<std::vector<int>*>(context)->assign(data, data + size);
}

std::vector<std::string> ShimCandidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("LAYERFL_SPM_SHIM"); env && *env) {
    out.push_back(env);
  }
  std::error_code ec;
  const std::filesystem::path exe =
      std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) out.push_back((exe.parent_path() / kShimName).string());
#ifdef LAYERFL_SPM_SHIM_BUILD_PATH
  out.push_back(LAYERFL_SPM_SHIM_BUILD_PATH);
#endif
  return out;
}

template <typename Fn>
bool Resolve(void* handle, const char* name, Fn* fn) {
  *fn = reinterpret_cast<Fn>(dlsym(handle, name));
  return *fn != nullptr;
}

}  // namespace

absl::StatusOr<const SpmModel::Api*> SpmModel::LoadApiOnce() {
  std::vector<std::string> tried;
  for (const std::string& path : ShimCandidates()) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      tried.push_back(absl::StrCat(path, " (missing)"));
      continue;
    }
    void* handle = dlopen(path.c_str(), kDlopenFlags);
    if (handle == nullptr) {
      const char* why = dlerror();
      tried.push_back(
          absl::StrCat(path, " (", why ? why : "dlopen failed", ")"));
      continue;
    }
    auto api = std::make_unique<Api>();
    if (!Resolve(handle, "layerfl_spm_load", &api->load) ||
        !Resolve(handle, "layerfl_spm_free", &api->free) ||
        !Resolve(handle, "layerfl_spm_encode", &api->encode) ||
        !Resolve(handle, "layerfl_spm_size", &api->size) ||
        !Resolve(handle, "layerfl_spm_id_to_piece", &api->id_to_piece)) {
      dlclose(handle);
      tried.push_back(absl::StrCat(path, " (missing functions)"));
      continue;
    }
    return api.release();  // The shim stays loaded for the process's life.
  }
  return absl::FailedPreconditionError(
      absl::StrCat("SentencePiece support (", kShimName,
                   ") not found; set LAYERFL_SPM_SHIM. Tried: ",
                   absl::StrJoin(tried, "; ")));
}

absl::StatusOr<const SpmModel::Api*> SpmModel::LoadApi() {
  static const auto* const api = new absl::StatusOr<const Api*>(LoadApiOnce());
  return *api;
}

absl::StatusOr<std::unique_ptr<SpmModel>> SpmModel::Load(
    const std::string& path) {
  absl::StatusOr<const Api*> api = LoadApi();
  if (!api.ok()) return api.status();
  std::string error;
  void* model = (*api)->load(path.c_str(), AppendChars, &error);
  if (model == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a SentencePiece model: ", error));
  }
  return std::unique_ptr<SpmModel>(new SpmModel(*api, model));
}

SpmModel::~SpmModel() { api_->free(model_); }

absl::StatusOr<std::vector<int>> SpmModel::Encode(
    absl::string_view text) const {
  std::vector<int> ids;
  std::string error;
  if (api_->encode(model_, text.data(), text.size(), AppendInts, &ids,
                   AppendChars, &error) != 0) {
    return absl::InternalError(absl::StrCat("SentencePiece failed: ", error));
  }
  return ids;
}

int SpmModel::size() const { return api_->size(model_); }

std::string SpmModel::IdToPiece(int id) const {
  std::string piece;
  api_->id_to_piece(model_, id, AppendChars, &piece);
  return piece;
}

}  // namespace layerfl::tokenizers::internal
