// The tensor wire codec: round trips, float16/bfloat16 on hand-computed
// values, and every kind of damaged stream refused with its reason.
#include "common/codec/codec.h"

#include <cmath>
#include <cstring>
#include <limits>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/codec/float16.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(Float16Test, HandValuesRoundToNearestEven) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(0.5f), 0x3800);
  EXPECT_EQ(FloatToHalf(0.1f), 0x2e66);      // 0.0999755859375
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);  // largest finite
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);  // below the halfway point
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // halfway: ties to even = Inf
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie -> even (0)
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -26)), 0x0001);  // 1.5 ulp/2 rounds up
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: tie -> 2
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: even mantissa (1) wins.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3*2^-11 is halfway between 0x3c01 and 0x3c02: even (0x3c02) wins.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(3.0f, -11)), 0x3c02);
  // Just above the halfway point rounds up.
  EXPECT_EQ(FloatToHalf(FromBits(Bits(1.0f + std::ldexp(1.0f, -11)) + 1)), 0x3c01);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
}

TEST(Float16Test, HalfToFloatIsExact) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(HalfToFloat(0x2e66), 0.0999755859375f);
  EXPECT_EQ(Bits(HalfToFloat(0x8000)), 0x80000000u);
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  // Every finite half survives half -> float -> half.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(FloatToHalf(HalfToFloat(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(Float16Test, ArrayConversionEqualsScalar) {
  // Hand-picked edge cases plus a sweep of bit patterns over every exponent.
  std::vector<float> in = {0.0f, -0.0f, 1.0f, 65504.0f, 65519.0f, 65520.0f,
                           1e6f, -1e6f, std::ldexp(1.0f, -24), std::ldexp(1.0f, -25),
                           std::ldexp(3.0f, -26), 1.0f + std::ldexp(1.0f, -11),
                           1.0f + std::ldexp(3.0f, -11),
                           std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::denorm_min()};
  for (uint32_t u = 0; u < 0xffffffffu - 65535u * 7919u; u += 65535u * 7919u / 13u) {
    if ((u & 0x7f800000u) != 0x7f800000u) in.push_back(FromBits(u));
  }
  std::vector<unsigned char> halves(2 * in.size());
  FloatsToHalves(in.data(), in.size(), halves.data());
  std::vector<float> back(in.size());
  HalvesToFloats(halves.data(), in.size(), back.data());
  for (size_t i = 0; i < in.size(); ++i) {
    const uint16_t h = static_cast<uint16_t>(halves[2 * i] | (halves[2 * i + 1] << 8));
    ASSERT_EQ(h, FloatToHalf(in[i])) << in[i];
    ASSERT_EQ(Bits(back[i]), Bits(HalfToFloat(h))) << in[i];
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  unsigned char h[2];
  FloatsToHalves(&nan, 1, h);
  float f;
  HalvesToFloats(h, 1, &f);
  EXPECT_TRUE(std::isnan(f));
}

TEST(BFloat16Test, HandValuesRoundToNearestEven) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16(3.0f), 0x4040);
  EXPECT_EQ(FloatToBFloat16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBFloat16(3.14159265f), 0x4049);  // 0x40490fdb rounds down
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even (1) wins.
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3*2^-8 is halfway between 0x3f81 and 0x3f82: even wins.
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(3.0f, -8)), 0x3f82);
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7f80);  // Inf
  EXPECT_EQ(FloatToBFloat16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isnan(
      BFloat16ToFloat(FloatToBFloat16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload sits in the low bits only must not become Inf.
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(FromBits(0x7f800001)))));
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xc040), -3.0f);
}

ModelWeights TestModel() {
  ModelWeights m;
  int v = 0;
  auto tensor = [&](std::string name, std::vector<int64_t> shape) {
    Tensor32 t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    for (int64_t i = 0; i < n; ++i) t.values.push_back(0.001f * (v++ % 977) - 0.3f);
    return t;
  };
  m.layers.push_back({"embed", 3, {tensor("embed.w", {10, 7}), tensor("embed.b", {7})}});
  m.layers.push_back({"block0", 1, {tensor("b0.w", {33, 5}), tensor("b0.b", {5}),
                                    tensor("b0.s", {})}});
  m.layers.push_back({"head", 0, {tensor("head.w", {4, 3})}});
  return m;
}

std::vector<LayerSource> Sources(const ModelWeights& m) {
  std::vector<LayerSource> s;
  for (const LayerWeights& l : m.layers) s.push_back(SourceOf(l));
  return s;
}

std::vector<ExpectedLayer> Expect(const ModelWeights& m, bool known = true) {
  std::vector<ExpectedLayer> e;
  for (const LayerWeights& l : m.layers) {
    ExpectedLayer x;
    x.layer = l.group;
    if (known) x.layout = LayoutOf(l.group, l.tensors);
    e.push_back(std::move(x));
  }
  return e;
}

