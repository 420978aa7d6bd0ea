// Stand-in for <cuda_fp16.h> in the CUDA emulator: __half as IEEE binary16 bits, conversions
// rounded to nearest even like the hardware's cvt.rn.f16.f32.
#pragma once
#include <bit>
#include <cstdint>

struct __half {
  uint16_t __x;
};
inline float __half2float(__half h) { return static_cast<float>(std::bit_cast<_Float16>(h.__x)); }
inline __half __float2half_rn(float x) {
  return __half{std::bit_cast<uint16_t>(static_cast<_Float16>(x))};
}
inline __half __float2half(float x) { return __float2half_rn(x); }
