// ViT and CLIP's vision tower with an image classification head, in
// LibTorch, mirroring Hugging Face transformers' modeling_vit.py and
// modeling_clip.py module by module so that a checkpoint's parameter names
// map one to one.
#include "common/model/hf_vision.h"

#include <cmath>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/model/module_model.h"

namespace layerfl {
namespace {

namespace nn = torch::nn;

nn::LayerNorm Norm(const HfVisionConfig& c) {
  return nn::LayerNorm(
      nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}

// ACT2FN[hidden_act] for the activations the config accepts.
torch::Tensor Activation(const std::string& name, const torch::Tensor& x) {
  if (name == "quick_gelu") return x * torch::sigmoid(1.702 * x);
  return torch::gelu(x);  // "gelu": exact (erf)
}

// Upstream refuses pixel values of another size without
// interpolate_pos_encoding; so does this.
void CheckPixels(const HfVisionConfig& c, const torch::Tensor& pixels) {
  TORCH_CHECK(pixels.dim() == 4, "pixel values must be [B, C, H, W], got ",
              pixels.sizes());
  TORCH_CHECK(pixels.size(1) == c.num_channels, "pixel values have ",
              pixels.size(1), " channels, the model's num_channels is ",
              c.num_channels);
  TORCH_CHECK(pixels.size(2) == c.image_size && pixels.size(3) == c.image_size,
              "input image size (", pixels.size(2), "*", pixels.size(3),
              ") doesn't match the model's image_size (", c.image_size, "*",
              c.image_size, ")");
}

// Attention of upstream's eager_attention_forward, without a mask: scaled
// dot products, softmax in float32, dropout, weighted values. q, k, v are
// [B, heads, T, head_dim]; returns [B, T, heads * head_dim].
torch::Tensor EagerAttention(const torch::Tensor& q, const torch::Tensor& k,
                             const torch::Tensor& v, SeededDropout& dropout) {
  const double scaling = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor weights = torch::matmul(q, k.transpose(-1, -2)) * scaling;
  weights = torch::softmax(weights, -1, torch::kFloat32).to(q.scalar_type());
  weights = dropout(weights);
  torch::Tensor out = torch::matmul(weights, v).transpose(1, 2).contiguous();
  return out.reshape({out.size(0), out.size(1), -1});
}

// ViT, module by module as modeling_vit.py.

// ViTPatchEmbeddings.
struct ViTPatchEmbeddingsImpl : nn::Module {
  explicit ViTPatchEmbeddingsImpl(const HfVisionConfig& c)
      : projection(register_module(
            "projection",
            nn::Conv2d(nn::Conv2dOptions(c.num_channels, c.hidden_size,
                                         c.patch_size)
                           .stride(c.patch_size)))) {}
  // [B, C, H, W] -> [B, patches, hidden]
  torch::Tensor forward(const torch::Tensor& pixels) {
    return projection(pixels).flatten(2).transpose(1, 2);
  }
  nn::Conv2d projection;
};
TORCH_MODULE(ViTPatchEmbeddings);

// ViTEmbeddings (no mask token: ViTForImageClassification has none).
struct ViTEmbeddingsImpl : nn::Module {
  explicit ViTEmbeddingsImpl(const HfVisionConfig& c)
      : cls_token(register_parameter("cls_token",
                                     torch::randn({1, 1, c.hidden_size}))),
        patch_embeddings(
            register_module("patch_embeddings", ViTPatchEmbeddings(c))),
        position_embeddings(register_parameter(
            "position_embeddings",
            torch::randn({1, c.num_tokens(), c.hidden_size}))),
        dropout(register_module("dropout",
                                SeededDropout(c.hidden_dropout_prob))) {}

  torch::Tensor forward(const torch::Tensor& pixels) {
    torch::Tensor embeddings = patch_embeddings(pixels);
    torch::Tensor cls = cls_token.expand({pixels.size(0), -1, -1});
    embeddings = torch::cat({cls, embeddings}, 1);
    embeddings = embeddings + position_embeddings;
    return dropout(embeddings);
  }

  torch::Tensor cls_token;
  ViTPatchEmbeddings patch_embeddings;
  torch::Tensor position_embeddings;
  SeededDropout dropout;
};
TORCH_MODULE(ViTEmbeddings);

// ViTSelfAttention.
struct ViTSelfAttentionImpl : nn::Module {
  explicit ViTSelfAttentionImpl(const HfVisionConfig& c)
      : heads(c.num_attention_heads),
        head_dim(c.hidden_size / c.num_attention_heads),
        query(register_module(
            "query", nn::Linear(nn::LinearOptions(c.hidden_size, c.hidden_size)
                                    .bias(c.qkv_bias)))),
        key(register_module(
            "key", nn::Linear(nn::LinearOptions(c.hidden_size, c.hidden_size)
                                  .bias(c.qkv_bias)))),
        value(register_module(
            "value", nn::Linear(nn::LinearOptions(c.hidden_size, c.hidden_size)
                                    .bias(c.qkv_bias)))),
        dropout(register_module("dropout",
                                SeededDropout(c.attention_dropout))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    auto for_scores = [&](const torch::Tensor& y) {
      return y.view({x.size(0), x.size(1), heads, head_dim})
          .permute({0, 2, 1, 3});
    };
    return EagerAttention(for_scores(query(x)), for_scores(key(x)),
                          for_scores(value(x)), dropout);
  }

  int64_t heads, head_dim;
  nn::Linear query, key, value;
  SeededDropout dropout;
};
TORCH_MODULE(ViTSelfAttention);

// ViTSelfOutput: the residual is ViTLayer's.
struct ViTSelfOutputImpl : nn::Module {
  explicit ViTSelfOutputImpl(const HfVisionConfig& c)
      : dense(register_module("dense",
                              nn::Linear(c.hidden_size, c.hidden_size))),
        dropout(register_module("dropout",
                                SeededDropout(c.hidden_dropout_prob))) {}
  torch::Tensor forward(const torch::Tensor& x) { return dropout(dense(x)); }
  nn::Linear dense;
  SeededDropout dropout;
};
TORCH_MODULE(ViTSelfOutput);

// ViTAttention.
struct ViTAttentionImpl : nn::Module {
  explicit ViTAttentionImpl(const HfVisionConfig& c)
      : attention(register_module("attention", ViTSelfAttention(c))),
        output(register_module("output", ViTSelfOutput(c))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return output(attention(x));
  }
  ViTSelfAttention attention;
  ViTSelfOutput output;
};
TORCH_MODULE(ViTAttention);

// ViTIntermediate.
struct ViTIntermediateImpl : nn::Module {
  explicit ViTIntermediateImpl(const HfVisionConfig& c)
      : act(c.hidden_act),
        dense(register_module(
            "dense", nn::Linear(c.hidden_size, c.intermediate_size))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return Activation(act, dense(x));
  }
  std::string act;
  nn::Linear dense;
};
TORCH_MODULE(ViTIntermediate);

// ViTOutput: dense, dropout, the second residual.
struct ViTOutputImpl : nn::Module {
  explicit ViTOutputImpl(const HfVisionConfig& c)
      : dense(register_module(
            "dense", nn::Linear(c.intermediate_size, c.hidden_size))),
        dropout(register_module("dropout",
                                SeededDropout(c.hidden_dropout_prob))) {}
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& input) {
    return dropout(dense(h)) + input;
  }
  nn::Linear dense;
  SeededDropout dropout;
};
TORCH_MODULE(ViTOutput);

// ViTLayer: pre-norm attention and MLP blocks with residuals.
struct ViTLayerImpl : nn::Module {
  explicit ViTLayerImpl(const HfVisionConfig& c)
      : attention(register_module("attention", ViTAttention(c))),
        intermediate(register_module("intermediate", ViTIntermediate(c))),
        output(register_module("output", ViTOutput(c))),
        layernorm_before(register_module("layernorm_before", Norm(c))),
        layernorm_after(register_module("layernorm_after", Norm(c))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor hidden = attention(layernorm_before(x)) + x;
    return output(intermediate(layernorm_after(hidden)), hidden);
  }
  ViTAttention attention;
  ViTIntermediate intermediate;
  ViTOutput output;
  nn::LayerNorm layernorm_before, layernorm_after;
};
TORCH_MODULE(ViTLayer);

// ViTEncoder.
struct ViTEncoderImpl : nn::Module {
  explicit ViTEncoderImpl(const HfVisionConfig& c)
      : layer(register_module("layer", nn::ModuleList())) {
    for (int i = 0; i < c.num_hidden_layers; ++i) layer->push_back(ViTLayer(c));
  }
  torch::Tensor forward(torch::Tensor x) {
    for (const auto& m : *layer) x = m->as<ViTLayerImpl>()->forward(x);
    return x;
  }
  nn::ModuleList layer;
};
TORCH_MODULE(ViTEncoder);

// ViTModel(add_pooling_layer=False): the last hidden state after layernorm.
struct ViTModelImpl : nn::Module {
  explicit ViTModelImpl(const HfVisionConfig& c)
      : embeddings(register_module("embeddings", ViTEmbeddings(c))),
        encoder(register_module("encoder", ViTEncoder(c))),
        layernorm(register_module("layernorm", Norm(c))) {}
  torch::Tensor forward(const torch::Tensor& pixels) {
    return layernorm(encoder(embeddings(pixels)));
  }
  ViTEmbeddings embeddings;
  ViTEncoder encoder;
  nn::LayerNorm layernorm;
};
TORCH_MODULE(ViTModel);

// ViTForImageClassification.
class ViTForImageClassificationImpl : public nn::Module {
 public:
  ViTForImageClassificationImpl(const HfVisionConfig& c, int num_classes)
      : config_(c),
        vit_(register_module("vit", ViTModel(c))),
        classifier_(register_module("classifier",
                                    nn::Linear(c.hidden_size, num_classes))) {}

