#include "server/aggregator/aggregator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/privacy/dp.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

struct ReasonInfo {
  RejectReason reason;
  const char* name;
  absl::StatusCode code;
};

constexpr ReasonInfo kReasons[] = {
    {RejectReason::kUnknownLayer, "unknown_layer",
     absl::StatusCode::kInvalidArgument},
    {RejectReason::kNotAssigned, "not_assigned",
     absl::StatusCode::kInvalidArgument},
    {RejectReason::kWrongShape, "wrong_shape",
     absl::StatusCode::kInvalidArgument},
    {RejectReason::kNonFinite, "non_finite",
     absl::StatusCode::kInvalidArgument},
    {RejectReason::kDuplicate, "duplicate",
     absl::StatusCode::kFailedPrecondition},
    {RejectReason::kStaleRound, "stale_round",
     absl::StatusCode::kFailedPrecondition},
    {RejectReason::kUnknownClient, "unknown_client",
     absl::StatusCode::kInvalidArgument},
    {RejectReason::kBadSampleCount, "bad_sample_count",
     absl::StatusCode::kInvalidArgument},
    {RejectReason::kProtocol, "protocol", absl::StatusCode::kInvalidArgument},
    {RejectReason::kTooStale, "too_stale",
     absl::StatusCode::kFailedPrecondition},
};

const ReasonInfo& InfoOf(RejectReason reason) {
  for (const ReasonInfo& info : kReasons) {
    if (info.reason == reason) return info;
  }
  return kReasons[0];  // unreachable for valid enumerators
}

// The kernels below are plain loops over contiguous arrays so that -O3
// vectorises them; they are the whole cost of aggregation.

// y = a * x
void Scale(float a, const float* __restrict x, float* __restrict y, size_t n) {
  for (size_t k = 0; k < n; ++k) y[k] = a * x[k];
}

// y += a * x
void Axpy(float a, const float* __restrict x, float* __restrict y, size_t n) {
  for (size_t k = 0; k < n; ++k) y[k] += a * x[k];
}

// y = w + a * y
void Step(float a, const float* __restrict w, float* __restrict y, size_t n) {
  for (size_t k = 0; k < n; ++k) y[k] = w[k] + a * y[k];
}

// Index of the first NaN/Inf in x, or n. Scans by exponent bits (all ones for
// NaN and Inf) in blocks, so the common all-finite case vectorises.
size_t FirstNonFinite(const float* x, size_t n) {
  constexpr size_t kBlock = 4096;
  for (size_t begin = 0; begin < n; begin += kBlock) {
    const size_t end = std::min(n, begin + kBlock);
    uint32_t bad = 0;
    for (size_t k = begin; k < end; ++k) {
      uint32_t bits;
      std::memcpy(&bits, x + k, sizeof(bits));
      bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (bad != 0) {
      for (size_t k = begin; k < end; ++k) {
        if (!std::isfinite(x[k])) return k;
      }
    }
  }
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

std::string_view RejectReasonName(RejectReason reason) {
  return InfoOf(reason).name;
}

absl::Status Rejection(RejectReason reason, std::string detail) {
  const ReasonInfo& info = InfoOf(reason);
  return absl::Status(info.code, absl::StrCat(info.name, ": ", detail));
}

std::optional<RejectReason> ReasonOf(const absl::Status& status) {
  for (const ReasonInfo& info : kReasons) {
    if (status.code() == info.code &&
        absl::StartsWith(status.message(), absl::StrCat(info.name, ": "))) {
      return info.reason;
    }
  }
  return std::nullopt;
}

absl::Status AggregatorOptions::Validate() const {
  if (!std::isfinite(server_lr) || server_lr <= 0.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "aggregation.server_lr must be finite and > 0, got ", server_lr));
  }
  if (!(dp.clip_norm >= 0) || !std::isfinite(dp.clip_norm) ||
      !(dp.noise_std >= 0) || !std::isfinite(dp.noise_std)) {
    return absl::InvalidArgumentError(
        absl::StrCat("aggregation.dp: clip_norm and noise_std must be finite "
                     "and >= 0, got ",
                     dp.clip_norm, " and ", dp.noise_std));
  }
  if ((dp.clip_norm > 0 || dp.noise_std > 0) && weight_by_samples) {
    return absl::InvalidArgumentError(
        "aggregation.dp: differential privacy needs uniform weights "
        "(weight_by_samples false)");
  }
  return absl::OkStatus();
}