std::vector<std::string> Names(const ModelWeights& m) {
  std::vector<std::string> n;
  for (const LayerWeights& l : m.layers) n.push_back(l.group);
  return n;
}

absl::Status DecodeAll(const std::vector<ChunkFrame>& frames,
                       LayerStreamDecoder& decoder) {
  for (const ChunkFrame& f : frames) {
    absl::Status s = decoder.Add(f);
    if (!s.ok()) return s;
  }
  return decoder.Finish();
}

TEST(CodecTest, RoundTripFloat32IsBitExactAcrossChunkSizes) {
  const ModelWeights m = TestModel();
  for (int64_t chunk : {4, 12, 100, 256, 1 << 20}) {
    std::vector<ChunkFrame> frames =
        EncodeLayers(Sources(m), Encoding::kFloat32, chunk, /*with_specs=*/true);
    for (const ChunkFrame& f : frames) {
      EXPECT_LE(static_cast<int64_t>(f.data.size()), std::max<int64_t>(4, chunk));
      EXPECT_EQ(f.data.size() % 4, 0u);
    }
    LayerStreamDecoder decoder(Expect(m, /*known=*/false), {}, DecoderLimits());
    ASSERT_TRUE(DecodeAll(frames, decoder).ok()) << chunk;
    std::vector<LayerWeights> got = decoder.TakeLayers();
    ASSERT_EQ(got.size(), m.layers.size());
    for (size_t l = 0; l < got.size(); ++l) {
      EXPECT_EQ(got[l].group, m.layers[l].group);
      EXPECT_EQ(got[l].version, m.layers[l].version);
      ASSERT_EQ(got[l].tensors.size(), m.layers[l].tensors.size());
      for (size_t t = 0; t < got[l].tensors.size(); ++t) {
        const Tensor32& a = got[l].tensors[t];
        const Tensor32& b = m.layers[l].tensors[t];
        EXPECT_EQ(a.name, b.name);
        EXPECT_EQ(a.shape, b.shape);
        ASSERT_EQ(a.values.size(), b.values.size());
        EXPECT_EQ(0, std::memcmp(a.values.data(), b.values.data(),
                                 a.values.size() * 4));
      }
    }
    EXPECT_EQ(decoder.payload_bytes(), m.numel() * 4);
  }
}

TEST(CodecTest, RoundTripHalfEncodingsMatchTheScalarConversion) {
  const ModelWeights m = TestModel();
  for (Encoding e : {Encoding::kFloat16, Encoding::kBFloat16}) {
    std::vector<ChunkFrame> frames = EncodeLayers(Sources(m), e, 14, false);
    DecoderLimits limits;
    limits.encoding = e;
    LayerStreamDecoder decoder(Expect(m), Names(m), limits);
    ASSERT_TRUE(DecodeAll(frames, decoder).ok());
    EXPECT_EQ(decoder.payload_bytes(), m.numel() * 2);
    std::vector<LayerWeights> got = decoder.TakeLayers();
    for (size_t l = 0; l < got.size(); ++l) {
      for (size_t t = 0; t < got[l].tensors.size(); ++t) {
        for (size_t i = 0; i < got[l].tensors[t].values.size(); ++i) {
          const float x = m.layers[l].tensors[t].values[i];
          const float want = e == Encoding::kFloat16
                                 ? HalfToFloat(FloatToHalf(x))
                                 : BFloat16ToFloat(FloatToBFloat16(x));
          ASSERT_EQ(got[l].tensors[t].values[i], want);
        }
      }
    }
  }
}

TEST(CodecTest, UploadWithoutSpecsNeedsTheLayout) {
  const ModelWeights m = TestModel();
  std::vector<ChunkFrame> frames =
      EncodeLayers(Sources(m), Encoding::kFloat32, 64, /*with_specs=*/false);
  LayerStreamDecoder unknown(Expect(m, false), {}, DecoderLimits());
  absl::Status s = DecodeAll(frames, unknown);
  EXPECT_EQ(WireErrorOf(s), WireError::kWrongShape) << s;
}

TEST(CodecTest, EmptyStreamAndEmptyLayer) {
  LayerStreamDecoder none({}, {}, DecoderLimits());
  EXPECT_TRUE(none.Finish().ok());
  ModelWeights m;
  m.layers.push_back({"empty", 2, {}});
  std::vector<ChunkFrame> frames = EncodeLayers(Sources(m), Encoding::kFloat32, 64, true);
  ASSERT_EQ(frames.size(), 1u);
  LayerStreamDecoder d(Expect(m), Names(m), DecoderLimits());
  ASSERT_TRUE(DecodeAll(frames, d).ok());
  EXPECT_EQ(d.TakeLayers().size(), 1u);
}

