// losses.hpp: the trainer's objective, built from spec strings ("bt", "sigmoid:beta=0.1",
// "constant:reward=1,alpha=0.2", "alternate:period=10").
//
// The specs are parsed by the library's registry (hafrm/losses/registry.hpp), so every loss and
// weighting the library offers is selectable from the command line.
//
//   auto objective = hafrm::examples::rm::make_objective("haf", "", "", "");
//   hafrm::HybridOutput out = objective.loss(f.rewards, f.policy, step);
#pragma once

#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <hafrm/losses/hybrid.hpp>
#include <hafrm/losses/policy.hpp>
#include <hafrm/losses/reward.hpp>
#include <hafrm/losses/weighting.hpp>

#include <hafrm/losses/registry.hpp>

namespace hafrm::examples::rm {

// The numeric parameter `key` of a spec, or `fallback` when the spec does not set it or does not
// parse (the registry then reports the error). Only the first loss of a weighted list
// ("sigmoid:beta=0.1,ipo:beta=0.5@0.2") is looked at: the trainer reads beta for the implicit
// reward.
inline double spec_param(std::string_view spec, const std::string& key, double fallback) {
  try {
    const auto items = hafrm::parse_loss_spec(spec);
    for (const auto& [k, v] : items.front().params)
      if (k == key) return std::stod(v);
    return fallback;
  } catch (const std::exception&) {
    return fallback;
  }
}

using RewardLossFn = hafrm::AnyRewardLoss;
using PolicyLossFn = hafrm::AnyPolicyLoss;
using WeightingFn = hafrm::AnyWeighting;
inline RewardLossFn make_reward_loss(std::string_view s) { return hafrm::make_reward_loss(s); }
inline PolicyLossFn make_policy_loss(std::string_view s) { return hafrm::make_policy_loss(s); }
inline WeightingFn make_weighting(std::string_view s) { return hafrm::make_weighting(s); }

using HybridObjective = hafrm::HybridLoss<RewardLossFn, PolicyLossFn, WeightingFn>;

// What an objective name means. The score is what the evaluation ranks pairs by: the reward
// head for bt and haf, DPO's implicit reward beta * (logp - ref) for dpo.
struct ObjectiveSpec {
  std::string objective;  // "bt" | "haf" | "dpo"
  std::string reward_loss, policy_loss, weighting;
  bool score_is_implicit = false;
  double beta = 0.1;  // for the implicit reward beta * (logp - ref)
};

// Fills the objective's defaults for the specs left empty: bt = alpha 0, haf = HaF defaults
// (w_R 1, alpha 0.2, beta 0.1), dpo = w_R 0, alpha 1.
inline ObjectiveSpec resolve_objective(const std::string& objective, std::string reward_loss,
                                       std::string policy_loss, std::string weighting) {
  std::string default_weighting;
  if (objective == "bt")
    default_weighting = "constant:reward=1,alpha=0";
  else if (objective == "haf")
    default_weighting = "constant:reward=1,alpha=0.2";
  else if (objective == "dpo")
    default_weighting = "constant:reward=0,alpha=1";
  else
    throw std::invalid_argument("--objective must be bt, haf or dpo, got \"" + objective + "\"");
  ObjectiveSpec s;
  s.objective = objective;
  s.reward_loss = reward_loss.empty() ? "bt" : std::move(reward_loss);
  s.policy_loss = policy_loss.empty() ? "sigmoid:beta=0.1" : std::move(policy_loss);
  s.weighting = weighting.empty() ? default_weighting : std::move(weighting);
  s.score_is_implicit = objective == "dpo";
  s.beta = spec_param(s.policy_loss, "beta", 0.1);
  return s;
}

inline HybridObjective make_objective(const ObjectiveSpec& s) {
  return HybridObjective{make_reward_loss(s.reward_loss), make_policy_loss(s.policy_loss),
                         make_weighting(s.weighting)};
}

}  // namespace hafrm::examples::rm
