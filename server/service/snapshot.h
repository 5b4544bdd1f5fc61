#ifndef LAYERFL_SERVER_SERVICE_SNAPSHOT_H_
#define LAYERFL_SERVER_SERVICE_SNAPSHOT_H_

// The committed global model as FetchLayers sends it: every layer cut into
// the run's chunks (encoded, checksummed) as serialized FetchReply{chunk}
// messages, prepared once per layer version and shared by every client's
// download. After a commit only the layers whose version moved are prepared
// again.
//
// With float32 encoding a message is sent as pieces: its serialized fields,
// then the chunk's payload read in place from the layer's values, which the
// snapshot shares with the engine's model (SharedFloats: copy on write, so a
// commit replaces the engine's values and the snapshot keeps the old ones
// while a download still sends them). The snapshot then costs no second copy
// of the model. Other encodings hold their encoded payload.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/codec/codec.h"
#include "common/weights/weights.h"

namespace layerfl {

struct EncodedLayer {
  // One FetchReply{chunk} message: `head`, then (float32 only) `payload_size`
  // bytes of the layer's values from byte `payload_offset` of the layer
  // (its tensors' values, concatenated in order).
  struct Message {
    std::string head;
    int64_t payload_offset = 0;
    int64_t payload_size = 0;
  };

  std::string layer;
  int64_t version = 0;
  int64_t numel = 0;
  int64_t payload_bytes = 0;
  LayerWeights values;  // float32: shares the engine's values; else empty
  std::vector<Message> messages;

  // Message `i` as the byte ranges it is sent as, in order; they point into
  // this object.
  std::vector<std::string_view> Pieces(size_t i) const;
  // Message `i` in one string (a copy; for tests and small messages).
  std::string Serialized(size_t i) const;
};

struct Snapshot {
  int64_t committed_round = 0;
  std::vector<std::shared_ptr<const EncodedLayer>> layers;  // model order
};

// Prepares `global`'s layers in chunks of at most `chunk_bytes` payload,
// sharing (not copying) the layers of `previous` (may be null) whose group
// and version did not change. With float32 the result shares `global`'s
// values (see above); `global` may be a copy of the engine's model taken
// under its lock, read here outside it.
std::vector<std::shared_ptr<const EncodedLayer>> EncodeSnapshot(
    const ModelWeights& global, const Snapshot* previous, Encoding encoding,
    int64_t chunk_bytes);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_SNAPSHOT_H_
