// Hugging Face safetensors (issue 23): files written by an independent
// by-hand Python writer (tests/fixtures/safetensors_py.py, the exact upstream
// layout) are read bit-exactly; malformed files are refused naming the tensor
// or the file; what LayerFL writes is read back by Python and by itself.

#include "common/safetensors/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/codec/float16.h"
#include "nlohmann/json.hpp"

namespace layerfl {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

std::vector<uint32_t> BitsOf(const std::vector<float>& v) {
  std::vector<uint32_t> out;
  for (float f : v) out.push_back(Bits(f));
  return out;
}

template <typename T>
std::vector<uint8_t> RawBytes(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::string LengthPrefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (fs::path(::testing::TempDir()) / "safetensorsXXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string Path(const std::string& name) const {
    return (fs::path(dir_) / name).string();
  }

  // Runs `body` with /usr/bin/python3 after `import safetensors_py as st`,
  // with OUT the test's directory; returns what it printed. Nothing is
  // written into the source tree (no __pycache__).
  std::string RunPython(const std::string& body) {
    const std::string script = Path("script.py");
    WriteAll(script, absl::StrCat("import json, os, struct, sys\n",
                                  "sys.dont_write_bytecode = True\n",
                                  "sys.path.insert(0, ",
                                  "'" LAYERFL_SOURCE_DIR "/tests/fixtures')\n",
                                  "import safetensors_py as st\n",
                                  "OUT = sys.argv[1]\n", body, "\n"));
    const std::string command =
        absl::StrCat("/usr/bin/python3 ", script, " ", dir_, " 2>&1");
    FILE* p = popen(command.c_str(), "r");
    if (p == nullptr) {
      ADD_FAILURE() << "popen failed";
      return "";
    }
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    const int rc = pclose(p);
    EXPECT_EQ(rc, 0) << "python failed:\n" << out;
    return out;
  }

  // A file with the given header text (not padded) and data buffer.
  std::string WriteRaw(const std::string& name, const std::string& header,
                       const std::string& buffer) {
    const std::string path = Path(name);
    WriteAll(path, LengthPrefix(header.size()) + header + buffer);
    return path;
  }

  absl::Status OpenStatus(const std::string& path) {
    return SafetensorsFile::Open(path).status();
  }

  std::string dir_;
};

// The values each dtype test pins: edge cases of the conversions.
constexpr char kDtypeFixture[] = R"(
st.save(os.path.join(OUT, "dtypes.safetensors"), {
    "f32": ("F32", [2, 3], [1.0, -2.5, 65504.0, 2.0**-149, -0.0, 3.4028234663852886e38]),
    "f16": ("F16", [9], [1.0, -2.5, 65504.0, 2.0**-24, 1023 * 2.0**-24, 2.0**-14, -0.0,
                         0.333251953125, float("inf")]),
    "bf16": ("BF16", [5], [3.140625, -2.5, 1.0, 2.0**-133, 3.3895313892515355e38]),
    "f64": ("F64", [1], [0.1]),
    "i64": ("I64", [5], [0, -1, 2**53 + 1, -2**63, 2**63 - 1]),
    "step": ("I64", [], [7]),
}, metadata={"format": "pt", "note": "h\u00e9llo"})
)";

TEST_F(SafetensorsTest, ReadsPythonWrittenDtypesBitExact) {
  RunPython(kDtypeFixture);
  auto file = SafetensorsFile::Open(Path("dtypes.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;

  // Upstream's layout: decreasing dtype alignment, then name.
  std::vector<std::string> order;
  for (const SafetensorsTensorInfo& t : f.tensors()) order.push_back(t.name);
  EXPECT_THAT(order, ElementsAre("i64", "step", "f64", "f32", "bf16", "f16"));
  EXPECT_EQ(f.header_size() % 8, 0u);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{
                              {"format", "pt"}, {"note", "h\xc3\xa9llo"}}));

  const SafetensorsTensorInfo* f32 = f.Find("f32");
  ASSERT_NE(f32, nullptr);
  EXPECT_EQ(f32->dtype, SafetensorsDtype::kF32);
  EXPECT_THAT(f32->shape, ElementsAre(2, 3));
  EXPECT_EQ(f32->numel(), 6);
  EXPECT_EQ(f32->nbytes(), 24u);

  auto values = f.ReadFloat32("f32");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(BitsOf(*values),
              ElementsAre(0x3f800000u, 0xc0200000u, 0x477fe000u, 0x00000001u,
                          0x80000000u, 0x7f7fffffu));

  values = f.ReadFloat32("f16");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(
      BitsOf(*values),
      ElementsAre(Bits(1.0f), Bits(-2.5f), Bits(65504.0f),
                  Bits(std::ldexp(1.0f, -24)), Bits(std::ldexp(1023.0f, -24)),
                  Bits(std::ldexp(1.0f, -14)), Bits(-0.0f),
                  Bits(0.333251953125f),
                  Bits(std::numeric_limits<float>::infinity())));
  auto raw = f.Bytes("f16");
  ASSERT_TRUE(raw.ok());
  EXPECT_THAT(std::vector<uint8_t>(raw->begin(), raw->begin() + 8),
              ElementsAre(0x00, 0x3c, 0x00, 0xc1, 0xff, 0x7b, 0x01, 0x00));

  values = f.ReadFloat32("bf16");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(BitsOf(*values),
              ElementsAre(0x40490000u, 0xc0200000u, 0x3f800000u, 0x00010000u,
                          0x7f7f0000u));

  values = f.ReadFloat32("f64");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(BitsOf(*values), ElementsAre(Bits(0.1f)));

  auto ints = f.ReadInt64("i64");
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_THAT(*ints, ElementsAre(0, -1, (int64_t{1} << 53) + 1,
                                 std::numeric_limits<int64_t>::min(),
                                 std::numeric_limits<int64_t>::max()));
  ints = f.ReadInt64("step");
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_THAT(*ints, ElementsAre(7));
  EXPECT_TRUE(f.Find("step")->shape.empty());
}

