#include "common/safetensors/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/codec/float16.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; only little-endian hosts are "
              "supported");

namespace layerfl {
namespace {

constexpr uint64_t kMaxHeaderSize = 100'000'000;
constexpr uint64_t kMaxIndexSize = 100'000'000;
constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

struct DtypeEntry {
  SafetensorsDtype dtype;
  const char* name;
  size_t size;
};

constexpr DtypeEntry kDtypes[] = {
    {SafetensorsDtype::kBool, "BOOL", 1},
    {SafetensorsDtype::kU8, "U8", 1},
    {SafetensorsDtype::kI8, "I8", 1},
    {SafetensorsDtype::kF8E5M2, "F8_E5M2", 1},
    {SafetensorsDtype::kF8E4M3, "F8_E4M3", 1},
    {SafetensorsDtype::kF8E8M0, "F8_E8M0", 1},
    {SafetensorsDtype::kF8E4M3Fnuz, "F8_E4M3FNUZ", 1},
    {SafetensorsDtype::kF8E5M2Fnuz, "F8_E5M2FNUZ", 1},
    {SafetensorsDtype::kI16, "I16", 2},
    {SafetensorsDtype::kU16, "U16", 2},
    {SafetensorsDtype::kF16, "F16", 2},
    {SafetensorsDtype::kBF16, "BF16", 2},
    {SafetensorsDtype::kI32, "I32", 4},
    {SafetensorsDtype::kU32, "U32", 4},
    {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kC64, "C64", 8},
    {SafetensorsDtype::kF64, "F64", 8},
    {SafetensorsDtype::kI64, "I64", 8},
    {SafetensorsDtype::kU64, "U64", 8},
};

const DtypeEntry& EntryOf(SafetensorsDtype dtype) {
  return kDtypes[static_cast<size_t>(dtype)];
}

std::string Quote(absl::string_view s) {
  return absl::StrCat("'", absl::Utf8SafeCHexEscape(s), "'");
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string OffsetsText(uint64_t begin, uint64_t end) {
  return absl::StrCat("[", begin, ", ", end, "]");
}

// The errno-derived status "<parts...>: <strerror(err)>". The parts are
// references to existing strings, so nothing runs between the failing call
// and the read of errno.
template <typename... Parts>
absl::Status ErrnoStatus(int err, const Parts&... parts) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(parts..., ": ", std::strerror(err)));
}

// numel * element size, or nullopt when either overflows int64.
std::optional<uint64_t> ByteSize(const std::vector<int64_t>& shape,
                                 size_t element_size) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n))
      return std::nullopt;
  }
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return std::nullopt;
  uint64_t bytes;
  if (__builtin_mul_overflow(n, static_cast<uint64_t>(element_size), &bytes) ||
      bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return std::nullopt;
  }
  return bytes;
}

struct ParsedJson {
  nlohmann::json value;
  // The first key repeated within one object, that object's nesting depth
  // (1 = the top-level object) and the key it is the value of ("" if none).
  std::optional<std::string> repeated_key;
  size_t repeated_depth = 0;
  std::string repeated_parent;
};

// Parses `text` as JSON, noting a repeated key (which the parser would
// otherwise resolve silently, last one winning). DataLoss "<what>: ..." when
// it is not JSON.
absl::StatusOr<ParsedJson> ParseJson(absl::string_view text,
                                     absl::string_view what) {
  ParsedJson out;
  struct OpenObject {
    std::string parent;
    std::set<std::string> keys;
  };
  std::vector<OpenObject> open_objects;
  std::string last_key;
  auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event,
                      nlohmann::json& parsed) {
    switch (event) {
      case nlohmann::json::parse_event_t::object_start:
        open_objects.push_back(
            {open_objects.empty() ? std::string() : last_key, {}});
        break;
      case nlohmann::json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case nlohmann::json::parse_event_t::key:
        if (open_objects.empty() || !parsed.is_string()) break;
        last_key = parsed.get_ref<const std::string&>();
        if (!out.repeated_key.has_value() &&
            !open_objects.back().keys.insert(last_key).second) {
          out.repeated_key = last_key;
          out.repeated_depth = open_objects.size();
          out.repeated_parent = open_objects.back().parent;
        }
        break;
      default:
        break;
    }
    return true;
  };
  try {
    out.value = nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(
        absl::StrCat(what, " is not valid JSON: ", e.what()));
  }
  return out;
}

