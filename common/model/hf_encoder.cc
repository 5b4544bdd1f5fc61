// BERT, RoBERTa and XLM-R encoders with a sequence classification head, in
// LibTorch, mirroring Hugging Face transformers' modeling_bert.py and
// modeling_roberta.py module by module so that a checkpoint's parameter
// names map one to one (bert.encoder.layer.0.attention.self.query.weight,
// ..., classifier.weight).
#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/model/hf_encoder.h"
#include "common/model/module_model.h"

namespace layerfl {
namespace {

namespace nn = torch::nn;

nn::LayerNorm Norm(const HfEncoderConfig& c) {
  return nn::LayerNorm(
      nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}

// BertEmbeddings / RobertaEmbeddings.
struct EmbeddingsImpl : nn::Module {
  explicit EmbeddingsImpl(const HfEncoderConfig& c)
      : roberta(c.roberta_style()),
        pad(c.pad_token_id),
        word_embeddings(register_module(
            "word_embeddings", nn::Embedding(c.vocab_size, c.hidden_size))),
        position_embeddings(register_module(
            "position_embeddings",
            nn::Embedding(c.max_position_embeddings, c.hidden_size))),
        token_type_embeddings(register_module(
            "token_type_embeddings",
            nn::Embedding(c.type_vocab_size, c.hidden_size))),
        LayerNorm(register_module("LayerNorm", Norm(c))),
        dropout(register_module("dropout",
                                SeededDropout(c.hidden_dropout_prob))) {}

  torch::Tensor forward(const torch::Tensor& ids) {
    torch::Tensor positions;
    if (roberta) {
      // Padding keeps position `pad`; real tokens count from pad + 1.
      const torch::Tensor real = ids.ne(pad).to(torch::kLong);
      positions = torch::cumsum(real, 1) * real + pad;
    } else {
      positions = torch::arange(ids.size(1), ids.options()).unsqueeze(0);
    }
    torch::Tensor x = word_embeddings(ids) + position_embeddings(positions) +
                      token_type_embeddings(torch::zeros_like(ids));
    return dropout(LayerNorm(x));
  }

  bool roberta;
  int64_t pad;
  nn::Embedding word_embeddings, position_embeddings, token_type_embeddings;
  nn::LayerNorm LayerNorm;
  SeededDropout dropout;
};
TORCH_MODULE(Embeddings);

// BertSelfAttention.
struct SelfAttentionImpl : nn::Module {
  explicit SelfAttentionImpl(const HfEncoderConfig& c)
      : heads(c.num_attention_heads),
        head_dim(c.hidden_size / c.num_attention_heads),
        query(register_module("query", nn::Linear(c.hidden_size, c.hidden_size))),
        key(register_module("key", nn::Linear(c.hidden_size, c.hidden_size))),
        value(register_module("value", nn::Linear(c.hidden_size, c.hidden_size))),
        dropout(register_module(
            "dropout", SeededDropout(c.attention_probs_dropout_prob))) {}

  // x [B, T, H]; additive_mask [B, 1, 1, T]: 0 for real tokens, the lowest
  // float for padding (as transformers' get_extended_attention_mask).
  torch::Tensor forward(const torch::Tensor& x,
                        const torch::Tensor& additive_mask) {
    const int64_t b = x.size(0), t = x.size(1);
    auto split = [&](const torch::Tensor& y) {
      return y.view({b, t, heads, head_dim}).permute({0, 2, 1, 3});
    };
    torch::Tensor q = split(query(x)), k = split(key(x)), v = split(value(x));
    torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) /
                           std::sqrt(static_cast<double>(head_dim));
    scores = scores + additive_mask;
    torch::Tensor probs = dropout(torch::softmax(scores, -1));
    return torch::matmul(probs, v).permute({0, 2, 1, 3}).reshape(
        {b, t, heads * head_dim});
  }

  int64_t heads, head_dim;
  nn::Linear query, key, value;
  SeededDropout dropout;
};
TORCH_MODULE(SelfAttention);

// BertSelfOutput and BertOutput: dense, dropout, LayerNorm of the residual.
struct ResidualOutputImpl : nn::Module {
  ResidualOutputImpl(const HfEncoderConfig& c, int in)
      : dense(register_module("dense", nn::Linear(in, c.hidden_size))),
        LayerNorm(register_module("LayerNorm", Norm(c))),
        dropout(register_module("dropout",
                                SeededDropout(c.hidden_dropout_prob))) {}
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& input) {
    return LayerNorm(dropout(dense(h)) + input);
  }
  nn::Linear dense;
  nn::LayerNorm LayerNorm;
  SeededDropout dropout;
};
TORCH_MODULE(ResidualOutput);

// BertAttention.
struct AttentionImpl : nn::Module {
  explicit AttentionImpl(const HfEncoderConfig& c)
      : self(register_module("self", SelfAttention(c))),
        output(register_module("output", ResidualOutput(c, c.hidden_size))) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) {
    return output(self(x, mask), x);
  }
  SelfAttention self;
  ResidualOutput output;
};
TORCH_MODULE(Attention);

