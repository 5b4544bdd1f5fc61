#include "common/trainer/trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/model/weights_bridge.h"
#include "common/trainer/examples.h"
#include "common/trainer/pretrain.h"
#include "tests/trainer_fixtures.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;

TEST(ExamplesTest, ImagesStayBytesAndBatchesNormaliseAsBefore) {
  ImageSet set;  // 1 channel, Fashion-MNIST's mean and std
  set.rows = 2;
  set.cols = 3;
  for (int i = 0; i < 4 * 6; ++i) set.pixels.push_back(static_cast<uint8_t>(i * 11));
  set.labels = {0, 1, 2, 3};
  Examples e = ImagesToExamples(set);
  EXPECT_EQ(e.inputs.scalar_type(), torch::kByte);
  EXPECT_EQ(e.inputs.sizes(), (std::vector<int64_t>{4, 1, 2, 3}));
  // Bit-identical to normalising the whole set up front, as float.
  torch::Tensor whole =
      (e.inputs.to(torch::kFloat) / 255.0 - kFashionMnistMean) / kFashionMnistStd;
  torch::Tensor idx = torch::tensor({3, 0, 2}, torch::kLong);
  EXPECT_TRUE(torch::equal(e.Inputs(idx), whole.index_select(0, idx)));
  EXPECT_TRUE(torch::equal(e.Inputs(1, 2), whole.narrow(0, 1, 2)));
  // Per-channel mean and std.
  ImageSet rgb;
  rgb.channels = 3;
  rgb.rows = rgb.cols = 1;
  rgb.pixels = {255, 0, 51};
  rgb.labels = {0};
  rgb.mean = {0.5, 0.0, 0.2};
  rgb.std = {0.5, 2.0, 0.1};
  torch::Tensor x = ImagesToExamples(rgb).Inputs(0, 1);
  EXPECT_EQ(x.scalar_type(), torch::kFloat);
  EXPECT_FLOAT_EQ(x[0][0][0][0].item<float>(), 1.0f);   // (1 - 0.5) / 0.5
  EXPECT_FLOAT_EQ(x[0][1][0][0].item<float>(), 0.0f);   // (0 - 0) / 2
  EXPECT_NEAR(x[0][2][0][0].item<float>(), 0.0f, 1e-6);  // (0.2 - 0.2) / 0.1
  // Other inputs pass through.
  Examples tokens;
  tokens.inputs = torch::tensor({{4, 5}, {6, 7}}, torch::kLong);
  tokens.labels = torch::tensor({0, 1}, torch::kLong);
  EXPECT_TRUE(torch::equal(tokens.Inputs(1, 1), tokens.inputs.narrow(0, 1, 1)));
}

TEST(SelectiveTrainerTest, FrozenGroupsBitIdenticalTrainedGroupsMove) {
  auto model = CreateModel(SmallVit(), 3);
  ASSERT_TRUE(model.ok());
  NamedTensors before = CloneParameters(**model);
  SelectiveTrainer trainer(Sgd(5, 8), ImportanceConfig());
  auto result =
      trainer.Train(**model, RandomImages(32, 1), {"block1", "head"}, 11);
  ASSERT_TRUE(result.ok()) << result.status();
  NamedTensors after = CloneParameters(**model);
  int moved = 0, identical = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    const std::string& name = before[i].first;
    const bool trained = name.rfind("blocks.1.", 0) == 0 ||
                         name.rfind("head.", 0) == 0 ||
                         name.rfind("norm.", 0) == 0;
    if (trained) {
      EXPECT_FALSE(torch::equal(before[i].second, after[i].second)) << name;
      ++moved;
    } else {
      EXPECT_TRUE(torch::equal(before[i].second, after[i].second)) << name;
      ++identical;
    }
  }
  EXPECT_EQ(moved, 12 + 4);  // a block has 12 tensors; norm + head 4
  EXPECT_GT(identical, 0);
  // requires_grad is restored everywhere and no stray gradients remain.
  for (auto& [name, t] : (*model)->Parameters()) {
    EXPECT_TRUE(t.requires_grad()) << name;
    EXPECT_FALSE(t.grad().defined()) << name;
  }
}

