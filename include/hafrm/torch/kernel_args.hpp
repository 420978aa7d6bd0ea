// hafrm/torch/kernel_args.hpp: what the torch adapters of the fused kernels (cpu_logprobs.hpp,
// src/hafrm_cuda_ops.cu) hand the raw-pointer kernels and get back: the per-row outputs,
// allocated and viewed as core::ForwardOutputs; the saved statistics and upstream gradients of
// a backward as core::BackwardInputs; the options' logit transform as core::LogitTransform.
// Internal plumbing, kept apart from the public options (logprob_options.hpp). The adapters call
// the same functions, so the CPU and CUDA paths check the same things.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string_view>

#include "hafrm/core/logprob_layout.hpp"
#include "hafrm/core/math.hpp"
#include "hafrm/torch/checks.hpp"
#include "hafrm/torch/logprob_options.hpp"

namespace hafrm::detail {

// Per-row float32 outputs (flat [rows]) of a fused forward kernel.
struct FusedForward {
  torch::Tensor logprob, lse, entropy, log_sum_p2, mean_logit, is_argmax;
};

// The outputs a fused forward writes, allocated on `device` (only those asked for).
inline FusedForward allocate_fused_outputs(int64_t rows, const TokenLogProbOptions& o,
                                           bool need_lse, const torch::Device& device) {
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(device);
  FusedForward r;
  r.logprob = torch::empty({rows}, f32);
  if (need_lse || o.return_lse) r.lse = torch::empty({rows}, f32);
  if (o.return_entropy) r.entropy = torch::empty({rows}, f32);
  if (o.return_log_sum_p2) r.log_sum_p2 = torch::empty({rows}, f32);
  if (o.return_mean_logit) r.mean_logit = torch::empty({rows}, f32);
  if (o.return_is_argmax) r.is_argmax = torch::empty({rows}, f32.dtype(torch::kBool));
  return r;
}

// The raw-pointer view of those outputs that the kernels take (nullptr: not asked for).
inline core::ForwardOutputs output_pointers(FusedForward& r) {
  auto ptr = [](torch::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
  core::ForwardOutputs out;
  out.logprob = ptr(r.logprob);
  out.lse = ptr(r.lse);
  out.entropy = ptr(r.entropy);
  out.log_sum_p2 = ptr(r.log_sum_p2);
  out.mean_logit = ptr(r.mean_logit);
  out.is_argmax = r.is_argmax.defined() ? r.is_argmax.data_ptr<bool>() : nullptr;
  return out;
}

inline core::LogitTransform make_transform(const TokenLogProbOptions& o) {
  core::LogitTransform t;
  t.scale = static_cast<float>(o.logit_scale);
  t.softcap = static_cast<float>(o.softcap);
  t.inv_temperature = static_cast<float>(1.0 / o.temperature);
  return t;
}

// The labels a fused kernel reads, for `rows` rows of `logits`: checked by both adapters before
// any pointer is taken. Labels on another device are the caller's error (named); the rest only
// a bug in hafrm can break (the entry points flatten the labels to int64 themselves).
inline void check_kernel_labels(const torch::Tensor& logits, const torch::Tensor& labels_flat,
                                int64_t rows, std::string_view fn) {
  HAFRM_CHECK_ARG(labels_flat.device() == logits.device(), fn, "labels", "expected to be on ",
                  logits.device(), " with the logits, got ", labels_flat.device());
  TORCH_INTERNAL_ASSERT(labels_flat.scalar_type() == torch::kLong && labels_flat.dim() == 1 &&
                            labels_flat.is_contiguous() && labels_flat.numel() == rows,
                        "hafrm: a fused kernel got labels that are not flat contiguous int64 [",
                        rows, "]: ", labels_flat.scalar_type(), " ", labels_flat.sizes());
}

// A backward's per-row inputs as the kernels read them: the upstream gradients as contiguous
// float32 (kept alive here), the forward's saved statistics. One builder for the CPU and CUDA
// adapters. The shapes are invariants of the autograd Functions (an undefined or empty entropy
// with an entropy gradient would be read out of bounds), so they are internal asserts.
struct KernelBackwardInputs {
  torch::Tensor grad_logprob, grad_entropy;  // float32 copies (or the tensors themselves)
  core::BackwardInputs in;
};

inline KernelBackwardInputs backward_inputs(const torch::Tensor& grad_logprob,
                                            const torch::Tensor& grad_entropy,
                                            const torch::Tensor& lse, const torch::Tensor& entropy,
                                            int64_t rows) {
  auto rows_of = [rows](const torch::Tensor& t) {
    return t.scalar_type() == torch::kFloat && t.is_contiguous() && t.numel() == rows;
  };
  TORCH_INTERNAL_ASSERT(lse.defined() && rows_of(lse),
                        "hafrm: a fused backward needs the forward's float32 lse of ", rows,
                        " rows");
  KernelBackwardInputs r;
  auto f32 = [](const torch::Tensor& t) {
    return t.defined() ? t.contiguous().to(torch::kFloat) : torch::Tensor();
  };
  r.grad_logprob = f32(grad_logprob);
  r.grad_entropy = f32(grad_entropy);
  if (r.grad_logprob.defined())
    TORCH_INTERNAL_ASSERT(r.grad_logprob.numel() == rows, "hafrm: grad_logprob has ",
                          r.grad_logprob.numel(), " elements for ", rows, " rows");
  if (r.grad_entropy.defined()) {
    TORCH_INTERNAL_ASSERT(r.grad_entropy.numel() == rows, "hafrm: grad_entropy has ",
                          r.grad_entropy.numel(), " elements for ", rows, " rows");
    TORCH_INTERNAL_ASSERT(entropy.defined() && rows_of(entropy),
                          "hafrm: an entropy gradient needs the forward's float32 entropy of ",
                          rows, " rows");
  }
  r.in.grad_logprob = r.grad_logprob.defined() ? r.grad_logprob.const_data_ptr<float>() : nullptr;
  r.in.grad_entropy = r.grad_entropy.defined() ? r.grad_entropy.const_data_ptr<float>() : nullptr;
  r.in.lse = lse.const_data_ptr<float>();
  // Read only with an entropy gradient (an empty placeholder otherwise).
  r.in.entropy = r.grad_entropy.defined() ? entropy.const_data_ptr<float>() : nullptr;
  return r;
}

}  // namespace hafrm::detail