bool IsUnsignedInt(const nlohmann::json& v) { return v.is_number_unsigned(); }

// A plain file name: no directory part.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// Opens `path` read-only; it must be a regular file. The descriptor and the
// file's size; the caller closes it.
absl::StatusOr<std::pair<int, uint64_t>> OpenRegularFile(
    const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, path, ": cannot open");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, path, ": cannot stat");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  return std::make_pair(fd, static_cast<uint64_t>(st.st_size));
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          uint64_t limit) {
  ASSIGN_OR_RETURN(const auto opened, OpenRegularFile(path));
  const auto [fd, size] = opened;
  if (size > limit) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, ": ", size,
                                            " bytes, over the ", limit,
                                            "-byte limit for an index"));
  }
  std::string out(static_cast<size_t>(size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      return ErrnoStatus(err, path, ": cannot read");
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

absl::Status WriteAll(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write");
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Tells the kernel this process no longer needs the whole pages inside
// `bytes` of a read-only file mapping: they leave its resident set and are
// read from the file (or the page cache) again if touched. Advice only; a
// failure changes nothing.
void DropResidentPages(absl::Span<const uint8_t> bytes) {
  static const uintptr_t kPage = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(bytes.data());
  const uintptr_t first = (begin + kPage - 1) / kPage * kPage;
  const uintptr_t last = (begin + bytes.size()) / kPage * kPage;
  if (last > first) {
    ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }
}

}  // namespace

absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype) {
  return EntryOf(dtype).name;
}

std::optional<SafetensorsDtype> ParseSafetensorsDtype(absl::string_view name) {
  for (const DtypeEntry& e : kDtypes) {
    if (name == e.name) return e.dtype;
  }
  return std::nullopt;
}

size_t SafetensorsDtypeSize(SafetensorsDtype dtype) {
  return EntryOf(dtype).size;
}

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  auto fail = [&path](absl::string_view message) {
    return absl::DataLossError(absl::StrCat(path, ": ", message));
  };

  ASSIGN_OR_RETURN(const auto opened, OpenRegularFile(path));
  const auto [fd, file_size] = opened;
  if (file_size < 8) {
    ::close(fd);
    return fail(absl::StrCat("the file is ", file_size,
                             " bytes, shorter than the 8-byte header length"));
  }
  void* base = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_err = errno;
  ::close(fd);
  if (base == MAP_FAILED) return ErrnoStatus(mmap_err, path, ": cannot mmap");
  file->base_ = static_cast<const uint8_t*>(base);
  file->size_ = file_size;

  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file->base_[i];
  file->header_size_ = n;
  if (n > kMaxHeaderSize) {
    return fail(absl::StrCat("header length ", n, " is over the ",
                             kMaxHeaderSize, "-byte limit"));
  }
  if (n > file_size - 8) {
    return fail(absl::StrCat("header length ", n,
                             " runs past the end of the file (", file_size,
                             " bytes)"));
  }
  const uint64_t buffer_size = file_size - 8 - n;
  const absl::string_view header_text(
      reinterpret_cast<const char*>(file->base_ + 8), n);
  ASSIGN_OR_RETURN(ParsedJson parsed,
                   ParseJson(header_text, absl::StrCat(path, ": the header")));
  if (parsed.repeated_key.has_value()) {
    if (parsed.repeated_depth == 1) {
      return fail(absl::StrCat("tensor ", Quote(*parsed.repeated_key),
                               " appears twice in the header"));
    }
    return fail(absl::StrCat("the header repeats the key ",
                             Quote(*parsed.repeated_key), " in the entry ",
                             Quote(parsed.repeated_parent)));
  }
  const nlohmann::json& header = parsed.value;
  if (!header.is_object()) {
    return fail(absl::StrCat("the header is a JSON ", header.type_name(),
                             ", not an object"));
  }

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (entry.is_null()) continue;
      if (!entry.is_object()) {
        return fail(absl::StrCat("__metadata__ is a JSON ", entry.type_name(),
                                 ", not an object of strings"));
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return fail(absl::StrCat("__metadata__ key ", Quote(key),
                                   " holds a JSON ", value.type_name(),
                                   ", not a string"));
        }
        file->metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string at = absl::StrCat("tensor ", Quote(name), ": ");
    if (!entry.is_object()) {
      return fail(absl::StrCat(at, "its entry is a JSON ", entry.type_name(),
                               ", not an object"));
    }
    SafetensorsTensorInfo info;
    info.name = name;

    const auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
      return fail(absl::StrCat(at, "no \"dtype\" string"));
    }
    const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
    std::optional<SafetensorsDtype> dtype = ParseSafetensorsDtype(dtype_name);
    if (!dtype.has_value()) {
      return fail(
          absl::StrCat(at, "unknown or unsupported dtype ", Quote(dtype_name)));
    }
    info.dtype = *dtype;

    const auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) {
      return fail(absl::StrCat(at, "no \"shape\" array"));
    }
    for (const nlohmann::json& d : *shape_it) {
      if (!IsUnsignedInt(d) ||
          d.get<uint64_t>() >
              static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return fail(absl::StrCat(at, "shape ", shape_it->dump(),
                                 " is not a list of non-negative integers"));
      }
      info.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    }

    const auto offsets_it = entry.find("data_offsets");
    if (offsets_it == entry.end() || !offsets_it->is_array() ||
        offsets_it->size() != 2 || !IsUnsignedInt((*offsets_it)[0]) ||
        !IsUnsignedInt((*offsets_it)[1])) {
      return fail(absl::StrCat(
          at, "\"data_offsets\" ",
          offsets_it == entry.end() ? "missing" : offsets_it->dump(),
          " is not a pair [begin, end] of non-negative integers"));
    }
    info.begin = (*offsets_it)[0].get<uint64_t>();
    info.end = (*offsets_it)[1].get<uint64_t>();
    const std::string offsets = OffsetsText(info.begin, info.end);
    if (info.begin > info.end) {
      return fail(
          absl::StrCat(at, "data_offsets ", offsets, " end before they begin"));
    }
    if (info.end > buffer_size) {
      return fail(absl::StrCat(at, "data_offsets ", offsets,
                               " run past the end of the data buffer (",
                               buffer_size, " bytes; is the file truncated?)"));
    }
    const std::optional<uint64_t> needed =
        ByteSize(info.shape, SafetensorsDtypeSize(info.dtype));
    if (!needed.has_value()) {
      return fail(absl::StrCat(at, "shape ", ShapeText(info.shape), " in ",
                               dtype_name, " overflows 63 bits"));
    }
    if (info.nbytes() != *needed) {
      return fail(absl::StrCat(at, "data_offsets ", offsets, " hold ",
                               info.nbytes(), " bytes, its shape ",
                               ShapeText(info.shape), " in ", dtype_name,
                               " needs ", *needed));
    }
    file->tensors_.push_back(std::move(info));
  }

  std::sort(file->tensors_.begin(), file->tensors_.end(),
            [](const SafetensorsTensorInfo& a, const SafetensorsTensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) <
                     std::tie(b.begin, b.end, b.name);
            });
  uint64_t covered = 0;
  const SafetensorsTensorInfo* previous = nullptr;
  for (const SafetensorsTensorInfo& t : file->tensors_) {
    const std::string at =
        absl::StrCat("tensor ", Quote(t.name), ": data_offsets ",
                     OffsetsText(t.begin, t.end));
    if (t.begin > covered) {
      return fail(absl::StrCat(at, " leave a hole: bytes [", covered, ", ",
                               t.begin,
                               ") of the data buffer belong to no tensor"));
    }
    if (t.begin < covered) {
      return fail(absl::StrCat(at, " overlap tensor ", Quote(previous->name),
                               " at ",
                               OffsetsText(previous->begin, previous->end)));
    }
    covered = t.end;
    previous = &t;
  }
  if (covered != buffer_size) {
    if (previous == nullptr) {
      return fail(absl::StrCat("the data buffer holds ", buffer_size,
                               " bytes but the header names no tensor"));
    }
    return fail(absl::StrCat("the data buffer holds ", buffer_size - covered,
                             " bytes after the last tensor, ",
                             Quote(previous->name), ", ends at ", covered));
  }
  for (size_t i = 0; i < file->tensors_.size(); ++i) {
    file->index_.emplace(file->tensors_[i].name, i);
  }
  return file;
}

