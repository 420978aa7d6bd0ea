// hafrm/losses/modifiers.hpp: modifiers that apply to any pairwise policy loss
// (docs/losses.md, "Modifiers"), from the per-token part of PolicyInputs:
//   LD-DPO  length desensitisation: a response's log-prob sums its first min(n_c, n_r) tokens
//           fully and ld_alpha times the rest (policy and reference alike);
//   WPO     each pair's loss times w_chosen * w_rejected, without gradient, where
//           w = exp(mean_t(log p_t - log sum_v p_v^2)).
//
// example-begin modifiers Policy
//   hafrm::LengthDesensitised<hafrm::Dpo> ld{.loss = {.beta = 0.1}, .ld_alpha = 0.5};
//   hafrm::WpoWeighted<hafrm::Ipo> wpo{.loss = {.beta = 0.5}};
//   auto out = ld(inputs);   // inputs.tokens filled (PairForwardOptions::keep_token_inputs)
//   auto weighted = wpo(inputs);   // also needs the tokens' log sum p^2 (return_log_sum_p2)
// example-end
//
// Both compose: WpoWeighted<LengthDesensitised<Dpo>> weighs by the raw per-token log-probs and
// computes the loss from the desensitised sums, as TRL does.
#pragma once

#include <torch/torch.h>

#include "hafrm/losses/policy_base.hpp"

namespace hafrm {

namespace detail {
// The per-token part both modifiers read, checked: the masks (bool) and the policy's per-token
// log-probs, chosen and rejected.
struct TokenPolicy {
  torch::Tensor chosen_mask, rejected_mask, chosen, rejected;
};
inline TokenPolicy check_token_policy(const PolicyTokenInputs& tk, std::string_view fn,
                                      std::string_view why) {
  check_floating(tk.policy_chosen, fn, "inputs.tokens.policy_chosen");
  const int64_t b = tk.policy_chosen.size(0);
  auto mc = check_token_mask(tk.chosen_mask, b, fn, "inputs.tokens.chosen_mask");
  auto mr = check_token_mask(tk.rejected_mask, b, fn, "inputs.tokens.rejected_mask");
  auto lc = check_token_tensor(tk.policy_chosen, mc, fn, "inputs.tokens.policy_chosen", why);
  auto lr = check_token_tensor(tk.policy_rejected, mr, fn, "inputs.tokens.policy_rejected", why);
  return {mc, mr, lc, lr};
}
}  // namespace detail

// The inputs with each sum replaced by its LD-DPO form (counts unchanged). Needs the per-token
// policy log-probs and masks, and the reference's per-token log-probs when a reference is given.
inline PolicyInputs length_desensitised(const PolicyInputs& in, double ld_alpha,
                                        std::string_view fn = "ld_dpo") {
  detail::check_closed(ld_alpha, 0.0, 1.0, fn, "ld_alpha");
  constexpr const char* why = "LD-DPO re-weighs per-token log-probs";
  const auto& tk = detail::require_tokens(in, fn, why);
  auto [mc, mr, lc, lr] = detail::check_token_policy(tk, fn, why);
  // Position of each scored token within its response (1-based), and the shared length.
  auto pos_c = mc.cumsum(1), pos_r = mr.cumsum(1);
  auto shared = torch::minimum(mc.sum(1), mr.sum(1)).unsqueeze(1);
  auto head_c = mc & (pos_c <= shared), tail_c = mc & (pos_c > shared);
  auto head_r = mr & (pos_r <= shared), tail_r = mr & (pos_r > shared);
  auto ld_sum = [&](const torch::Tensor& lp, const torch::Tensor& head, const torch::Tensor& tail) {
    auto zero = torch::zeros({}, lp.options());
    return torch::where(head, lp, zero).sum(1) + ld_alpha * torch::where(tail, lp, zero).sum(1);
  };
  PolicyInputs out = in;
  out.policy_chosen = ld_sum(lc, head_c, tail_c);
  out.policy_rejected = ld_sum(lr, head_r, tail_r);
  const bool sum_ref = in.reference_chosen.defined() || in.reference_rejected.defined();
  const bool token_ref = tk.reference_chosen.defined() || tk.reference_rejected.defined();
  if (sum_ref || token_ref) {
    constexpr const char* ref_why = "LD-DPO re-weighs the reference's per-token log-probs too";
    auto rc = detail::check_token_tensor(tk.reference_chosen, mc, fn,
                                         "inputs.tokens.reference_chosen", ref_why);
    auto rr = detail::check_token_tensor(tk.reference_rejected, mr, fn,
                                         "inputs.tokens.reference_rejected", ref_why);
    out.reference_chosen = ld_sum(rc.detach(), head_c, tail_c);
    out.reference_rejected = ld_sum(rr.detach(), head_r, tail_r);
  }
  return out;
}

// WPO's per-pair weights {w_chosen, w_rejected}, [B] each, without gradient.
inline std::pair<torch::Tensor, torch::Tensor> wpo_weights(const PolicyInputs& in,
                                                           std::string_view fn = "wpo") {
  constexpr const char* why = "WPO weighs each pair by its per-token probabilities";
  const auto& tk = detail::require_tokens(in, fn, why);
  auto [mc, mr, lc, lr] = detail::check_token_policy(tk, fn, why);
  constexpr const char* p2_why =
      "WPO needs log sum_v p_v^2 per token: TokenLogProbOptions::return_log_sum_p2";
  auto sc = detail::check_token_tensor(tk.log_sum_p2_chosen, mc, fn,
                                       "inputs.tokens.log_sum_p2_chosen", p2_why);
  auto sr = detail::check_token_tensor(tk.log_sum_p2_rejected, mr, fn,
                                       "inputs.tokens.log_sum_p2_rejected", p2_why);
  torch::NoGradGuard ng;
  auto weight = [](const torch::Tensor& lp, const torch::Tensor& lsp2, const torch::Tensor& m) {
    auto aligned = torch::where(m, lp.detach() - lsp2.detach().to(lp.scalar_type()),
                                torch::zeros({}, lp.options()));
    return torch::exp(aligned.sum(1) / m.sum(1).clamp_min(1).to(lp.scalar_type()));
  };
  return {weight(lc, sc, mc), weight(lr, sr, mr)};
}

namespace detail {

// Whether a loss (or the loss a modifier wraps) sorts over the batch, so per-pair weights would
// not line up with its per-pair losses.
template <class L>
constexpr bool sorts_batch() {
  if constexpr (requires { L::kSortsBatch; })
    return L::kSortsBatch;
  else if constexpr (requires(L l) { l.loss; })
    return sorts_batch<decltype(L::loss)>();
  else
    return false;
}

// Sets the reduction of a loss, or of the loss a modifier without its own reduction wraps.
template <class L>
void set_reduction(L& l, Reduction r) {
  if constexpr (requires { l.reduction; })
    l.reduction = r;
  else
    set_reduction(l.loss, r);
}

}  // namespace detail

// LD-DPO around any pairwise policy loss L. The loss's reduction is its own.
template <class L>
struct LengthDesensitised {
  L loss{};
  double ld_alpha = 0.5;  // in [0, 1]: 1 = plain sums, 0 = only the shared length counts