  torch::Tensor forward(const torch::Tensor& pixel_values) {
    CheckPixels(config_, pixel_values);
    const torch::Tensor pixels = pixel_values.to(
        vit_->embeddings->patch_embeddings->projection->weight.scalar_type());
    const torch::Tensor sequence = vit_(pixels);
    return classifier_(sequence.select(1, 0));
  }

 private:
  HfVisionConfig config_;
  ViTModel vit_;
  nn::Linear classifier_;
};

// CLIP's vision tower, module by module as modeling_clip.py.

// CLIPVisionEmbeddings.
struct CLIPVisionEmbeddingsImpl : nn::Module {
  explicit CLIPVisionEmbeddingsImpl(const HfVisionConfig& c)
      : class_embedding(register_parameter("class_embedding",
                                           torch::randn({c.hidden_size}))),
        patch_embedding(register_module(
            "patch_embedding",
            nn::Conv2d(nn::Conv2dOptions(c.num_channels, c.hidden_size,
                                         c.patch_size)
                           .stride(c.patch_size)
                           .bias(false)))),
        position_embedding(register_module(
            "position_embedding",
            nn::Embedding(c.num_tokens(), c.hidden_size))) {}

  torch::Tensor forward(const torch::Tensor& pixels) {
    const int64_t batch = pixels.size(0);
    torch::Tensor patch_embeds = patch_embedding(
        pixels.to(patch_embedding->weight.scalar_type()));
    patch_embeds = patch_embeds.flatten(2).transpose(1, 2);
    torch::Tensor class_embeds = class_embedding.expand({batch, 1, -1});
    torch::Tensor embeddings = torch::cat({class_embeds, patch_embeds}, 1);
    const torch::Tensor position_ids =
        torch::arange(embeddings.size(1),
                      torch::dtype(torch::kLong).device(embeddings.device()))
            .unsqueeze(0);
    return embeddings + position_embedding(position_ids);
  }

