// hafrm/kernels/cuda/token_logprobs.cuh: fused per-token log-prob kernels for NVIDIA GPUs.
// Raw pointers, sizes, strides and a cudaStream_t in, cudaError_t out; no framework types.
// Over 400 lines as one file because it is compiled as one unit, unchanged, by nvcc
// (src/hafrm_cuda_ops.cu), by the SASS check and by the CPU emulator (tests/cuda_emu/); the
// forward, merge and backward kernels share its row machinery (loads, Stats, transforms); the
// online log-sum-exp rules and the per-row epilogue are core's (core/math.hpp,
// core/row_outputs.hpp), shared with the CPU kernel.
//
// example-begin cuda_kernel_forward DeviceRows
//   hafrm::core::RowLayout rows{1, n, 0, v, v};
//   hafrm::core::ForwardOutputs out{.logprob = d_lp, .lse = d_lse};
//   cudaError_t e = hafrm::kernels::cuda::launch_token_logprobs_forward(
//       d_logits, rows, d_labels, hafrm::core::LogProbParams{}, out, stream);
// example-end
//
// Both kernels are written for the memory-bandwidth limit (bench/README.md has the static
// projection from the SASS, and tests/cuda_emu/sass_check.py keeps it honest in CI):
//   - Each row is read with 16-byte loads, kUnroll of them in flight per thread. A short scalar
//     prologue peels the elements before the row's first 16-byte boundary (as PyTorch's
//     SoftMax.cu does), so any V and any row stride keep vector loads for the rest of the row.
//   - Forward takes the max of kUnroll vectors first, rescales the running sums once if it grew,
//     then does a plain exp-and-add per element. What else is accumulated (the centred
//     entropy sum, sum p^2, sum z) is fixed at compile time (StatsMode).
//   - A linear transform (scale / temperature, no soft-cap) costs nothing per element: the
//     statistics are kept in raw-logit units and the factor folds into the exp2 multiplier.
//   - A group of kThreadsPerRow threads owns a row (8 rows per 256-thread block for short rows,
//     one row per block for long ones); groups merge with warp shuffles, warps through shared
//     memory. Few rows and a long vocabulary take the split path: grid.y splits each row, the
//     partial states go to a stream-ordered workspace and a merge kernel finishes each row.
//   - Backward recomputes p = exp2((z - lse) log2 e) and writes the gradient with real 128-bit
//     stores (the words are packed explicitly). Ignored rows and rows with zero upstream
//     gradients store zeros without reading their logits, so a causal shift done by setting the
//     last label of each sequence to ignore_index costs no logit traffic for those rows.
//   - Labels are range-checked per row on the device (never read out of bounds; NaN out), and
//     the forward records one out-of-range label in a caller-supplied LabelError word, so the
//     torch adapter reports a bad label without a host-side check and its device-to-host sync.
//
// Bad rows: one contract for the CPU and CUDA kernels, whose per-row outputs both come from
// core/row_outputs.hpp (z = the transformed logits of a row that is not ignored):
//   - any z NaN, or any z = +inf: logprob, lse, entropy and log sum p^2 are NaN, is_argmax is
//     false, and every gradient element of the row is NaN (the entropy gradient included), never
//     a silent 0. mean_logit is the plain float sum of z over V, so it is NaN or +inf.
//   - every z = -inf (no probability mass): lse = -inf, logprob / entropy / log sum p^2 NaN,
//     is_argmax false, gradients NaN. A -inf logit in an otherwise finite row is fine: its p is 0.
//   - a label outside [0, V) that is not ignore_index (any int64, INT64_MIN and INT64_MAX
//     included): never read; every forward output NaN, is_argmax false. The forward records it
//     in `label_error` when given one (see LabelError): the torch adapter turns that into an
//     error naming `labels`, no sync. The backward adds no one-hot term for such a label (the
//     linear path's vocabulary tiles pass the labels of other tiles so), so with the forward's
//     NaN lse the row's gradients are NaN, as on the CPU.
//   - is_argmax under a transform (scale, soft-cap, temperature) is decided on the raw logits
//     (the transform is monotone): exact, and the same answer on the CPU and on CUDA at ties.
//   - ignored rows, and in backward rows whose upstream gradients are both exactly 0, give 0
//     outputs and 0 gradients without reading their logits, whatever those hold.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "hafrm/core/logprob_layout.hpp"
#include "hafrm/core/math.hpp"
#include "hafrm/core/row_outputs.hpp"

