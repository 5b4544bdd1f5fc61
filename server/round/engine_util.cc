#include "server/round/engine_util.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/layers/profile.h"
#include "server/selection/budget.h"

namespace layerfl {

absl::Status ValidateJoin(const ClientInfo& client) {
  if (client.id.empty() || client.id.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("join: client id must have 1 to 128 characters, got ",
                     client.id.size()));
  }
  for (char ch : client.id) {
    if (!absl::ascii_isalnum(ch) && ch != '-' && ch != '_' && ch != '.') {
      return absl::InvalidArgumentError(
          absl::StrCat("join: client id '", absl::CHexEscape(client.id),
                       "' may only hold letters, digits, '-', '_' and '.'"));
    }
  }
  if (client.num_samples < 1 || client.num_samples > kMaxSamples) {
    return absl::InvalidArgumentError(absl::StrCat(
        "join: client '", client.id,
        "': num_samples must be in [1, 10^12], got ", client.num_samples));
  }
  if (!(client.budget > 0) || !std::isfinite(client.budget)) {
    return absl::InvalidArgumentError(
        absl::StrCat("join: client '", client.id, "': budget must be > 0, got ",
                     client.budget));
  }
  return absl::OkStatus();
}

absl::Status CheckSameStructure(const ModelWeights& a, const ModelWeights& b,
                                int64_t round) {
  const auto mismatch = [round](const std::string& why) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint of round ", round,
                     " does not match the configured model: ", why));
  };
  if (a.layers.size() != b.layers.size()) {
    return mismatch(
        absl::StrCat(a.layers.size(), " layers vs ", b.layers.size()));
  }
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const LayerWeights& x = a.layers[l];
    const LayerWeights& y = b.layers[l];
    if (x.group != y.group || x.tensors.size() != y.tensors.size()) {
      return mismatch(
          absl::StrCat("layer ", l, ": '", x.group, "' vs '", y.group, "'"));
    }
    for (size_t t = 0; t < x.tensors.size(); ++t) {
      if (x.tensors[t].name != y.tensors[t].name ||
          x.tensors[t].shape != y.tensors[t].shape) {
        return mismatch(absl::StrCat(
            "the model's tensor '", x.tensors[t].name, "' of shape [",
            absl::StrJoin(x.tensors[t].shape, ", "), "] vs the checkpoint's '",
            y.tensors[t].name, "' of shape [",
            absl::StrJoin(y.tensors[t].shape, ", "), "]"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckScores(const std::string& client_id,
                         const std::vector<double>& scores,
                         const ModelWeights& model) {
  if (scores.size() != model.layers.size()) {
    return Rejection(RejectReason::kWrongShape,
                     absl::StrCat("client '", client_id, "' sent ",
                                  scores.size(), " scores, the model has ",
                                  model.layers.size(), " layers"));
  }
  for (size_t l = 0; l < scores.size(); ++l) {
    if (!std::isfinite(scores[l]) || scores[l] < 0) {
      return Rejection(
          RejectReason::kNonFinite,
          absl::StrCat("client '", client_id, "': score of layer '",
                       model.layers[l].group, "' must be finite and >= 0, got ",
                       scores[l]));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckUsage(const std::string& client_id,
                        const ClientUsage& usage) {
  for (double v :
       {usage.score_s, usage.train_s, static_cast<double>(usage.peak_bytes),
        static_cast<double>(usage.score_peak_bytes),
        static_cast<double>(usage.process_peak_bytes),
        static_cast<double>(usage.memory_limit_bytes), usage.cpus}) {
    if (!std::isfinite(v) || v > 1e15) {
      return absl::InvalidArgumentError(absl::StrCat(
          "client '", client_id, "': usage must be finite, got ", v));
    }
  }
  return absl::OkStatus();
}

void MergeUsage(const ClientUsage& from, ClientUsage& into) {
  if (from.score_s >= 0) into.score_s = from.score_s;
  if (from.train_s >= 0) into.train_s = from.train_s;
  if (from.peak_bytes >= 0) into.peak_bytes = from.peak_bytes;
  if (from.score_peak_bytes >= 0) into.score_peak_bytes = from.score_peak_bytes;
  if (from.process_peak_bytes >= 0) {
    into.process_peak_bytes = from.process_peak_bytes;
  }
  if (from.memory_limit_bytes >= 0) {
    into.memory_limit_bytes = from.memory_limit_bytes;
  }
  if (from.cpus >= 0) into.cpus = from.cpus;
}

std::string RefusalName(const absl::Status& refusal) {
  std::optional<RejectReason> reason = ReasonOf(refusal);
  return reason ? std::string(RejectReasonName(*reason)) : "other";
}

int ScoreFrom(const ClientInfo& client, const std::string& budget_unit,
              int num_layers) {
  if (client.profile == nullptr) return 0;
  double limit_mb = budget_unit == "memory" ? client.budget : 0;
  if (client.max_memory_mb > 0) {
    limit_mb = limit_mb > 0 ? std::min(limit_mb, client.max_memory_mb)
                            : client.max_memory_mb;
  }
  if (!(limit_mb > 0)) return 0;
  const int from = LowestScorableGroup(
      *client.profile, static_cast<int64_t>(limit_mb * kBytesPerMiB));
  return std::min(from, num_layers);
}

}  // namespace layerfl
