// hafrm/kernels/cpu/token_logprobs.hpp: fused per-token log-prob kernels for the CPU, over raw
// pointers; no torch, no [tokens, vocab] temporaries.
//
// Forward streams each row once in L1-sized blocks, one vector sweep per block: exps against the
// running max (from AVX2 up a table exp, against an integer multiple of ln2/N next to it), the
// block max beside them, and a re-centring when the max grows (online log-sum-exp); only the
// per-row LSE (and the asked-for statistics) leave the kernel. Backward recomputes
// p = exp(z - lse) block by block and writes g * (onehot(y) - p) [+ the entropy term] in one pass.
// Rows are split over threads only when the work pays for it (KernelPolicy).
//
// example-begin cpu_kernel_forward KernelRows
//   hafrm::kernels::cpu::RowLayout rows{n, 1, v, 0, v};        // n contiguous rows of v logits
//   hafrm::kernels::cpu::ForwardOutputs out{.logprob = lp.data()};
//   auto serial = [](int64_t begin, int64_t end, int64_t /*grain*/, auto&& fn) { fn(begin, end); };
//   hafrm::kernels::cpu::token_logprobs_forward(logits, rows, labels, {-100, {}}, out, serial);
// example-end
//
// Instruction sets: the row kernels (row_kernels.inc) are compiled three times in every TU that
// includes this header: AVX-512, AVX2+FMA+F16C (each under `#pragma GCC target`, the Clang
// equivalent), and a baseline at the TU's own flags. cpu_capability() (capability.hpp) picks one
// once per process from the CPU; HAFRM_CPU_CAPABILITY=avx2|baseline forces a lower one. Why
// this design rather than variant objects built by CMake (like the CUDA ops): the library stays
// header-only with nothing for a consumer to compile or configure, and it is safe against the
// one-definition-rule trap of per-flag builds because every variant, and every TU-flag
// combination, lives in its own namespace (names below), so the linker never merges an AVX-512
// copy into the baseline. The price is that the variants use GCC/Clang vector extensions and a
// few intrinsics instead of Eigen packets (Eigen chooses its packets from the TU's macros, so it
// cannot be retargeted per function); Eigen still does the rare transforms (soft-cap tanh) and
// dtype fallbacks at the TU's level. Other compilers and non-x86 CPUs get the baseline alone.
//
// Bad rows (the contract the CUDA kernels share; both write their per-row outputs through
// core/row_outputs.hpp, and move their online log-sum-exp by core/math.hpp's rules):
//   - a label equal to ignore_index: every output 0 (is_argmax false) and a zero gradient row;
//     the row's logits are never read;
//   - a label outside [0, V) (reachable only with check_labels = false): the forward never reads
//     it and gives NaN outputs (LSE included); the backward adds no one-hot term for it (vocabulary
//     tiles of the linear path pass labels of other tiles so), so with the forward's NaN LSE the
//     row's gradient is NaN;
//   - a NaN logit anywhere in the row, a +inf logit, or a row of only -inf: NaN log-prob, LSE and
//     entropy (as log_softmax gives), and a NaN gradient row; never a silent finite value.
//   - -inf entries in an otherwise finite row are fine: p = 0 there, no NaN from 0 * -inf.
//   - is_argmax is false for every bad row; under a logit transform it is decided on the raw
//     logits (the transform is monotone), so the CPU and CUDA kernels agree at ties.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "hafrm/core/logprob_layout.hpp"
#include "hafrm/core/math.hpp"
#include "hafrm/core/row_outputs.hpp"
#include "hafrm/kernels/cpu/capability.hpp"

#if HAFRM_CPU_X86_DISPATCH
#include <immintrin.h>
#endif

namespace hafrm::kernels::cpu {

using core::BackwardInputs;
using core::ForwardOutputs;
using core::RowLayout;
using Params = core::LogProbParams;

// kBlock: 2048 floats (8 KiB) keeps a block and its exp in L1 between the max and exp sweeps.
// kGrainElements: the fewest logits a thread chunk gets (see bench/README.md, "Grain size").
struct KernelPolicy {
  static constexpr int64_t kBlock = 2048;
  static constexpr int64_t kGrainElements = int64_t{1} << 22;
};

namespace detail {

// TU-level helpers at the consumer's own flags (the variants call them for the rare paths).
template <class T>
inline void widen_generic(const T* src, int64_t n, float* dst) {
  Eigen::Map<Eigen::ArrayXf>(dst, n) =
      Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(src, n).template cast<float>();
}
template <class T>
inline void narrow_generic(const float* src, int64_t n, T* dst) {
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(dst, n) =
      Eigen::Map<const Eigen::ArrayXf>(src, n).template cast<T>();
}
// z = transform(x) in place.
inline void apply_transform(float* buf, int64_t n, const core::LogitTransform& tf) {
  Eigen::Map<Eigen::ArrayXf> b(buf, n);
  if (tf.scale != 1.f) b *= tf.scale;
  if (tf.softcap > 0.f) b = tf.softcap * (b * (1.f / tf.softcap)).tanh();
  if (tf.inv_temperature != 1.f) b *= tf.inv_temperature;
}
// g *= dz/dx at raw logits x (x is overwritten).
inline void apply_transform_grad(float* x, int64_t n, const core::LogitTransform& tf, float* g) {
  Eigen::Map<Eigen::ArrayXf> xb(x, n), gb(g, n);
  const float d = tf.scale * tf.inv_temperature;
  if (tf.softcap > 0.f) {
    gb *= d * (1.f - (xb * (tf.scale / tf.softcap)).tanh().square());
  } else {
    gb *= d;
  }
}

}  // namespace detail
}  // namespace hafrm::kernels::cpu

