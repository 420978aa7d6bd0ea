// hafrm/losses/hybrid.hpp: the HaF-RM hybrid objective over any reward loss, any policy loss
// (or a weighted list of them) and any weighting schedule.
//
// example-begin hybrid Hybrid
//   hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo> haf;      // HaF defaults
//   hafrm::HybridOutput out = haf(reward_inputs, policy_inputs, step);
//   out.loss.backward();   // out.reward_loss, out.policy_loss, out.weights, out.metrics
//
//   // several policy losses at once (TRL's MPO), each with its weight:
//   hafrm::PolicyLossList list{{1.0, hafrm::Dpo{}}, {0.5, hafrm::ChosenNll{}}};
//   hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::PolicyLossList> rpo_haf{{}, list};
// example-end
//
// Reward-only objectives: when the weighting's policy weight is 0 at every step (bt: alpha 0),
// needs_policy() is false and the policy inputs may be left empty (policy_chosen and
// policy_rejected undefined: forward_pair with Heads::kReward), so neither the LM head nor the
// reference has to run. The policy term is then skipped: policy_loss stays undefined and there
// are no "policy/..." metrics. A step whose policy weight is not 0 still needs them (an error
// says so).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hafrm/losses/any_loss.hpp"
#include "hafrm/losses/dpo_family.hpp"
#include "hafrm/losses/reward.hpp"
#include "hafrm/losses/weighting.hpp"

namespace hafrm {

namespace detail {

// total += w * term, except that a term whose weight is exactly 0 is left out of the total and of
// its graph: 0 * inf would make the total NaN, and a backward through the unused term could still
// meet inf * 0 inside it. (The term's inputs then get no gradient from it, as when it is absent.)
inline void add_weighted(torch::Tensor& total, double w, const torch::Tensor& term) {
  if (w == 0.0) return;
  total = total.defined() ? total + w * term : w * term;
}

// The total when every weight is 0 (a warm-up's first step with reward weight 0): an exact 0 that
// backward() still accepts, reaching no parameter.
inline torch::Tensor zero_total(const torch::Tensor& like) {
  return torch::zeros({}, like.options()).requires_grad_(like.requires_grad());
}

}  // namespace detail

// Weighted list of policy losses: sum_k w_k * loss_k (each reduced by its own reduction, which
// must be a scalar one). Metrics are prefixed with each loss's name.
class PolicyLossList {
 public:
  PolicyLossList() = default;
  PolicyLossList(std::initializer_list<std::pair<double, AnyPolicyLoss>> items) {
    for (auto& [w, l] : items) add(w, l);
  }
  PolicyLossList& add(double weight, AnyPolicyLoss loss) {
    detail::check_weight(weight, "PolicyLossList", "weight");
    items_.emplace_back(weight, std::move(loss));
    return *this;
  }
  size_t size() const { return items_.size(); }
  const std::vector<std::pair<double, AnyPolicyLoss>>& items() const { return items_; }

  LossOutput operator()(const PolicyInputs& in) const {
    HAFRM_CHECK_ARG(!items_.empty(), "PolicyLossList", "items", "must hold at least one loss");
    LossOutput out;
    torch::Tensor like;
    for (const auto& [w, l] : items_) {
      auto o = l(in);
      HAFRM_CHECK_ARG(o.loss.dim() == 0, "PolicyLossList", l.name(),
                      "must use a scalar reduction (kMean or kSum) inside a weighted list");
      detail::add_weighted(out.loss, w, o.loss);
      out.metrics[l.name() + "/loss"] = o.loss.detach();
      for (auto& [k, v] : o.metrics) out.metrics[l.name() + "/" + k] = v;
      if (!like.defined()) like = o.loss;
    }
    if (!out.loss.defined()) out.loss = detail::zero_total(like);
    return out;
  }

 private:
  std::vector<std::pair<double, AnyPolicyLoss>> items_;
};

struct HybridOutput {
  torch::Tensor loss;         // w_R * reward_loss + alpha * policy_loss (a 0-weight term omitted)
  torch::Tensor reward_loss;  // unweighted
  torch::Tensor policy_loss;  // unweighted; undefined when the policy inputs were left empty
  HybridWeights weights;
  std::map<std::string, torch::Tensor> metrics;  // "reward/..." and "policy/..." entries
};

// L = w_R(step) * RewardLoss(rewards) + alpha(step) * PolicyLoss(policy).
template <class RewardLoss = BradleyTerry, class PolicyLoss = Dpo,
          class Weighting = ConstantWeighting>
struct HybridLoss {
  RewardLoss reward{};
  PolicyLoss policy{};
  Weighting weighting{};

  // False when the weighting's policy weight is 0 at every step (its policy_always_zero()): the
  // policy inputs may then be left empty and nothing of the LM head or the reference is needed.
  bool needs_policy() const { return !detail::weighting_policy_always_zero(weighting); }

  HybridOutput operator()(const RewardInputs& rewards, const PolicyInputs& policy_in,
                          int64_t step = 0) const {
    HybridOutput out;
    out.weights = weighting(step);
    // Empty policy inputs (the reward-only path) are never read: the policy term is skipped.
    const bool policy_given =
        policy_in.policy_chosen.defined() || policy_in.policy_rejected.defined();
    HAFRM_CHECK_ARG(policy_given || out.weights.policy == 0.0, "HybridLoss",
                    "policy_inputs.policy_chosen", "must be given: the policy weight (alpha) is ",
                    out.weights.policy, " at step ", step,
                    " (the policy inputs may be left empty only where it is 0; run forward_pair "
                    "with Heads::kAll)");
    // Given policy inputs are always evaluated so that logs stay comparable across alternate
    // blocks; a term whose weight is 0 at this step is left out of the total (see add_weighted).
    auto r = reward(rewards);
    std::optional<LossOutput> p;
    if (policy_given) p = policy(policy_in);
    HAFRM_CHECK_ARG(r.loss.dim() == 0 && (!p || p->loss.dim() == 0), "HybridLoss", "reduction",
                    "the hybrid needs scalar reward and policy losses (kMean or kSum)");
    // Both terms have checked their own inputs; the pairs they score must be the same pairs.
    const auto batch = [](const torch::Tensor& t) {
      return t.defined() && t.dim() == 1 ? t.size(0) : -1;
    };
    const int64_t b_reward = batch(rewards.chosen), b_policy = batch(policy_in.policy_chosen);
    HAFRM_CHECK_ARG(b_reward < 0 || b_policy < 0 || b_reward == b_policy, "HybridLoss",
                    "policy_inputs.policy_chosen",
                    "expected the reward batch size (rewards.chosen: ", b_reward, " pairs), got ",
                    b_policy, " pairs");
    out.reward_loss = r.loss;
    detail::add_weighted(out.loss, out.weights.reward, r.loss);
    if (p) {
      out.policy_loss = p->loss;
      detail::add_weighted(out.loss, out.weights.policy, p->loss);
    }
    if (!out.loss.defined())
      out.loss = detail::zero_total(r.loss.requires_grad() || !p ? r.loss : p->loss);
    for (auto& [k, v] : r.metrics) out.metrics["reward/" + k] = v;
    out.metrics["reward/loss"] = r.loss.detach();
    if (p) {
      for (auto& [k, v] : p->metrics) out.metrics["policy/" + k] = v;
      out.metrics["policy/loss"] = p->loss.detach();
    }
    out.metrics["loss"] = out.loss.detach();
    return out;
  }
};

}  // namespace hafrm
