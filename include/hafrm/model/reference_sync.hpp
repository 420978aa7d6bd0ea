// hafrm/model/reference_sync.hpp: TR-DPO's reference update, which works on the models themselves
// (the one loss-side helper that does; docs/losses.md, "Trainer-side pieces").
//
// example-begin reference_sync PairModel
//   hafrm::ReferenceSync sync{.steps = 512, .alpha = 0.6};              // TR-DPO
//   bool synced = sync(step, *model, *reference);   // after optimizer.step(); true every 512
// example-end
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

}  // namespace hafrm
