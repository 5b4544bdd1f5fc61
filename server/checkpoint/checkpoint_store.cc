#include "server/checkpoint/checkpoint_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/util/status_macros.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the checkpoint codec writes floats in host order and assumes "
              "a little-endian host");

namespace layerfl {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'L', 'F', 'L', 'C', 'K', 'P', 'T', '\n'};
constexpr uint32_t kFormatVersion = 1;
// magic + format version + total file length.
constexpr size_t kHeaderSize = sizeof(kMagic) + 4 + 8;
constexpr size_t kCrcSize = 4;
constexpr uint32_t kMaxRank = 32;
constexpr char kPrefix[] = "round-";
constexpr char kSuffix[] = ".ckpt";
constexpr char kTmpSuffix[] = ".ckpt.tmp";

// zlib treats a null buffer as "return the initial value", so empty ranges
// (e.g. the data() of an empty vector) must not reach it.
uint32_t Crc(uint32_t crc, const void* data, size_t n) {
  if (n == 0) return crc;
  return static_cast<uint32_t>(
      crc32_z(crc, static_cast<const Bytef*>(data), static_cast<z_size_t>(n)));
}

absl::Status ErrnoStatus(int err, const std::string& what) {
  std::string message = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

// Receives encoded bytes.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void Append(const void* data, size_t n) = 0;
};

class StringSink : public Sink {
 public:
  explicit StringSink(std::string* out) : out_(out) {}
  void Append(const void* data, size_t n) override {
    out_->append(static_cast<const char*>(data), n);
  }

 private:
  std::string* out_;
};

// Buffered writes to a file descriptor; keeps the first error.
class FdSink : public Sink {
 public:
  FdSink(int fd, std::string path) : fd_(fd), path_(std::move(path)) {
    buffer_.reserve(kBufferSize);
  }
  void Append(const void* data, size_t n) override {
    if (!status_.ok()) return;
    if (buffer_.size() + n > kBufferSize) {
      Flush();
      if (n >= kBufferSize) {
        WriteAll(static_cast<const char*>(data), n);
        return;
      }
    }
    buffer_.append(static_cast<const char*>(data), n);
  }
  absl::Status Finish() {
    Flush();
    return status_;
  }

 private:
  static constexpr size_t kBufferSize = size_t{1} << 20;

  void Flush() {
    if (!buffer_.empty()) WriteAll(buffer_.data(), buffer_.size());
    buffer_.clear();
  }
  void WriteAll(const char* data, size_t n) {
    while (n > 0 && status_.ok()) {
      const ssize_t w = ::write(fd_, data, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        status_ = ErrnoStatus(errno, absl::StrCat("writing ", path_));
        return;
      }
      data += w;
      n -= static_cast<size_t>(w);
    }
  }

  int fd_;
  std::string path_;
  std::string buffer_;
  absl::Status status_;
};

// Little-endian encoder that keeps a running CRC of what it wrote.
class Encoder {
 public:
  explicit Encoder(Sink* sink) : sink_(sink) {}
  void Bytes(const void* data, size_t n) {
    if (n == 0) return;
    crc_ = Crc(crc_, data, n);
    sink_->Append(data, n);
  }
  void U32(uint32_t v) {
    unsigned char b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    Bytes(b, 4);
  }
  void U64(uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    Bytes(b, 8);
  }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void Str(const std::string& s) {
    U64(s.size());
    Bytes(s.data(), s.size());
  }
  // Appends the CRC of everything so far (not itself covered).
  void FinishWithCrc() {
    const uint32_t crc = crc_;
    U32(crc);
  }

 private:
  Sink* sink_;
  uint32_t crc_ = 0;
};

size_t EncodedSize(const Checkpoint& c) {
  size_t n = kHeaderSize + 8 + 4;  // header, round, layer count
  for (const LayerWeights& layer : c.weights.layers) {
    n += 8 + layer.group.size() + 8 + 4;
    for (const Tensor32& t : layer.tensors) {
      n += 8 + t.name.size() + 4 + 8 * t.shape.size() + 8 +
           sizeof(float) * t.values.size();
    }
  }
  n += 8 + c.selection_state.size() + 8 + c.engine_state.size() + 8 +
       c.metrics_json.size();
  return n + kCrcSize;
}

