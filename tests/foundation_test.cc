// A team's own Hugging Face checkpoint and files, end to end with the real
// binaries on loopback: a ViT checkpoint on a folder of PNG images and a BERT
// checkpoint (its WordPiece vocabulary) on JSONL records run through
// layerfl-sim and through layerfl-coordinator with 2 client daemons, each
// daemon on its own share written by layerfl-partition and the checkpoint's
// config.json alone (the weights come from the coordinator); both runs end
// with the same weights, bit for bit, and the same metrics. layerfl-export
// then writes the run's model as a Hugging Face checkpoint whose tensors are
// the run's final weights, bit for bit. Fixtures: tests/fixtures/make_hf_run.py.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/safetensors/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/process_fixture.h"
#include "tests/run_fixture.h"
#include "tests/weights_matchers.h"

namespace layerfl {
namespace {

namespace fs = std::filesystem;
using fixture::LatestCheckpoint;
using fixture::Process;
using fixture::ReadFile;
using fixture::RunMetrics;

const std::string kBin = LAYERFL_BIN_DIR;
const std::string kSource = LAYERFL_SOURCE_DIR;

class FoundationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/foundation_test_" + std::to_string(getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string cmd = absl::StrCat(
        "/usr/bin/python3 ", kSource, "/tests/fixtures/make_hf_run.py '", dir_,
        "/hf' > '", dir_, "/fixtures.log' 2>&1");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << ReadFile(dir_ + "/fixtures.log");
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // `body` (model and data sections) with the run's common settings and
  // run_dir <dir>/<name>.
  std::string WriteConfig(const std::string& name, const std::string& body) {
    const std::string path = dir_ + "/" + name + ".yaml";
    std::ofstream(path) << "seed: 5\nthreads: 1\n"
                        << body
                        << "train:\n  optimizer: adamw\n  lr: 0.001\n"
                           "  batch_size: 8\n  local_steps: 2\n"
                           "importance:\n  batches: 1\n"
                           "federated:\n  rounds: 3\n  clients_per_round: 2\n"
                           "  min_clients: 2\n  round_deadline_s: 60\n"
                           "  run_dir: "
                        << dir_ << "/" << name
                        << "\nselection:\n  strategy: strategic\n"
                           "  lambda: 0.05\n"
                           "budget:\n  distribution: fixed\n  value: 2\n";
    return path;
  }

