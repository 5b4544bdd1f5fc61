#ifndef LAYERFL_COMMON_CONFIG_CONFIG_H_
#define LAYERFL_COMMON_CONFIG_CONFIG_H_

// The run configuration: one YAML file parsed once into these typed structs,
// checked by Validate(), and read-only afterwards. Every field states its
// default; a field absent from the YAML keeps it. Unknown keys, wrong types and
// out-of-range values are refused with InvalidArgument naming the field path
// and the value, e.g. "train.lr: must be > 0, got -1".
//
// Thread-compatible: a const RunConfig may be shared freely.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace layerfl {

// A layer group of a TorchScript model, declared by parameter-name patterns.
// A pattern is a glob over the full parameter name ('*' any run of characters,
// '?' one character), e.g. "encoder.layer.3.*".
struct LayerGroupPattern {
  std::string name;                   // required, unique
  std::vector<std::string> patterns;  // required, at least one
};

struct ModelConfig {
  // "vit" (images), "text" (Transformer encoder), "torchscript", or "hf": a
  // Hugging Face checkpoint directory (hf_dir) of a supported architecture,
  // its layer groups following the architecture.
  std::string kind = "vit";
  int num_classes = 10;  // output classes of the head, >= 2
  int dim = 64;          // embedding width, divisible by heads
  int depth = 4;         // transformer blocks, >= 1
  int heads = 4;         // attention heads, >= 1
  int mlp_dim = 128;     // hidden width of each block's MLP, >= 1
  // ViT only.
  int image_size = 28;  // square input side, divisible by patch_size
  int patch_size = 7;   // square patch side, >= 1
  int channels = 1;     // input channels, >= 1
  // Text only.
  int vocab_size = 5000;  // tokenizer vocabulary incl. <pad>=0 and <unk>=1
  int max_len = 64;       // tokens per example (truncate/pad), >= 1
  // TorchScript only: the file written by torch.jit.save and its groups, in
  // order from input to output. Every parameter must match exactly one group.
  std::string torchscript_path;
  std::vector<LayerGroupPattern> groups;
  // hf only: the checkpoint directory (config.json, model.safetensors or its
  // index and shards; the tokenizer's files for text models,
  // preprocessor_config.json for vision models). Machine-local.
  std::string hf_dir;
  // Group names never trained (frozen) or trained by every client (common).
  std::vector<std::string> frozen;
  std::vector<std::string> common;
};

struct DataConfig {
  // "fashion_mnist" (IDX files under `dir`), "tsv" (label<TAB>text files),
  // "image_folder" (a directory per class of JPEG/PNG files), "jsonl" (one
  // JSON object per line) or "csv" (RFC 4180 with a header row).
  std::string dataset = "fashion_mnist";
  std::string dir = "/usr/share/datasets/fashion-mnist";
  std::string train_tsv;  // tsv only: training file
  std::string test_tsv;   // tsv only: test file
  // image_folder, jsonl, csv: the training and test data (a directory for
  // image_folder, a file otherwise). Machine-local.
  std::string train_path;
  std::string test_path;
  // jsonl, csv: the fields (JSON keys, CSV header names) of the text and of
  // its label. Labels are strings (JSON integers are taken as their decimal
  // text).
  std::string text_field = "text";
  std::string label_field = "label";
  // image_folder, jsonl, csv: the class names in label-id order. Empty = the
  // training data's classes (directory names or label strings) sorted
  // bytewise. At most model.num_classes names, distinct, non-empty, no line
  // breaks.
  std::vector<std::string> labels;
  // image_folder, jsonl, csv: the metadata field that names each example's
  // group (a domain, a language) for partition by_group. For jsonl/csv a
  // field of each record; for image_folder, when set, the layout is
  // <path>/<group>/<class>/<file> instead of <path>/<class>/<file>. Empty =
  // no groups.
  std::string group_field;
  // image_folder without a checkpoint's preprocessor_config.json: resampling
  // ("bilinear" or "bicubic") to model.image_size square, and the per-channel
  // normalisation (p / 255 - mean) / std, model.channels entries each (1:
  // grey, 3: RGB). Empty = 0.5 for every channel.
  std::string resample = "bilinear";
  std::vector<double> image_mean;
  std::vector<double> image_std;
  // "iid", "dirichlet" (label skew), "feature_shift" (one transform domain
  // per client; fashion_mnist) or "by_group" (each client holds examples of
  // one group of group_field; groups handed out round-robin).
  std::string partition = "iid";
  int num_clients = 20;  // >= 1
  double alpha = 0.5;    // dirichlet concentration, > 0
  // feature_shift: the domains handed out round-robin to clients; each is one
  // of identity, rotate90, rotate180, invert, blur, noise, contrast.
  std::vector<std::string> domains = {"identity", "rotate90", "invert",
                                      "blur",     "noise",    "contrast"};
  // Fraction of the training images held out for pretraining (disjoint from
  // the clients' data), in [0, 1).
  double pretrain_fraction = 0.5;
  int64_t max_test_examples = 0;  // 0 = whole test set; else the first N
};

