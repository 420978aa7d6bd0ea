// Stand-in for <cuda_bf16.h> in the CUDA emulator: __nv_bfloat16 as the top 16 bits of a float,
// conversions rounded to nearest even (NaN stays a quiet NaN) like cvt.rn.bf16.f32.
#pragma once
#include <bit>
#include <cstdint>

struct __nv_bfloat16 {
  uint16_t __x;
};
inline float __bfloat162float(__nv_bfloat16 h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h.__x) << 16);
}
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
  const auto u = std::bit_cast<uint32_t>(x);
  __nv_bfloat16 h;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    h.__x = static_cast<uint16_t>((u >> 16) | 0x40u);
  } else {
    h.__x = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  return h;
}
inline __nv_bfloat16 __float2bfloat16(float x) { return __float2bfloat16_rn(x); }
