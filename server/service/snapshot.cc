#include "server/service/snapshot.h"

#include <utility>

#include "proto/layerfl.pb.h"
#include "proto/wire_convert.h"

namespace layerfl {

std::vector<std::shared_ptr<const EncodedLayer>> EncodeSnapshot(
    const ModelWeights& global, const Snapshot* previous, Encoding encoding,
    int64_t chunk_bytes) {
  std::vector<std::shared_ptr<const EncodedLayer>> out;
  for (size_t l = 0; l < global.layers.size(); ++l) {
    const LayerWeights& layer = global.layers[l];
    if (previous != nullptr && l < previous->layers.size() &&
        previous->layers[l]->layer == layer.group &&
        previous->layers[l]->version == layer.version) {
      out.push_back(previous->layers[l]);
      continue;
    }
    auto encoded = std::make_shared<EncodedLayer>();
    encoded->layer = layer.group;
    encoded->version = layer.version;
    encoded->numel = layer.numel();
    LayerStreamEncoder encoder({SourceOf(layer)}, encoding, chunk_bytes,
                               /*with_specs=*/true);
    encoded->payload_bytes = encoder.payload_bytes();
    ChunkFrame frame;
    wire::v1::FetchReply reply;
    while (encoder.Next(&frame)) {
      ToProto(std::move(frame), reply.mutable_chunk());
      encoded->messages.push_back(reply.SerializeAsString());
    }
    out.push_back(std::move(encoded));
  }
  return out;
}

}  // namespace layerfl
