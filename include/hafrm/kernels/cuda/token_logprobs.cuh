// hafrm/kernels/cuda/token_logprobs.cuh: fused per-token log-prob kernels for NVIDIA GPUs.
// Raw pointers, sizes, strides and a cudaStream_t in, cudaError_t out; no framework types.
//
// Forward: a group of kThreadsPerRow threads owns one row (several rows per 256-thread block for
// small vocabularies, one row per block for large ones); each thread streams its slice with
// 16-byte loads, keeps an online (max, sum-exp[, entropy, sum p^2, sum z]) state in float32,
// the group merges the states with warp shuffles (and shared memory across warps), and one
// thread writes the per-row results. Backward recomputes p = exp(z - lse) and writes
// g * (onehot(y) - p) [+ entropy term] with 16-byte stores; no reduction needed.
//
//   hafrm::core::RowLayout rows{1, n, 0, v, v};
//   hafrm::core::ForwardOutputs out{.logprob = d_lp, .lse = d_lse};
//   cudaError_t e = hafrm::kernels::cuda::launch_token_logprobs_forward(
//       d_logits, rows, d_labels, hafrm::core::LogProbParams{}, out, stream);
//
// Bad rows: one contract for the CPU and CUDA kernels (z = the transformed logits of a row that
// is not ignored):
//   - any z NaN, or any z = +inf: logprob, lse, entropy and log sum p^2 are NaN, is_argmax is
//     false, and every gradient element of the row is NaN (the entropy gradient included), never
//     a silent 0. mean_logit is the plain float sum of z over V, so it is NaN or +inf.
//   - every z = -inf (no probability mass): lse = -inf, logprob / entropy / log sum p^2 NaN,
//     is_argmax false, gradients NaN. A -inf logit in an otherwise finite row is fine: its p is 0.
//   - a label outside [0, V) that is not ignore_index (only possible with check_labels = false):
//     never read; logprob NaN, is_argmax false, the row's gradients NaN. The other statistics
//     do not depend on the label and stay valid.
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