struct TrainConfig {
  std::string optimizer = "sgd";  // "sgd", "adam" or "adamw"
  double lr = 0.05;               // > 0
  double momentum = 0.9;          // sgd only, in [0, 1)
  double weight_decay = 0.0;      // >= 0
  int batch_size = 32;            // >= 1
  int local_steps = 20;           // >= 1 unless local_epochs > 0
  int local_epochs = 0;           // > 0 overrides local_steps
  double grad_clip = 0.0;         // max global grad norm; 0 = off
};

struct ImportanceConfig {
  // "sq_grad_norm" (the paper's), "rgn" (grad norm / param norm) or "snr"
  // (mean^2 / variance of the gradient across batches).
  std::string metric = "sq_grad_norm";
  int batches = 4;  // batches the scores are averaged over, >= 1 (snr: >= 2)
  // Examples per scoring batch, >= 0; 0 = train.batch_size.
  int batch_size = 0;
  // Where scores come from: "pass" (the paper's: a scoring pass every
  // federated.selection_period rounds) or "train" (a client's trained groups
  // are scored by the first step of its local training, which is taken at
  // the global model, at no extra cost; a scoring pass runs only for a
  // client without scores, or every refresh_period rounds; selection reads
  // the other groups' older scores, decayed toward the cohort's mean: see
  // server/round/score_book.h). train needs metric sq_grad_norm or rgn and
  // the synchronous mode without privacy.
  std::string source = "pass";
  // source train: rounds between a client's scoring passes, >= 0; 0 = only
  // its first.
  int refresh_period = 0;
  // source train: weight of an own score per round of age, in (0, 1]; the
  // cohort's mean for the group gets the rest (1 = no decay).
  double decay = 0.8;
  // How deep a scoring pass goes: "full" (every trainable group, or as deep
  // as a memory limit allows) or "affordable" (under budget.unit time, also
  // no lower than the lowest group the client could afford to train this
  // round with the pass priced in: the profile measures the pass per depth).
  std::string depth = "full";
};

struct PretrainConfig {
  // Start from the pretrained ViT (true) or from random initialisation.
  bool enabled = true;
  // Where the pretrained checkpoint is cached; built when missing.
  std::string checkpoint = "cache/pretrained_vit.pt";
  // The pretraining task: fine class c is trained as label_map[c] (another,
  // coarser task than the federated one). Empty = the identity.
  std::vector<int> label_map = {0, 1, 2, 1, 2, 3, 0, 3, 4, 3};
  int epochs = 2;       // >= 1
  double lr = 1e-3;     // Adam learning rate, > 0
  int batch_size = 64;  // >= 1
};

// The single-client fine-tuning demo (make demo, until the federated demo).
struct DemoConfig {
  int client = 0;  // partition index, in [0, num_clients)
  std::vector<std::string> layers = {"block3", "head"};  // groups to train
  int rounds = 5;  // train/evaluate cycles of local_steps each, >= 1
};

