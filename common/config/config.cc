#include "common/config/config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/config/yaml_read.h"
#include "common/util/status_macros.h"
#include "yaml-cpp/yaml.h"

namespace layerfl {
namespace {

using yaml_read::Bind;
using yaml_read::BindSection;
using yaml_read::Field;
using yaml_read::ReadMap;
using yaml_read::Style;

}  // namespace

// Outside the unnamed namespace, so that yaml_read's sequence reader finds it
// next to LayerGroupPattern.
absl::Status Read(const YAML::Node& node, const std::string& path,
                  LayerGroupPattern* out, const Style& style) {
  if (node.IsNull()) return yaml_read::TypeError(node, path, "a map", style);
  return ReadMap(node, path,
                 {Bind("name", &out->name), Bind("patterns", &out->patterns)},
                 style);
}

YAML::Node Write(const LayerGroupPattern& group) {
  YAML::Node node(YAML::NodeType::Map);
  node["name"] = yaml_read::Write(group.name);
  node["patterns"] = yaml_read::Write(group.patterns);
  return node;
}

namespace {

std::vector<Field> ModelFields(ModelConfig* c) {
  return {Bind("kind", &c->kind),
          Bind("num_classes", &c->num_classes),
          Bind("dim", &c->dim),
          Bind("depth", &c->depth),
          Bind("heads", &c->heads),
          Bind("mlp_dim", &c->mlp_dim),
          Bind("image_size", &c->image_size),
          Bind("patch_size", &c->patch_size),
          Bind("channels", &c->channels),
          Bind("vocab_size", &c->vocab_size),
          Bind("max_len", &c->max_len),
          Bind("torchscript_path", &c->torchscript_path),
          Bind("groups", &c->groups),
          Bind("hf_dir", &c->hf_dir),
          Bind("frozen", &c->frozen),
          Bind("common", &c->common)};
}

std::vector<Field> DataFields(DataConfig* c) {
  return {Bind("dataset", &c->dataset),
          Bind("dir", &c->dir),
          Bind("train_tsv", &c->train_tsv),
          Bind("test_tsv", &c->test_tsv),
          Bind("train_path", &c->train_path),
          Bind("test_path", &c->test_path),
          Bind("text_field", &c->text_field),
          Bind("label_field", &c->label_field),
          Bind("labels", &c->labels),
          Bind("group_field", &c->group_field),
          Bind("resample", &c->resample),
          Bind("image_mean", &c->image_mean),
          Bind("image_std", &c->image_std),
          Bind("partition", &c->partition),
          Bind("num_clients", &c->num_clients),
          Bind("alpha", &c->alpha),
          Bind("domains", &c->domains),
          Bind("pretrain_fraction", &c->pretrain_fraction),
          Bind("max_test_examples", &c->max_test_examples)};
}

std::vector<Field> TrainFields(TrainConfig* c) {
  return {Bind("optimizer", &c->optimizer),
          Bind("lr", &c->lr),
          Bind("momentum", &c->momentum),
          Bind("weight_decay", &c->weight_decay),
          Bind("batch_size", &c->batch_size),
          Bind("local_steps", &c->local_steps),
          Bind("local_epochs", &c->local_epochs),
          Bind("grad_clip", &c->grad_clip)};
}

std::vector<Field> ImportanceFields(ImportanceConfig* c) {
  return {Bind("metric", &c->metric),
          Bind("batches", &c->batches),
          Bind("batch_size", &c->batch_size),
          Bind("source", &c->source),
          Bind("refresh_period", &c->refresh_period),
          Bind("decay", &c->decay),
          Bind("depth", &c->depth)};
}

std::vector<Field> PretrainFields(PretrainConfig* c) {
  return {Bind("enabled", &c->enabled),
          Bind("checkpoint", &c->checkpoint),
          Bind("label_map", &c->label_map),
          Bind("epochs", &c->epochs),
          Bind("lr", &c->lr),
          Bind("batch_size", &c->batch_size)};
}

std::vector<Field> DemoFields(DemoConfig* c) {
  return {Bind("client", &c->client), Bind("layers", &c->layers),
          Bind("rounds", &c->rounds)};
}

std::vector<Field> FederatedFields(FederatedConfig* c) {
  return {Bind("mode", &c->mode), Bind("rounds", &c->rounds),
          Bind("clients_per_round", &c->clients_per_round),
          Bind("min_clients", &c->min_clients),
          Bind("selection_period", &c->selection_period),
          Bind("eval_every", &c->eval_every),
          Bind("round_deadline_s", &c->round_deadline_s),
          Bind("max_round_retries", &c->max_round_retries),
          Bind("aggregation", &c->aggregation),
          Bind("server_lr", &c->server_lr),
          Bind("run_dir", &c->run_dir),
          Bind("keep_checkpoints", &c->keep_checkpoints),
          Bind("resume", &c->resume),
          Bind("buffer_size", &c->buffer_size),
          Bind("max_staleness", &c->max_staleness),
          Bind("staleness", &c->staleness),
          Bind("staleness_exponent", &c->staleness_exponent),
          Bind("staleness_hinge_a", &c->staleness_hinge_a),
          Bind("staleness_hinge_b", &c->staleness_hinge_b),
          Bind("async_cohort", &c->async_cohort),
          Bind("eval_batch_size", &c->eval_batch_size)};
}

std::vector<Field> SelectionFields(SelectionConfig* c) {
  return {Bind("strategy", &c->strategy),
          Bind("lambda", &c->lambda),
          Bind("normalize_scores", &c->normalize_scores),
          Bind("time_limit_ms", &c->time_limit_ms),
          Bind("target_gap", &c->target_gap),
          Bind("starts", &c->starts)};
}

std::vector<Field> BudgetFields(BudgetConfig* c) {
  return {Bind("unit", &c->unit),   Bind("distribution", &c->distribution),
          Bind("value", &c->value), Bind("min", &c->min),
          Bind("max", &c->max),     Bind("mean", &c->mean),
          Bind("std", &c->std)};
}

std::vector<Field> SimFields(SimConfig* c) {
  return {Bind("parallel_clients", &c->parallel_clients)};
}

std::vector<Field> DevicesFields(DevicesConfig* c) {
  return {Bind("speed_min", &c->speed_min), Bind("speed_max", &c->speed_max),
          Bind("train_s", &c->train_s), Bind("score_s", &c->score_s)};
}

std::vector<Field> ProfileFields(ProfileConfig* c) {
  return {Bind("cache_dir", &c->cache_dir), Bind("steps", &c->steps),
          Bind("reps", &c->reps)};
}

std::vector<Field> TransportFields(TransportConfig* c) {
  return {Bind("encoding", &c->encoding),
          Bind("chunk_kb", &c->chunk_kb),
          Bind("max_chunk_kb", &c->max_chunk_kb),
          Bind("ordered_aggregation", &c->ordered_aggregation),
          Bind("max_held_mb", &c->max_held_mb),
          Bind("wait_for_clients", &c->wait_for_clients),
          Bind("wait_for_clients_s", &c->wait_for_clients_s),
          Bind("client_timeout_s", &c->client_timeout_s),
          Bind("heartbeat_s", &c->heartbeat_s),
          Bind("max_poll_s", &c->max_poll_s),
          Bind("linger_s", &c->linger_s)};
}

std::vector<Field> DpFields(DpConfig* c) {
  return {Bind("enabled", &c->enabled),
          Bind("mode", &c->mode),
          Bind("clipping", &c->clipping),
          Bind("clip_norm", &c->clip_norm),
          Bind("noise_multiplier", &c->noise_multiplier),
          Bind("target_quantile", &c->target_quantile),
          Bind("clip_lr", &c->clip_lr),
          Bind("count_noise_std", &c->count_noise_std),
          Bind("score_clip", &c->score_clip),
          Bind("score_noise_multiplier", &c->score_noise_multiplier),
          Bind("delta", &c->delta),
          Bind("target_epsilon", &c->target_epsilon),
          Bind("noise_seed", &c->noise_seed),
          Bind("insecure_sampling_seed", &c->insecure_sampling_seed)};
}

std::vector<Field> SecureAggregationFields(SecureAggregationConfig* c) {
  return {Bind("enabled", &c->enabled), Bind("threshold", &c->threshold),
          Bind("value_range", &c->value_range)};
}

std::vector<Field> PrivacyFields(PrivacyConfig* c) {
  return {BindSection("dp", &c->dp, &DpFields),
          BindSection("secure_aggregation", &c->secure_aggregation,
                      &SecureAggregationFields)};
}

std::vector<Field> RunFields(RunConfig* c) {
  return {Bind("seed", &c->seed),
          Bind("threads", &c->threads),
          BindSection("model", &c->model, &ModelFields),
          BindSection("data", &c->data, &DataFields),
          BindSection("train", &c->train, &TrainFields),
          BindSection("importance", &c->importance, &ImportanceFields),
          BindSection("pretrain", &c->pretrain, &PretrainFields),
          BindSection("demo", &c->demo, &DemoFields),
          BindSection("federated", &c->federated, &FederatedFields),
          BindSection("selection", &c->selection, &SelectionFields),
          BindSection("budget", &c->budget, &BudgetFields),
          BindSection("devices", &c->devices, &DevicesFields),
          BindSection("sim", &c->sim, &SimFields),
          BindSection("profile", &c->profile, &ProfileFields),
          BindSection("transport", &c->transport, &TransportFields),
          BindSection("privacy", &c->privacy, &PrivacyFields)};
}

absl::Status ParseInto(const std::string& yaml_text, RunConfig* config) {
  try {
    const std::vector<YAML::Node> docs = YAML::LoadAll(yaml_text);
    if (docs.size() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected one YAML document, got ", docs.size()));
    }
    if (docs.empty()) return absl::OkStatus();
    return ReadMap(docs[0], "", RunFields(config), Style());
  } catch (const YAML::Exception& e) {
    std::string where =
        e.mark.is_null()
            ? std::string("malformed YAML")
            : absl::StrCat("malformed YAML at line ", e.mark.line + 1,
                           ", column ", e.mark.column + 1);
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", e.msg));
  }
}

// Text shown unquoted in a message, e.g. "[]" or "3 entries".
struct Raw {
  std::string text;
};

std::string Show(const Raw& raw) { return raw.text; }
std::string Show(const std::string& s) { return absl::StrCat("'", s, "'"); }
template <typename T>
std::string Show(T value) {
  return absl::StrCat(value);
}

template <typename T>
absl::Status Bad(absl::string_view path, absl::string_view rule, const T& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": ", rule, ", got ", Show(got)));
}

