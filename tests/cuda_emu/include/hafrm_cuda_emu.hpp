// hafrm_cuda_emu.hpp: a small CPU emulation of the CUDA execution model, enough to compile
// hafrm's kernel header (include/hafrm/kernels/cuda/*.cuh) unchanged as host C++ and run it
// through its real launch_* entry points on machines without a GPU (every CI run).
//
// Model: one host thread per CUDA thread of a block; the grid's blocks run one after another on
// the same set of threads. __syncthreads is a std::barrier over the block; a warp shuffle writes
// the lane's value to a per-warp slot, waits on a per-warp std::barrier and reads the source
// lane's slot (two slot buffers alternate, so one barrier phase per shuffle suffices). Divergent
// barriers or shuffles deadlock here, which ctest's timeout reports, where hardware would give
// undefined results. __shared__ becomes a function-local static: launches are synchronous and
// one at a time, so one copy per kernel instantiation is the block's shared memory.
//
// Knobs for tests (namespace hafrm_cuda_emu): max_grid caps gridDim.x below what the launcher
// asked for (the kernels are grid-stride loops, so results must not change), sm_count is what
// cudaDeviceGetAttribute reports, and launches/last_grid/last_block record what was launched.
#pragma once

#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

// ---- CUDA keywords ---------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
// __restrict__ is a GCC/Clang keyword already.

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};

inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

// ---- runtime types ---------------------------------------------------------------------------
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
enum cudaDeviceAttr : int {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMultiProcessorCount = 16
};

namespace hafrm_cuda_emu {
inline unsigned max_grid = 0;  // 0: no cap
inline int sm_count = 132;
inline int64_t launches = 0;
inline dim3 last_grid{0, 0, 0}, last_block{0, 0, 0};
inline cudaError_t last_error = cudaSuccess;

struct BlockCtx {
  explicit BlockCtx(unsigned threads) : block(threads) {
    const unsigned warps = (threads + 31) / 32;
    for (unsigned w = 0; w < warps; ++w) {
      const unsigned n = threads - 32 * w < 32 ? threads - 32 * w : 32;
      warp.push_back(std::make_unique<std::barrier<>>(n));
    }
    slots.resize(static_cast<size_t>(warps) * 2 * 32);
  }
  std::barrier<> block;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<uint64_t> slots;  // [warp][buffer][lane]
};
inline thread_local BlockCtx* ctx = nullptr;
inline thread_local unsigned shfl_buffer = 0;

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "hafrm_cuda_emu: %s\n", what);
  std::abort();
}

// Shuffle: publish v, wait for the warp, read lane src's value.
template <class T, class SrcFn>
T exchange(unsigned mask, T v, SrcFn src_of) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  if (mask != 0xffffffffu) fail("only full-warp shuffles are emulated");
  const unsigned tid = threadIdx.x, w = tid / 32, lane = tid % 32;
  uint64_t* buf = ctx->slots.data() + (static_cast<size_t>(w) * 2 + shfl_buffer) * 32;
  shfl_buffer ^= 1u;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  buf[lane] = bits;
  ctx->warp[w]->arrive_and_wait();
  const unsigned warp_size = blockDim.x - 32 * w < 32 ? blockDim.x - 32 * w : 32;
  const unsigned s = src_of(lane);
  if (s >= warp_size) fail("shuffle source lane outside the warp");
  T out;
  std::memcpy(&out, &buf[s], sizeof(T));
  return out;
}

