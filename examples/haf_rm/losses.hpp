// losses.hpp: the trainer's objective, built from spec strings ("bt", "sigmoid:beta=0.1",
// "constant:reward=1,alpha=0.2", "alternate:period=10").
//
// The specs are parsed and checked by the library's registry (hafrm/losses/registry.hpp) alone,
// so every loss and weighting the library offers is selectable from the command line and a bad
// spec gets the registry's error. The trainer never needs a spec's parameters itself: its scores
// rank pairs, and DPO's beta > 0 does not change the implicit reward's ranking.
//
//   auto spec = hafrm::examples::rm::resolve_objective("haf", "", "", "");  // "" = defaults
//   auto objective = hafrm::examples::rm::make_objective(spec);
//   hafrm::HybridOutput out = objective(f.rewards, f.policy, step);
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <hafrm/losses/hybrid.hpp>
#include <hafrm/losses/registry.hpp>

namespace hafrm::examples::rm {

using RewardLossFn = hafrm::AnyRewardLoss;
using PolicyLossFn = hafrm::AnyPolicyLoss;
using WeightingFn = hafrm::AnyWeighting;
inline RewardLossFn make_reward_loss(std::string_view s) { return hafrm::make_reward_loss(s); }
inline PolicyLossFn make_policy_loss(std::string_view s) { return hafrm::make_policy_loss(s); }
inline WeightingFn make_weighting(std::string_view s) { return hafrm::make_weighting(s); }

using HybridObjective = hafrm::HybridLoss<RewardLossFn, PolicyLossFn, WeightingFn>;

// What an objective name means. The score is what the evaluation ranks pairs by: the reward
// head for bt and haf, DPO's implicit reward beta * (logp - ref) for dpo. lm and sft train the
// LM head alone on single sequences (sequence_data.hpp) and have no loss specs.
struct ObjectiveSpec {
  std::string objective;  // "bt" | "haf" | "dpo" | "lm" | "sft"
  std::string reward_loss, policy_loss, weighting;
  bool score_is_implicit = false;
  bool sequence = false;  // lm or sft: next-token loss on single sequences, no pairs
};

inline bool is_sequence_objective(const std::string& objective) {
  return objective == "lm" || objective == "sft";
}

// Fills the objective's defaults for the specs left empty: bt = alpha 0, haf = HaF defaults
// (w_R 1, alpha 0.2, beta 0.1), dpo = w_R 0, alpha 1.
inline ObjectiveSpec resolve_objective(const std::string& objective, std::string reward_loss,
                                       std::string policy_loss, std::string weighting) {
  if (is_sequence_objective(objective)) {
    for (const auto& [option, spec] :
         {std::pair<const char*, const std::string&>{"--reward-loss", reward_loss},
          {"--policy-loss", policy_loss},
          {"--weighting", weighting}})
      if (!spec.empty())
        throw std::invalid_argument(std::string(option) + " \"" + spec +
                                    "\" applies to --objective bt, haf and dpo; --objective " +
                                    objective + " trains the LM head alone with a next-token loss");
    ObjectiveSpec s;
    s.objective = objective;
    s.sequence = true;
    return s;
  }
  std::string default_weighting;
  if (objective == "bt")
    default_weighting = "constant:reward=1,alpha=0";
  else if (objective == "haf")
    default_weighting = "constant:reward=1,alpha=0.2";
  else if (objective == "dpo")
    default_weighting = "constant:reward=0,alpha=1";
  else
    throw std::invalid_argument("--objective must be bt, haf, dpo, lm or sft, got \"" + objective +
                                "\"");
  ObjectiveSpec s;
  s.objective = objective;
  s.reward_loss = reward_loss.empty() ? "bt" : std::move(reward_loss);
  s.policy_loss = policy_loss.empty() ? "sigmoid:beta=0.1" : std::move(policy_loss);
  s.weighting = weighting.empty() ? default_weighting : std::move(weighting);
  s.score_is_implicit = objective == "dpo";
  return s;
}

// The pair objective of `s`; std::invalid_argument for lm and sft, which have none.
inline HybridObjective make_objective(const ObjectiveSpec& s) {
  if (s.sequence)
    throw std::invalid_argument("make_objective: --objective " + s.objective +
                                " is a next-token loss, not a pair objective");
  return HybridObjective{make_reward_loss(s.reward_loss), make_policy_loss(s.policy_loss),
                         make_weighting(s.weighting)};
}

}  // namespace hafrm::examples::rm
