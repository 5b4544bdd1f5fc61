#ifndef LAYERFL_COMMON_CODEC_FLOAT16_H_
#define LAYERFL_COMMON_CODEC_FLOAT16_H_

// float32 <-> IEEE binary16 and bfloat16, round to nearest, ties to even,
// without any hardware or library support (torch-free, portable). Infinities
// and signed zeros are kept; NaN stays NaN (quiet); float32 values beyond the
// target's range round to infinity; values below the smallest binary16
// subnormal round to zero. Pure functions, thread-safe.

#include <cstddef>
#include <cstdint>

namespace layerfl {

uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBFloat16(float f);
float BFloat16ToFloat(uint16_t b);

// Array forms; `out` holds n elements. Unaligned byte buffers are fine for the
// 16-bit side (read and written as little-endian 2-byte values). The float16
// ones use the CPU's F16C instructions where available: same values as the
// scalar functions (NaN payloads aside).
void FloatsToHalves(const float* in, size_t n, unsigned char* out);
void HalvesToFloats(const unsigned char* in, size_t n, float* out);
void FloatsToBFloat16s(const float* in, size_t n, unsigned char* out);
void BFloat16sToFloats(const unsigned char* in, size_t n, float* out);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_CODEC_FLOAT16_H_
