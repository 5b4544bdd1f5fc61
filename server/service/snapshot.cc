#include "server/service/snapshot.h"

#include <algorithm>
#include <utility>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "proto/layerfl.pb.h"
#include "proto/wire_convert.h"

namespace layerfl {
namespace {

using google::protobuf::internal::WireFormatLite;

// FetchReply{chunk} with the chunk's `data` field left for last: the
// serialized fields, then data's tag and length, so that the payload can
// follow as a separate piece. (Protocol Buffers parsers take fields in any
// order; what the client parses is the same message.)
std::string HeadBeforePayload(ChunkFrame&& frame, int64_t payload_size) {
  wire::v1::Chunk chunk;
  frame.data.clear();
  ToProto(std::move(frame), &chunk);
  const std::string fields = chunk.SerializeAsString();
  std::string head;
  {
    google::protobuf::io::StringOutputStream stream(&head);
    google::protobuf::io::CodedOutputStream out(&stream);
    const uint32_t data_tag = WireFormatLite::MakeTag(
        wire::v1::Chunk::kDataFieldNumber,
        WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
    const size_t chunk_size =
        fields.size() +
        google::protobuf::io::CodedOutputStream::VarintSize32(data_tag) +
        google::protobuf::io::CodedOutputStream::VarintSize64(payload_size) +
        static_cast<size_t>(payload_size);
    out.WriteTag(WireFormatLite::MakeTag(
        wire::v1::FetchReply::kChunkFieldNumber,
        WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    out.WriteVarint64(chunk_size);
    out.WriteRaw(fields.data(), static_cast<int>(fields.size()));
    out.WriteTag(data_tag);
    out.WriteVarint64(static_cast<uint64_t>(payload_size));
  }
  return head;
}

std::shared_ptr<const EncodedLayer> Encode(const LayerWeights& layer,
                                           Encoding encoding,
                                           int64_t chunk_bytes) {
  auto encoded = std::make_shared<EncodedLayer>();
  encoded->layer = layer.group;
  encoded->version = layer.version;
  encoded->numel = layer.numel();
  const bool in_place = encoding == Encoding::kFloat32;
  if (in_place) encoded->values = layer;  // shares, does not copy
  LayerStreamEncoder encoder({SourceOf(layer)}, encoding, chunk_bytes,
                             /*with_specs=*/true);
  encoded->payload_bytes = encoder.payload_bytes();
  ChunkFrame frame;
  wire::v1::FetchReply reply;
  while (encoder.Next(&frame)) {
    EncodedLayer::Message m;
    if (in_place && !frame.data.empty()) {
      m.payload_offset = static_cast<int64_t>(frame.offset);
      m.payload_size = static_cast<int64_t>(frame.data.size());
      m.head = HeadBeforePayload(std::move(frame), m.payload_size);
    } else {
      ToProto(std::move(frame), reply.mutable_chunk());
      m.head = reply.SerializeAsString();
    }
    encoded->messages.push_back(std::move(m));
  }
  return encoded;
}

}  // namespace

std::vector<std::string_view> EncodedLayer::Pieces(size_t i) const {
  const Message& m = messages[i];
  std::vector<std::string_view> pieces = {m.head};
  int64_t skip = m.payload_offset;
  int64_t left = m.payload_size;
  for (const Tensor32& t : values.tensors) {
    if (left == 0) break;
    const int64_t bytes = t.numel() * static_cast<int64_t>(sizeof(float));
    if (skip >= bytes) {
      skip -= bytes;
      continue;
    }
    const int64_t take = std::min(bytes - skip, left);
    pieces.emplace_back(reinterpret_cast<const char*>(t.values.data()) + skip,
                        static_cast<size_t>(take));
    left -= take;
    skip = 0;
  }
  return pieces;
}

std::string EncodedLayer::Serialized(size_t i) const {
  std::string out;
  for (std::string_view p : Pieces(i)) out.append(p);
  return out;
}

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
    out.push_back(Encode(layer, encoding, chunk_bytes));
  }
  return out;
}

}  // namespace layerfl
