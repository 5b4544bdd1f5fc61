#include "common/config/config.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerfl {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

void ExpectConfigEq(const RunConfig& a, const RunConfig& b) {
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.threads, b.threads);

  EXPECT_EQ(a.model.kind, b.model.kind);
  EXPECT_EQ(a.model.num_classes, b.model.num_classes);
  EXPECT_EQ(a.model.dim, b.model.dim);
  EXPECT_EQ(a.model.depth, b.model.depth);
  EXPECT_EQ(a.model.heads, b.model.heads);
  EXPECT_EQ(a.model.mlp_dim, b.model.mlp_dim);
  EXPECT_EQ(a.model.image_size, b.model.image_size);
  EXPECT_EQ(a.model.patch_size, b.model.patch_size);
  EXPECT_EQ(a.model.channels, b.model.channels);
  EXPECT_EQ(a.model.vocab_size, b.model.vocab_size);
  EXPECT_EQ(a.model.max_len, b.model.max_len);
  EXPECT_EQ(a.model.torchscript_path, b.model.torchscript_path);
  ASSERT_EQ(a.model.groups.size(), b.model.groups.size());
  for (size_t i = 0; i < a.model.groups.size(); ++i) {
    EXPECT_EQ(a.model.groups[i].name, b.model.groups[i].name);
    EXPECT_EQ(a.model.groups[i].patterns, b.model.groups[i].patterns);
  }
  EXPECT_EQ(a.model.frozen, b.model.frozen);
  EXPECT_EQ(a.model.common, b.model.common);

  EXPECT_EQ(a.data.dataset, b.data.dataset);
  EXPECT_EQ(a.data.dir, b.data.dir);
  EXPECT_EQ(a.data.train_tsv, b.data.train_tsv);
  EXPECT_EQ(a.data.test_tsv, b.data.test_tsv);
  EXPECT_EQ(a.data.partition, b.data.partition);
  EXPECT_EQ(a.data.num_clients, b.data.num_clients);
  EXPECT_EQ(a.data.alpha, b.data.alpha);
  EXPECT_EQ(a.data.domains, b.data.domains);
  EXPECT_EQ(a.data.pretrain_fraction, b.data.pretrain_fraction);
  EXPECT_EQ(a.data.max_test_examples, b.data.max_test_examples);
  EXPECT_EQ(a.data.train_path, b.data.train_path);
  EXPECT_EQ(a.data.test_path, b.data.test_path);
  EXPECT_EQ(a.data.text_field, b.data.text_field);
  EXPECT_EQ(a.data.label_field, b.data.label_field);
  EXPECT_EQ(a.data.labels, b.data.labels);
  EXPECT_EQ(a.data.group_field, b.data.group_field);
  EXPECT_EQ(a.data.resample, b.data.resample);
  EXPECT_EQ(a.data.image_mean, b.data.image_mean);
  EXPECT_EQ(a.data.image_std, b.data.image_std);

  EXPECT_EQ(a.train.optimizer, b.train.optimizer);
  EXPECT_EQ(a.train.lr, b.train.lr);
  EXPECT_EQ(a.train.momentum, b.train.momentum);
  EXPECT_EQ(a.train.weight_decay, b.train.weight_decay);
  EXPECT_EQ(a.train.batch_size, b.train.batch_size);
  EXPECT_EQ(a.train.local_steps, b.train.local_steps);
  EXPECT_EQ(a.train.local_epochs, b.train.local_epochs);
  EXPECT_EQ(a.train.grad_clip, b.train.grad_clip);

  EXPECT_EQ(a.importance.metric, b.importance.metric);
  EXPECT_EQ(a.importance.batches, b.importance.batches);
  EXPECT_EQ(a.importance.batch_size, b.importance.batch_size);
  EXPECT_EQ(a.importance.source, b.importance.source);
  EXPECT_EQ(a.importance.refresh_period, b.importance.refresh_period);
  EXPECT_EQ(a.importance.decay, b.importance.decay);
  EXPECT_EQ(a.importance.depth, b.importance.depth);

  EXPECT_EQ(a.pretrain.enabled, b.pretrain.enabled);
  EXPECT_EQ(a.pretrain.checkpoint, b.pretrain.checkpoint);
  EXPECT_EQ(a.pretrain.label_map, b.pretrain.label_map);
  EXPECT_EQ(a.pretrain.epochs, b.pretrain.epochs);
  EXPECT_EQ(a.pretrain.lr, b.pretrain.lr);
  EXPECT_EQ(a.pretrain.batch_size, b.pretrain.batch_size);

  EXPECT_EQ(a.demo.client, b.demo.client);
  EXPECT_EQ(a.demo.layers, b.demo.layers);
  EXPECT_EQ(a.demo.rounds, b.demo.rounds);

  EXPECT_EQ(a.federated.rounds, b.federated.rounds);
  EXPECT_EQ(a.federated.clients_per_round, b.federated.clients_per_round);
  EXPECT_EQ(a.federated.min_clients, b.federated.min_clients);
  EXPECT_EQ(a.federated.selection_period, b.federated.selection_period);
  EXPECT_EQ(a.federated.eval_every, b.federated.eval_every);
  EXPECT_EQ(a.federated.round_deadline_s, b.federated.round_deadline_s);
  EXPECT_EQ(a.federated.max_round_retries, b.federated.max_round_retries);
  EXPECT_EQ(a.federated.aggregation, b.federated.aggregation);
  EXPECT_EQ(a.federated.server_lr, b.federated.server_lr);
  EXPECT_EQ(a.federated.run_dir, b.federated.run_dir);
  EXPECT_EQ(a.federated.keep_checkpoints, b.federated.keep_checkpoints);
  EXPECT_EQ(a.federated.resume, b.federated.resume);

  EXPECT_EQ(a.selection.strategy, b.selection.strategy);
  EXPECT_EQ(a.selection.lambda, b.selection.lambda);
  EXPECT_EQ(a.selection.normalize_scores, b.selection.normalize_scores);
  EXPECT_EQ(a.selection.time_limit_ms, b.selection.time_limit_ms);
  EXPECT_EQ(a.selection.target_gap, b.selection.target_gap);
  EXPECT_EQ(a.selection.starts, b.selection.starts);

  EXPECT_EQ(a.budget.unit, b.budget.unit);
  EXPECT_EQ(a.budget.distribution, b.budget.distribution);
  EXPECT_EQ(a.budget.value, b.budget.value);
  EXPECT_EQ(a.budget.min, b.budget.min);
  EXPECT_EQ(a.budget.max, b.budget.max);
  EXPECT_EQ(a.budget.mean, b.budget.mean);
  EXPECT_EQ(a.budget.std, b.budget.std);

  EXPECT_EQ(a.transport.encoding, b.transport.encoding);
  EXPECT_EQ(a.transport.chunk_kb, b.transport.chunk_kb);
  EXPECT_EQ(a.transport.max_chunk_kb, b.transport.max_chunk_kb);
  EXPECT_EQ(a.transport.ordered_aggregation, b.transport.ordered_aggregation);
  EXPECT_EQ(a.transport.max_held_mb, b.transport.max_held_mb);
  EXPECT_EQ(a.transport.wait_for_clients, b.transport.wait_for_clients);
  EXPECT_EQ(a.transport.wait_for_clients_s, b.transport.wait_for_clients_s);
  EXPECT_EQ(a.transport.client_timeout_s, b.transport.client_timeout_s);
  EXPECT_EQ(a.transport.heartbeat_s, b.transport.heartbeat_s);
  EXPECT_EQ(a.transport.max_poll_s, b.transport.max_poll_s);
  EXPECT_EQ(a.transport.linger_s, b.transport.linger_s);
  EXPECT_EQ(a.privacy.dp.enabled, b.privacy.dp.enabled);
  EXPECT_EQ(a.privacy.dp.mode, b.privacy.dp.mode);
  EXPECT_EQ(a.privacy.dp.clipping, b.privacy.dp.clipping);
  EXPECT_EQ(a.privacy.dp.clip_norm, b.privacy.dp.clip_norm);
  EXPECT_EQ(a.privacy.dp.noise_multiplier, b.privacy.dp.noise_multiplier);
  EXPECT_EQ(a.privacy.dp.target_quantile, b.privacy.dp.target_quantile);
  EXPECT_EQ(a.privacy.dp.clip_lr, b.privacy.dp.clip_lr);
  EXPECT_EQ(a.privacy.dp.count_noise_std, b.privacy.dp.count_noise_std);
  EXPECT_EQ(a.privacy.dp.score_clip, b.privacy.dp.score_clip);
  EXPECT_EQ(a.privacy.dp.score_noise_multiplier, b.privacy.dp.score_noise_multiplier);
  EXPECT_EQ(a.privacy.dp.delta, b.privacy.dp.delta);
  EXPECT_EQ(a.privacy.dp.target_epsilon, b.privacy.dp.target_epsilon);
  EXPECT_EQ(a.privacy.dp.noise_seed, b.privacy.dp.noise_seed);
  EXPECT_EQ(a.privacy.secure_aggregation.enabled, b.privacy.secure_aggregation.enabled);
  EXPECT_EQ(a.privacy.secure_aggregation.threshold, b.privacy.secure_aggregation.threshold);
  EXPECT_EQ(a.privacy.secure_aggregation.value_range, b.privacy.secure_aggregation.value_range);
}

