// Hugging Face checkpoints (issue 23): tiny random BERT, RoBERTa, XLM-R, ViT
// and CLIP vision checkpoints in the exact upstream layout, written by
// tests/fixtures/make_hf_encoders.py and make_hf_vision.py (Debian's
// python3-torch, no download) with an independent reference forward;
// LayerFL's LibTorch models load them and must give the reference's logits
// within 1e-5.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/model/hf_config.h"
#include "common/model/hf_model.h"
#include "common/safetensors/safetensors.h"
#include "nlohmann/json.hpp"

namespace layerfl {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class HfModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("layerfl-hf-", getpid());
    std::filesystem::create_directories(dir_);
    for (const char* script : {"make_hf_encoders.py", "make_hf_vision.py"}) {
      const std::string cmd = absl::StrCat(
          "/usr/bin/python3 ", LAYERFL_SOURCE_DIR, "/tests/fixtures/", script,
          " '", dir_.string(), "' > '", dir_.string(), "/fixtures.log' 2>&1");
      if (std::system(cmd.c_str()) != 0) {
        std::ifstream log(dir_ / "fixtures.log");
        failed_ = absl::StrCat(
            script, ": ", std::string(std::istreambuf_iterator<char>(log), {}));
        return;
      }
    }
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  void SetUp() override { ASSERT_TRUE(failed_.empty()) << failed_; }

  static ModelConfig Config(int num_classes) {
    ModelConfig c;
    c.kind = "text";
    c.num_classes = num_classes;
    c.max_len = 9;
    return c;
  }
  // The reference's input ids and logits.
  static std::pair<at::Tensor, std::vector<float>> Reference(
      const std::string& name) {
    auto f = SafetensorsFile::Open((dir_ / name / "reference.safetensors").string());
    EXPECT_TRUE(f.ok()) << f.status();
    std::vector<int64_t> ids = *(*f)->ReadInt64("input_ids");
    const std::vector<int64_t> shape = (*f)->Find("input_ids")->shape;
    at::Tensor t = torch::tensor(ids, torch::kLong).reshape(shape);
    return {t, *(*f)->ReadFloat32("logits")};
  }

  static ModelConfig VisionConfig(int num_classes) {
    ModelConfig c;
    c.kind = "hf";
    c.num_classes = num_classes;
    return c;
  }
  // A float tensor of a reference file, with its shape.
  static at::Tensor ReadTensor(const SafetensorsFile& f,
                               const std::string& name) {
    std::vector<float> values = *f.ReadFloat32(name);
    return torch::tensor(values, torch::kFloat32).reshape(f.Find(name)->shape);
  }
  static at::Tensor Param(Model& model, const std::string& name) {
    for (const auto& [n, t] : model.Parameters()) {
      if (n == name) return t.detach();
    }
    ADD_FAILURE() << "no parameter " << name;
    return at::Tensor();
  }
  static std::vector<std::string> GroupNames(const Model& model) {
    std::vector<std::string> names;
    for (const LayerGroup& g : model.groups()) names.push_back(g.name);
    return names;
  }
  static const LayerGroup& Group(const Model& model, const std::string& name) {
    for (const LayerGroup& g : model.groups()) {
      if (g.name == name) return g;
    }
    static const LayerGroup kNone;
    ADD_FAILURE() << "no group " << name;
    return kNone;
  }
  static double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
    return (a - b).abs().max().item<double>();
  }
  static void ExpectBitIdentical(Model& a, Model& b, const std::string& what) {
    NamedTensors x = a.Parameters(), y = b.Parameters();
    ASSERT_EQ(x.size(), y.size()) << what;
    for (size_t k = 0; k < x.size(); ++k) {
      ASSERT_EQ(x[k].first, y[k].first) << what;
      const at::Tensor p = x[k].second.contiguous();
      const at::Tensor q = y[k].second.contiguous();
      ASSERT_TRUE(p.sizes().equals(q.sizes())) << what << " " << x[k].first;
      EXPECT_EQ(std::memcmp(p.data_ptr<float>(), q.data_ptr<float>(),
                            p.numel() * sizeof(float)),
                0)
          << what << " " << x[k].first;
    }
  }
  static nlohmann::json ReadJson(const std::filesystem::path& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in);
  }
  // DIR/<name> with `config` as config.json and, when `weights_from` is set,
  // that checkpoint's model.safetensors.
  static std::string WriteCheckpoint(const std::string& name,
                                     const nlohmann::json& config,
                                     const std::string& weights_from = "") {
    const std::filesystem::path out = dir_ / name;
    std::filesystem::create_directories(out);
    std::ofstream(out / "config.json") << config.dump(2);
    if (!weights_from.empty()) {
      std::filesystem::copy_file(
          dir_ / weights_from / "model.safetensors", out / "model.safetensors",
          std::filesystem::copy_options::overwrite_existing);
    }
    return out.string();
  }

  static inline std::filesystem::path dir_;
  static inline std::string failed_;
};

