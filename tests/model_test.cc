#include "common/model/model.h"
#include "common/model/weights_bridge.h"

#include <cstdio>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace layerfl {
namespace {

using ::testing::HasSubstr;

ModelConfig SmallVit() {
  ModelConfig c;
  c.kind = "vit";
  c.dim = 8;
  c.depth = 2;
  c.heads = 2;
  c.mlp_dim = 16;
  c.num_classes = 10;
  return c;
}

TEST(VitTest, GroupsInOrderWithHandCountedParameters) {
  auto model = CreateModel(SmallVit(), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  const auto& g = (*model)->groups();
  ASSERT_EQ(g.size(), 4u);
  // embed: patch Linear(49 -> 8) = 392 + 8, cls 8, pos 17 * 8.
  EXPECT_EQ(g[0].name, "embed");
  EXPECT_EQ(g[0].num_params, 400 + 8 + 136);
  // block: 2 LayerNorms (16 each), qkv 8*24+24, proj 72, fc1 8*16+16, fc2 16*8+8.
  EXPECT_EQ(g[1].name, "block0");
  EXPECT_EQ(g[1].num_params, 16 + 216 + 72 + 16 + 144 + 136);
  EXPECT_EQ(g[2].name, "block1");
  // head: LayerNorm 16 + Linear(8 -> 10) 90.
  EXPECT_EQ(g[3].name, "head");
  EXPECT_EQ(g[3].num_params, 106);
  at::Tensor logits = (*model)->Forward(torch::randn({3, 1, 28, 28}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 10}));
}

TEST(VitTest, SameSeedSameWeights) {
  auto a = CreateModel(SmallVit(), 7);
  auto b = CreateModel(SmallVit(), 7);
  auto c = CreateModel(SmallVit(), 8);
  NamedTensors pa = (*a)->Parameters(), pb = (*b)->Parameters(),
               pc = (*c)->Parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i].second, pb[i].second)) << pa[i].first;
  }
  EXPECT_FALSE(torch::equal(pa[1].second, pc[1].second));
}

TEST(VitTest, FrozenAndCommonFromConfig) {
  ModelConfig c = SmallVit();
  c.frozen = {"embed"};
  c.common = {"head"};
  auto model = CreateModel(c, 1);
  ASSERT_TRUE(model.ok());
  EXPECT_TRUE((*model)->groups()[0].frozen);
  EXPECT_TRUE((*model)->groups()[3].common);
  c.frozen = {"block9"};
  auto bad = CreateModel(c, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("model.frozen: unknown layer group 'block9'"));
}

TEST(TextEncoderTest, GroupsAndForward) {
  ModelConfig c = SmallVit();
  c.kind = "text";
  c.vocab_size = 50;
  c.max_len = 6;
  c.num_classes = 4;
  auto model = CreateModel(c, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  const auto& g = (*model)->groups();
  ASSERT_EQ(g.size(), 4u);
  EXPECT_EQ(g[0].num_params, 50 * 8 + 6 * 8);
  EXPECT_EQ(g[3].num_params, 16 + 8 * 4 + 4);
  at::Tensor tokens = torch::tensor({{5, 6, 7, 0, 0, 0}, {0, 0, 0, 0, 0, 0}},
                                    torch::kLong);
  at::Tensor logits = (*model)->Forward(tokens);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
  // Padding does not change a sequence's logits.
  at::Tensor shorter = (*model)->Forward(torch::tensor({{5, 6, 7, 0}}, torch::kLong));
  EXPECT_TRUE(torch::allclose(shorter[0], logits[0], 1e-5, 1e-6));
}

ModelConfig TinyScript() {
  ModelConfig c;
  c.kind = "torchscript";
  c.torchscript_path = std::string(LAYERFL_SOURCE_DIR) + "/tests/fixtures/tiny_script.pt";
  c.groups = {{"embed", {"embed.*"}},
              {"layer0", {"layers.0.*"}},
              {"layer1", {"layers.1.*"}},
              {"head", {"classifier.*"}}};
  return c;
}

TEST(TorchScriptTest, LoadsWithDeclaredGroups) {
  auto model = CreateModel(TinyScript(), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  const auto& g = (*model)->groups();
  ASSERT_EQ(g.size(), 4u);
  EXPECT_EQ(g[0].num_params, 4 * 8 + 8);
  EXPECT_EQ(g[1].num_params, 72);
  EXPECT_EQ(g[2].num_params, 72);
  EXPECT_EQ(g[3].num_params, 27);
  EXPECT_THAT(g[3].param_names,
              ::testing::ElementsAre("classifier.weight", "classifier.bias"));
  at::Tensor logits = (*model)->Forward(torch::ones({5, 4}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{5, 3}));
}

TEST(TorchScriptTest, UnmatchedOrDoubleMatchedParameterNamed) {
  ModelConfig c = TinyScript();
  c.groups.pop_back();
  auto missing = CreateModel(c, 1);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(),
              HasSubstr("parameter 'classifier.weight' is matched by no layer group"));
  c = TinyScript();
  c.groups.push_back({"everything_linear", {"layers.*"}});
  auto twice = CreateModel(c, 1);
  ASSERT_FALSE(twice.ok());
  EXPECT_THAT(twice.status().message(),
              HasSubstr("parameter 'layers.0.weight' is matched by two layer "
                        "groups: 'layer0' and 'everything_linear'"));
}

TEST(TorchScriptTest, MissingOrForeignFileRefused) {
  ModelConfig c = TinyScript();
  c.torchscript_path = "/nonexistent/model.pt";
  auto missing = CreateModel(c, 1);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(),
              HasSubstr("model.torchscript_path: no such file '/nonexistent/model.pt'"));
  const std::string junk = ::testing::TempDir() + "/junk.pt";
  std::ofstream(junk) << "not a torchscript archive";
  c.torchscript_path = junk;
  auto foreign = CreateModel(c, 1);
  ASSERT_FALSE(foreign.ok());
  EXPECT_THAT(foreign.status().message(), HasSubstr("cannot load '" + junk));
}