// Parses `yaml`, expects InvalidArgument, and returns the message.
std::string ParseError(const std::string& yaml) {
  absl::StatusOr<RunConfig> config = ParseRunConfig(yaml);
  EXPECT_FALSE(config.ok()) << "accepted:\n" << yaml;
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument)
      << config.status();
  return std::string(config.status().message());
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            absl::StrCat("layerfl_config_test_", ::getpid());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string Write(const std::string& name, const std::string& text) const {
    const std::string file = (path_ / name).string();
    std::ofstream(file) << text;
    return file;
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

TEST(ConfigDefaults, DefaultStructValidates) {
  EXPECT_TRUE(RunConfig().Validate().ok()) << RunConfig().Validate();
}

TEST(ConfigDefaults, EmptyDocumentsKeepAllDefaults) {
  for (const char* yaml :
       {"", "\n", "# only a comment\n", "---\n", "---\n...\n"}) {
    SCOPED_TRACE(yaml);
    absl::StatusOr<RunConfig> config = ParseRunConfig(yaml);
    ASSERT_TRUE(config.ok()) << config.status();
    ExpectConfigEq(*config, RunConfig());
  }
}

TEST(ConfigDefaults, EmptySectionsKeepDefaults) {
  absl::StatusOr<RunConfig> config = ParseRunConfig(
      "model:\ndata:\ntrain: {}\nimportance:\n"
      "pretrain:\ndemo:\nfederated:\nselection: {}\nbudget:\n");
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectConfigEq(*config, RunConfig());
}

TEST(ConfigDefaults, DocumentedDefaults) {
  const RunConfig c;
  EXPECT_EQ(c.seed, 1u);
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.model.kind, "vit");
  EXPECT_EQ(c.model.dim, 64);
  EXPECT_EQ(c.data.dataset, "fashion_mnist");
  EXPECT_EQ(c.data.partition, "iid");
  EXPECT_EQ(c.train.optimizer, "sgd");
  EXPECT_EQ(c.train.lr, 0.05);
  EXPECT_EQ(c.importance.metric, "sq_grad_norm");
  EXPECT_EQ(c.pretrain.label_map,
            (std::vector<int>{0, 1, 2, 1, 2, 3, 0, 3, 4, 3}));
  EXPECT_EQ(c.demo.layers, (std::vector<std::string>{"block3", "head"}));
  EXPECT_EQ(c.federated.rounds, 20);
  EXPECT_EQ(c.federated.clients_per_round, 10);
  EXPECT_EQ(c.federated.min_clients, 1);
  EXPECT_EQ(c.federated.selection_period, 1);
  EXPECT_EQ(c.federated.eval_every, 1);
  EXPECT_EQ(c.federated.eval_batch_size, 256);
  EXPECT_EQ(c.federated.round_deadline_s, 300.0);
  EXPECT_EQ(c.federated.max_round_retries, 3);
  EXPECT_EQ(c.federated.aggregation, "weighted");
  EXPECT_EQ(c.federated.server_lr, 1.0);
  EXPECT_EQ(c.federated.run_dir, "runs/demo");
  EXPECT_EQ(c.federated.keep_checkpoints, 3);
  EXPECT_TRUE(c.federated.resume);
  EXPECT_EQ(c.selection.strategy, "strategic");
  EXPECT_EQ(c.selection.lambda, 0.2);
  EXPECT_TRUE(c.selection.normalize_scores);
  EXPECT_EQ(c.selection.time_limit_ms, 500.0);
  EXPECT_EQ(c.selection.target_gap, 0.01);
  EXPECT_EQ(c.selection.starts, 8);
  EXPECT_EQ(c.budget.unit, "layers");
  EXPECT_EQ(c.budget.distribution, "truncated_normal");
  EXPECT_EQ(c.budget.value, 2.0);
  EXPECT_EQ(c.budget.min, 1.0);
  EXPECT_EQ(c.budget.max, 4.0);
  EXPECT_EQ(c.budget.mean, 2.5);
  EXPECT_EQ(c.budget.std, 1.0);
  EXPECT_EQ(c.transport.encoding, "float32");
  EXPECT_EQ(c.transport.chunk_kb, 1024);
  EXPECT_EQ(c.transport.max_chunk_kb, 2048);
  EXPECT_TRUE(c.transport.ordered_aggregation);
  EXPECT_EQ(c.transport.max_held_mb, 1024);
  EXPECT_EQ(c.transport.wait_for_clients, 0);
  EXPECT_EQ(c.transport.wait_for_clients_s, 60.0);
  EXPECT_EQ(c.transport.client_timeout_s, 60.0);
  EXPECT_EQ(c.transport.heartbeat_s, 5.0);
  EXPECT_EQ(c.transport.max_poll_s, 10.0);
  EXPECT_EQ(c.transport.linger_s, 10.0);
}

TEST(ConfigParse, FullFileSetsEveryField) {
  const std::string yaml = R"(
seed: 18446744073709551615
threads: 8
model:
  kind: torchscript
  num_classes: 4
  dim: 96
  depth: 6
  heads: 3
  mlp_dim: 200
  image_size: 32
  patch_size: 8
  channels: 3
  vocab_size: 30000
  max_len: 128
  torchscript_path: /models/bert.pt
  groups:
    - name: embed
      patterns: ["embeddings.*"]
    - name: layer0
      patterns: ["encoder.layer.0.*", "pooler.?"]
    - {name: head, patterns: [classifier.*]}
  frozen: [embed]
  common: [head]
data:
  dataset: tsv
  dir: /data/unused
  train_tsv: /data/train.tsv
  test_tsv: /data/test.tsv
  partition: dirichlet
  num_clients: 100
  alpha: 0.1
  domains: [rotate180, noise]
  pretrain_fraction: 0.25
  max_test_examples: 5000000000
  train_path: /data/unused_train
  test_path: /data/unused_test
  text_field: sentence
  label_field: category
  resample: bicubic
  image_mean: [0.25]
  image_std: [2]
train:
  optimizer: adamw
  lr: 3.0e-4
  momentum: 0.0
  weight_decay: 0.01
  batch_size: 16
  local_steps: 0
  local_epochs: 2
  grad_clip: 1.5
importance:
  metric: snr
  batches: 8
pretrain:
  enabled: false
  checkpoint: /cache/bert_pre.pt
  label_map: [0, 0, 1, 1]
  epochs: 3
  lr: 2e-5
  batch_size: 128
demo:
  client: 99
  layers: [layer0, head]
  rounds: 7
federated:
  rounds: 50
  clients_per_round: 0
  min_clients: 100
  selection_period: 5
  eval_every: 10
  round_deadline_s: 12.5
  max_round_retries: 0
  aggregation: uniform
  server_lr: 0.5
  run_dir: /runs/bert
  keep_checkpoints: 1
  resume: false
selection:
  strategy: top
  lambda: 0
  normalize_scores: False
  time_limit_ms: 20
  target_gap: 0
  starts: 1
budget:
  unit: memory
  distribution: uniform
  value: 1.5e9
  min: 5e8
  max: 5e8
  mean: -3
  std: 0.25
transport:
  encoding: bfloat16
  chunk_kb: 64
  max_chunk_kb: 3072
  ordered_aggregation: false
  max_held_mb: 0
  wait_for_clients: 12
  wait_for_clients_s: 90.5
  client_timeout_s: 30
  heartbeat_s: 2.5
  max_poll_s: 4
  linger_s: 1.5
)";
  absl::StatusOr<RunConfig> parsed = ParseRunConfig(yaml);
  ASSERT_TRUE(parsed.ok()) << parsed.status();

  RunConfig want;
  want.seed = 18446744073709551615ull;
  want.threads = 8;
  want.model.kind = "torchscript";
  want.model.num_classes = 4;
  want.model.dim = 96;
  want.model.depth = 6;
  want.model.heads = 3;
  want.model.mlp_dim = 200;
  want.model.image_size = 32;
  want.model.patch_size = 8;
  want.model.channels = 3;
  want.model.vocab_size = 30000;
  want.model.max_len = 128;
  want.model.torchscript_path = "/models/bert.pt";
  want.model.groups = {{"embed", {"embeddings.*"}},
                       {"layer0", {"encoder.layer.0.*", "pooler.?"}},
                       {"head", {"classifier.*"}}};
  want.model.frozen = {"embed"};
  want.model.common = {"head"};
  want.data.dataset = "tsv";
  want.data.dir = "/data/unused";
  want.data.train_tsv = "/data/train.tsv";
  want.data.test_tsv = "/data/test.tsv";
  want.data.partition = "dirichlet";
  want.data.num_clients = 100;
  want.data.alpha = 0.1;
  want.data.domains = {"rotate180", "noise"};
  want.data.pretrain_fraction = 0.25;
  want.data.max_test_examples = 5000000000;
  want.data.train_path = "/data/unused_train";
  want.data.test_path = "/data/unused_test";
  want.data.text_field = "sentence";
  want.data.label_field = "category";
  want.data.resample = "bicubic";
  want.data.image_mean = {0.25};
  want.data.image_std = {2};
  want.train.optimizer = "adamw";
  want.train.lr = 3.0e-4;
  want.train.momentum = 0.0;
  want.train.weight_decay = 0.01;
  want.train.batch_size = 16;
  want.train.local_steps = 0;
  want.train.local_epochs = 2;
  want.train.grad_clip = 1.5;
  want.importance.metric = "snr";
  want.importance.batches = 8;
  want.pretrain.enabled = false;
  want.pretrain.checkpoint = "/cache/bert_pre.pt";
  want.pretrain.label_map = {0, 0, 1, 1};
  want.pretrain.epochs = 3;
  want.pretrain.lr = 2e-5;
  want.pretrain.batch_size = 128;
  want.demo.client = 99;
  want.demo.layers = {"layer0", "head"};
  want.demo.rounds = 7;
  want.federated.rounds = 50;
  want.federated.clients_per_round = 0;
  want.federated.min_clients = 100;
  want.federated.selection_period = 5;
  want.federated.eval_every = 10;
  want.federated.round_deadline_s = 12.5;
  want.federated.max_round_retries = 0;
  want.federated.aggregation = "uniform";
  want.federated.server_lr = 0.5;
  want.federated.run_dir = "/runs/bert";
  want.federated.keep_checkpoints = 1;
  want.federated.resume = false;
  want.selection.strategy = "top";
  want.selection.lambda = 0;
  want.selection.normalize_scores = false;
  want.selection.time_limit_ms = 20;
  want.selection.target_gap = 0;
  want.selection.starts = 1;
  want.budget.unit = "memory";
  want.budget.distribution = "uniform";
  want.budget.value = 1.5e9;
  want.budget.min = 5e8;
  want.budget.max = 5e8;
  want.budget.mean = -3;
  want.budget.std = 0.25;
  want.transport.encoding = "bfloat16";
  want.transport.chunk_kb = 64;
  want.transport.max_chunk_kb = 3072;
  want.transport.ordered_aggregation = false;
  want.transport.max_held_mb = 0;
  want.transport.wait_for_clients = 12;
  want.transport.wait_for_clients_s = 90.5;
  want.transport.client_timeout_s = 30;
  want.transport.heartbeat_s = 2.5;
  want.transport.max_poll_s = 4;
  want.transport.linger_s = 1.5;
  ExpectConfigEq(*parsed, want);
}