// The vision fixtures, and whether each has a classification head.
struct VisionCase {
  const char* name;
  bool head;
};
constexpr VisionCase kVisionCases[] = {
    {"vit", true},          {"vit_sharded", true}, {"vit_bf16", true},
    {"vit_bare", false},    {"clip_vision", false}, {"clip_full", false},
    {"clip_cls", true}};

TEST_F(HfModelTest, LogitsEqualTheReferenceForward) {
  for (const char* name : {"bert", "roberta", "xlmr"}) {
    HfLoadReport report;
    absl::StatusOr<std::unique_ptr<Model>> model =
        LoadHfModel((dir_ / name).string(), Config(3), 7, &report);
    ASSERT_TRUE(model.ok()) << name << ": " << model.status();
    EXPECT_TRUE(report.head_from_checkpoint) << name;
    auto [ids, expected] = Reference(name);
    (*model)->SetTraining(false);
    torch::NoGradGuard no_grad;
    at::Tensor logits = (*model)->Forward(ids).contiguous();
    ASSERT_EQ(logits.numel(), static_cast<int64_t>(expected.size())) << name;
    const float* got = logits.data_ptr<float>();
    double worst = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      worst = std::max(worst, std::fabs(double(got[i]) - expected[i]));
    }
    EXPECT_LT(worst, 1e-5) << name;
    std::cout << name << ": largest |logit - reference| " << worst << "\n";
    // Groups follow the architecture, input to output.
    std::vector<std::string> groups;
    for (const LayerGroup& g : (*model)->groups()) groups.push_back(g.name);
    EXPECT_THAT(groups, ::testing::ElementsAre("embeddings", "layer.0",
                                               "layer.1", "head"))
        << name;
  }
}

TEST_F(HfModelTest, BufferIsIgnoredAndNamesAreUpstreams) {
  HfLoadReport report;
  absl::StatusOr<std::unique_ptr<Model>> model =
      LoadHfModel((dir_ / "bert").string(), Config(3), 7, &report);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_THAT(report.ignored,
              ::testing::ElementsAre("bert.embeddings.position_ids"));
  std::vector<std::string> names;
  for (const auto& [name, t] : (*model)->Parameters()) names.push_back(name);
  EXPECT_THAT(names, ::testing::Contains(
                         "bert.encoder.layer.1.attention.self.query.weight"));
  EXPECT_THAT(names, ::testing::Contains("bert.pooler.dense.bias"));
  EXPECT_THAT(names, ::testing::Contains("classifier.weight"));
}

// A bare BertModel (no prefix, no head): every backbone tensor is the
// checkpoint's bit for bit, the head is new, drawn from the seed, and its
// group is marked common.
TEST_F(HfModelTest, BareCheckpointGetsACommonHead) {
  HfLoadReport report;
  absl::StatusOr<std::unique_ptr<Model>> model =
      LoadHfModel((dir_ / "bert_bare").string(), Config(5), 7, &report);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_FALSE(report.head_from_checkpoint);
  EXPECT_FALSE(report.prefixed);
  auto ckpt = SafetensorsCheckpoint::Open((dir_ / "bert_bare").string());
  ASSERT_TRUE(ckpt.ok());
  int compared = 0;
  for (const auto& [name, t] : (*model)->Parameters()) {
    if (absl::StartsWith(name, "classifier.")) {
      EXPECT_EQ(t.size(0), 5) << name;
      continue;
    }
    const std::string stored = name.substr(std::string("bert.").size());
    std::vector<float> values = *(*ckpt)->ReadFloat32(stored);
    at::Tensor c = t.contiguous();
    ASSERT_EQ(c.numel(), static_cast<int64_t>(values.size())) << name;
    EXPECT_EQ(std::memcmp(c.data_ptr<float>(), values.data(),
                          values.size() * sizeof(float)),
              0)
        << name;
    ++compared;
  }
  EXPECT_EQ(compared, 5 + 2 * 16 + 2);  // embeddings, 2 layers, pooler
  for (const LayerGroup& g : (*model)->groups()) {
    EXPECT_EQ(g.common, g.name == "head") << g.name;
  }
}