void Encode(const Checkpoint& c, Sink* sink) {
  Encoder e(sink);
  e.Bytes(kMagic, sizeof(kMagic));
  e.U32(kFormatVersion);
  e.U64(EncodedSize(c));
  e.I64(c.round);
  e.U32(static_cast<uint32_t>(c.weights.layers.size()));
  for (const LayerWeights& layer : c.weights.layers) {
    e.Str(layer.group);
    e.I64(layer.version);
    e.U32(static_cast<uint32_t>(layer.tensors.size()));
    for (const Tensor32& t : layer.tensors) {
      e.Str(t.name);
      e.U32(static_cast<uint32_t>(t.shape.size()));
      for (int64_t d : t.shape) e.I64(d);
      e.U64(t.values.size());
      e.Bytes(t.values.data(), sizeof(float) * t.values.size());
    }
  }
  e.Str(c.selection_state);
  e.Str(c.engine_state);
  e.Str(c.metrics_json);
  e.FinishWithCrc();
}

// Checks that a checkpoint can be encoded faithfully.
absl::Status CheckEncodable(const Checkpoint& c) {
  if (c.round < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint round must be >= 0, got ", c.round));
  }
  if (c.weights.layers.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError("checkpoint has too many layers");
  }
  for (const LayerWeights& layer : c.weights.layers) {
    if (layer.tensors.size() > std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer '", layer.group, "' has too many tensors"));
    }
    for (const Tensor32& t : layer.tensors) {
      if (t.shape.size() > kMaxRank) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", t.name, "' has rank ", t.shape.size(),
                         " > ", kMaxRank));
      }
    }
  }
  return absl::OkStatus();
}

// Bounds-checked little-endian reader over a byte range. Errors are DataLoss
// and name the source, the offset and the field.
class Decoder {
 public:
  Decoder(const std::string& bytes, size_t end, const std::string& what)
      : data_(bytes.data()), pos_(0), end_(end), what_(what) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return end_ - pos_; }

  absl::Status Error(const std::string& problem) const {
    return absl::DataLossError(absl::StrCat("checkpoint ", what_, ": ", problem,
                                            " (at byte ", pos_, ")"));
  }
  absl::Status Need(size_t n, const std::string& field) const {
    if (n > remaining()) {
      return Error(absl::StrCat(field, " needs ", n, " bytes but only ",
                                remaining(), " remain"));
    }
    return absl::OkStatus();
  }
  absl::Status U32(uint32_t* v, const std::string& field) {
    RETURN_IF_ERROR(Need(4, field));
    *v = 0;
    for (int i = 0; i < 4; ++i) {
      *v |= static_cast<uint32_t>(static_cast<unsigned char>(data_[pos_ + i]))
            << (8 * i);
    }
    pos_ += 4;
    return absl::OkStatus();
  }
  absl::Status U64(uint64_t* v, const std::string& field) {
    RETURN_IF_ERROR(Need(8, field));
    *v = 0;
    for (int i = 0; i < 8; ++i) {
      *v |= static_cast<uint64_t>(static_cast<unsigned char>(data_[pos_ + i]))
            << (8 * i);
    }
    pos_ += 8;
    return absl::OkStatus();
  }
  absl::Status Skip(size_t n, const std::string& field) {
    RETURN_IF_ERROR(Need(n, field));
    pos_ += n;
    return absl::OkStatus();
  }
  absl::Status I64(int64_t* v, const std::string& field) {
    uint64_t u;
    RETURN_IF_ERROR(U64(&u, field));
    *v = static_cast<int64_t>(u);
    return absl::OkStatus();
  }
  absl::Status Str(std::string* s, const std::string& field) {
    uint64_t n;
    RETURN_IF_ERROR(U64(&n, absl::StrCat(field, " length")));
    if (n > remaining()) {
      return Error(absl::StrCat(field, " length ", n, " exceeds the ",
                                remaining(), " bytes that remain"));
    }
    s->assign(data_ + pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return absl::OkStatus();
  }
  absl::Status Floats(std::vector<float>* v, uint64_t count,
                      const std::string& field) {
    if (count > remaining() / sizeof(float)) {
      return Error(absl::StrCat(field, ": ", count, " values exceed the ",
                                remaining(), " bytes that remain"));
    }
    v->resize(static_cast<size_t>(count));
    if (count == 0) return absl::OkStatus();
    std::memcpy(v->data(), data_ + pos_, sizeof(float) * v->size());
    pos_ += sizeof(float) * v->size();
    return absl::OkStatus();
  }

 private:
  const char* data_;
  size_t pos_;
  size_t end_;
  const std::string& what_;
};

