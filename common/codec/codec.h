#ifndef LAYERFL_COMMON_CODEC_CODEC_H_
#define LAYERFL_COMMON_CODEC_CODEC_H_

// The tensor wire codec (DESIGN.md §3): layers of float32 tensors cut into
// checked chunks and put back together, in float32, float16 or bfloat16.
// Torch-free and protobuf-free: the transport (proto/wire_convert.h) maps
// these frames to and from the gRPC messages.
//
// A layer stream is, per layer: a LayerHeader (layer name, version,
// encoding, tensor names and shapes or just their fingerprint, payload
// length), then the layer's payload -- its tensors' values in model order,
// encoded little-endian, concatenated -- cut into chunks of at most
// `chunk_bytes` bytes (the header rides on the first chunk). Every chunk
// carries its byte offset and the CRC-32 of its bytes.
//
// The decoder checks everything before a value is used: layer name (known,
// announced, in order, once), encoding, tensor names and shapes, payload
// length, chunk size, offsets (no gap, no overlap), chunk checksums, and
// that the stream is complete. A refusal is a Status whose message is
// "<reason>: <detail>" with a WireError reason (see WireErrorOf).

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/weights/weights.h"

namespace layerfl {

enum class Encoding { kFloat32, kFloat16, kBFloat16 };

// "float32", "float16", "bfloat16".
absl::string_view EncodingName(Encoding encoding);
// InvalidArgument naming the accepted values for anything else.
absl::StatusOr<Encoding> ParseEncoding(absl::string_view name);
// 4, 2, 2.
int BytesPerValue(Encoding encoding);

// Why a stream was refused.
enum class WireError {
  kBadChecksum,     // a chunk's CRC-32 does not match its bytes
  kWrongLength,     // payload or chunk length inconsistent with the layout
  kWrongShape,      // tensor count, names or shapes differ from the model's
  kUnknownLayer,    // a layer the model does not have
  kUnexpectedLayer, // a known layer that was not announced, out of order, or
                    // sent twice
  kTruncated,       // the stream or a layer ended early
  kOversizedChunk,  // a chunk larger than the receiver accepts
  kBadEncoding,     // not the encoding the run uses
  kOutOfOrder,      // a chunk before its layer's header, or at the wrong offset
};

// "bad_checksum", "wrong_length", "wrong_shape", "unknown_layer",
// "unexpected_layer", "truncated", "oversized_chunk", "bad_encoding",
// "out_of_order".
absl::string_view WireErrorName(WireError error);

// "<name>: <detail>". DataLoss for kBadChecksum and kTruncated (the bytes were
// damaged or cut), InvalidArgument for the others.
absl::Status WireRefusal(WireError error, std::string detail);

// The reason of a WireRefusal status (surviving a copy through a transport
// with the same code and message), or nullopt.
std::optional<WireError> WireErrorOf(const absl::Status& status);

// CRC-32 (zlib's polynomial) of `data`, continuing from `crc`. Uses
// carry-less multiplication where the CPU has it (several GB/s).
uint32_t Crc32(absl::string_view data, uint32_t crc = 0);
// The same through zlib alone (reference for tests).
uint32_t Crc32Portable(absl::string_view data, uint32_t crc = 0);

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool operator==(const TensorSpec& o) const {
    return name == o.name && shape == o.shape;
  }
};

// A layer's tensor names and shapes and their fingerprint.
struct LayerLayout {
  std::string layer;
  std::vector<TensorSpec> tensors;
  uint32_t fingerprint = 0;  // LayoutFingerprint(tensors)
  int64_t numel = 0;
};

// CRC-32 over every tensor's name, rank and dims (little-endian int64).
uint32_t LayoutFingerprint(const std::vector<TensorSpec>& tensors);
LayerLayout LayoutOf(const std::string& layer,
                     const std::vector<Tensor32>& tensors);
std::vector<LayerLayout> LayoutsOf(const ModelWeights& model);

struct LayerHeader {
  std::string layer;
  int64_t version = 0;
  Encoding encoding = Encoding::kFloat32;
  std::vector<TensorSpec> tensors;  // empty when the receiver knows them
  uint32_t layout = 0;
  uint64_t payload_bytes = 0;
};

// One stream message.
struct ChunkFrame {
  std::optional<LayerHeader> header;  // on each layer's first chunk
  uint64_t offset = 0;
  std::string data;
  uint32_t crc32 = 0;
};

// A layer to send; the tensors are borrowed and must outlive the encoder.
struct LayerSource {
  std::string layer;
  int64_t version = 0;
  const std::vector<Tensor32>* tensors = nullptr;
};

LayerSource SourceOf(const LayerWeights& layer);
LayerSource SourceOf(const LayerDelta& delta);

