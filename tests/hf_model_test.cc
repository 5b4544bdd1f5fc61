// Hugging Face encoder checkpoints (issue 23): tiny random BERT, RoBERTa and
// XLM-R checkpoints in the exact upstream layout, written by
// tests/fixtures/make_hf_encoders.py (Debian's python3-torch, no download)
// with an independent reference forward; LayerFL's LibTorch encoders load
// them and must give the reference's logits within 1e-5.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

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
#include "common/model/hf_encoder.h"
#include "common/safetensors/safetensors.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;

class HfEncoderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("layerfl-hf-", getpid());
    std::filesystem::create_directories(dir_);
    const std::string cmd = absl::StrCat(
        "/usr/bin/python3 ", LAYERFL_SOURCE_DIR,
        "/tests/fixtures/make_hf_encoders.py '", dir_.string(), "' > '",
        dir_.string(), "/fixtures.log' 2>&1");
    if (std::system(cmd.c_str()) != 0) {
      std::ifstream log(dir_ / "fixtures.log");
      failed_ = std::string(std::istreambuf_iterator<char>(log), {});
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

  static inline std::filesystem::path dir_;
  static inline std::string failed_;
};

TEST_F(HfEncoderTest, LogitsEqualTheReferenceForward) {
  for (const char* name : {"bert", "roberta", "xlmr"}) {
    HfLoadReport report;
    absl::StatusOr<std::unique_ptr<Model>> model =
        LoadHfEncoder((dir_ / name).string(), Config(3), 7, &report);
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

TEST_F(HfEncoderTest, BufferIsIgnoredAndNamesAreUpstreams) {
  HfLoadReport report;
  absl::StatusOr<std::unique_ptr<Model>> model =
      LoadHfEncoder((dir_ / "bert").string(), Config(3), 7, &report);
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
TEST_F(HfEncoderTest, BareCheckpointGetsACommonHead) {
  HfLoadReport report;
  absl::StatusOr<std::unique_ptr<Model>> model =
      LoadHfEncoder((dir_ / "bert_bare").string(), Config(5), 7, &report);
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

TEST_F(HfEncoderTest, MismatchesAreNamed) {
  // A head of 3 outputs where the config asks for 4.
  absl::StatusOr<std::unique_ptr<Model>> wrong =
      LoadHfEncoder((dir_ / "bert").string(), Config(4), 7);
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
      LoadHfEncoder(deep.string(), Config(3), 7);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("the checkpoint has no "
                        "'bert.encoder.layer.2.attention.output.LayerNorm.bias'"));
  // An architecture LayerFL does not implement.
  std::ofstream(deep / "config.json")
      << "{\"model_type\": \"gpt2\", \"vocab_size\": 10}";
  absl::StatusOr<std::unique_ptr<Model>> gpt2 =
      LoadHfEncoder(deep.string(), Config(3), 7);
  EXPECT_THAT(std::string(gpt2.status().message()),
              HasSubstr("model_type: 'gpt2' is not one of bert, roberta"));
}


// Export writes the model back in the layout it came from: loading the
// exported directory gives bit-identical weights (a bare checkpoint comes
// back as the classifier it became, head included), and the logits are the
// same.
TEST_F(HfEncoderTest, ExportRoundTripsBitIdentical) {
  for (const char* name : {"bert", "roberta", "bert_bare"}) {
    const int classes = std::string(name) == "bert_bare" ? 5 : 3;
    HfLoadReport report;
    absl::StatusOr<std::unique_ptr<Model>> model =
        LoadHfEncoder((dir_ / name).string(), Config(classes), 7, &report);
    ASSERT_TRUE(model.ok()) << model.status();
    const std::filesystem::path out = dir_ / (std::string(name) + "_export");
    absl::Status exported =
        ExportHfEncoder(**model, report, (dir_ / name).string(), out.string());
    ASSERT_TRUE(exported.ok()) << exported;
    HfLoadReport again_report;
    absl::StatusOr<std::unique_ptr<Model>> again = LoadHfEncoder(
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

}  // namespace
}  // namespace layerfl