absl::Status DecodeTensor(Decoder& d, const std::string& group, Tensor32* t) {
  RETURN_IF_ERROR(
      d.Str(&t->name, absl::StrCat("layer '", group, "' tensor name")));
  const std::string field = absl::StrCat("tensor '", t->name, "'");
  uint32_t rank;
  RETURN_IF_ERROR(d.U32(&rank, field + " rank"));
  if (rank > kMaxRank) {
    return d.Error(absl::StrCat(field, " has rank ", rank, " > ", kMaxRank));
  }
  RETURN_IF_ERROR(d.Need(8 * size_t{rank}, field + " shape"));
  t->shape.resize(rank);
  uint64_t product = 1;
  bool overflow = false;
  for (uint32_t i = 0; i < rank; ++i) {
    RETURN_IF_ERROR(d.I64(&t->shape[i], field + " shape"));
    if (t->shape[i] < 0) {
      return d.Error(
          absl::StrCat(field, " has negative dimension ", t->shape[i]));
    }
    const uint64_t dim = static_cast<uint64_t>(t->shape[i]);
    if (dim != 0 && product > std::numeric_limits<uint64_t>::max() / dim) {
      overflow = true;
    }
    product *= dim;
  }
  uint64_t numel;
  RETURN_IF_ERROR(d.U64(&numel, field + " element count"));
  if (overflow || product != numel) {
    return d.Error(absl::StrCat(field, " has ", numel,
                                " elements, which does not match its shape"));
  }
  return d.Floats(&t->values.mutable_vector(), numel, field + " values");
}

std::string CheckpointFileName(int64_t round) {
  return absl::StrFormat("round-%08d.ckpt", round);
}

// The round of a file named like CheckpointFileName, or -1.
int64_t RoundOfFileName(const std::string& name) {
  const size_t prefix = sizeof(kPrefix) - 1;
  const size_t suffix = sizeof(kSuffix) - 1;
  if (name.size() <= prefix + suffix || name.compare(0, prefix, kPrefix) != 0 ||
      name.compare(name.size() - suffix, suffix, kSuffix) != 0) {
    return -1;
  }
  const std::string digits = name.substr(prefix, name.size() - prefix - suffix);
  if (digits.size() > 18) return -1;
  int64_t round = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
    round = round * 10 + (c - '0');
  }
  return round;
}

bool IsTempFileName(const std::string& name) {
  const size_t prefix = sizeof(kPrefix) - 1;
  const size_t suffix = sizeof(kTmpSuffix) - 1;
  return name.size() > prefix + suffix &&
         name.compare(0, prefix, kPrefix) == 0 &&
         name.compare(name.size() - suffix, suffix, kTmpSuffix) == 0;
}

absl::Status FsyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("opening ", path));
  absl::Status status;
  if (::fsync(fd) != 0) {
    status = ErrnoStatus(errno, absl::StrCat("fsync of ", path));
  }
  ::close(fd);
  return status;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("opening ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, absl::StrCat("stat of ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a regular file"));
  }
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, absl::StrCat("reading ", path));
    }
    if (r == 0) break;  // shrank while reading; the length check reports it
    done += static_cast<size_t>(r);
  }
  ::close(fd);
  bytes.resize(done);
  return bytes;
}

class FileCheckpointStore : public CheckpointStore {
 public:
  FileCheckpointStore(std::string dir, int keep)
      : dir_(std::move(dir)), keep_(keep) {}

