// CRC-32 (zlib's polynomial, reflected 0xEDB88320). On x86-64 CPUs with
// PCLMULQDQ, blocks of 64+ bytes are folded with carry-less multiplication
// (Intel, "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ";
// the constants and reduction follow Chromium's zlib crc32_simd.c); the tail
// and other CPUs use zlib. Same results either way (tests/codec_test.cc).
#include <algorithm>
#include <cstdint>

#include <zlib.h>

#include "common/codec/codec.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace layerfl {
namespace {

uint32_t ZlibCrc32(const unsigned char* p, size_t n, uint32_t crc) {
  uLong c = crc;
  while (n > 0) {
    const uInt k = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = crc32(c, p, k);
    p += k;
    n -= k;
  }
  return static_cast<uint32_t>(c);
}

#if defined(__x86_64__)

alignas(16) const uint64_t kK1K2[] = {0x0154442bd4, 0x01c6e41596};
alignas(16) const uint64_t kK3K4[] = {0x01751997d0, 0x00ccaa009e};
alignas(16) const uint64_t kK5K0[] = {0x0163cd6124, 0x0000000000};
alignas(16) const uint64_t kPoly[] = {0x01db710641, 0x01f7011641};

// `len` >= 64 and a multiple of 16; `crc` is the running (inverted) state.
__attribute__((target("pclmul,sse4.1"))) uint32_t FoldCrc32(
    const unsigned char* buf, size_t len, uint32_t crc) {
  const auto load = [](const unsigned char* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  };
  __m128i x1 = load(buf);
  __m128i x2 = load(buf + 16);
  __m128i x3 = load(buf + 32);
  __m128i x4 = load(buf + 48);
  x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128(static_cast<int>(crc)));
  __m128i x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(kK1K2));
  buf += 64;
  len -= 64;
  while (len >= 64) {
    const __m128i x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    const __m128i x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
    const __m128i x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
    const __m128i x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
    x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
    x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), load(buf));
    x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), load(buf + 16));
    x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), load(buf + 32));
    x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), load(buf + 48));
    buf += 64;
    len -= 64;
  }
  // Fold the four lanes into one.
  x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(kK3K4));
  for (const __m128i next : {x2, x3, x4}) {
    const __m128i x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, next), x5);
  }
  while (len >= 16) {
    const __m128i x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, load(buf)), x5);
    buf += 16;
    len -= 16;
  }
  // 128 -> 64 bits.
  x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
  x3 = _mm_setr_epi32(~0, 0, ~0, 0);
  x1 = _mm_srli_si128(x1, 8);
  x1 = _mm_xor_si128(x1, x2);
  x0 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(kK5K0));
  x2 = _mm_srli_si128(x1, 4);
  x1 = _mm_and_si128(x1, x3);
  x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
  x1 = _mm_xor_si128(x1, x2);
  // Barrett reduction to 32 bits.
  x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(kPoly));
  x2 = _mm_and_si128(x1, x3);
  x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
  x2 = _mm_and_si128(x2, x3);
  x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
  x1 = _mm_xor_si128(x1, x2);
  return static_cast<uint32_t>(_mm_extract_epi32(x1, 1));
}

bool HasClmul() {
  static const bool has = __builtin_cpu_supports("pclmul") &&
                          __builtin_cpu_supports("sse4.1");
  return has;
}

#endif  // __x86_64__

}  // namespace

uint32_t Crc32(absl::string_view data, uint32_t crc) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  size_t n = data.size();
#if defined(__x86_64__)
  if (n >= 64 && HasClmul()) {
    const size_t blocks = n & ~size_t{15};
    crc = ~FoldCrc32(p, blocks, ~crc);
    p += blocks;
    n -= blocks;
  }
#endif
  return n == 0 ? crc : ZlibCrc32(p, n, crc);
}

uint32_t Crc32Portable(absl::string_view data, uint32_t crc) {
  return ZlibCrc32(reinterpret_cast<const unsigned char*>(data.data()),
                   data.size(), crc);
}

}  // namespace layerfl
