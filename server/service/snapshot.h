#ifndef LAYERFL_SERVER_SERVICE_SNAPSHOT_H_
#define LAYERFL_SERVER_SERVICE_SNAPSHOT_H_

// The committed global model as FetchLayers sends it: every layer encoded
// (the run's encoding, chunked, checksummed) and serialized into its
// FetchReply{chunk} messages once per layer version, shared by every
// client's download. After a commit only the layers whose version moved
// are encoded again.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/codec/codec.h"
#include "common/weights/weights.h"

namespace layerfl {

struct EncodedLayer {
  std::string layer;
  int64_t version = 0;
  int64_t numel = 0;
  int64_t payload_bytes = 0;
  std::vector<std::string> messages;  // serialized FetchReply{chunk}
};

struct Snapshot {
  int64_t committed_round = 0;
  std::vector<std::shared_ptr<const EncodedLayer>> layers;  // model order
};

// Encodes `global`'s layers into chunks of at most `chunk_bytes` payload,
// sharing (not copying) the layers of `previous` (may be null) whose group
// and version did not change.
std::vector<std::shared_ptr<const EncodedLayer>> EncodeSnapshot(
    const ModelWeights& global, const Snapshot* previous, Encoding encoding,
    int64_t chunk_bytes);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_SNAPSHOT_H_