template <class K, class... A>
cudaError_t launch(K* kernel, dim3 grid, dim3 block, std::size_t /*smem*/, cudaStream_t,
                   A... args) {
  if (grid.x == 0 || grid.x > 0x7fffffffu || grid.y == 0 || grid.y > 65535 || grid.z != 1 ||
      block.x == 0 || block.x > 1024 || block.y != 1 || block.z != 1) {
    last_error = cudaErrorInvalidConfiguration;
    return last_error;
  }
  ++launches;
  last_grid = grid, last_block = block;
  const unsigned gx = max_grid && grid.x > max_grid ? max_grid : grid.x;
  BlockCtx c(block.x);
  std::vector<std::thread> threads;
  threads.reserve(block.x);
  for (unsigned t = 0; t < block.x; ++t) {
    threads.emplace_back([&, t] {
      ctx = &c;
      shfl_buffer = 0;
      threadIdx = dim3(t, 0, 0);
      blockDim = block;
      gridDim = dim3(gx, grid.y, 1);
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < gx; ++bx) {
          blockIdx = dim3(bx, by, 0);
          kernel(args...);
          c.block.arrive_and_wait();  // the next block starts on fresh shared memory
        }
      ctx = nullptr;
    });
  }
  for (auto& th : threads) th.join();
  return cudaSuccess;
}
}  // namespace hafrm_cuda_emu

// The launch hook include/hafrm/kernels/cuda/*.cuh calls when not compiled by nvcc.
template <class K, class... A>
cudaError_t hafrm_cuda_emu_launch(K* kernel, dim3 grid, dim3 block, std::size_t smem,
                                  cudaStream_t stream, A... args) {
  return hafrm_cuda_emu::launch(kernel, grid, block, smem, stream, args...);
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = hafrm_cuda_emu::last_error;
  hafrm_cuda_emu::last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return hafrm_cuda_emu::last_error; }
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    default:
      return "unspecified launch failure";
  }
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? hafrm_cuda_emu::sm_count : 1024;
  return cudaSuccess;
}

// Stream-ordered allocation: launches are synchronous here, so plain malloc / free. Counted so
// tests can see that every workspace is returned.
namespace hafrm_cuda_emu {
inline int64_t live_allocations = 0;
}
inline cudaError_t cudaMallocAsync(void** p, std::size_t bytes, cudaStream_t) {
  *p = std::malloc(bytes ? bytes : 1);
  if (!*p) return cudaErrorInvalidValue;
  ++hafrm_cuda_emu::live_allocations;
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  std::free(p);
  --hafrm_cuda_emu::live_allocations;
  return cudaSuccess;
}

// ---- device intrinsics -----------------------------------------------------------------------
inline void __syncthreads() { hafrm_cuda_emu::ctx->block.arrive_and_wait(); }
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return hafrm_cuda_emu::exchange(mask, v, [&](unsigned lane) {
    const unsigned s = lane ^ static_cast<unsigned>(lane_mask);
    return s / width == lane / width ? s : lane;
  });
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return hafrm_cuda_emu::exchange(mask, v, [&](unsigned lane) {
    return (lane % width) + delta < static_cast<unsigned>(width) ? lane + delta : lane;
  });
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return hafrm_cuda_emu::exchange(
      mask, v, [&](unsigned lane) { return (lane % width) >= delta ? lane - delta : lane; });
}
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return hafrm_cuda_emu::exchange(mask, v, [&](unsigned lane) {
    return (lane / width) * width + static_cast<unsigned>(src) % width;
  });
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
// Atomics and fences: "device memory" is host memory here, so std::atomic_ref does it (and the
// ThreadSanitizer build sees them as the synchronisation they are). __ldcv, a load that bypasses
// caches, is a relaxed atomic load: another thread may be writing the word.
template <class T>
T __ldcv(const T* p) {
  return std::atomic_ref<T>(*const_cast<T*>(p)).load(std::memory_order_relaxed);
}
inline unsigned atomicCAS(unsigned* p, unsigned expected, unsigned desired) {
  std::atomic_ref<unsigned>(*p).compare_exchange_strong(expected, desired);
  return expected;  // the old value either way
}
inline unsigned atomicExch(unsigned* p, unsigned v) {
  return std::atomic_ref<unsigned>(*p).exchange(v);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
// __expf is ex2.approx(x * log2 e) on hardware; exp2f of the same product keeps its rounding of
// the argument (the hardware's further ~2 ulp approximation error is inside every tolerance).
inline float __expf(float x) { return std::exp2f(x * 1.4426950408889634f); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.f / a; }

// The bit reinterpretations are std::bit_cast, as in the bf16/fp16 stand-ins.
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline float __uint_as_float(unsigned i) { return std::bit_cast<float>(i); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
