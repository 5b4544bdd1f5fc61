#include <cmath>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/model/model_internal.h"
#include "common/model/module_model.h"

namespace layerfl {
namespace {

namespace nn = torch::nn;

// Pre-norm Transformer block with explicit attention so that the Python
// benchmark twin (bench/trainer/vit.py) runs exactly the same operations.
struct BlockImpl : nn::Module {
  BlockImpl(int dim, int heads, int mlp_dim)
      : heads_(heads),
        ln1(register_module("ln1", nn::LayerNorm(nn::LayerNormOptions({dim})))),
        qkv(register_module("qkv", nn::Linear(dim, 3 * dim))),
        proj(register_module("proj", nn::Linear(dim, dim))),
        ln2(register_module("ln2", nn::LayerNorm(nn::LayerNormOptions({dim})))),
        fc1(register_module("fc1", nn::Linear(dim, mlp_dim))),
        fc2(register_module("fc2", nn::Linear(mlp_dim, dim))) {}

  // x: [B, T, D]; mask (optional): [B, T] bool, true = real token.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) {
    const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
    const int64_t hd = d / heads_;
    torch::Tensor h = qkv(ln1(x)).reshape({b, t, 3, heads_, hd}).permute(
        {2, 0, 3, 1, 4});
    torch::Tensor q = h[0], k = h[1], v = h[2];
    torch::Tensor att =
        torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(hd)));
    if (mask.defined()) {
      att = att.masked_fill(mask.logical_not().view({b, 1, 1, t}),
                            -std::numeric_limits<float>::infinity());
    }
    att = torch::softmax(att, -1);
    torch::Tensor out = torch::matmul(att, v).transpose(1, 2).reshape({b, t, d});
    torch::Tensor y = x + proj(out);
    return y + fc2(torch::gelu(fc1(ln2(y))));
  }

  int64_t heads_;
  nn::LayerNorm ln1;
  nn::Linear qkv, proj;
  nn::LayerNorm ln2;
  nn::Linear fc1, fc2;
};
TORCH_MODULE(Block);

// Shared by both built-in models: the blocks and the head (final LayerNorm +
// Linear), with groups embed / block<i> / head.
class EncoderBase : public nn::Module {
 protected:
  void AddBlocksAndHead(const ModelConfig& c) {
    blocks_ = register_module("blocks", nn::ModuleList());
    for (int i = 0; i < c.depth; ++i) {
      blocks_->push_back(Block(c.dim, c.heads, c.mlp_dim));
    }
    norm_ = register_module("norm", nn::LayerNorm(nn::LayerNormOptions({c.dim})));
    head_ = register_module("head", nn::Linear(c.dim, c.num_classes));
  }
  torch::Tensor RunBlocks(torch::Tensor x, const torch::Tensor& mask) {
    for (const auto& m : *blocks_) x = m->as<BlockImpl>()->forward(x, mask);
    return x;
  }

  nn::ModuleList blocks_{nullptr};
  nn::LayerNorm norm_{nullptr};
  nn::Linear head_{nullptr};
};

std::vector<GroupPatterns> EncoderGroups(int depth,
                                         std::vector<std::string> embed) {
  std::vector<GroupPatterns> groups;
  groups.push_back({"embed", std::move(embed)});
  for (int i = 0; i < depth; ++i) {
    groups.push_back({absl::StrCat("block", i), {absl::StrCat("blocks.", i, ".*")}});
  }
  groups.push_back({"head", {"norm.*", "head.*"}});
  return groups;
}

class VitImpl : public EncoderBase {
 public:
  explicit VitImpl(const ModelConfig& c) : patch_(c.patch_size) {
    const int64_t tokens = int64_t(c.image_size / c.patch_size) *
                           (c.image_size / c.patch_size);
    patch_embed_ = register_module(
        "patch_embed",
        nn::Linear(int64_t(c.channels) * c.patch_size * c.patch_size, c.dim));
    cls_token_ = register_parameter("cls_token",
                                    torch::randn({1, 1, c.dim}) * 0.02);
    pos_embed_ = register_parameter("pos_embed",
                                    torch::randn({1, tokens + 1, c.dim}) * 0.02);
    AddBlocksAndHead(c);
  }