// ---- the variants ----------------------------------------------------------------------------
// Each level's variant lives in hafrm::kernels::cpu::{base, avx2, avx512}, inside an inline
// namespace named for the TU's own ISA: two TUs built with different flags then hold differently
// named copies, so the linker cannot pick one TU's for the other's. The helper macros are
// undefined after the last level.
#if defined(__AVX512F__)
#define HAFRM_CPU_TU_ISA tu512
#elif defined(__AVX2__)
#define HAFRM_CPU_TU_ISA tu2
#elif defined(__AVX__)
#define HAFRM_CPU_TU_ISA tu1
#else
#define HAFRM_CPU_TU_ISA tu0
#endif

#define HAFRM_CPU_LEVEL base
#define HAFRM_CPU_VBYTES 16
#define HAFRM_CPU_ISA 0
#include "hafrm/kernels/cpu/row_kernels.inc"
#undef HAFRM_CPU_LEVEL
#undef HAFRM_CPU_VBYTES
#undef HAFRM_CPU_ISA

#if HAFRM_CPU_X86_DISPATCH
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#endif
#define HAFRM_CPU_LEVEL avx2
#define HAFRM_CPU_VBYTES 32
#define HAFRM_CPU_ISA 1
#include "hafrm/kernels/cpu/row_kernels.inc"
#undef HAFRM_CPU_LEVEL
#undef HAFRM_CPU_VBYTES
#undef HAFRM_CPU_ISA
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(                                                             \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2"))), \
    apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2")
#endif
#define HAFRM_CPU_LEVEL avx512
#define HAFRM_CPU_VBYTES 64
#define HAFRM_CPU_ISA 2
#include "hafrm/kernels/cpu/row_kernels.inc"
#undef HAFRM_CPU_LEVEL
#undef HAFRM_CPU_VBYTES
#undef HAFRM_CPU_ISA
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // HAFRM_CPU_X86_DISPATCH
#undef HAFRM_CPU_TU_ISA

namespace hafrm::kernels::cpu {
namespace detail {

template <class T>
using ForwardRowsFn = void (*)(const T*, const RowLayout&, const int64_t*, const Params&,
                               const ForwardOutputs&, int64_t, int64_t);
template <class T>
using BackwardRowsFn = void (*)(const T*, T*, const RowLayout&, const RowLayout&, const int64_t*,
                                const Params&, const BackwardInputs&, int64_t, int64_t);

template <class T>
inline ForwardRowsFn<T> forward_variant(CpuCapability c) {
#if HAFRM_CPU_X86_DISPATCH
  if (c == CpuCapability::kAvx512) return &avx512::forward_rows<T>;
  if (c == CpuCapability::kAvx2) return &avx2::forward_rows<T>;
#endif
  (void)c;
  return &base::forward_rows<T>;
}
template <class T>
inline BackwardRowsFn<T> backward_variant(CpuCapability c) {
#if HAFRM_CPU_X86_DISPATCH
  if (c == CpuCapability::kAvx512) return &avx512::backward_rows<T>;
  if (c == CpuCapability::kAvx2) return &avx2::backward_rows<T>;
#endif
  (void)c;
  return &base::backward_rows<T>;
}

// Rows per thread chunk: at least KernelPolicy::kGrainElements logits, so small tensors run
// serially (no parallel region at all) and large ones split into chunks whose work dwarfs a
// thread wake-up, even when the other thread has to wait for a busy core.
inline int64_t grain_rows(int64_t vocab) {
  return std::max<int64_t>(1, KernelPolicy::kGrainElements / std::max<int64_t>(vocab, 1));
}

template <class ParallelFor, class F>
inline void for_rows(ParallelFor&& parallel_for, int64_t rows, int64_t vocab, F&& f) {
  const int64_t grain = grain_rows(vocab);
  if (rows <= grain) return f(int64_t{0}, rows);
  parallel_for(int64_t{0}, rows, grain, f);
}

}  // namespace detail

// Forward: per-row log-prob of the label and the asked-for statistics. parallel_for(begin, end,
// grain, fn) splits rows over threads (the torch adapter passes at::parallel_for); it is not
// called at all when the work is below one grain.
template <class T, class ParallelFor>
void token_logprobs_forward(const T* logits, const RowLayout& layout, const int64_t* labels,
                            const Params& p, const ForwardOutputs& out,
                            ParallelFor&& parallel_for) {
  HAFRM_INTERNAL_ASSERT(layout.rows() == 0 || (logits && labels), "forward: rows without data");
  const auto fn = detail::forward_variant<T>(cpu_capability());
  detail::for_rows(parallel_for, layout.rows(), layout.vocab, [&](int64_t begin, int64_t end) {
    fn(logits, layout, labels, p, out, begin, end);
  });
}

// Backward: grad[r, v] = (g_lp (1[v = y] - p_v) - g_H p_v (z_v - lse + H)) * dz/dx_v.
// grad_logits uses grad_layout and the logits' type; it may alias logits (in-place mode): each
// block is read completely before it is written.
template <class T, class ParallelFor>
void token_logprobs_backward(const T* logits, T* grad_logits, const RowLayout& layout,
                             const RowLayout& grad_layout, const int64_t* labels, const Params& p,
                             const BackwardInputs& in, ParallelFor&& parallel_for) {
  HAFRM_INTERNAL_ASSERT(layout.rows() == 0 || (in.lse && (!in.grad_entropy || in.entropy)),
                        "backward: the saved lse, and the entropy with an entropy gradient");
  const auto fn = detail::backward_variant<T>(cpu_capability());
  detail::for_rows(parallel_for, layout.rows(), layout.vocab, [&](int64_t begin, int64_t end) {
    fn(logits, grad_logits, layout, grad_layout, labels, p, in, begin, end);
  });
}

}  // namespace hafrm::kernels::cpu