LayerAggregator::LayerAggregator(const ModelWeights& global,
                                 const AggregatorOptions& options)
    : options_(options), options_status_(options.Validate()) {
  layers_.reserve(global.layers.size());
  for (size_t l = 0; l < global.layers.size(); ++l) {
    const LayerWeights& layer = global.layers[l];
    LayerSpec spec;
    spec.group = layer.group;
    for (const Tensor32& t : layer.tensors) {
      spec.tensors.push_back({t.name, t.shape, t.values.size()});
    }
    layers_.push_back(std::move(spec));
    index_.emplace(layer.group, static_cast<int>(l));
  }
  sums_.resize(layers_.size());
}

absl::Status LayerAggregator::CheckUsable() const {
  if (!options_status_.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "aggregator has invalid options: ", options_status_.message()));
  }
  if (spent_) {
    return absl::FailedPreconditionError(
        "aggregator already committed; start a new one for the next round");
  }
  return absl::OkStatus();
}

absl::Status LayerAggregator::Validate(
    const std::string& client_id, int64_t num_samples,
    const std::vector<LayerDelta>& update,
    const std::vector<std::string>& assigned_groups, DeltaSource* source,
    std::vector<int>& layer_index, double* norm_sq) const {
  if (options_.weight_by_samples && num_samples < 1) {
    return Rejection(RejectReason::kBadSampleCount,
                     absl::StrCat("client '", client_id, "' reported ",
                                  num_samples, " samples; need >= 1"));
  }
  std::vector<char> assigned(layers_.size(), 0);
  for (const std::string& group : assigned_groups) {
    auto it = index_.find(group);
    if (it == index_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("assignment of client '", client_id,
                       "' names unknown layer '", group, "'"));
    }
    if (assigned[it->second]) {
      return absl::InvalidArgumentError(
          absl::StrCat("assignment of client '", client_id, "' names layer '",
                       group, "' twice"));
    }
    assigned[it->second] = 1;
  }

  std::vector<char> seen(layers_.size(), 0);
  layer_index.assign(update.size(), -1);
  for (size_t k = 0; k < update.size(); ++k) {
    const std::string& group = update[k].group;
    auto it = index_.find(group);
    if (it == index_.end()) {
      return Rejection(RejectReason::kUnknownLayer,
                       absl::StrCat("client '", client_id,
                                    "' sent unknown layer '", group, "'"));
    }
    const int l = it->second;
    if (!assigned[l]) {
      return Rejection(RejectReason::kNotAssigned,
                       absl::StrCat("client '", client_id, "' sent layer '",
                                    group, "', which it was not assigned"));
    }
    if (seen[l]) {
      return Rejection(RejectReason::kDuplicate,
                       absl::StrCat("client '", client_id, "' sent layer '",
                                    group, "' twice in one update"));
    }
    seen[l] = 1;
    layer_index[k] = l;
  }
  for (const std::string& group : assigned_groups) {
    if (!seen[index_.at(group)]) {
      return Rejection(RejectReason::kNotAssigned,
                       absl::StrCat("assigned layer '", group,
                                    "' missing from the update of client '",
                                    client_id, "'"));
    }
  }

  for (size_t k = 0; k < update.size(); ++k) {
    const LayerSpec& spec = layers_[layer_index[k]];
    const LayerDelta& delta = update[k];
    if (delta.tensors.size() != spec.tensors.size()) {
      return Rejection(
          RejectReason::kWrongShape,
          absl::StrCat("layer '", spec.group, "' from client '", client_id,
                       "': expected ", spec.tensors.size(), " tensors, got ",
                       delta.tensors.size()));
    }
    for (size_t t = 0; t < spec.tensors.size(); ++t) {
      const TensorSpec& want = spec.tensors[t];
      const Tensor32& got = delta.tensors[t];
      if (got.name != want.name) {
        return Rejection(
            RejectReason::kWrongShape,
            absl::StrCat("layer '", spec.group, "' from client '", client_id,
                         "': tensor ", t, " should be '", want.name, "', got '",
                         got.name, "'"));
      }
      const size_t got_numel =
          source != nullptr ? want.numel : got.values.size();
      if (got.shape != want.shape || got_numel != want.numel) {
        return Rejection(
            RejectReason::kWrongShape,
            absl::StrCat("tensor '", want.name, "' from client '", client_id,
                         "': expected shape ", ShapeString(want.shape), " (",
                         want.numel, " values), got ", ShapeString(got.shape),
                         " with ", got_numel, " values"));
      }
    }
  }

  if (source != nullptr) RETURN_IF_ERROR(source->Rewind());
  double sq = 0;
  for (size_t k = 0; k < update.size(); ++k) {
    const LayerSpec& spec = layers_[layer_index[k]];
    for (size_t t = 0; t < spec.tensors.size(); ++t) {
      const size_t n = spec.tensors[t].numel;
      const float* x = update[k].tensors[t].values.data();
      if (source != nullptr) {
        ASSIGN_OR_RETURN(x, source->Next(n));
      }
      const size_t bad = FirstNonFinite(x, n);
      if (bad != n) {
        return Rejection(RejectReason::kNonFinite,
                         absl::StrCat("tensor '", spec.tensors[t].name,
                                      "' from client '", client_id,
                                      "': value ", x[bad], " at element ",
                                      bad));
      }
      if (norm_sq != nullptr) {
        for (size_t i = 0; i < n; ++i) sq += static_cast<double>(x[i]) * x[i];
      }
    }
  }
  if (norm_sq != nullptr) *norm_sq = sq;
  return absl::OkStatus();
}

