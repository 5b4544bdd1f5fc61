#include "common/secagg/participant.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/privacy/noise.h"

namespace layerfl {

SecAggParticipant::SecAggParticipant(
    std::string id, std::vector<std::string> groups, uint64_t rounding_seed,
    std::shared_ptr<const SecAggIdentity> identity)
    : id_(std::move(id)),
      groups_(std::move(groups)),
      rounding_seed_(rounding_seed),
      identity_(std::move(identity)) {}

absl::Status SecAggParticipant::CheckRound(int64_t round) const {
  if (client_ == nullptr || round != round_) {
    return absl::FailedPreconditionError(
        absl::StrCat("malformed: secure aggregation step for round ", round,
                     " before its keys were advertised"));
  }
  return absl::OkStatus();
}

SecAggAdvert SecAggParticipant::Advertise(int64_t round) {
  round_ = round;
  roster_.reset();
  client_ = std::make_unique<SecAggClient>(id_, round, identity_);
  return client_->Advertise();
}

absl::StatusOr<std::vector<SecAggShare>> SecAggParticipant::ShareKeys(
    const SecAggRoster& roster) {
  if (absl::Status s = CheckRound(roster.round); !s.ok()) return s;
  // The scale must leave every participant's value, and every sum of them,
  // inside 32 bits (SecAggScale): a larger one would overflow the integer
  // cast of quantization or wrap the sums.
  const int n = static_cast<int>(roster.entries.size());
  if (!(roster.value_range > 0) || !std::isfinite(roster.value_range) ||
      !(roster.scale >= 1) ||
      roster.scale > SecAggScale(roster.value_range, std::max(n, 1))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed: roster quantization scale ", roster.scale, " and range ",
        roster.value_range, " for ", n,
        " participants (the scale must be in [1, SecAggScale(range, n)])"));
  }
  absl::StatusOr<std::vector<SecAggShare>> shares = client_->ShareKeys(roster);
  if (shares.ok()) roster_ = std::make_unique<SecAggRoster>(roster);
  return shares;
}

absl::StatusOr<SecAggMaskedInput> SecAggParticipant::Mask(
    int64_t round, const std::vector<SecAggShare>& shares,
    const std::vector<LayerDelta>& update) {
  if (absl::Status s = CheckRound(round); !s.ok()) return s;
  if (roster_ == nullptr) {
    return absl::FailedPreconditionError("malformed: mask before sharing keys");
  }
  const SecAggRosterEntry* me = nullptr;
  for (const SecAggRosterEntry& e : roster_->entries) {
    if (e.advert.id == id_) me = &e;
  }
  if (me == nullptr) return absl::InternalError("not in the roster");
  if (update.size() != me->layers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("secure aggregation: the update has ", update.size(),
                     " layers, ", me->layers.size(), " were assigned"));
  }
  std::vector<std::vector<uint32_t>> quantized;
  for (int layer : me->layers) {
    const LayerDelta* d = nullptr;
    for (const LayerDelta& x : update) {
      if (x.group == groups_[layer]) d = &x;
    }
    if (d == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "secure aggregation: the update lacks layer '", groups_[layer], "'"));
    }
    std::vector<float> flat;
    for (const Tensor32& t : d->tensors) {
      flat.insert(flat.end(), t.values.begin(), t.values.end());
    }
    const NoiseKey key =
        rounding_seed_ == 0
            ? RandomNoiseKey()
            : DerivedNoiseKey(rounding_seed_,
                              absl::StrCat("secagg-round|", id_, "|", round,
                                           "|", layer));
    quantized.push_back(
        SecAggQuantize(flat, roster_->value_range, roster_->scale, key));
  }
  return client_->Mask(shares, quantized);
}

absl::StatusOr<SecAggUnmaskResponse> SecAggParticipant::Unmask(
    const SecAggUnmaskRequest& request) {
  if (absl::Status s = CheckRound(request.round); !s.ok()) return s;
  return client_->Unmask(request);
}

}  // namespace layerfl