namespace hafrm::kernels::cuda {

struct KernelPolicy {
  static constexpr int kBlockThreads = 256;
  static constexpr int kVecBytes = 16;
  static constexpr int kUnroll = 4;                 // 16-byte loads in flight per thread
  static constexpr int64_t kShortRow = 2048;        // V up to this: 32 threads per row
  static constexpr int64_t kSplitMinVocab = 16384;  // split path only for rows this long
  static constexpr int64_t kSplitMinChunk = 4096;   // elements per split block, at least
  static constexpr int kBlocksPerSm = 8;            // 2048 resident threads / 256
};

// One out-of-range label (not ignore_index), recorded by the forward kernel for the host.
// Why a word and not a host-side check: checking labels on the host needs their values there, a
// device-to-host sync per call. The torch adapter keeps one word per device in pinned,
// host-mapped memory and reads it at its next call (and in hafrm::check_cuda_label_errors()),
// when the kernel that wrote it has usually finished; the kernel costs nothing for good labels.
// state: kEmpty -> kWriting (claimed with an atomic: the first bad label to get there wins) ->
// kReady once the fields are visible to the host (system fence before the state). The host
// clears it back to kEmpty after reporting; a word already claimed is left alone.
struct LabelError {
  static constexpr unsigned kEmpty = 0, kWriting = 1, kReady = 2;
  unsigned state;
  unsigned reserved;
  int64_t position;  // flat index into the labels the kernel was given
  int64_t value;
  int64_t vocab;
  int64_t ignore_index;
};

// Which running sums the forward keeps besides max and sum-exp, fixed at compile time.
enum StatsMode : int { kLseOnly = 0, kEntropy = 1, kAllStats = 2 };

namespace detail {

constexpr float kNegInf = core::kNegInf<float>;
constexpr float kNaN = __builtin_nanf("");
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kClampLow = -1e30f;  // stands in for -inf where 0 * -inf would make a NaN

// 2^x with -inf -> 0: one MUFU.EX2 (ftz, so no denormal fix-up around it).
__device__ __forceinline__ float exp2_fast(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}

// float <-> the logits' type, round-to-nearest.
template <class T>
__device__ __forceinline__ float to_float(T x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(x);
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(x);
  else
    return x;
}
template <class T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(x);
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(x);
  else
    return x;
}

template <class T>
struct VecTraits {
  static constexpr int kN = KernelPolicy::kVecBytes / static_cast<int>(sizeof(T));
};

// 16 bytes <-> kN floats, word by word, so loads and stores stay single 128-bit instructions.
template <class T>
__device__ __forceinline__ void unpack(const uint4& u, float (&f)[VecTraits<T>::kN]) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if constexpr (std::is_same_v<T, float>) {
      f[k] = __uint_as_float(w[k]);
    } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      f[2 * k] = __uint_as_float(w[k] << 16);
      f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    } else {
      const unsigned short lo = static_cast<unsigned short>(w[k] & 0xffffu);
      const unsigned short hi = static_cast<unsigned short>(w[k] >> 16);
      __half a, b;
      memcpy(&a, &lo, 2);
      memcpy(&b, &hi, 2);
      f[2 * k] = __half2float(a);
      f[2 * k + 1] = __half2float(b);
    }
  }
}

template <class T>
__device__ __forceinline__ unsigned short bits16(float x) {
  const T h = from_float<T>(x);
  unsigned short b;
  memcpy(&b, &h, 2);
  return b;
}

template <class T>
__device__ __forceinline__ uint4 pack(const float (&f)[VecTraits<T>::kN]) {
  unsigned w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if constexpr (std::is_same_v<T, float>) {
      w[k] = __float_as_uint(f[k]);
    } else {
      w[k] = static_cast<unsigned>(bits16<T>(f[2 * k])) |
             (static_cast<unsigned>(bits16<T>(f[2 * k + 1])) << 16);
    }
  }
  return uint4{w[0], w[1], w[2], w[3]};
}

// The row's statistics in "u" units: u = x (the raw logit) when the transform is linear with a
// positive factor a (z = a u), u = z otherwise (a = 1). The online log-sum-exp part (m, s, sz,
// s2: core::LseState, with e = exp(a (u - m))) moves and merges only by core's rules, the ones
// the CPU kernel uses too; zsum = sum u. m is never NaN (maxima skip NaN); a NaN logit reaches s
// through its exp instead. xm (kRaw = general transform and kAllStats, which is-argmax asks for
// there): the max of sign * x over the raw logits x, see LogitTransform::sign.
struct Stats : core::LseState<float> {
  float zsum, xm;
};

__device__ __forceinline__ Stats empty_stats() {
  return {core::LseState<float>::empty(), 0.f, kNegInf};
}

// exp(a d) for a centre move d: 2^(c d) with c = a log2(e), one MUFU.EX2.
struct Exp2 {
  float c;
  __device__ __forceinline__ float operator()(float d) const { return exp2_fast(c * d); }
};