  torch::Tensor class_embedding;
  nn::Conv2d patch_embedding;
  nn::Embedding position_embedding;
};
TORCH_MODULE(CLIPVisionEmbeddings);

// CLIPAttention.
struct CLIPAttentionImpl : nn::Module {
  explicit CLIPAttentionImpl(const HfVisionConfig& c)
      : head_dim(c.hidden_size / c.num_attention_heads),
        k_proj(register_module("k_proj",
                               nn::Linear(c.hidden_size, c.hidden_size))),
        v_proj(register_module("v_proj",
                               nn::Linear(c.hidden_size, c.hidden_size))),
        q_proj(register_module("q_proj",
                               nn::Linear(c.hidden_size, c.hidden_size))),
        out_proj(register_module("out_proj",
                                 nn::Linear(c.hidden_size, c.hidden_size))),
        dropout(register_module("dropout",
                                SeededDropout(c.attention_dropout))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    auto split = [&](const torch::Tensor& y) {
      return y.view({x.size(0), x.size(1), -1, head_dim}).transpose(1, 2);
    };
    torch::Tensor out = EagerAttention(split(q_proj(x)), split(k_proj(x)),
                                       split(v_proj(x)), dropout);
    return out_proj(out);
  }

  int64_t head_dim;
  nn::Linear k_proj, v_proj, q_proj, out_proj;
  SeededDropout dropout;  // upstream's attention_dropout, applied functionally
};
TORCH_MODULE(CLIPAttention);

// CLIPMLP.
struct CLIPMLPImpl : nn::Module {
  explicit CLIPMLPImpl(const HfVisionConfig& c)
      : act(c.hidden_act),
        fc1(register_module("fc1",
                            nn::Linear(c.hidden_size, c.intermediate_size))),
        fc2(register_module("fc2",
                            nn::Linear(c.intermediate_size, c.hidden_size))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return fc2(Activation(act, fc1(x)));
  }
  std::string act;
  nn::Linear fc1, fc2;
};
TORCH_MODULE(CLIPMLP);

// CLIPEncoderLayer.
struct CLIPEncoderLayerImpl : nn::Module {
  explicit CLIPEncoderLayerImpl(const HfVisionConfig& c)
      : self_attn(register_module("self_attn", CLIPAttention(c))),
        layer_norm1(register_module("layer_norm1", Norm(c))),
        mlp(register_module("mlp", CLIPMLP(c))),
        layer_norm2(register_module("layer_norm2", Norm(c))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor hidden = x + self_attn(layer_norm1(x));
    return hidden + mlp(layer_norm2(hidden));
  }
  CLIPAttention self_attn;
  nn::LayerNorm layer_norm1;
  CLIPMLP mlp;
  nn::LayerNorm layer_norm2;
};
TORCH_MODULE(CLIPEncoderLayer);

// CLIPEncoder.
struct CLIPEncoderImpl : nn::Module {
  explicit CLIPEncoderImpl(const HfVisionConfig& c)
      : layers(register_module("layers", nn::ModuleList())) {
    for (int i = 0; i < c.num_hidden_layers; ++i) {
      layers->push_back(CLIPEncoderLayer(c));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    for (const auto& m : *layers) x = m->as<CLIPEncoderLayerImpl>()->forward(x);
    return x;
  }
  nn::ModuleList layers;
};
TORCH_MODULE(CLIPEncoder);

// CLIPVisionTransformer. forward returns the last hidden state; the pooled
// output (post_layernorm of the class token) is not needed by the
// classifier.
struct CLIPVisionTransformerImpl : nn::Module {
  explicit CLIPVisionTransformerImpl(const HfVisionConfig& c)
      : embeddings(register_module("embeddings", CLIPVisionEmbeddings(c))),
        pre_layrnorm(register_module("pre_layrnorm", Norm(c))),
        encoder(register_module("encoder", CLIPEncoder(c))),
        post_layernorm(register_module("post_layernorm", Norm(c))) {}
  torch::Tensor forward(const torch::Tensor& pixels) {
    return encoder(pre_layrnorm(embeddings(pixels)));
  }
  CLIPVisionEmbeddings embeddings;
  nn::LayerNorm pre_layrnorm;
  CLIPEncoder encoder;
  nn::LayerNorm post_layernorm;
};
TORCH_MODULE(CLIPVisionTransformer);

// CLIPForImageClassification.
class CLIPForImageClassificationImpl : public nn::Module {
 public:
  CLIPForImageClassificationImpl(const HfVisionConfig& c, int num_classes)
      : config_(c),
        vision_model_(
            register_module("vision_model", CLIPVisionTransformer(c))),
        classifier_(register_module("classifier",
                                    nn::Linear(c.hidden_size, num_classes))) {}