// Produces a layer stream one chunk at a time (memory: one chunk). Not
// thread-safe.
class LayerStreamEncoder {
 public:
  // `chunk_bytes` (>= 4) is rounded down to a multiple of 4, so chunks always
  // hold whole values. `with_specs`: put tensor names and shapes in headers.
  LayerStreamEncoder(std::vector<LayerSource> layers, Encoding encoding,
                     int64_t chunk_bytes, bool with_specs);

  // Fills `frame` with the next chunk; false when the stream is done. A
  // layer with no values still sends one (empty) chunk with its header.
  bool Next(ChunkFrame* frame);

  // Total payload bytes of all layers (what the encoded values weigh).
  int64_t payload_bytes() const { return payload_bytes_; }

 private:
  std::vector<LayerSource> layers_;
  Encoding encoding_;
  int64_t chunk_bytes_;
  bool with_specs_;
  int64_t payload_bytes_ = 0;
  size_t layer_ = 0;       // current layer
  uint64_t offset_ = 0;    // bytes of the current layer already sent
  size_t tensor_ = 0;      // position inside the current layer
  size_t element_ = 0;
  bool started_ = false;   // the current layer's header went out
};

// What the receiver expects: the layers the stream must carry, in order.
struct ExpectedLayer {
  std::string layer;
  // The layout the receiver knows. nullopt: unknown (a client's first
  // download) -- the header must then carry the tensor specs, which are
  // checked for consistency and taken as they are.
  std::optional<LayerLayout> layout;
};

struct DecoderLimits {
  Encoding encoding = Encoding::kFloat32;  // the only accepted encoding
  int64_t max_chunk_bytes = 2 << 20;       // larger chunks are refused
  // Largest layer accepted when its layout is unknown (elements).
  int64_t max_layer_numel = int64_t{1} << 28;
  // Most values a whole stream may carry (a sender announcing layer after
  // layer cannot make the receiver allocate without end). Default 2^31
  // (8 GiB as float32).
  int64_t max_total_numel = int64_t{1} << 31;
};

// Checks and reassembles a layer stream into float32 tensors. Not
// thread-safe. After a refusal the decoder is spent (every later call
// repeats the refusal).
class LayerStreamDecoder {
 public:
  // `known_layers`: every layer the receiver's model has (to tell an unknown
  // layer from an unexpected one); may be empty when the model is unknown.
  LayerStreamDecoder(std::vector<ExpectedLayer> expected,
                     std::vector<std::string> known_layers,
                     DecoderLimits limits);

  // Checks one chunk and decodes its values in place. `data` is only read
  // during the call.
  absl::Status Add(const LayerHeader* header, uint64_t offset,
                   absl::string_view data, uint32_t crc32);
  absl::Status Add(const ChunkFrame& frame) {
    return Add(frame.header ? &*frame.header : nullptr, frame.offset,
               frame.data, frame.crc32);
  }

  // The end of the stream: kTruncated unless every expected layer arrived
  // whole.
  absl::Status Finish();

  // After a successful Finish: the layers in stream order (group, version
  // from the headers, tensors with names and shapes).
  std::vector<LayerWeights> TakeLayers();

  // The layers that arrived whole since the last call, in stream order, at
  // any time: also after a refusal or a stream cut short (each was checked
  // chunk by chunk), so that a receiver keeps what it already has.
  // TakeLayers then returns only the rest.
  std::vector<LayerWeights> TakeCompleted();

  // Payload bytes accepted so far.
  int64_t payload_bytes() const { return payload_bytes_; }

 private:
  absl::Status Fail(absl::Status status);
  absl::Status StartLayer(const LayerHeader& header);

  std::vector<ExpectedLayer> expected_;
  std::vector<std::string> known_;
  DecoderLimits limits_;
  absl::Status failed_;
  std::vector<LayerWeights> done_;
  size_t next_ = 0;           // index into expected_ of the next header
  bool in_layer_ = false;     // a header was accepted, payload incomplete
  LayerWeights current_;
  uint64_t current_bytes_ = 0;    // payload bytes of the current layer
  uint64_t current_offset_ = 0;   // received so far
  std::vector<size_t> current_numel_;  // per tensor of the current layer
  size_t tensor_ = 0;                  // the tensor being filled
  int64_t payload_bytes_ = 0;
  int64_t total_numel_ = 0;  // values announced by the layers so far
  bool finished_ = false;
};

// Encodes a whole stream into frames at once (tests and benchmarks).
std::vector<ChunkFrame> EncodeLayers(const std::vector<LayerSource>& layers,
                                     Encoding encoding, int64_t chunk_bytes,
                                     bool with_specs);

// Deltas (group + tensors) of decoded layers.
std::vector<LayerDelta> ToDeltas(std::vector<LayerWeights> layers);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_CODEC_CODEC_H_
