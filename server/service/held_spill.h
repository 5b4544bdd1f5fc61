#ifndef LAYERFL_SERVER_SERVICE_HELD_SPILL_H_
#define LAYERFL_SERVER_SERVICE_HELD_SPILL_H_

// Moving the values of an update that waits for its turn (ordered
// aggregation) out of memory and back. The update keeps its layer and tensor
// names and shapes; only the float values travel to the file, followed by a
// CRC-32 of them.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/weights/weights.h"

namespace layerfl {

// Bytes of the values of `update` (numel x 4).
int64_t UpdateValueBytes(const std::vector<LayerDelta>& update);

// Writes the values of `update` to `path` and frees them from memory (the
// tensors keep names and shapes). On error (naming the path) `update` is
// unchanged and no file is left.
absl::Status SpillValues(std::vector<LayerDelta>& update,
                         const std::string& path);

// Reads back what SpillValues wrote into the same `update` (a tensor at a
// time, no second copy) and removes the file. DataLoss naming the path when
// its size or CRC does not match the shapes (a damaged or foreign file) or
// it cannot be read whole; NotFound when it cannot be opened. On error the
// values stay empty.
absl::Status RestoreValues(std::vector<LayerDelta>& update,
                           const std::string& path);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_HELD_SPILL_H_