absl::Status ReadDeltaValues(DeltaSource& values,
                             std::vector<LayerDelta>& update) {
  RETURN_IF_ERROR(values.Rewind());
  for (LayerDelta& d : update) {
    for (Tensor32& t : d.tensors) {
      const size_t n = static_cast<size_t>(ShapeNumel(t.shape));
      ASSIGN_OR_RETURN(const float* x, values.Next(n));
      t.values = std::vector<float>(x, x + n);
    }
  }
  return absl::OkStatus();
}

absl::Status LayerAggregator::Add(
    const std::string& client_id, int64_t num_samples,
    const std::vector<LayerDelta>& update,
    const std::vector<std::string>& assigned_groups) {
  return AddScaled(client_id, num_samples, update, assigned_groups, {});
}

absl::Status LayerAggregator::AddScaled(
    const std::string& client_id, int64_t num_samples,
    const std::vector<LayerDelta>& update,
    const std::vector<std::string>& assigned_groups,
    const std::vector<double>& scales) {
  return AddImpl(client_id, num_samples, update, assigned_groups, scales,
                 nullptr);
}

absl::Status LayerAggregator::AddFrom(
    const std::string& client_id, int64_t num_samples,
    const std::vector<LayerDelta>& shapes,
    const std::vector<std::string>& assigned_groups, DeltaSource& values) {
  return AddImpl(client_id, num_samples, shapes, assigned_groups, {}, &values);
}

