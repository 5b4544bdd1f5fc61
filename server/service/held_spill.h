#ifndef LAYERFL_SERVER_SERVICE_HELD_SPILL_H_
#define LAYERFL_SERVER_SERVICE_HELD_SPILL_H_

// The values of an update kept on disk instead of in memory: one waiting for
// its turn (ordered aggregation), or one received straight to disk. The
// update keeps its layer and tensor names and shapes in memory; the file
// holds only the float values, in update order, followed by a CRC-32 of
// them. The aggregator reads them back a tensor at a time (DeltaSource), so
// that the update is never in memory whole.

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/weights/weights.h"
#include "server/aggregator/aggregator.h"

namespace layerfl {

// Bytes of the values of `update` (numel x 4).
int64_t UpdateValueBytes(const std::vector<LayerDelta>& update);

// Writes an update's values to a file as they come, a layer at a time.
// Errors name the path. The file is removed unless Finish succeeded.
class SpillWriter {
 public:
  explicit SpillWriter(std::string path);
  ~SpillWriter();
  SpillWriter(const SpillWriter&) = delete;
  SpillWriter& operator=(const SpillWriter&) = delete;

  absl::Status Append(const std::vector<Tensor32>& tensors);
  // Writes the CRC and closes the file; it is the caller's from now on.
  absl::Status Finish();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
  uint32_t crc_ = 0;
  bool finished_ = false;
};

// Writes the values of `update` to `path` and frees them from memory (the
// tensors keep names and shapes). On error (naming the path) `update` is
// unchanged and no file is left.
absl::Status SpillValues(std::vector<LayerDelta>& update,
                         const std::string& path);

// The values SpillValues or a SpillWriter wrote for an update of `shapes`,
// as a DeltaSource. Opening checks the file's size against the shapes;
// every pass checks the CRC when it reads the last tensor. Errors are
// DataLoss naming the path (damaged, foreign, cut short) or NotFound (cannot
// be opened). The file stays; the caller removes it.
absl::StatusOr<std::unique_ptr<DeltaSource>> OpenSpilledValues(
    const std::string& path, const std::vector<LayerDelta>& shapes);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_HELD_SPILL_H_
