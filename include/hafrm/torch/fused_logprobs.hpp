// hafrm/torch/fused_logprobs.hpp: the autograd Function over the fused kernels. Forward keeps
// the logits (already alive in the caller's graph), the labels and one float32 LSE per row (plus
// the entropy when asked); no [N, V] float32 tensor is created except the logits' gradient.
#pragma once

#include <torch/torch.h>

#include "hafrm/torch/cpu_logprobs.hpp"
#include "hafrm/torch/cuda_logprobs.hpp"
#include "hafrm/torch/kernel_args.hpp"
#include "hafrm/torch/logprob_options.hpp"

namespace hafrm::detail {

inline FusedForward fused_forward_any(const torch::Tensor& logits, const torch::Tensor& labels,
                                      const TokenLogProbOptions& o, bool need_lse) {
  if (logits.is_cuda()) return cuda_fused_forward(logits, labels, o, need_lse);
  TORCH_CHECK(logits.is_cpu(), "hafrm::token_logprobs: argument 'logits' is on ", logits.device(),
              ", which has no fused kernel; use LogProbBackend::kReference");
  return cpu_fused_forward(logits, labels, o, need_lse);
}

// The backward kernel of the logits' device (forward: fused_forward_any).
inline torch::Tensor fused_backward_any(const torch::Tensor& z, const torch::Tensor& y,
                                        const torch::Tensor& g_lp, const torch::Tensor& g_h,
                                        const torch::Tensor& lse, const torch::Tensor& ent,
                                        const TokenLogProbOptions& o) {
  if (z.is_cuda()) return cuda_fused_backward(z, y, g_lp, g_h, lse, ent, o);
  return cpu_fused_backward(z, y, g_lp, g_h, lse, ent, o);
}

// What a backward over the fused kernels reads back from its autograd context: the logit
// transform, ignore_index and the in-place flag. One writer and one reader of those keys for
// every Function (token, linear, and the vocab-parallel ones in hafrm/distributed).
inline void save_backward_options(torch::autograd::AutogradContext* ctx,
                                  const TokenLogProbOptions& o) {
  ctx->saved_data["ignore_index"] = o.ignore_index;
  ctx->saved_data["scale"] = o.logit_scale;
  ctx->saved_data["softcap"] = o.softcap;
  ctx->saved_data["temperature"] = o.temperature;
  ctx->saved_data["inplace"] = o.inplace_backward;
}
inline TokenLogProbOptions load_backward_options(torch::autograd::AutogradContext* ctx) {
  TokenLogProbOptions o;
  o.ignore_index = ctx->saved_data["ignore_index"].toInt();
  o.logit_scale = ctx->saved_data["scale"].toDouble();
  o.softcap = ctx->saved_data["softcap"].toDouble();
  o.temperature = ctx->saved_data["temperature"].toDouble();
  o.inplace_backward = ctx->saved_data["inplace"].toBool();
  return o;
}

// autograd Functions cannot return undefined tensors: outputs not asked for travel as empty
// placeholders, which unpack_outputs turns back into undefined tensors.
inline torch::autograd::variable_list finish_outputs(torch::autograd::AutogradContext* ctx,
                                                     torch::autograd::variable_list outs) {
  for (auto& t : outs)
    if (!t.defined()) t = torch::empty({0}, outs[0].options());
  ctx->mark_non_differentiable({outs[2], outs[3], outs[4], outs[5]});
  return outs;
}

inline TokenLogProbs unpack_outputs(const torch::autograd::variable_list& outs,
                                    const TokenLogProbOptions& o, c10::IntArrayRef shape,
                                    const torch::Tensor& mask) {
  auto view = [&](const torch::Tensor& t, bool want) {
    return want ? t.view(shape) : torch::Tensor();
  };
  TokenLogProbs r;
  r.logprobs = view(outs[0], true);
  r.entropy = view(outs[1], o.return_entropy);
  r.lse = view(outs[2], o.return_lse);
  r.log_sum_p2 = view(outs[3], o.return_log_sum_p2);
  r.mean_logit = view(outs[4], o.return_mean_logit);
  r.is_argmax = view(outs[5], o.return_is_argmax);
  r.mask = mask;
  return r;
}

// Outputs, flat [rows]: 0 logprob, 1 entropy (or undefined), 2 lse, 3 log_sum_p2,
// 4 mean_logit, 5 is_argmax. Only the first two carry gradients.
struct FusedTokenLogProbsFunction : torch::autograd::Function<FusedTokenLogProbsFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& logits,
                                                const torch::Tensor& labels_flat,
                                                TokenLogProbOptions o) {
    const bool grad = logits.requires_grad();
    auto r = fused_forward_any(logits, labels_flat, o, /*need_lse=*/grad);
    if (grad) {
      ctx->save_for_backward(
          {logits, labels_flat, r.lse, r.entropy.defined() ? r.entropy : torch::Tensor()});
      save_backward_options(ctx, o);
    }
    return finish_outputs(ctx, {r.logprob, r.entropy, o.return_lse ? r.lse : torch::Tensor(),
                                r.log_sum_p2, r.mean_logit, r.is_argmax});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto o = load_backward_options(ctx);
    // The entropy slot's gradient only counts when entropy was really computed (saved[3]).
    torch::Tensor grad_entropy =
        grads.size() > 1 && saved[3].defined() && saved[3].numel() > 0 ? grads[1] : torch::Tensor();
    auto g = fused_backward_any(saved[0], saved[1], grads[0], grad_entropy, saved[2], saved[3], o);
    return {g, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace hafrm::detail