// kRaw: also merge xm (the general transform's forward).
template <int kMode, bool kRaw = false>
__device__ __forceinline__ void merge(Stats& a, const Stats& b, float c) {
  if constexpr (kMode == kAllStats) a.zsum += b.zsum;
  if constexpr (kRaw) a.xm = fmaxf(a.xm, b.xm);
  core::lse_merge<kMode >= kEntropy, kMode == kAllStats>(a, b, Exp2{c});
}

// Folds n values u (a chunk of the row) into the running state: chunk max first, at most one
// rescale, then a plain exp-and-add per element.
template <int kMode, int n>
__device__ __forceinline__ void fold(Stats& a, const float (&u)[n], float c) {
  float cm = u[0];
#pragma unroll
  for (int k = 1; k < n; ++k) cm = fmaxf(cm, u[k]);
  if constexpr (kMode == kAllStats) {
#pragma unroll
    for (int k = 0; k < n; ++k) a.zsum += u[k];
  }
  if (cm > a.m)  // rare after the first chunks; false for an all-NaN chunk
    core::lse_recentre<kMode >= kEntropy, kMode == kAllStats>(a, cm, Exp2{c});
  // While every value so far is -inf, centre on 0: -inf then adds 0 and NaN adds NaN.
  const float shift = a.m == kNegInf ? 0.f : a.m;
  if constexpr (kMode == kLseOnly) {
    // One FFMA into the exp2: the rounding of c * shift is a factor common to the whole chunk,
    // which the max-rescale and the final log(s) carry exactly.
    const float cs = c * shift;
#pragma unroll
    for (int k = 0; k < n; ++k) a.s += exp2_fast(fmaf(c, u[k], -cs));
  } else {
#pragma unroll
    for (int k = 0; k < n; ++k) {
      const float t = u[k] - shift;
      const float e = exp2_fast(c * t);
      a.s += e;
      a.sz += e * fmaxf(t, kClampLow);
      if constexpr (kMode == kAllStats) a.s2 += e * e;
    }
  }
}

template <int kMode, int kWidth, bool kRaw = false>
__device__ __forceinline__ void warp_reduce(Stats& a, float c) {
#pragma unroll
  for (int off = kWidth / 2; off > 0; off /= 2) {
    Stats b;
    b.m = __shfl_xor_sync(0xffffffffu, a.m, off);
    b.s = __shfl_xor_sync(0xffffffffu, a.s, off);
    b.sz = kMode >= kEntropy ? __shfl_xor_sync(0xffffffffu, a.sz, off) : 0.f;
    b.s2 = kMode == kAllStats ? __shfl_xor_sync(0xffffffffu, a.s2, off) : 0.f;
    b.zsum = kMode == kAllStats ? __shfl_xor_sync(0xffffffffu, a.zsum, off) : 0.f;
    b.xm = kRaw ? __shfl_xor_sync(0xffffffffu, a.xm, off) : kNegInf;
    merge<kMode, kRaw>(a, b, c);
  }
}

using core::fast_div;

// tanh(x) = 1 - 2 / (e^2x + 1): one MUFU.EX2 and a fast division, no subroutine (tanhf's and
// IEEE division's slow paths are calls whose saved registers ptxas reports as spills).
// Absolute error ~1e-7.
__device__ __forceinline__ float tanh_fast(float x) {
  // __fdividef: no IEEE-division slow path (a subroutine call); e = inf gives 2 * 0 -> tanh 1.
  return 1.f - fast_div(2.f, exp2_fast(2.f * kLog2e * x) + 1.f);
}

// core::LogitTransform with its divisions done once per kernel, evaluated with tanh_fast.
struct Transform {
  float scale, softcap, inv_softcap, inv_temperature;
  __device__ explicit Transform(const core::LogitTransform& t)
      : scale(t.scale),
        softcap(t.softcap),
        inv_softcap(t.softcap > 0.f ? fast_div(1.f, t.softcap) : 0.f),
        inv_temperature(t.inv_temperature) {}
  __device__ __forceinline__ float apply(float x) const {
    float z = scale * x;
    if (softcap > 0.f) z = softcap * tanh_fast(z * inv_softcap);
    return z * inv_temperature;
  }
  __device__ __forceinline__ float derivative(float x) const {
    float d = scale * inv_temperature;
    if (softcap > 0.f) {
      const float t = tanh_fast(scale * x * inv_softcap);
      d *= 1.f - t * t;
    }
    return d;
  }
};

// u of one raw logit: x itself on the linear path, the full transform on the general one.
template <bool kGeneral>
__device__ __forceinline__ float to_u(float x, const Transform& tf) {
  if constexpr (kGeneral) return tf.apply(x);
  return x;
}

