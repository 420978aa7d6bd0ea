// hafrm/core/macros.hpp: the few macros every layer shares. Torch-free and CUDA-free.
//
//   HAFRM_HOST_DEVICE  marks math usable from host code and from CUDA device code.
//   HAFRM_INLINE       forces inlining of tiny hot helpers.
//   HAFRM_EXEC_CHECK_DISABLE  before a HAFRM_HOST_DEVICE template that calls a callable it is
//                      given: nvcc then accepts a device-only callable (the CUDA kernel's exp),
//                      as Thrust and Eigen do for theirs. Nothing elsewhere.
//   HAFRM_INTERNAL_ASSERT(cond, what)  an invariant that only a bug in hafrm can break, in the
//                      torch-free layers (torch/ uses TORCH_INTERNAL_ASSERT, and named
//                      HAFRM_CHECK_ARG errors for what a caller can get wrong, as PyTorch does).
//                      Host code only; throws std::logic_error naming the place and `what`.
#pragma once

#include <stdexcept>
#include <string>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HAFRM_HOST_DEVICE __host__ __device__
#else
#define HAFRM_HOST_DEVICE
#endif

#if defined(__CUDACC__) && !defined(__clang__)
#define HAFRM_EXEC_CHECK_DISABLE _Pragma("nv_exec_check_disable")
#else
#define HAFRM_EXEC_CHECK_DISABLE
#endif

#if defined(_MSC_VER)
#define HAFRM_INLINE __forceinline
#else
#define HAFRM_INLINE inline __attribute__((always_inline))
#endif

namespace hafrm::core::detail {
[[noreturn]] inline void internal_assert_failed(const char* cond, const char* what,
                                                const char* file, int line) {
  throw std::logic_error(std::string("hafrm internal assert failed at ") + file + ":" +
                         std::to_string(line) + ": " + cond + " (" + what +
                         "); this is a bug in hafrm, please report it");
}
}  // namespace hafrm::core::detail

#define HAFRM_INTERNAL_ASSERT(cond, what)                                                        \
  do {                                                                                           \
    if (!(cond)) ::hafrm::core::detail::internal_assert_failed(#cond, what, __FILE__, __LINE__); \
  } while (0)

#define HAFRM_VERSION_MAJOR 0
#define HAFRM_VERSION_MINOR 1
#define HAFRM_VERSION_PATCH 0
