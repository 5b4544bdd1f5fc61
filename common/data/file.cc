#include "common/data/file.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

#include <fcntl.h>
#include <unistd.h>

namespace layerfl {
namespace {

constexpr uint64_t kMaxDecompressedBytes = uint64_t{4} << 30;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

absl::Status ErrnoError(int err, const std::string& what,
                        const std::string& path) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(what, " ", path, ": ", std::strerror(err)));
}

}  // namespace

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat("file not found: ", path));
    }
    return ErrnoError(err, "cannot open", path);
  }
  std::string contents;
  char buffer[1 << 16];
  while (true) {
    size_t n = std::fread(buffer, 1, sizeof(buffer), file.get());
    contents.append(buffer, n);
    if (n < sizeof(buffer)) break;
  }
  if (std::ferror(file.get())) return ErrnoError(errno, "cannot read", path);
  return contents;
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes,
                                 bool durable) {
  const std::filesystem::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(target.parent_path(), ec);
    if (ec) {
      return absl::Status(absl::ErrnoToStatusCode(ec.value()),
                          absl::StrCat("cannot create directory ",
                                       target.parent_path().string(), ": ",
                                       ec.message()));
    }
  }
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, "cannot write", tmp);
  size_t done = 0;
  int err = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (err == 0 && durable && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    std::remove(tmp.c_str());
    return ErrnoError(err, "cannot write", path);
  }
  if (!durable) return absl::OkStatus();
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

namespace {
absl::Status CannotRead(absl::string_view flag, const std::string& path) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, ": cannot read '", path, "'"));
}
}  // namespace

absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok() || text->empty()) return CannotRead(flag, path);
  return text;
}

absl::StatusOr<std::string> ReadFlagFileLine(absl::string_view flag,
                                             const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok() || text->empty()) return CannotRead(flag, path);
  return std::string(absl::StripAsciiWhitespace(text->substr(0, text->find('\n'))));
}

bool IsGzip(const std::string& bytes) {
  return bytes.size() >= 2 && static_cast<uint8_t>(bytes[0]) == 0x1f &&
         static_cast<uint8_t>(bytes[1]) == 0x8b;
}

absl::StatusOr<std::string> Gunzip(const std::string& bytes,
                                   const std::string& path) {
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    return absl::InternalError(
        absl::StrCat("zlib inflateInit2 failed for ", path));
  }
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, inflateEnd);

  std::string out;
  char buffer[1 << 16];
  size_t consumed = 0;  // Bytes of `bytes` handed to zlib so far.
  const auto* input = reinterpret_cast<const Bytef*>(bytes.data());
  while (true) {
    if (zs.avail_in == 0 && consumed < bytes.size()) {
      size_t chunk = std::min<size_t>(bytes.size() - consumed, 1u << 30);
      zs.next_in = const_cast<Bytef*>(input + consumed);
      zs.avail_in = static_cast<uInt>(chunk);
      consumed += chunk;
    }
    zs.next_out = reinterpret_cast<Bytef*>(buffer);
    zs.avail_out = sizeof(buffer);
    int rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buffer, sizeof(buffer) - zs.avail_out);
    if (out.size() > kMaxDecompressedBytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("gzip file ", path, " decompresses to more than ",
                       kMaxDecompressedBytes, " bytes"));
    }
    if (rc == Z_STREAM_END) {
      size_t remaining = zs.avail_in + (bytes.size() - consumed);
      if (remaining == 0) break;
      size_t offset = bytes.size() - remaining;
      if (!IsGzip(bytes.substr(offset, 2))) {
        return absl::DataLossError(
            absl::StrCat("gzip file ", path, " has ", remaining,
                         " trailing bytes after the compressed stream"));
      }
      inflateReset(&zs);
      continue;
    }
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && consumed == bytes.size()) {
      return absl::DataLossError(absl::StrCat(
          "gzip file ", path, " is truncated: stream ended after ",
          bytes.size(), " compressed bytes without an end marker"));
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      return absl::DataLossError(absl::StrCat(
          "gzip file ", path,
          " is corrupt: ", zs.msg != nullptr ? zs.msg : "zlib error ",
          zs.msg != nullptr ? "" : absl::StrCat(rc)));
    }
  }
  return out;
}

absl::StatusOr<std::string> ReadMaybeGzippedFile(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok() || !IsGzip(*bytes)) return bytes;
  return Gunzip(*bytes, path);
}

}  // namespace layerfl
