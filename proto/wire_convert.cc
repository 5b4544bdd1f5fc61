#include "proto/wire_convert.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace layerfl {

wire::v1::Encoding ToProto(Encoding encoding) {
  switch (encoding) {
    case Encoding::kFloat32:
      return wire::v1::FLOAT32;
    case Encoding::kFloat16:
      return wire::v1::FLOAT16;
    case Encoding::kBFloat16:
      return wire::v1::BFLOAT16;
  }
  return wire::v1::FLOAT32;
}

absl::StatusOr<Encoding> FromProto(int encoding) {
  switch (encoding) {
    case wire::v1::FLOAT32:
      return Encoding::kFloat32;
    case wire::v1::FLOAT16:
      return Encoding::kFloat16;
    case wire::v1::BFLOAT16:
      return Encoding::kBFloat16;
    default:
      return WireRefusal(WireError::kBadEncoding,
                         absl::StrCat("unknown encoding value ", encoding));
  }
}

void ToProto(ChunkFrame&& frame, wire::v1::Chunk* out) {
  out->Clear();
  if (frame.header.has_value()) {
    const LayerHeader& h = *frame.header;
    wire::v1::LayerHeader* p = out->mutable_header();
    p->set_layer(h.layer);
    p->set_version(h.version);
    p->set_encoding(ToProto(h.encoding));
    for (const TensorSpec& t : h.tensors) {
      wire::v1::TensorSpec* s = p->add_tensors();
      s->set_name(t.name);
      for (int64_t d : t.shape) s->add_shape(d);
    }
    p->set_layout(h.layout);
    p->set_payload_bytes(h.payload_bytes);
  }
  out->set_offset(frame.offset);
  out->mutable_data()->swap(frame.data);
  out->set_crc32(frame.crc32);
}

absl::Status AddChunk(const wire::v1::Chunk& chunk,
                      LayerStreamDecoder& decoder) {
  if (!chunk.has_header()) {
    return decoder.Add(nullptr, chunk.offset(), chunk.data(), chunk.crc32());
  }
  const wire::v1::LayerHeader& p = chunk.header();
  LayerHeader h;
  h.layer = p.layer();
  h.version = p.version();
  absl::StatusOr<Encoding> encoding = FromProto(p.encoding());
  if (!encoding.ok()) return encoding.status();
  h.encoding = *encoding;
  h.tensors.reserve(p.tensors_size());
  for (const wire::v1::TensorSpec& s : p.tensors()) {
    h.tensors.push_back({s.name(), {s.shape().begin(), s.shape().end()}});
  }
  h.layout = p.layout();
  h.payload_bytes = p.payload_bytes();
  return decoder.Add(&h, chunk.offset(), chunk.data(), chunk.crc32());
}

int64_t WireBytes(const google::protobuf::MessageLite& message) {
  return static_cast<int64_t>(message.ByteSizeLong()) + 5;
}

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace layerfl