  torch::Tensor forward(const torch::Tensor& pixel_values) {
    CheckPixels(config_, pixel_values);
    torch::Tensor sequence = vision_model_(pixel_values);
    sequence = torch::mean(sequence.slice(1, 1), 1);
    return classifier_(sequence);
  }

 private:
  HfVisionConfig config_;
  CLIPVisionTransformer vision_model_;
  nn::Linear classifier_;
};

template <typename Impl>
absl::StatusOr<std::unique_ptr<Model>> Build(const HfVisionConfig& hf,
                                             const ModelConfig& config) {
  auto module = std::make_shared<Impl>(hf, config.num_classes);
  std::vector<NamedShape> shapes;
  for (const auto& item : module->named_parameters(true)) {
    shapes.push_back({item.key(), item.value().numel()});
  }
  absl::StatusOr<std::vector<LayerGroup>> groups =
      AssignGroups(shapes, HfVisionGroups(hf));
  if (!groups.ok()) return groups.status();
  absl::Status marked = MarkGroups(config.frozen, config.common, *groups);
  if (!marked.ok()) return marked;
  // Activations per example, as the built-in models count them.
  const int64_t t = hf.num_tokens(), d = hf.hidden_size,
                m = hf.intermediate_size, h = hf.num_attention_heads;
  const int64_t pixels =
      int64_t{hf.num_channels} * hf.image_size * hf.image_size;
  for (LayerGroup& g : *groups) {
    g.activation_floats_per_example =
        g.name == "embeddings" ? pixels + 2 * t * d
        : g.name == "head"     ? t * d + 2 * d + config.num_classes
                               : t * (8 * d + 2 * m) + 2 * h * t * t;
  }
  return std::unique_ptr<Model>(
      new ModuleModel<Impl>(std::move(module), std::move(*groups)));
}

}  // namespace

std::vector<GroupPatterns> HfVisionGroups(const HfVisionConfig& c) {
  std::vector<GroupPatterns> groups;
  if (c.clip()) {
    groups.push_back({"embeddings",
                      {"vision_model.embeddings.*",
                       "vision_model.pre_layrnorm.*"}});
  } else {
    groups.push_back({"embeddings", {"vit.embeddings.*"}});
  }
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    groups.push_back(
        {absl::StrCat("layer.", i),
         {c.clip() ? absl::StrCat("vision_model.encoder.layers.", i, ".*")
                   : absl::StrCat("vit.encoder.layer.", i, ".*")}});
  }
  groups.push_back({"head",
                    {c.clip() ? "vision_model.post_layernorm.*"
                              : "vit.layernorm.*",
                     "classifier.*"}});
  return groups;
}

absl::StatusOr<std::unique_ptr<Model>> CreateHfVision(
    const HfVisionConfig& hf, const ModelConfig& config, uint64_t seed) {
  try {
    torch::manual_seed(seed);
    if (hf.clip()) return Build<CLIPForImageClassificationImpl>(hf, config);
    return Build<ViTForImageClassificationImpl>(hf, config);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building the ", hf.model_type,
                                            " model: ",
                                            e.what_without_backtrace()));
  }
}

}  // namespace layerfl