// BertIntermediate.
struct IntermediateImpl : nn::Module {
  explicit IntermediateImpl(const HfEncoderConfig& c)
      : dense(register_module(
            "dense", nn::Linear(c.hidden_size, c.intermediate_size))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::gelu(dense(x));  // exact (erf), transformers' "gelu"
  }
  nn::Linear dense;
};
TORCH_MODULE(Intermediate);

// BertLayer.
struct LayerImpl : nn::Module {
  explicit LayerImpl(const HfEncoderConfig& c)
      : attention(register_module("attention", Attention(c))),
        intermediate(register_module("intermediate", Intermediate(c))),
        output(register_module("output",
                               ResidualOutput(c, c.intermediate_size))) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) {
    torch::Tensor a = attention(x, mask);
    return output(intermediate(a), a);
  }
  Attention attention;
  Intermediate intermediate;
  ResidualOutput output;
};
TORCH_MODULE(Layer);

// BertEncoder.
struct EncoderImpl : nn::Module {
  explicit EncoderImpl(const HfEncoderConfig& c)
      : layer(register_module("layer", nn::ModuleList())) {
    for (int i = 0; i < c.num_hidden_layers; ++i) layer->push_back(Layer(c));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask) {
    for (const auto& m : *layer) x = m->as<LayerImpl>()->forward(x, mask);
    return x;
  }
  nn::ModuleList layer;
};
TORCH_MODULE(Encoder);

// BertPooler.
struct PoolerImpl : nn::Module {
  explicit PoolerImpl(const HfEncoderConfig& c)
      : dense(register_module("dense",
                              nn::Linear(c.hidden_size, c.hidden_size))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::tanh(dense(x.select(1, 0)));
  }
  nn::Linear dense;
};
TORCH_MODULE(Pooler);

// BertModel (with its pooler) or RobertaModel (without: the classification
// head reads the first token itself).
struct BackboneImpl : nn::Module {
  explicit BackboneImpl(const HfEncoderConfig& c)
      : embeddings(register_module("embeddings", Embeddings(c))),
        encoder(register_module("encoder", Encoder(c))) {
    if (!c.roberta_style()) pooler = register_module("pooler", Pooler(c));
  }
  Embeddings embeddings;
  Encoder encoder;
  Pooler pooler{nullptr};
};
TORCH_MODULE(Backbone);

// RobertaClassificationHead.
struct RobertaHeadImpl : nn::Module {
  RobertaHeadImpl(const HfEncoderConfig& c, int num_classes)
      : dense(register_module("dense",
                              nn::Linear(c.hidden_size, c.hidden_size))),
        dropout(register_module("dropout",
                                SeededDropout(c.hidden_dropout_prob))),
        out_proj(register_module("out_proj",
                                 nn::Linear(c.hidden_size, num_classes))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::tanh(dense(dropout(x.select(1, 0))));
    return out_proj(dropout(h));
  }
  nn::Linear dense;
  SeededDropout dropout;
  nn::Linear out_proj;
};
TORCH_MODULE(RobertaHead);