TEST(SelectiveTrainerTest, NoGradientComputedForUnselectedLayers) {
  auto model = CreateModel(SmallVit(), 3);
  SelectiveTrainer trainer(Sgd(1, 4), ImportanceConfig());
  // Hook: a gradient hook on a frozen parameter must never fire.
  bool fired = false;
  auto params = (*model)->Parameters();
  params[0].second.register_hook([&](torch::Tensor g) {
    fired = true;
    return g;
  });
  ASSERT_TRUE(trainer.Train(**model, RandomImages(8, 2), {"head"}, 1).ok());
  EXPECT_FALSE(fired);
}

TEST(SelectiveTrainerTest, DeltaEqualsLocalMinusGlobalExactly) {
  auto model = CreateModel(SmallVit(), 4);
  NamedTensors global = CloneParameters(**model);
  SelectiveTrainer trainer(Sgd(3, 8), ImportanceConfig());
  auto result =
      trainer.Train(**model, RandomImages(16, 3), {"head", "embed"}, 5);
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result->deltas.size(), 2u);
  EXPECT_EQ(result->deltas[0].group,
            "embed");  // model order, not request order
  EXPECT_EQ(result->deltas[1].group, "head");
  std::map<std::string, torch::Tensor> g(global.begin(), global.end());
  std::map<std::string, torch::Tensor> local;
  for (auto& [n, t] : CloneParameters(**model)) local[n] = t;
  int64_t count = 0;
  for (const GroupDelta& d : result->deltas) {
    for (const auto& [name, delta] : d.tensors) {
      EXPECT_TRUE(torch::equal(delta, local[name] - g[name])) << name;
      count += delta.numel();
    }
  }
  EXPECT_EQ(count, result->trained_params);
  EXPECT_EQ(count, (*model)->groups()[0].num_params +
                       (*model)->groups()[4].num_params);
}

TEST(SelectiveTrainerTest, LossDecreasesOnFixedBatch) {
  auto model = CreateModel(SmallVit(), 5);
  // batch_size == N: every step sees the same 16 examples.
  TrainConfig t = Sgd(40, 16);
  t.optimizer = "adam";
  t.lr = 3e-3;
  SelectiveTrainer trainer(t, ImportanceConfig());
  std::vector<std::string> all;
  for (const LayerGroup& gr : (*model)->groups()) all.push_back(gr.name);
  auto result = trainer.Train(**model, RandomImages(16, 6), all, 1);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->steps, 40);
  EXPECT_LT(result->last_loss, 0.5 * result->first_loss)
      << result->first_loss << " -> " << result->last_loss;
}

TEST(SelectiveTrainerTest, EpochsOverrideSteps) {
  auto model = CreateModel(SmallVit(), 5);
  TrainConfig t = Sgd(1000, 8);
  t.local_epochs = 2;
  SelectiveTrainer trainer(t, ImportanceConfig());
  auto result = trainer.Train(**model, RandomImages(20, 6), {"head"}, 1);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->steps, 2 * 3);  // ceil(20 / 8) batches per epoch
}

TEST(SelectiveTrainerTest, BadGroupsRefused) {
  ModelConfig c = SmallVit();
  c.frozen = {"embed"};
  auto model = CreateModel(c, 1);
  NamedTensors before = CloneParameters(**model);
  SelectiveTrainer trainer(Sgd(1, 4), ImportanceConfig());
  Examples data = RandomImages(8, 1);
  EXPECT_THAT(trainer.Train(**model, data, {"block7"}, 1).status().message(),
              HasSubstr("unknown layer group 'block7'"));
  EXPECT_THAT(trainer.Train(**model, data, {"embed"}, 1).status().message(),
              HasSubstr("layer group 'embed' is frozen"));
  EXPECT_THAT(
      trainer.Train(**model, data, {"head", "head"}, 1).status().message(),
      HasSubstr("'head' listed twice"));
  EXPECT_THAT(
      trainer.Train(**model, Examples(), {"head"}, 1).status().message(),
      HasSubstr("no local examples"));
  NamedTensors after = CloneParameters(**model);
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(torch::equal(before[i].second, after[i].second));
  }
}