// Elements before the first 16-byte boundary at or after p (all of them if p is not even
// element-aligned), capped at n.
template <class T>
__device__ __forceinline__ int64_t head_elems(const T* p, int64_t n) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  const int64_t h =
      a % sizeof(T)
          ? n
          : static_cast<int64_t>(((KernelPolicy::kVecBytes - a % KernelPolicy::kVecBytes) %
                                  KernelPolicy::kVecBytes) /
                                 sizeof(T));
  return h < n ? h : n;
}

// Runs the group's share of elements [0, n) of src: scalar(i, x) for the prologue and the tail,
// vec(i, f) for 16-byte vectors, kUnroll of them loaded before any is processed.
template <class T, int kTpr, int kU, class Scalar, class Vec>
__device__ __forceinline__ void for_row(const T* src, int64_t n, int lane, Scalar&& scalar,
                                        Vec&& vec) {
  constexpr int kN = VecTraits<T>::kN;
  const int64_t head = head_elems(src, n);
  const int64_t nvec = (n - head) / kN;
  for (int64_t i = lane; i < head; i += kTpr) scalar(i, to_float(src[i]));
  const uint4* v4 = reinterpret_cast<const uint4*>(src + head);
  int64_t j = lane;
  for (; j + (kU - 1) * kTpr < nvec; j += kU * kTpr) {
    uint4 raw[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) raw[u] = v4[j + u * kTpr];
#pragma unroll
    for (int u = 0; u < kU; ++u) vec(head + (j + u * kTpr) * kN, raw[u]);
  }
  for (; j < nvec; j += kTpr) vec(head + j * kN, v4[j]);
  for (int64_t i = head + nvec * kN + lane; i < n; i += kTpr) scalar(i, to_float(src[i]));
}

// Records label y of row r in e (nullable) unless a bad label is already held there. Only rows
// with bad labels get here; the plain read first keeps a flood of them from queueing atomics.
__device__ __forceinline__ void record_label_error(LabelError* e, int64_t r, int64_t y, int64_t V,
                                                   int64_t ignore_index) {
  if (!e || __ldcv(&e->state) != LabelError::kEmpty) return;  // ld.volatile: not a cached copy
  if (atomicCAS(&e->state, LabelError::kEmpty, LabelError::kWriting) != LabelError::kEmpty) return;
  e->position = r;
  e->value = y;
  e->vocab = V;
  e->ignore_index = ignore_index;
  __threadfence_system();  // the fields reach the host before the state says they are there
  atomicExch(&e->state, LabelError::kReady);
}

// The per-row results from the merged state (lane 0 of the row's group, or the merge kernel),
// through core's epilogue, the one the CPU kernel uses.
template <class T, bool kGeneral, bool kRaw>
__device__ __forceinline__ void finish_row(int64_t r, int64_t y, bool active, const Stats& st,
                                           const T* row, int64_t V, const core::LogProbParams& p,
                                           float a, const core::ForwardOutputs& out,
                                           LabelError* label_error) {
  if (!active) return core::fill_row_outputs(out, r, 0.f);
  if (!(y >= 0 && y < V)) {  // never read outside the row: NaN everywhere, as on the CPU
    record_label_error(label_error, r, y, V, p.ignore_index);
    return core::fill_row_outputs(out, r, kNaN);
  }
  float xy;
  core::write_row_outputs(
      out, r, st, st.zsum, a, V,
      [&] {
        xy = to_float(row[y]);
        return to_u<kGeneral>(xy, Transform(p.transform));
      },
      [&](float uy) {
        // Without kRaw the transform is linear with a positive factor: u = x, already raw.
        return kRaw ? p.transform.sign() * xy >= st.xm : uy >= st.m;
      });
}

// layout.offset(r) without a 64-bit division (a subroutine call on the GPU, like float64
// reciprocals): one of the two levels trivial, or indices that fit 32 bits, or else the
// quotient from the host-computed 1 / inner (exact to +-1 for r < 2^53) and one correction.
__device__ __forceinline__ int64_t row_offset(const core::RowLayout& L, int64_t r,
                                              double inv_inner) {
  if (L.inner == 1) return r * L.stride_outer;
  if (L.outer == 1) return r * L.stride_inner;
  int64_t q;
  if (r <= 0x7fffffff && L.inner <= 0x7fffffff) {
    q = static_cast<uint32_t>(r) / static_cast<uint32_t>(L.inner);
  } else {
    q = static_cast<int64_t>(static_cast<double>(r) * inv_inner);
  }
  int64_t i = r - q * L.inner;
  if (i < 0) {
    --q, i += L.inner;
  } else if (i >= L.inner) {
    ++q, i -= L.inner;
  }
  return q * L.stride_outer + i * L.stride_inner;
}
inline double inv_inner(const core::RowLayout& L) {
  return 1.0 / static_cast<double>(L.inner > 0 ? L.inner : 1);
}

