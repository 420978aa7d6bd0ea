// hafrm/losses/trainer_helpers.hpp: the trainer-side pieces some losses need (docs/losses.md):
// TR-DPO's reference sync, KTO's KL estimate from mismatched pairs, and the aot losses' batch sort.
//
//   hafrm::ReferenceSync sync{.steps = 512, .alpha = 0.6};              // TR-DPO
//   if (sync(step, *policy, *reference)) log("reference synced");      // after optimizer.step()
//
//   auto kl_index = hafrm::kto_mismatched_index(n);   // completion of row i-1 for prompt i
//   in.kl = hafrm::kto_kl_estimate(pi_kl, rho_kl);    // max(0, mean(pi - rho)), no grad
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "hafrm/torch/checks.hpp"

namespace hafrm {

// TR-DPO: reference <- alpha * policy + (1 - alpha) * reference, parameter by parameter, in place
// (no copy of either model). Both lists must hold the same shapes in the same order.
inline void sync_reference(const std::vector<torch::Tensor>& policy,
                           const std::vector<torch::Tensor>& reference, double alpha) {
  constexpr const char* fn = "sync_reference";
  detail::check_closed(alpha, 0.0, 1.0, fn, "alpha");
  HAFRM_CHECK_ARG(policy.size() == reference.size(), fn, "reference",
                  "expected as many parameters as the policy (", policy.size(), "), got ",
                  reference.size());
  torch::NoGradGuard ng;  // the reference may still require grad; this is not a training op
  for (size_t i = 0; i < policy.size(); ++i) {
    const auto& p = policy[i];
    auto r = reference[i];
    const std::string arg = "reference parameter " + std::to_string(i);
    HAFRM_CHECK_ARG(p.defined() && r.defined(), fn, arg, "must be defined (policy's too)");
    HAFRM_CHECK_ARG(p.sizes() == r.sizes(), fn, arg, "expected the policy parameter's shape ",
                    p.sizes(), ", got ", r.sizes());
    detail::check_same_device(p, r, fn, "policy parameter", arg);
    r.mul_(1.0 - alpha).add_(p, alpha);
  }
}

inline void sync_reference(const torch::nn::Module& policy, torch::nn::Module& reference,
                           double alpha) {
  sync_reference(policy.parameters(), reference.parameters(), alpha);
}

// TR-DPO's schedule: sync every `steps` completed optimizer steps (TRL's ref_model_sync_steps 512,
// ref_model_mixup_alpha 0.6). `step` counts completed steps, so step 0 never syncs.
struct ReferenceSync {
  int64_t steps = 512;
  double alpha = 0.6;

  void validate() const {
    HAFRM_CHECK_ARG(steps >= 1, "ReferenceSync", "steps", "expected >= 1, got ", steps);
    detail::check_closed(alpha, 0.0, 1.0, "ReferenceSync", "alpha");
  }
  bool due(int64_t step) const {
    validate();
    return step > 0 && step % steps == 0;
  }
  // Syncs when due; returns whether it did.
  template <class Policy, class Reference>
  bool operator()(int64_t step, const Policy& policy, Reference& reference) const {
    if (!due(step)) return false;
    sync_reference(policy, reference, alpha);
    return true;
  }
};

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