// The federated run: the coordinator's round engine.
struct FederatedConfig {
  // "sync": federated rounds; "local": the no-federation baseline of the
  // simulator: every client trains alone on its own data from the same start
  // (its layers picked once by `top` within its budget) for the same rounds
  // and steps, and a round's accuracy is the mean over the clients' own
  // models on the test set. "async": buffered asynchronous aggregation
  // (FedBuff, Nguyen et al. 2022): clients_per_round clients train at once,
  // each from the global version it fetched; the coordinator folds every
  // arriving update into a buffer, weighted per layer by the staleness
  // function of how many versions that layer moved since the client fetched
  // it, and commits every buffer_size updates; `rounds` counts commits.
  std::string mode = "sync";
  int rounds = 20;             // >= 1
  int clients_per_round = 10;  // >= 0; 0 = every eligible client
  // Quorum: updates needed to commit a round, >= 1, <= clients_per_round when
  // clients_per_round > 0, and <= data.num_clients.
  int min_clients = 1;
  // Score every N rounds (strategies that need scores), >= 1.
  int selection_period = 1;
  int eval_every = 1;  // evaluate the global model every N rounds, >= 1
  // Test examples per forward pass of an evaluation, >= 1. Evaluation's
  // activations grow with it (a ViT-B-sized TorchScript model: ~250 MB at
  // 32, ~1 GB at 256, on top of the model): the coordinator's peak memory.
  int eval_batch_size = 256;
  double round_deadline_s = 300.0;  // seconds a round waits for updates, > 0
  // A round that misses quorum is retried this many times, then the run
  // fails; >= 0.
  int max_round_retries = 3;
  // "weighted" (by each update's sample count) or "uniform".
  std::string aggregation = "weighted";
  double server_lr = 1.0;  // server step on the averaged delta, > 0
  // Where checkpoints/, metrics.jsonl and reports go; non-empty.
  std::string run_dir = "runs/demo";
  int keep_checkpoints = 3;  // newest checkpoints kept, >= 1
  bool resume = true;  // resume from the last checkpoint in run_dir if any
  // mode async: updates per commit, >= 1.
  int buffer_size = 10;
  // mode async: an update trained from a global version more than this many
  // commits old is refused (too_stale), >= 0.
  int max_staleness = 20;
  // mode async: the weight s(t) of a layer that moved t versions since the
  // client fetched it: "constant" (1), "polynomial" ((1 + t)^-exponent;
  // exponent 0.5 is FedBuff's 1/sqrt(1 + t)) or "hinge" (1 while t <= b,
  // then 1 / (a (t - b) + 1); Xie et al. 2019).
  std::string staleness = "polynomial";
  double staleness_exponent = 0.5;  // polynomial, >= 0
  double staleness_hinge_a = 10.0;  // hinge, >= 0
  int staleness_hinge_b = 4;        // hinge, >= 0
  // mode async: a client's layers are selected jointly with up to this many
  // of the clients training at that moment (whose rows are then dropped), so
  // that strategic's regulariser sees who else is in flight; 0 = the client
  // alone. >= 0.
  int async_cohort = 0;
};

// How each round picks the layer groups every client trains.
struct SelectionConfig {
  // One of full, top, bottom, both, random, head, rgn, snr, importance,
  // strategic.
  std::string strategy = "strategic";
  // Regulariser weight, >= 0, normalised by the number of participants: the
  // penalty is lambda / (N - 1) * sum_l n_l (N - n_l), so one client taking a
  // layer none of the other N - 1 take costs lambda (and joining one all of
  // them take gains lambda) whatever N. With normalised scores a client's
  // whole score mass is 1: lambda = 0.2 gives up such a lone layer unless it
  // holds more than 20% of the client's mass. Used by strategic, rgn, snr.
  double lambda = 0.2;
  // Divide each client's scores by their sum before selecting.
  bool normalize_scores = true;
  double time_limit_ms = 500.0;  // solver time limit, > 0
  double target_gap = 0.01;      // solver stops at this relative gap, >= 0
  int starts = 8;                // heuristic restarts, >= 1
};

// Each client's training budget. The numeric bounds are checked whatever the
// distribution, so defaults of fields a distribution does not use stay valid.
struct BudgetConfig {
  // "layers", "params", "time" (seconds of client compute per round: the
  // scoring pass when the round scores plus the local steps) or "memory" (MiB
  // of peak training memory); time and memory are depth-aware and come from
  // each client's measured training profile. Their draws are real numbers;
  // layers and params round to integers.
  std::string unit = "layers";
  // "fixed" (every client gets `value`), "uniform" in [min, max],
  // "truncated_normal" (mean, std) truncated to [min, max], or "declared"
  // (each client states its own).
  std::string distribution = "truncated_normal";
  double value = 2.0;  // fixed: every client's budget, > 0
  double min = 1.0;    // uniform/truncated_normal lower bound, > 0
  double max = 4.0;    // uniform/truncated_normal upper bound, >= min
  double mean = 2.5;   // truncated_normal mean (before truncation), finite
  double std = 1.0;    // truncated_normal std (before truncation), > 0
};

// Heterogeneous simulated devices (layerfl-sim, layerfl-experiments): each
// virtual client's speed relative to this machine, log-uniform in
// [speed_min, speed_max] from (seed, client id). A time cost is the measured
// profile's divided by the speed. Real clients measure their own machine and
// ignore this section.
struct DevicesConfig {
  double speed_min = 1.0;  // > 0
  double speed_max = 1.0;  // >= speed_min
  // federated.mode async in the simulator: the simulated seconds a training
  // task and a scoring pass take on a device of speed 1 (a device of speed v
  // takes them / v); the simulated clock orders the arrivals. > 0.
  double train_s = 1.0;
  double score_s = 0.5;
};