TEST_F(HfModelTest, MismatchesAreNamed) {
  // A head of 3 outputs where the config asks for 4.
  absl::StatusOr<std::unique_ptr<Model>> wrong =
      LoadHfModel((dir_ / "bert").string(), Config(4), 7);
  EXPECT_THAT(std::string(wrong.status().message()),
              HasSubstr("model.num_classes: the checkpoint's classification "
                        "head"));
  EXPECT_THAT(std::string(wrong.status().message()),
              HasSubstr("has 3 outputs, the config asks for 4"));
  // A config.json that says 3 layers over a checkpoint of 2.
  const std::filesystem::path deep = dir_ / "bert_deep";
  std::filesystem::create_directories(deep);
  std::filesystem::copy_file(dir_ / "bert" / "model.safetensors",
                             deep / "model.safetensors");
  std::ifstream in(dir_ / "bert" / "config.json");
  std::string text(std::istreambuf_iterator<char>(in), {});
  text.replace(text.find("\"num_hidden_layers\": 2"),
               std::string("\"num_hidden_layers\": 2").size(),
               "\"num_hidden_layers\": 3");
  std::ofstream(deep / "config.json") << text;
  absl::StatusOr<std::unique_ptr<Model>> missing =
      LoadHfModel(deep.string(), Config(3), 7);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("the checkpoint has no "
                        "'bert.encoder.layer.2.attention.output.LayerNorm.bias'"));
  // An architecture LayerFL does not implement.
  std::ofstream(deep / "config.json")
      << "{\"model_type\": \"gpt2\", \"vocab_size\": 10}";
  absl::StatusOr<std::unique_ptr<Model>> gpt2 =
      LoadHfModel(deep.string(), Config(3), 7);
  EXPECT_THAT(std::string(gpt2.status().message()),
              HasSubstr("model_type: 'gpt2' is not one of bert, roberta"));
}


// Export writes the model back in the layout it came from: loading the
// exported directory gives bit-identical weights (a bare checkpoint comes
// back as the classifier it became, head included), and the logits are the
// same.
TEST_F(HfModelTest, ExportRoundTripsBitIdentical) {
  for (const char* name : {"bert", "roberta", "bert_bare"}) {
    const int classes = std::string(name) == "bert_bare" ? 5 : 3;
    HfLoadReport report;
    absl::StatusOr<std::unique_ptr<Model>> model =
        LoadHfModel((dir_ / name).string(), Config(classes), 7, &report);
    ASSERT_TRUE(model.ok()) << model.status();
    const std::filesystem::path out = dir_ / (std::string(name) + "_export");
    absl::Status exported =
        ExportHfModel(**model, report, (dir_ / name).string(), out.string());
    ASSERT_TRUE(exported.ok()) << exported;
    HfLoadReport again_report;
    absl::StatusOr<std::unique_ptr<Model>> again = LoadHfModel(
        out.string(), Config(classes), 99, &again_report);  // another seed
    ASSERT_TRUE(again.ok()) << name << ": " << again.status();
    EXPECT_TRUE(again_report.head_from_checkpoint) << name;
    NamedTensors a = (*model)->Parameters(), b = (*again)->Parameters();
    ASSERT_EQ(a.size(), b.size()) << name;
    for (size_t k = 0; k < a.size(); ++k) {
      ASSERT_EQ(a[k].first, b[k].first);
      const at::Tensor x = a[k].second.contiguous(), y = b[k].second.contiguous();
      ASSERT_EQ(x.numel(), y.numel()) << a[k].first;
      EXPECT_EQ(std::memcmp(x.data_ptr<float>(), y.data_ptr<float>(),
                            x.numel() * sizeof(float)),
                0)
          << name << " " << a[k].first;
    }
  }
}