  // layerfl-sim on `config` and, meanwhile, layerfl-partition's shares and a
  // coordinator on the same config with 2 daemons (--data_dir, --hf_dir);
  // then both runs' weights and metrics are compared.
  void RunBoth(const std::string& body, const std::string& hf_dir) {
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    const std::string sim_config = WriteConfig("sim", body);
    const std::string coord_config = WriteConfig("coord", body);
    Process sim({kBin + "/layerfl-sim", "--config=" + sim_config},
                dir_ + "/sim.log");
    Process partition({kBin + "/layerfl-partition", "--config=" + sim_config,
                       "--out=" + dir_ + "/shares"},
                      dir_ + "/partition.log");
    ASSERT_EQ(partition.Wait(deadline), 0) << partition.Log();
    const std::string port_file = dir_ + "/coord.port";
    Process coordinator({kBin + "/layerfl-coordinator",
                         "--config=" + coord_config, "--listen=127.0.0.1:0",
                         "--port_file=" + port_file, "--tick_ms=20",
                         "--metrics_listen="},
                        dir_ + "/coordinator.log");
    while (!fs::exists(port_file) && coordinator.Running() &&
           absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_TRUE(fs::exists(port_file)) << coordinator.Log();
    const std::string port = ReadFile(port_file).substr(
        0, ReadFile(port_file).find('\n'));
    std::vector<std::unique_ptr<Process>> clients;
    for (int i = 0; i < 2; ++i) {
      const std::string id = absl::StrCat("client-00", i);
      clients.push_back(std::make_unique<Process>(
          std::vector<std::string>{
              kBin + "/layerfl-client", "--coordinator=127.0.0.1:" + port,
              "--poll_ms=2000", "--threads=1", "--id=" + id,
              "--data_dir=" + dir_ + "/shares/" + id, "--hf_dir=" + hf_dir},
          absl::StrCat(dir_, "/client", i, ".log")));
    }
    for (auto& c : clients) EXPECT_EQ(c->Wait(deadline), 0) << c->Log();
    ASSERT_EQ(coordinator.Wait(deadline), 0) << coordinator.Log();
    ASSERT_EQ(sim.Wait(deadline), 0) << sim.Log();
    const Checkpoint a = LatestCheckpoint(dir_ + "/coord");
    const Checkpoint b = LatestCheckpoint(dir_ + "/sim");
    EXPECT_EQ(a.round, 3);
    ExpectBitIdentical(a.weights, b.weights);
    EXPECT_EQ(RunMetrics(dir_ + "/coord"), RunMetrics(dir_ + "/sim"));
    // Evaluated on the test files.
    EXPECT_THAT(ReadFile(dir_ + "/coord/metrics.jsonl"),
                ::testing::HasSubstr("\"accuracy\":"));
  }

  // layerfl-export of the coordinator's run: every tensor of the written
  // checkpoint is the run's final value, bit for bit, and config.json is
  // the classifier's with model.num_classes labels.
  void ExportAndCompare(const std::string& architecture) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    const std::string out = dir_ + "/exported";
    Process exporter({kBin + "/layerfl-export", "--run_dir=" + dir_ + "/coord",
                      "--out=" + out},
                     dir_ + "/export.log");
    ASSERT_EQ(exporter.Wait(deadline), 0) << exporter.Log();
    EXPECT_THAT(exporter.Log(), ::testing::HasSubstr("round 3 of "));
    auto exported = SafetensorsCheckpoint::Open(out);
    ASSERT_TRUE(exported.ok()) << exported.status();
    const Checkpoint run = LatestCheckpoint(dir_ + "/coord");
    int compared = 0;
    for (const LayerWeights& layer : run.weights.layers) {
      for (const Tensor32& t : layer.tensors) {
        absl::StatusOr<std::vector<float>> values =
            (*exported)->ReadFloat32(t.name);
        ASSERT_TRUE(values.ok()) << values.status();
        ASSERT_EQ(values->size(), t.values.size()) << t.name;
        EXPECT_EQ(0, std::memcmp(values->data(), t.values.data(),
                                 t.values.size() * sizeof(float)))
            << t.name;
        ++compared;
      }
    }
    EXPECT_EQ(static_cast<size_t>(compared), (*exported)->tensors().size());
    const nlohmann::json config =
        nlohmann::json::parse(ReadFile(out + "/config.json"));
    EXPECT_EQ(config["architectures"][0], architecture);
    EXPECT_EQ(config["id2label"].size(), 3u);
  }

  std::string dir_;
};

TEST_F(FoundationTest, VitOnAnImageFolderMatchesTheSimulatorAndExports) {
  const std::string hf = dir_ + "/hf/vit";
  RunBoth("model:\n  kind: hf\n  hf_dir: " + hf +
              "\n  num_classes: 3\n"
              "data:\n  dataset: image_folder\n  train_path: " +
              dir_ + "/hf/images/train\n  test_path: " + dir_ +
              "/hf/images/test\n  partition: iid\n  num_clients: 2\n",
          hf);
  if (HasFatalFailure()) return;
  ExportAndCompare("ViTForImageClassification");
}

TEST_F(FoundationTest, BertOnJsonlMatchesTheSimulatorAndExports) {
  const std::string hf = dir_ + "/hf/bert";
  RunBoth("model:\n  kind: hf\n  hf_dir: " + hf +
              "\n  num_classes: 3\n  max_len: 16\n"
              "data:\n  dataset: jsonl\n  train_path: " +
              dir_ + "/hf/text/train.jsonl\n  test_path: " + dir_ +
              "/hf/text/test.jsonl\n  labels: [neg, neutral, pos]\n"
              "  group_field: lang\n  partition: by_group\n"
              "  num_clients: 2\n",
          hf);
  if (HasFatalFailure()) return;
  ExportAndCompare("BertForSequenceClassification");
}

}  // namespace
}  // namespace layerfl