// The in-process simulator's own settings (machine-local: a coordinator and
// its clients ignore them).
struct SimConfig {
  // Virtual clients of a round trained at once, each on its own model
  // replica and thread (with `threads` intra-op threads each); the run is
  // bit-identical to parallel_clients: 1. In [1, 64].
  int parallel_clients = 1;
};

// The per-machine training profile behind the time and memory units
// (common/trainer/profile.h).
struct ProfileConfig {
  // Profiles are cached here per machine, model, batch size and threads; ""
  // measures at every start.
  std::string cache_dir = "cache";
  int steps = 4;  // steps per measured training call, >= 1
  int reps = 3;   // measured calls per layer set, >= 1
};

// How layerfl-coordinator and its clients talk. The simulator has no
// transport and ignores this section; with encoding float32 and ordered
// aggregation a distributed run ends bit-identical to it.
struct TransportConfig {
  // Tensor values on the wire: "float32", "float16" or "bfloat16" (the
  // latter two round every value sent, both ways: they change the results).
  std::string encoding = "float32";
  int64_t chunk_kb = 1024;  // download chunk payload, KiB, in [1, 3072]
  int64_t max_chunk_kb =
      2048;  // largest upload chunk accepted, KiB, in [1, 3072]
  // Add each round's updates in client-id order (bit-identical to the
  // simulator; early updates wait in memory for their turn), or false: fold
  // each in as it arrives (O(model) memory; sums in arrival order).
  // federated.mode async always takes arrival order.
  bool ordered_aggregation = true;
  // Ordered aggregation: updates waiting for their turn beyond this many MiB
  // of values wait on disk (federated.run_dir/held) instead of memory, >= 0.
  int64_t max_held_mb = 1024;
  // The first round waits until this many clients joined (0 = every one of
  // data.num_clients), >= 0, or wait_for_clients_s passed; then it starts
  // with whoever joined once federated.min_clients are there.
  int wait_for_clients = 0;
  double wait_for_clients_s = 60.0;  // > 0
  double client_timeout_s =
      60.0;  // a client silent this long leaves the run, > 0
  double heartbeat_s =
      5.0;  // heartbeat period told to clients, > 0, < client_timeout_s
  double max_poll_s = 10.0;  // longest a task long-poll is held, > 0
  // After the last round, keep telling clients the run is over until each
  // has heard it, or this long, > 0.
  double linger_s = 10.0;
};

// User-level differential privacy of the federated run (DP-FedAvg over the
// sparse per-layer updates; common/privacy/dp.h). Off by default.
struct DpConfig {
  bool enabled = false;
  // "central": the coordinator clips every update and noises each layer's
  // sum; "local": each client clips its own update and adds its share of the
  // noise (std noise_multiplier * clip_norm / sqrt(n_l) per value of a layer
  // with n_l participants), so that the sum carries the full noise without
  // the coordinator adding any (for secure aggregation).
  std::string mode = "central";
  // "fixed" or "adaptive" (Andrew et al. 2021: the clip norm moves toward
  // target_quantile of the update norms; central mode only).
  std::string clipping = "fixed";
  double clip_norm = 1.0;  // L2 norm of a whole update (initial if adaptive)
  // Noise std / clip norm of the update sums, > 0; with adaptive clipping
  // the clip count takes its share and the updates get a little more.
  double noise_multiplier = 1.0;
  double target_quantile = 0.5;  // adaptive: in (0, 1)
  double clip_lr = 0.2;          // adaptive: geometric step, > 0
  // adaptive: std of the noise on the count of unclipped updates, >= 0;
  // 0 = max(clients_per_round / 20, noise_multiplier).
  double count_noise_std = 0.0;
  // The importance scores are released too: normalised to sum 1, clipped to
  // score_clip, noised with std score_noise_multiplier * score_clip.
  double score_clip = 1.0;               // > 0
  double score_noise_multiplier = 1.0;  // > 0
  double delta = 1e-5;                   // in (0, 1)
  // Stop before a round whose release would take epsilon past this; 0 = no
  // limit, >= 0.
  double target_epsilon = 0.0;
  // 0: noise keys from the operating system (production). Any other value
  // derives every key from it, so that runs are reproducible and the
  // simulator and the daemons draw the same noise; whoever knows the seed
  // can subtract the noise: experiments only. Machine-local: the coordinator
  // never sends it; a client draws reproducible noise only when its own
  // --config sets it.
  uint64_t noise_seed = 0;
  // With DP on, each round's participants are drawn with the operating
  // system's CSPRNG (the accountant's amplification by subsampling assumes
  // nobody can predict the sample). Any other value draws them from it
  // instead, reproducibly, and every metrics line says
  // "sampling":"insecure_seed": experiments only. Machine-local.
  uint64_t insecure_sampling_seed = 0;
};