absl::Status LayerAggregator::AddImpl(
    const std::string& client_id, int64_t num_samples,
    const std::vector<LayerDelta>& update,
    const std::vector<std::string>& assigned_groups,
    const std::vector<double>& scales, DeltaSource* source) {
  if (!scales.empty()) {
    if (scales.size() != update.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "client '", client_id, "': ", scales.size(), " layer scales for ",
          update.size(), " layers"));
    }
    for (double s : scales) {
      if (!(s > 0) || !std::isfinite(s)) {
        return absl::InvalidArgumentError(
            absl::StrCat("client '", client_id,
                         "': a layer scale must be finite and > 0, got ", s));
      }
    }
  }
  const auto duplicate = [&client_id] {
    return Rejection(RejectReason::kDuplicate,
                     absl::StrCat("client '", client_id,
                                  "' already contributed to this round"));
  };
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(CheckUsable());
    if (client_set_.contains(client_id)) return duplicate();
  }

  // The data checks read only immutable members, so concurrent Adds run them
  // in parallel.
  std::vector<int> layer_index;
  double norm_sq = 0;
  const bool clip = options_.dp.clip_norm > 0;
  RETURN_IF_ERROR(Validate(client_id, num_samples, update, assigned_groups,
                           source, layer_index, clip ? &norm_sq : nullptr));

  const double weight =
      options_.weight_by_samples ? static_cast<double>(num_samples) : 1.0;
  float weight_f = static_cast<float>(weight);
  double norm = 0;
  if (clip) {
    norm = std::sqrt(norm_sq);
    if (norm > options_.dp.clip_norm) {
      weight_f = static_cast<float>(weight * options_.dp.clip_norm / norm);
    }
  }

  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckUsable());
  if (!client_set_.insert(client_id).second) return duplicate();
  clients_.push_back(client_id);
  if (options_.dp.clip_norm > 0) norms_.push_back(norm);
  if (source != nullptr) {
    absl::Status rewound = source->Rewind();
    if (!rewound.ok()) {  // nothing folded yet
      client_set_.erase(client_id);
      clients_.pop_back();
      if (clip) norms_.pop_back();
      return rewound;
    }
  }
  for (size_t k = 0; k < update.size(); ++k) {
    const LayerDelta& delta = update[k];
    LayerSum& acc = sums_[layer_index[k]];
    const float layer_f =
        scales.empty() ? weight_f
                       : static_cast<float>(static_cast<double>(weight_f) *
                                            scales[k]);
    const bool first = acc.sums.empty();
    if (first) acc.sums.resize(delta.tensors.size());
    for (size_t t = 0; t < delta.tensors.size(); ++t) {
      const size_t n = layers_[layer_index[k]].tensors[t].numel;
      const float* x = delta.tensors[t].values.data();
      if (source != nullptr) {
        absl::StatusOr<const float*> next = source->Next(n);
        if (!next.ok()) {
          spent_ = true;
          return absl::DataLossError(absl::StrCat(
              "the update of client '", client_id, "' could not be read "
              "again while it was being added (",
              next.status().message(),
              "); the round's sums are incomplete and this aggregator is "
              "spent"));
        }
        x = *next;
      }
      std::vector<float>& y = acc.sums[t];
      if (first) {
        y.resize(n);
        Scale(layer_f, x, y.data(), n);
      } else {
        Axpy(layer_f, x, y.data(), n);
      }
    }
    acc.contributors += 1;
    acc.total_weight += weight;
  }
  return absl::OkStatus();
}

absl::Status LayerAggregator::AddLayerSum(const std::string& group,
                                          int contributors,
                                          std::vector<std::vector<float>> sums) {
  auto it = index_.find(group);
  if (it == index_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer sum: unknown group '", group, "'"));
  }
  const LayerSpec& spec = layers_[it->second];
  if (contributors < 1 || sums.size() != spec.tensors.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer sum of '", group, "': ", contributors, " contributors, ",
        sums.size(), " tensors (", spec.tensors.size(), " expected)"));
  }
  for (size_t t = 0; t < sums.size(); ++t) {
    if (sums[t].size() != spec.tensors[t].numel) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer sum of '", group, "': tensor '",
                       spec.tensors[t].name, "' has ", sums[t].size(),
                       " values, expected ", spec.tensors[t].numel));
    }
    if (FirstNonFinite(sums[t].data(), sums[t].size()) != sums[t].size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer sum of '", group, "': non-finite value"));
    }
  }
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckUsable());
  if (options_.weight_by_samples) {
    return absl::FailedPreconditionError(
        "layer sums need uniform aggregation");
  }
  LayerSum& acc = sums_[it->second];
  if (acc.contributors > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer sum of '", group, "': it already has updates"));
  }
  acc.sums = std::move(sums);
  acc.contributors = contributors;
  acc.total_weight = contributors;
  return absl::OkStatus();
}

