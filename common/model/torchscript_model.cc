#include <filesystem>

#include <torch/script.h>

#include "absl/strings/str_cat.h"
#include "common/model/model_internal.h"

namespace layerfl {
namespace {

class TorchScriptModel : public Model {
 public:
  TorchScriptModel(torch::jit::Module module, std::vector<LayerGroup> groups)
      : module_(std::move(module)), groups_(std::move(groups)) {}

  const std::vector<LayerGroup>& groups() const override { return groups_; }
  NamedTensors Parameters() override {
    NamedTensors out;
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
      out.emplace_back(p.name, p.value);
    }
    return out;
  }
  at::Tensor Forward(const at::Tensor& input) override {
    return module_.forward({input}).toTensor();
  }
  void SetTraining(bool training) override { module_.train(training); }

 private:
  torch::jit::Module module_;
  std::vector<LayerGroup> groups_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadTorchScriptModel(
    const ModelConfig& config) {
  const std::string& path = config.torchscript_path;
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(
        absl::StrCat("model.torchscript_path: no such file '", path, "'"));
  }
  torch::jit::Module module;
  try {
    module = torch::jit::load(path);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.torchscript_path: cannot load '", path,
                     "' as TorchScript: ", e.what_without_backtrace()));
  }
  std::vector<NamedShape> shapes;
  for (const auto& p : module.named_parameters(true)) {
    shapes.push_back({p.name, p.value.numel()});
  }
  std::vector<GroupPatterns> declared;
  for (const LayerGroupPattern& g : config.groups) {
    declared.push_back({g.name, g.patterns});
  }
  absl::StatusOr<std::vector<LayerGroup>> groups = AssignGroups(shapes, declared);
  if (!groups.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.groups: ", groups.status().message(), " (in '", path, "')"));
  }
  absl::Status marked = MarkGroups(config.frozen, config.common, *groups);
  if (!marked.ok()) return marked;
  return std::unique_ptr<Model>(
      new TorchScriptModel(std::move(module), std::move(*groups)));
}

}  // namespace layerfl
