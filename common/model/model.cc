#include "common/model/model.h"

#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/data/file.h"
#include "common/model/hf_model.h"
#include "common/model/model_internal.h"

namespace layerfl {
namespace {

std::string ShapeString(at::IntArrayRef sizes) {
  return absl::StrCat("[", absl::StrJoin(sizes, ", "), "]");
}

constexpr char kMagic[8] = {'L', 'F', 'L', 'T', 'N', 'S', '0', '1'};

int DtypeCode(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return 1;
    case at::kLong: return 2;
    case at::kDouble: return 3;
    default: return 0;
  }
}

absl::StatusOr<at::ScalarType> DtypeFromCode(int code) {
  switch (code) {
    case 1: return at::kFloat;
    case 2: return at::kLong;
    case 3: return at::kDouble;
    default:
      return absl::DataLossError(absl::StrCat("unknown dtype code ", code));
  }
}

void Put(std::string& out, const void* p, size_t n) {
  out.append(static_cast<const char*>(p), n);
}
void PutU64(std::string& out, uint64_t v) { Put(out, &v, sizeof(v)); }

// Bounds-checked reader over the file's bytes.
class Reader {
 public:
  explicit Reader(const std::string& data) : data_(data) {}
  bool Get(void* p, size_t n) {
    if (n > data_.size() - pos_) return false;
    std::memcpy(p, data_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool GetU64(uint64_t& v) { return Get(&v, sizeof(v)); }
  size_t pos() const { return pos_; }

 private:
  const std::string& data_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> CreateModel(
    const ModelConfig& config, uint64_t seed,
    const CreateModelOptions& options) {
  try {
    if (config.kind == "torchscript") return LoadTorchScriptModel(config);
    if (config.kind == "hf") {
      return options.load_hf_weights
                 ? LoadHfModel(config.hf_dir, config, seed)
                 : CreateHfModel(config.hf_dir, config, seed);
    }
    return CreateBuiltinModel(config, seed);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building model '", config.kind,
                                            "': ", e.what_without_backtrace()));
  }
}

NamedTensors CloneParameters(Model& model) {
  at::NoGradGuard no_grad;
  NamedTensors out;
  for (auto& [name, t] : model.Parameters()) {
    out.emplace_back(name, t.detach().clone());
  }
  return out;
}

absl::Status AssignParameters(Model& model, const NamedTensors& weights,
                              bool allow_missing) {
  NamedTensors params = model.Parameters();
  std::unordered_map<std::string, at::Tensor*> by_name;
  for (auto& [name, t] : params) by_name[name] = &t;
  // Check everything first so that a bad checkpoint changes nothing.
  std::unordered_map<std::string, bool> present;
  for (const auto& [name, w] : weights) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", name, "' does not exist in the model"));
    }
    const at::Tensor& p = *it->second;
    if (!p.sizes().equals(w.sizes()) || p.scalar_type() != w.scalar_type()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", name, "': model has ", ShapeString(p.sizes()), " ",
          at::toString(p.scalar_type()), ", weights have ",
          ShapeString(w.sizes()), " ", at::toString(w.scalar_type())));
    }
    present[name] = true;
  }
  if (!allow_missing) {
    for (const auto& [name, t] : params) {
      if (!present.count(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("parameter '", name, "' is missing from the weights"));
      }
    }
  }
  at::NoGradGuard no_grad;
  for (const auto& [name, w] : weights) by_name[name]->copy_(w);
  return absl::OkStatus();
}

absl::Status SaveTensors(const NamedTensors& tensors, const std::string& path) {
  std::string out;
  Put(out, kMagic, sizeof(kMagic));
  PutU64(out, tensors.size());
  for (const auto& [name, t] : tensors) {
    const int code = DtypeCode(t.scalar_type());
    if (code == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': unsupported dtype ",
                       at::toString(t.scalar_type())));
    }
    at::Tensor c = t.detach().contiguous().cpu();
    PutU64(out, name.size());
    Put(out, name.data(), name.size());
    PutU64(out, code);
    PutU64(out, c.dim());
    for (int64_t s : c.sizes()) PutU64(out, s);
    const uint64_t nbytes = c.numel() * c.element_size();
    PutU64(out, nbytes);
    Put(out, c.data_ptr(), nbytes);
  }
  const uint32_t crc = crc32(0L, reinterpret_cast<const Bytef*>(out.data()),
                             out.size());
  Put(out, &crc, sizeof(crc));

  return WriteFileAtomically(path, out);
}

absl::StatusOr<NamedTensors> LoadTensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("no such tensor file '", path, "'"));
  }
  std::string data((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  auto corrupt = [&](const std::string& why) {
    return absl::DataLossError(
        absl::StrCat("tensor file '", path, "' is corrupt: ", why));
  };
  if (data.size() < sizeof(kMagic) + sizeof(uint32_t) ||
      std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) {
    return corrupt("not a LayerFL tensor file (bad magic)");
  }
  uint32_t stored_crc;
  std::memcpy(&stored_crc, data.data() + data.size() - sizeof(uint32_t),
              sizeof(uint32_t));
  const uint32_t crc =
      crc32(0L, reinterpret_cast<const Bytef*>(data.data()),
            data.size() - sizeof(uint32_t));
  if (crc != stored_crc) return corrupt("checksum mismatch (truncated?)");
  data.resize(data.size() - sizeof(uint32_t));

  Reader r(data);
  char magic[sizeof(kMagic)];
  r.Get(magic, sizeof(magic));
  uint64_t count = 0;
  if (!r.GetU64(count)) return corrupt("missing tensor count");
  NamedTensors out;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t name_len = 0, code = 0, ndim = 0, nbytes = 0;
    if (!r.GetU64(name_len) || name_len > 4096) return corrupt("bad name length");
    std::string name(name_len, '\0');
    if (!r.Get(name.data(), name_len) || !r.GetU64(code) || !r.GetU64(ndim) ||
        ndim > 16) {
      return corrupt(absl::StrCat("bad header of tensor ", i));
    }
    std::vector<int64_t> sizes(ndim);
    int64_t numel = 1;
    for (auto& s : sizes) {
      uint64_t v;
      if (!r.GetU64(v)) return corrupt(absl::StrCat("bad shape of '", name, "'"));
      s = static_cast<int64_t>(v);
      numel *= s;
    }
    absl::StatusOr<at::ScalarType> dtype = DtypeFromCode(static_cast<int>(code));
    if (!dtype.ok()) return corrupt(std::string(dtype.status().message()));
    at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(*dtype));
    if (!r.GetU64(nbytes) ||
        nbytes != static_cast<uint64_t>(numel) * t.element_size() ||
        !r.Get(t.data_ptr(), nbytes)) {
      return corrupt(absl::StrCat("bad data of '", name, "'"));
    }
    out.emplace_back(std::move(name), std::move(t));
  }
  if (r.pos() != data.size()) return corrupt("trailing bytes");
  return out;
}

}  // namespace layerfl