std::string Indexed(absl::string_view path, size_t i) {
  return absl::StrCat(path, "[", i, "]");
}

bool OneOf(const std::string& value, const std::vector<std::string>& allowed) {
  for (const std::string& a : allowed) {
    if (value == a) return true;
  }
  return false;
}

absl::Status CheckOneOf(absl::string_view path, const std::string& value,
                        const std::vector<std::string>& allowed) {
  if (OneOf(value, allowed)) return absl::OkStatus();
  return Bad(path,
             absl::StrCat("must be one of ", absl::StrJoin(allowed, ", ")),
             value);
}

absl::Status CheckAtLeast(absl::string_view path, int64_t value, int64_t min) {
  if (value >= min) return absl::OkStatus();
  return Bad(path, absl::StrCat("must be >= ", min), value);
}

absl::Status CheckFinite(absl::string_view path, double value) {
  if (std::isfinite(value)) return absl::OkStatus();
  return Bad(path, "must be finite", value);
}

// Comparisons are written so that NaN fails them.
absl::Status CheckPositive(absl::string_view path, double value) {
  RETURN_IF_ERROR(CheckFinite(path, value));
  if (value > 0) return absl::OkStatus();
  return Bad(path, "must be > 0", value);
}

absl::Status CheckNonNegative(absl::string_view path, double value) {
  RETURN_IF_ERROR(CheckFinite(path, value));
  if (value >= 0) return absl::OkStatus();
  return Bad(path, "must be >= 0", value);
}