// Secure aggregation (common/secagg): the coordinator learns each layer's
// sum over the clients that trained it, never one client's update. Off by
// default; needs federated.aggregation: uniform, and with privacy.dp the
// local mode (the coordinator cannot clip what it cannot see).
struct SecureAggregationConfig {
  bool enabled = false;
  // The shares' threshold as a fraction of the round's participants that
  // advertised keys, in (0, 1]: t = max(2, ceil(threshold * n)); a round
  // with fewer than t surviving updates is abandoned and retried. Fewer than
  // t colluding clients learn nothing from the shares.
  double threshold = 0.66;
  // Every update value is clipped to [-value_range, value_range] before it
  // is quantized (with headroom for the round's participants), > 0. With
  // privacy.dp local noise, leave room for it.
  double value_range = 1.0;
};

struct PrivacyConfig {
  DpConfig dp;
  SecureAggregationConfig secure_aggregation;
};

struct RunConfig {
  uint64_t seed = 1;  // every random draw derives from it
  int threads = 2;    // LibTorch intra-op threads, >= 1
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  ImportanceConfig importance;
  PretrainConfig pretrain;
  DemoConfig demo;
  FederatedConfig federated;
  SelectionConfig selection;
  BudgetConfig budget;
  DevicesConfig devices;
  SimConfig sim;
  ProfileConfig profile;
  TransportConfig transport;
  PrivacyConfig privacy;

  // Checks every field; the first violation is returned as InvalidArgument
  // "<field.path>: <rule>, got <value>".
  absl::Status Validate() const;
};

// Parses YAML text (unknown keys and wrong types are errors naming the field)
// and validates the result.
absl::StatusOr<RunConfig> ParseRunConfig(const std::string& yaml_text);

// Whether budget.unit (time, memory) needs each client's training profile.
bool NeedsProfiles(const RunConfig& config);

// The most clients a round samples: federated.clients_per_round, or
// data.num_clients when that is 0.
int MaxClientsPerRound(const RunConfig& config);

// The std of the noise on adaptive clipping's count of unclipped updates:
// privacy.dp.count_noise_std, or its default when that is 0.
double ClipCountNoiseStd(const RunConfig& config);

// The whole config as YAML, every field written out: ParseRunConfig of it
// gives back `config` exactly (doubles round-trip bit for bit). What the
// coordinator sends its clients.
std::string RunConfigToYaml(const RunConfig& config);

// What the coordinator serves its clients (GetRunConfig): RunConfigToYaml
// of `config` with the coordinator's experiment seeds
// (privacy.dp.noise_seed, privacy.dp.insecure_sampling_seed) at 0. Whoever
// knows the noise seed can subtract the noise, and the sampling seed lets
// anyone predict who takes part: neither leaves the coordinator.
std::string ServedRunConfigYaml(const RunConfig& config);

// Fields that belong to the machine a process runs on rather than to the
// run: threads, paths (data.dir, data.train_tsv, data.test_tsv,
// model.torchscript_path, pretrain.checkpoint, federated.run_dir,
// profile.cache_dir), how a profile is measured (profile.steps, reps), the
// experiment seeds privacy.dp.noise_seed and insecure_sampling_seed, and
// the simulator-only sections (demo, devices). Every other field defines
// the run and must be the same on every machine. `path` as "train.lr".
bool IsMachineLocalField(absl::string_view path);

// `run` for a machine that has no config file of its own: every
// machine-local field at its default, except the dataset paths (data.dir,
// data.train_tsv, ..., data.test_path), which say where the run's dataset is
// installed (a client's own --data_dir or --dataset_dir replaces them), and
// model.hf_dir, where the run's checkpoint is (a client's --hf_dir replaces
// it).
// Validated: a run that needs a path only a local config can give (e.g.
// model.torchscript_path) is InvalidArgument naming it.
absl::StatusOr<RunConfig> WithDefaultMachineLocalFields(const RunConfig& run);

// OK when `local` and `run` agree on every field that defines the run; else
// FailedPrecondition naming the first field that differs, in the config's
// order, with both values: "train.lr: this config has 0.9, the run's has
// 0.05".
absl::Status CheckSameRun(const RunConfig& local, const RunConfig& run);

// `run` with the machine-local fields of `local`, validated.
absl::StatusOr<RunConfig> WithMachineLocalFields(const RunConfig& run,
                                                 const RunConfig& local);

// Reads and parses a YAML file; a missing file is NotFound naming the path.
absl::StatusOr<RunConfig> LoadRunConfig(const std::string& path);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_CONFIG_CONFIG_H_