TEST(SelectiveTrainerTest, SameSeedSameDelta) {
  SelectiveTrainer trainer(Sgd(4, 4), ImportanceConfig());
  Examples data = RandomImages(16, 9);
  auto m1 = CreateModel(SmallVit(), 1);
  auto m2 = CreateModel(SmallVit(), 1);
  auto r1 = trainer.Train(**m1, data, {"block2", "head"}, 42);
  auto r2 = trainer.Train(**m2, data, {"block2", "head"}, 42);
  ASSERT_TRUE(r1.ok() && r2.ok());
  for (size_t g = 0; g < r1->deltas.size(); ++g) {
    for (size_t i = 0; i < r1->deltas[g].tensors.size(); ++i) {
      EXPECT_TRUE(torch::equal(r1->deltas[g].tensors[i].second,
                               r2->deltas[g].tensors[i].second));
    }
  }
}

// A 2 -> 2 linear classifier with groups "w" (weight) and "b" (bias), so that
// importance scores can be computed by hand.
class TinyLinear : public Model {
 public:
  TinyLinear() : linear_(2, 2) {
    torch::NoGradGuard g;
    linear_->weight.fill_(1.0);  // equal logits for every input
    linear_->bias.fill_(1.0);
    groups_ = {{"w", {"weight"}, 4, false, false, 0},
               {"b", {"bias"}, 2, false, false, 0}};
  }
  const std::vector<LayerGroup>& groups() const override { return groups_; }
  NamedTensors Parameters() override {
    return {{"weight", linear_->weight}, {"bias", linear_->bias}};
  }
  at::Tensor Forward(const at::Tensor& x) override { return linear_(x); }
  void SetTraining(bool) override {}

 private:
  torch::nn::Linear linear_;
  std::vector<LayerGroup> groups_;
};

TEST(ImportanceTest, HandComputedScores) {
  // Logits are equal, so softmax = [0.5, 0.5] and dL/dz = p - onehot.
  // x1 = [1, 2], y1 = 0: dz = [-0.5, 0.5]; gW1 = [[-0.5, -1], [0.5, 1]]; gb1 =
  // [-0.5, 0.5] x2 = [3, -1], y2 = 1: dz = [0.5, -0.5]; gW2 = [[1.5, -0.5],
  // [-1.5, 0.5]]; gb2 = -gb1 mean gW = [[0.5, -0.75], [-0.5, 0.75]] -> ||m||^2
  // = 1.625; mean gb = 0. per-element variance of W = ((gW1 - gW2) / 2)^2 = 1,
  // 1/16, 1, 1/16 -> 2.125 variance of b: 0.25 + 0.25 = 0.5.  ||W|| = 2, ||b||
  // = sqrt(2).
  Examples data{torch::tensor({{1.0f, 2.0f}, {3.0f, -1.0f}}),
                torch::tensor({0, 1}, torch::kLong)};
  TrainConfig t;
  t.batch_size = 1;
  ImportanceConfig imp;
  imp.batches = 2;  // one epoch: each example once, in a seeded order
  SelectiveTrainer trainer(t, imp);
  TinyLinear model;
  auto scores = trainer.Importance(model, data, 3, nullptr, 0, "snr");
  ASSERT_TRUE(scores.ok()) << scores.status();
  ASSERT_EQ(scores->size(), 2u);
  EXPECT_EQ((*scores)[0].group, "w");
  EXPECT_NEAR((*scores)[0].sq_grad_norm, 1.625, 1e-6);
  EXPECT_NEAR((*scores)[0].rgn, std::sqrt(1.625) / 2.0, 1e-6);
  EXPECT_NEAR((*scores)[0].snr, 1.625 / 2.125, 1e-6);
  EXPECT_NEAR((*scores)[1].sq_grad_norm, 0.0, 1e-12);
  EXPECT_NEAR((*scores)[1].rgn, 0.0, 1e-6);
  EXPECT_NEAR((*scores)[1].snr, 0.0, 1e-9);
  EXPECT_EQ(ReportedScores(*scores, "snr")[0], (*scores)[0].snr);
  EXPECT_EQ(ReportedScores(*scores, "sq_grad_norm")[0],
            (*scores)[0].sq_grad_norm);
  // The default metric (importance.metric: sq_grad_norm) sums the gradients
  // in .grad and keeps no variance: the same ||m||^2 and rgn, snr 0.
  auto plain = trainer.Importance(model, data, 3);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_NEAR((*plain)[0].sq_grad_norm, 1.625, 1e-6);
  EXPECT_NEAR((*plain)[0].rgn, std::sqrt(1.625) / 2.0, 1e-6);
  EXPECT_EQ((*plain)[0].snr, 0.0);
  // Scoring does not move the weights.
  EXPECT_TRUE(torch::equal(model.Parameters()[0].second, torch::ones({2, 2})));
  EXPECT_THAT(
      std::string(
          trainer.Importance(model, data, 3, nullptr, 0, "norm").status().message()),
      HasSubstr("unknown metric 'norm'"));
}

