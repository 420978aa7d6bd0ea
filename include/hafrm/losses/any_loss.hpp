// hafrm/losses/any_loss.hpp: the type-erased loss and weighting the registry builds and the hybrid
// loss accepts: any functor, behind one type, with a name for its metrics.
//
// example-begin any_loss
//   hafrm::AnyPolicyLoss dpo = hafrm::Dpo{.beta = 0.1};          // named "dpo" (its kName)
//   hafrm::AnyRewardLoss bt{hafrm::BradleyTerry{}, "bt"};         // or a name of your own
//   hafrm::AnyWeighting warm = hafrm::LinearWarmupWeighting{.warmup_steps = 10};
// example-end
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

#include "hafrm/losses/policy_inputs.hpp"
#include "hafrm/losses/reward.hpp"
#include "hafrm/losses/weighting.hpp"

namespace hafrm {

namespace detail {
template <class In>
inline constexpr const char* kAnyLossName = "loss";
template <>
inline constexpr const char* kAnyLossName<PolicyInputs> = "policy_loss";
template <>
inline constexpr const char* kAnyLossName<RewardInputs> = "reward_loss";
}  // namespace detail

// Type-erased loss over one input type: anything callable as LossOutput(const In&), with a name
// for metrics (the functor's kName when it has one).
template <class In>
class AnyLoss {
 public:
  AnyLoss() = default;
  template <class L, class = std::enable_if_t<!std::is_same_v<std::decay_t<L>, AnyLoss>>>
  AnyLoss(L loss, std::string name = "")  // NOLINT: implicit by design, like std::function
      : fn_([loss = std::move(loss)](const In& in) { return loss(in); }),
        name_(name.empty() ? default_name<L>() : std::move(name)) {}
  LossOutput operator()(const In& in) const {
    TORCH_CHECK(fn_, "hafrm::", detail::kAnyLossName<In>, ": called while empty");
    return fn_(in);
  }
  const std::string& name() const { return name_; }
  explicit operator bool() const { return static_cast<bool>(fn_); }

 private:
  template <class L>
  static std::string default_name() {
    if constexpr (requires { L::kName; }) return L::kName;
    return detail::kAnyLossName<In>;
  }
  std::function<LossOutput(const In&)> fn_;
  std::string name_;
};

using AnyPolicyLoss = AnyLoss<PolicyInputs>;  // the policy (LM-head) term
using AnyRewardLoss = AnyLoss<RewardInputs>;  // the reward-head term

// Type-erased weighting schedule: anything callable as HybridWeights(int64_t step), with a name
// (the schedule's kName when it has one).
class AnyWeighting {
 public:
  AnyWeighting() = default;
  template <class W, class = std::enable_if_t<!std::is_same_v<std::decay_t<W>, AnyWeighting>>>
  AnyWeighting(W w, std::string name = "")  // NOLINT: implicit by design
      : fn_([w = std::move(w)](int64_t step) { return w(step); }),
        name_(name.empty() ? default_name<W>() : std::move(name)) {}
  HybridWeights operator()(int64_t step) const {
    TORCH_CHECK(fn_, "hafrm::AnyWeighting: called while empty");
    return fn_(step);
  }
  const std::string& name() const { return name_; }
  explicit operator bool() const { return static_cast<bool>(fn_); }

 private:
  template <class W>
  static std::string default_name() {
    if constexpr (requires { W::kName; }) return W::kName;
    return "weighting";
  }
  std::function<HybridWeights(int64_t)> fn_;
  std::string name_;
};

}  // namespace hafrm