absl::Status CheckUnitInterval(absl::string_view path, double value) {
  if (value >= 0 && value < 1) return absl::OkStatus();
  return Bad(path, "must be in [0, 1)", value);
}

absl::Status CheckNonEmpty(absl::string_view path, const std::string& value) {
  if (!value.empty()) return absl::OkStatus();
  return Bad(path, "must not be empty", value);
}

// Entries must be distinct and, when `groups` is given, name one of them.
absl::Status CheckGroupList(absl::string_view path,
                            const std::vector<std::string>& entries,
                            const std::set<std::string>* groups) {
  std::set<std::string> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string entry_path = Indexed(path, i);
    RETURN_IF_ERROR(CheckNonEmpty(entry_path, entries[i]));
    if (!seen.insert(entries[i]).second) {
      return Bad(entry_path, "must be distinct (listed twice)", entries[i]);
    }
    if (groups != nullptr && groups->count(entries[i]) == 0) {
      return Bad(entry_path, "must name a group of model.groups", entries[i]);
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateModel(const ModelConfig& m) {
  RETURN_IF_ERROR(
      CheckOneOf("model.kind", m.kind, {"vit", "text", "torchscript", "hf"}));
  RETURN_IF_ERROR(CheckAtLeast("model.num_classes", m.num_classes, 2));
  RETURN_IF_ERROR(CheckAtLeast("model.heads", m.heads, 1));
  RETURN_IF_ERROR(CheckAtLeast("model.dim", m.dim, 1));
  if (m.dim % m.heads != 0) {
    return Bad("model.dim",
               absl::StrCat("must be divisible by model.heads (", m.heads, ")"),
               m.dim);
  }
  RETURN_IF_ERROR(CheckAtLeast("model.depth", m.depth, 1));
  RETURN_IF_ERROR(CheckAtLeast("model.mlp_dim", m.mlp_dim, 1));
  RETURN_IF_ERROR(CheckAtLeast("model.patch_size", m.patch_size, 1));
  RETURN_IF_ERROR(CheckAtLeast("model.image_size", m.image_size, 1));
  if (m.image_size % m.patch_size != 0) {
    return Bad("model.image_size",
               absl::StrCat("must be divisible by model.patch_size (",
                            m.patch_size, ")"),
               m.image_size);
  }
  RETURN_IF_ERROR(CheckAtLeast("model.channels", m.channels, 1));
  RETURN_IF_ERROR(CheckAtLeast("model.vocab_size", m.vocab_size, 3));
  RETURN_IF_ERROR(CheckAtLeast("model.max_len", m.max_len, 1));

  const bool torchscript = m.kind == "torchscript";
  if (torchscript && m.torchscript_path.empty()) {
    return Bad("model.torchscript_path",
               "must be set when model.kind is torchscript",
               m.torchscript_path);
  }
  if (torchscript && m.groups.empty()) {
    return Bad("model.groups",
               "must list at least one group when model.kind is torchscript",
               Raw{"[]"});
  }
  if (m.kind == "hf" && m.hf_dir.empty()) {
    return Bad("model.hf_dir", "must be set when model.kind is hf", m.hf_dir);
  }
  std::set<std::string> group_names;
  for (size_t i = 0; i < m.groups.size(); ++i) {
    const std::string path = Indexed("model.groups", i);
    const LayerGroupPattern& g = m.groups[i];
    RETURN_IF_ERROR(CheckNonEmpty(path + ".name", g.name));
    if (!group_names.insert(g.name).second) {
      return Bad(path + ".name", "must be unique among model.groups", g.name);
    }
    if (g.patterns.empty()) {
      return Bad(path + ".patterns", "must list at least one pattern",
                 Raw{"[]"});
    }
    for (size_t j = 0; j < g.patterns.size(); ++j) {
      RETURN_IF_ERROR(
          CheckNonEmpty(Indexed(path + ".patterns", j), g.patterns[j]));
    }
  }
  // Built-in models name their own groups; only TorchScript groups are known
  // here.
  const std::set<std::string>* known = torchscript ? &group_names : nullptr;
  RETURN_IF_ERROR(CheckGroupList("model.frozen", m.frozen, known));
  RETURN_IF_ERROR(CheckGroupList("model.common", m.common, known));
  const std::set<std::string> frozen(m.frozen.begin(), m.frozen.end());
  for (size_t i = 0; i < m.common.size(); ++i) {
    if (frozen.count(m.common[i]) != 0) {
      return Bad(Indexed("model.common", i),
                 "must not also be listed in model.frozen", m.common[i]);
    }
  }
  return absl::OkStatus();
}

bool IsRecordDataset(const std::string& dataset) {
  return dataset == "image_folder" || dataset == "jsonl" || dataset == "csv";
}

// The fields of the record datasets (image_folder, jsonl, csv).
absl::Status ValidateRecordData(const DataConfig& d, const ModelConfig& m) {
  const std::string when = absl::StrCat("when data.dataset is ", d.dataset);
  if (d.train_path.empty()) {
    return Bad("data.train_path", absl::StrCat("must be set ", when),
               d.train_path);
  }
  if (d.test_path.empty()) {
    return Bad("data.test_path", absl::StrCat("must be set ", when),
               d.test_path);
  }
  if (d.dataset == "image_folder") {
    if (m.kind == "text") {
      return Bad("model.kind",
                 absl::StrCat("must be vit, hf or torchscript ", when), m.kind);
    }
    RETURN_IF_ERROR(
        CheckOneOf("data.resample", d.resample, {"bilinear", "bicubic"}));
    if (d.image_mean.size() != d.image_std.size()) {
      return Bad("data.image_std",
                 absl::StrCat("must have as many entries as data.image_mean (",
                              d.image_mean.size(), ")"),
                 static_cast<int64_t>(d.image_std.size()));
    }
    if (!d.image_mean.empty() && m.kind != "hf" &&
        static_cast<int>(d.image_mean.size()) != m.channels) {
      return Bad("data.image_mean",
                 absl::StrCat("must have model.channels (", m.channels,
                              ") entries"),
                 static_cast<int64_t>(d.image_mean.size()));
    }
    for (size_t i = 0; i < d.image_mean.size(); ++i) {
      RETURN_IF_ERROR(CheckFinite(Indexed("data.image_mean", i), d.image_mean[i]));
      RETURN_IF_ERROR(CheckPositive(Indexed("data.image_std", i), d.image_std[i]));
    }
  } else {
    RETURN_IF_ERROR(CheckNonEmpty("data.text_field", d.text_field));
    RETURN_IF_ERROR(CheckNonEmpty("data.label_field", d.label_field));
    if (d.label_field == d.text_field) {
      return Bad("data.label_field", "must differ from data.text_field",
                 d.label_field);
    }
    if (!d.group_field.empty() &&
        (d.group_field == d.text_field || d.group_field == d.label_field)) {
      return Bad("data.group_field",
                 "must differ from data.text_field and data.label_field",
                 d.group_field);
    }
    if (m.kind == "vit") {
      return Bad("model.kind",
                 absl::StrCat("must be text, hf or torchscript ", when), m.kind);
    }
  }
  if (static_cast<int>(d.labels.size()) > m.num_classes) {
    return Bad("data.labels",
               absl::StrCat("must name at most model.num_classes (",
                            m.num_classes, ") classes"),
               static_cast<int64_t>(d.labels.size()));
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < d.labels.size(); ++i) {
    const std::string& label = d.labels[i];
    if (label.empty()) return Bad(Indexed("data.labels", i), "must not be empty", label);
    if (label.find_first_of("\r\n") != std::string::npos) {
      return Bad(Indexed("data.labels", i), "must not contain a line break", label);
    }
    if (!seen.insert(label).second) {
      return Bad(Indexed("data.labels", i), "must be distinct (listed twice)", label);
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateData(const DataConfig& d, const ModelConfig& m) {
  RETURN_IF_ERROR(CheckOneOf("data.dataset", d.dataset,
                             {"fashion_mnist", "tsv", "image_folder", "jsonl",
                              "csv"}));
  if (d.dataset == "fashion_mnist") {
    RETURN_IF_ERROR(CheckNonEmpty("data.dir", d.dir));
    if (m.kind == "text") {
      return Bad("model.kind",
                 "must be vit or torchscript when data.dataset is "
                 "fashion_mnist",
                 m.kind);
    }
  } else if (d.dataset == "tsv") {
    if (d.train_tsv.empty()) {
      return Bad("data.train_tsv", "must be set when data.dataset is tsv",
                 d.train_tsv);
    }
    if (d.test_tsv.empty()) {
      return Bad("data.test_tsv", "must be set when data.dataset is tsv",
                 d.test_tsv);
    }
    if (m.kind == "vit") {
      return Bad("model.kind",
                 "must be text or torchscript when data.dataset is tsv",
                 m.kind);
    }
  } else {
    RETURN_IF_ERROR(ValidateRecordData(d, m));
  }
  if (!IsRecordDataset(d.dataset)) {
    if (!d.labels.empty()) {
      return Bad("data.labels",
                 absl::StrCat("must be empty when data.dataset is ", d.dataset,
                              " (its labels are integers)"),
                 Raw{absl::StrCat("[", absl::StrJoin(d.labels, ", "), "]")});
    }
    if (!d.group_field.empty()) {
      return Bad("data.group_field",
                 absl::StrCat("must be empty when data.dataset is ", d.dataset,
                              " (only image_folder, jsonl and csv have groups)"),
                 d.group_field);
    }
  }
  RETURN_IF_ERROR(CheckOneOf("data.partition", d.partition,
                             {"iid", "dirichlet", "feature_shift", "by_group"}));
  if (d.partition == "feature_shift" && d.dataset != "fashion_mnist") {
    return Bad("data.partition",
               absl::StrCat(IsRecordDataset(d.dataset)
                                ? "must be iid, dirichlet or by_group"
                                : "must be iid or dirichlet",
                            " when data.dataset is ", d.dataset,
                            " (feature_shift transforms images)"),
               d.partition);
  }
  if (d.partition == "by_group" && d.group_field.empty()) {
    return Bad("data.partition",
               "by_group needs data.group_field (the field naming each "
               "example's group)",
               d.partition);
  }
  RETURN_IF_ERROR(CheckAtLeast("data.num_clients", d.num_clients, 1));
  RETURN_IF_ERROR(CheckPositive("data.alpha", d.alpha));
  if (d.domains.empty()) {
    return Bad("data.domains", "must list at least one domain", Raw{"[]"});
  }
  for (size_t i = 0; i < d.domains.size(); ++i) {
    RETURN_IF_ERROR(CheckOneOf(Indexed("data.domains", i), d.domains[i],
                               {"identity", "rotate90", "rotate180", "invert",
                                "blur", "noise", "contrast"}));
  }
  RETURN_IF_ERROR(
      CheckUnitInterval("data.pretrain_fraction", d.pretrain_fraction));
  RETURN_IF_ERROR(
      CheckAtLeast("data.max_test_examples", d.max_test_examples, 0));
  return absl::OkStatus();
}

absl::Status ValidateTrain(const TrainConfig& t) {
  RETURN_IF_ERROR(
      CheckOneOf("train.optimizer", t.optimizer, {"sgd", "adam", "adamw"}));
  RETURN_IF_ERROR(CheckPositive("train.lr", t.lr));
  RETURN_IF_ERROR(CheckUnitInterval("train.momentum", t.momentum));
  RETURN_IF_ERROR(CheckNonNegative("train.weight_decay", t.weight_decay));
  RETURN_IF_ERROR(CheckAtLeast("train.batch_size", t.batch_size, 1));
  RETURN_IF_ERROR(CheckAtLeast("train.local_epochs", t.local_epochs, 0));
  if (t.local_epochs == 0) {
    if (t.local_steps < 1) {
      return Bad("train.local_steps",
                 "must be >= 1 when train.local_epochs is 0", t.local_steps);
    }
  } else {
    RETURN_IF_ERROR(CheckAtLeast("train.local_steps", t.local_steps, 0));
  }
  RETURN_IF_ERROR(CheckNonNegative("train.grad_clip", t.grad_clip));
  return absl::OkStatus();
}

absl::Status ValidateImportance(const ImportanceConfig& imp) {
  RETURN_IF_ERROR(CheckOneOf("importance.metric", imp.metric,
                             {"sq_grad_norm", "rgn", "snr"}));
  RETURN_IF_ERROR(CheckAtLeast("importance.batches", imp.batches, 1));
  if (imp.metric == "snr" && imp.batches < 2) {
    return Bad("importance.batches",
               "must be >= 2 when importance.metric is snr", imp.batches);
  }
  RETURN_IF_ERROR(CheckAtLeast("importance.batch_size", imp.batch_size, 0));
  RETURN_IF_ERROR(
      CheckOneOf("importance.source", imp.source, {"pass", "train"}));
  RETURN_IF_ERROR(
      CheckAtLeast("importance.refresh_period", imp.refresh_period, 0));
  if (!(imp.decay > 0 && imp.decay <= 1)) {
    return Bad("importance.decay", "must be in (0, 1]", imp.decay);
  }
  RETURN_IF_ERROR(
      CheckOneOf("importance.depth", imp.depth, {"full", "affordable"}));
  return absl::OkStatus();
}

absl::Status ValidatePretrain(const PretrainConfig& p, const ModelConfig& m) {
  RETURN_IF_ERROR(CheckNonEmpty("pretrain.checkpoint", p.checkpoint));
  for (size_t i = 0; i < p.label_map.size(); ++i) {
    RETURN_IF_ERROR(
        CheckAtLeast(Indexed("pretrain.label_map", i), p.label_map[i], 0));
  }
  // Only the built-in ViT is pretrained (other kinds ignore the section).
  if (m.kind == "vit" && !p.label_map.empty() &&
      p.label_map.size() != static_cast<size_t>(m.num_classes)) {
    return Bad("pretrain.label_map",
               absl::StrCat("must have model.num_classes (", m.num_classes,
                            ") entries or none"),
               Raw{absl::StrCat(p.label_map.size(), " entries")});
  }
  RETURN_IF_ERROR(CheckAtLeast("pretrain.epochs", p.epochs, 1));
  RETURN_IF_ERROR(CheckPositive("pretrain.lr", p.lr));
  RETURN_IF_ERROR(CheckAtLeast("pretrain.batch_size", p.batch_size, 1));
  return absl::OkStatus();
}

absl::Status ValidateDemo(const DemoConfig& demo, const DataConfig& d,
                          const ModelConfig& m) {
  if (demo.client < 0 || demo.client >= d.num_clients) {
    return Bad("demo.client",
               absl::StrCat("must be in [0, data.num_clients) = [0, ",
                            d.num_clients, ")"),
               demo.client);
  }
  if (demo.layers.empty()) {
    return Bad("demo.layers", "must list at least one layer group", Raw{"[]"});
  }
  std::set<std::string> group_names;
  for (const LayerGroupPattern& g : m.groups) group_names.insert(g.name);
  RETURN_IF_ERROR(
      CheckGroupList("demo.layers", demo.layers,
                     m.kind == "torchscript" ? &group_names : nullptr));
  const std::set<std::string> frozen(m.frozen.begin(), m.frozen.end());
  for (size_t i = 0; i < demo.layers.size(); ++i) {
    if (frozen.count(demo.layers[i]) != 0) {
      return Bad(Indexed("demo.layers", i),
                 "must not be a group listed in model.frozen", demo.layers[i]);
    }
  }
  RETURN_IF_ERROR(CheckAtLeast("demo.rounds", demo.rounds, 1));
  return absl::OkStatus();
}

absl::Status ValidateFederated(const FederatedConfig& f, const DataConfig& d) {
  RETURN_IF_ERROR(
      CheckOneOf("federated.mode", f.mode, {"sync", "async", "local"}));
  RETURN_IF_ERROR(CheckAtLeast("federated.rounds", f.rounds, 1));
  RETURN_IF_ERROR(
      CheckAtLeast("federated.clients_per_round", f.clients_per_round, 0));
  RETURN_IF_ERROR(CheckAtLeast("federated.min_clients", f.min_clients, 1));
  if (f.clients_per_round > 0 && f.min_clients > f.clients_per_round) {
    return Bad("federated.min_clients",
               absl::StrCat("must be <= federated.clients_per_round (",
                            f.clients_per_round, ")"),
               f.min_clients);
  }
  if (f.min_clients > d.num_clients) {
    return Bad(
        "federated.min_clients",
        absl::StrCat("must be <= data.num_clients (", d.num_clients, ")"),
        f.min_clients);
  }
  RETURN_IF_ERROR(
      CheckAtLeast("federated.selection_period", f.selection_period, 1));
  RETURN_IF_ERROR(CheckAtLeast("federated.eval_every", f.eval_every, 1));
  RETURN_IF_ERROR(
      CheckAtLeast("federated.eval_batch_size", f.eval_batch_size, 1));
  RETURN_IF_ERROR(
      CheckPositive("federated.round_deadline_s", f.round_deadline_s));
  RETURN_IF_ERROR(
      CheckAtLeast("federated.max_round_retries", f.max_round_retries, 0));
  RETURN_IF_ERROR(CheckOneOf("federated.aggregation", f.aggregation,
                             {"weighted", "uniform"}));
  RETURN_IF_ERROR(CheckPositive("federated.server_lr", f.server_lr));
  RETURN_IF_ERROR(CheckNonEmpty("federated.run_dir", f.run_dir));
  RETURN_IF_ERROR(
      CheckAtLeast("federated.keep_checkpoints", f.keep_checkpoints, 1));
  RETURN_IF_ERROR(CheckAtLeast("federated.buffer_size", f.buffer_size, 1));
  RETURN_IF_ERROR(
      CheckAtLeast("federated.max_staleness", f.max_staleness, 0));
  RETURN_IF_ERROR(CheckOneOf("federated.staleness", f.staleness,
                             {"constant", "polynomial", "hinge"}));
  RETURN_IF_ERROR(CheckNonNegative("federated.staleness_exponent",
                                   f.staleness_exponent));
  RETURN_IF_ERROR(
      CheckNonNegative("federated.staleness_hinge_a", f.staleness_hinge_a));
  RETURN_IF_ERROR(
      CheckAtLeast("federated.staleness_hinge_b", f.staleness_hinge_b, 0));
  RETURN_IF_ERROR(CheckAtLeast("federated.async_cohort", f.async_cohort, 0));
  return absl::OkStatus();
}

absl::Status ValidateSelection(const SelectionConfig& s) {
  RETURN_IF_ERROR(CheckOneOf("selection.strategy", s.strategy,
                             {"full", "top", "bottom", "both", "random", "head",
                              "rgn", "snr", "importance", "strategic"}));
  RETURN_IF_ERROR(CheckNonNegative("selection.lambda", s.lambda));
  RETURN_IF_ERROR(CheckPositive("selection.time_limit_ms", s.time_limit_ms));
  RETURN_IF_ERROR(CheckNonNegative("selection.target_gap", s.target_gap));
  RETURN_IF_ERROR(CheckAtLeast("selection.starts", s.starts, 1));
  return absl::OkStatus();
}

// The numeric bounds are checked for every distribution, so that switching
// the distribution never exposes an invalid default.
absl::Status ValidateBudget(const BudgetConfig& b) {
  RETURN_IF_ERROR(CheckOneOf("budget.unit", b.unit,
                             {"layers", "params", "time", "memory"}));
  RETURN_IF_ERROR(
      CheckOneOf("budget.distribution", b.distribution,
                 {"fixed", "uniform", "truncated_normal", "declared"}));
  RETURN_IF_ERROR(CheckPositive("budget.value", b.value));
  RETURN_IF_ERROR(CheckPositive("budget.min", b.min));
  RETURN_IF_ERROR(CheckFinite("budget.max", b.max));
  if (!(b.max >= b.min)) {
    return Bad("budget.max",
               absl::StrCat("must be >= budget.min (", b.min, ")"), b.max);
  }
  RETURN_IF_ERROR(CheckFinite("budget.mean", b.mean));
  RETURN_IF_ERROR(CheckPositive("budget.std", b.std));
  return absl::OkStatus();
}

absl::Status ValidateTransport(const TransportConfig& t) {
  RETURN_IF_ERROR(CheckOneOf("transport.encoding", t.encoding,
                             {"float32", "float16", "bfloat16"}));
  for (const auto& [path, kb] :
       {std::pair<const char*, int64_t>{"transport.chunk_kb", t.chunk_kb},
        {"transport.max_chunk_kb", t.max_chunk_kb}}) {
    if (kb < 1 || kb > 3072) return Bad(path, "must be in [1, 3072]", kb);
  }
  if (t.max_held_mb < 0 || t.max_held_mb > (int64_t{1} << 30)) {
    return Bad("transport.max_held_mb", "must be in [0, 2^30]", t.max_held_mb);
  }
  RETURN_IF_ERROR(
      CheckAtLeast("transport.wait_for_clients", t.wait_for_clients, 0));
  RETURN_IF_ERROR(
      CheckPositive("transport.wait_for_clients_s", t.wait_for_clients_s));
  RETURN_IF_ERROR(
      CheckPositive("transport.client_timeout_s", t.client_timeout_s));
  RETURN_IF_ERROR(CheckPositive("transport.heartbeat_s", t.heartbeat_s));
  if (!(t.heartbeat_s < t.client_timeout_s)) {
    return Bad("transport.heartbeat_s",
               absl::StrCat("must be < transport.client_timeout_s (",
                            t.client_timeout_s, ")"),
               t.heartbeat_s);
  }
  RETURN_IF_ERROR(CheckPositive("transport.max_poll_s", t.max_poll_s));
  RETURN_IF_ERROR(CheckPositive("transport.linger_s", t.linger_s));
  return absl::OkStatus();
}

// The most clients a round samples.
int RoundSize(const FederatedConfig& f, const DataConfig& d) {
  return f.clients_per_round > 0 ? f.clients_per_round : d.num_clients;
}

// The clip count's noise std (privacy.dp.count_noise_std, 0 = its default).
double CountNoiseStd(const DpConfig& dp, const FederatedConfig& f,
                     const DataConfig& d) {
  if (dp.count_noise_std > 0) return dp.count_noise_std;
  return std::max(RoundSize(f, d) / 20.0, dp.noise_multiplier);
}

absl::Status ValidatePrivacy(const PrivacyConfig& p, const FederatedConfig& f,
                             const DataConfig& d) {
  const DpConfig& dp = p.dp;
  RETURN_IF_ERROR(
      CheckOneOf("privacy.dp.mode", dp.mode, {"central", "local"}));
  RETURN_IF_ERROR(
      CheckOneOf("privacy.dp.clipping", dp.clipping, {"fixed", "adaptive"}));
  RETURN_IF_ERROR(CheckPositive("privacy.dp.clip_norm", dp.clip_norm));
  RETURN_IF_ERROR(
      CheckPositive("privacy.dp.noise_multiplier", dp.noise_multiplier));
  if (!(dp.target_quantile > 0 && dp.target_quantile < 1)) {
    return Bad("privacy.dp.target_quantile", "must be in (0, 1)",
               dp.target_quantile);
  }
  RETURN_IF_ERROR(CheckPositive("privacy.dp.clip_lr", dp.clip_lr));
  RETURN_IF_ERROR(
      CheckNonNegative("privacy.dp.count_noise_std", dp.count_noise_std));
  RETURN_IF_ERROR(CheckPositive("privacy.dp.score_clip", dp.score_clip));
  RETURN_IF_ERROR(CheckPositive("privacy.dp.score_noise_multiplier",
                                dp.score_noise_multiplier));
  if (!(dp.delta > 0 && dp.delta < 1)) {
    return Bad("privacy.dp.delta", "must be in (0, 1)", dp.delta);
  }
  RETURN_IF_ERROR(
      CheckNonNegative("privacy.dp.target_epsilon", dp.target_epsilon));
  const SecureAggregationConfig& sa = p.secure_aggregation;
  if (!(sa.threshold > 0 && sa.threshold <= 1)) {
    return Bad("privacy.secure_aggregation.threshold", "must be in (0, 1]",
               sa.threshold);
  }
  RETURN_IF_ERROR(CheckPositive("privacy.secure_aggregation.value_range",
                                sa.value_range));
  if (sa.enabled) {
    if (f.aggregation != "uniform") {
      return Bad("federated.aggregation",
                 "must be 'uniform' with privacy.secure_aggregation.enabled "
                 "(the coordinator only sees sums)",
                 f.aggregation);
    }
    if (f.mode != "sync") {
      return Bad("federated.mode",
                 "must be 'sync' with privacy.secure_aggregation.enabled (an "
                 "asynchronous buffer has no round of participants to mask "
                 "among)",
                 f.mode);
    }
    const int n = RoundSize(f, d);
    if (n > 255) {
      return Bad("federated.clients_per_round",
                 "must be <= 255 with secure aggregation (Shamir shares over "
                 "GF(2^8))",
                 n);
    }
    if (dp.enabled && dp.mode != "local") {
      return Bad("privacy.dp.mode",
                 "must be 'local' with secure aggregation (the coordinator "
                 "cannot clip or noise updates it never sees)",
                 dp.mode);
    }
  }
  if (!dp.enabled) return absl::OkStatus();
  if (f.aggregation != "uniform") {
    return Bad("federated.aggregation",
               "must be 'uniform' with privacy.dp.enabled (sample counts are "
               "private and would set each client's sensitivity)",
               f.aggregation);
  }
  if (f.mode != "sync") {
    return Bad("federated.mode",
               "must be 'sync' with privacy.dp.enabled (the local-only "
               "baseline releases nothing to account; asynchronous commits "
               "are not accounted yet)",
               f.mode);
  }
  if (dp.clipping == "adaptive" && dp.mode != "central") {
    return Bad("privacy.dp.clipping",
               "adaptive clipping needs privacy.dp.mode: central (the "
               "coordinator counts the unclipped updates)",
               dp.clipping);
  }
  if (dp.mode == "local" && !sa.enabled) {
    return Bad("privacy.dp.mode",
               "'local' needs privacy.secure_aggregation.enabled: true (each "
               "client adds only its share of the noise; without secure "
               "aggregation the coordinator sees every update with 1/sqrt(n) "
               "of it); use mode: central or turn secure aggregation on",
               dp.mode);
  }
  if (dp.clipping == "adaptive" &&
      !(2 * CountNoiseStd(dp, f, d) > dp.noise_multiplier)) {
    return Bad("privacy.dp.count_noise_std",
               absl::StrCat("must exceed noise_multiplier / 2 (",
                            dp.noise_multiplier / 2,
                            ") or the clip count spends the whole budget"),
               dp.count_noise_std);
  }
  return absl::OkStatus();
}

}  // namespace

int MaxClientsPerRound(const RunConfig& config) {
  return RoundSize(config.federated, config.data);
}

double ClipCountNoiseStd(const RunConfig& config) {
  return CountNoiseStd(config.privacy.dp, config.federated, config.data);
}

namespace {

// importance.source and importance.depth against the sections they need.
absl::Status ValidateScoreSource(const RunConfig& c) {
  const ImportanceConfig& imp = c.importance;
  if (imp.depth == "affordable" && c.federated.mode != "sync") {
    return Bad("importance.depth",
               absl::StrCat("needs federated.mode: sync (this run is ",
                            c.federated.mode, ")"),
               imp.depth);
  }
  if (imp.source != "train") return absl::OkStatus();
  if (c.selection.strategy == "snr" || imp.metric == "snr") {
    return Bad("importance.source",
               "scores from one batch, which has no variance: needs "
               "importance.metric sq_grad_norm or rgn and a strategy other "
               "than snr",
               imp.source);
  }
  if (c.federated.mode != "sync") {
    return Bad("importance.source",
               absl::StrCat("needs federated.mode: sync (this run is ",
                            c.federated.mode, ")"),
               imp.source);
  }
  if (c.privacy.dp.enabled || c.privacy.secure_aggregation.enabled) {
    return Bad("importance.source",
               "sends the first step's scores unprivatised: not with "
               "privacy.dp or privacy.secure_aggregation",
               imp.source);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunConfig::Validate() const {
  RETURN_IF_ERROR(CheckAtLeast("threads", threads, 1));
  RETURN_IF_ERROR(ValidateModel(model));
  RETURN_IF_ERROR(ValidateData(data, model));
  RETURN_IF_ERROR(ValidateTrain(train));
  RETURN_IF_ERROR(ValidateImportance(importance));
  RETURN_IF_ERROR(ValidatePretrain(pretrain, model));
  RETURN_IF_ERROR(ValidateDemo(demo, data, model));
  RETURN_IF_ERROR(ValidateFederated(federated, data));
  RETURN_IF_ERROR(ValidateSelection(selection));
  RETURN_IF_ERROR(ValidateBudget(budget));
  RETURN_IF_ERROR(CheckPositive("devices.speed_min", devices.speed_min));
  RETURN_IF_ERROR(CheckFinite("devices.speed_max", devices.speed_max));
  if (!(devices.speed_max >= devices.speed_min)) {
    return Bad(
        "devices.speed_max",
        absl::StrCat("must be >= devices.speed_min (", devices.speed_min, ")"),
        devices.speed_max);
  }
  RETURN_IF_ERROR(CheckPositive("devices.train_s", devices.train_s));
  RETURN_IF_ERROR(CheckPositive("devices.score_s", devices.score_s));
  RETURN_IF_ERROR(CheckAtLeast("sim.parallel_clients", sim.parallel_clients, 1));
  if (sim.parallel_clients > 64) {
    return Bad("sim.parallel_clients", "must be <= 64", sim.parallel_clients);
  }
  RETURN_IF_ERROR(CheckAtLeast("profile.steps", profile.steps, 1));
  RETURN_IF_ERROR(CheckAtLeast("profile.reps", profile.reps, 1));
  RETURN_IF_ERROR(ValidateTransport(transport));
  RETURN_IF_ERROR(ValidatePrivacy(privacy, federated, data));
  RETURN_IF_ERROR(ValidateScoreSource(*this));
  return absl::OkStatus();
}

bool NeedsProfiles(const RunConfig& config) {
  return config.budget.unit == "time" || config.budget.unit == "memory";
}

absl::StatusOr<RunConfig> ParseRunConfig(const std::string& yaml_text) {
  RunConfig config;
  RETURN_IF_ERROR(ParseInto(yaml_text, &config));
  RETURN_IF_ERROR(config.Validate());
  return config;
}

namespace {

// The leaf fields of `config`, by path, in the config's order.
std::vector<std::pair<std::string, Field>> Leaves(RunConfig* config) {
  std::vector<std::pair<std::string, Field>> out;
  yaml_read::ForEachLeaf(RunFields(config), "",
                         [&out](const std::string& path, const Field& f) {
                           out.emplace_back(path, f);
                         });
  return out;
}

}  // namespace

std::string RunConfigToYaml(const RunConfig& config) {
  RunConfig copy = config;
  YAML::Emitter out;
  out << yaml_read::WriteMap(RunFields(&copy));
  return absl::StrCat(out.c_str(), "\n");
}

bool IsMachineLocalField(absl::string_view path) {
  static constexpr absl::string_view kLocal[] = {
      "threads",          "data.dir",          "data.train_tsv",
      "data.test_tsv",    "data.train_path",   "data.test_path",
      "model.torchscript_path", "model.hf_dir",
      "pretrain.checkpoint",
      "federated.run_dir", "profile.cache_dir", "profile.steps",
      "profile.reps", "privacy.dp.noise_seed",
      "privacy.dp.insecure_sampling_seed"};
  static constexpr absl::string_view kLocalSections[] = {"demo.", "devices.",
                                                         "sim."};
  for (absl::string_view p : kLocal) {
    if (path == p) return true;
  }
  for (absl::string_view p : kLocalSections) {
    if (absl::StartsWith(path, p)) return true;
  }
  return false;
}

absl::Status CheckSameRun(const RunConfig& local, const RunConfig& run) {
  RunConfig a = local, b = run;
  const auto ours = Leaves(&a);
  const auto theirs = Leaves(&b);
  for (size_t i = 0; i < ours.size(); ++i) {
    const std::string& path = ours[i].first;
    if (IsMachineLocalField(path)) continue;
    const std::string mine = yaml_read::FlowText(ours[i].second.write());
    const std::string the_runs = yaml_read::FlowText(theirs[i].second.write());
    if (mine != the_runs) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": this config has ", mine, ", the run's has ",
                       the_runs));
    }
  }
  return absl::OkStatus();
}

namespace {

// `run` with the fields `take` names copied from `from`, validated.
absl::StatusOr<RunConfig> WithFieldsOf(
    const RunConfig& run, const RunConfig& from,
    const std::function<bool(absl::string_view)>& take) {
  RunConfig out = run, src_config = from;
  const auto dst = Leaves(&out);
  const auto src = Leaves(&src_config);
  for (size_t i = 0; i < dst.size(); ++i) {
    if (!take(dst[i].first)) continue;
    RETURN_IF_ERROR(
        dst[i].second.read(src[i].second.write(), dst[i].first, Style()));
  }
  RETURN_IF_ERROR(out.Validate());
  return out;
}

}  // namespace

absl::StatusOr<RunConfig> WithMachineLocalFields(const RunConfig& run,
                                                 const RunConfig& local) {
  return WithFieldsOf(run, local, IsMachineLocalField);
}

absl::StatusOr<RunConfig> WithDefaultMachineLocalFields(const RunConfig& run) {
  return WithFieldsOf(run, RunConfig(), [](absl::string_view path) {
    return IsMachineLocalField(path) && !absl::StartsWith(path, "data.") &&
           path != "model.hf_dir";
  });
}

std::string ServedRunConfigYaml(const RunConfig& config) {
  RunConfig served = config;
  served.privacy.dp.noise_seed = 0;
  served.privacy.dp.insecure_sampling_seed = 0;
  return RunConfigToYaml(served);
}

absl::StatusOr<RunConfig> LoadRunConfig(const std::string& path) {
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  if (st.type() == std::filesystem::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat(path, ": config file not found"));
  }
  if (st.type() == std::filesystem::file_type::directory) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": is a directory, not a config file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string why =
        absl::StrCat(path, ": cannot open config file: ", std::strerror(err));
    if (err == EACCES) return absl::PermissionDeniedError(why);
    return absl::UnavailableError(why);
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(
        absl::StrCat(path, ": error while reading config file"));
  }
  absl::StatusOr<RunConfig> config = ParseRunConfig(text.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

}  // namespace layerfl