const SafetensorsTensorInfo* SafetensorsFile::Find(
    absl::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<absl::Span<const uint8_t>> SafetensorsFile::Bytes(
    absl::string_view name) const {
  const SafetensorsTensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path_, ": no tensor ", Quote(name)));
  }
  return absl::Span<const uint8_t>(base_ + 8 + header_size_ + info->begin,
                                   info->nbytes());
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadFloat32(
    absl::string_view name) const {
  ASSIGN_OR_RETURN(absl::Span<const uint8_t> bytes, Bytes(name));
  const SafetensorsTensorInfo& info = *Find(name);
  const size_t n = static_cast<size_t>(info.numel());
  std::vector<float> out(n);
  switch (info.dtype) {
    case SafetensorsDtype::kF32:
      if (n > 0) std::memcpy(out.data(), bytes.data(), n * sizeof(float));
      DropResidentPages(bytes);
      return out;
    case SafetensorsDtype::kF16:
      HalvesToFloats(bytes.data(), n, out.data());
      DropResidentPages(bytes);
      return out;
    case SafetensorsDtype::kBF16:
      BFloat16sToFloats(bytes.data(), n, out.data());
      DropResidentPages(bytes);
      return out;
    case SafetensorsDtype::kF64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, bytes.data() + i * sizeof(double), sizeof(double));
        out[i] = static_cast<float>(d);
      }
      DropResidentPages(bytes);
      return out;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensor ", Quote(name), " is ",
                       SafetensorsDtypeName(info.dtype),
                       ", not a floating-point dtype readable as float32 (F32, "
                       "F16, BF16, F64)"));
  }
}