// The sq_grad_norm pass (gradients summed over the batches in float32 .grad)
// against the snr pass, which sums every batch's gradient in double as every
// metric did before: with one batch the same sum, so the same scores bit for
// bit; with several the float32 sum rounds differently (relative 1e-6).
TEST(ImportanceTest, SqGradNormPassMatchesTheDoubleSums) {
  for (int batches : {1, 4}) {
    auto model = CreateModel(SmallVit(), 5);
    ASSERT_TRUE(model.ok());
    ImportanceConfig imp;
    imp.batches = batches;
    SelectiveTrainer trainer(Sgd(1, 8), imp);
    const Examples data = RandomImages(64, 6);
    auto sq = trainer.Importance(**model, data, 9, nullptr, 0, "sq_grad_norm");
    auto rgn = trainer.Importance(**model, data, 9, nullptr, 0, "rgn");
    auto snr = trainer.Importance(**model, data, 9, nullptr, 0, "snr");
    ASSERT_TRUE(sq.ok() && rgn.ok() && snr.ok());
    ASSERT_EQ(sq->size(), snr->size());
    for (size_t l = 0; l < sq->size(); ++l) {
      SCOPED_TRACE(absl::StrCat((*sq)[l].group, ", batches ", batches));
      EXPECT_EQ((*sq)[l].sq_grad_norm, (*rgn)[l].sq_grad_norm);
      EXPECT_EQ((*sq)[l].rgn, (*rgn)[l].rgn);
      ASSERT_GT((*snr)[l].sq_grad_norm, 0.0);
      if (batches == 1) {
        EXPECT_EQ((*sq)[l].sq_grad_norm, (*snr)[l].sq_grad_norm);
        EXPECT_EQ((*sq)[l].rgn, (*snr)[l].rgn);
      } else {
        EXPECT_NEAR((*sq)[l].sq_grad_norm / (*snr)[l].sq_grad_norm, 1.0, 1e-6);
        EXPECT_NEAR((*sq)[l].rgn / (*snr)[l].rgn, 1.0, 1e-6);
      }
    }
  }
}