// Linear transforms with a positive factor run in raw-logit units (kGeneral = false).
__host__ __device__ inline bool general_transform(const core::LogitTransform& tf) {
  return tf.softcap > 0.f || !(tf.scale * tf.inv_temperature > 0.f);
}
__host__ __device__ inline float linear_factor(const core::LogitTransform& tf, bool general) {
  return general ? 1.f : tf.scale * tf.inv_temperature;
}

}  // namespace detail

// Forward. grid.x walks row groups (grid-stride), grid.y splits each row's vocabulary into
// chunks of `chunk` elements; with a split, lane 0 stores the partial state in partial[r, split]
// and token_logprobs_merge_kernel finishes the row.
template <class T, int kThreadsPerRow, int kMode, bool kGeneral>
__global__ void __launch_bounds__(KernelPolicy::kBlockThreads)
    token_logprobs_forward_kernel(const T* __restrict__ logits, core::RowLayout layout,
                                  const int64_t* __restrict__ labels, core::LogProbParams p,
                                  core::ForwardOutputs out, int64_t chunk,
                                  detail::Stats* __restrict__ partial, double inv,
                                  LabelError* label_error) {
  using namespace detail;
  constexpr int kTpr = kThreadsPerRow;
  constexpr int kRowsPerBlock = KernelPolicy::kBlockThreads / kTpr;
  constexpr int kWarpsPerRow = kTpr > 32 ? kTpr / 32 : 1;
  constexpr int kN = VecTraits<T>::kN;
  // The raw max for is-argmax (LogitTransform::sign).
  constexpr bool kRaw = kGeneral && kMode == kAllStats;
  // The soft-cap path's tanh needs registers of its own: fewer loads in flight there.
  constexpr int kUnroll = kGeneral ? 2 : KernelPolicy::kUnroll;
  __shared__ Stats smem[kRowsPerBlock * kWarpsPerRow];
  const int group = threadIdx.x / kTpr;
  const int lane = threadIdx.x % kTpr;
  const int64_t V = layout.vocab, rows = layout.rows();
  const Transform tf(p.transform);  // a value: a reference would pin the param in memory
  const float a = linear_factor(p.transform, kGeneral);
  const float c = a * kLog2e;
  const float sgn = p.transform.sign();
  const int64_t lo = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t n = (V - lo < chunk ? V - lo : chunk);
  // Uniform trip count across the block so every thread reaches every shuffle and barrier.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock; base < rows;
       base += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t r = base + group;
    const bool valid = r < rows;
    const int64_t y = valid ? labels[r] : p.ignore_index;
    const bool active = valid && y != p.ignore_index;
    Stats st = empty_stats();
    if (active) {
      const T* src = logits + row_offset(layout, r, inv) + lo;
      for_row<T, kTpr, kUnroll>(
          src, n, lane,
          [&](int64_t, float x) {
            if constexpr (kRaw) st.xm = fmaxf(st.xm, sgn * x);
            const float u[1] = {to_u<kGeneral>(x, tf)};
            fold<kMode>(st, u, c);
          },
          [&](int64_t, const uint4& raw) {
            float u[kN];
            unpack<T>(raw, u);
            if constexpr (kGeneral) {
#pragma unroll
              for (int k = 0; k < kN; ++k) {
                if constexpr (kRaw) st.xm = fmaxf(st.xm, sgn * u[k]);
                u[k] = tf.apply(u[k]);
              }
            }
            fold<kMode>(st, u, c);
          });
    }
    warp_reduce<kMode, (kTpr < 32 ? kTpr : 32), kRaw>(st, c);
    if constexpr (kWarpsPerRow > 1) {
      const int warp_in_row = lane / 32;
      if (lane % 32 == 0) smem[group * kWarpsPerRow + warp_in_row] = st;
      __syncthreads();
      if (lane == 0)
        for (int w = 1; w < kWarpsPerRow; ++w)
          merge<kMode, kRaw>(st, smem[group * kWarpsPerRow + w], c);
      __syncthreads();
    }
    if (lane == 0 && valid) {
      if (partial) {
        if (active) partial[r * gridDim.y + blockIdx.y] = st;
      } else {
        finish_row<T, kGeneral, kRaw>(r, y, active, st, logits + row_offset(layout, r, inv), V, p,
                                      a, out, label_error);
      }
    }
  }
}

