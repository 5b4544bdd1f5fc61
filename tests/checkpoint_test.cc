#include <stdlib.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/weights/weights.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/checkpoint/checkpoint_store.h"
#include "tests/weights_matchers.h"

namespace layerfl {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

Checkpoint MakeCheckpoint(int64_t round) {
  Checkpoint c;
  c.round = round;
  const float denorm = std::numeric_limits<float>::denorm_min();
  c.weights.layers.push_back(
      {"embed",
       round,
       {Tensor32{"embed.w",
                 {2, 3},
                 {1, -0.0f, denorm, 3e38f, -1e-20f, static_cast<float>(round)}},
        Tensor32{"embed.pos", {0}, {}}}});
  c.weights.layers.push_back({"head", 2, {Tensor32{"head.b", {}, {0.5f}}}});
  c.weights.layers.push_back({"empty", 0, {}});
  c.selection_state = std::string("sel\0state\xff", 10);
  c.engine_state = "rng:12345";
  c.metrics_json = absl::StrCat("{\"round\":", round, "}");
  return c;
}

void ExpectBitIdentical(const Checkpoint& a, const Checkpoint& b) {
  EXPECT_EQ(a.round, b.round);
  EXPECT_EQ(a.selection_state, b.selection_state);
  EXPECT_EQ(a.engine_state, b.engine_state);
  EXPECT_EQ(a.metrics_json, b.metrics_json);
  ExpectBitIdentical(a.weights, b.weights);
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "ckptXXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::unique_ptr<CheckpointStore> OpenStore(int keep = 3) {
    absl::StatusOr<std::unique_ptr<CheckpointStore>> store =
        CheckpointStore::Open(dir_, keep);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }
  std::string PathOf(const std::string& name) const {
    return (fs::path(dir_) / name).string();
  }
  std::set<std::string> Files() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) {
      names.insert(e.path().filename().string());
    }
    return names;
  }
  static std::string ReadAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static void WriteAll(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  std::string dir_;
};

// Rewrites the trailing CRC so that only the edited field is wrong.
void FixCrc(std::string& bytes) {
  const size_t body = bytes.size() - 4;
  const uint32_t crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(bytes.data()),
            static_cast<uInt>(body)));
  for (int i = 0; i < 4; ++i)
    bytes[body + i] = static_cast<char>(crc >> (8 * i));
}

void PutU64(std::string& bytes, size_t offset, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    bytes[offset + i] = static_cast<char>(v >> (8 * i));
}
void PutU32(std::string& bytes, size_t offset, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    bytes[offset + i] = static_cast<char>(v >> (8 * i));
}

TEST_F(CheckpointTest, LoadLatestOnEmptyDirIsNullopt) {
  auto store = OpenStore();
  absl::StatusOr<std::optional<Checkpoint>> latest = store->LoadLatest();
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_FALSE(latest->has_value());
}