// importance.source train: the first local step's gradients are taken at
// the global weights, so its scores of the trained groups are, bit for bit,
// what a one-batch scoring pass computes on the same batch (same seed and
// batch size), whether the pass starts at the lowest trained group or
// scores everything, and with gradient clipping on (scores come before it).
TEST(ImportanceTest, FirstTrainingStepScoresEqualAOneBatchPassBitForBit) {
  for (bool clip : {false, true}) {
    TrainConfig t = Sgd(3, 8);
    if (clip) t.grad_clip = 1e-3;
    ImportanceConfig imp;
    imp.batches = 1;
    SelectiveTrainer trainer(t, imp);
    const Examples data = RandomImages(40, 6);
    auto trained = CreateModel(SmallVit(), 5);
    ASSERT_TRUE(trained.ok());
    auto r = trainer.Train(**trained, data, {"block1", "head"}, 77);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->first_step_scores.size(), 2u);
    for (int from : {0, 2}) {
      auto global = CreateModel(SmallVit(), 5);
      ASSERT_TRUE(global.ok());
      auto pass = trainer.Importance(**global, data, 77, nullptr, from);
      ASSERT_TRUE(pass.ok()) << pass.status();
      // Groups: embed, block0, block1 (2), block2, head (4).
      for (auto [k, l] : {std::pair<int, int>{0, 2}, {1, 4}}) {
        const LayerScores& free = r->first_step_scores[k];
        SCOPED_TRACE(absl::StrCat(free.group, " clip ", clip, " from ", from));
        EXPECT_EQ(free.group, (*pass)[l].group);
        EXPECT_GT(free.sq_grad_norm, 0.0);
        EXPECT_EQ(free.sq_grad_norm, (*pass)[l].sq_grad_norm);
        EXPECT_EQ(free.rgn, (*pass)[l].rgn);
      }
    }
  }
  // A scoring batch of its own size (importance.batch_size) is another
  // batch: other scores.
  ImportanceConfig small;
  small.batches = 1;
  small.batch_size = 3;
  auto model = CreateModel(SmallVit(), 5);
  ASSERT_TRUE(model.ok());
  auto a = SelectiveTrainer(Sgd(3, 8), small)
               .Importance(**model, RandomImages(40, 6), 77);
  auto b = SelectiveTrainer(Sgd(3, 8), ImportanceConfig{"sq_grad_norm", 1})
               .Importance(**model, RandomImages(40, 6), 77);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)[4].sq_grad_norm, (*b)[4].sq_grad_norm);
}

// What the pass holds beyond the model: sq_grad_norm the scored gradients
// (float32); snr besides two double sums per scored element (16 bytes).
TEST(ImportanceTest, SqGradNormPassHoldsNoPerElementSums) {
  ModelConfig c = SmallVit();  // wide, on batches of 1: parameters dominate
  c.dim = 64;
  c.mlp_dim = 256;
  auto model = CreateModel(c, 5);
  ASSERT_TRUE(model.ok());
  ImportanceConfig imp;
  imp.batches = 2;
  SelectiveTrainer trainer(Sgd(1, 1), imp);
  const Examples data = RandomImages(32, 6);
  ResourceUsage sq, snr;
  ASSERT_TRUE(
      trainer.Importance(**model, data, 9, &sq, 0, "sq_grad_norm").ok());
  ASSERT_TRUE(trainer.Importance(**model, data, 9, &snr, 0, "snr").ok());
  const int64_t params = ParameterBytes(**model);
  EXPECT_GE(snr.peak_bytes - sq.peak_bytes, 4 * params)
      << "sq " << sq.peak_bytes << ", snr " << snr.peak_bytes;
  // The model, its gradients and the activations of two small batches.
  EXPECT_LT(sq.peak_bytes, 3 * params) << sq.peak_bytes;
}