// Split path, second step: one thread per row merges the row's `splits` partial states.
template <class T, int kMode, bool kGeneral>
__global__ void __launch_bounds__(KernelPolicy::kBlockThreads)
    token_logprobs_merge_kernel(const T* __restrict__ logits, core::RowLayout layout,
                                const int64_t* __restrict__ labels, core::LogProbParams p,
                                core::ForwardOutputs out, int splits,
                                const detail::Stats* __restrict__ partial, double inv,
                                LabelError* label_error) {
  using namespace detail;
  constexpr bool kRaw = kGeneral && kMode == kAllStats;
  const int64_t rows = layout.rows();
  const float a = linear_factor(p.transform, kGeneral);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t y = labels[r];
    const bool active = y != p.ignore_index;
    Stats st = empty_stats();
    if (active)
      for (int k = 0; k < splits; ++k) merge<kMode, kRaw>(st, partial[r * splits + k], a * kLog2e);
    finish_row<T, kGeneral, kRaw>(r, y, active, st, logits + row_offset(layout, r, inv),
                                  layout.vocab, p, a, out, label_error);
  }
}

// Backward: grad[r, v] = (g (1[v = y] - p_v) - g_H p_v (z_v - lse + H)) dz/dx_v, element-parallel
// (grid.x rows, grid.y vocabulary chunks), no reduction. grad may alias logits (in place): each
// thread reads a vector before it writes the same vector.
template <class T, int kThreadsPerRow, bool kEntropyGrad, bool kGeneral>
__global__ void __launch_bounds__(KernelPolicy::kBlockThreads)
    token_logprobs_backward_kernel(const T* logits, T* grad, core::RowLayout layout,
                                   core::RowLayout grad_layout, const int64_t* __restrict__ labels,
                                   core::LogProbParams p, core::BackwardInputs in, int64_t chunk,
                                   double inv, double ginv) {
  using namespace detail;
  constexpr int kTpr = kThreadsPerRow;
  constexpr int kRowsPerBlock = KernelPolicy::kBlockThreads / kTpr;
  constexpr int kN = VecTraits<T>::kN;
  constexpr int kUnroll = kGeneral ? 2 : KernelPolicy::kUnroll;  // see the forward kernel
  const int group = threadIdx.x / kTpr;
  const int lane = threadIdx.x % kTpr;
  const int64_t V = layout.vocab, rows = layout.rows();
  const Transform tf(p.transform);  // a value: a reference would pin the param in memory
  const float a = linear_factor(p.transform, kGeneral);
  const int64_t lo = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t n = (V - lo < chunk ? V - lo : chunk);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + group; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* src = logits + row_offset(layout, r, inv) + lo;
    T* dst = grad + row_offset(grad_layout, r, ginv) + lo;
    const int64_t y = labels[r];
    const float g = in.grad_logprob ? in.grad_logprob[r] : 0.f;
    const float gh = kEntropyGrad ? in.grad_entropy[r] : 0.f;
    const int64_t head = head_elems(dst, n);
    const int64_t nvec = (n - head) / kN;
    if (y == p.ignore_index || (g == 0.f && gh == 0.f)) {  // zeros, logits never read
      for (int64_t i = lane; i < head; i += kTpr) dst[i] = from_float<T>(0.f);
      uint4* d4 = reinterpret_cast<uint4*>(dst + head);
      for (int64_t j = lane; j < nvec; j += kTpr) d4[j] = uint4{0u, 0u, 0u, 0u};
      for (int64_t i = head + nvec * kN + lane; i < n; i += kTpr) dst[i] = from_float<T>(0.f);
      continue;
    }
    // A label outside [0, V) adds no one-hot term (below); the forward gave its row a NaN lse,
    // so p and the whole gradient row are NaN, per the contract.
    const float lse = in.lse[r];
    const float H = kEntropyGrad ? in.entropy[r] : 0.f;
    // The linear factor folds into the upstream gradients (d/dx = a d/dz) and, with log2 e,
    // into the exp2 argument: t2 = (z - lse) log2 e in one FFMA.
    const float G = kGeneral ? g : g * a, GH = kGeneral ? gh : gh * a;
    const float c2 = kGeneral ? kLog2e : a * kLog2e, lse2 = lse * kLog2e;
    // The label's index within this chunk, or -1 when the label lies outside it. Offset and
    // compare are unsigned, so no label (INT64_MIN included) overflows: one below the chunk
    // wraps past n.
    const uint64_t yu = static_cast<uint64_t>(y) - static_cast<uint64_t>(lo);
    const int64_t yl = yu < static_cast<uint64_t>(n) ? static_cast<int64_t>(yu) : -1;
    auto grad_of = [&](float x) -> float {
      const float t2 = fmaf(c2, kGeneral ? tf.apply(x) : x, -lse2);
      const float pz = exp2_fast(t2);
      float nw = -G;
      if constexpr (kEntropyGrad) nw = fmaf(-GH, fmaxf(t2 * kLn2, kClampLow) + H, nw);
      return pz * nw;
    };
    auto finish = [&](float d, float x) { return kGeneral ? d * tf.derivative(x) : d; };
    if (head_elems(src, n) != head) {  // logits and grad rows misaligned differently: scalar
      for (int64_t i = lane; i < n; i += kTpr) {
        const float x = to_float(src[i]);
        dst[i] = from_float<T>(finish(grad_of(x) + (i == yl ? G : 0.f), x));
      }
      continue;
    }
    auto scalar = [&](int64_t i, float x) {
      dst[i] = from_float<T>(finish(grad_of(x) + (i == yl ? G : 0.f), x));
    };
    auto vec = [&](int64_t i, const uint4& raw) {
      float x[kN], d[kN];
      unpack<T>(raw, x);
#pragma unroll
      for (int k = 0; k < kN; ++k) d[k] = grad_of(x[k]);
      // Unsigned, as intended: a label before i (or none, -1) wraps past kN.
      if (static_cast<uint64_t>(yl) - static_cast<uint64_t>(i) < static_cast<uint64_t>(kN)) {
        // Rare: the label's vector.
#pragma unroll
        for (int k = 0; k < kN; ++k)
          if (i + k == yl) d[k] += G;
      }
      if constexpr (kGeneral) {
#pragma unroll
        for (int k = 0; k < kN; ++k) d[k] *= tf.derivative(x[k]);
      }
      *reinterpret_cast<uint4*>(dst + i) = pack<T>(d);
    };
    for_row<T, kTpr, kUnroll>(src, n, lane, scalar, vec);
  }
}

