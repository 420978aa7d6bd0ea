// hafrm/losses/trainer_helpers.hpp: the trainer-side pieces some losses need (docs/losses.md):
// KTO's KL estimate from mismatched pairs and the aot losses' batch sort. TR-DPO's reference sync
// works on modules, so it lives in hafrm/model/reference_sync.hpp.
//
// example-begin trainer_helpers Unpaired
//   auto kl_index = hafrm::kto_mismatched_index(n);   // completion of row i-1 for prompt i
//   in.kl = hafrm::kto_kl_estimate(pi_kl, rho_kl);    // max(0, mean(pi - rho)), no grad
// example-end
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "hafrm/torch/checks.hpp"

namespace hafrm {

// KTO's mismatched pairs: prompt i is paired with the completion of row i - 1 (mod n), as TRL
// cycles completions by one within the batch. Needs n >= 2 (else the pair is not mismatched).
inline torch::Tensor kto_mismatched_index(int64_t n) {
  HAFRM_CHECK_ARG(n >= 2, "kto_mismatched_index", "n",
                  "expected a batch of at least 2 (a KL pair must mismatch), got ", n);
  return torch::roll(torch::arange(n, torch::kLong), 1);
}

// KTO's KL estimate z = max(0, mean(pi_KL - rho_KL)) over the mismatched pairs, without gradient.
inline torch::Tensor kto_kl_estimate(const torch::Tensor& policy_kl,
                                     const torch::Tensor& reference_kl) {
  constexpr const char* fn = "kto_kl_estimate";
  detail::check_floating(policy_kl, fn, "policy_kl");
  detail::check_floating(reference_kl, fn, "reference_kl");
  detail::check_nonempty(policy_kl, fn, "policy_kl");
  detail::check_same_shape(policy_kl, reference_kl, fn, "policy_kl", "reference_kl");
  detail::check_same_device(policy_kl, reference_kl, fn, "policy_kl", "reference_kl");
  torch::NoGradGuard ng;
  return (policy_kl.detach() - reference_kl.detach()).mean().clamp_min(0.0);
}

// The aot losses' batch sort: sort(a) - sort(b), each ascending over the batch; differentiable
// (the gradient flows back to the unsorted positions).
inline torch::Tensor aot_sorted_difference(const torch::Tensor& a, const torch::Tensor& b) {
  constexpr const char* fn = "aot_sorted_difference";
  detail::check_floating(a, fn, "a");
  detail::check_dim(a, 1, fn, "a");
  detail::check_same_shape(a, b, fn, "a", "b");
  return std::get<0>(torch::sort(a, 0)) - std::get<0>(torch::sort(b, 0));
}

}  // namespace hafrm