TEST(ConfigParse, PartialSectionKeepsOtherDefaults) {
  absl::StatusOr<RunConfig> config = ParseRunConfig("train:\n  lr: 0.2\n");
  ASSERT_TRUE(config.ok()) << config.status();
  RunConfig want;
  want.train.lr = 0.2;
  ExpectConfigEq(*config, want);
}

TEST(ConfigParse, EmptyListsAreAccepted) {
  absl::StatusOr<RunConfig> config =
      ParseRunConfig("pretrain:\n  label_map: []\n");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->pretrain.label_map.empty());
}

TEST(ConfigParse, PrivacySection) {
  absl::StatusOr<RunConfig> c = ParseRunConfig(
      "federated:\n  aggregation: uniform\nprivacy:\n  dp:\n"
      "    enabled: true\n    mode: local\n    noise_multiplier: 0.7\n"
      "  secure_aggregation:\n    enabled: true\n    threshold: 0.5\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->privacy.dp.enabled);
  EXPECT_EQ(c->privacy.dp.mode, "local");
  EXPECT_EQ(c->privacy.dp.noise_multiplier, 0.7);
  EXPECT_TRUE(c->privacy.secure_aggregation.enabled);
  EXPECT_EQ(c->privacy.secure_aggregation.threshold, 0.5);
}

TEST(ConfigReferenceFile, ListsEveryFieldAtItsDefault) {
  absl::StatusOr<RunConfig> config = LoadRunConfig(
      std::string(LAYERFL_SOURCE_DIR) + "/configs/reference.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectConfigEq(*config, RunConfig());
}

TEST(ConfigUnknownKeys, TopLevel) {
  const std::string msg = ParseError("seed: 1\nsede: 2\n");
  EXPECT_THAT(msg, HasSubstr("sede: unknown field"));
  EXPECT_THAT(msg, HasSubstr("line 2, column 1"));
  EXPECT_THAT(msg, HasSubstr("seed, threads, model, data, train, importance, "
                             "pretrain, demo, federated, selection, budget, "
                             "devices, sim, profile, transport, privacy"));
}

TEST(ConfigUnknownKeys, InSection) {
  const std::string msg = ParseError("train:\n  lrr: 0.1\n");
  EXPECT_THAT(msg, HasSubstr("train.lrr: unknown field"));
  EXPECT_THAT(msg, HasSubstr("valid fields of train: optimizer, lr, momentum, "
                             "weight_decay, batch_size, local_steps, "
                             "local_epochs, grad_clip"));
}

TEST(ConfigUnknownKeys, InFederatedSections) {
  std::string msg = ParseError("federated:\n  round: 5\n");
  EXPECT_THAT(msg, HasSubstr("federated.round: unknown field"));
  EXPECT_THAT(msg, HasSubstr("valid fields of federated: mode, rounds, "
                             "clients_per_round, min_clients, "
                             "selection_period, eval_every, round_deadline_s, "
                             "max_round_retries, aggregation, server_lr, "
                             "run_dir, keep_checkpoints, resume"));
  msg = ParseError("selection:\n  solver: milp\n");
  EXPECT_THAT(msg, HasSubstr("selection.solver: unknown field"));
  EXPECT_THAT(msg, HasSubstr("valid fields of selection: strategy, lambda, "
                             "normalize_scores, time_limit_ms, target_gap, "
                             "starts"));
  msg = ParseError("budget:\n  stddev: 1\n");
  EXPECT_THAT(msg, HasSubstr("budget.stddev: unknown field"));
  EXPECT_THAT(msg, HasSubstr("valid fields of budget: unit, distribution, "
                             "value, min, max, mean, std"));
}

TEST(ConfigUnknownKeys, InListElement) {
  const std::string msg = ParseError(
      "model:\n  groups:\n    - {name: a, patterns: [x]}\n"
      "    - {name: b, pattern: [y]}\n");
  EXPECT_THAT(msg, HasSubstr("model.groups[1].pattern: unknown field"));
  EXPECT_THAT(msg,
              HasSubstr("valid fields of model.groups[1]: name, patterns"));
}

TEST(ConfigUnknownKeys, DuplicateKey) {
  EXPECT_THAT(ParseError("train:\n  lr: 0.1\n  lr: 0.2\n"),
              HasSubstr("train.lr: duplicate field"));
}

struct BadCase {
  std::string name;
  std::string yaml;
  std::vector<std::string> expected;  // substrings of the message
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class ConfigRejects : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigRejects, WithFieldPathAndValue) {
  const std::string msg = ParseError(GetParam().yaml);
  for (const std::string& want : GetParam().expected) {
    EXPECT_THAT(msg, HasSubstr(want)) << "yaml:\n" << GetParam().yaml;
  }
}

std::string CaseName(const ::testing::TestParamInfo<BadCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(
    WrongTypes, ConfigRejects,
    ::testing::Values(
        BadCase{"StringForNumber",
                "train:\n  lr: abc\n",
                {"train.lr: expected a number, got 'abc'", "line 2, column 7"}},
        BadCase{"QuotedNumber",
                "train:\n  lr: \"0.1\"\n",
                {"train.lr: expected a number, got '0.1'"}},
        BadCase{"FractionForInteger",
                "model:\n  depth: 2.5\n",
                {"model.depth: expected an integer, got 2.5"}},
        BadCase{"ExponentForInteger",
                "model:\n  depth: 1e3\n",
                {"model.depth: expected an integer, got 1e3"}},
        BadCase{"BoolForInteger",
                "threads: true\n",
                {"threads: expected an integer, got 'true'"}},
        BadCase{"NullForInteger",
                "threads:\n",
                {"threads: expected an integer, got null"}},
        BadCase{"IntegerOverflow",
                "model:\n  dim: 99999999999\n",
                {"model.dim: expected an integer in [-2147483648, 2147483647], "
                 "got 99999999999"}},
        BadCase{"NegativeSeed",
                "seed: -1\n",
                {"seed: expected an integer in [0, 18446744073709551615], "
                 "got -1"}},
        BadCase{"InfiniteNumber",
                "train:\n  lr: 1e999\n",
                {"train.lr: expected a finite number, got 1e999"}},
        BadCase{"YamlInfinity",
                "train:\n  lr: .inf\n",
                {"train.lr: expected a number, got '.inf'"}},
        BadCase{"NanNumber",
                "train:\n  lr: nan\n",
                {"train.lr: expected a finite number, got nan"}},
        BadCase{"ListForNumber",
                "train:\n  lr: [1]\n",
                {"train.lr: expected a number, got a sequence"}},
        BadCase{"MapForString",
                "model:\n  kind: {a: 1}\n",
                {"model.kind: expected a string, got a map"}},
        BadCase{"ScalarForList",
                "data:\n  domains: identity\n",
                {"data.domains: expected a sequence, got 'identity'"}},
        BadCase{"NullForList",
                "model:\n  frozen:\n",
                {"model.frozen: expected a sequence, got null"}},
        BadCase{"ListElementType",
                "pretrain:\n  label_map: [0, x, 1]\n",
                {"pretrain.label_map[1]: expected an integer, got 'x'"}},
        BadCase{"NestedListElementType",
                "model:\n  groups:\n    - {name: a, patterns: [x, [y]]}\n",
                {"model.groups[0].patterns[1]: expected a string, got a "
                 "sequence"}},
        BadCase{"ScalarForGroup",
                "model:\n  groups: [a]\n",
                {"model.groups[0]: expected a map, got 'a'"}},
        BadCase{
            "ScalarForSection", "train: 5\n", {"train: expected a map, got 5"}},
        BadCase{"ListForSection",
                "model: [vit]\n",
                {"model: expected a map, got a sequence"}},
        BadCase{"ListAtRoot",
                "- a\n- b\n",
                {"config: expected a map, got a sequence"}},
        BadCase{
            "ScalarAtRoot", "hello\n", {"config: expected a map, got 'hello'"}},
        BadCase{"StringForBool",
                "federated:\n  resume: maybe\n",
                {"federated.resume: expected a boolean (true or false), got "
                 "'maybe'",
                 "line 2, column 11"}},
        BadCase{"QuotedBool",
                "federated:\n  resume: \"true\"\n",
                {"federated.resume: expected a boolean (true or false), got "
                 "'true'"}},
        BadCase{"Yaml11Bool",
                "selection:\n  normalize_scores: yes\n",
                {"selection.normalize_scores: expected a boolean (true or "
                 "false), got 'yes'"}},
        BadCase{"NumberForBool",
                "selection:\n  normalize_scores: 1\n",
                {"selection.normalize_scores: expected a boolean (true or "
                 "false), got 1"}},
        BadCase{"NullForBool",
                "federated:\n  resume:\n",
                {"federated.resume: expected a boolean (true or false), got "
                 "null"}},
        BadCase{"NonScalarKey",
                "? [a]\n: 1\n",
                {"config: keys must be strings, got a sequence"}}),
    CaseName);

INSTANTIATE_TEST_SUITE_P(
    MalformedYaml, ConfigRejects,
    ::testing::Values(
        BadCase{"UnclosedFlowList",
                "data:\n  domains: [identity, noise\n",
                {"malformed YAML at line", "column", "end of sequence flow"}},
        BadCase{"BadIndentation",
                "train:\n  lr: 0.1\n   momentum: 0.5\n",
                {"malformed YAML at line 3"}},
        BadCase{"TabIndentation", "train:\n\tlr: 0.1\n", {"malformed YAML"}},
        BadCase{"TwoDocuments",
                "seed: 1\n---\nseed: 2\n",
                {"expected one YAML document, got 2"}}),
    CaseName);

const char kTorchscript[] =
    "model: {kind: torchscript, torchscript_path: m.pt, "
    "groups: [{name: block3, patterns: [b.*]}, {name: head, patterns: [h.*]}]";

std::string Ts(const std::string& extra_model_fields) {
  return absl::StrCat(kTorchscript, extra_model_fields, "}\n");
}

INSTANTIATE_TEST_SUITE_P(
    Rules, ConfigRejects,
    ::testing::Values(
        BadCase{"Threads", "threads: 0\n", {"threads: must be >= 1, got 0"}},
        BadCase{"ModelKind",
                "model:\n  kind: resnet\n",
                {"model.kind: must be one of vit, text, torchscript, hf, got "
                 "'resnet'"}},
        BadCase{"HfNeedsDir",
                "model:\n  kind: hf\n",
                {"model.hf_dir: must be set when model.kind is hf, got ''"}},
        BadCase{"NumClasses",
                "model:\n  num_classes: 1\n",
                {"model.num_classes: must be >= 2, got 1"}},
        BadCase{"Heads",
                "model:\n  heads: 0\n",
                {"model.heads: must be >= 1, got 0"}},
        BadCase{
            "Dim", "model:\n  dim: -4\n", {"model.dim: must be >= 1, got -4"}},
        BadCase{"DimDivisibleByHeads",
                "model:\n  dim: 66\n",
                {"model.dim: must be divisible by model.heads (4), got 66"}},
        BadCase{"Depth",
                "model:\n  depth: 0\n",
                {"model.depth: must be >= 1, got 0"}},
        BadCase{"MlpDim",
                "model:\n  mlp_dim: 0\n",
                {"model.mlp_dim: must be >= 1, got 0"}},
        BadCase{"PatchSize",
                "model:\n  patch_size: 0\n",
                {"model.patch_size: must be >= 1, got 0"}},
        BadCase{"ImageSize",
                "model:\n  image_size: 0\n",
                {"model.image_size: must be >= 1, got 0"}},
        BadCase{"ImageDivisibleByPatch",
                "model:\n  image_size: 30\n",
                {"model.image_size: must be divisible by model.patch_size (7), "
                 "got 30"}},
        BadCase{"Channels",
                "model:\n  channels: 0\n",
                {"model.channels: must be >= 1, got 0"}},
        BadCase{"VocabSize",
                "model:\n  vocab_size: 2\n",
                {"model.vocab_size: must be >= 3, got 2"}},
        BadCase{"MaxLen",
                "model:\n  max_len: 0\n",
                {"model.max_len: must be >= 1, got 0"}},
        BadCase{"TorchscriptNeedsPath",
                "model:\n  kind: torchscript\n  groups: [{name: a, patterns: "
                "[x]}]\n",
                {"model.torchscript_path: must be set when model.kind is "
                 "torchscript, got ''"}},
        BadCase{"TorchscriptNeedsGroups",
                "model:\n  kind: torchscript\n  torchscript_path: m.pt\n",
                {"model.groups: must list at least one group when model.kind "
                 "is torchscript, got []"}},
        BadCase{"GroupNameEmpty",
                "model:\n  groups: [{patterns: [x]}]\n",
                {"model.groups[0].name: must not be empty, got ''"}},
        BadCase{"GroupNamesUnique",
                "model:\n  groups: [{name: a, patterns: [x]}, {name: a, "
                "patterns: [y]}]\n",
                {"model.groups[1].name: must be unique among model.groups, "
                 "got 'a'"}},
        BadCase{"GroupNeedsPattern",
                "model:\n  groups: [{name: a, patterns: [x]}, {name: b}]\n",
                {"model.groups[1].patterns: must list at least one pattern, "
                 "got []"}},
        BadCase{"GroupPatternEmpty",
                "model:\n  groups: [{name: a, patterns: [x, '']}]\n",
                {"model.groups[0].patterns[1]: must not be empty, got ''"}},
        BadCase{"FrozenDistinct",
                "model:\n  frozen: [embed, embed]\n",
                {"model.frozen[1]: must be distinct (listed twice), got "
                 "'embed'"}},
        BadCase{"FrozenEmpty",
                "model:\n  frozen: ['']\n",
                {"model.frozen[0]: must not be empty, got ''"}},
        BadCase{
            "CommonDistinct",
            "model:\n  common: [head, head]\n",
            {"model.common[1]: must be distinct (listed twice), got 'head'"}},
        BadCase{"FrozenAndCommon",
                "model:\n  frozen: [embed]\n  common: [head, embed]\n",
                {"model.common[1]: must not also be listed in model.frozen, "
                 "got 'embed'"}},
        BadCase{"TorchscriptFrozenNamesGroup",
                Ts(", frozen: [embed]"),
                {"model.frozen[0]: must name a group of model.groups, got "
                 "'embed'"}},
        BadCase{"TorchscriptCommonNamesGroup",
                Ts(", common: [cls]"),
                {"model.common[0]: must name a group of model.groups, got "
                 "'cls'"}},
        BadCase{"Dataset",
                "data:\n  dataset: cifar10\n",
                {"data.dataset: must be one of fashion_mnist, tsv, "
                 "image_folder, jsonl, csv, got 'cifar10'"}},
        BadCase{"DatasetDir",
                "data:\n  dir: ''\n",
                {"data.dir: must not be empty, got ''"}},
        BadCase{"ImagesNeedImageModel",
                "model:\n  kind: text\n",
                {"model.kind: must be vit or torchscript when data.dataset is "
                 "fashion_mnist, got 'text'"}},
        BadCase{"TsvNeedsTrain",
                "data:\n  dataset: tsv\n  test_tsv: t\n",
                {"data.train_tsv: must be set when data.dataset is tsv, got "
                 "''"}},
        BadCase{"TsvNeedsTest",
                "data:\n  dataset: tsv\n  train_tsv: t\n",
                {"data.test_tsv: must be set when data.dataset is tsv, got "
                 "''"}},
        BadCase{"TextNeedsTextModel",
                "data: {dataset: tsv, train_tsv: a, test_tsv: b}\n",
                {"model.kind: must be text or torchscript when data.dataset "
                 "is tsv, got 'vit'"}},
        BadCase{"Partition",
                "data:\n  partition: pathological\n",
                {"data.partition: must be one of iid, dirichlet, "
                 "feature_shift, by_group, got 'pathological'"}},
        BadCase{"FolderNeedsTrainPath",
                "data: {dataset: image_folder, test_path: t}\n",
                {"data.train_path: must be set when data.dataset is "
                 "image_folder, got ''"}},
        BadCase{"JsonlNeedsTestPath",
                "model: {kind: text}\ndata: {dataset: jsonl, train_path: a}\n",
                {"data.test_path: must be set when data.dataset is jsonl, "
                 "got ''"}},
        BadCase{"FolderNeedsImageModel",
                "model: {kind: text}\n"
                "data: {dataset: image_folder, train_path: a, test_path: b}\n",
                {"model.kind: must be vit, hf or torchscript when "
                 "data.dataset is image_folder, got 'text'"}},
        BadCase{"CsvNeedsTextModel",
                "data: {dataset: csv, train_path: a, test_path: b}\n",
                {"model.kind: must be text, hf or torchscript when "
                 "data.dataset is csv, got 'vit'"}},
        BadCase{"TextFieldEmpty",
                "model: {kind: text}\n"
                "data: {dataset: csv, train_path: a, test_path: b, "
                "text_field: ''}\n",
                {"data.text_field: must not be empty, got ''"}},
        BadCase{"LabelFieldIsTextField",
                "model: {kind: text}\n"
                "data: {dataset: csv, train_path: a, test_path: b, "
                "label_field: text}\n",
                {"data.label_field: must differ from data.text_field, got "
                 "'text'"}},
        BadCase{"GroupFieldIsLabelField",
                "model: {kind: text}\n"
                "data: {dataset: jsonl, train_path: a, test_path: b, "
                "group_field: label}\n",
                {"data.group_field: must differ from data.text_field and "
                 "data.label_field, got 'label'"}},
        BadCase{"LabelsTwice",
                "data: {dataset: image_folder, train_path: a, test_path: b, "
                "labels: [cat, dog, cat]}\n",
                {"data.labels[2]: must be distinct (listed twice), got 'cat'"}},
        BadCase{"LabelsMoreThanClasses",
                "model: {num_classes: 2}\npretrain: {label_map: []}\n"
                "data: {dataset: image_folder, train_path: a, test_path: b, "
                "labels: [a, b, c]}\n",
                {"data.labels: must name at most model.num_classes (2) "
                 "classes, got 3"}},
        BadCase{"LabelsNeedNamedLabels",
                "data:\n  labels: [a]\n",
                {"data.labels: must be empty when data.dataset is "
                 "fashion_mnist"}},
        BadCase{"GroupFieldNeedsRecords",
                "data:\n  group_field: domain\n",
                {"data.group_field: must be empty when data.dataset is "
                 "fashion_mnist"}},
        BadCase{"ByGroupNeedsGroupField",
                "data: {dataset: image_folder, train_path: a, test_path: b, "
                "partition: by_group}\n",
                {"data.partition: by_group needs data.group_field"}},
        BadCase{"FeatureShiftNotForFolders",
                "data: {dataset: image_folder, train_path: a, test_path: b, "
                "partition: feature_shift}\n",
                {"data.partition: must be iid, dirichlet or by_group when "
                 "data.dataset is image_folder"}},
        BadCase{"Resample",
                "data: {dataset: image_folder, train_path: a, test_path: b, "
                "resample: lanczos}\n",
                {"data.resample: must be one of bilinear, bicubic, got "
                 "'lanczos'"}},
        BadCase{"ImageMeanPerChannel",
                "data: {dataset: image_folder, train_path: a, test_path: b, "
                "image_mean: [0.5, 0.5], image_std: [1, 1]}\n",
                {"data.image_mean: must have model.channels (1) entries, "
                 "got 2"}},
        BadCase{"ImageStdPositive",
                "data: {dataset: image_folder, train_path: a, test_path: b, "
                "image_mean: [0.5], image_std: [0]}\n",
                {"data.image_std[0]: must be > 0, got 0"}},
        BadCase{"ImageStdCount",
                "data: {dataset: image_folder, train_path: a, test_path: b, "
                "image_mean: [0.5]}\n",
                {"data.image_std: must have as many entries as "
                 "data.image_mean (1), got 0"}},
        BadCase{"FeatureShiftNeedsImages",
                "model: {kind: text}\ndata: {dataset: tsv, train_tsv: a, "
                "test_tsv: b, partition: feature_shift}\n",
                {"data.partition: must be iid or dirichlet when data.dataset "
                 "is tsv",
                 "got 'feature_shift'"}},
        BadCase{"NumClients",
                "data:\n  num_clients: 0\n",
                {"data.num_clients: must be >= 1, got 0"}},
        BadCase{"AlphaZero",
                "data:\n  alpha: 0\n",
                {"data.alpha: must be > 0, got 0"}},
        BadCase{"AlphaNegative",
                "data:\n  alpha: -0.5\n",
                {"data.alpha: must be > 0, got -0.5"}},
        BadCase{"DomainsEmpty",
                "data:\n  domains: []\n",
                {"data.domains: must list at least one domain, got []"}},
        BadCase{"DomainUnknown",
                "data:\n  domains: [identity, sepia]\n",
                {"data.domains[1]: must be one of identity, rotate90, "
                 "rotate180, invert, blur, noise, contrast, got 'sepia'"}},
        BadCase{"PretrainFractionOne",
                "data:\n  pretrain_fraction: 1\n",
                {"data.pretrain_fraction: must be in [0, 1), got 1"}},
        BadCase{"PretrainFractionNegative",
                "data:\n  pretrain_fraction: -0.1\n",
                {"data.pretrain_fraction: must be in [0, 1), got -0.1"}},
        BadCase{"MaxTestExamples",
                "data:\n  max_test_examples: -1\n",
                {"data.max_test_examples: must be >= 0, got -1"}},
        BadCase{"Optimizer",
                "train:\n  optimizer: rmsprop\n",
                {"train.optimizer: must be one of sgd, adam, adamw, got "
                 "'rmsprop'"}},
        BadCase{
            "LrZero", "train:\n  lr: 0\n", {"train.lr: must be > 0, got 0"}},
        BadCase{"LrNegative",
                "train:\n  lr: -1\n",
                {"train.lr: must be > 0, got -1"}},
        BadCase{"MomentumOne",
                "train:\n  momentum: 1.0\n",
                {"train.momentum: must be in [0, 1), got 1"}},
        BadCase{"MomentumNegative",
                "train:\n  momentum: -0.1\n",
                {"train.momentum: must be in [0, 1), got -0.1"}},
        BadCase{"WeightDecay",
                "train:\n  weight_decay: -0.01\n",
                {"train.weight_decay: must be >= 0, got -0.01"}},
        BadCase{"BatchSize",
                "train:\n  batch_size: 0\n",
                {"train.batch_size: must be >= 1, got 0"}},
        BadCase{"LocalEpochs",
                "train:\n  local_epochs: -1\n",
                {"train.local_epochs: must be >= 0, got -1"}},
        BadCase{"LocalStepsWithoutEpochs",
                "train:\n  local_steps: 0\n",
                {"train.local_steps: must be >= 1 when train.local_epochs is "
                 "0, got 0"}},
        BadCase{"LocalStepsNegativeWithEpochs",
                "train:\n  local_steps: -1\n  local_epochs: 1\n",
                {"train.local_steps: must be >= 0, got -1"}},
        BadCase{"GradClip",
                "train:\n  grad_clip: -1\n",
                {"train.grad_clip: must be >= 0, got -1"}},
        BadCase{"Metric",
                "importance:\n  metric: fisher\n",
                {"importance.metric: must be one of sq_grad_norm, rgn, snr, "
                 "got 'fisher'"}},
        BadCase{"Batches",
                "importance:\n  batches: 0\n",
                {"importance.batches: must be >= 1, got 0"}},
        BadCase{"SnrNeedsTwoBatches",
                "importance:\n  metric: snr\n  batches: 1\n",
                {"importance.batches: must be >= 2 when importance.metric is "
                 "snr, got 1"}},
        BadCase{"Checkpoint",
                "pretrain:\n  checkpoint: ''\n",
                {"pretrain.checkpoint: must not be empty, got ''"}},
        BadCase{"LabelMapNegative",
                "pretrain:\n  label_map: [0, 1, 2, 1, 2, -3, 0, 3, 4, 3]\n",
                {"pretrain.label_map[5]: must be >= 0, got -3"}},
        BadCase{"LabelMapLength",
                "pretrain:\n  label_map: [0, 1, 0]\n",
                {"pretrain.label_map: must have model.num_classes (10) "
                 "entries or none, got 3 entries"}},
        BadCase{"PretrainEpochs",
                "pretrain:\n  epochs: 0\n",
                {"pretrain.epochs: must be >= 1, got 0"}},
        BadCase{"PretrainLr",
                "pretrain:\n  lr: 0\n",
                {"pretrain.lr: must be > 0, got 0"}},
        BadCase{"PretrainBatchSize",
                "pretrain:\n  batch_size: 0\n",
                {"pretrain.batch_size: must be >= 1, got 0"}},
        BadCase{"DemoClientNegative",
                "demo:\n  client: -1\n",
                {"demo.client: must be in [0, data.num_clients) = [0, 20), "
                 "got -1"}},
        BadCase{"DemoClientTooLarge",
                "data:\n  num_clients: 3\ndemo:\n  client: 3\n",
                {"demo.client: must be in [0, data.num_clients) = [0, 3), "
                 "got 3"}},
        BadCase{"DemoLayersEmpty",
                "demo:\n  layers: []\n",
                {"demo.layers: must list at least one layer group, got []"}},
        BadCase{
            "DemoLayersDistinct",
            "demo:\n  layers: [head, head]\n",
            {"demo.layers[1]: must be distinct (listed twice), got 'head'"}},
        BadCase{"DemoLayersNotFrozen",
                "model:\n  frozen: [block3]\ndemo:\n  layers: [block3]\n",
                {"demo.layers[0]: must not be a group listed in model.frozen, "
                 "got 'block3'"}},
        BadCase{"TorchscriptDemoLayersNameGroups",
                Ts("") + "demo:\n  layers: [block9]\n",
                {"demo.layers[0]: must name a group of model.groups, got "
                 "'block9'"}},
        BadCase{"DemoRounds",
                "demo:\n  rounds: 0\n",
                {"demo.rounds: must be >= 1, got 0"}},
        BadCase{"FederatedRounds",
                "federated:\n  rounds: 0\n",
                {"federated.rounds: must be >= 1, got 0"}},
        BadCase{"ClientsPerRound",
                "federated:\n  clients_per_round: -1\n",
                {"federated.clients_per_round: must be >= 0, got -1"}},
        BadCase{"MinClients",
                "federated:\n  min_clients: 0\n",
                {"federated.min_clients: must be >= 1, got 0"}},
        BadCase{"MinClientsAboveClientsPerRound",
                "federated:\n  min_clients: 12\n",
                {"federated.min_clients: must be <= "
                 "federated.clients_per_round (10), got 12"}},
        BadCase{"MinClientsAboveNumClients",
                "data:\n  num_clients: 20\n"
                "federated:\n  clients_per_round: 0\n  min_clients: 21\n",
                {"federated.min_clients: must be <= data.num_clients (20), "
                 "got 21"}},
        BadCase{"MinClientsAboveNumClientsBelowPerRound",
                "data:\n  num_clients: 5\n"
                "federated:\n  clients_per_round: 10\n  min_clients: 6\n",
                {"federated.min_clients: must be <= data.num_clients (5), "
                 "got 6"}},
        BadCase{"SelectionPeriod",
                "federated:\n  selection_period: 0\n",
                {"federated.selection_period: must be >= 1, got 0"}},
        BadCase{"EvalEvery",
                "federated:\n  eval_every: 0\n",
                {"federated.eval_every: must be >= 1, got 0"}},
        BadCase{"EvalBatchSize",
                "federated:\n  eval_batch_size: 0\n",
                {"federated.eval_batch_size: must be >= 1, got 0"}},
        BadCase{"RoundDeadlineZero",
                "federated:\n  round_deadline_s: 0\n",
                {"federated.round_deadline_s: must be > 0, got 0"}},
        BadCase{"RoundDeadlineNegative",
                "federated:\n  round_deadline_s: -1.5\n",
                {"federated.round_deadline_s: must be > 0, got -1.5"}},
        BadCase{"MaxRoundRetries",
                "federated:\n  max_round_retries: -1\n",
                {"federated.max_round_retries: must be >= 0, got -1"}},
        BadCase{"Aggregation",
                "federated:\n  aggregation: median\n",
                {"federated.aggregation: must be one of weighted, uniform, "
                 "got 'median'"}},
        BadCase{"ServerLrZero",
                "federated:\n  server_lr: 0\n",
                {"federated.server_lr: must be > 0, got 0"}},
        BadCase{"ServerLrNegative",
                "federated:\n  server_lr: -0.1\n",
                {"federated.server_lr: must be > 0, got -0.1"}},
        BadCase{"RunDir",
                "federated:\n  run_dir: ''\n",
                {"federated.run_dir: must not be empty, got ''"}},
        BadCase{"KeepCheckpoints",
                "federated:\n  keep_checkpoints: 0\n",
                {"federated.keep_checkpoints: must be >= 1, got 0"}},
        BadCase{
            "Strategy",
            "selection:\n  strategy: greedy\n",
            {"selection.strategy: must be one of full, top, bottom, both, "
             "random, head, rgn, snr, importance, strategic, got 'greedy'"}},
        BadCase{"Lambda",
                "selection:\n  lambda: -0.5\n",
                {"selection.lambda: must be >= 0, got -0.5"}},
        BadCase{"TimeLimitZero",
                "selection:\n  time_limit_ms: 0\n",
                {"selection.time_limit_ms: must be > 0, got 0"}},
        BadCase{"TimeLimitNegative",
                "selection:\n  time_limit_ms: -10\n",
                {"selection.time_limit_ms: must be > 0, got -10"}},
        BadCase{"TargetGap",
                "selection:\n  target_gap: -0.01\n",
                {"selection.target_gap: must be >= 0, got -0.01"}},
        BadCase{"Starts",
                "selection:\n  starts: 0\n",
                {"selection.starts: must be >= 1, got 0"}},
        BadCase{
            "BudgetUnit",
            "budget:\n  unit: flops\n",
            {"budget.unit: must be one of layers, params, time, memory, got "
             "'flops'"}},
        BadCase{"BudgetDistribution",
                "budget:\n  distribution: normal\n",
                {"budget.distribution: must be one of fixed, uniform, "
                 "truncated_normal, declared, got 'normal'"}},
        BadCase{"BudgetValueZero",
                "budget:\n  value: 0\n",
                {"budget.value: must be > 0, got 0"}},
        BadCase{"BudgetValueNegativeUnusedByDistribution",
                "budget:\n  distribution: declared\n  value: -2\n",
                {"budget.value: must be > 0, got -2"}},
        BadCase{"FederatedMode",
                "federated:\n  mode: buffered\n",
                {"federated.mode: must be one of sync, async, local, got "
                 "'buffered'"}},
        BadCase{"BufferSizeZero",
                "federated:\n  mode: async\n  buffer_size: 0\n",
                {"federated.buffer_size: must be >= 1, got 0"}},
        BadCase{"MaxStalenessNegative",
                "federated:\n  max_staleness: -1\n",
                {"federated.max_staleness: must be >= 0, got -1"}},
        BadCase{"StalenessFunction",
                "federated:\n  staleness: linear\n",
                {"federated.staleness: must be one of constant, polynomial, "
                 "hinge, got 'linear'"}},
        BadCase{"StalenessExponentNegative",
                "federated:\n  staleness_exponent: -0.5\n",
                {"federated.staleness_exponent: must be >= 0, got -0.5"}},
        BadCase{"AsyncWithSecureAggregation",
                "federated: {mode: async, aggregation: uniform}\n"
                "privacy:\n  secure_aggregation: {enabled: true}\n",
                {"federated.mode: must be 'sync' with "
                 "privacy.secure_aggregation.enabled"}},
        BadCase{"AsyncWithDp",
                "federated: {mode: async, aggregation: uniform}\n"
                "privacy:\n  dp: {enabled: true}\n",
                {"federated.mode: must be 'sync' with privacy.dp.enabled"}},
        BadCase{"AsyncCohortNegative",
                "federated:\n  async_cohort: -1\n",
                {"federated.async_cohort: must be >= 0, got -1"}},
        BadCase{"DevicesTrainSecondsZero",
                "devices:\n  train_s: 0\n",
                {"devices.train_s: must be > 0, got 0"}},
        BadCase{"DevicesSpeedZero",
                "devices:\n  speed_min: 0\n",
                {"devices.speed_min: must be > 0, got 0"}},
        BadCase{"DevicesSpeedMaxBelowMin",
                "devices:\n  speed_min: 2\n  speed_max: 1\n",
                {"devices.speed_max: must be >= devices.speed_min (2), got 1"}},
        BadCase{"DpMode",
                "privacy:\n  dp:\n    mode: trusted\n",
                {"privacy.dp.mode: must be one of central, local, got "
                 "'trusted'"}},
        BadCase{"DpNoiseZero",
                "privacy:\n  dp:\n    noise_multiplier: 0\n",
                {"privacy.dp.noise_multiplier: must be > 0, got 0"}},
        BadCase{"DpDelta",
                "privacy:\n  dp:\n    delta: 1\n",
                {"privacy.dp.delta: must be in (0, 1), got 1"}},
        BadCase{"DpUnknownKey",
                "privacy:\n  dp:\n    epsilon: 3\n",
                {"privacy.dp.epsilon"}},
        BadCase{"DpNeedsUniformAggregation",
                "privacy:\n  dp:\n    enabled: true\n",
                {"federated.aggregation: must be 'uniform' with "
                 "privacy.dp.enabled"}},
        BadCase{"DpAdaptiveNeedsCentral",
                "federated:\n  aggregation: uniform\nprivacy:\n  dp:\n"
                "    enabled: true\n    mode: local\n    clipping: adaptive\n",
                {"privacy.dp.clipping: adaptive clipping needs "
                 "privacy.dp.mode: central"}},
        BadCase{"DpCountNoiseTooSmall",
                "federated:\n  aggregation: uniform\nprivacy:\n  dp:\n"
                "    enabled: true\n    clipping: adaptive\n"
                "    noise_multiplier: 2\n    count_noise_std: 0.5\n",
                {"privacy.dp.count_noise_std: must exceed noise_multiplier / "
                 "2 (1)"}},
        BadCase{"SecAggNeedsUniform",
                "privacy:\n  secure_aggregation:\n    enabled: true\n",
                {"federated.aggregation: must be 'uniform' with "
                 "privacy.secure_aggregation.enabled"}},
        BadCase{"SecAggNeedsLocalDp",
                "federated:\n  aggregation: uniform\nprivacy:\n  dp:\n"
                "    enabled: true\n  secure_aggregation:\n    enabled: true\n",
                {"privacy.dp.mode: must be 'local' with secure aggregation"}},
        BadCase{"SecAggThreshold",
                "privacy:\n  secure_aggregation:\n    threshold: 0\n",
                {"privacy.secure_aggregation.threshold: must be in (0, 1], "
                 "got 0"}},
        BadCase{"SecAggTooMany",
                "federated:\n  aggregation: uniform\n  clients_per_round: 300\n"
                "data:\n  num_clients: 400\nprivacy:\n  secure_aggregation:\n"
                "    enabled: true\n",
                {"federated.clients_per_round: must be <= 255 with secure "
                 "aggregation"}},
        BadCase{"ProfileStepsZero",
                "profile:\n  steps: 0\n",
                {"profile.steps: must be >= 1, got 0"}},
        BadCase{"BudgetMinZero",
                "budget:\n  min: 0\n",
                {"budget.min: must be > 0, got 0"}},
        BadCase{"BudgetMinNegative",
                "budget:\n  min: -1\n",
                {"budget.min: must be > 0, got -1"}},
        BadCase{"BudgetMaxBelowMin",
                "budget:\n  min: 3\n  max: 2.5\n",
                {"budget.max: must be >= budget.min (3), got 2.5"}},
        BadCase{"BudgetMaxBelowDefaultMin",
                "budget:\n  max: 0.5\n",
                {"budget.max: must be >= budget.min (1), got 0.5"}},
        BadCase{"BudgetStdZero",
                "budget:\n  std: 0\n",
                {"budget.std: must be > 0, got 0"}},
        BadCase{"BudgetStdNegative",
                "budget:\n  std: -1\n",
                {"budget.std: must be > 0, got -1"}},
        BadCase{"TransportEncoding",
                "transport:\n  encoding: fp8\n",
                {"transport.encoding: must be one of float32, float16, "
                 "bfloat16, got 'fp8'"}},
        BadCase{"TransportChunkZero",
                "transport:\n  chunk_kb: 0\n",
                {"transport.chunk_kb: must be in [1, 3072], got 0"}},
        BadCase{"TransportMaxChunkTooBig",
                "transport:\n  max_chunk_kb: 4096\n",
                {"transport.max_chunk_kb: must be in [1, 3072], got 4096"}},
        BadCase{"TransportMaxHeldNegative",
                "transport:\n  max_held_mb: -1\n",
                {"transport.max_held_mb: must be in [0, 2^30], got -1"}},
        BadCase{"TransportWaitForClientsNegative",
                "transport:\n  wait_for_clients: -1\n",
                {"transport.wait_for_clients: must be >= 0, got -1"}},
        BadCase{"TransportWaitSecondsZero",
                "transport:\n  wait_for_clients_s: 0\n",
                {"transport.wait_for_clients_s: must be > 0, got 0"}},
        BadCase{"TransportClientTimeoutNegative",
                "transport:\n  client_timeout_s: -5\n",
                {"transport.client_timeout_s: must be > 0, got -5"}},
        BadCase{"TransportHeartbeatNotBelowTimeout",
                "transport:\n  client_timeout_s: 4\n  heartbeat_s: 4\n",
                {"transport.heartbeat_s: must be < transport.client_timeout_s "
                 "(4), got 4"}},
        BadCase{"TransportMaxPollZero",
                "transport:\n  max_poll_s: 0\n",
                {"transport.max_poll_s: must be > 0, got 0"}},
        BadCase{"TransportLingerNotANumber",
                "transport:\n  linger_s: .inf\n",
                {"transport.linger_s: expected a number, got '.inf'"}}),
    CaseName);

TEST(ConfigAccepts, ValidVariants) {
  for (const std::string& yaml : {
           Ts(", frozen: [block3], common: [head]") +
               "demo:\n  layers: [head]\n",
           std::string("model: {kind: text}\ndata: {dataset: tsv, train_tsv: "
                       "a, test_tsv: b, partition: dirichlet}\n"),
           std::string(
               "data: {partition: feature_shift, domains: [rotate180]}"),
           std::string("train: {local_steps: 0, local_epochs: 1}\n"),
           std::string("importance: {metric: snr, batches: 2}\n"),
           std::string("pretrain: {label_map: []}\nmodel: {num_classes: 3}\n"),
           std::string("train: {momentum: 0, lr: 1e-6}\n"
                       "data: {pretrain_fraction: 0, num_clients: 1}\n"),
           // Quorum at its bounds: equal to clients_per_round, and with
           // clients_per_round 0 (every client) up to data.num_clients.
           std::string("federated: {clients_per_round: 10, min_clients: 10}\n"),
           std::string("federated: {clients_per_round: 0, min_clients: 20}\n"),
           std::string("data: {num_clients: 3}\n"
                       "federated: {clients_per_round: 50, min_clients: 3}\n"),
           std::string("federated: {max_round_retries: 0, resume: TRUE}\n"),
           std::string("selection: {lambda: 0, target_gap: 0, "
                       "normalize_scores: false}\n"),
           std::string("budget: {distribution: fixed, unit: params, "
                       "value: 1e6}\n"),
           std::string("budget: {min: 2, max: 2, mean: 0}\n"),
           std::string("budget: {distribution: declared}\n"),
           std::string("federated: {mode: async, buffer_size: 1, "
                       "max_staleness: 0, staleness: hinge, "
                       "staleness_hinge_a: 0, staleness_hinge_b: 0}\n"
                       "devices: {train_s: 0.01, score_s: 3}\n"),
       }) {
    SCOPED_TRACE(yaml);
    absl::StatusOr<RunConfig> config = ParseRunConfig(yaml);
    EXPECT_TRUE(config.ok()) << config.status();
  }
}

TEST(ConfigValidate, RejectsNonFiniteValuesSetInCode) {
  RunConfig config;
  config.train.lr = std::nan("");
  EXPECT_THAT(config.Validate().message(),
              HasSubstr("train.lr: must be finite"));
  config = RunConfig();
  config.train.momentum = std::nan("");
  EXPECT_THAT(config.Validate().message(),
              HasSubstr("train.momentum: must be in [0, 1), got nan"));
  config = RunConfig();
  config.federated.round_deadline_s = std::nan("");
  EXPECT_THAT(config.Validate().message(),
              HasSubstr("federated.round_deadline_s: must be finite"));
  config = RunConfig();
  config.budget.max = std::nan("");
  EXPECT_THAT(config.Validate().message(),
              HasSubstr("budget.max: must be finite, got nan"));
  config = RunConfig();
  config.budget.mean = -HUGE_VAL;
  EXPECT_THAT(config.Validate().message(),
              HasSubstr("budget.mean: must be finite, got -inf"));
  config = RunConfig();
  config.data.alpha = HUGE_VAL;
  EXPECT_THAT(config.Validate().message(),
              HasSubstr("data.alpha: must be finite, got inf"));
  EXPECT_EQ(config.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConfigLoad, MissingFileIsNotFoundNamingPath) {
  TempDir dir;
  const std::string path = dir.path() + "/nope.yaml";
  absl::StatusOr<RunConfig> config = LoadRunConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
}

TEST(ConfigLoad, DirectoryIsRejected) {
  TempDir dir;
  absl::StatusOr<RunConfig> config = LoadRunConfig(dir.path());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr(dir.path()));
}

TEST(ConfigLoad, ErrorsArePrefixedWithPath) {
  TempDir dir;
  const std::string bad_type = dir.Write("a.yaml", "train:\n  lr: abc\n");
  absl::StatusOr<RunConfig> config = LoadRunConfig(bad_type);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(),
              AllOf(HasSubstr(bad_type + ": train.lr: expected a number"),
                    HasSubstr("line 2")));

  const std::string malformed = dir.Write("b.yaml", "data: [1, 2\n");
  config = LoadRunConfig(malformed);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(),
              HasSubstr(malformed + ": malformed YAML at line"));

  const std::string invalid = dir.Write("c.yaml", "model: {dim: 66}\n");
  config = LoadRunConfig(invalid);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(),
              HasSubstr(invalid + ": model.dim: must be divisible"));
}