namespace detail {

// Every launch goes through here. Host compilers see this header only through the CPU emulator
// in tests/cuda_emu, whose cuda_runtime.h stand-in supplies hafrm_cuda_emu_launch (one host
// thread per CUDA thread), so the kernels' text is the same on both paths.
template <class... P, class... A>
cudaError_t launch_kernel(void (*kernel)(P...), dim3 grid, unsigned block, cudaStream_t stream,
                          A... args) {
#if defined(__CUDACC__)
  kernel<<<grid, block, 0, stream>>>(args...);
  return cudaGetLastError();
#else
  return hafrm_cuda_emu_launch(kernel, grid, dim3(block), 0, stream, args...);
#endif
}

inline int sm_count() {
  int dev = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n < 1)
    return 1;
  return n;
}

// The launch shape: threads per row, blocks over rows (capped: the kernels stride), and how
// many vocabulary chunks per row (1 unless few rows would leave SMs idle).
struct Shape {
  int tpr;
  unsigned grid_x;
  unsigned splits;
  int64_t chunk;
};

inline Shape shape_for(int64_t rows, int64_t V) {
  Shape s{};
  s.tpr = V <= KernelPolicy::kShortRow ? 32 : KernelPolicy::kBlockThreads;
  const int64_t rows_per_block = KernelPolicy::kBlockThreads / s.tpr;
  const int64_t row_blocks = (rows + rows_per_block - 1) / rows_per_block;
  const int64_t resident = static_cast<int64_t>(sm_count()) * KernelPolicy::kBlocksPerSm;
  s.splits = 1;
  s.chunk = V;
  if (s.tpr == KernelPolicy::kBlockThreads && V >= KernelPolicy::kSplitMinVocab &&
      row_blocks < resident) {
    int64_t k = (resident + row_blocks - 1) / row_blocks;
    const int64_t most = V / KernelPolicy::kSplitMinChunk;
    if (k > most) k = most;
    if (k > 65535) k = 65535;
    if (k >= 2) {
      // Chunks a multiple of 64 elements, so every chunk but the row's first starts where the
      // row's vector alignment continues.
      s.chunk = ((V + k - 1) / k + 63) / 64 * 64;
      s.splits = static_cast<unsigned>((V + s.chunk - 1) / s.chunk);
    }
  }
  const int64_t cap = resident * 4;
  s.grid_x = static_cast<unsigned>(row_blocks < 1 ? 1 : row_blocks < cap ? row_blocks : cap);
  return s;
}

template <class F>
cudaError_t dispatch_tpr(int tpr, F&& f) {
  if (tpr == 32) return f(std::integral_constant<int, 32>{});
  return f(std::integral_constant<int, KernelPolicy::kBlockThreads>{});
}
template <class F>
cudaError_t dispatch_bool(bool b, F&& f) {
  return b ? f(std::true_type{}) : f(std::false_type{});
}
template <class F>
cudaError_t dispatch_mode(int mode, F&& f) {
  if (mode == kLseOnly) return f(std::integral_constant<int, kLseOnly>{});
  if (mode == kEntropy) return f(std::integral_constant<int, kEntropy>{});
  return f(std::integral_constant<int, kAllStats>{});
}

}  // namespace detail

