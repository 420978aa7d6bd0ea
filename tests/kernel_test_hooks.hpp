// tests/kernel_test_hooks.hpp: entry points for tests into inline pieces of the CPU kernels
// (include/hafrm/kernels/cpu/row_kernels.inc) that the library does not export: each
// instruction-set level's exps over an array, so that tests/test_exp_bound.cpp measures the very
// code the kernels inline. Compiled into the tests only.
//
// Each level's hooks are compiled for that level, with the target options its variant gets in
// include/hafrm/kernels/cpu/token_logprobs.hpp. Fewer options here than there fail to compile
// (the always-inline exps do not inline into a narrower target), so the two cannot drift apart
// unnoticed.
#pragma once

#include <cstdint>

#include "hafrm/kernels/cpu/token_logprobs.hpp"

namespace hafrm_test::kernel_hooks {

// exp_np_array: out[i] = exp(x[i]) for x[i] <= 0 through the level's vexp_np (the baseline
// level's exp), the tail through the scalar exp_np, as the kernels do. exp_forward_array: the same
// through the forward's exp (vexp_table_np from AVX2 up, with its -87 clamp; vexp_np below).
namespace base {
using namespace hafrm::kernels::cpu::base;
inline void exp_np_array(const float* x, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vstore(out + i, vexp_np(vload(x + i)));
  for (; i < n; ++i) out[i] = exp_np(x[i]);
}
inline void exp_forward_array(const float* x, int64_t n, float* out) { exp_np_array(x, n, out); }
}  // namespace base

#if HAFRM_CPU_X86_DISPATCH
// One table-exp level: `level` names its namespace, `isa` its target options.
#define HAFRM_TEST_TABLE_EXP_HOOKS(level, isa)                                                   \
  namespace level {                                                                              \
  using namespace hafrm::kernels::cpu::level;                                                    \
  __attribute__((target(isa))) inline void exp_np_array(const float* x, int64_t n, float* out) { \
    int64_t i = 0;                                                                               \
    for (; i + kW <= n; i += kW) vstore(out + i, vexp_np(vload(x + i)));                         \
    for (; i < n; ++i) out[i] = exp_np(x[i]);                                                    \
  }                                                                                              \
  __attribute__((target(isa))) inline void exp_forward_array(const float* x, int64_t n,          \
                                                             float* out) {                       \
    int64_t i = 0;                                                                               \
    for (; i + kW <= n; i += kW) {                                                               \
      VF d = vload(x + i);                                                                       \
      const ExpParts ep = vexp_table_np(d);                                                      \
      vstore(out + i, ep.scale * ep.poly);                                                       \
    }                                                                                            \
    exp_np_array(x + i, n - i, out + i);                                                         \
  }                                                                                              \
  }

HAFRM_TEST_TABLE_EXP_HOOKS(avx2, "avx2,fma,f16c,bmi,bmi2")
HAFRM_TEST_TABLE_EXP_HOOKS(avx512, "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2")
#undef HAFRM_TEST_TABLE_EXP_HOOKS
#endif  // HAFRM_CPU_X86_DISPATCH

}  // namespace hafrm_test::kernel_hooks