TEST_F(SafetensorsTest, RawViewPointsIntoTheMappingWithoutCopying) {
  RunPython(kDtypeFixture);
  auto file = SafetensorsFile::Open(Path("dtypes.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  const absl::Span<const uint8_t> mapping = f.mapping();
  EXPECT_EQ(mapping.size(), fs::file_size(Path("dtypes.safetensors")));
  for (const SafetensorsTensorInfo& t : f.tensors()) {
    auto bytes = f.Bytes(t.name);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(bytes->data(), mapping.data() + 8 + f.header_size() + t.begin)
        << t.name;
    EXPECT_EQ(bytes->size(), t.nbytes()) << t.name;
    EXPECT_LE(bytes->data() + bytes->size(), mapping.data() + mapping.size())
        << t.name;
    // Writers put tensors in decreasing alignment after an 8-aligned header.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(bytes->data()) %
                  SafetensorsDtypeSize(t.dtype),
              0u)
        << t.name;
  }
}

TEST_F(SafetensorsTest, ReadsRefuseTheWrongDtypeOrAnUnknownName) {
  RunPython(kDtypeFixture);
  auto file = SafetensorsFile::Open(Path("dtypes.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  absl::Status s = (*file)->ReadFloat32("i64").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("dtypes.safetensors"),
                                 HasSubstr("'i64'"), HasSubstr("I64")));
  s = (*file)->ReadInt64("bf16").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("'bf16'"), HasSubstr("BF16, not I64")));
  s = (*file)->Bytes("nope").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("dtypes.safetensors"), HasSubstr("'nope'")));
  EXPECT_EQ((*file)->Find("nope"), nullptr);
}