  static constexpr const char* kName = "ld_dpo";
  void validate() const { detail::check_closed(ld_alpha, 0.0, 1.0, kName, "ld_alpha"); }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    return loss(length_desensitised(in, ld_alpha, kName));
  }
};

// WPO around any per-pair policy loss L (not the batch-sorting aot losses).
template <class L>
struct WpoWeighted {
  L loss{};
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "wpo";
  void validate() const {
    HAFRM_CHECK_ARG(!detail::sorts_batch<L>(), kName, "loss",
                    "must give per-pair losses; aot and aot_unpaired sort the batch, which would "
                    "misalign the per-pair weights");
  }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    auto [wc, wr] = wpo_weights(in, kName);
    L per_pair = loss;
    detail::set_reduction(per_pair, Reduction::kNone);
    auto out = per_pair(in);
    HAFRM_CHECK_ARG(out.loss.dim() == 1 && out.loss.size(0) == wc.size(0), kName, "loss",
                    "expected one loss per pair under Reduction::kNone, got shape ",
                    out.loss.sizes());
    out.loss = detail::reduce(out.loss * (wc * wr).to(out.loss.scalar_type()), reduction);
    out.metrics["wpo_weight_chosen"] = wc.mean();
    out.metrics["wpo_weight_rejected"] = wr.mean();
    return out;
  }
};

}  // namespace hafrm
