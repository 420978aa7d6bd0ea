// hafrm/model/reward_normalization.hpp: an affine map of a trained reward model's scores, fitted
// once on a reference set after training: r -> (r - mean) / std, so that scores on that set have
// mean 0 and standard deviation 1. It is increasing, so no ranking or pair decision changes; it
// only puts the scores on a known scale (e.g. for a PPO/GRPO reward or a filtering threshold).
//
// example-begin reward_normalization
//   auto reference_rewards = torch::tensor({0.5, 1.5, -0.25, 2.0});   // scores of a reference set
//   auto norm = hafrm::RewardNormalization::fit(reference_rewards);   // mean, population std
//   torch::Tensor z = norm.apply(torch::tensor({1.0f, 3.0f}));        // (r - mean) / std
// example-end
//
// Not the same as the reward-centring term of the losses (BradleyTerry::center_coefficient,
// "bt:center=c"): that is a training-time penalty c * (r_c + r_r)^2 that pulls the rewards
// towards 0 and changes what the model learns; this is fitted after training and changes nothing
// but the scale of the scores.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>

#include "hafrm/torch/checks.hpp"

namespace hafrm {

struct RewardNormalization {
  double mean = 0.0;
  double std = 1.0;
  int64_t count = 0;  // how many rewards it was fitted on (0: not fitted, the identity)

  // mean and population standard deviation (divided by N) of `rewards` (floating, 1-D), computed
  // in float64. Errors: fewer than 2 values, a non-finite value (naming its index), std 0.
  static RewardNormalization fit(const torch::Tensor& rewards) {
    constexpr const char* fn = "RewardNormalization::fit";
    detail::check_floating(rewards, fn, "rewards");
    detail::check_dim(rewards, 1, fn, "rewards");
    const int64_t n = rewards.size(0);
    HAFRM_CHECK_ARG(n >= 2, fn, "rewards", "expected at least 2 rewards to fit a mean and a ",
                    "standard deviation, got ", n);
    auto r = rewards.detach().to(torch::kCPU, torch::kDouble).contiguous();
    const double* p = r.data_ptr<double>();
    double sum = 0.0;
    bool all_equal = true;
    for (int64_t i = 0; i < n; ++i) {
      HAFRM_CHECK_ARG(std::isfinite(p[i]), fn, "rewards", "expected finite rewards; reward ", i,
                      " is ", p[i]);
      sum += p[i];
      all_equal = all_equal && p[i] == p[0];
    }
    const double mean = sum / static_cast<double>(n);
    double sq = 0.0;
    for (int64_t i = 0; i < n; ++i) sq += (p[i] - mean) * (p[i] - mean);
    const double sd = std::sqrt(sq / static_cast<double>(n));
    // All equal: checked exactly, since the rounding of the mean can leave a tiny non-zero sd.
    HAFRM_CHECK_ARG(!all_equal && sd > 0.0 && std::isfinite(sd), fn, "rewards",
                    "expected rewards that are not all equal (their standard deviation is ", sd,
                    ", which cannot scale them)");
    RewardNormalization out{.mean = mean, .std = sd, .count = n};
    out.validate();
    return out;
  }

  // (rewards - mean) / std, in the rewards' dtype and device (computed in float64).
  torch::Tensor apply(const torch::Tensor& rewards) const {
    validate();
    detail::check_floating(rewards, "RewardNormalization::apply", "rewards");
    return ((rewards.to(torch::kDouble) - mean) / std).to(rewards.scalar_type());
  }

  void validate() const {
    constexpr const char* fn = "RewardNormalization";
    HAFRM_CHECK_ARG(std::isfinite(mean), fn, "mean", "expected a finite value, got ", mean);
    HAFRM_CHECK_ARG(std::isfinite(std) && std > 0.0, fn, "std", "expected a finite value > 0, got ",
                    std);
    HAFRM_CHECK_ARG(count >= 0, fn, "count", "expected >= 0, got ", count);
  }
};

}  // namespace hafrm
