// hafrm_cuda_ops.cu: the one compiled CUDA source of header-only hafrm. CMake builds it into the
// static library `hafrm_cuda_ops` inside the consumer's build when HAFRM_WITH_CUDA is ON (see
// include/hafrm/torch/cuda_logprobs.hpp). Each op reads the same way: checks, device guard,
// current stream, dtype dispatch, launch, status-to-exception.
#ifndef HAFRM_WITH_CUDA
#define HAFRM_WITH_CUDA 1
#endif

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "hafrm/kernels/cuda/token_logprobs.cuh"
#include "hafrm/torch/cuda_logprobs.hpp"
#include "hafrm/torch/row_layout.hpp"

namespace hafrm::detail {

namespace {

template <class F>
void dispatch_cuda_dtype(at::ScalarType t, const char* op, F&& f) {
  switch (t) {
    case at::kFloat:
      return f(float{});
    case at::kBFloat16:
      return f(__nv_bfloat16{});
    case at::kHalf:
      return f(__half{});
    default:
      TORCH_CHECK(false, "hafrm::", op, ": argument 'logits' has dtype ", t,
                  "; the fused CUDA kernel takes float32, bfloat16 or float16 (use "
                  "LogProbBackend::kReference for float64)");
  }
}

void check_status(cudaError_t e, const char* op) {
  TORCH_CHECK(e == cudaSuccess, "hafrm::", op,
              ": CUDA kernel launch failed: ", cudaGetErrorString(e));
}

}  // namespace

FusedForward cuda_fused_forward(const torch::Tensor& logits, const torch::Tensor& labels_flat,
                                const TokenLogProbOptions& o, bool need_lse) {
  TORCH_CHECK(labels_flat.is_cuda() && labels_flat.device() == logits.device(),
              "hafrm::token_logprobs: argument 'labels' must be on ", logits.device());
  c10::cuda::CUDAGuard guard(logits.device());
  auto [x, layout] = row_layout(logits);
  FusedForward r = allocate_fused_outputs(layout.rows(), o, need_lse, logits.device());
  const core::ForwardOutputs out = output_pointers(r);
  core::LogProbParams p{o.ignore_index, make_transform(o)};
  auto stream = at::cuda::getCurrentCUDAStream(logits.device().index()).stream();
  dispatch_cuda_dtype(x.scalar_type(), "token_logprobs (CUDA forward)", [&](auto tag) {
    using T = decltype(tag);
    check_status(kernels::cuda::launch_token_logprobs_forward(
                     reinterpret_cast<const T*>(x.const_data_ptr()), layout,
                     labels_flat.const_data_ptr<int64_t>(), p, out, stream),
                 "token_logprobs (CUDA forward)");
  });
  return r;
}

torch::Tensor cuda_fused_backward(const torch::Tensor& logits, const torch::Tensor& labels_flat,
                                  const torch::Tensor& grad_logprob,
                                  const torch::Tensor& grad_entropy, const torch::Tensor& lse,
                                  const torch::Tensor& entropy, const TokenLogProbOptions& o) {
  c10::cuda::CUDAGuard guard(logits.device());
  auto [x, layout] = row_layout(logits);
  const bool inplace = o.inplace_backward && x.is_same(logits) && rows_disjoint(layout);
  torch::Tensor grad = inplace ? x : torch::empty_like(x, at::MemoryFormat::Contiguous);
  auto glayout = row_layout(grad).second;
  auto gl = grad_logprob.defined() ? grad_logprob.contiguous().to(torch::kFloat) : torch::Tensor();
  auto ge = grad_entropy.defined() ? grad_entropy.contiguous().to(torch::kFloat) : torch::Tensor();
  core::BackwardInputs in;
  in.grad_logprob = gl.defined() ? gl.const_data_ptr<float>() : nullptr;
  in.grad_entropy = ge.defined() ? ge.const_data_ptr<float>() : nullptr;
  in.lse = lse.const_data_ptr<float>();
  in.entropy = entropy.defined() && entropy.numel() > 0 ? entropy.const_data_ptr<float>() : nullptr;
  core::LogProbParams p{o.ignore_index, make_transform(o)};
  auto stream = at::cuda::getCurrentCUDAStream(logits.device().index()).stream();
  dispatch_cuda_dtype(x.scalar_type(), "token_logprobs (CUDA backward)", [&](auto tag) {
    using T = decltype(tag);
    check_status(kernels::cuda::launch_token_logprobs_backward(
                     reinterpret_cast<const T*>(x.const_data_ptr()),
                     reinterpret_cast<T*>(grad.mutable_data_ptr()), layout, glayout,
                     labels_flat.const_data_ptr<int64_t>(), p, in, stream),
                 "token_logprobs (CUDA backward)");
  });
  return inplace ? logits : grad;
}

}  // namespace hafrm::detail