// BertForSequenceClassification / RobertaForSequenceClassification.
class SequenceClassifierImpl : public nn::Module {
 public:
  SequenceClassifierImpl(const HfEncoderConfig& c, int num_classes)
      : config_(c) {
    backbone_ = register_module(c.model_type == "bert" ? "bert" : "roberta",
                                Backbone(c));
    if (c.roberta_style()) {
      roberta_head_ = register_module("classifier", RobertaHead(c, num_classes));
    } else {
      dropout_ = register_module("dropout",
                                 SeededDropout(c.hidden_dropout_prob));
      bert_head_ = register_module("classifier",
                                   nn::Linear(c.hidden_size, num_classes));
    }
  }

  // ids: int64 [B, T]; pad_token_id marks padding (not attended to).
  torch::Tensor forward(const torch::Tensor& ids) {
    const torch::Tensor real = ids.ne(config_.pad_token_id);
    torch::Tensor x = backbone_->embeddings(ids);
    const float lowest = std::numeric_limits<float>::lowest();
    const torch::Tensor additive =
        (1.0 - real.to(x.scalar_type())).mul(lowest).view(
            {ids.size(0), 1, 1, ids.size(1)});
    x = backbone_->encoder(x, additive);
    if (roberta_head_) return roberta_head_(x);
    return bert_head_(dropout_(backbone_->pooler(x)));
  }

 private:
  HfEncoderConfig config_;
  Backbone backbone_{nullptr};
  RobertaHead roberta_head_{nullptr};
  SeededDropout dropout_{nullptr};
  nn::Linear bert_head_{nullptr};
};


}  // namespace

std::vector<GroupPatterns> HfEncoderGroups(const HfEncoderConfig& c) {
  const std::string prefix = c.model_type == "bert" ? "bert." : "roberta.";
  std::vector<GroupPatterns> groups;
  groups.push_back({"embeddings", {prefix + "embeddings.*"}});
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    groups.push_back({absl::StrCat("layer.", i),
                      {absl::StrCat(prefix, "encoder.layer.", i, ".*")}});
  }
  groups.push_back({"head", {prefix + "pooler.*", "classifier.*"}});
  return groups;
}

absl::StatusOr<std::unique_ptr<Model>> CreateHfEncoder(
    const HfEncoderConfig& hf, const ModelConfig& config, uint64_t seed) {
  try {
    torch::manual_seed(seed);
    auto module =
        std::make_shared<SequenceClassifierImpl>(hf, config.num_classes);
    std::vector<NamedShape> shapes;
    for (const auto& item : module->named_parameters(true)) {
      shapes.push_back({item.key(), item.value().numel()});
    }
    absl::StatusOr<std::vector<LayerGroup>> groups =
        AssignGroups(shapes, HfEncoderGroups(hf));
    if (!groups.ok()) return groups.status();
    absl::Status marked = MarkGroups(config.frozen, config.common, *groups);
    if (!marked.ok()) return marked;
    // Activations per example, as the built-in encoder counts them.
    const int64_t t = config.max_len, d = hf.hidden_size,
                  m = hf.intermediate_size, h = hf.num_attention_heads;
    for (LayerGroup& g : *groups) {
      g.activation_floats_per_example =
          g.name == "embeddings" ? t * d
          : g.name == "head"     ? 2 * d + config.num_classes
                                 : t * (8 * d + 2 * m) + 2 * h * t * t;
    }
    return std::unique_ptr<Model>(new ModuleModel<SequenceClassifierImpl>(
        std::move(module), std::move(*groups)));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building the ", hf.model_type,
                                            " encoder: ",
                                            e.what_without_backtrace()));
  }
}

}  // namespace layerfl
