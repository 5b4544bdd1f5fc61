#ifndef LAYERFL_PROTO_WIRE_CONVERT_H_
#define LAYERFL_PROTO_WIRE_CONVERT_H_

// Between the generated wire messages (proto/layerfl.proto) and the codec's
// frames, and between grpc::Status and absl::Status (the codes are the same
// numbers; the message, with its "<reason>: " prefix, is kept verbatim).
// Shared by the coordinator's service adapter and the client transport.

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/codec/codec.h"
#include "common/layers/profile.h"
#include "common/secagg/secagg.h"
#include "grpcpp/support/status.h"
#include "proto/layerfl.pb.h"

namespace layerfl {

wire::v1::Encoding ToProto(Encoding encoding);
// A value outside the enum is a kBadEncoding refusal.
absl::StatusOr<Encoding> FromProto(int encoding);

// Moves the frame's bytes into `out` (no copy of the payload).
void ToProto(ChunkFrame&& frame, wire::v1::Chunk* out);

// Checks and decodes one wire chunk (its header included).
absl::Status AddChunk(const wire::v1::Chunk& chunk,
                      LayerStreamDecoder& decoder);

// Bytes a message takes on the wire inside gRPC: the serialized message and
// gRPC's 5-byte length prefix (HTTP/2 framing not counted).
int64_t WireBytes(const google::protobuf::MessageLite& message);

// A training profile both ways; FromProto validates it (InvalidArgument
// naming the field).
void ToProto(const TrainingProfile& profile, wire::v1::TrainingProfile* out);
absl::StatusOr<TrainingProfile> FromProto(const wire::v1::TrainingProfile& in);

// Secure aggregation messages both ways; FromProto checks key lengths
// (InvalidArgument "malformed: ...").
void ToProto(const SecAggAdvert& in, wire::v1::SecAggAdvert* out);
absl::StatusOr<SecAggAdvert> FromProto(const wire::v1::SecAggAdvert& in);
void ToProto(const SecAggRoster& in, wire::v1::SecAggRoster* out);
absl::StatusOr<SecAggRoster> FromProto(const wire::v1::SecAggRoster& in);
void ToProto(const SecAggShare& in, wire::v1::SecAggShare* out);
SecAggShare FromProto(const wire::v1::SecAggShare& in);
void ToProto(const SecAggUnmaskRequest& in, wire::v1::SecAggUnmaskRequest* out);
SecAggUnmaskRequest FromProto(const wire::v1::SecAggUnmaskRequest& in);
void ToProto(const SecAggUnmaskResponse& in,
             wire::v1::SecAggUnmaskResponse* out);
SecAggUnmaskResponse FromProto(const wire::v1::SecAggUnmaskResponse& in);

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace layerfl

#endif  // LAYERFL_PROTO_WIRE_CONVERT_H_
