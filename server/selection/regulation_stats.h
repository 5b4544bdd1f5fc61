#ifndef LAYERFL_SERVER_SELECTION_REGULATION_STATS_H_
#define LAYERFL_SERVER_SELECTION_REGULATION_STATS_H_

// Selection-regulation statistics the coordinator keeps across rounds: how
// often each layer was selected (for reports and the layer-selection heatmap)
// and a running estimate of each layer's importance (an exponential moving
// average of the clients' sample-weighted mean squared gradient norm). They
// are persisted with checkpoints through Serialize()/Deserialize().
//
// Thread-compatible: concurrent const access is safe; Update() needs external
// synchronisation.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/selection/selection_types.h"

namespace layerfl {

class RegulationStats {
 public:
  // `layer_names` in layer-table order, unique and non-empty; `decay` in
  // [0, 1) is the weight of the previous estimate in the moving average.
  static absl::StatusOr<RegulationStats> Create(
      std::vector<std::string> layer_names, double decay = 0.9);

  // Adds one round: the selection counts of `result` and, from the clients
  // of `input` that reported sq_grad_norm, the sample-weighted mean score per
  // layer (uniform weights when every sample count is 0). InvalidArgument,
  // leaving the statistics unchanged, when the layer names differ from the
  // input's layer table or the result does not match the input.
  absl::Status Update(const SelectionInput& input,
                      const SelectionResult& result);

  const std::vector<std::string>& layer_names() const { return names_; }
  double decay() const { return decay_; }
  int64_t rounds() const { return rounds_; }
  // Sum over rounds of the participating clients: the denominator of
  // SelectionFrequency().
  int64_t client_rounds() const { return client_rounds_; }
  // Per layer: clients that selected it, summed over rounds.
  const std::vector<int64_t>& selection_counts() const { return counts_; }
  // Per layer: clients that selected it in the last round (a heatmap row).
  const std::vector<int>& last_round_counts() const { return last_counts_; }
  // selection_counts / client_rounds (0 before the first round).
  std::vector<double> SelectionFrequency() const;
  // True once some round carried sq_grad_norm scores.
  bool has_importance() const { return has_importance_; }
  // Per layer running importance; zeros until has_importance().
  const std::vector<double>& importance() const { return importance_; }

  // A self-describing little-endian byte string (magic, version, checksum).
  std::string Serialize() const;
  // DataLoss for truncated, corrupted or foreign bytes.
  static absl::StatusOr<RegulationStats> Deserialize(absl::string_view bytes);

 private:
  RegulationStats() = default;

  std::vector<std::string> names_;
  double decay_ = 0.9;
  int64_t rounds_ = 0;
  int64_t client_rounds_ = 0;
  std::vector<int64_t> counts_;
  std::vector<int> last_counts_;
  bool has_importance_ = false;
  std::vector<double> importance_;
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SELECTION_REGULATION_STATS_H_
