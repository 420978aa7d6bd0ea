// hafrm/torch/cpu_logprobs.hpp: the torch adapter of the fused CPU kernels: dtype dispatch
// (float32, bfloat16, float16 -> float32 math), row layout, output allocation, at::parallel_for.
#pragma once

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <Eigen/Core>

#include <cstdint>

#include "hafrm/kernels/cpu/token_logprobs.hpp"
#include "hafrm/torch/grad_buffer_pool.hpp"
#include "hafrm/torch/kernel_args.hpp"
#include "hafrm/torch/logprob_options.hpp"
#include "hafrm/torch/row_layout.hpp"

namespace hafrm::detail {

// ATen's reduced-precision types and Eigen's share one bit layout; the kernels use Eigen's.
template <class T>
struct eigen_scalar {
  using type = T;
};
template <>
struct eigen_scalar<at::BFloat16> {
  using type = Eigen::bfloat16;
};
template <>
struct eigen_scalar<at::Half> {
  using type = Eigen::half;
};

struct AtenParallelFor {
  template <class F>
  void operator()(int64_t begin, int64_t end, int64_t grain, F&& f) const {
    at::parallel_for(begin, end, grain, f);
  }
};

inline FusedForward cpu_fused_forward(const torch::Tensor& logits, const torch::Tensor& labels_flat,
                                      const TokenLogProbOptions& o, bool need_lse) {
  auto [x, layout] = row_layout(logits);
  check_kernel_labels(logits, labels_flat, layout.rows(), "token_logprobs");
  FusedForward r = allocate_fused_outputs(layout.rows(), o, need_lse, logits.device());
  const core::ForwardOutputs out = output_pointers(r);
  kernels::cpu::Params p{o.ignore_index, make_transform(o)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "hafrm_cpu_fwd", [&] {
    using T = typename eigen_scalar<scalar_t>::type;
    kernels::cpu::token_logprobs_forward(reinterpret_cast<const T*>(x.const_data_ptr<scalar_t>()),
                                         layout, labels_flat.const_data_ptr<int64_t>(), p, out,
                                         AtenParallelFor{});
  });
  return r;
}

// Gradient w.r.t. logits, in logits' dtype and shape. With inplace, written over logits; else
// into a buffer from the gradient pool (grad_buffer_pool.hpp: reused across steps when free).
inline torch::Tensor cpu_fused_backward(const torch::Tensor& logits,
                                        const torch::Tensor& labels_flat,
                                        const torch::Tensor& grad_logprob,
                                        const torch::Tensor& grad_entropy, const torch::Tensor& lse,
                                        const torch::Tensor& entropy,
                                        const TokenLogProbOptions& o) {
  auto [x, layout] = row_layout(logits);
  // Checks first: a rejected call takes no buffer from the pool.
  check_kernel_labels(logits, labels_flat, layout.rows(), "token_logprobs");
  const KernelBackwardInputs bi =
      backward_inputs(grad_logprob, grad_entropy, lse, entropy, layout.rows());
  const bool inplace = o.inplace_backward && x.is_same(logits) && rows_disjoint(layout);
  torch::Tensor grad = inplace ? x : GradBufferPool::instance().acquire(x.sizes(), x.options());
  auto [g_ignored, glayout] = row_layout(grad);
  (void)g_ignored;
  kernels::cpu::Params p{o.ignore_index, make_transform(o)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "hafrm_cpu_bwd", [&] {
    using T = typename eigen_scalar<scalar_t>::type;
    kernels::cpu::token_logprobs_backward(reinterpret_cast<const T*>(x.const_data_ptr<scalar_t>()),
                                          reinterpret_cast<T*>(grad.mutable_data_ptr<scalar_t>()),
                                          layout, glayout, labels_flat.const_data_ptr<int64_t>(), p,
                                          bi.in, AtenParallelFor{});
  });
  return inplace ? logits : grad;
}

}  // namespace hafrm::detail