TEST_F(SafetensorsTest, AcceptsEmptyFilesAndZeroSizeTensors) {
  const std::string empty = WriteRaw("empty.safetensors", "{}      ", "");
  auto file = SafetensorsFile::Open(empty);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_TRUE((*file)->metadata().empty());

  const std::string zero = WriteRaw(
      "zero.safetensors",
      R"({"__metadata__":null,"a":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},)"
      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":1}})",
      "xy");
  file = SafetensorsFile::Open(zero);
  ASSERT_TRUE(file.ok()) << file.status();
  auto a = (*file)->ReadFloat32("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->empty());
  auto b = (*file)->Bytes("b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(std::string(b->begin(), b->end()), "xy");
}

// --- refusals of malformed files ---

struct Refusal {
  const char* test;
  std::string header;
  std::string buffer;
  absl::StatusCode code;
  std::vector<std::string> says;
};

TEST_F(SafetensorsTest, RefusesMalformedHeadersNamingTheTensor) {
  const std::vector<Refusal> cases = {
      {"not JSON",
       "{not json",
       "",
       absl::StatusCode::kDataLoss,
       {"not valid JSON"}},
      {"not an object",
       "[1, 2]",
       "",
       absl::StatusCode::kDataLoss,
       {"not an object"}},
      {"unknown dtype",
       R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})",
       std::string(4, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'w'", "dtype 'F33'"}},
      {"sub-byte dtype",
       R"({"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})",
       std::string(1, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'w'", "'F4'"}},
      {"shape/offsets mismatch",
       R"({"encoder.layer.0.attention.self.query.weight":)"
       R"({"dtype":"F32","shape":[4,8],"data_offsets":[0,100]}})",
       std::string(100, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'encoder.layer.0.attention.self.query.weight': data_offsets "
        "[0, 100] hold "
        "100 bytes, its shape [4, 8] in F32 needs 128"}},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       std::string(12, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'b': data_offsets [4, 12] overlap tensor 'a' at [0, 8]"}},
      {"hole",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       std::string(12, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'b': data_offsets [8, 12] leave a hole: bytes [4, 8)"}},
      {"hole at the start",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       std::string(8, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'a'", "hole: bytes [0, 4)"}},
      {"offsets past the end",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       std::string(6, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'b': data_offsets [4, 8] run past the end of the data buffer "
        "(6 bytes"}},
      {"bytes after the last tensor",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
       std::string(6, '\0'),
       absl::StatusCode::kDataLoss,
       {"2 bytes after the last tensor, 'a', ends at 4"}},
      {"bytes but no tensor",
       "{}",
       std::string(3, '\0'),
       absl::StatusCode::kDataLoss,
       {"holds 3 bytes but the header names no tensor"}},
      {"reversed offsets",
       R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})",
       std::string(4, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'a': data_offsets [4, 0] end before they begin"}},
      {"negative dimension",
       R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})",
       "",
       absl::StatusCode::kDataLoss,
       {"tensor 'a': shape [-1] is not a list of non-negative integers"}},
      {"fractional dimension",
       R"({"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})",
       std::string(1, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'a'", "non-negative integers"}},
      {"size overflow",
       R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})",
       "",
       absl::StatusCode::kDataLoss,
       {"tensor 'a': shape [4294967296, 4294967296, 16] in F32 overflows"}},
      {"three offsets",
       R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})",
       std::string(1, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'a'", "not a pair [begin, end]"}},
      {"no dtype",
       R"({"a":{"shape":[1],"data_offsets":[0,1]}})",
       std::string(1, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'a': no \"dtype\" string"}},
      {"entry not an object",
       R"({"a":[1]})",
       "",
       absl::StatusCode::kDataLoss,
       {"tensor 'a': its entry is a JSON array"}},
      {"repeated tensor",
       R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
       R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
       std::string(2, '\0'),
       absl::StatusCode::kDataLoss,
       {"tensor 'a' appears twice in the header"}},
      {"repeated key in an entry",
       R"({"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})",
       std::string(1, '\0'),
       absl::StatusCode::kDataLoss,
       {"the header repeats the key 'dtype' in the entry 'a'"}},
      {"metadata not strings",
       R"({"__metadata__":{"epoch":3}})",
       "",
       absl::StatusCode::kDataLoss,
       {"__metadata__ key 'epoch' holds a JSON number"}},
  };
  for (const Refusal& c : cases) {
    SCOPED_TRACE(c.test);
    const std::string path = WriteRaw("bad.safetensors", c.header, c.buffer);
    const absl::Status s = OpenStatus(path);
    EXPECT_EQ(s.code(), c.code) << s;
    EXPECT_THAT(s.message(), HasSubstr("bad.safetensors: "));
    for (const std::string& say : c.says)
      EXPECT_THAT(s.message(), HasSubstr(say));
  }
}

TEST_F(SafetensorsTest, RefusesATruncatedFileNamingTheLastTensor) {
  RunPython(R"(
st.save(os.path.join(OUT, "two.safetensors"),
        {"a": ("F32", [4], [1, 2, 3, 4]), "b": ("F32", [4], [5, 6, 7, 8])})
)");
  const std::string path = Path("two.safetensors");
  ASSERT_TRUE(SafetensorsFile::Open(path).ok());
  fs::resize_file(path, fs::file_size(path) - 10);
  const absl::Status s = OpenStatus(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      s.message(),
      AllOf(HasSubstr("two.safetensors: tensor 'b': data_offsets [16, 32] "
                      "run past the end of the data buffer (22 bytes"),
            HasSubstr("truncated")));
}

TEST_F(SafetensorsTest, RefusesBadHeaderLengthsNamingTheFile) {
  std::string path = Path("short.safetensors");
  WriteAll(path, std::string("\x05\0\0\0", 4));
  absl::Status s = OpenStatus(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      s.message(),
      HasSubstr(
          "short.safetensors: the file is 4 bytes, shorter than the 8-byte"));

  path = Path("long.safetensors");
  WriteAll(path, LengthPrefix(1000) + "{}");
  s = OpenStatus(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      s.message(),
      HasSubstr("long.safetensors: header length 1000 runs past the end "
                "of the file (10 bytes)"));

  path = Path("huge.safetensors");
  WriteAll(path, LengthPrefix(uint64_t{1} << 63) + "{}");
  s = OpenStatus(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      s.message(),
      HasSubstr("huge.safetensors: header length 9223372036854775808 is "
                "over the 100000000-byte limit"));

  s = OpenStatus(Path("absent.safetensors"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("absent.safetensors"));

  s = OpenStatus(dir_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not a regular file"));
}

// --- sharded checkpoints ---

constexpr char kShardFixture[] = R"(
st.save_sharded(os.path.join(OUT, "ckpt"), {
    "model-00001-of-00002.safetensors": {
        "embeddings.word_embeddings.weight": ("F32", [2, 2], [1, 2, 3, 4]),
        "encoder.layer.0.output.dense.bias": ("BF16", [2], [0.5, -0.5]),
    },
    "model-00002-of-00002.safetensors": {
        "pooler.dense.weight": ("F16", [1, 2], [9, 10]),
        "position_ids": ("I64", [1, 3], [0, 1, 2]),
    },
}, metadata={"format": "pt"})
)";

std::string Shard(int i) {
  return absl::StrCat("model-0000", i, "-of-00002.safetensors");
}

TEST_F(SafetensorsTest, CheckpointFindsEveryTensorAcrossShards) {
  RunPython(kShardFixture);
  for (const std::string& path :
       {Path("ckpt"), Path("ckpt/model.safetensors.index.json")}) {
    SCOPED_TRACE(path);
    auto ckpt = SafetensorsCheckpoint::Open(path);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    ASSERT_EQ((*ckpt)->files().size(), 2u);
    EXPECT_EQ(fs::path((*ckpt)->files()[1]->path()).filename().string(),
              Shard(2));
    std::vector<std::string> names;
    for (const auto& e : (*ckpt)->tensors()) names.push_back(e.info->name);
    EXPECT_THAT(names, ElementsAre("embeddings.word_embeddings.weight",
                                   "encoder.layer.0.output.dense.bias",
                                   "position_ids", "pooler.dense.weight"));
    auto entry = (*ckpt)->Find("pooler.dense.weight");
    ASSERT_TRUE(entry.ok()) << entry.status();
    EXPECT_EQ(fs::path(entry->file->path()).filename().string(), Shard(2));
    EXPECT_THAT(*(*ckpt)->ReadFloat32("pooler.dense.weight"),
                ElementsAre(9.0f, 10.0f));
    EXPECT_THAT(*(*ckpt)->ReadFloat32("encoder.layer.0.output.dense.bias"),
                ElementsAre(0.5f, -0.5f));
    EXPECT_THAT(*(*ckpt)->ReadFloat32("embeddings.word_embeddings.weight"),
                ElementsAre(1.0f, 2.0f, 3.0f, 4.0f));
    EXPECT_THAT(*(*ckpt)->ReadInt64("position_ids"), ElementsAre(0, 1, 2));
    const absl::Status s = (*ckpt)->Bytes("nope").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(s.message(),
                HasSubstr("model.safetensors.index.json: no tensor 'nope'"));
  }
}

TEST_F(SafetensorsTest, CheckpointOpensASingleFile) {
  RunPython(R"(
os.makedirs(os.path.join(OUT, "single"))
st.save(os.path.join(OUT, "single", "model.safetensors"), {"w": ("F32", [1], [2.5])})
)");
  for (const std::string& path :
       {Path("single"), Path("single/model.safetensors")}) {
    auto ckpt = SafetensorsCheckpoint::Open(path);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    EXPECT_EQ((*ckpt)->files().size(), 1u);
    EXPECT_THAT(*(*ckpt)->ReadFloat32("w"), ElementsAre(2.5f));
  }
  const absl::Status s = SafetensorsCheckpoint::Open(dir_).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("neither model.safetensors nor "
                                     "model.safetensors.index.json"));
}

class ShardRefusalTest : public SafetensorsTest {
 protected:
  void SetUp() override {
    SafetensorsTest::SetUp();
    RunPython(kShardFixture);
    index_path_ = Path("ckpt/model.safetensors.index.json");
    index_ = nlohmann::json::parse(ReadAll(index_path_));
  }
  void SaveIndex() { WriteAll(index_path_, index_.dump(2)); }
  absl::Status Open() {
    return SafetensorsCheckpoint::Open(Path("ckpt")).status();
  }

  std::string index_path_;
  nlohmann::json index_;
};

TEST_F(ShardRefusalTest, TensorInTheWeightMapButNotInItsShard) {
  index_["weight_map"]["encoder.layer.1.output.dense.bias"] = Shard(1);
  SaveIndex();
  const absl::Status s = Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      s.message(),
      AllOf(
          HasSubstr("model.safetensors.index.json: "),
          HasSubstr(
              "tensor 'encoder.layer.1.output.dense.bias' is in the weight_map "
              "(shard '" +
              Shard(1) + "') but not in that shard")));
}

