// hafrm/torch/reference_logprobs.hpp: the plain ATen per-token log-prob path. It materialises a
// float32 [N, V] log-softmax and is slow; it exists as the oracle every fused kernel is tested
// against and as the fallback for devices without a fused kernel.
//
// example-begin reference_logprobs Logits
//   auto out = hafrm::detail::reference_token_logprobs(logits, labels, opts);
// example-end
#pragma once

#include <torch/torch.h>

#include <limits>

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
  const int64_t V = logits.size(-1);
  auto mask = labels != o.ignore_index;
  auto in_range = (labels >= 0) & (labels < V);
  auto zero = torch::zeros({}, logits.options().dtype(compute_type));
  // Ignored rows become all-zero logits before anything is computed: a -inf or NaN logit in an
  // ignored row would otherwise reach its outputs as -inf * 0 = NaN, and its gradient too. where()
  // passes no gradient to the rows it replaces, so the logits' gradient there is exactly 0.
  auto x = torch::where(mask.unsqueeze(-1), logits.to(compute_type), zero);
  // A scored label outside [0, V) (only with check_labels off; the checks reject it otherwise)
  // makes its row NaN, outputs and gradient alike, as on the fused paths. Added, not selected,
  // so the NaN reaches the logits' gradient too.
  if (!o.check_labels) {
    auto nan = torch::full({}, std::numeric_limits<double>::quiet_NaN(), zero.options());
    x = x + torch::where(mask & ~in_range, nan, zero).unsqueeze(-1);
  }
  auto z = apply_logit_transform(x, o);
  // Never gathered out of range: ignored rows and bad labels read column 0.
  auto safe = labels.to(torch::kLong).masked_fill(~(mask & in_range), 0);
  auto lsm = torch::log_softmax(z, -1);
  // Every output is selected, not multiplied, by the mask: ignored positions hold exactly +0.
  auto keep = [&](const torch::Tensor& t) { return torch::where(mask, t, zero); };

  TokenLogProbs out;
  out.mask = mask;
  out.logprobs = keep(lsm.gather(-1, safe.unsqueeze(-1)).squeeze(-1));
  if (o.return_lse) out.lse = keep(torch::logsumexp(z, -1)).detach();
  if (o.return_entropy) {
    auto p = lsm.exp();
    // Zero the -inf entries before the product: where() alone would still back-propagate
    // 0 * -inf = NaN through the unselected branch.
    out.entropy = keep(-(p * torch::where(p > 0, lsm, zero)).sum(-1));
  }
  if (o.return_log_sum_p2) out.log_sum_p2 = keep(torch::logsumexp(2 * lsm, -1)).detach();
  if (o.return_mean_logit) out.mean_logit = keep(z.mean(-1)).detach();
  if (o.return_is_argmax) {
    // Ties: the target counts when it equals the row maximum, whichever index holds it.
    auto target = z.gather(-1, safe.unsqueeze(-1)).squeeze(-1);
    out.is_argmax = ((target >= std::get<0>(z.max(-1))) & mask).detach();
  }
  return out;
}

}  // namespace hafrm::detail