  torch::Tensor forward(const torch::Tensor& images) {
    const int64_t b = images.size(0), ch = images.size(1);
    const int64_t gh = images.size(2) / patch_, gw = images.size(3) / patch_;
    // [B, C, gh, p, gw, p] -> [B, gh*gw, C*p*p]
    torch::Tensor patches =
        images.reshape({b, ch, gh, patch_, gw, patch_})
            .permute({0, 2, 4, 1, 3, 5})
            .reshape({b, gh * gw, ch * patch_ * patch_});
    torch::Tensor x = patch_embed_(patches);
    x = torch::cat({cls_token_.expand({b, 1, x.size(2)}), x}, 1) + pos_embed_;
    x = RunBlocks(x, torch::Tensor());
    return head_(norm_(x.select(1, 0)));
  }

 private:
  int64_t patch_;
  nn::Linear patch_embed_{nullptr};
  torch::Tensor cls_token_, pos_embed_;
};

class TextEncoderImpl : public EncoderBase {
 public:
  explicit TextEncoderImpl(const ModelConfig& c) {
    token_embed_ = register_module("token_embed",
                                   nn::Embedding(c.vocab_size, c.dim));
    pos_embed_ = register_parameter("pos_embed",
                                    torch::randn({1, c.max_len, c.dim}) * 0.02);
    AddBlocksAndHead(c);
  }

  // tokens: int64 [B, L], 0 = padding. Mean-pools the real tokens.
  torch::Tensor forward(const torch::Tensor& tokens) {
    const int64_t len = tokens.size(1);
    torch::Tensor mask = tokens.ne(0);
    // A row of padding only still attends to its first position.
    mask.select(1, 0).fill_(true);
    torch::Tensor x = token_embed_(tokens) + pos_embed_.narrow(1, 0, len);
    x = RunBlocks(x, mask);
    torch::Tensor m = mask.unsqueeze(-1).to(x.scalar_type());
    torch::Tensor pooled = (x * m).sum(1) / m.sum(1);
    return head_(norm_(pooled));
  }

 private:
  nn::Embedding token_embed_{nullptr};
  torch::Tensor pos_embed_;
};

// Floats kept for backward per example: T tokens of width D through a block
// store the LayerNorm inputs/outputs, q/k/v, attention probabilities (H T^2,
// twice: scores and softmax), the attention output, and the MLP's hidden
// activations before and after GELU.
void EstimateActivations(const ModelConfig& c, std::vector<LayerGroup>& groups) {
  const int64_t t = c.kind == "vit" ? int64_t(c.image_size / c.patch_size) *
                                              (c.image_size / c.patch_size) +
                                          1
                                    : c.max_len;
  const int64_t d = c.dim, m = c.mlp_dim, h = c.heads;
  for (LayerGroup& g : groups) {
    if (g.name == "embed") {
      g.activation_floats_per_example = t * d;
    } else if (g.name == "head") {
      g.activation_floats_per_example = 2 * d + c.num_classes;
    } else {
      g.activation_floats_per_example = t * (8 * d + 2 * m) + 2 * h * t * t;
    }
  }
}

template <typename Impl>
absl::StatusOr<std::unique_ptr<Model>> Finish(
    std::shared_ptr<Impl> module, const ModelConfig& config,
    std::vector<GroupPatterns> declared) {
  std::vector<NamedShape> shapes;
  for (const auto& item : module->named_parameters(true)) {
    shapes.push_back({item.key(), item.value().numel()});
  }
  absl::StatusOr<std::vector<LayerGroup>> groups =
      AssignGroups(shapes, declared);
  if (!groups.ok()) return groups.status();
  absl::Status marked = MarkGroups(config.frozen, config.common, *groups);
  if (!marked.ok()) return marked;
  EstimateActivations(config, *groups);
  return std::unique_ptr<Model>(
      new ModuleModel<Impl>(std::move(module), std::move(*groups)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> CreateBuiltinModel(
    const ModelConfig& config, uint64_t seed) {
  torch::manual_seed(seed);
  if (config.kind == "vit") {
    auto module = std::make_shared<VitImpl>(config);
    return Finish(std::move(module), config,
                  EncoderGroups(config.depth,
                                {"patch_embed.*", "cls_token", "pos_embed"}));
  }
  if (config.kind == "text") {
    auto module = std::make_shared<TextEncoderImpl>(config);
    return Finish(std::move(module), config,
                  EncoderGroups(config.depth, {"token_embed.*", "pos_embed"}));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("model.kind: not a built-in model, got '", config.kind, "'"));
}

}  // namespace layerfl