TEST_F(ShardRefusalTest, TensorInTwoShards) {
  RunPython(R"(
st.save(os.path.join(OUT, "ckpt", "model-00002-of-00002.safetensors"), {
    "pooler.dense.weight": ("F16", [1, 2], [9, 10]),
    "position_ids": ("I64", [1, 3], [0, 1, 2]),
    "embeddings.word_embeddings.weight": ("F32", [2, 2], [1, 2, 3, 4]),
})
)");
  const absl::Status s = Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              HasSubstr("tensor 'embeddings.word_embeddings.weight' is in two "
                        "shards, '" +
                        Shard(1) + "' and '" + Shard(2) + "'"));
}

TEST_F(ShardRefusalTest, TensorInAShardButNotInTheWeightMap) {
  index_["weight_map"].erase("position_ids");
  SaveIndex();
  const absl::Status s = Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("tensor 'position_ids' is in shard '" +
                                     Shard(2) + "' but not in the weight_map"));
}

TEST_F(ShardRefusalTest, TensorMappedToTheOtherShard) {
  index_["weight_map"]["position_ids"] = Shard(1);
  SaveIndex();
  const absl::Status s = Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              HasSubstr("tensor 'position_ids' is in shard '" + Shard(2) +
                        "' but the weight_map puts it in '" + Shard(1) + "'"));
}

