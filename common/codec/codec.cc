#include "common/codec/codec.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/codec/float16.h"
#include "common/util/status_macros.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire codec copies float32 values as little-endian bytes");

namespace layerfl {
namespace {

constexpr absl::string_view kWireErrorNames[] = {
    "bad_checksum", "wrong_length",    "wrong_shape",
    "unknown_layer", "unexpected_layer", "truncated",
    "oversized_chunk", "bad_encoding", "out_of_order",
};

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// Copies `n` values from `in` (float32) to `out` in the wire encoding.
void EncodeValues(const float* in, size_t n, Encoding encoding,
                  unsigned char* out) {
  switch (encoding) {
    case Encoding::kFloat32:
      std::memcpy(out, in, n * sizeof(float));
      return;
    case Encoding::kFloat16:
      FloatsToHalves(in, n, out);
      return;
    case Encoding::kBFloat16:
      FloatsToBFloat16s(in, n, out);
      return;
  }
}

void DecodeValues(const unsigned char* in, size_t n, Encoding encoding,
                  float* out) {
  switch (encoding) {
    case Encoding::kFloat32:
      std::memcpy(out, in, n * sizeof(float));
      return;
    case Encoding::kFloat16:
      HalvesToFloats(in, n, out);
      return;
    case Encoding::kBFloat16:
      BFloat16sToFloats(in, n, out);
      return;
  }
}

int64_t NumelOf(const std::vector<Tensor32>& tensors) {
  int64_t n = 0;
  for (const Tensor32& t : tensors) n += t.numel();
  return n;
}

}  // namespace

absl::string_view EncodingName(Encoding encoding) {
  switch (encoding) {
    case Encoding::kFloat32:
      return "float32";
    case Encoding::kFloat16:
      return "float16";
    case Encoding::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

absl::StatusOr<Encoding> ParseEncoding(absl::string_view name) {
  for (Encoding e :
       {Encoding::kFloat32, Encoding::kFloat16, Encoding::kBFloat16}) {
    if (name == EncodingName(e)) return e;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "encoding must be float32, float16 or bfloat16, got '", name, "'"));
}

int BytesPerValue(Encoding encoding) {
  return encoding == Encoding::kFloat32 ? 4 : 2;
}

absl::string_view WireErrorName(WireError error) {
  return kWireErrorNames[static_cast<int>(error)];
}

absl::Status WireRefusal(WireError error, std::string detail) {
  const std::string message = absl::StrCat(WireErrorName(error), ": ", detail);
  if (error == WireError::kBadChecksum || error == WireError::kTruncated) {
    return absl::DataLossError(message);
  }
  return absl::InvalidArgumentError(message);
}

std::optional<WireError> WireErrorOf(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  const absl::string_view message = status.message();
  for (size_t i = 0; i < std::size(kWireErrorNames); ++i) {
    const absl::string_view name = kWireErrorNames[i];
    if (message.size() > name.size() && message.substr(0, name.size()) == name &&
        message[name.size()] == ':') {
      const auto error = static_cast<WireError>(i);
      if (WireRefusal(error, "").code() == status.code()) return error;
    }
  }
  return std::nullopt;
}

uint32_t LayoutFingerprint(const std::vector<TensorSpec>& tensors) {
  std::string bytes;
  for (const TensorSpec& t : tensors) {
    bytes += t.name;
    bytes += '\0';
    const int64_t rank = static_cast<int64_t>(t.shape.size());
    bytes.append(reinterpret_cast<const char*>(&rank), sizeof(rank));
    for (int64_t d : t.shape) {
      bytes.append(reinterpret_cast<const char*>(&d), sizeof(d));
    }
  }
  return Crc32(bytes);
}

LayerLayout LayoutOf(const std::string& layer,
                     const std::vector<Tensor32>& tensors) {
  LayerLayout layout;
  layout.layer = layer;
  for (const Tensor32& t : tensors) {
    layout.tensors.push_back({t.name, t.shape});
    layout.numel += t.numel();
  }
  layout.fingerprint = LayoutFingerprint(layout.tensors);
  return layout;
}

std::vector<LayerLayout> LayoutsOf(const ModelWeights& model) {
  std::vector<LayerLayout> out;
  for (const LayerWeights& l : model.layers) {
    out.push_back(LayoutOf(l.group, l.tensors));
  }
  return out;
}

LayerSource SourceOf(const LayerWeights& layer) {
  return {layer.group, layer.version, &layer.tensors};
}

LayerSource SourceOf(const LayerDelta& delta) {
  return {delta.group, 0, &delta.tensors};
}

LayerStreamEncoder::LayerStreamEncoder(std::vector<LayerSource> layers,
                                       Encoding encoding, int64_t chunk_bytes,
                                       bool with_specs)
    : layers_(std::move(layers)),
      encoding_(encoding),
      chunk_bytes_(std::max<int64_t>(4, chunk_bytes / 4 * 4)),
      with_specs_(with_specs) {
  for (const LayerSource& l : layers_) {
    payload_bytes_ += NumelOf(*l.tensors) * BytesPerValue(encoding_);
  }
}

bool LayerStreamEncoder::Next(ChunkFrame* frame) {
  if (layer_ >= layers_.size()) return false;
  const LayerSource& src = layers_[layer_];
  const int bpv = BytesPerValue(encoding_);
  const uint64_t total = static_cast<uint64_t>(NumelOf(*src.tensors)) * bpv;
  frame->header.reset();
  if (!started_) {
    LayerHeader h;
    h.layer = src.layer;
    h.version = src.version;
    h.encoding = encoding_;
    const LayerLayout layout = LayoutOf(src.layer, *src.tensors);
    if (with_specs_) h.tensors = layout.tensors;
    h.layout = layout.fingerprint;
    h.payload_bytes = total;
    frame->header = std::move(h);
    started_ = true;
    offset_ = 0;
    tensor_ = 0;
    element_ = 0;
  }
  const uint64_t n =
      std::min<uint64_t>(static_cast<uint64_t>(chunk_bytes_), total - offset_);
  frame->offset = offset_;
  frame->data.resize(n);
  auto* out = reinterpret_cast<unsigned char*>(frame->data.data());
  size_t values = n / bpv;
  while (values > 0) {
    const Tensor32& t = (*src.tensors)[tensor_];
    const size_t avail = t.values.size() - element_;
    if (avail == 0) {
      ++tensor_;
      element_ = 0;
      continue;
    }
    const size_t take = std::min(avail, values);
    EncodeValues(t.values.data() + element_, take, encoding_, out);
    out += take * bpv;
    element_ += take;
    values -= take;
  }
  frame->crc32 = Crc32(frame->data);
  offset_ += n;
  if (offset_ >= total) {
    ++layer_;
    started_ = false;
  }
  return true;
}

LayerStreamDecoder::LayerStreamDecoder(std::vector<ExpectedLayer> expected,
                                       std::vector<std::string> known_layers,
                                       DecoderLimits limits)
    : expected_(std::move(expected)),
      known_(std::move(known_layers)),
      limits_(limits) {}

absl::Status LayerStreamDecoder::Fail(absl::Status status) {
  failed_ = status;
  return status;
}

absl::Status LayerStreamDecoder::StartLayer(const LayerHeader& h) {
  const auto is_known = [&](const std::string& name) {
    if (std::find(known_.begin(), known_.end(), name) != known_.end()) {
      return true;
    }
    for (const ExpectedLayer& e : expected_) {
      if (e.layer == name) return true;
    }
    return false;
  };
  if (next_ >= expected_.size() || h.layer != expected_[next_].layer) {
    if (!is_known(h.layer)) {
      return WireRefusal(WireError::kUnknownLayer,
                         absl::StrCat("layer '", h.layer,
                                      "' is not a layer of the model"));
    }
    for (size_t i = 0; i < next_; ++i) {
      if (expected_[i].layer == h.layer) {
        return WireRefusal(WireError::kUnexpectedLayer,
                           absl::StrCat("layer '", h.layer, "' sent twice"));
      }
    }
    return WireRefusal(
        WireError::kUnexpectedLayer,
        next_ >= expected_.size()
            ? absl::StrCat("layer '", h.layer, "' after the ",
                           expected_.size(), " announced layers")
            : absl::StrCat("layer '", h.layer, "' where '",
                           expected_[next_].layer, "' was announced next"));
  }
  const ExpectedLayer& e = expected_[next_];
  if (h.encoding != limits_.encoding) {
    return WireRefusal(
        WireError::kBadEncoding,
        absl::StrCat("layer '", h.layer, "' is encoded as ",
                     EncodingName(h.encoding), ", the run uses ",
                     EncodingName(limits_.encoding)));
  }
  const std::vector<TensorSpec>* specs = nullptr;
  if (e.layout.has_value()) {
    const LayerLayout& want = *e.layout;
    if (!h.tensors.empty()) {
      if (h.tensors.size() != want.tensors.size()) {
        return WireRefusal(
            WireError::kWrongShape,
            absl::StrCat("layer '", h.layer, "' has ", h.tensors.size(),
                         " tensors, the model's has ", want.tensors.size()));
      }
      for (size_t t = 0; t < want.tensors.size(); ++t) {
        if (!(h.tensors[t] == want.tensors[t])) {
          return WireRefusal(
              WireError::kWrongShape,
              absl::StrCat("layer '", h.layer, "' tensor ", t, ": '",
                           h.tensors[t].name, "' ",
                           ShapeString(h.tensors[t].shape), ", the model has '",
                           want.tensors[t].name, "' ",
                           ShapeString(want.tensors[t].shape)));
        }
      }
    }
    if (h.layout != want.fingerprint) {
      std::vector<std::string> names;
      for (const TensorSpec& t : want.tensors) {
        names.push_back(absl::StrCat(t.name, ShapeString(t.shape)));
      }
      return WireRefusal(
          WireError::kWrongShape,
          absl::StrFormat("layer '%s' layout fingerprint %08x differs from the "
                          "model's %08x (%s)",
                          h.layer, h.layout, want.fingerprint,
                          absl::StrJoin(names, " ")));
    }
    specs = &want.tensors;
  } else {
    if (h.tensors.empty()) {
      return WireRefusal(WireError::kWrongShape,
                         absl::StrCat("layer '", h.layer,
                                      "' came without tensor shapes, and the "
                                      "receiver does not know it"));
    }
    int64_t numel = 0;
    for (const TensorSpec& t : h.tensors) {
      int64_t n = 1;
      for (int64_t d : t.shape) {
        if (d < 0 || (d > 0 && n > limits_.max_layer_numel / d)) {
          return WireRefusal(WireError::kWrongShape,
                             absl::StrCat("layer '", h.layer, "' tensor '",
                                          t.name, "' has shape ",
                                          ShapeString(t.shape)));
        }
        n *= d;
      }
      numel += n;
      if (numel > limits_.max_layer_numel) {
        return WireRefusal(
            WireError::kWrongShape,
            absl::StrCat("layer '", h.layer, "' exceeds ",
                         limits_.max_layer_numel, " values"));
      }
    }
    if (LayoutFingerprint(h.tensors) != h.layout) {
      return WireRefusal(
          WireError::kWrongShape,
          absl::StrCat("layer '", h.layer,
                       "' layout fingerprint does not match its tensor specs"));
    }
    specs = &h.tensors;
  }
  int64_t numel = 0;
  current_ = LayerWeights();
  current_.group = h.layer;
  current_.version = h.version;
  for (const TensorSpec& spec : *specs) {
    Tensor32 t;
    t.name = spec.name;
    t.shape = spec.shape;
    int64_t n = 1;
    for (int64_t d : spec.shape) n *= d;
    numel += n;
    current_.tensors.push_back(std::move(t));
  }
  if (numel > limits_.max_total_numel - total_numel_) {
    return WireRefusal(
        WireError::kWrongShape,
        absl::StrCat("layer '", h.layer, "' takes the stream past ",
                     limits_.max_total_numel, " values in all"));
  }
  total_numel_ += numel;
  const uint64_t want_bytes =
      static_cast<uint64_t>(numel) * BytesPerValue(limits_.encoding);
  if (h.payload_bytes != want_bytes) {
    return WireRefusal(
        WireError::kWrongLength,
        absl::StrCat("layer '", h.layer, "' announces ", h.payload_bytes,
                     " payload bytes, its ", numel, " values in ",
                     EncodingName(limits_.encoding), " take ", want_bytes));
  }
  // Capacity only: values are appended as chunks arrive (no zero fill).
  current_numel_.clear();
  for (size_t t = 0; t < specs->size(); ++t) {
    int64_t n = 1;
    for (int64_t d : (*specs)[t].shape) n *= d;
    current_.tensors[t].values.reserve(static_cast<size_t>(n));
    current_numel_.push_back(static_cast<size_t>(n));
  }
  current_bytes_ = want_bytes;
  current_offset_ = 0;
  tensor_ = 0;
  in_layer_ = true;
  ++next_;
  return absl::OkStatus();
}

absl::Status LayerStreamDecoder::Add(const LayerHeader* header,
                                     uint64_t offset, absl::string_view data,
                                     uint32_t crc32) {
  if (!failed_.ok()) return failed_;
  if (finished_) {
    return Fail(WireRefusal(WireError::kOutOfOrder,
                            "a chunk after the end of the stream"));
  }
  if (static_cast<int64_t>(data.size()) > limits_.max_chunk_bytes) {
    return Fail(WireRefusal(
        WireError::kOversizedChunk,
        absl::StrCat("a chunk of ", data.size(), " bytes, at most ",
                     limits_.max_chunk_bytes, " accepted")));
  }
  if (header != nullptr) {
    if (in_layer_) {
      return Fail(WireRefusal(
          WireError::kTruncated,
          absl::StrCat("layer '", current_.group, "' ended after ",
                       current_offset_, " of ", current_bytes_,
                       " bytes: the next layer's header arrived")));
    }
    absl::Status started = StartLayer(*header);
    if (!started.ok()) return Fail(started);
  } else if (!in_layer_) {
    return Fail(WireRefusal(
        WireError::kOutOfOrder,
        absl::StrCat("a chunk at offset ", offset, " without a layer header")));
  } else if (data.empty()) {
    return Fail(WireRefusal(WireError::kWrongLength,
                            absl::StrCat("an empty chunk in layer '",
                                         current_.group, "'")));
  }
  if (offset != current_offset_) {
    return Fail(WireRefusal(
        WireError::kOutOfOrder,
        absl::StrCat("layer '", current_.group, "': chunk at offset ", offset,
                     ", expected ", current_offset_)));
  }
  const int bpv = BytesPerValue(limits_.encoding);
  if (data.size() % bpv != 0 || offset + data.size() > current_bytes_) {
    return Fail(WireRefusal(
        WireError::kWrongLength,
        absl::StrCat("layer '", current_.group, "': a chunk of ", data.size(),
                     " bytes at offset ", offset, " in a payload of ",
                     current_bytes_, " bytes of ", bpv, "-byte values")));
  }
  if (Crc32(data) != crc32) {
    return Fail(WireRefusal(
        WireError::kBadChecksum,
        absl::StrFormat("layer '%s': chunk at offset %d has CRC-32 %08x, "
                        "its header says %08x",
                        current_.group, offset, Crc32(data), crc32)));
  }
  // Decoded through a small staging buffer that stays in L1, then appended.
  constexpr size_t kStage = 2048;
  float stage[kStage];
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  size_t values = data.size() / bpv;
  while (values > 0) {
    Tensor32& t = current_.tensors[tensor_];
    const size_t avail = current_numel_[tensor_] - t.values.size();
    if (avail == 0) {
      ++tensor_;
      continue;
    }
    const size_t take = std::min({avail, values, kStage});
    DecodeValues(in, take, limits_.encoding, stage);
    t.values.insert(t.values.end(), stage, stage + take);
    in += take * bpv;
    values -= take;
  }
  current_offset_ += data.size();
  payload_bytes_ += static_cast<int64_t>(data.size());
  if (current_offset_ == current_bytes_) {
    done_.push_back(std::move(current_));
    current_ = LayerWeights();
    in_layer_ = false;
  }
  return absl::OkStatus();
}

absl::Status LayerStreamDecoder::Finish() {
  if (!failed_.ok()) return failed_;
  if (in_layer_) {
    return Fail(WireRefusal(
        WireError::kTruncated,
        absl::StrCat("the stream ended inside layer '", current_.group,
                     "' after ", current_offset_, " of ", current_bytes_,
                     " bytes")));
  }
  if (next_ < expected_.size()) {
    return Fail(WireRefusal(
        WireError::kTruncated,
        absl::StrCat("the stream ended after ", next_, " of ",
                     expected_.size(), " layers; '", expected_[next_].layer,
                     "' is missing")));
  }
  finished_ = true;
  return absl::OkStatus();
}

std::vector<LayerWeights> LayerStreamDecoder::TakeLayers() {
  return std::move(done_);
}

std::vector<LayerWeights> LayerStreamDecoder::TakeCompleted() {
  std::vector<LayerWeights> out = std::move(done_);
  done_.clear();
  return out;
}

std::vector<ChunkFrame> EncodeLayers(const std::vector<LayerSource>& layers,
                                     Encoding encoding, int64_t chunk_bytes,
                                     bool with_specs) {
  LayerStreamEncoder encoder(layers, encoding, chunk_bytes, with_specs);
  std::vector<ChunkFrame> frames;
  ChunkFrame frame;
  while (encoder.Next(&frame)) frames.push_back(std::move(frame));
  return frames;
}

std::vector<LayerDelta> ToDeltas(std::vector<LayerWeights> layers) {
  std::vector<LayerDelta> out;
  out.reserve(layers.size());
  for (LayerWeights& l : layers) {
    out.push_back({std::move(l.group), std::move(l.tensors)});
  }
  return out;
}

}  // namespace layerfl
