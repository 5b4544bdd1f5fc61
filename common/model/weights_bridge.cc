#include "common/model/weights_bridge.h"

#include <unordered_map>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/util/status_macros.h"

namespace layerfl {

Tensor32 ToTensor32(const std::string& name, const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kFloat).contiguous().cpu();
  Tensor32 out;
  out.name = name;
  out.shape.assign(c.sizes().begin(), c.sizes().end());
  const float* p = c.data_ptr<float>();
  out.values.assign(p, p + c.numel());
  return out;
}

at::Tensor FromTensor32(const Tensor32& t) {
  return at::from_blob(const_cast<float*>(t.values.data()), t.shape, at::kFloat)
      .clone();
}

namespace {

absl::StatusOr<ModelWeights> Export(Model& model, bool bind) {
  std::unordered_map<std::string, at::Tensor> by_name;
  for (auto& [name, t] : model.Parameters()) {
    if (t.scalar_type() != at::kFloat) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", name, "' is ", at::toString(t.scalar_type()),
          "; LayerFL ships float32 parameters only"));
    }
    by_name[name] = t;
  }
  ModelWeights out;
  for (const LayerGroup& g : model.groups()) {
    LayerWeights layer;
    layer.group = g.name;
    for (const std::string& p : g.param_names) {
      at::Tensor& param = by_name.at(p);
      layer.tensors.push_back(ToTensor32(p, param));
      if (bind) {
        // The values' buffer stays where it is when the Tensor32 moves.
        const Tensor32& t = layer.tensors.back();
        at::NoGradGuard no_grad;
        param.set_data(at::from_blob(const_cast<float*>(t.values.data()),
                                     t.shape, at::kFloat));
      }
    }
    out.layers.push_back(std::move(layer));
  }
  return out;
}

}  // namespace

absl::StatusOr<ModelWeights> ExportWeights(Model& model) {
  return Export(model, /*bind=*/false);
}

absl::StatusOr<ModelWeights> ExportAndBind(Model& model) {
  return Export(model, /*bind=*/true);
}

namespace {

// The checks of ImportLayers: groups, tensor names and shapes match.
absl::Status CheckLayers(Model& model, const ModelWeights& weights,
                         const std::vector<int>& layer_indices) {
  const std::vector<LayerGroup>& groups = model.groups();
  if (weights.layers.size() != groups.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights have ", weights.layers.size(),
                     " layer groups, the model has ", groups.size()));
  }
  std::unordered_map<std::string, at::Tensor> by_name;
  for (auto& [name, t] : model.Parameters()) by_name[name] = t;
  for (int li : layer_indices) {
    const LayerWeights& layer = weights.layers.at(li);
    const LayerGroup& g = groups[li];
    if (layer.group != g.name || layer.tensors.size() != g.param_names.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", li, ": weights hold '", layer.group, "' with ",
          layer.tensors.size(), " tensors, the model has '", g.name, "' with ",
          g.param_names.size()));
    }
    for (size_t i = 0; i < layer.tensors.size(); ++i) {
      const Tensor32& t = layer.tensors[i];
      const at::Tensor& p = by_name.at(g.param_names[i]);
      if (t.name != g.param_names[i] || !p.sizes().equals(t.shape) ||
          t.numel() != p.numel()) {
        const std::vector<int64_t> model_shape(p.sizes().begin(),
                                               p.sizes().end());
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", t.name, "' of shape [", absl::StrJoin(t.shape, ", "),
            "] does not match model parameter '", g.param_names[i],
            "' of shape [", absl::StrJoin(model_shape, ", "), "]"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ImportLayers(Model& model, const ModelWeights& weights,
                          const std::vector<int>& layer_indices) {
  RETURN_IF_ERROR(CheckLayers(model, weights, layer_indices));
  std::unordered_map<std::string, at::Tensor> by_name;
  for (auto& [name, t] : model.Parameters()) by_name[name] = t;
  at::NoGradGuard no_grad;
  for (int li : layer_indices) {
    const LayerWeights& layer = weights.layers[li];
    for (const Tensor32& t : layer.tensors) {
      // Into fresh storage, not through the old one: a model bound by
      // BindWeights must not write into the weights it was bound to.
      at::Tensor& p = by_name.at(t.name);
      p.set_data(at::from_blob(const_cast<float*>(t.values.data()), t.shape,
                               at::kFloat)
                     .to(p.scalar_type(), /*non_blocking=*/false,
                         /*copy=*/true));
    }
  }
  return absl::OkStatus();
}

absl::Status BindWeights(Model& model, const ModelWeights& weights) {
  std::vector<int> all(weights.layers.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  RETURN_IF_ERROR(CheckLayers(model, weights, all));
  std::unordered_map<std::string, at::Tensor> by_name;
  for (auto& [name, t] : model.Parameters()) by_name[name] = t;
  for (const auto& [name, p] : by_name) {
    if (p.scalar_type() != at::kFloat) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", name, "' is not float32"));
    }
  }
  at::NoGradGuard no_grad;
  for (const LayerWeights& layer : weights.layers) {
    for (const Tensor32& t : layer.tensors) {
      by_name.at(t.name).set_data(at::from_blob(
          const_cast<float*>(t.values.data()), t.shape, at::kFloat));
    }
  }
  return absl::OkStatus();
}

void ReleaseParameterValues(Model& model) {
  at::NoGradGuard no_grad;
  for (auto& [name, t] : model.Parameters()) {
    t.set_data(
        at::zeros({1}, t.options().requires_grad(false)).expand(t.sizes()));
  }
}

absl::Status ImportWeights(Model& model, const ModelWeights& weights) {
  std::vector<int> all(weights.layers.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  return ImportLayers(model, weights, all);
}

}  // namespace layerfl