// label_error (nullable, device-visible): where the kernel records an out-of-range label.
template <class T>
cudaError_t launch_token_logprobs_forward(const T* logits, const core::RowLayout& layout,
                                          const int64_t* labels, const core::LogProbParams& p,
                                          const core::ForwardOutputs& out, cudaStream_t stream,
                                          LabelError* label_error = nullptr) {
  const int64_t rows = layout.rows(), V = layout.vocab;
  if (rows == 0) return cudaSuccess;
  const bool general = detail::general_transform(p.transform);
  // is-argmax under a general transform needs the raw max, kept only by kAllStats (so the
  // soft-cap path pays for it only when asked).
  const int mode = (out.log_sum_p2 || out.mean_logit || (general && out.is_argmax)) ? kAllStats
                   : out.entropy                                                    ? kEntropy
                                                                                    : kLseOnly;
  const detail::Shape sh = detail::shape_for(rows, V);
  detail::Stats* partial = nullptr;
  if (sh.splits > 1) {
    const cudaError_t e =
        cudaMallocAsync(reinterpret_cast<void**>(&partial),
                        static_cast<size_t>(rows) * sh.splits * sizeof(detail::Stats), stream);
    if (e != cudaSuccess) return e;
  }
  const cudaError_t e = detail::dispatch_tpr(sh.tpr, [&](auto tpr) {
    return detail::dispatch_mode(mode, [&](auto md) {
      return detail::dispatch_bool(general, [&](auto gen) -> cudaError_t {
        constexpr int kTpr = decltype(tpr)::value, kMode = decltype(md)::value;
        constexpr bool kGen = decltype(gen)::value;
        cudaError_t err = detail::launch_kernel(
            token_logprobs_forward_kernel<T, kTpr, kMode, kGen>, dim3(sh.grid_x, sh.splits),
            KernelPolicy::kBlockThreads, stream, logits, layout, labels, p, out, sh.chunk, partial,
            detail::inv_inner(layout), label_error);
        if (err != cudaSuccess || !partial) return err;
        if constexpr (kTpr == KernelPolicy::kBlockThreads) {
          const int64_t mb = (rows + KernelPolicy::kBlockThreads - 1) / KernelPolicy::kBlockThreads;
          err = detail::launch_kernel(
              token_logprobs_merge_kernel<T, kMode, kGen>,
              dim3(static_cast<unsigned>(mb < 65535 ? mb : 65535)), KernelPolicy::kBlockThreads,
              stream, logits, layout, labels, p, out, static_cast<int>(sh.splits),
              static_cast<const detail::Stats*>(partial), detail::inv_inner(layout), label_error);
        }
        return err;
      });
    });
  });
  if (partial) {
    const cudaError_t f = cudaFreeAsync(partial, stream);
    if (e == cudaSuccess) return f;
  }
  return e;
}

template <class T>
cudaError_t launch_token_logprobs_backward(const T* logits, T* grad, const core::RowLayout& layout,
                                           const core::RowLayout& grad_layout,
                                           const int64_t* labels, const core::LogProbParams& p,
                                           const core::BackwardInputs& in, cudaStream_t stream) {
  const int64_t rows = layout.rows();
  if (rows == 0) return cudaSuccess;
  HAFRM_INTERNAL_ASSERT(in.lse && (!in.grad_entropy || in.entropy),
                        "backward: the saved lse, and the entropy with an entropy gradient");
  const bool general = detail::general_transform(p.transform);
  const detail::Shape sh = detail::shape_for(rows, layout.vocab);
  return detail::dispatch_tpr(sh.tpr, [&](auto tpr) {
    return detail::dispatch_bool(in.grad_entropy != nullptr, [&](auto hg) {
      return detail::dispatch_bool(general, [&](auto gen) -> cudaError_t {
        constexpr int kTpr = decltype(tpr)::value;
        constexpr bool kHg = decltype(hg)::value, kGen = decltype(gen)::value;
        return detail::launch_kernel(
            token_logprobs_backward_kernel<T, kTpr, kHg, kGen>, dim3(sh.grid_x, sh.splits),
            KernelPolicy::kBlockThreads, stream, logits, grad, layout, grad_layout, labels, p, in,
            sh.chunk, detail::inv_inner(layout), detail::inv_inner(grad_layout));
      });
    });
  });
}

}  // namespace hafrm::kernels::cuda