namespace hafrm::kernels::cuda {

struct KernelPolicy {
  static constexpr int kBlockThreads = 256;
  static constexpr int kVecBytes = 16;
};

namespace detail {

template <class T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
__device__ __forceinline__ float to_float<__half>(__half x) {
  return __half2float(x);
}

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

constexpr float kNegInf = -__builtin_huge_valf();  // constexpr on host and device
constexpr float kNaN = __builtin_nanf("");

// Online softmax statistics of one thread's (or group's) share of a row; sz is centred on m.
struct Stats {
  float m, s, sz, s2, zsum;
};

__device__ __forceinline__ Stats empty_stats() { return {kNegInf, 0.f, 0.f, 0.f, 0.f}; }

template <bool kExtra>
__device__ __forceinline__ void push(Stats& a, float z) {
  a.zsum += z;
  if (z == kNegInf) return;
  if (!(z <= a.m)) {  // also taken for NaN, which then poisons m and s like the CPU kernel
    if (a.m == kNegInf) {
      a.s = 0.f, a.sz = 0.f, a.s2 = 0.f;
    } else {
      const float f = __expf(a.m - z);
      if (kExtra) a.sz = f * (a.sz + (a.m - z) * a.s), a.s2 = a.s2 * f * f;
      a.s *= f;
    }
    a.m = z;
  }
  const float e = __expf(z - a.m);
  a.s += e;
  if (kExtra) a.sz += e * (z - a.m), a.s2 += e * e;
}

template <bool kExtra>
__device__ __forceinline__ void merge(Stats& a, const Stats& b) {
  a.zsum += b.zsum;
  if (b.m == kNegInf) return;
  if (a.m == kNegInf) {
    a.m = b.m, a.s = b.s, a.sz = b.sz, a.s2 = b.s2;
    return;
  }
  if (b.m > a.m) {
    const float f = __expf(a.m - b.m);
    if (kExtra) a.sz = f * (a.sz + (a.m - b.m) * a.s) + b.sz, a.s2 = a.s2 * f * f + b.s2;
    a.s = a.s * f + b.s;
    a.m = b.m;
  } else {
    const float f = __expf(b.m - a.m);
    if (kExtra) a.sz += f * (b.sz + (b.m - a.m) * b.s), a.s2 += b.s2 * f * f;
    a.s += b.s * f;
  }
}

template <bool kExtra, int kWidth>
__device__ __forceinline__ void warp_reduce(Stats& a) {
#pragma unroll
  for (int off = kWidth / 2; off > 0; off /= 2) {
    Stats b;
    b.m = __shfl_xor_sync(0xffffffffu, a.m, off);
    b.s = __shfl_xor_sync(0xffffffffu, a.s, off);
    b.sz = kExtra ? __shfl_xor_sync(0xffffffffu, a.sz, off) : 0.f;
    b.s2 = kExtra ? __shfl_xor_sync(0xffffffffu, a.s2, off) : 0.f;
    b.zsum = __shfl_xor_sync(0xffffffffu, a.zsum, off);
    merge<kExtra>(a, b);
  }
}

template <class T>
struct VecTraits {
  static constexpr int kN = KernelPolicy::kVecBytes / static_cast<int>(sizeof(T));
};

// Loads element i of a row as transformed float32 z.
template <class T>
__device__ __forceinline__ float load_z(const T* row, int64_t i, const core::LogitTransform& tf,
                                        bool identity) {
  const float x = to_float(row[i]);
  return identity ? x : tf.apply(x);
}

}  // namespace detail

// One group of kThreadsPerRow threads per row; rows per block = kBlockThreads / kThreadsPerRow.
template <class T, int kThreadsPerRow, bool kExtra, bool kVec>
__global__ void __launch_bounds__(KernelPolicy::kBlockThreads)
    token_logprobs_forward_kernel(const T* __restrict__ logits, core::RowLayout layout,
                                  const int64_t* __restrict__ labels, core::LogProbParams p,
                                  core::ForwardOutputs out) {
  using namespace detail;
  constexpr int kRowsPerBlock = KernelPolicy::kBlockThreads / kThreadsPerRow;
  constexpr int kWarpsPerRow = kThreadsPerRow > 32 ? kThreadsPerRow / 32 : 1;
  constexpr int kN = VecTraits<T>::kN;
  __shared__ Stats smem[kRowsPerBlock * kWarpsPerRow];
  const int group = threadIdx.x / kThreadsPerRow;
  const int lane = threadIdx.x % kThreadsPerRow;
  const int64_t V = layout.vocab, rows = layout.rows();
  const bool identity = p.transform.identity();
  // Uniform trip count across the block so every thread reaches every shuffle and barrier.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock; base < rows;
       base += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t r = base + group;
    const bool valid = r < rows;
    const int64_t y = valid ? labels[r] : p.ignore_index;
    const bool active = valid && y != p.ignore_index;
    Stats st = empty_stats();
    if (active) {
      const T* row = logits + layout.offset(r);
      int64_t vec_end = 0;
      if constexpr (kVec) {
        vec_end = (V / kN) * kN;
        for (int64_t i = static_cast<int64_t>(lane) * kN; i < vec_end; i += kThreadsPerRow * kN) {
          uint4 raw = *reinterpret_cast<const uint4*>(row + i);
          T vals[kN];
          memcpy(vals, &raw, sizeof(raw));
#pragma unroll
          for (int k = 0; k < kN; ++k) {
            const float x = to_float(vals[k]);
            push<kExtra>(st, identity ? x : p.transform.apply(x));
          }
        }
      }
      for (int64_t i = vec_end + lane; i < V; i += kThreadsPerRow)
        push<kExtra>(st, load_z(row, i, p.transform, identity));
    }
    warp_reduce<kExtra, (kThreadsPerRow < 32 ? kThreadsPerRow : 32)>(st);
    if constexpr (kWarpsPerRow > 1) {
      const int warp_in_row = lane / 32;
      if (lane % 32 == 0) smem[group * kWarpsPerRow + warp_in_row] = st;
      __syncthreads();
      if (lane == 0)
        for (int w = 1; w < kWarpsPerRow; ++w) merge<kExtra>(st, smem[group * kWarpsPerRow + w]);
      __syncthreads();
    }
    if (lane == 0 && valid) {
      if (!active) {
        if (out.logprob) out.logprob[r] = 0.f;
        if (out.lse) out.lse[r] = 0.f;
        if (out.entropy) out.entropy[r] = 0.f;
        if (out.log_sum_p2) out.log_sum_p2[r] = 0.f;
        if (out.mean_logit) out.mean_logit[r] = 0.f;
        if (out.is_argmax) out.is_argmax[r] = false;
      } else {
        const T* row = logits + layout.offset(r);
        // st.s = 0 only for an all -inf row: lse -inf, the rest NaN (see the contract above).
        const bool mass = st.s > 0.f || st.s != st.s;
        const float lse = mass ? st.m + logf(st.s) : kNegInf;
        const bool in_range = y >= 0 && y < V;  // never read outside the row
        const float zt = in_range ? load_z(row, y, p.transform, identity) : kNaN;
        if (out.logprob) out.logprob[r] = mass ? zt - lse : kNaN;
        if (out.lse) out.lse[r] = lse;
        if (out.entropy) out.entropy[r] = mass ? logf(st.s) - st.sz / st.s : kNaN;
        if (out.log_sum_p2) out.log_sum_p2[r] = mass ? logf(st.s2) - 2.f * logf(st.s) : kNaN;
        if (out.mean_logit) out.mean_logit[r] = st.zsum / static_cast<float>(V);
        if (out.is_argmax) out.is_argmax[r] = mass && zt >= st.m && lse == lse;  // not NaN
      }
    }
  }
}