TEST(ConfigLoad, ReadsValidFile) {
  TempDir dir;
  const std::string path = dir.Write("ok.yaml", "seed: 7\ndemo: {rounds: 2}\n");
  absl::StatusOr<RunConfig> config = LoadRunConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->seed, 7u);
  EXPECT_EQ(config->demo.rounds, 2);
}

// Every shipped run config is valid as it stands.
TEST(ConfigFiles, EveryShippedConfigLoads) {
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(
           std::string(LAYERFL_SOURCE_DIR) + "/configs")) {
    // *_grid.yaml are experiment grids (experiments_test loads them).
    const std::string stem = entry.path().stem().string();
    const bool grid = absl::EndsWith(stem, "_grid");
    if (entry.path().extension() != ".yaml" || grid) continue;
    absl::StatusOr<RunConfig> c = LoadRunConfig(entry.path().string());
    EXPECT_TRUE(c.ok()) << entry.path() << ": " << c.status();
    ++loaded;
  }
  EXPECT_GE(loaded, 7);
}

// The config the coordinator sends its clients reads back to the same
// config, field for field and bit for bit, for every shipped config.
TEST(ConfigYaml, EveryShippedConfigRoundTripsExactly) {
  int checked = 0;
  for (const std::string dir : {"/configs", "/configs/experiments"}) {
    for (const auto& entry : std::filesystem::directory_iterator(
             std::string(LAYERFL_SOURCE_DIR) + dir)) {
      const std::string stem = entry.path().stem().string();
      if (entry.path().extension() != ".yaml") continue;
      absl::StatusOr<RunConfig> c = LoadRunConfig(entry.path().string());
      if (!c.ok()) continue;  // grids (experiments_test checks them)
      const std::string yaml = RunConfigToYaml(*c);
      absl::StatusOr<RunConfig> back = ParseRunConfig(yaml);
      ASSERT_TRUE(back.ok()) << entry.path() << ": " << back.status() << "\n"
                             << yaml;
      ExpectConfigEq(*back, *c);
      EXPECT_EQ(RunConfigToYaml(*back), yaml) << entry.path();
      ++checked;
    }
  }
  EXPECT_GE(checked, 10);
}

