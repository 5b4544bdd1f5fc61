#ifndef LAYERFL_COMMON_SECAGG_PARTICIPANT_H_
#define LAYERFL_COMMON_SECAGG_PARTICIPANT_H_

// One client's side of secure aggregation across rounds, over LayerFL's
// sparse updates: a fresh SecAggClient (fresh keys) every round, the
// quantization of the update's layers (flattened in tensor order) with the
// roster's range and scale, and the masking. Shared by the client daemon and
// the simulator's virtual clients so that both send exactly the same thing.
//
// Not thread-safe.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/secagg/secagg.h"
#include "common/weights/weights.h"

namespace layerfl {

class SecAggParticipant {
 public:
  // `groups`: the model's layer groups in order (roster layer indices refer
  // to them). `rounding_seed`: 0 = stochastic rounding from the OS CSPRNG;
  // any other value makes it reproducible per (seed, id, round).
  // `identity`: sign this client's adverts and check the roster's (null =
  // unsigned, as without identities).
  SecAggParticipant(std::string id, std::vector<std::string> groups,
                    uint64_t rounding_seed,
                    std::shared_ptr<const SecAggIdentity> identity = nullptr);

  // Starts `round` with fresh keys.
  SecAggAdvert Advertise(int64_t round);
  absl::StatusOr<std::vector<SecAggShare>> ShareKeys(const SecAggRoster& roster);
  // Quantizes `update` (exactly the roster's layers for this client) and
  // masks it with the relayed `shares` (SecAggClient::Mask): peers whose
  // share does not open are named in the result's `excluded`, and fewer
  // than threshold - 1 usable shares refuse the call (too_few_shares).
  absl::StatusOr<SecAggMaskedInput> Mask(int64_t round,
                                         const std::vector<SecAggShare>& shares,
                                         const std::vector<LayerDelta>& update);
  absl::StatusOr<SecAggUnmaskResponse> Unmask(
      const SecAggUnmaskRequest& request);

  // The roster this round's keys were shared under; null before.
  const SecAggRoster* roster() const { return roster_.get(); }

 private:
  absl::Status CheckRound(int64_t round) const;

  std::string id_;
  std::vector<std::string> groups_;
  uint64_t rounding_seed_;
  std::shared_ptr<const SecAggIdentity> identity_;
  int64_t round_ = -1;
  std::unique_ptr<SecAggClient> client_;
  std::unique_ptr<SecAggRoster> roster_;
};

}  // namespace layerfl

#endif  // LAYERFL_COMMON_SECAGG_PARTICIPANT_H_