TEST_F(ShardRefusalTest, MissingShardFile) {
  fs::remove(Path("ckpt/" + Shard(2)));
  const absl::Status s = Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("model.safetensors.index.json: shard '" +
                              Shard(2) + "' (holding tensor "),
                    HasSubstr("does not exist")));
}

TEST_F(ShardRefusalTest, ShardOutsideTheDirectory) {
  index_["weight_map"]["position_ids"] = "../" + Shard(2);
  SaveIndex();
  const absl::Status s = Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              HasSubstr("tensor 'position_ids' maps to \"../" + Shard(2) +
                        "\", not a file name in the index's directory"));
}

TEST_F(ShardRefusalTest, RepeatedWeightMapEntryOrBadIndex) {
  WriteAll(index_path_,
           absl::StrCat(R"({"weight_map": {"position_ids": ")", Shard(2),
                        R"(", "position_ids": ")", Shard(1), R"("}})"));
  absl::Status s = Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      s.message(),
      HasSubstr("tensor 'position_ids' appears twice in the weight_map"));

  WriteAll(index_path_, R"({"metadata": {}})");
  s = Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("no \"weight_map\" object"));

  WriteAll(index_path_, "{");
  s = Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              HasSubstr("model.safetensors.index.json is not valid JSON"));
}

TEST_F(ShardRefusalTest, CorruptShardIsNamed) {
  const std::string shard = Path("ckpt/" + Shard(1));
  fs::resize_file(shard, fs::file_size(shard) - 1);
  const absl::Status s = Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(Shard(1) + ": tensor '"), HasSubstr("run past")));
}

// --- writing ---

struct Written {
  std::vector<float> f32 = {1.0f,
                            -2.5f,
                            0.1f,
                            -0.0f,
                            std::numeric_limits<float>::infinity(),
                            std::ldexp(1.0f, -149)};
  std::vector<uint16_t> f16 = {0x3c00, 0xc100, 0x7bff, 0x0001, 0x8000};
  std::vector<uint16_t> bf16 = {0x4049, 0xc020, 0x0001, 0x7f7f};
  std::vector<int64_t> i64 = {0, -1, std::numeric_limits<int64_t>::min(), 42};
  std::vector<uint8_t> flags = {1, 0, 1};
  std::vector<uint8_t> f32_bytes = RawBytes(f32);
  std::vector<uint8_t> f16_bytes = RawBytes(f16);
  std::vector<uint8_t> bf16_bytes = RawBytes(bf16);
  std::vector<uint8_t> i64_bytes = RawBytes(i64);

  std::vector<SafetensorsTensorData> Tensors() const {
    return {
        {"vit.encoder.layer.0.attention.attention.query.weight",
         SafetensorsDtype::kF32,
         {2, 3},
         f32_bytes},
        {"classifier.weight", SafetensorsDtype::kF16, {5}, f16_bytes},
        {"a.bf16", SafetensorsDtype::kBF16, {2, 2}, bf16_bytes},
        {"position_ids", SafetensorsDtype::kI64, {1, 4}, i64_bytes},
        {"mask", SafetensorsDtype::kBool, {3}, flags},
        {"empty", SafetensorsDtype::kF32, {0}, {}},
    };
  }
};

const std::map<std::string, std::string> kMetadata = {{"format", "pt"},
                                                      {"layerfl.round", "12"}};

