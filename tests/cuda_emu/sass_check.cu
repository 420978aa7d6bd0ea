// Compile-only check of the CUDA kernels (no GPU, no torch): instantiates every launcher so
// nvcc emits every kernel; tests/cuda_emu/sass_check.cmake builds it for sm_90, fails on
// register spills and checks the SASS for 128-bit global loads and stores.
#include "hafrm/kernels/cuda/token_logprobs.cuh"

namespace cu = hafrm::kernels::cuda;

template <class T>
void instantiate() {
  hafrm::core::RowLayout L{};
  hafrm::core::LogProbParams p{};
  cu::launch_token_logprobs_forward<T>(nullptr, L, nullptr, p, {}, nullptr);
  cu::launch_token_logprobs_backward<T>(nullptr, nullptr, L, L, nullptr, p, {}, nullptr);
}

template void instantiate<float>();
template void instantiate<__nv_bfloat16>();
template void instantiate<__half>();