// Each corruption of a valid stream and the reason it must be refused with.
class CorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    m_ = TestModel();
    frames_ = EncodeLayers(Sources(m_), Encoding::kFloat32, 64, true);
    ASSERT_GT(frames_.size(), 4u);
  }
  absl::Status Decode(const std::vector<ChunkFrame>& frames,
                      DecoderLimits limits = DecoderLimits()) {
    LayerStreamDecoder d(Expect(m_), Names(m_), limits);
    absl::Status s = DecodeAll(frames, d);
    // A refused decoder stays refused.
    if (!s.ok()) {
      EXPECT_EQ(d.Finish(), s);
    }
    return s;
  }
  void ExpectRefused(const std::vector<ChunkFrame>& frames, WireError want,
                     const std::string& detail,
                     DecoderLimits limits = DecoderLimits()) {
    absl::Status s = Decode(frames, limits);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(WireErrorOf(s), want) << s;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(std::string(WireErrorName(want)) + ": "));
    EXPECT_THAT(std::string(s.message()), HasSubstr(detail));
  }
  ModelWeights m_;
  std::vector<ChunkFrame> frames_;
};

TEST_F(CorruptionTest, IntactStreamDecodes) { EXPECT_TRUE(Decode(frames_).ok()); }

TEST_F(CorruptionTest, FlippedByteIsBadChecksum) {
  auto f = frames_;
  f[2].data[5] ^= 0x10;
  ExpectRefused(f, WireError::kBadChecksum, "CRC-32");
  EXPECT_EQ(Decode(f).code(), absl::StatusCode::kDataLoss);
}

TEST_F(CorruptionTest, WrongChecksumIsBadChecksum) {
  auto f = frames_;
  f[1].crc32 ^= 1;
  ExpectRefused(f, WireError::kBadChecksum, "embed");
}

TEST_F(CorruptionTest, ShortChunkIsWrongLengthOrOffset) {
  auto f = frames_;
  f[0].data.resize(f[0].data.size() - 2);  // not whole float32 values
  f[0].crc32 = Crc32(f[0].data);
  ExpectRefused(f, WireError::kWrongLength, "4-byte values");
}

TEST_F(CorruptionTest, PayloadLengthDisagreeingWithShapeIsWrongLength) {
  auto f = frames_;
  f[0].header->payload_bytes += 4;
  ExpectRefused(f, WireError::kWrongLength, "announces");
}

TEST_F(CorruptionTest, ChunkPastTheLayerEndIsWrongLength) {
  auto f = frames_;
  // The last chunk of "embed" gets 4 more bytes than the layer holds.
  size_t last = 0;
  while (!f[last + 1].header.has_value()) ++last;
  f[last].data += std::string(4, '\0');
  f[last].crc32 = Crc32(f[last].data);
  ExpectRefused(f, WireError::kWrongLength, "in a payload of");
}

TEST_F(CorruptionTest, WrongShapeNamesTheTensor) {
  auto f = frames_;
  f[0].header->tensors[1].shape = {8};
  ExpectRefused(f, WireError::kWrongShape, "embed.b");
}

TEST_F(CorruptionTest, WrongLayoutFingerprintIsWrongShape) {
  auto f = frames_;
  f[0].header->tensors.clear();
  f[0].header->layout ^= 1;
  ExpectRefused(f, WireError::kWrongShape, "fingerprint");
}

TEST_F(CorruptionTest, UnknownLayer) {
  auto f = frames_;
  f[0].header->layer = "block7";
  ExpectRefused(f, WireError::kUnknownLayer, "block7");
}

TEST_F(CorruptionTest, KnownButUnannouncedLayer) {
  std::vector<ExpectedLayer> only_head = {Expect(m_)[2]};
  LayerStreamDecoder d(only_head, Names(m_), DecoderLimits());
  absl::Status s = DecodeAll(frames_, d);
  EXPECT_EQ(WireErrorOf(s), WireError::kUnexpectedLayer) << s;
}

TEST_F(CorruptionTest, TruncatedStream) {
  auto f = frames_;
  f.resize(f.size() - 2);  // head's only chunk and block0's last one
  ExpectRefused(f, WireError::kTruncated, "ended inside layer 'block0'");
  EXPECT_EQ(Decode(f).code(), absl::StatusCode::kDataLoss);
}

TEST_F(CorruptionTest, MissingLayer) {
  std::vector<ChunkFrame> f;
  for (const ChunkFrame& x : frames_) {
    if (x.header && x.header->layer == "head") break;
    f.push_back(x);
  }
  ExpectRefused(f, WireError::kTruncated, "'head' is missing");
}