// ViT (float32, in 3 shards as transformers writes them, bfloat16, a bare
// ViTModel without qkv biases) and CLIP's
// vision tower (a float16 CLIPVisionModel, a CLIPModel with its text tower, a
// CLIPForImageClassification): the features the head reads equal the
// reference forward's, so the logits are the reference's within 1e-5 with
// the checkpoint's head, or with the head drawn from the seed.
TEST_F(HfModelTest, VisionLogitsEqualTheReferenceForward) {
  for (const VisionCase& c : kVisionCases) {
    HfLoadReport report;
    absl::StatusOr<std::unique_ptr<Model>> model =
        LoadHfModel((dir_ / c.name).string(), VisionConfig(3), 7, &report);
    ASSERT_TRUE(model.ok()) << c.name << ": " << model.status();
    EXPECT_EQ(report.head_from_checkpoint, c.head) << c.name;
    auto ref = SafetensorsFile::Open(
        (dir_ / c.name / "reference.safetensors").string());
    ASSERT_TRUE(ref.ok()) << ref.status();
    const at::Tensor pixels = ReadTensor(**ref, "pixel_values");
    const at::Tensor features = ReadTensor(**ref, "features");
    (*model)->SetTraining(false);
    torch::NoGradGuard no_grad;
    const at::Tensor logits = (*model)->Forward(pixels);
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{2, 3})) << c.name;
    const at::Tensor expected =
        torch::matmul(features, Param(**model, "classifier.weight").t()) +
        Param(**model, "classifier.bias");
    const double worst = MaxAbsDiff(logits, expected);
    EXPECT_LT(worst, 1e-5) << c.name;
    std::cout << c.name << ": largest |logit - reference| " << worst << "\n";
    if (c.head) {
      EXPECT_LT(MaxAbsDiff(logits, ReadTensor(**ref, "logits")), 1e-5)
          << c.name;
    }
    EXPECT_THAT(GroupNames(**model),
                ElementsAre("embeddings", "layer.0", "layer.1", "head"))
        << c.name;
    for (const LayerGroup& g : (*model)->groups()) {
      EXPECT_EQ(g.common, g.name == "head" && !c.head)
          << c.name << " " << g.name;
      EXPECT_FALSE(g.frozen) << c.name << " " << g.name;
    }
  }
}

