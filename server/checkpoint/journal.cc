#include "server/checkpoint/journal.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace layerfl {
namespace {

uint32_t Crc(const std::string& bytes) {
  if (bytes.empty()) return 0;
  return static_cast<uint32_t>(
      crc32_z(0, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

uint32_t GetU32(const std::string& in, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    v |= static_cast<uint32_t>(static_cast<unsigned char>(in[at + i]))
         << (8 * i);
  }
  return v;
}

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

JournalContents ParseJournal(const std::string& bytes) {
  JournalContents out;
  size_t at = 0;
  while (bytes.size() - at >= 8) {
    const uint32_t n = GetU32(bytes, at);
    if (n > bytes.size() - at - 8) break;
    std::string record = bytes.substr(at + 4, n);
    if (GetU32(bytes, at + 4 + n) != Crc(record)) break;
    out.records.push_back(std::move(record));
    at += 8 + static_cast<size_t>(n);
  }
  out.dropped_tail_bytes = static_cast<int64_t>(bytes.size() - at);
  return out;
}

std::string FrameRecord(const std::string& record) {
  std::string frame;
  frame.reserve(record.size() + 8);
  PutU32(frame, static_cast<uint32_t>(record.size()));
  frame += record;
  PutU32(frame, Crc(record));
  return frame;
}

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(
    const std::string& path) {
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(absl::StrCat("opening the journal ", path));
  return std::unique_ptr<Journal>(new Journal(path, fd));
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status Journal::Append(const std::string& record) {
  if (record.size() > (size_t{1} << 31)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "journal ", path_, ": a record of ", record.size(), " bytes"));
  }
  const std::string frame = FrameRecord(record);
  const char* p = frame.data();
  size_t left = frame.size();
  while (left > 0) {
    const ssize_t w = ::write(fd_, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Errno(absl::StrCat("appending to the journal ", path_));
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (::fdatasync(fd_) != 0) {
    return Errno(absl::StrCat("fdatasync of the journal ", path_));
  }
  return absl::OkStatus();
}

absl::StatusOr<JournalContents> Journal::Read() const {
  std::ifstream in(path_, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read the journal ", path_));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return ParseJournal(bytes.str());
}

absl::Status Journal::Reset() {
  if (::ftruncate(fd_, 0) != 0) {
    return Errno(absl::StrCat("truncating the journal ", path_));
  }
  if (::fsync(fd_) != 0) {
    return Errno(absl::StrCat("fsync of the journal ", path_));
  }
  return absl::OkStatus();
}

}  // namespace layerfl