  absl::Status Save(const Checkpoint& checkpoint) override {
    RETURN_IF_ERROR(CheckEncodable(checkpoint));
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(std::vector<int64_t> rounds, ListRounds());
    if (!rounds.empty() && rounds.front() > checkpoint.round) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot save round ", checkpoint.round, " into ", dir_,
                       ": it already holds round ", rounds.front()));
    }
    const std::string final_path = PathOf(CheckpointFileName(checkpoint.round));
    const std::string tmp_path = final_path + ".tmp";
    RETURN_IF_ERROR(WriteDurably(checkpoint, tmp_path, final_path));

    ASSIGN_OR_RETURN(rounds, ListRounds());
    for (size_t i = static_cast<size_t>(keep_); i < rounds.size(); ++i) {
      const std::string old = PathOf(CheckpointFileName(rounds[i]));
      if (::unlink(old.c_str()) != 0 && errno != ENOENT) {
        return ErrnoStatus(
            errno, absl::StrCat("round ", checkpoint.round,
                                " was saved, but deleting the old ", old));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<Checkpoint>> LoadLatest() override {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(RemoveTempFiles());
    ASSIGN_OR_RETURN(std::vector<int64_t> rounds, ListRounds());
    if (rounds.empty()) return std::optional<Checkpoint>();
    const std::string path = PathOf(CheckpointFileName(rounds.front()));
    ASSIGN_OR_RETURN(Checkpoint checkpoint, LoadLocked(path));
    if (checkpoint.round != rounds.front()) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", path, ": holds round ", checkpoint.round,
                       ", but its name says ", rounds.front()));
    }
    return std::optional<Checkpoint>(std::move(checkpoint));
  }

  absl::StatusOr<Checkpoint> Load(const std::string& path) override {
    absl::MutexLock lock(&mu_);
    return LoadLocked(path);
  }

  const std::string& dir() const override { return dir_; }

 private:
  std::string PathOf(const std::string& name) const {
    return (fs::path(dir_) / name).string();
  }

  absl::StatusOr<Checkpoint> LoadLocked(const std::string& path) const {
    ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
    return DecodeCheckpoint(bytes, path);
  }

  // Rounds of the checkpoint files in the directory, newest first.
  absl::StatusOr<std::vector<int64_t>> ListRounds() const {
    std::vector<int64_t> rounds;
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end;
         it.increment(ec)) {
      const int64_t round = RoundOfFileName(it->path().filename().string());
      if (round >= 0) rounds.push_back(round);
    }
    if (ec) {
      return absl::InternalError(
          absl::StrCat("listing ", dir_, ": ", ec.message()));
    }
    std::sort(rounds.begin(), rounds.end(), std::greater<int64_t>());
    rounds.erase(std::unique(rounds.begin(), rounds.end()), rounds.end());
    return rounds;
  }

  absl::Status RemoveTempFiles() const {
    std::vector<std::string> temps;
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end;
         it.increment(ec)) {
      if (IsTempFileName(it->path().filename().string())) {
        temps.push_back(it->path().string());
      }
    }
    if (ec) {
      return absl::InternalError(
          absl::StrCat("listing ", dir_, ": ", ec.message()));
    }
    for (const std::string& path : temps) {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return ErrnoStatus(errno,
                           absl::StrCat("deleting leftover temporary ", path));
      }
    }
    return absl::OkStatus();
  }

  absl::Status WriteDurably(const Checkpoint& checkpoint,
                            const std::string& tmp_path,
                            const std::string& final_path) const {
    const int fd = ::open(tmp_path.c_str(),
                          O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("creating ", tmp_path));
    FdSink sink(fd, tmp_path);
    Encode(checkpoint, &sink);
    absl::Status status = sink.Finish();
    if (status.ok() && ::fsync(fd) != 0) {
      status = ErrnoStatus(errno, absl::StrCat("fsync of ", tmp_path));
    }
    if (::close(fd) != 0 && status.ok()) {
      status = ErrnoStatus(errno, absl::StrCat("closing ", tmp_path));
    }
    if (status.ok() && ::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
      status = ErrnoStatus(
          errno, absl::StrCat("renaming ", tmp_path, " to ", final_path));
    }
    if (!status.ok()) {
      ::unlink(tmp_path.c_str());
      return status;
    }
    return FsyncPath(dir_, O_RDONLY | O_DIRECTORY);
  }

  const std::string dir_;
  const int keep_;
  mutable absl::Mutex mu_;  // serialises all directory operations
};

}  // namespace

std::string EncodeCheckpoint(const Checkpoint& checkpoint) {
  std::string out;
  out.reserve(EncodedSize(checkpoint));
  StringSink sink(&out);
  Encode(checkpoint, &sink);
  return out;
}

