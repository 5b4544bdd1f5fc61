#ifndef LAYERFL_SERVER_ROUND_ENGINE_UTIL_H_
#define LAYERFL_SERVER_ROUND_ENGINE_UTIL_H_

// What the synchronous and the asynchronous round engines share: the checks
// of a joining client and of a checkpoint's model, and the scoring depth a
// client's memory limit allows. Internal to server/round.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/weights/weights.h"
#include "server/round/round_engine.h"

namespace layerfl {

// InvalidArgument naming the field when `client`'s id (1 to 128 letters,
// digits, '-', '_', '.'), sample count ([1, 10^12]) or budget (> 0, finite)
// is out of range.
absl::Status ValidateJoin(const ClientInfo& client);

// FailedPrecondition, naming the round, when `checkpoint` does not have the
// structure (groups, tensor names, shapes) of `model`.
absl::Status CheckSameStructure(const ModelWeights& model,
                                const ModelWeights& checkpoint, int64_t round);

// The lowest group `client`'s memory limit lets it score from: its budget
// when `budget_unit` is memory, or its declared memory cap, whichever is
// lower, against its profiled scoring peaks; 0 when it has no limit or no
// profile; at most `num_layers`.
int ScoreFrom(const ClientInfo& client, const std::string& budget_unit,
              int num_layers);

// A Rejection (kWrongShape, kNonFinite) naming the client and the layer when
// `scores` is not one finite, non-negative score per layer of `model`.
absl::Status CheckScores(const std::string& client_id,
                         const std::vector<double>& scores,
                         const ModelWeights& model);

// InvalidArgument when a field of `usage` is not finite or absurdly large.
absl::Status CheckUsage(const std::string& client_id, const ClientUsage& usage);

// The fields of `from` that are reported (>= 0) replace those of `into`.
void MergeUsage(const ClientUsage& from, ClientUsage& into);

// The name a refusal is counted under: its RejectReasonName, or "other".
std::string RefusalName(const absl::Status& refusal);

// Sample counts weight the average: an absurd one would let one client
// outweigh every other, so they are capped here.
inline constexpr int64_t kMaxSamples = 1'000'000'000'000;

}  // namespace layerfl

#endif  // LAYERFL_SERVER_ROUND_ENGINE_UTIL_H_