TEST_F(SafetensorsTest, CppWriteReadRoundTripIsBitIdentical) {
  const Written w;
  const std::vector<SafetensorsTensorData> tensors = w.Tensors();
  const std::string path = Path("written.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, kMetadata).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), kMetadata);
  ASSERT_EQ((*file)->tensors().size(), tensors.size());
  for (const SafetensorsTensorData& t : tensors) {
    const SafetensorsTensorInfo* info = (*file)->Find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->dtype, t.dtype) << t.name;
    EXPECT_EQ(info->shape, t.shape) << t.name;
    auto bytes = (*file)->Bytes(t.name);
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(std::vector<uint8_t>(bytes->begin(), bytes->end()),
              std::vector<uint8_t>(t.data.begin(), t.data.end()))
        << t.name;
  }
  auto f32 = (*file)->ReadFloat32(
      "vit.encoder.layer.0.attention.attention.query.weight");
  ASSERT_TRUE(f32.ok());
  EXPECT_EQ(BitsOf(*f32), BitsOf(w.f32));
  EXPECT_EQ(*(*file)->ReadInt64("position_ids"), w.i64);
  // Upstream order: I64, F32 (by name), BF16, F16, BOOL.
  std::vector<std::string> order;
  for (const SafetensorsTensorInfo& t : (*file)->tensors())
    order.push_back(t.name);
  EXPECT_THAT(
      order, ElementsAre("position_ids", "empty",
                         "vit.encoder.layer.0.attention.attention.query.weight",
                         "a.bf16", "classifier.weight", "mask"));
}

TEST_F(SafetensorsTest, CppWriteIsReadByPythonBitIdentical) {
  const Written w;
  const std::vector<SafetensorsTensorData> tensors = w.Tensors();
  const std::string path = Path("written.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, kMetadata).ok());
  // Python's independent reader checks the layout; its writer, given what it
  // read, must produce the same bytes.
  const std::string out = RunPython(R"(
path = os.path.join(OUT, "written.safetensors")
tensors, metadata = st.load(path)
again = st.serialize({n: (t.dtype, t.shape, t.data) for n, t in tensors.items()}, metadata)
print(json.dumps({
    "order": list(tensors),
    "metadata": metadata,
    "tensors": {n: {"dtype": t.dtype, "shape": t.shape, "hex": t.data.hex()}
                for n, t in tensors.items()},
    "same_bytes": again == open(path, "rb").read(),
    "f32": [struct.unpack("<I", struct.pack("<f", v))[0] for v in
            tensors["vit.encoder.layer.0.attention.attention.query.weight"].values()],
    "i64": tensors["position_ids"].values(),
}))
)");
  const nlohmann::json got =
      nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(got.is_discarded()) << out;
  EXPECT_TRUE(got.at("same_bytes").get<bool>());
  EXPECT_EQ((got.at("metadata").get<std::map<std::string, std::string>>()),
            kMetadata);
  EXPECT_EQ(got.at("order").get<std::vector<std::string>>(),
            (std::vector<std::string>{
                "position_ids", "empty",
                "vit.encoder.layer.0.attention.attention.query.weight",
                "a.bf16", "classifier.weight", "mask"}));
  for (const SafetensorsTensorData& t : tensors) {
    const nlohmann::json& p = got.at("tensors").at(t.name);
    EXPECT_EQ(p.at("dtype").get<std::string>(), SafetensorsDtypeName(t.dtype))
        << t.name;
    EXPECT_EQ(p.at("shape").get<std::vector<int64_t>>(), t.shape) << t.name;
    EXPECT_EQ(p.at("hex").get<std::string>(),
              absl::BytesToHexString(absl::string_view(
                  reinterpret_cast<const char*>(t.data.data()), t.data.size())))
        << t.name;
  }
  EXPECT_EQ(got.at("f32").get<std::vector<uint32_t>>(), BitsOf(w.f32));
  EXPECT_EQ(got.at("i64").get<std::vector<int64_t>>(), w.i64);
}

TEST_F(SafetensorsTest, PythonAndCppWritersAgreeByteForByte) {
  RunPython(kDtypeFixture);
  auto file = SafetensorsFile::Open(Path("dtypes.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<SafetensorsTensorData> copy;
  for (const SafetensorsTensorInfo& t : (*file)->tensors()) {
    copy.push_back({t.name, t.dtype, t.shape, *(*file)->Bytes(t.name)});
  }
  ASSERT_TRUE(
      WriteSafetensors(Path("copy.safetensors"), copy, (*file)->metadata())
          .ok());
  EXPECT_EQ(ReadAll(Path("copy.safetensors")),
            ReadAll(Path("dtypes.safetensors")));
}

// Byte layouts from upstream's own serializer tests.
TEST_F(SafetensorsTest, WriterMatchesUpstreamSerializerBytes) {
  const std::vector<float> values = {0, 1, 2, 3, 4, 5};
  const std::vector<uint8_t> data = RawBytes(values);
  const std::string data_text(data.begin(), data.end());

  ASSERT_TRUE(
      WriteSafetensors(Path("a.safetensors"),
                       {{"attn.0", SafetensorsDtype::kF32, {1, 2, 3}, data}})
          .ok());
  EXPECT_EQ(
      ReadAll(Path("a.safetensors")),
      LengthPrefix(64) +
          R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})" +
          data_text);

  ASSERT_TRUE(
      WriteSafetensors(Path("b.safetensors"),
                       {{"attn0", SafetensorsDtype::kF32, {1, 1, 2, 3}, data}})
          .ok());
  EXPECT_EQ(
      ReadAll(Path("b.safetensors")),
      LengthPrefix(72) +
          R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       )" +
          data_text);

  ASSERT_TRUE(
      WriteSafetensors(Path("c.safetensors"), {}, {{"framework", "pt"}}).ok());
  EXPECT_EQ(ReadAll(Path("c.safetensors")),
            LengthPrefix(40) + R"({"__metadata__":{"framework":"pt"}}     )");

  ASSERT_TRUE(WriteSafetensors(Path("d.safetensors"), {}).ok());
  EXPECT_EQ(ReadAll(Path("d.safetensors")), LengthPrefix(8) + "{}      ");
}