TEST_F(CheckpointTest, OpenCreatesDirectoryAndValidatesKeep) {
  const std::string nested = PathOf("a/b/c");
  absl::StatusOr<std::unique_ptr<CheckpointStore>> store =
      CheckpointStore::Open(nested, 1);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(fs::is_directory(nested));
  EXPECT_EQ((*store)->dir(), nested);
  EXPECT_EQ(CheckpointStore::Open(dir_, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckpointStore::Open("", 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  WriteAll(PathOf("plain"), "x");
  EXPECT_FALSE(CheckpointStore::Open(PathOf("plain"), 1).ok());
}

TEST_F(CheckpointTest, RoundTripIsBitIdentical) {
  auto store = OpenStore();
  const Checkpoint saved = MakeCheckpoint(7);
  ASSERT_TRUE(store->Save(saved).ok());
  EXPECT_EQ(Files(), std::set<std::string>{"round-00000007.ckpt"});

  absl::StatusOr<std::optional<Checkpoint>> latest = store->LoadLatest();
  ASSERT_TRUE(latest.ok()) << latest.status();
  ASSERT_TRUE(latest->has_value());
  ExpectBitIdentical(**latest, saved);

  absl::StatusOr<Checkpoint> loaded =
      store->Load(PathOf("round-00000007.ckpt"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectBitIdentical(*loaded, saved);

  // The file holds exactly EncodeCheckpoint's bytes.
  EXPECT_EQ(ReadAll(PathOf("round-00000007.ckpt")), EncodeCheckpoint(saved));

  // A second store over the same directory (a restarted coordinator).
  auto reopened = OpenStore();
  latest = reopened->LoadLatest();
  ASSERT_TRUE(latest.ok() && latest->has_value());
  ExpectBitIdentical(**latest, saved);
}

TEST_F(CheckpointTest, KeepsOnlyNewestK) {
  auto store = OpenStore(/*keep=*/2);
  for (int r = 1; r <= 5; ++r) ASSERT_TRUE(store->Save(MakeCheckpoint(r)).ok());
  EXPECT_EQ(Files(), (std::set<std::string>{"round-00000004.ckpt",
                                            "round-00000005.ckpt"}));
  absl::StatusOr<std::optional<Checkpoint>> latest = store->LoadLatest();
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->round, 5);
}

TEST_F(CheckpointTest, RoundsOnlyMoveForward) {
  auto store = OpenStore();
  ASSERT_TRUE(store->Save(MakeCheckpoint(5)).ok());
  const absl::Status older = store->Save(MakeCheckpoint(3));
  EXPECT_EQ(older.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(older.message()), HasSubstr("round 5"));
  // Re-saving the same round replaces it.
  Checkpoint again = MakeCheckpoint(5);
  again.metrics_json = "{\"again\":true}";
  ASSERT_TRUE(store->Save(again).ok());
  absl::StatusOr<std::optional<Checkpoint>> latest = store->LoadLatest();
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->metrics_json, "{\"again\":true}");
  EXPECT_EQ(store->Save(MakeCheckpoint(-1)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CheckpointTest, TempFilesAreIgnoredAndRemoved) {
  auto store = OpenStore();
  ASSERT_TRUE(store->Save(MakeCheckpoint(2)).ok());
  WriteAll(PathOf("round-00000009.ckpt.tmp"), "half-written garbage");
  WriteAll(PathOf("notes.txt"), "operator notes");
  absl::StatusOr<std::optional<Checkpoint>> latest = store->LoadLatest();
  ASSERT_TRUE(latest.ok()) << latest.status();
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->round, 2);
  EXPECT_EQ(Files(),
            (std::set<std::string>{"notes.txt", "round-00000002.ckpt"}));
}

TEST_F(CheckpointTest, TruncatedLatestIsAnErrorNamingTheFile) {
  auto store = OpenStore();
  ASSERT_TRUE(store->Save(MakeCheckpoint(1)).ok());
  ASSERT_TRUE(store->Save(MakeCheckpoint(2)).ok());
  const std::string path = PathOf("round-00000002.ckpt");
  const std::string bytes = ReadAll(path);
  WriteAll(path, bytes.substr(0, bytes.size() / 2));
  const absl::StatusOr<std::optional<Checkpoint>> latest = store->LoadLatest();
  // No silent fall-back to round 1.
  EXPECT_EQ(latest.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(latest.status().message()),
              AllOf(HasSubstr(path), HasSubstr("truncated")));
}

TEST_F(CheckpointTest, FlippedByteIsAnErrorNamingTheFile) {
  auto store = OpenStore();
  ASSERT_TRUE(store->Save(MakeCheckpoint(3)).ok());
  const std::string path = PathOf("round-00000003.ckpt");
  std::string bytes = ReadAll(path);
  bytes[bytes.size() / 2] ^= 0x10;
  WriteAll(path, bytes);
  const absl::StatusOr<std::optional<Checkpoint>> latest = store->LoadLatest();
  EXPECT_EQ(latest.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(latest.status().message()),
              AllOf(HasSubstr(path), HasSubstr("checksum mismatch")));
}

TEST_F(CheckpointTest, WrongMagicIsAnErrorNamingTheFile) {
  auto store = OpenStore();
  const std::string path = PathOf("round-00000004.ckpt");
  std::string bytes = EncodeCheckpoint(MakeCheckpoint(4));
  bytes[0] = 'X';
  WriteAll(path, bytes);
  const absl::StatusOr<Checkpoint> loaded = store->Load(path);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(loaded.status().message()),
              AllOf(HasSubstr(path), HasSubstr("bad magic")));
  WriteAll(path, "");
  EXPECT_THAT(std::string(store->Load(path).status().message()),
              AllOf(HasSubstr(path), HasSubstr("empty")));
}

TEST_F(CheckpointTest, MissingFileIsNotFound) {
  auto store = OpenStore();
  EXPECT_EQ(store->Load(PathOf("round-00000001.ckpt")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CheckpointTest, NameAndContentMustAgree) {
  auto store = OpenStore();
  WriteAll(PathOf("round-00000008.ckpt"), EncodeCheckpoint(MakeCheckpoint(6)));
  const absl::StatusOr<std::optional<Checkpoint>> latest = store->LoadLatest();
  EXPECT_EQ(latest.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      std::string(latest.status().message()),
      AllOf(HasSubstr("round-00000008.ckpt"), HasSubstr("holds round 6")));
}

// Layout of MakeCheckpoint's first fields: header (8 magic + 4 version + 8
// length) = 20, round 8 -> 28, layer count 4 -> 32, group length 8 -> 40,
// "embed" -> 45, version 8 -> 53, tensor count 4 -> 57, name length 8 -> 65,
// "embed.w" -> 72, rank 4 -> 76, dims 2x8 -> 92, numel 8 -> 100, values.
constexpr size_t kVersionOffset = 8;
constexpr size_t kLayerCountOffset = 28;
constexpr size_t kGroupLenOffset = 32;
constexpr size_t kRankOffset = 72;
constexpr size_t kDimsOffset = 76;
constexpr size_t kNumelOffset = 92;

TEST(CheckpointCodecTest, LayoutAssumedByTheseTests) {
  const std::string bytes = EncodeCheckpoint(MakeCheckpoint(1));
  EXPECT_EQ(bytes.substr(kGroupLenOffset + 8, 5), "embed");
  EXPECT_EQ(bytes.substr(kRankOffset - 7, 7), "embed.w");
  EXPECT_EQ(bytes[kRankOffset], 2);
  EXPECT_EQ(bytes[kNumelOffset], 6);
}

TEST(CheckpointCodecTest, HugeLengthFieldsAreRefusedWithoutAllocating) {
  const std::string good = EncodeCheckpoint(MakeCheckpoint(1));
  struct Edit {
    std::string label;
    size_t offset;
    uint64_t value;
    bool is_u32;
    std::string expect;
  };
  const std::vector<Edit> edits = {
      {"group length", kGroupLenOffset, uint64_t{1} << 62, false, "exceeds"},
      {"group length max", kGroupLenOffset,
       std::numeric_limits<uint64_t>::max(), false, "exceeds"},
      {"layer count", kLayerCountOffset, 0xffffffffu, true, "remain"},
      {"rank", kRankOffset, 0x7fffffffu, true, "rank"},
      {"numel", kNumelOffset, uint64_t{1} << 61, false, "does not match"},
  };
  for (const Edit& e : edits) {
    SCOPED_TRACE(e.label);
    std::string bytes = good;
    if (e.is_u32) {
      PutU32(bytes, e.offset, static_cast<uint32_t>(e.value));
    } else {
      PutU64(bytes, e.offset, e.value);
    }
    FixCrc(bytes);
    const absl::StatusOr<Checkpoint> c =
        DecodeCheckpoint(bytes, "hostile.ckpt");
    EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(c.status().message()),
                AllOf(HasSubstr("hostile.ckpt"), HasSubstr(e.expect)));
  }
  // Shape and element count agree, but far exceed the file.
  std::string bytes = good;
  PutU64(bytes, kDimsOffset, uint64_t{1} << 30);
  PutU64(bytes, kDimsOffset + 8, uint64_t{1} << 30);
  PutU64(bytes, kNumelOffset, uint64_t{1} << 60);
  FixCrc(bytes);
  const absl::StatusOr<Checkpoint> c = DecodeCheckpoint(bytes, "hostile.ckpt");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("exceed"));
  // Dimensions whose product overflows 64 bits.
  bytes = good;
  PutU64(bytes, kDimsOffset, uint64_t{1} << 40);
  PutU64(bytes, kDimsOffset + 8, uint64_t{1} << 40);
  PutU64(bytes, kNumelOffset, 0);
  FixCrc(bytes);
  EXPECT_EQ(DecodeCheckpoint(bytes, "x").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(CheckpointCodecTest, UnsupportedFormatVersion) {
  std::string bytes = EncodeCheckpoint(MakeCheckpoint(1));
  PutU32(bytes, kVersionOffset, 2);
  FixCrc(bytes);
  const absl::Status s = DecodeCheckpoint(bytes, "new.ckpt").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("new.ckpt"), HasSubstr("format version 2")));
}

// Every prefix and every single-bit flip of a valid file is refused cleanly.
TEST(CheckpointCodecTest, EveryTruncationAndBitFlipIsRefused) {
  const std::string good = EncodeCheckpoint(MakeCheckpoint(3));
  ASSERT_TRUE(DecodeCheckpoint(good, "good").ok());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(DecodeCheckpoint(good.substr(0, n), "t").ok()) << n;
  }
  EXPECT_FALSE(DecodeCheckpoint(good + "x", "t").ok());
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bytes = good;
      bytes[i] = static_cast<char>(bytes[i] ^ (1 << bit));
      EXPECT_FALSE(DecodeCheckpoint(bytes, "t").ok()) << i << ":" << bit;
    }
  }
}

}  // namespace
}  // namespace layerfl