TEST_F(CorruptionTest, LayerCutShortByTheNextHeader) {
  auto f = frames_;
  size_t i = 1;
  while (!f[i].header.has_value()) ++i;
  f.erase(f.begin() + i - 1);  // drop the last chunk of "embed"
  ExpectRefused(f, WireError::kTruncated, "next layer's header");
}

TEST_F(CorruptionTest, OversizedChunk) {
  DecoderLimits limits;
  limits.max_chunk_bytes = 32;
  ExpectRefused(frames_, WireError::kOversizedChunk, "at most 32", limits);
}

TEST_F(CorruptionTest, GapAndReorderAreOutOfOrder) {
  auto gap = frames_;
  gap.erase(gap.begin() + 1);
  ExpectRefused(gap, WireError::kOutOfOrder, "expected 64");
  auto swapped = frames_;
  std::swap(swapped[0], swapped[1]);
  ExpectRefused(swapped, WireError::kOutOfOrder, "without a layer header");
}

TEST_F(CorruptionTest, DuplicateLayer) {
  auto f = frames_;
  std::vector<ChunkFrame> again;
  for (const ChunkFrame& x : frames_) {
    if (x.header && x.header->layer == "block0") break;
    again.push_back(x);
  }
  f.insert(f.begin() + again.size(), again.begin(), again.end());
  ExpectRefused(f, WireError::kUnexpectedLayer, "sent twice");
}

TEST_F(CorruptionTest, WrongEncoding) {
  DecoderLimits limits;
  limits.encoding = Encoding::kFloat16;
  ExpectRefused(frames_, WireError::kBadEncoding, "float32", limits);
}

TEST_F(CorruptionTest, ChunkAfterTheEnd) {
  LayerStreamDecoder d(Expect(m_), Names(m_), DecoderLimits());
  ASSERT_TRUE(DecodeAll(frames_, d).ok());
  EXPECT_EQ(WireErrorOf(d.Add(frames_.back())), WireError::kOutOfOrder);
}

TEST(CodecTest, HostileShapeRefusedBeforeAllocating) {
  LayerHeader h;
  h.layer = "x";
  h.tensors = {{"t", {int64_t{1} << 40, int64_t{1} << 40}}};
  h.layout = LayoutFingerprint(h.tensors);
  h.payload_bytes = 4;
  LayerStreamDecoder d({{"x", std::nullopt}}, {}, DecoderLimits());
  EXPECT_EQ(WireErrorOf(d.Add(&h, 0, "", Crc32(""))), WireError::kWrongShape);
}

// Each layer under the per-layer cap, together past the stream's: the
// layer that passes it is refused before anything of it is allocated.
TEST(CodecTest, StreamPastItsTotalIsRefused) {
  DecoderLimits limits;
  limits.max_layer_numel = 1000;
  limits.max_total_numel = 2500;
  std::vector<ExpectedLayer> expected;
  for (const char* name : {"a", "b", "c"}) expected.push_back({name, std::nullopt});
  LayerStreamDecoder d(expected, {}, limits);
  for (const char* name : {"a", "b", "c"}) {
    LayerHeader h;
    h.layer = name;
    h.tensors = {{std::string(name) + ".w", {1000}}};
    h.layout = LayoutFingerprint(h.tensors);
    h.payload_bytes = 4000;
    const std::string data(4000, '\0');
    const absl::Status s = d.Add(&h, 0, data, Crc32(data));
    if (std::string(name) == "c") {
      EXPECT_EQ(WireErrorOf(s), WireError::kWrongShape) << s;
      EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("2500 values in all"));
    } else {
      EXPECT_TRUE(s.ok()) << s;
    }
  }
}

TEST(CodecTest, EncodingNamesParse) {
  for (Encoding e : {Encoding::kFloat32, Encoding::kFloat16, Encoding::kBFloat16}) {
    EXPECT_EQ(*ParseEncoding(EncodingName(e)), e);
  }
  EXPECT_FALSE(ParseEncoding("fp8").ok());
  EXPECT_EQ(Crc32("123456789"), 0xcbf43926u);  // the CRC-32 check value
}

TEST(CodecTest, FastCrc32EqualsZlibAtEveryLengthAndAlignment) {
  std::string bytes(5000, '\0');
  uint32_t x = 12345;
  for (char& c : bytes) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 16);
  }
  for (size_t len = 0; len < 1100; ++len) {
    for (size_t offset = 0; offset < 4; ++offset) {
      const absl::string_view piece(bytes.data() + offset, len);
      ASSERT_EQ(Crc32(piece, 0x5a5a5a5au), Crc32Portable(piece, 0x5a5a5a5au))
          << len << " at " << offset;
    }
  }
  // Continuing across pieces equals one pass.
  EXPECT_EQ(Crc32(absl::string_view(bytes).substr(1000), Crc32(bytes.substr(0, 1000))),
            Crc32(bytes));
}

}  // namespace
}  // namespace layerfl