TEST(ConfigYaml, AwkwardValuesRoundTrip) {
  RunConfig c;
  c.seed = 18446744073709551615ull;
  c.train.lr = 0.1 + 0.2;  // 0.30000000000000004
  c.data.alpha = 1e-300;
  c.selection.lambda = 1.0 / 3.0;
  c.privacy.dp.delta = 4.9406564584124654e-324;  // the smallest double
  c.federated.run_dir = "true";                  // a string that reads as a bool
  c.profile.cache_dir = "0.5";                   // ... as a number
  c.pretrain.checkpoint = "a: b # c";
  c.model.kind = "torchscript";
  c.model.torchscript_path = "m.pt";
  c.data.test_tsv = "";
  c.model.groups = {{"embed", {"*"}}, {"head", {"fc.?", "[x]"}}};
  c.model.common = {"head"};
  c.demo.layers = {"embed"};
  c.pretrain.label_map = {};
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  absl::StatusOr<RunConfig> back = ParseRunConfig(RunConfigToYaml(c));
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << RunConfigToYaml(c);
  ExpectConfigEq(*back, c);
  EXPECT_EQ(back->train.lr, 0.1 + 0.2);
  EXPECT_EQ(back->privacy.dp.delta, 4.9406564584124654e-324);
  EXPECT_EQ(back->federated.run_dir, "true");
  EXPECT_EQ(back->pretrain.checkpoint, "a: b # c");
  EXPECT_TRUE(back->pretrain.label_map.empty());
}

