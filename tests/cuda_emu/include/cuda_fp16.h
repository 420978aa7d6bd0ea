// Stand-in for <cuda_fp16.h> in the CUDA emulator: __half as IEEE binary16 bits, conversions
// rounded to nearest even like the hardware's cvt.rn.f16.f32.
#pragma once
#include <cstdint>
#include <cstring>

struct __half {
  uint16_t __x;
};
inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.__x, 2);
  return static_cast<float>(f);
}
inline __half __float2half_rn(float x) {
  const _Float16 f = static_cast<_Float16>(x);
  __half h;
  std::memcpy(&h.__x, &f, 2);
  return h;
}
inline __half __float2half(float x) { return __float2half_rn(x); }
