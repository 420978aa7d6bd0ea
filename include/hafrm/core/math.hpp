// hafrm/core/math.hpp: scalar numerics shared by the CPU kernels, the CUDA kernels and the
// torch layer: the online log-sum-exp and the logit transform. Torch-free; every function is
// HAFRM_HOST_DEVICE so device code can call it.
//
// example-begin online_lse Row
//   float m = -INFINITY, s = 0.f;
//   for (float x : row) hafrm::core::online_lse_push(m, s, x);
//   float lse = hafrm::core::online_lse_value(m, s);
// example-end
#pragma once

#include <cmath>
#include <limits>

#include "hafrm/core/macros.hpp"

namespace hafrm::core {

// Online log-sum-exp (Milakov & Gimelshein): a running max m and a sum s of exp(x - m).
// Merging two partial states is what lets a row be split over threads, warps or vocab shards. The
// kernels merge their own vector and warp states (row_kernels.inc, the CUDA Stats); this scalar
// form is the rule they follow, tested directly in tests/test_core_math.cpp.
template <class T>
HAFRM_HOST_DEVICE HAFRM_INLINE void online_lse_merge(T& m, T& s, T m_other, T s_other) {
  using std::exp;
  if (m_other == -std::numeric_limits<T>::infinity()) return;
  if (m == -std::numeric_limits<T>::infinity()) {
    m = m_other;
    s = s_other;
    return;
  }
  if (m_other > m) {
    s = s * exp(m - m_other) + s_other;
    m = m_other;
  } else {
    s = s + s_other * exp(m_other - m);
  }
}

template <class T>
HAFRM_HOST_DEVICE HAFRM_INLINE void online_lse_push(T& m, T& s, T x) {
  online_lse_merge(m, s, x, T(1));
}

template <class T>
HAFRM_HOST_DEVICE HAFRM_INLINE T online_lse_value(T m, T s) {
  using std::log;
  // An all -inf row has no mass: its LSE is -inf, and every log-prob of it is NaN-free -inf.
  if (m == -std::numeric_limits<T>::infinity()) return m;
  return m + log(s);
}

// The logit transform shared by every log-prob path, applied to a raw logit x:
//   z = scale * x;  if softcap > 0: z = softcap * tanh(z / softcap);  z = z / temperature.
// Its derivative dz/dx lets backward kernels chain through it without storing z.
struct LogitTransform {
  float scale = 1.f;
  float softcap = 0.f;  // 0 disables soft-capping (Gemma uses 30 for final logits)
  float inv_temperature = 1.f;

  HAFRM_HOST_DEVICE HAFRM_INLINE bool identity() const {
    return scale == 1.f && softcap == 0.f && inv_temperature == 1.f;
  }
  HAFRM_HOST_DEVICE HAFRM_INLINE float apply(float x) const {
    float z = scale * x;
    if (softcap > 0.f) z = softcap * tanhf(z / softcap);
    return z * inv_temperature;
  }
  // dz/dx at raw logit x.
  HAFRM_HOST_DEVICE HAFRM_INLINE float derivative(float x) const {
    float d = scale * inv_temperature;
    if (softcap > 0.f) {
      float t = tanhf(scale * x / softcap);
      d *= (1.f - t * t);
    }
    return d;
  }
};

}  // namespace hafrm::core