TEST(TensorFileTest, RoundTripIsBitIdentical) {
  NamedTensors t = {{"a", torch::randn({3, 4})},
                    {"b.c", torch::arange(5, torch::kLong)},
                    {"scalar", torch::tensor(2.5, torch::kDouble)}};
  const std::string path = ::testing::TempDir() + "/sub/dir/t.lflt";
  ASSERT_TRUE(SaveTensors(t, path).ok());
  auto back = LoadTensors(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 3u);
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ((*back)[i].first, t[i].first);
    EXPECT_TRUE(torch::equal((*back)[i].second, t[i].second));
  }
}

TEST(TensorFileTest, TruncatedOrFlippedFileRefused) {
  const std::string path = ::testing::TempDir() + "/t2.lflt";
  ASSERT_TRUE(SaveTensors({{"w", torch::randn({64})}}, path).ok());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), bytes.size() - 10);
  }
  auto truncated = LoadTensors(path);
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(truncated.status().message(), HasSubstr("is corrupt"));
  EXPECT_THAT(truncated.status().message(), HasSubstr(path));
  bytes[40] ^= 0x01;
  {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), bytes.size());
  }
  auto flipped = LoadTensors(path);
  ASSERT_FALSE(flipped.ok());
  EXPECT_THAT(flipped.status().message(), HasSubstr("checksum mismatch"));
  EXPECT_EQ(LoadTensors("/nonexistent.lflt").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(AssignParametersTest, ShapeMismatchChangesNothing) {
  auto model = CreateModel(SmallVit(), 1);
  NamedTensors before = CloneParameters(**model);
  NamedTensors weights = {{"cls_token", torch::zeros({1, 1, 8})},
                          {"head.weight", torch::zeros({5, 8})}};
  absl::Status s = AssignParameters(**model, weights, /*allow_missing=*/true);
  EXPECT_THAT(s.message(), HasSubstr("parameter 'head.weight': model has [10, 8]"));
  NamedTensors after = CloneParameters(**model);
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(torch::equal(before[i].second, after[i].second)) << before[i].first;
  }
  EXPECT_THAT(AssignParameters(**model, {weights[0]}, false).message(),
              HasSubstr("is missing from the weights"));
  ASSERT_TRUE(AssignParameters(**model, {weights[0]}, true).ok());
  for (auto& [name, t] : (*model)->Parameters()) {
    if (name == "cls_token") {
      EXPECT_TRUE(torch::equal(t, torch::zeros({1, 1, 8})));
    }
  }
}

}  // namespace
}  // namespace layerfl

namespace layerfl {
namespace {

TEST(WeightsBridgeTest, ExportImportRoundTripIsBitIdentical) {
  auto a = CreateModel(SmallVit(), 1);
  auto b = CreateModel(SmallVit(), 2);
  auto exported = ExportWeights(**a);
  ASSERT_TRUE(exported.ok()) << exported.status();
  ASSERT_EQ(exported->layers.size(), 4u);
  EXPECT_EQ(exported->layers[0].group, "embed");
  EXPECT_EQ(exported->layers[3].numel(), 106);
  EXPECT_EQ(exported->numel(), 544 + 2 * 600 + 106);
  ASSERT_TRUE(ImportWeights(**b, *exported).ok());
  NamedTensors pa = (*a)->Parameters(), pb = (*b)->Parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i].second, pb[i].second)) << pa[i].first;
  }
}

TEST(WeightsBridgeTest, MismatchRefusedAndNothingChanged) {
  auto model = CreateModel(SmallVit(), 1);
  auto w = ExportWeights(**model);
  NamedTensors before = CloneParameters(**model);
  ModelWeights bad = *w;
  bad.layers[1].tensors[0].values.assign(bad.layers[1].tensors[0].values.size(), 5.0f);
  bad.layers[2].tensors[0].shape = {1, 2};
  absl::Status s = ImportWeights(**model, bad);
  EXPECT_THAT(s.message(),
              HasSubstr("tensor 'blocks.1.ln1.weight' of shape [1, 2] does not "
                        "match model parameter 'blocks.1.ln1.weight' of shape "
                        "[8]"));
  NamedTensors after = CloneParameters(**model);
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(torch::equal(before[i].second, after[i].second));
  }
  // Importing one layer touches only that layer.
  bad = *w;
  for (auto& t : bad.layers[3].tensors) t.values.assign(t.values.size(), 0.5f);
  ASSERT_TRUE(ImportLayers(**model, bad, {3}).ok());
  for (auto& [name, t] : (*model)->Parameters()) {
    if (name.rfind("head.", 0) == 0 || name.rfind("norm.", 0) == 0) {
      EXPECT_TRUE(torch::all(t == 0.5).item<bool>()) << name;
    }
  }
}

}  // namespace
}  // namespace layerfl