TEST(ConfigSameRun, NamesTheFirstDifferingFieldWithBothValues) {
  RunConfig run;
  run.train.lr = 0.05;
  RunConfig local = run;
  EXPECT_TRUE(CheckSameRun(local, run).ok());
  local.train.lr = 0.9;
  absl::Status s = CheckSameRun(local, run);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "train.lr: this config has 0.9, the run's has 0.05");
  // The first in the config's order: model comes before train.
  local.model.dim = 32;
  EXPECT_EQ(CheckSameRun(local, run).message(),
            "model.dim: this config has 32, the run's has 64");
  RunConfig seq = run;
  seq.model.common = {"head"};
  EXPECT_EQ(CheckSameRun(seq, run).message(),
            "model.common: this config has [head], the run's has []");
  RunConfig nested = run;
  nested.privacy.dp.enabled = true;
  EXPECT_EQ(CheckSameRun(nested, run).message(),
            "privacy.dp.enabled: this config has true, the run's has false");
}

TEST(ConfigSameRun, MachineLocalFieldsMayDiffer) {
  RunConfig run;
  RunConfig local = run;
  local.threads = 7;
  local.data.dir = "/mnt/fmnist";
  local.pretrain.checkpoint = "/tmp/p.pt";
  local.federated.run_dir = "/var/runs";
  local.profile.cache_dir = "/var/cache";
  local.profile.reps = 9;
  local.demo.rounds = 3;
  local.devices.speed_min = 0.5;
  EXPECT_TRUE(CheckSameRun(local, run).ok()) << CheckSameRun(local, run);
  EXPECT_TRUE(IsMachineLocalField("threads"));
  EXPECT_TRUE(IsMachineLocalField("demo.layers"));
  EXPECT_TRUE(IsMachineLocalField("sim.parallel_clients"));
  EXPECT_FALSE(IsMachineLocalField("train.lr"));
  EXPECT_FALSE(IsMachineLocalField("data.num_clients"));
  EXPECT_TRUE(IsMachineLocalField("data.train_path"));
  EXPECT_TRUE(IsMachineLocalField("data.test_path"));
  EXPECT_FALSE(IsMachineLocalField("data.labels"));
  EXPECT_FALSE(IsMachineLocalField("seed"));
}