TEST_F(HfModelTest, VisionGroupsHoldUpstreamNames) {
  auto vit = LoadHfModel((dir_ / "vit").string(), VisionConfig(3), 7);
  ASSERT_TRUE(vit.ok()) << vit.status();
  EXPECT_THAT(Group(**vit, "embeddings").param_names,
              ::testing::UnorderedElementsAre(
                  "vit.embeddings.cls_token",
                  "vit.embeddings.position_embeddings",
                  "vit.embeddings.patch_embeddings.projection.weight",
                  "vit.embeddings.patch_embeddings.projection.bias"));
  EXPECT_THAT(Group(**vit, "layer.1").param_names,
              Contains("vit.encoder.layer.1.attention.attention.query.weight"));
  EXPECT_THAT(Group(**vit, "layer.1").param_names,
              Contains("vit.encoder.layer.1.layernorm_after.bias"));
  EXPECT_EQ(Group(**vit, "layer.1").param_names.size(), 16u);
  EXPECT_THAT(Group(**vit, "head").param_names,
              ::testing::UnorderedElementsAre(
                  "vit.layernorm.weight", "vit.layernorm.bias",
                  "classifier.weight", "classifier.bias"));

  auto clip = LoadHfModel((dir_ / "clip_cls").string(), VisionConfig(3), 7);
  ASSERT_TRUE(clip.ok()) << clip.status();
  EXPECT_THAT(Group(**clip, "embeddings").param_names,
              ::testing::UnorderedElementsAre(
                  "vision_model.embeddings.class_embedding",
                  "vision_model.embeddings.patch_embedding.weight",
                  "vision_model.embeddings.position_embedding.weight",
                  "vision_model.pre_layrnorm.weight",
                  "vision_model.pre_layrnorm.bias"));
  EXPECT_THAT(
      Group(**clip, "layer.0").param_names,
      Contains("vision_model.encoder.layers.0.self_attn.q_proj.weight"));
  EXPECT_THAT(Group(**clip, "layer.0").param_names,
              Contains("vision_model.encoder.layers.0.mlp.fc2.bias"));
  EXPECT_EQ(Group(**clip, "layer.0").param_names.size(), 16u);
  EXPECT_THAT(Group(**clip, "head").param_names,
              ::testing::UnorderedElementsAre(
                  "vision_model.post_layernorm.weight",
                  "vision_model.post_layernorm.bias", "classifier.weight",
                  "classifier.bias"));

  // A bare ViTModel: its pooler is left out and listed; without qkv_bias the
  // projections have no bias, as upstream.
  HfLoadReport bare_report;
  auto bare = LoadHfModel((dir_ / "vit_bare").string(), VisionConfig(3), 7,
                          &bare_report);
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_FALSE(bare_report.prefixed);
  EXPECT_THAT(bare_report.ignored,
              ::testing::UnorderedElementsAre("pooler.dense.weight",
                                              "pooler.dense.bias"));
  EXPECT_THAT(Group(**bare, "layer.0").param_names,
              ::testing::Not(Contains(
                  "vit.encoder.layer.0.attention.attention.query.bias")));

  // A CLIPModel: the text tower, projections, logit scale and the position
  // ids buffer are left out and listed.
  HfLoadReport full_report;
  auto full = LoadHfModel((dir_ / "clip_full").string(), VisionConfig(3), 7,
                          &full_report);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_TRUE(full_report.prefixed);
  for (const char* name :
       {"logit_scale", "visual_projection.weight", "text_projection.weight",
        "vision_model.embeddings.position_ids",
        "text_model.final_layer_norm.weight",
        "text_model.embeddings.token_embedding.weight"}) {
    EXPECT_THAT(full_report.ignored, Contains(name));
  }
  for (const std::string& name : full_report.ignored) {
    EXPECT_FALSE(absl::StartsWith(name, "vision_model.encoder")) << name;
  }
  EXPECT_EQ(full_report.ignored.size(), 4u + 2 + 16 + 2);

  // The float16 checkpoint's values, widened exactly.
  auto half = LoadHfModel((dir_ / "clip_vision").string(), VisionConfig(3), 7);
  ASSERT_TRUE(half.ok()) << half.status();
  auto ckpt = SafetensorsCheckpoint::Open((dir_ / "clip_vision").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  int compared = 0;
  for (const auto& [name, t] : (*half)->Parameters()) {
    if (absl::StartsWith(name, "classifier.")) continue;
    std::vector<float> values = *(*ckpt)->ReadFloat32(name);
    const at::Tensor c = t.contiguous();
    ASSERT_EQ(c.numel(), static_cast<int64_t>(values.size())) << name;
    EXPECT_EQ(std::memcmp(c.data_ptr<float>(), values.data(),
                          values.size() * sizeof(float)),
              0)
        << name;
    ++compared;
  }
  EXPECT_EQ(compared, 5 + 2 * 16 + 2);
}

TEST_F(HfModelTest, VisionMismatchesAreNamed) {
  // A head of 3 outputs where the config asks for 4.
  auto wrong = LoadHfModel((dir_ / "vit").string(), VisionConfig(4), 7);
  EXPECT_THAT(std::string(wrong.status().message()),
              HasSubstr("has 3 outputs, the config asks for 4"));

  // A config.json of larger images over the checkpoint: the position
  // embeddings no longer fit, and the error names the tensor.
  nlohmann::json config = ReadJson(dir_ / "vit" / "config.json");
  config["image_size"] = 20;
  auto resized = LoadHfModel(WriteCheckpoint("vit_resized", config, "vit"),
                             VisionConfig(3), 7);
  EXPECT_EQ(resized.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(resized.status().message()),
              HasSubstr("tensor 'vit.embeddings.position_embeddings' has shape "
                        "[1, 17, 32], the vit model "
                        "(ViTForImageClassification) has [1, 26, 32]"));

  // config.json's architectures and the tensors disagree about the head.
  config = ReadJson(dir_ / "vit_bare" / "config.json");
  config["architectures"] = {"ViTForImageClassification"};
  auto headless = LoadHfModel(
      WriteCheckpoint("vit_headless", config, "vit_bare"), VisionConfig(3), 7);
  EXPECT_THAT(std::string(headless.status().message()),
              HasSubstr("architectures [ViTForImageClassification] name a "
                        "classifier but the checkpoint has no classifier.*"));

  // Settings LayerFL does not implement, named with their path.
  config = ReadJson(dir_ / "vit" / "config.json");
  config["hidden_act"] = "relu";
  EXPECT_THAT(
      std::string(ParseHfModelConfig(config.dump(), "vit/config.json")
                      .status()
                      .message()),
      HasSubstr("vit/config.json: hidden_act: only \"gelu\" and "
                "\"quick_gelu\" are supported, got \"relu\""));
  config = ReadJson(dir_ / "clip_full" / "config.json");
  config["vision_config"].erase("patch_size");  // CLIP's default: 32
  EXPECT_THAT(
      std::string(ParseHfModelConfig(config.dump(), "clip/config.json")
                      .status()
                      .message()),
      HasSubstr("vision_config.patch_size: 32 is larger than image_size 16"));

  // Images of another size are refused, as upstream refuses them.
  auto model = LoadHfModel((dir_ / "clip_cls").string(), VisionConfig(3), 7);
  ASSERT_TRUE(model.ok()) << model.status();
  torch::NoGradGuard no_grad;
  try {
    (*model)->Forward(torch::zeros({1, 3, 20, 20}));
    ADD_FAILURE() << "a 20x20 image was accepted";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(),
                HasSubstr("doesn't match the model's image_size (16*16)"));
  }
}

