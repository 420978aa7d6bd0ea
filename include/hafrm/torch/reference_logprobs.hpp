// hafrm/torch/reference_logprobs.hpp: the plain ATen per-token log-prob path. It materialises a
// float32 [N, V] log-softmax and is slow; it exists as the oracle every fused kernel is tested
// against and as the fallback for devices without a fused kernel.
//
//   auto out = hafrm::detail::reference_token_logprobs(logits, labels, opts);
#pragma once

#include <torch/torch.h>

#include "hafrm/torch/logprob_options.hpp"

namespace hafrm::detail {

// Applies the options' logit transform to float32 (or float64) logits, differentiably.
inline torch::Tensor apply_logit_transform(torch::Tensor z, const TokenLogProbOptions& o) {
  if (o.logit_scale != 1.0) z = z * o.logit_scale;
  if (o.softcap > 0.0) z = torch::tanh(z / o.softcap) * o.softcap;
  if (o.temperature != 1.0) z = z / o.temperature;
  return z;
}

inline TokenLogProbs reference_token_logprobs(const torch::Tensor& logits,
                                              const torch::Tensor& labels,
                                              const TokenLogProbOptions& o) {
  // float64 stays float64 so tests can use this path as a float64 oracle.
  auto compute_type = logits.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto z = apply_logit_transform(logits.to(compute_type), o);
  auto mask = labels != o.ignore_index;
  auto safe = labels.to(torch::kLong).masked_fill(~mask, 0);
  auto maskf = mask.to(compute_type);
  auto lsm = torch::log_softmax(z, -1);

  TokenLogProbs out;
  out.mask = mask;
  out.logprobs = lsm.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * maskf;
  // where(): exp(-inf) * -inf would be NaN for -inf logits; such entries carry no mass.
  auto zero = torch::zeros({}, lsm.options());
  if (o.return_lse) out.lse = (torch::logsumexp(z, -1) * maskf).detach();
  if (o.return_entropy) {
    auto p = lsm.exp();
    // Zero the -inf entries before the product: where() alone would still back-propagate
    // 0 * -inf = NaN through the unselected branch.
    out.entropy = -(p * torch::where(p > 0, lsm, zero)).sum(-1) * maskf;
  }
  if (o.return_log_sum_p2) out.log_sum_p2 = (torch::logsumexp(2 * lsm, -1) * maskf).detach();
  if (o.return_mean_logit) out.mean_logit = (z.mean(-1) * maskf).detach();
  if (o.return_is_argmax) {
    auto target = z.gather(-1, safe.unsqueeze(-1)).squeeze(-1);
    out.is_argmax = ((target >= std::get<0>(z.max(-1))) & mask).detach();
  }
  return out;
}

}  // namespace hafrm::detail
