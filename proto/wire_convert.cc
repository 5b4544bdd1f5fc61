#include "proto/wire_convert.h"

#include <algorithm>

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

void ToProto(const TrainingProfile& p, wire::v1::TrainingProfile* out) {
  for (const std::string& g : p.groups) out->add_groups(g);
  out->set_batch_size(p.batch_size);
  out->set_threads(p.threads);
  out->set_machine(p.machine);
  out->set_step_fixed_s(p.step_fixed_s);
  for (double v : p.step_per_group_s) out->add_step_per_group_s(v);
  for (double v : p.step_depth_s) out->add_step_depth_s(v);
  out->set_scoring_s(p.scoring_s);
  out->set_fixed_bytes(p.fixed_bytes);
  for (int64_t v : p.per_group_bytes) out->add_per_group_bytes(v);
  for (int64_t v : p.depth_bytes) out->add_depth_bytes(v);
  for (int64_t v : p.scoring_bytes) out->add_scoring_bytes(v);
  for (double v : p.scoring_from_s) out->add_scoring_from_s(v);
}

absl::StatusOr<TrainingProfile> FromProto(const wire::v1::TrainingProfile& in) {
  TrainingProfile p;
  p.groups.assign(in.groups().begin(), in.groups().end());
  p.batch_size = in.batch_size();
  p.threads = in.threads();
  p.machine = in.machine();
  p.step_fixed_s = in.step_fixed_s();
  p.step_per_group_s.assign(in.step_per_group_s().begin(),
                            in.step_per_group_s().end());
  p.step_depth_s.assign(in.step_depth_s().begin(), in.step_depth_s().end());
  p.scoring_s = in.scoring_s();
  p.fixed_bytes = in.fixed_bytes();
  p.per_group_bytes.assign(in.per_group_bytes().begin(),
                           in.per_group_bytes().end());
  p.depth_bytes.assign(in.depth_bytes().begin(), in.depth_bytes().end());
  p.scoring_bytes.assign(in.scoring_bytes().begin(), in.scoring_bytes().end());
  p.scoring_from_s.assign(in.scoring_from_s().begin(),
                          in.scoring_from_s().end());
  absl::Status s = p.Validate();
  if (!s.ok()) return s;
  return p;
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

namespace {

std::string Bytes(const Key32& k) {
  return std::string(reinterpret_cast<const char*>(k.data()), k.size());
}

absl::Status ToKey(const std::string& bytes, const char* field, Key32* out) {
  if (bytes.size() != out->size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed: ", field, " must have 32 bytes, got ", bytes.size()));
  }
  std::copy(bytes.begin(), bytes.end(), out->begin());
  return absl::OkStatus();
}

}  // namespace

void ToProto(const SecAggAdvert& in, wire::v1::SecAggAdvert* out) {
  out->set_id(in.id);
  out->set_round(in.round);
  out->set_enc_pk(Bytes(in.enc_pk));
  out->set_mask_pk(Bytes(in.mask_pk));
  out->set_commitment(Bytes(in.commitment));
  out->set_signature(in.signature);
}

absl::StatusOr<SecAggAdvert> FromProto(const wire::v1::SecAggAdvert& in) {
  SecAggAdvert a;
  a.id = in.id();
  a.round = in.round();
  absl::Status s = ToKey(in.enc_pk(), "enc_pk", &a.enc_pk);
  if (s.ok()) s = ToKey(in.mask_pk(), "mask_pk", &a.mask_pk);
  if (s.ok()) s = ToKey(in.commitment(), "commitment", &a.commitment);
  if (!s.ok()) return s;
  if (!in.signature().empty() && in.signature().size() != 64) {
    return absl::InvalidArgumentError(
        "malformed: an advert signature must have 64 bytes");
  }
  a.signature = in.signature();
  return a;
}

void ToProto(const SecAggRoster& in, wire::v1::SecAggRoster* out) {
  out->set_round(in.round);
  out->set_threshold(in.threshold);
  out->set_value_range(in.value_range);
  out->set_scale(in.scale);
  for (int64_t n : in.layer_sizes) out->add_layer_sizes(n);
  for (const SecAggRosterEntry& e : in.entries) {
    wire::v1::SecAggRosterEntry* w = out->add_entries();
    ToProto(e.advert, w->mutable_advert());
    for (int l : e.layers) w->add_layers(l);
  }
}

absl::StatusOr<SecAggRoster> FromProto(const wire::v1::SecAggRoster& in) {
  SecAggRoster r;
  r.round = in.round();
  r.threshold = in.threshold();
  r.value_range = in.value_range();
  r.scale = in.scale();
  r.layer_sizes.assign(in.layer_sizes().begin(), in.layer_sizes().end());
  for (const wire::v1::SecAggRosterEntry& w : in.entries()) {
    absl::StatusOr<SecAggAdvert> a = FromProto(w.advert());
    if (!a.ok()) return a.status();
    r.entries.push_back({*a, {w.layers().begin(), w.layers().end()}});
  }
  return r;
}

void ToProto(const SecAggShare& in, wire::v1::SecAggShare* out) {
  out->set_from(in.from);
  out->set_to(in.to);
  out->set_ciphertext(in.ciphertext);
  out->set_key_commitment(Bytes(in.key_commitment));
  out->set_self_commitment(Bytes(in.self_commitment));
}

SecAggShare FromProto(const wire::v1::SecAggShare& in) {
  SecAggShare s;
  s.from = in.from();
  s.to = in.to();
  s.ciphertext = in.ciphertext();
  // A commitment of another length stays zero: it matches no share, and the
  // share's dealer is excluded for it.
  (void)ToKey(in.key_commitment(), "key_commitment", &s.key_commitment);
  (void)ToKey(in.self_commitment(), "self_commitment", &s.self_commitment);
  return s;
}

void ToProto(const SecAggUnmaskRequest& in,
             wire::v1::SecAggUnmaskRequest* out) {
  out->set_round(in.round);
  for (const std::string& id : in.survivors) out->add_survivors(id);
  for (const std::string& id : in.dropped) out->add_dropped(id);
}

SecAggUnmaskRequest FromProto(const wire::v1::SecAggUnmaskRequest& in) {
  return {in.round(),
          {in.survivors().begin(), in.survivors().end()},
          {in.dropped().begin(), in.dropped().end()}};
}

void ToProto(const SecAggUnmaskResponse& in,
             wire::v1::SecAggUnmaskResponse* out) {
  out->set_id(in.id);
  out->set_round(in.round);
  for (const auto& [k, v] : in.self_mask_shares) {
    (*out->mutable_self_mask_shares())[k] = v;
  }
  for (const auto& [k, v] : in.key_shares) (*out->mutable_key_shares())[k] = v;
}

SecAggUnmaskResponse FromProto(const wire::v1::SecAggUnmaskResponse& in) {
  SecAggUnmaskResponse r;
  r.id = in.id();
  r.round = in.round();
  r.self_mask_shares.insert(in.self_mask_shares().begin(),
                            in.self_mask_shares().end());
  r.key_shares.insert(in.key_shares().begin(), in.key_shares().end());
  return r;
}

}  // namespace layerfl