TEST_F(SafetensorsTest, WriterRefusesBadTensorsAndLeavesTheOldFile) {
  const std::string path = Path("keep.safetensors");
  const std::vector<float> one = {1.0f};
  ASSERT_TRUE(WriteSafetensors(
                  path, {{"w", SafetensorsDtype::kF32, {1}, RawBytes(one)}})
                  .ok());
  const std::string before = ReadAll(path);

  const std::vector<uint8_t> four(4, 0);
  struct Case {
    std::vector<SafetensorsTensorData> tensors;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{{"w", SafetensorsDtype::kF32, {2}, four}},
       "tensor 'w': 4 bytes of data, its shape [2] in F32 needs 8"},
      {{{"w", SafetensorsDtype::kU8, {4}, four},
        {"w", SafetensorsDtype::kF32, {1}, four}},
       "tensor 'w': given twice"},
      {{{"__metadata__", SafetensorsDtype::kU8, {4}, four}},
       "not a usable tensor name"},
      {{{"", SafetensorsDtype::kU8, {4}, four}}, "not a usable tensor name"},
      {{{"neg", SafetensorsDtype::kU8, {-4}, four}},
       "tensor 'neg': shape [-4] has a negative"},
      {{{"bad\xff", SafetensorsDtype::kU8, {4}, four}},
       "the name is not valid UTF-8"},
  };
  for (const Case& c : cases) {
    const absl::Status s = WriteSafetensors(path, c.tensors);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(),
                AllOf(HasSubstr("keep.safetensors"), HasSubstr(c.says)));
  }
  absl::Status s = WriteSafetensors(path, {}, {{"k", "\xc3"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("__metadata__ key 'k'"));

  s = WriteSafetensors(Path("no/such/dir/x.safetensors"), {});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("no/such/dir/x.safetensors"));

  EXPECT_EQ(ReadAll(path), before);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir_))
    left.push_back(e.path().filename().string());
  EXPECT_THAT(left, ElementsAre("keep.safetensors"));
}

TEST_F(SafetensorsTest, ReplacingAFileKeepsOpenMappingsIntact) {
  const std::string path = Path("model.safetensors");
  const std::vector<float> old_values = {1.0f, 2.0f};
  const std::vector<float> new_values = {3.0f, 4.0f, 5.0f};
  ASSERT_TRUE(
      WriteSafetensors(
          path, {{"w", SafetensorsDtype::kF32, {2}, RawBytes(old_values)}})
          .ok());
  auto old_file = SafetensorsFile::Open(path);
  ASSERT_TRUE(old_file.ok());
  ASSERT_TRUE(
      WriteSafetensors(
          path, {{"w", SafetensorsDtype::kF32, {3}, RawBytes(new_values)}})
          .ok());
  EXPECT_EQ(*(*old_file)->ReadFloat32("w"), old_values);
  auto new_file = SafetensorsFile::Open(path);
  ASSERT_TRUE(new_file.ok());
  EXPECT_EQ(*(*new_file)->ReadFloat32("w"), new_values);
}