// A client daemon builds the model from config.json alone and downloads the
// weights: its model has the loaded model's parameters (names, shapes),
// groups and flags, and a head the checkpoint lacks is the same draw.
TEST_F(HfModelTest, ArchitectureFromConfigAloneMatchesTheLoadedModel) {
  for (const char* name : {"vit", "vit_bare", "clip_vision", "clip_full",
                           "clip_cls", "bert", "bert_bare", "roberta"}) {
    ModelConfig config = VisionConfig(std::string(name) == "bert_bare" ? 5 : 3);
    config.max_len = 9;
    config.hf_dir = (dir_ / name).string();
    absl::StatusOr<std::unique_ptr<Model>> loaded = CreateModel(config, 7);
    ASSERT_TRUE(loaded.ok()) << name << ": " << loaded.status();
    config.hf_dir =
        WriteCheckpoint(absl::StrCat(name, "_config_only"),
                        ReadJson(dir_ / name / "config.json"));
    CreateModelOptions options;
    options.load_hf_weights = false;
    absl::StatusOr<std::unique_ptr<Model>> built =
        CreateModel(config, 7, options);
    ASSERT_TRUE(built.ok()) << name << ": " << built.status();
    ASSERT_EQ((*loaded)->groups().size(), (*built)->groups().size()) << name;
    for (size_t g = 0; g < (*loaded)->groups().size(); ++g) {
      const LayerGroup& a = (*loaded)->groups()[g];
      const LayerGroup& b = (*built)->groups()[g];
      EXPECT_EQ(a.name, b.name) << name;
      EXPECT_EQ(a.param_names, b.param_names) << name << " " << a.name;
      EXPECT_EQ(a.num_params, b.num_params) << name << " " << a.name;
      EXPECT_EQ(a.common, b.common) << name << " " << a.name;
      EXPECT_EQ(a.frozen, b.frozen) << name << " " << a.name;
    }
    const bool has_head = (*loaded)->groups().back().common == false;
    if (!has_head) {
      for (const auto& [pname, t] : (*loaded)->Parameters()) {
        if (!absl::StartsWith(pname, "classifier.")) continue;
        EXPECT_TRUE(torch::equal(t, Param(**built, pname)))
            << name << " " << pname;
      }
    }
    // Loading needs the weights.
    EXPECT_EQ(CreateModel(config, 7).status().code(),
              absl::StatusCode::kNotFound)
        << name;
  }
  // Without "architectures", whether there is a head is unknown.
  nlohmann::json config = ReadJson(dir_ / "vit" / "config.json");
  config.erase("architectures");
  auto unknown = CreateHfModel(WriteCheckpoint("vit_no_architectures", config),
                               VisionConfig(3), 7);
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr("architectures: missing"));
}

