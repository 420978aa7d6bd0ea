// hafrm/core/math.hpp: scalar numerics shared by the CPU kernels, the CUDA kernels and the
// torch layer: the online log-sum-exp (one state and one merge rule for both kernels) and the
// logit transform. Torch-free; every function is HAFRM_HOST_DEVICE so device code can call it.
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

// -inf as a constant that device code may use too (std::numeric_limits is a host constexpr,
// which nvcc rejects in device code without --expt-relaxed-constexpr).
template <class T>
inline constexpr T kNegInf = static_cast<T>(-HUGE_VAL);

// Online log-sum-exp (Milakov & Gimelshein) with the centred sums the kernels' statistics need.
// A state holds the max m of the values u seen so far and, with e = exp(a (u - m)) for the
// kernel's unit factor a (1 on the CPU; see the CUDA kernel's linear transforms):
//   s  = sum e
//   sz = sum e (u - m)   entropy = log s - a sz / s: centred, so it keeps its precision when the
//                        logits are large
//   s2 = sum e^2         log sum p^2 = log s2 - 2 log s
// The empty state is (-inf, 0, 0, 0). No default member initialisers on purpose: CUDA __shared__
// arrays of the kernels' statistics (which derive from this) need a trivial constructor.
template <class T>
struct LseState {
  T m, s, sz, s2;
  static HAFRM_HOST_DEVICE HAFRM_INLINE LseState empty() { return {kNegInf<T>, T(0), T(0), T(0)}; }
};

// The two rules below are the only places where a state's centre moves; the CPU kernel
// (row_kernels.inc), the CUDA kernel (token_logprobs.cuh) and the scalar functions further down
// all go through them. exp_of(d) returns exp(a d) for a centre move d <= 0, with the caller's
// own exp: std::exp on the CPU, one MUFU.EX2 (exp2 of a d log2 e) on the GPU. kSz / kS2: whether
// sz and s2 are live (a kernel that does not need them leaves them alone, at no cost).
// nv_exec_check_disable: exp_of may be a device-only lambda; the rule itself is host/device.

// Moves st's centre up to new_m >= st.m (the sums shrink by exp(a (st.m - new_m))). An empty
// state has nothing to rescale (and -inf - new_m would make 0 * inf NaNs): it only takes new_m.
HAFRM_EXEC_CHECK_DISABLE
template <bool kSz, bool kS2, class T, class ExpOf>
HAFRM_HOST_DEVICE HAFRM_INLINE void lse_recentre(LseState<T>& st, T new_m, ExpOf&& exp_of) {
  if (st.m != kNegInf<T>) {
    const T d = st.m - new_m;
    const T f = exp_of(d);
    if constexpr (kSz) st.sz = f * (st.sz + d * st.s);
    if constexpr (kS2) st.s2 *= f * f;
    st.s *= f;
  }
  st.m = new_m;
}

// a <- the state of a's values and b's together, centred on the larger max. A side whose max is
// -inf holds sums of 0 (no mass) or NaN (a NaN among -inf): they are added as they are, so a NaN
// poisons the row as it should. Both maxima +inf give d = NaN, which poisons s likewise.
HAFRM_EXEC_CHECK_DISABLE
template <bool kSz, bool kS2, class T, class ExpOf>
HAFRM_HOST_DEVICE HAFRM_INLINE void lse_merge(LseState<T>& a, LseState<T> b, ExpOf&& exp_of) {
  if (b.m > a.m) {
    const LseState<T> t = a;
    a = b;
    b = t;
  }
  if (b.m == kNegInf<T>) {
    a.s += b.s;
    if constexpr (kSz) a.sz += b.sz;
    if constexpr (kS2) a.s2 += b.s2;
    return;
  }
  const T d = b.m - a.m;  // <= 0
  const T f = exp_of(d);
  if constexpr (kSz) a.sz += f * (b.sz + d * b.s);
  if constexpr (kS2) a.s2 += b.s2 * f * f;
  a.s += b.s * f;
}

// The plain scalar form (max and sum only, a = 1), tested directly in tests/test_core_math.cpp.
template <class T>
HAFRM_HOST_DEVICE HAFRM_INLINE void online_lse_merge(T& m, T& s, T m_other, T s_other) {
  LseState<T> st{m, s, T(0), T(0)};
  lse_merge<false, false>(st, LseState<T>{m_other, s_other, T(0), T(0)}, [](T d) {
    using std::exp;
    return exp(d);
  });
  m = st.m;
  s = st.s;
}

// One value x is the state (x, exp(x - x) = 1), except -inf: no mass, (-inf, 0), as the merge
// rule expects of a -inf side.
template <class T>
HAFRM_HOST_DEVICE HAFRM_INLINE void online_lse_push(T& m, T& s, T x) {
  online_lse_merge(m, s, x, x == kNegInf<T> ? T(0) : T(1));
}

template <class T>
HAFRM_HOST_DEVICE HAFRM_INLINE T online_lse_value(T m, T s) {
  using std::log;
  // An all -inf row has no mass: its LSE is -inf, and every log-prob of it is NaN-free -inf.
  if (m == kNegInf<T>) return m;
  return m + log(s);
}

// a / b. On the GPU without the IEEE-division slow path (a subroutine call, whose saved
// registers ptxas reports as spills): callers keep b far from its 2^126 limit. Plain division
// on the host, the CPU emulator included.
HAFRM_HOST_DEVICE HAFRM_INLINE float fast_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdividef(a, b);
#else
  return a / b;
#endif
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
  // The sign of dz/dx: the transform is monotone (increasing when scale and 1 / temperature
  // have one sign), so the label's z is the row's max exactly when sign() * x_y is the max of
  // sign() * x over the raw logits x. Both kernels decide is_argmax so under a transform: exact,
  // and the same on every device, where comparing float z would depend on each device's tanh.
  HAFRM_HOST_DEVICE HAFRM_INLINE float sign() const {
    return (scale > 0.f) == (inv_temperature > 0.f) ? 1.f : -1.f;
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