absl::StatusOr<std::vector<int64_t>> SafetensorsFile::ReadInt64(
    absl::string_view name) const {
  ASSIGN_OR_RETURN(absl::Span<const uint8_t> bytes, Bytes(name));
  const SafetensorsTensorInfo& info = *Find(name);
  if (info.dtype != SafetensorsDtype::kI64) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor ", Quote(name), " is ",
                     SafetensorsDtypeName(info.dtype), ", not I64"));
  }
  std::vector<int64_t> out(static_cast<size_t>(info.numel()));
  if (!out.empty())
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(int64_t));
  return out;
}

namespace {

absl::StatusOr<std::vector<std::unique_ptr<SafetensorsFile>>> OpenShards(
    const std::string& index_path,
    std::map<std::string, std::string>* weight_map) {
  ASSIGN_OR_RETURN(const std::string text,
                   ReadSmallFile(index_path, kMaxIndexSize));
  ASSIGN_OR_RETURN(ParsedJson parsed, ParseJson(text, index_path));
  auto fail = [&index_path](absl::string_view message) {
    return absl::DataLossError(absl::StrCat(index_path, ": ", message));
  };
  if (parsed.repeated_key.has_value()) {
    if (parsed.repeated_depth == 2 && parsed.repeated_parent == "weight_map") {
      return fail(absl::StrCat("tensor ", Quote(*parsed.repeated_key),
                               " appears twice in the weight_map"));
    }
    return fail(absl::StrCat("repeats the key ", Quote(*parsed.repeated_key)));
  }
  const nlohmann::json& index = parsed.value;
  if (!index.is_object()) return fail("not a JSON object");
  const auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object()) {
    return fail("no \"weight_map\" object");
  }
  std::map<std::string, std::string>
      first_tensor;  // shard -> a tensor it holds
  for (const auto& [name, shard] : map_it->items()) {
    if (!shard.is_string() || !IsPlainFileName(shard.get<std::string>())) {
      return fail(absl::StrCat("tensor ", Quote(name), " maps to ",
                               shard.dump(),
                               ", not a file name in the index's directory"));
    }
    (*weight_map)[name] = shard.get<std::string>();
    first_tensor.emplace(shard.get<std::string>(), name);
  }
  const std::filesystem::path dir =
      std::filesystem::path(index_path).parent_path();
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  for (const auto& [shard, tensor] : first_tensor) {
    const std::string shard_path = (dir / shard).string();
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
        SafetensorsFile::Open(shard_path);
    if (absl::IsNotFound(file.status())) {
      return absl::NotFoundError(absl::StrCat(
          index_path, ": shard ", Quote(shard), " (holding tensor ",
          Quote(tensor), ") does not exist: ", shard_path));
    }
    if (!file.ok()) return file.status();
    files.push_back(*std::move(file));
  }
  return files;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>>
SafetensorsCheckpoint::Open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) {
    return absl::NotFoundError(
        absl::StrCat(path, ": no such file or directory"));
  }
  std::string single_path;
  std::string index_path;
  if (fs::is_directory(status)) {
    const fs::path single = fs::path(path) / kSingleFile;
    const fs::path index = fs::path(path) / kIndexFile;
    if (fs::exists(single, ec)) {
      single_path = single.string();
    } else if (fs::exists(index, ec)) {
      index_path = index.string();
    } else {
      return absl::NotFoundError(absl::StrCat(
          path, ": holds neither ", kSingleFile, " nor ", kIndexFile));
    }
  } else if (absl::EndsWith(path, ".index.json")) {
    index_path = path;
  } else {
    single_path = path;
  }

  std::unique_ptr<SafetensorsCheckpoint> checkpoint(
      new SafetensorsCheckpoint());
  checkpoint->path_ = single_path.empty() ? index_path : single_path;
  if (!single_path.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                     SafetensorsFile::Open(single_path));
    checkpoint->files_.push_back(std::move(file));
  } else {
    std::map<std::string, std::string> weight_map;
    ASSIGN_OR_RETURN(checkpoint->files_, OpenShards(index_path, &weight_map));
    auto fail = [&index_path](absl::string_view message) {
      return absl::DataLossError(absl::StrCat(index_path, ": ", message));
    };
    auto shard_name = [](const SafetensorsFile& f) {
      return fs::path(f.path()).filename().string();
    };
    absl::flat_hash_map<std::string, const SafetensorsFile*> owner;
    for (const auto& file : checkpoint->files_) {
      for (const SafetensorsTensorInfo& t : file->tensors()) {
        const auto [it, inserted] = owner.emplace(t.name, file.get());
        if (!inserted) {
          return fail(absl::StrCat("tensor ", Quote(t.name),
                                   " is in two shards, ",
                                   Quote(shard_name(*it->second)), " and ",
                                   Quote(shard_name(*file))));
        }
      }
    }
    for (const auto& file : checkpoint->files_) {
      for (const SafetensorsTensorInfo& t : file->tensors()) {
        const auto mapped = weight_map.find(t.name);
        if (mapped == weight_map.end()) {
          return fail(absl::StrCat("tensor ", Quote(t.name), " is in shard ",
                                   Quote(shard_name(*file)),
                                   " but not in the weight_map"));
        }
        if (mapped->second != shard_name(*file)) {
          return fail(absl::StrCat("tensor ", Quote(t.name), " is in shard ",
                                   Quote(shard_name(*file)),
                                   " but the weight_map puts it in ",
                                   Quote(mapped->second)));
        }
      }
    }
    for (const auto& [name, shard] : weight_map) {
      if (!owner.contains(name)) {
        return fail(absl::StrCat("tensor ", Quote(name),
                                 " is in the weight_map (shard ", Quote(shard),
                                 ") but not in that shard"));
      }
    }
  }
  for (const auto& file : checkpoint->files_) {
    for (const SafetensorsTensorInfo& t : file->tensors()) {
      checkpoint->tensors_.push_back(Entry{file.get(), &t});
      checkpoint->index_.emplace(t.name, Entry{file.get(), &t});
    }
  }
  return checkpoint;
}