// Export writes the vision models back as the classifiers they are
// (ViTForImageClassification, CLIPForImageClassification): loading the
// exported directory gives bit-identical weights and the same logits.
TEST_F(HfModelTest, VisionExportRoundTripsBitIdentical) {
  for (const VisionCase& c : kVisionCases) {
    HfLoadReport report;
    auto model =
        LoadHfModel((dir_ / c.name).string(), VisionConfig(3), 7, &report);
    ASSERT_TRUE(model.ok()) << model.status();
    const std::filesystem::path out = dir_ / (std::string(c.name) + "_export");
    absl::Status exported =
        ExportHfModel(**model, report, (dir_ / c.name).string(), out.string());
    ASSERT_TRUE(exported.ok()) << exported;

    nlohmann::json config = ReadJson(out / "config.json");
    const bool clip = absl::StartsWith(c.name, "clip");
    EXPECT_EQ(config["architectures"],
              nlohmann::json::array({clip ? "CLIPForImageClassification"
                                          : "ViTForImageClassification"}))
        << c.name;
    EXPECT_EQ(config["model_type"], clip ? "clip" : "vit") << c.name;
    EXPECT_EQ(config["torch_dtype"], "float32") << c.name;
    EXPECT_EQ(config["id2label"].size(), 3u) << c.name;
    if (clip) {
      EXPECT_EQ(config["vision_config"]["image_size"], 16) << c.name;
      EXPECT_EQ(config["vision_config"]["patch_size"], 4) << c.name;
    }

    HfLoadReport again_report;
    auto again = LoadHfModel(out.string(), VisionConfig(3), 99, &again_report);
    ASSERT_TRUE(again.ok()) << c.name << ": " << again.status();
    EXPECT_TRUE(again_report.head_from_checkpoint) << c.name;
    EXPECT_TRUE(again_report.prefixed) << c.name;
    EXPECT_THAT(again_report.ignored, ::testing::IsEmpty()) << c.name;
    ExpectBitIdentical(**model, **again, c.name);
    (*model)->SetTraining(false);
    (*again)->SetTraining(false);
    torch::NoGradGuard no_grad;
    const at::Tensor pixels = torch::randn({2, 3, 16, 16});
    EXPECT_TRUE(
        torch::equal((*model)->Forward(pixels), (*again)->Forward(pixels)))
        << c.name;
  }
}

// What data code asks a checkpoint without LibTorch.
TEST_F(HfModelTest, InputSpecSaysWhatTheModelReads) {
  auto vit = ReadHfInputSpec((dir_ / "vit").string());
  ASSERT_TRUE(vit.ok()) << vit.status();
  EXPECT_EQ(vit->modality, HfModality::kVision);
  EXPECT_EQ(vit->image_size, 16);
  EXPECT_EQ(vit->num_channels, 3);
  auto clip = ReadHfInputSpec((dir_ / "clip_full").string());
  ASSERT_TRUE(clip.ok()) << clip.status();
  EXPECT_EQ(clip->modality, HfModality::kVision);
  EXPECT_EQ(clip->model_type, "clip");
  EXPECT_EQ(clip->image_size, 16);
  EXPECT_EQ(clip->num_channels, 3);  // left out: CLIPVisionConfig's default
  auto bert = ReadHfInputSpec((dir_ / "bert").string());
  ASSERT_TRUE(bert.ok()) << bert.status();
  EXPECT_EQ(bert->modality, HfModality::kText);
  EXPECT_EQ(bert->max_positions, 40);
  EXPECT_EQ(bert->vocab_size, 101);
  EXPECT_EQ(bert->pad_token_id, 0);
  auto roberta = ReadHfInputSpec((dir_ / "roberta").string());
  ASSERT_TRUE(roberta.ok()) << roberta.status();
  EXPECT_EQ(roberta->max_positions, 40 - 1 - 1);
  EXPECT_EQ(roberta->pad_token_id, 1);
  EXPECT_EQ(ReadHfInputSpec((dir_ / "missing").string()).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace layerfl