// Backward: one group of threads per row, element-parallel, 16-byte loads and stores.
template <class T, int kThreadsPerRow, bool kVec>
__global__ void __launch_bounds__(KernelPolicy::kBlockThreads)
    token_logprobs_backward_kernel(const T* logits, T* grad, core::RowLayout layout,
                                   core::RowLayout grad_layout, const int64_t* __restrict__ labels,
                                   core::LogProbParams p, core::BackwardInputs in) {
  using namespace detail;
  constexpr int kRowsPerBlock = KernelPolicy::kBlockThreads / kThreadsPerRow;
  constexpr int kN = VecTraits<T>::kN;
  const int group = threadIdx.x / kThreadsPerRow;
  const int lane = threadIdx.x % kThreadsPerRow;
  const int64_t V = layout.vocab, rows = layout.rows();
  const auto& tf = p.transform;
  const bool identity = tf.identity();
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + group; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* row = logits + layout.offset(r);
    T* grow = grad + grad_layout.offset(r);
    const int64_t y = labels[r];
    const float g = in.grad_logprob ? in.grad_logprob[r] : 0.f;
    const float gh = in.grad_entropy ? in.grad_entropy[r] : 0.f;
    const bool zero = y == p.ignore_index || (g == 0.f && gh == 0.f);
    // An out-of-range label poisons the row (NaN lse -> NaN p -> NaN gradient), per the contract.
    const float lse = zero ? 0.f : (y >= 0 && y < V ? in.lse[r] : kNaN);
    const float hshift = (!zero && gh != 0.f) ? in.entropy[r] - lse : 0.f;
    auto grad_at = [&](float x, int64_t i) -> float {
      if (zero) return 0.f;
      const float z = identity ? x : tf.apply(x);
      const float pz = __expf(z - lse);
      float d = -g * pz;
      if (gh != 0.f && pz > 0.f) d -= gh * pz * (z + hshift);
      if (i == y) d += g;
      return identity ? d : d * tf.derivative(x);
    };
    int64_t vec_end = 0;
    if constexpr (kVec) {
      vec_end = (V / kN) * kN;
      for (int64_t i = static_cast<int64_t>(lane) * kN; i < vec_end; i += kThreadsPerRow * kN) {
        uint4 raw = *reinterpret_cast<const uint4*>(row + i);
        T vals[kN];
        memcpy(vals, &raw, sizeof(raw));
#pragma unroll
        for (int k = 0; k < kN; ++k) vals[k] = from_float<T>(grad_at(to_float(vals[k]), i + k));
        memcpy(&raw, vals, sizeof(raw));
        *reinterpret_cast<uint4*>(grow + i) = raw;
      }
    }
    for (int64_t i = vec_end + lane; i < V; i += kThreadsPerRow)
      grow[i] = from_float<T>(grad_at(to_float(row[i]), i));
  }
}