// A model bound to the global weights reads them in place; training writes
// only the trained groups' own copies, and the delta is exact.
TEST(SelectiveTrainerTest, TrainingABoundModelLeavesTheWeightsUntouched) {
  auto model = CreateModel(SmallVit(), 3);
  ASSERT_TRUE(model.ok());
  auto weights = ExportWeights(**model);
  ASSERT_TRUE(weights.ok());
  const ModelWeights before = *weights;
  ASSERT_TRUE(BindWeights(**model, *weights).ok());
  for (auto& [name, t] : (*model)->Parameters()) {
    bool found = false;
    for (const LayerWeights& l : weights->layers) {
      for (const Tensor32& w : l.tensors) {
        if (w.name == name) {
          EXPECT_EQ(t.data_ptr<float>(), w.values.data()) << name;
          found = true;
        }
      }
    }
    EXPECT_TRUE(found) << name;
  }
  SelectiveTrainer trainer(Sgd(3, 8), ImportanceConfig());
  auto result =
      trainer.Train(**model, RandomImages(32, 1), {"block1", "head"}, 11);
  ASSERT_TRUE(result.ok()) << result.status();
  for (size_t l = 0; l < before.layers.size(); ++l) {
    for (size_t i = 0; i < before.layers[l].tensors.size(); ++i) {
      EXPECT_EQ(weights->layers[l].tensors[i].values,
                before.layers[l].tensors[i].values)
          << weights->layers[l].tensors[i].name;
    }
  }
  NamedTensors after = CloneParameters(**model);
  std::map<std::string, torch::Tensor> local(after.begin(), after.end());
  bool moved = false;
  for (const GroupDelta& d : result->deltas) {
    const int l = weights->Find(d.group);
    for (size_t i = 0; i < d.tensors.size(); ++i) {
      const torch::Tensor global = FromTensor32(weights->layers[l].tensors[i]);
      EXPECT_TRUE(torch::equal(d.tensors[i].second,
                               local.at(d.tensors[i].first) - global));
      moved = moved || !torch::equal(local.at(d.tensors[i].first), global);
    }
  }
  EXPECT_TRUE(moved);
  // Importing values unbinds the model: the bound weights are not written.
  ModelWeights other = before;
  for (LayerWeights& l : other.layers) {
    for (Tensor32& t : l.tensors) {
      for (float& v : t.values) v += 1.0f;
    }
  }
  ASSERT_TRUE(BindWeights(**model, *weights).ok());
  ASSERT_TRUE(ImportWeights(**model, other).ok());
  EXPECT_EQ(weights->layers[0].tensors[0].values,
            before.layers[0].tensors[0].values);
  EXPECT_TRUE(torch::equal((*model)->Parameters()[0].second,
                           FromTensor32(other.layers[0].tensors[0])));
  // Released values keep the shapes (so the model binds again) and hold
  // one element per parameter.
  ReleaseParameterValues(**model);
  for (auto& [name, t] : (*model)->Parameters()) {
    EXPECT_EQ(t.storage().nbytes(), sizeof(float)) << name;
    EXPECT_EQ(t.abs().sum().item<float>(), 0.0f) << name;
  }
  ASSERT_TRUE(BindWeights(**model, *weights).ok());
  EXPECT_EQ((*model)->Parameters()[0].second.data_ptr<float>(),
            std::as_const(weights->layers[0].tensors[0].values).data());
}

// ExportAndBind gives ExportWeights' values and leaves the model reading them
// in place, its own storage freed.
TEST(SelectiveTrainerTest, ExportAndBindLeavesTheModelReadingTheExport) {
  auto model = CreateModel(SmallVit(), 3);
  ASSERT_TRUE(model.ok());
  auto copied = ExportWeights(**model);
  ASSERT_TRUE(copied.ok());
  auto bound = ExportAndBind(**model);
  ASSERT_TRUE(bound.ok());
  ASSERT_EQ(bound->layers.size(), copied->layers.size());
  std::map<std::string, const Tensor32*> by_name;
  for (size_t l = 0; l < bound->layers.size(); ++l) {
    EXPECT_EQ(bound->layers[l].group, copied->layers[l].group);
    for (size_t i = 0; i < bound->layers[l].tensors.size(); ++i) {
      const Tensor32& t = bound->layers[l].tensors[i];
      EXPECT_EQ(t.name, copied->layers[l].tensors[i].name);
      EXPECT_EQ(t.values, copied->layers[l].tensors[i].values) << t.name;
      by_name[t.name] = &t;
    }
  }
  for (auto& [name, p] : (*model)->Parameters()) {
    ASSERT_TRUE(by_name.count(name)) << name;
    EXPECT_EQ(p.data_ptr<float>(), by_name[name]->values.data()) << name;
  }
}