absl::StatusOr<Checkpoint> DecodeCheckpoint(const std::string& bytes,
                                            const std::string& what) {
  const auto damaged = [&what](const std::string& problem) {
    return absl::DataLossError(
        absl::StrCat("checkpoint ", what, ": ", problem));
  };
  if (bytes.empty()) return damaged("truncated: the file is empty");
  if (bytes.size() < sizeof(kMagic) ||
      std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return damaged("not a LayerFL checkpoint (bad magic)");
  }
  if (bytes.size() < kHeaderSize + kCrcSize) {
    return damaged(absl::StrCat("truncated: ", bytes.size(),
                                " bytes is shorter than the header"));
  }
  Decoder d(bytes, bytes.size() - kCrcSize, what);
  uint32_t version;
  uint64_t total;
  RETURN_IF_ERROR(d.Skip(sizeof(kMagic), "magic"));
  RETURN_IF_ERROR(d.U32(&version, "format version"));
  if (version != kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", what, ": format version ", version,
        " is not supported (this build reads version ", kFormatVersion, ")"));
  }
  RETURN_IF_ERROR(d.U64(&total, "file length"));
  if (total != bytes.size()) {
    return damaged(absl::StrCat(total > bytes.size() ? "truncated" : "damaged",
                                ": the header says ", total,
                                " bytes, the file has ", bytes.size()));
  }
  const size_t body_end = bytes.size() - kCrcSize;
  const uint32_t computed = Crc(0, bytes.data(), body_end);
  uint32_t stored = 0;
  for (size_t i = 0; i < kCrcSize; ++i) {
    stored |=
        static_cast<uint32_t>(static_cast<unsigned char>(bytes[body_end + i]))
        << (8 * i);
  }
  if (stored != computed) {
    return damaged(absl::StrFormat(
        "checksum mismatch (stored %08x, computed %08x): the file is damaged",
        stored, computed));
  }

  Checkpoint c;
  RETURN_IF_ERROR(d.I64(&c.round, "round"));
  if (c.round < 0) return d.Error(absl::StrCat("negative round ", c.round));
  uint32_t num_layers;
  RETURN_IF_ERROR(d.U32(&num_layers, "layer count"));
  absl::flat_hash_set<std::string> groups;
  for (uint32_t l = 0; l < num_layers; ++l) {
    LayerWeights layer;
    RETURN_IF_ERROR(d.Str(&layer.group, absl::StrCat("layer ", l, " name")));
    if (!groups.insert(layer.group).second) {
      return d.Error(absl::StrCat("layer '", layer.group, "' appears twice"));
    }
    const std::string field = absl::StrCat("layer '", layer.group, "'");
    RETURN_IF_ERROR(d.I64(&layer.version, field + " version"));
    if (layer.version < 0) {
      return d.Error(
          absl::StrCat(field, " has negative version ", layer.version));
    }
    uint32_t num_tensors;
    RETURN_IF_ERROR(d.U32(&num_tensors, field + " tensor count"));
    for (uint32_t t = 0; t < num_tensors; ++t) {
      Tensor32 tensor;
      RETURN_IF_ERROR(DecodeTensor(d, layer.group, &tensor));
      layer.tensors.push_back(std::move(tensor));
    }
    c.weights.layers.push_back(std::move(layer));
  }
  RETURN_IF_ERROR(d.Str(&c.selection_state, "selection state"));
  RETURN_IF_ERROR(d.Str(&c.engine_state, "engine state"));
  RETURN_IF_ERROR(d.Str(&c.metrics_json, "metrics"));
  if (d.remaining() != 0) {
    return d.Error(
        absl::StrCat(d.remaining(), " unexpected bytes after the last field"));
  }
  return c;
}

absl::StatusOr<std::unique_ptr<CheckpointStore>> CheckpointStore::Open(
    const std::string& dir, int keep) {
  if (dir.empty()) {
    return absl::InvalidArgumentError("checkpoint directory must be set");
  }
  if (keep < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint keep must be >= 1, got ", keep));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("creating checkpoint directory ",
                                            dir, ": ", ec.message()));
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint path ", dir, " is not a directory"));
  }
  return std::unique_ptr<CheckpointStore>(new FileCheckpointStore(dir, keep));
}

}  // namespace layerfl