namespace detail {

// Every launch goes through here. Host compilers see this header only through the CPU emulator
// in tests/cuda_emu, whose cuda_runtime.h stand-in supplies hafrm_cuda_emu_launch (one host
// thread per CUDA thread), so the kernels' text is the same on both paths.
template <class... P, class... A>
cudaError_t launch_kernel(void (*kernel)(P...), unsigned grid, unsigned block, cudaStream_t stream,
                          A... args) {
#if defined(__CUDACC__)
  kernel<<<grid, block, 0, stream>>>(args...);
  return cudaGetLastError();
#else
  return hafrm_cuda_emu_launch(kernel, dim3(grid), dim3(block), 0, stream, args...);
#endif
}

template <class T>
bool vec_aligned(const T* base, const core::RowLayout& L) {
  constexpr int64_t kN = VecTraits<T>::kN;
  return reinterpret_cast<uintptr_t>(base) % KernelPolicy::kVecBytes == 0 &&
         L.stride_outer % kN == 0 && L.stride_inner % kN == 0;
}

inline unsigned grid_for(int64_t rows, int rows_per_block) {
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  return static_cast<unsigned>(blocks < (int64_t{1} << 30) ? (blocks > 0 ? blocks : 1)
                                                           : (int64_t{1} << 30));
}

// Runtime V -> compile-time group width: 32 threads for short rows, 256 (one row per block) for
// long ones, so that small vocabularies still fill the block.
template <class F>
cudaError_t dispatch_threads_per_row(int64_t V, F&& f) {
  if (V <= 512) return f(std::integral_constant<int, 32>{});
  if (V <= 4096) return f(std::integral_constant<int, 128>{});
  return f(std::integral_constant<int, 256>{});
}

}  // namespace detail

template <class T>
cudaError_t launch_token_logprobs_forward(const T* logits, const core::RowLayout& layout,
                                          const int64_t* labels, const core::LogProbParams& p,
                                          const core::ForwardOutputs& out, cudaStream_t stream) {
  const int64_t rows = layout.rows();
  if (rows == 0) return cudaSuccess;
  const bool extra = out.entropy || out.log_sum_p2;
  const bool vec = detail::vec_aligned(logits, layout);
  return detail::dispatch_threads_per_row(layout.vocab, [&](auto tpr) -> cudaError_t {
    constexpr int kTpr = decltype(tpr)::value;
    const unsigned grid = detail::grid_for(rows, KernelPolicy::kBlockThreads / kTpr);
    auto launch = [&](auto kernel) {
      return detail::launch_kernel(kernel, grid, KernelPolicy::kBlockThreads, stream, logits,
                                   layout, labels, p, out);
    };
    if (extra) {
      return vec ? launch(token_logprobs_forward_kernel<T, kTpr, true, true>)
                 : launch(token_logprobs_forward_kernel<T, kTpr, true, false>);
    }
    return vec ? launch(token_logprobs_forward_kernel<T, kTpr, false, true>)
               : launch(token_logprobs_forward_kernel<T, kTpr, false, false>);
  });
}

template <class T>
cudaError_t launch_token_logprobs_backward(const T* logits, T* grad, const core::RowLayout& layout,
                                           const core::RowLayout& grad_layout,
                                           const int64_t* labels, const core::LogProbParams& p,
                                           const core::BackwardInputs& in, cudaStream_t stream) {
  const int64_t rows = layout.rows();
  if (rows == 0) return cudaSuccess;
  const bool vec = detail::vec_aligned(logits, layout) && detail::vec_aligned<T>(grad, grad_layout);
  return detail::dispatch_threads_per_row(layout.vocab, [&](auto tpr) -> cudaError_t {
    constexpr int kTpr = decltype(tpr)::value;
    const unsigned grid = detail::grid_for(rows, KernelPolicy::kBlockThreads / kTpr);
    auto kernel = vec ? token_logprobs_backward_kernel<T, kTpr, true>
                      : token_logprobs_backward_kernel<T, kTpr, false>;
    return detail::launch_kernel(kernel, grid, KernelPolicy::kBlockThreads, stream, logits, grad,
                                 layout, grad_layout, labels, p, in);
  });
}

}  // namespace hafrm::kernels::cuda