absl::StatusOr<SafetensorsCheckpoint::Entry> SafetensorsCheckpoint::Find(
    absl::string_view name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(
        absl::StrCat(path_, ": no tensor ", Quote(name)));
  }
  return it->second;
}

absl::StatusOr<absl::Span<const uint8_t>> SafetensorsCheckpoint::Bytes(
    absl::string_view name) const {
  ASSIGN_OR_RETURN(const Entry entry, Find(name));
  return entry.file->Bytes(name);
}

absl::StatusOr<std::vector<float>> SafetensorsCheckpoint::ReadFloat32(
    absl::string_view name) const {
  ASSIGN_OR_RETURN(const Entry entry, Find(name));
  return entry.file->ReadFloat32(name);
}

absl::StatusOr<std::vector<int64_t>> SafetensorsCheckpoint::ReadInt64(
    absl::string_view name) const {
  ASSIGN_OR_RETURN(const Entry entry, Find(name));
  return entry.file->ReadInt64(name);
}

absl::Status WriteSafetensors(
    const std::string& path, absl::Span<const SafetensorsTensorData> tensors,
    const std::map<std::string, std::string>& metadata) {
  using ojson = nlohmann::ordered_json;
  auto bad = [](absl::string_view message) {
    return absl::InvalidArgumentError(message);
  };
  auto is_utf8 = [](const std::string& s) {
    try {
      (void)ojson(s).dump(-1, ' ', false, ojson::error_handler_t::strict);
      return true;
    } catch (const ojson::exception&) {
      return false;
    }
  };

  std::set<absl::string_view> names;
  for (const SafetensorsTensorData& t : tensors) {
    const std::string at = absl::StrCat(path, ": tensor ", Quote(t.name), ": ");
    if (t.name.empty() || t.name == "__metadata__") {
      return bad(absl::StrCat(at, "not a usable tensor name"));
    }
    if (!is_utf8(t.name))
      return bad(absl::StrCat(at, "the name is not valid UTF-8"));
    if (!names.insert(t.name).second)
      return bad(absl::StrCat(at, "given twice"));
    const std::optional<uint64_t> needed =
        ByteSize(t.shape, SafetensorsDtypeSize(t.dtype));
    if (!needed.has_value()) {
      return bad(absl::StrCat(at, "shape ", ShapeText(t.shape),
                              " has a negative dimension or overflows"));
    }
    if (t.data.size() != *needed) {
      return bad(absl::StrCat(
          at, t.data.size(), " bytes of data, its shape ", ShapeText(t.shape),
          " in ", SafetensorsDtypeName(t.dtype), " needs ", *needed));
    }
  }
  for (const auto& [key, value] : metadata) {
    if (!is_utf8(key) || !is_utf8(value)) {
      return bad(absl::StrCat(path, ": __metadata__ key ", Quote(key),
                              " or its value is not valid UTF-8"));
    }
  }

  std::vector<const SafetensorsTensorData*> order;
  order.reserve(tensors.size());
  for (const SafetensorsTensorData& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const SafetensorsTensorData* a, const SafetensorsTensorData* b) {
              if (a->dtype != b->dtype) return a->dtype > b->dtype;
              return a->name < b->name;
            });

  ojson header = ojson::object();
  if (!metadata.empty()) {
    ojson meta = ojson::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const SafetensorsTensorData* t : order) {
    ojson entry = ojson::object();
    entry["dtype"] = std::string(SafetensorsDtypeName(t->dtype));
    ojson shape = ojson::array();
    for (int64_t d : t->shape) shape.push_back(d);
    entry["shape"] = std::move(shape);
    ojson offsets = ojson::array();
    offsets.push_back(offset);
    offsets.push_back(offset + t->data.size());
    entry["data_offsets"] = std::move(offsets);
    header[t->name] = std::move(entry);
    offset += t->data.size();
  }
  std::string header_text = header.dump();
  header_text.resize((header_text.size() + 7) / 8 * 8, ' ');
  if (header_text.size() > kMaxHeaderSize) {
    return bad(absl::StrCat(path, ": the header would be ", header_text.size(),
                            " bytes, over the ", kMaxHeaderSize,
                            "-byte limit"));
  }
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) {
    length[i] = static_cast<uint8_t>(
        static_cast<uint64_t>(header_text.size()) >> (8 * i));
  }

  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0)
    return ErrnoStatus(errno, path, ": cannot create a temporary file");
  absl::Status status;
  if (::fchmod(fd, 0644) != 0) status = ErrnoStatus(errno, "chmod ", tmp);
  if (status.ok()) status = WriteAll(fd, length, sizeof(length));
  if (status.ok()) {
    status = WriteAll(fd, reinterpret_cast<const uint8_t*>(header_text.data()),
                      header_text.size());
  }
  for (const SafetensorsTensorData* t : order) {
    if (!status.ok()) break;
    status = WriteAll(fd, t->data.data(), t->data.size());
  }
  if (status.ok() && ::fsync(fd) != 0)
    status = ErrnoStatus(errno, "fsync ", tmp);
  if (::close(fd) != 0 && status.ok())
    status = ErrnoStatus(errno, "close ", tmp);
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    status = ErrnoStatus(errno, "rename ", tmp, " to ", path);
  }
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return absl::Status(
        status.code(),
        absl::StrCat(path, ": cannot write: ", status.message()));
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

