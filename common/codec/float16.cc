#include "common/codec/float16.h"

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace layerfl {
namespace {

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline void Store16(unsigned char* p, uint16_t v) {
  p[0] = static_cast<unsigned char>(v & 0xff);
  p[1] = static_cast<unsigned char>(v >> 8);
}

inline uint16_t Load16(const unsigned char* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

}  // namespace

// After F. Giesen's float_to_half_fast3_rtne: the subnormal range is rounded
// by a float addition that aligns the 10 mantissa bits at the bottom (the
// addition itself rounds to nearest even); normal values round by adding
// 0xfff plus the lowest kept bit before truncating 13 bits.
uint16_t FloatToHalf(float f) {
  const uint32_t f32_infinity = 255u << 23;
  const uint32_t f16_max = (127u + 16u) << 23;  // 65536: rounds to infinity
  const uint32_t denorm_magic_bits = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  uint32_t u = Bits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint16_t out;
  if (u >= f16_max) {
    out = u > f32_infinity ? 0x7e00 : 0x7c00;  // NaN -> quiet NaN; else Inf
  } else if (u < (113u << 23)) {  // below 2^-14: subnormal or zero
    const float aligned = FromBits(u) + FromBits(denorm_magic_bits);
    out = static_cast<uint16_t>(Bits(aligned) - denorm_magic_bits);
  } else {
    const uint32_t mant_odd = (u >> 13) & 1u;
    u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;
    u += mant_odd;
    out = static_cast<uint16_t>(u >> 13);
  }
  return static_cast<uint16_t>(out | (sign >> 16));
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float32.
    const float v = static_cast<float>(mant) * FromBits(103u << 23);
    return FromBits(Bits(v) | sign);
  }
  if (exp == 31) return FromBits(sign | 0x7f800000u | (mant << 13));
  return FromBits(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t FloatToBFloat16(float f) {
  uint32_t u = Bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float BFloat16ToFloat(uint16_t b) {
  return FromBits(static_cast<uint32_t>(b) << 16);
}

#if defined(__x86_64__)
namespace {

// F16C converts with the IEEE rounding the scalar code implements (round to
// nearest even, overflow to Inf, subnormals kept); NaNs stay NaN (their
// payload may differ from the scalar code's canonical 0x7e00).
bool HasF16c() {
  static const bool has = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return has;
}

__attribute__((target("avx,f16c"))) size_t FloatsToHalvesF16c(
    const float* in, size_t n, unsigned char* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), h);
  }
  return i;
}

__attribute__((target("avx,f16c"))) size_t HalvesToFloatsF16c(
    const unsigned char* in, size_t n, float* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  return i;
}

}  // namespace
#endif

void FloatsToHalves(const float* in, size_t n, unsigned char* out) {
  size_t i = 0;
#if defined(__x86_64__)
  if (HasF16c()) i = FloatsToHalvesF16c(in, n, out);
#endif
  for (; i < n; ++i) Store16(out + 2 * i, FloatToHalf(in[i]));
}

void HalvesToFloats(const unsigned char* in, size_t n, float* out) {
  size_t i = 0;
#if defined(__x86_64__)
  if (HasF16c()) i = HalvesToFloatsF16c(in, n, out);
#endif
  for (; i < n; ++i) out[i] = HalfToFloat(Load16(in + 2 * i));
}

void FloatsToBFloat16s(const float* in, size_t n, unsigned char* out) {
  for (size_t i = 0; i < n; ++i) Store16(out + 2 * i, FloatToBFloat16(in[i]));
}

void BFloat16sToFloats(const unsigned char* in, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = BFloat16ToFloat(Load16(in + 2 * i));
}

}  // namespace layerfl
