// hafrm/torch/cuda_logprobs.hpp: the host-side entry points of the fused CUDA kernels.
//
// hafrm is header-only, but device code must be compiled by nvcc once per program. The package
// therefore ships one CUDA source, src/hafrm_cuda_ops.cu, that defines these functions; CMake
// compiles it into a small static library `hafrm_cuda_ops` inside the consumer's own build when
// HAFRM_WITH_CUDA is ON, links it into hafrm::hafrm and defines HAFRM_WITH_CUDA=1. Without it, a
// CUDA tensor reaching a fused path raises an error naming that option (never a silent fallback).
#pragma once

#include <torch/torch.h>

#include "hafrm/torch/kernel_args.hpp"
#include "hafrm/torch/logprob_options.hpp"

namespace hafrm::detail {

#if defined(HAFRM_WITH_CUDA) && HAFRM_WITH_CUDA
inline constexpr bool kCudaCompiled = true;
FusedForward cuda_fused_forward(const torch::Tensor& logits, const torch::Tensor& labels_flat,
                                const TokenLogProbOptions& o, bool need_lse);
torch::Tensor cuda_fused_backward(const torch::Tensor& logits, const torch::Tensor& labels_flat,
                                  const torch::Tensor& grad_logprob,
                                  const torch::Tensor& grad_entropy, const torch::Tensor& lse,
                                  const torch::Tensor& entropy, const TokenLogProbOptions& o);
#else
inline constexpr bool kCudaCompiled = false;
[[noreturn]] inline void cuda_not_compiled() {
  TORCH_CHECK(false,
              "hafrm: a CUDA tensor reached the fused log-prob kernel, but hafrm's CUDA kernels "
              "were not compiled into this program. Configure with -DHAFRM_WITH_CUDA=ON (needs a "
              "CUDA toolkit and a CUDA build of LibTorch), or pass "
              "TokenLogProbOptions::backend = LogProbBackend::kReference.");
}
inline FusedForward cuda_fused_forward(const torch::Tensor&, const torch::Tensor&,
                                       const TokenLogProbOptions&, bool) {
  cuda_not_compiled();
}
inline torch::Tensor cuda_fused_backward(const torch::Tensor&, const torch::Tensor&,
                                         const torch::Tensor&, const torch::Tensor&,
                                         const torch::Tensor&, const torch::Tensor&,
                                         const TokenLogProbOptions&) {
  cuda_not_compiled();
}
#endif

}  // namespace hafrm::detail

namespace hafrm {

// Throws the error naming `labels` for an out-of-range label that a hafrm CUDA kernel recorded
// (TokenLogProbOptions::check_labels) and that no hafrm call has reported yet; clears it. It
// does not synchronise: call it after something that has, e.g. the loss's .item(), to be sure
// the last step's kernels are covered. Without it the error comes at the next hafrm CUDA call.
//
// example-begin check_cuda_label_errors Logits
//   auto loss = -hafrm::token_logprobs(logits, labels).sum();  // any step through hafrm
//   loss.backward();
//   float l = loss.item<float>();         // a sync: every kernel of the step has finished
//   hafrm::check_cuda_label_errors();     // throws if one of them saw a bad label
// example-end
#if defined(HAFRM_WITH_CUDA) && HAFRM_WITH_CUDA
void check_cuda_label_errors();
#else
inline void check_cuda_label_errors() {}  // no CUDA kernels, nothing recorded
#endif

}  // namespace hafrm