absl::Status WriteSafetensorsFloat32(
    const std::string& path, absl::Span<const Tensor32> tensors,
    const std::map<std::string, std::string>& metadata,
    SafetensorsDtype dtype) {
  if (dtype != SafetensorsDtype::kF32 && dtype != SafetensorsDtype::kF16 &&
      dtype != SafetensorsDtype::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": float32 tensors cannot be written as ",
                     SafetensorsDtypeName(dtype), " (only F32, F16, BF16)"));
  }
  std::vector<std::vector<uint8_t>> converted(tensors.size());
  std::vector<SafetensorsTensorData> data;
  data.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor32& t = tensors[i];
    SafetensorsTensorData d{t.name, dtype, t.shape, {}};
    const size_t n = t.values.size();
    if (dtype == SafetensorsDtype::kF32) {
      d.data = absl::Span<const uint8_t>(
          reinterpret_cast<const uint8_t*>(t.values.data()), n * sizeof(float));
    } else {
      converted[i].resize(n * 2);
      if (dtype == SafetensorsDtype::kF16) {
        FloatsToHalves(t.values.data(), n, converted[i].data());
      } else {
        FloatsToBFloat16s(t.values.data(), n, converted[i].data());
      }
      d.data = converted[i];
    }
    data.push_back(std::move(d));
  }
  return WriteSafetensors(path, data, metadata);
}

}  // namespace layerfl