TEST(ImportanceTest, FrozenGroupsScoreZero) {
  ModelConfig c = SmallVit();
  c.frozen = {"embed"};
  auto model = CreateModel(c, 1);
  SelectiveTrainer trainer(Sgd(1, 8), ImportanceConfig());
  auto scores =
      trainer.Importance(**model, RandomImages(16, 2), 1, nullptr, 0, "snr");
  ASSERT_TRUE(scores.ok());
  EXPECT_EQ((*scores)[0].sq_grad_norm, 0.0);
  for (size_t i = 1; i < scores->size(); ++i) {
    EXPECT_GT((*scores)[i].sq_grad_norm, 0.0) << (*scores)[i].group;
    EXPECT_GT((*scores)[i].snr, 0.0);
  }
}

TEST(EvaluateTest, CountsCorrectPredictions) {
  TinyLinear model;
  {
    torch::NoGradGuard g;
    auto p = model.Parameters();
    p[0].second.copy_(torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}}));
    p[1].second.zero_();
  }
  // Predictions: argmax of x itself -> [0, 1, 0]; labels [0, 1, 1] -> 2/3.
  Examples data{torch::tensor({{2.0f, 0.0f}, {0.0f, 2.0f}, {1.0f, 0.0f}}),
                torch::tensor({0, 1, 1}, torch::kLong)};
  SelectiveTrainer trainer{TrainConfig(), ImportanceConfig()};
  auto r = trainer.Evaluate(model, data, 2);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->accuracy, 2.0 / 3.0, 1e-12);
  // loss = (log(1+e^-2) * 2 + log(1+e^1)) / 3
  const double expected =
      (2 * std::log1p(std::exp(-2.0)) + std::log1p(std::exp(1.0))) / 3;
  EXPECT_NEAR(r->loss, expected, 1e-6);
}

}  // namespace
}  // namespace layerfl

namespace layerfl {
namespace {

// A coordinator that skipped the training images (its checkpoint was cached)
// and then finds the checkpoint gone is refused by name, not trained on
// nothing.
TEST(PretrainTest, MissingCheckpointWithoutHoldoutIsRefusedByName) {
  RunConfig c;
  c.pretrain.checkpoint = ::testing::TempDir() + "/no_such_pretrained.pt";
  absl::StatusOr<NamedTensors> r = EnsurePretrained(c, ImageSet(), nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(),
              ::testing::HasSubstr("pretrain.checkpoint: '" +
                                   c.pretrain.checkpoint + "'"));
  EXPECT_THAT(r.status().message(), ::testing::HasSubstr("no hold-out images"));
  EXPECT_THAT(r.status().message(),
              ::testing::HasSubstr("data.pretrain_fraction"));
}

}  // namespace
}  // namespace layerfl

namespace layerfl {
namespace {

TEST(PretrainTest, ACheckpointOfAShallowerModelIsRefusedNamingTheMissingBlock) {
  auto shallow = CreateModel(SmallVit(), 1);
  ModelConfig deep_config = SmallVit();
  deep_config.depth = 4;
  auto deep = CreateModel(deep_config, 1);
  ASSERT_TRUE(shallow.ok() && deep.ok());
  NamedTensors without_head;
  for (auto& [name, t] : (*shallow)->Parameters()) {
    if (name.rfind("head.", 0) != 0) without_head.emplace_back(name, t);
  }
  // The same shape loads (the new classifier may be missing)...
  auto same = CreateModel(SmallVit(), 2);
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(LoadPretrained(**same, without_head, "ckpt.pt").ok());
  // ...a deeper model does not: block3 would stay random.
  const absl::Status s = LoadPretrained(**deep, without_head, "ckpt.pt");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("(group block3)"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("pretrain.checkpoint"));
}

}  // namespace
}  // namespace layerfl