TEST_F(SafetensorsTest, WritesFloat32TensorsAsF32F16OrBF16) {
  const std::vector<Tensor32> tensors = {
      {"w", {2, 2}, {1.0f, 3.14159265f, 70000.0f, std::ldexp(1.0f, -30)}},
      {"b", {1}, {-0.1f}},
  };
  for (SafetensorsDtype dtype : {SafetensorsDtype::kF32, SafetensorsDtype::kF16,
                                 SafetensorsDtype::kBF16}) {
    SCOPED_TRACE(std::string(SafetensorsDtypeName(dtype)));
    const std::string path = Path("t32.safetensors");
    ASSERT_TRUE(WriteSafetensorsFloat32(path, tensors, kMetadata, dtype).ok());
    auto file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->metadata(), kMetadata);
    for (const Tensor32& t : tensors) {
      EXPECT_EQ((*file)->Find(t.name)->dtype, dtype);
      EXPECT_EQ((*file)->Find(t.name)->shape, t.shape);
      std::vector<float> expected;
      for (float v : t.values) {
        expected.push_back(dtype == SafetensorsDtype::kF32 ? v
                           : dtype == SafetensorsDtype::kF16
                               ? HalfToFloat(FloatToHalf(v))
                               : BFloat16ToFloat(FloatToBFloat16(v)));
      }
      EXPECT_EQ(BitsOf(*(*file)->ReadFloat32(t.name)), BitsOf(expected))
          << t.name;
    }
  }
  // 70000 overflows float16 to infinity; 2^-30 underflows it to zero.
  ASSERT_TRUE(WriteSafetensorsFloat32(Path("h.safetensors"), tensors, {},
                                      SafetensorsDtype::kF16)
                  .ok());
  auto half = SafetensorsFile::Open(Path("h.safetensors"));
  ASSERT_TRUE(half.ok());
  EXPECT_THAT(*(*half)->ReadFloat32("w"),
              ElementsAre(1.0f, 3.140625f,
                          std::numeric_limits<float>::infinity(), 0.0f));

  const absl::Status s = WriteSafetensorsFloat32(Path("x.safetensors"), tensors,
                                                 {}, SafetensorsDtype::kI64);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("cannot be written as I64"));
}

// Every truncation is refused; every one-byte change of the header is either
// refused or yields tensors that lie inside the file.
TEST_F(SafetensorsTest, CorruptionsAreRefusedOrStayInBounds) {
  const Written w;
  const std::string path = Path("valid.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, w.Tensors(), kMetadata).ok());
  const std::string valid = ReadAll(path);
  const std::string bad = Path("corrupt.safetensors");
  for (size_t len = 0; len < valid.size(); ++len) {
    WriteAll(bad, valid.substr(0, len));
    EXPECT_FALSE(SafetensorsFile::Open(bad).ok()) << "truncated to " << len;
  }
  const size_t header_end =
      8 + static_cast<uint8_t>(valid[0]) + 256 * static_cast<uint8_t>(valid[1]);
  ASSERT_LT(header_end, valid.size());
  for (size_t pos = 0; pos < header_end; ++pos) {
    for (const char c : {'0', '9', '[', '"', ' ', '\xff', '\0'}) {
      std::string mutated = valid;
      if (mutated[pos] == c) continue;
      mutated[pos] = c;
      WriteAll(bad, mutated);
      auto file = SafetensorsFile::Open(bad);
      if (!file.ok()) continue;
      for (const SafetensorsTensorInfo& t : (*file)->tensors()) {
        EXPECT_LE(8 + (*file)->header_size() + t.end, mutated.size())
            << pos << " " << c;
        if (t.dtype == SafetensorsDtype::kF32) {
          EXPECT_TRUE((*file)->ReadFloat32(t.name).ok());
        }
      }
    }
  }
}

TEST(SafetensorsDtypeTest, NamesSizesAndOrderFollowUpstream) {
  EXPECT_EQ(ParseSafetensorsDtype("BF16"), SafetensorsDtype::kBF16);
  EXPECT_EQ(ParseSafetensorsDtype("F8_E4M3"), SafetensorsDtype::kF8E4M3);
  EXPECT_EQ(ParseSafetensorsDtype("F33"), std::nullopt);
  EXPECT_EQ(ParseSafetensorsDtype("f32"), std::nullopt);
  EXPECT_EQ(ParseSafetensorsDtype("F4"), std::nullopt);
  EXPECT_EQ(SafetensorsDtypeName(SafetensorsDtype::kBool), "BOOL");
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kC64), 8u);
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kBF16), 2u);
  for (int i = 0; i <= static_cast<int>(SafetensorsDtype::kU64); ++i) {
    const auto dtype = static_cast<SafetensorsDtype>(i);
    EXPECT_EQ(ParseSafetensorsDtype(SafetensorsDtypeName(dtype)), dtype);
  }
}

}  // namespace
}  // namespace layerfl
