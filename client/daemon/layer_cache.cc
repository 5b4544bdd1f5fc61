#include "client/daemon/layer_cache.h"

#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/data/file.h"
#include "common/util/status_macros.h"
#include "proto/state.pb.h"

namespace layerfl {
namespace {

namespace fs = std::filesystem;
namespace state = ::layerfl::state::v1;

constexpr char kMagic[8] = {'L', 'F', 'L', 'C', 'A', 'C', 'H', 'E'};
constexpr uint32_t kFormatVersion = 1;
constexpr char kSuffix[] = ".layer";

std::string FileName(const std::string& layer) {
  std::string out;
  for (unsigned char c : layer) {
    if (absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return absl::StrCat(out, kSuffix);
}

uint32_t Crc(const std::string& bytes) {
  return static_cast<uint32_t>(
      crc32_z(0, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

std::string Encode(const std::string& run_id, const LayerWeights& layer) {
  state::CachedLayer message;
  message.set_format_version(kFormatVersion);
  message.set_run_id(run_id);
  message.set_group(layer.group);
  message.set_version(layer.version);
  for (const Tensor32& t : layer.tensors) {
    state::Tensor* out = message.add_tensors();
    out->set_name(t.name);
    for (int64_t d : t.shape) out->add_shape(d);
    out->set_values(reinterpret_cast<const char*>(t.values.data()),
                    t.values.size() * sizeof(float));
  }
  const std::string body = message.SerializeAsString();
  const uint32_t crc = Crc(body);
  std::string bytes(kMagic, sizeof(kMagic));
  bytes.append(reinterpret_cast<const char*>(&crc), sizeof(crc));
  bytes += body;
  return bytes;
}

// The layer in `bytes`, or why it is not one.
absl::StatusOr<std::pair<std::string, LayerWeights>> Decode(
    const std::string& bytes) {
  if (bytes.size() < sizeof(kMagic) + sizeof(uint32_t) ||
      std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError("not a layer cache file (bad magic)");
  }
  uint32_t crc;
  std::memcpy(&crc, bytes.data() + sizeof(kMagic), sizeof(crc));
  const std::string body = bytes.substr(sizeof(kMagic) + sizeof(crc));
  if (Crc(body) != crc) return absl::DataLossError("checksum mismatch");
  state::CachedLayer message;
  if (!message.ParseFromString(body)) {
    return absl::DataLossError("the message does not parse");
  }
  if (message.format_version() != kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("format version ", message.format_version(),
                     " (this build reads ", kFormatVersion, ")"));
  }
  LayerWeights layer;
  layer.group = message.group();
  layer.version = message.version();
  for (const state::Tensor& t : message.tensors()) {
    Tensor32 out;
    out.name = t.name();
    int64_t numel = 1;
    for (int64_t d : t.shape()) {
      if (d < 0) return absl::DataLossError("a negative dimension");
      out.shape.push_back(d);
      numel *= d;
    }
    if (t.values().size() != static_cast<size_t>(numel) * sizeof(float)) {
      return absl::DataLossError(absl::StrCat(
          "tensor '", t.name(), "' has ", t.values().size(),
          " bytes for shape of ", numel, " values"));
    }
    out.values.resize(numel);
    std::memcpy(out.values.data(), t.values().data(), t.values().size());
    layer.tensors.push_back(std::move(out));
  }
  return std::make_pair(message.run_id(), std::move(layer));
}

// The run and layer of the cache file at `path`, or why it is not one.
absl::StatusOr<std::pair<std::string, LayerWeights>> ReadLayerFile(
    const std::filesystem::path& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path.string()));
  return Decode(bytes);
}

class FileLayerCache : public LayerCache {
 public:
  explicit FileLayerCache(fs::path dir) : dir_(std::move(dir)) {}

  absl::Status Put(const std::string& run_id,
                   const LayerWeights& layer) override {
    if (run_id != run_id_) {
      RETURN_IF_ERROR(DropOtherRuns(run_id));
      run_id_ = run_id;
    }
    // Not synced: a layer must survive a killed daemon, not a power loss (a
    // torn file fails its checksum and is fetched again).
    return WriteFileAtomically((dir_ / FileName(layer.group)).string(),
                               Encode(run_id, layer), /*durable=*/false);
  }

  absl::StatusOr<Replica> Load() override {
    Replica out;
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
      if (e.path().extension() != kSuffix) continue;
      absl::StatusOr<std::pair<std::string, LayerWeights>> decoded =
          ReadLayerFile(e.path());
      if (!decoded.ok() ||
          (!out.partial_run_id.empty() &&
           decoded->first != out.partial_run_id) ||
          e.path().filename() != FileName(decoded->second.group)) {
        fs::remove(e.path(), ec);  // damaged, foreign, or of a mixed run
        continue;
      }
      out.partial_run_id = decoded->first;
      std::string group = decoded->second.group;
      out.partial[group] = std::move(decoded->second);
    }
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot list the layer cache '",
                                              dir_.string(), "': ",
                                              ec.message()));
    }
    run_id_ = out.partial_run_id;
    return out;
  }

 private:
  absl::Status DropOtherRuns(const std::string& run_id) {
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
      if (e.path().extension() != kSuffix) continue;
      absl::StatusOr<std::pair<std::string, LayerWeights>> decoded =
          ReadLayerFile(e.path());
      if (!decoded.ok() || decoded->first != run_id) fs::remove(e.path(), ec);
    }
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot clear the layer cache '",
                                              dir_.string(), "': ",
                                              ec.message()));
    }
    return absl::OkStatus();
  }

  const fs::path dir_;
  std::string run_id_;  // of the stored layers
};

class ExitAfterLayers : public LayerCache {
 public:
  ExitAfterLayers(std::unique_ptr<LayerCache> inner, int64_t layers)
      : inner_(std::move(inner)), left_(layers) {}

  absl::Status Put(const std::string& run_id,
                   const LayerWeights& layer) override {
    absl::Status s = inner_->Put(run_id, layer);
    if (--left_ == 0) _exit(3);
    return s;
  }
  absl::StatusOr<Replica> Load() override { return inner_->Load(); }

 private:
  std::unique_ptr<LayerCache> inner_;
  int64_t left_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LayerCache>> CreateFileLayerCache(
    const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--download_cache_dir: cannot use '", dir, "' as a ",
                     "directory", ec ? absl::StrCat(": ", ec.message()) : ""));
  }
  return std::make_unique<FileLayerCache>(dir);
}

std::unique_ptr<LayerCache> ExitAfterLayersCache(
    std::unique_ptr<LayerCache> inner, int64_t layers) {
  return std::make_unique<ExitAfterLayers>(std::move(inner), layers);
}

}  // namespace layerfl