int LayerAggregator::contributors(const std::string& group) const {
  auto it = index_.find(group);
  if (it == index_.end()) return 0;
  absl::MutexLock lock(&mu_);
  return sums_[it->second].contributors;
}

std::vector<std::string> LayerAggregator::clients() const {
  absl::MutexLock lock(&mu_);
  return clients_;
}

absl::StatusOr<AggregateStats> LayerAggregator::Commit(ModelWeights& global) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckUsable());
  spent_ = true;

  if (global.layers.size() != layers_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("commit: model has ", global.layers.size(),
                     " layers, the aggregator was built for ", layers_.size()));
  }
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerSpec& spec = layers_[l];
    const LayerWeights& layer = global.layers[l];
    bool same = layer.group == spec.group &&
                layer.tensors.size() == spec.tensors.size();
    for (size_t t = 0; same && t < spec.tensors.size(); ++t) {
      same = layer.tensors[t].name == spec.tensors[t].name &&
             layer.tensors[t].shape == spec.tensors[t].shape &&
             layer.tensors[t].values.size() == spec.tensors[t].numel;
    }
    if (!same) {
      return absl::FailedPreconditionError(
          absl::StrCat("commit: layer ", l, " ('", layer.group,
                       "') differs from the structure the aggregator was "
                       "built for ('",
                       spec.group, "')"));
    }
  }

  // New values are computed into the sum buffers and checked before any of
  // them is swapped into `global`, so a failure leaves it untouched.
  AggregateStats stats;
  stats.contributors.resize(layers_.size(), 0);
  stats.num_clients = static_cast<int>(clients_.size());
  stats.update_norms = norms_;
  std::optional<GaussianSource> noise;
  if (options_.dp.noise_std > 0) noise.emplace(options_.dp.noise_key);
  for (size_t l = 0; l < layers_.size(); ++l) {
    LayerSum& acc = sums_[l];
    stats.contributors[l] = acc.contributors;
    if (acc.contributors == 0) continue;
    if (noise.has_value()) {
      for (std::vector<float>& y : acc.sums) {
        for (float& v : y) {
          v = static_cast<float>(v + options_.dp.noise_std * noise->Next());
        }
      }
    }
    const float scale =
        static_cast<float>(options_.server_lr / acc.total_weight);
    for (size_t t = 0; t < acc.sums.size(); ++t) {
      const std::vector<float>& w = global.layers[l].tensors[t].values;
      std::vector<float>& y = acc.sums[t];
      Step(scale, w.data(), y.data(), y.size());
      const size_t bad = FirstNonFinite(y.data(), y.size());
      if (bad != y.size()) {
        return absl::OutOfRangeError(
            absl::StrCat("commit: tensor '", layers_[l].tensors[t].name,
                         "' would become ", y[bad], " at element ", bad,
                         " (aggregate overflow); model left unchanged"));
      }
    }
  }
  for (size_t l = 0; l < layers_.size(); ++l) {
    LayerSum& acc = sums_[l];
    if (acc.contributors == 0) continue;
    LayerWeights& layer = global.layers[l];
    for (size_t t = 0; t < acc.sums.size(); ++t) {
      layer.tensors[t].values = std::move(acc.sums[t]);
    }
    layer.version += 1;
    stats.changed_layers.push_back(layer.group);
    acc.sums.clear();
    acc.sums.shrink_to_fit();
  }
  return stats;
}

}  // namespace layerfl
