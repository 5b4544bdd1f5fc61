#ifndef LAYERFL_COMMON_MODEL_MODULE_MODEL_H_
#define LAYERFL_COMMON_MODEL_MODULE_MODEL_H_

// The Model interface over a LibTorch module; private to common/model (the
// built-in models and the Hugging Face encoders). Includes torch/torch.h.

#include <memory>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "common/model/model.h"

namespace layerfl {

// Dropout that draws its masks from the calling thread's generator
// (SeedForwardRandomness, model.h) instead of LibTorch's global one, so that
// a client's training draws the same masks in any process and on any thread.
// As nn::Dropout otherwise: zeroes with probability p and scales by
// 1 / (1 - p) in training mode, the identity in eval mode.
struct SeededDropoutImpl : torch::nn::Module {
  explicit SeededDropoutImpl(double p) : p(p) {}
  torch::Tensor forward(const torch::Tensor& x);
  double p;
};
TORCH_MODULE(SeededDropout);

// `Impl` is a torch::nn::Module with forward(const at::Tensor&).
template <typename Impl>
class ModuleModel : public Model {
 public:
  ModuleModel(std::shared_ptr<Impl> module, std::vector<LayerGroup> groups)
      : module_(std::move(module)), groups_(std::move(groups)) {}

  const std::vector<LayerGroup>& groups() const override { return groups_; }
  NamedTensors Parameters() override {
    NamedTensors out;
    for (const auto& item : module_->named_parameters(/*recurse=*/true)) {
      out.emplace_back(item.key(), item.value());
    }
    return out;
  }
  at::Tensor Forward(const at::Tensor& input) override {
    return module_->forward(input);
  }
  void SetTraining(bool training) override { module_->train(training); }

 private:
  std::shared_ptr<Impl> module_;
  std::vector<LayerGroup> groups_;
};

}  // namespace layerfl

#endif  // LAYERFL_COMMON_MODEL_MODULE_MODEL_H_