TEST(ConfigSameRun, WithMachineLocalFieldsKeepsTheRunsAndTakesTheMachines) {
  RunConfig run;
  run.train.lr = 0.05;
  run.threads = 2;
  run.data.dir = "/coordinator/data";
  RunConfig local;
  local.train.lr = 0.9;
  local.threads = 7;
  local.data.dir = "/client/data";
  absl::StatusOr<RunConfig> out = WithMachineLocalFields(run, local);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->train.lr, 0.05);
  EXPECT_EQ(out->threads, 7);
  EXPECT_EQ(out->data.dir, "/client/data");
  EXPECT_TRUE(CheckSameRun(*out, run).ok());
}


// A client without a config file takes none of the coordinator's
// machine-local fields but where the run's dataset is installed; the
// coordinator never serves its experiment seeds.
TEST(ConfigSameRun, NoLocalConfigTakesNoneOfTheCoordinatorsMachineFields) {
  RunConfig run;
  run.threads = 1;
  run.profile.cache_dir = "/coordinator/cache";
  run.pretrain.checkpoint = "/coordinator/pretrained.ckpt";
  run.federated.run_dir = "/coordinator/run";
  run.data.dir = "/usr/share/datasets/fashion-mnist";
  run.privacy.dp.noise_seed = 11;
  run.privacy.dp.insecure_sampling_seed = 12;
  absl::StatusOr<RunConfig> out = WithDefaultMachineLocalFields(run);
  ASSERT_TRUE(out.ok()) << out.status();
  const RunConfig defaults;
  EXPECT_EQ(out->threads, defaults.threads);
  EXPECT_EQ(out->profile.cache_dir, defaults.profile.cache_dir);
  EXPECT_EQ(out->pretrain.checkpoint, defaults.pretrain.checkpoint);
  EXPECT_EQ(out->federated.run_dir, defaults.federated.run_dir);
  EXPECT_EQ(out->privacy.dp.noise_seed, 0u);
  EXPECT_EQ(out->data.dir, "/usr/share/datasets/fashion-mnist");
  EXPECT_TRUE(IsMachineLocalField("privacy.dp.noise_seed"));
  EXPECT_TRUE(IsMachineLocalField("privacy.dp.insecure_sampling_seed"));

  absl::StatusOr<RunConfig> served = ParseRunConfig(ServedRunConfigYaml(run));
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(served->privacy.dp.noise_seed, 0u);
  EXPECT_EQ(served->privacy.dp.insecure_sampling_seed, 0u);
  EXPECT_EQ(ServedRunConfigYaml(run).find("11"), std::string::npos);
}

