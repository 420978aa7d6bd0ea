// hafrm/losses/weighting.hpp: how the hybrid loss weighs its two terms at a given step:
// L = w_R(step) * L_reward + alpha(step) * L_policy.
//
// example-begin weighting Policy
//   hafrm::ConstantWeighting w;                         // HaF defaults: w_R 1, alpha 0.2
//   hafrm::AlternateWeighting alt{.period = 100};       // HaF code's alternate mode
//   auto [w_r, alpha] = alt(step);
//   if (hafrm::ConstantWeighting{.alpha = 0.0}.policy_always_zero()) { /* bt: reward only */ }
// example-end
//
// policy_always_zero(): true when alpha is 0 at every step, so the policy term never counts and
// neither the LM head nor a reference has to run (HybridLoss::needs_policy()). A weighting of your
// own may define it too; without it, a weighting is taken to need the policy term.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <numbers>

#include "hafrm/torch/checks.hpp"

namespace hafrm {

struct HybridWeights {
  double reward = 1.0;  // w_R
  double policy = 0.2;  // alpha
};

namespace detail {
inline void check_weights(double reward, double policy, std::string_view fn,
                          std::string_view policy_arg = "alpha") {
  check_weight(reward, fn, "reward_weight");
  check_weight(policy, fn, policy_arg);
}
inline void check_step(int64_t step, std::string_view fn) {
  HAFRM_CHECK_ARG(step >= 0, fn, "step", "expected a training step >= 0, got ", step);
}
// Whether a weighting says its policy weight is 0 at every step (false when it cannot say).
template <class W>
bool weighting_policy_always_zero(const W& w) {
  if constexpr (requires {
                  { w.policy_always_zero() } -> std::convertible_to<bool>;
                })
    return static_cast<bool>(w.policy_always_zero());
  else
    return false;
}
}  // namespace detail

// The paper's runs: fixed w_R = rm_ratio = 1, alpha = dpo_ratio = 0.2.
// kName: the registry name (make_weighting), which errors and AnyWeighting::name() use.
struct ConstantWeighting {
  double reward_weight = 1.0;
  double alpha = 0.2;
  static constexpr const char* kName = "constant";
  void validate() const { detail::check_weights(reward_weight, alpha, kName); }
  HybridWeights operator()(int64_t step) const {
    validate();
    detail::check_step(step, kName);
    return {reward_weight, alpha};
  }
  bool policy_always_zero() const { return alpha == 0.0; }
};

// The HaF code's alternate mode: with period k, steps in even blocks (step / k even) train only
// the policy term, odd blocks only the reward term.
struct AlternateWeighting {
  int64_t period = 1;
  double reward_weight = 1.0;
  double alpha = 0.2;
  static constexpr const char* kName = "alternate";
  void validate() const {
    detail::check_weights(reward_weight, alpha, kName);
    HAFRM_CHECK_ARG(period >= 1, kName, "period", "expected >= 1, got ", period);
  }
  HybridWeights operator()(int64_t step) const {
    validate();
    detail::check_step(step, kName);
    const bool policy_block = (step / period) % 2 == 0;
    return policy_block ? HybridWeights{0.0, alpha} : HybridWeights{reward_weight, 0.0};
  }
  bool policy_always_zero() const { return alpha == 0.0; }
};

// alpha rises linearly from 0 to `alpha` over warmup_steps, then stays (reward weight fixed).
// Why: the reward head starts at zero, so some users prefer the policy term to enter gradually.
struct LinearWarmupWeighting {
  int64_t warmup_steps = 100;
  double reward_weight = 1.0;
  double alpha = 0.2;
  static constexpr const char* kName = "warmup";
  void validate() const {
    detail::check_weights(reward_weight, alpha, kName);
    HAFRM_CHECK_ARG(warmup_steps >= 0, kName, "warmup_steps", "expected >= 0, got ", warmup_steps);
  }
  HybridWeights operator()(int64_t step) const {
    validate();
    detail::check_step(step, kName);
    if (warmup_steps == 0 || step >= warmup_steps) return {reward_weight, alpha};
    return {reward_weight, alpha * static_cast<double>(step) / static_cast<double>(warmup_steps)};
  }
  bool policy_always_zero() const { return alpha == 0.0; }
};

// alpha follows a half cosine from alpha_start to alpha_end over total_steps, then stays.
struct CosineWeighting {
  int64_t total_steps = 1000;
  double reward_weight = 1.0;
  double alpha_start = 0.2;
  double alpha_end = 0.0;
  static constexpr const char* kName = "cosine";
  void validate() const {
    detail::check_weights(reward_weight, alpha_start, kName, "alpha_start");
    detail::check_weight(alpha_end, kName, "alpha_end");
    HAFRM_CHECK_ARG(total_steps >= 1, kName, "total_steps", "expected >= 1, got ", total_steps);
  }
  HybridWeights operator()(int64_t step) const {
    validate();
    detail::check_step(step, kName);
    const double t = std::min(1.0, static_cast<double>(step) / static_cast<double>(total_steps));
    const double a =
        alpha_end + 0.5 * (alpha_start - alpha_end) * (1.0 + std::cos(std::numbers::pi * t));
    return {reward_weight, a};
  }
  bool policy_always_zero() const { return alpha_start == 0.0 && alpha_end == 0.0; }
};

}  // namespace hafrm
