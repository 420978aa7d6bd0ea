// hafrm/losses/policy_inputs.hpp: what a token-level policy loss consumes: per-sequence summed
// log-probs of the policy and (optionally) the frozen reference, and token counts.
//
// example-begin policy_inputs Sequences
//   hafrm::PolicyInputs in;
//   in.policy_chosen = seq_c.sum;   in.policy_rejected = seq_r.sum;    // [B], with grad
//   in.reference_chosen = ref_c;    in.reference_rejected = ref_r;     // [B]; undefined = 0
//   in.chosen_count = seq_c.count;  in.rejected_count = seq_r.count;   // [B] (for means)
// example-end
// and optionally in.tokens, the per-token part (PolicyTokenInputs, for LD-DPO and WPO).
//
// The per-token part is computed once per batch (forward_pair with
// PairForwardOptions::keep_token_inputs) and shared by every loss of a weighted list: a list of
// three losses costs one log-prob pass.
#pragma once

#include <torch/torch.h>

#include <optional>

#include "hafrm/losses/loss_output.hpp"

namespace hafrm {

// Per-token log-probs of one batch, [B, T_c] for chosen and [B, T_r] for rejected (T_c and T_r may
// differ), 0 where a position is not scored. Masks are bool (or 0/1) with the same shapes.
struct PolicyTokenInputs {
  torch::Tensor policy_chosen, policy_rejected;          // policy per-token log-probs, with grad
  torch::Tensor chosen_mask, rejected_mask;              // scored (response) tokens
  torch::Tensor reference_chosen, reference_rejected;    // optional: the reference's, no grad
  torch::Tensor log_sum_p2_chosen, log_sum_p2_rejected;  // optional: log sum_v p_v^2 (WPO)
};

struct PolicyInputs {
  torch::Tensor policy_chosen, policy_rejected;        // [B] summed log-probs (pi_c, pi_r)
  torch::Tensor reference_chosen, reference_rejected;  // [B] (rho_c, rho_r); undefined: ref-free
  torch::Tensor chosen_count, rejected_count;          // [B] scored tokens (n_c, n_r)
  std::optional<PolicyTokenInputs> tokens;             // per-token part, for LD-DPO and WPO
  torch::Tensor kl_estimate;  // scalar KTO KL estimate z (kto_kl_estimate); read only by Kto
  // Optional [B]: summed log-probs (with grad) and scored-token counts of the chosen sequences'
  // prompts; read only by Orpo with OrpoNll::kPromptAndResponse (TRL's NLL term).
  torch::Tensor policy_chosen_prompt, chosen_prompt_count;
};

// The checked, dtype-promoted quantities of docs/losses.md's notation, as a loss's per_pair()
// receives them (policy_base.hpp).
struct PolicyTerms {
  torch::Tensor pi_c, pi_r;    // policy sums
  torch::Tensor rho_c, rho_r;  // reference sums (zeros when reference-free)
  torch::Tensor n_c, n_r;  // counts as floating tensors; undefined when neither needed nor given
  torch::Tensor delta_c() const { return pi_c - rho_c; }
  torch::Tensor delta_r() const { return pi_r - rho_r; }
};

namespace detail {

// Token counts [B] as like's dtype: whole numbers, each >= 1 (a sum over no scored token is 0,
// which every loss would silently read as probability 1), or >= 0 with allow_zero (a prompt with
// no scored token). One content check (torch/checks.hpp's values_hold); on failure the error
// names the first offending pair.
inline torch::Tensor check_counts(const torch::Tensor& t, std::string_view fn, std::string_view arg,
                                  const torch::Tensor& like, bool allow_zero = false) {
  HAFRM_CHECK_ARG(t.defined(), fn, arg,
                  "is required by this loss (token counts for length normalisation)");
  HAFRM_CHECK_ARG(t.dim() == 1 && t.size(0) == like.size(0), fn, arg, "expected shape [",
                  like.size(0), "], got ", t.sizes());
  check_same_device(like, t, fn, "inputs.policy_chosen", arg);
  auto ok = allow_zero ? t >= 0 : t > 0;
  // A count is a number of tokens: 2.5 (or inf, or NaN) would silently rescale a mean.
  if (t.is_floating_point()) ok = ok & torch::isfinite(t) & (t == torch::round(t));
  const char* expected = allow_zero ? "expected whole token counts >= 0"
                                    : "expected whole token counts >= 1: every pair needs at "
                                      "least one scored token on each side";
  if (!values_hold(ok, fn, arg, expected)) {
    const int64_t pair = (~ok).nonzero()[0][0].item<int64_t>();
    HAFRM_CHECK_ARG(false, fn, arg, expected, "; pair ", pair, " has ", t[pair].item<double>());
  }
  return t.to(like.scalar_type());
}

inline PolicyTerms check_policy(const PolicyInputs& in, std::string_view fn, bool need_counts,
                                bool reference_free) {
  PolicyTerms t;
  t.pi_c = check_batch_vector(in.policy_chosen, fn, "inputs.policy_chosen");
  const int64_t B = t.pi_c.size(0);
  t.pi_r = check_batch_vector(in.policy_rejected, fn, "inputs.policy_rejected", B);
  check_same_device(t.pi_c, t.pi_r, fn, "inputs.policy_chosen", "inputs.policy_rejected");
  const bool have_ref = in.reference_chosen.defined() || in.reference_rejected.defined();
  if (have_ref && !reference_free) {
    HAFRM_CHECK_ARG(
        in.reference_chosen.defined() && in.reference_rejected.defined(), fn,
        in.reference_chosen.defined() ? "inputs.reference_rejected" : "inputs.reference_chosen",
        "must be given together with its pair (or neither, for a reference-free loss)");
    t.rho_c = check_batch_vector(in.reference_chosen, fn, "inputs.reference_chosen", B)
                  .detach()
                  .to(t.pi_c.scalar_type());
    t.rho_r = check_batch_vector(in.reference_rejected, fn, "inputs.reference_rejected", B)
                  .detach()
                  .to(t.pi_c.scalar_type());
    check_same_device(t.pi_c, t.rho_c, fn, "inputs.policy_chosen", "inputs.reference_chosen");
    check_same_device(t.pi_c, t.rho_r, fn, "inputs.policy_chosen", "inputs.reference_rejected");
  } else {
    t.rho_c = torch::zeros_like(t.pi_c);
    t.rho_r = torch::zeros_like(t.pi_r);
  }
  // Counts are checked whenever they are given, not only when the loss divides by them: a side
  // with no scored token sums to log-prob 0 and would pass silently through a loss on sums.
  if (need_counts || in.chosen_count.defined())
    t.n_c = check_counts(in.chosen_count, fn, "inputs.chosen_count", t.pi_c);
  if (need_counts || in.rejected_count.defined())
    t.n_r = check_counts(in.rejected_count, fn, "inputs.rejected_count", t.pi_c);
  return t;
}

// The per-token part, required by a loss that names why.
inline const PolicyTokenInputs& require_tokens(const PolicyInputs& in, std::string_view fn,
                                               std::string_view why) {
  HAFRM_CHECK_ARG(in.tokens.has_value(), fn, "inputs.tokens", "is required by this loss (", why,
                  "); fill PolicyInputs::tokens, e.g. with forward_pair and "
                  "PairForwardOptions::keep_token_inputs = true");
  return *in.tokens;
}

// A per-token tensor of the token part: defined, [B, T] with the shape of its side's mask.
inline torch::Tensor check_token_tensor(const torch::Tensor& t, const torch::Tensor& mask,
                                        std::string_view fn, std::string_view arg,
                                        std::string_view why) {
  HAFRM_CHECK_ARG(t.defined(), fn, arg, "is required by this loss (", why, ")");
  check_floating(t, fn, arg);
  HAFRM_CHECK_ARG(t.sizes() == mask.sizes(), fn, arg, "expected the shape of its mask ",
                  mask.sizes(), ", got ", t.sizes());
  check_same_device(mask, t, fn, "mask", arg);
  return compute_dtype(t);
}

// A side's mask: defined, [B, T] with B the batch size.
inline torch::Tensor check_token_mask(const torch::Tensor& m, int64_t batch, std::string_view fn,
                                      std::string_view arg) {
  HAFRM_CHECK_ARG(m.defined(), fn, arg, "is required by this loss (the scored-token mask)");
  HAFRM_CHECK_ARG(m.dim() == 2 && m.size(0) == batch && m.size(1) > 0, fn, arg, "expected shape [",
                  batch, ", T] with T >= 1, got ", m.sizes());
  return m.to(torch::kBool);
}

// DPO's implicit-reward metrics: beta * Delta, their accuracy and margin.
inline void implicit_reward_metrics(LossOutput& out, const PolicyTerms& t, double beta) {
  torch::NoGradGuard ng;
  auto rc = beta * t.delta_c();
  auto rr = beta * t.delta_r();
  out.metrics["rewards_chosen"] = rc.mean();
  out.metrics["rewards_rejected"] = rr.mean();
  out.metrics["rewards_accuracy"] = (rc > rr).to(torch::kFloat).mean();
  out.metrics["rewards_margin"] = (rc - rr).mean();
  out.metrics["logps_chosen"] = t.pi_c.mean();
  out.metrics["logps_rejected"] = t.pi_r.mean();
}

}  // namespace detail
}  // namespace hafrm