// Local DP adds only each client's share of the noise: without secure
// aggregation the coordinator would see every update nearly in the clear.
TEST(ConfigRules, LocalDpNeedsSecureAggregation) {
  RunConfig c;
  c.federated.aggregation = "uniform";
  c.privacy.dp.enabled = true;
  c.privacy.dp.mode = "local";
  EXPECT_THAT(std::string(c.Validate().message()),
              HasSubstr("privacy.dp.mode: 'local' needs "
                        "privacy.secure_aggregation.enabled: true"));
  c.privacy.secure_aggregation.enabled = true;
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
}

}  // namespace
}  // namespace layerfl

namespace layerfl {
namespace {

// importance.source / depth and what they need, each error naming the field.
TEST(ConfigImportanceSource, RefusalsNameTheField) {
  EXPECT_THAT(ParseError("importance:\n  source: free\n"),
              HasSubstr("importance.source: must be one of"));
  EXPECT_THAT(ParseError("importance:\n  decay: 0\n"),
              HasSubstr("importance.decay: must be in (0, 1], got 0"));
  EXPECT_THAT(ParseError("importance:\n  batch_size: -1\n"),
              HasSubstr("importance.batch_size"));
  EXPECT_THAT(ParseError("importance:\n  refresh_period: -2\n"),
              HasSubstr("importance.refresh_period"));
  EXPECT_THAT(ParseError("importance:\n  depth: shallow\n"),
              HasSubstr("importance.depth: must be one of"));
  EXPECT_THAT(
      ParseError("importance:\n  source: train\nselection:\n  strategy: snr\n"),
      HasSubstr("importance.source: scores from one batch"));
  EXPECT_THAT(ParseError("importance:\n  source: train\nfederated:\n  mode: "
                         "async\n"),
              HasSubstr("importance.source: needs federated.mode: sync (this "
                        "run is async)"));
  EXPECT_THAT(ParseError("importance:\n  depth: affordable\nfederated:\n  "
                         "mode: async\n"),
              HasSubstr("importance.depth: needs federated.mode: sync"));
  EXPECT_THAT(ParseError("importance:\n  source: train\nprivacy:\n  dp:\n    "
                         "enabled: true\nfederated:\n  aggregation: uniform\n"),
              HasSubstr("importance.source: sends the first step's scores "
                        "unprivatised"));
  absl::StatusOr<RunConfig> ok = ParseRunConfig(
      "importance:\n  source: train\n  batches: 1\n  depth: affordable\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->importance.source, "train");
  EXPECT_EQ(ok->importance.decay, 0.8);
}

}  // namespace
}  // namespace layerfl
