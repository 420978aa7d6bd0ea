// hafrm/losses/any_loss.hpp: one type-erased functor, AnyFunctor<R(Arg)>, that the registry builds
// and the hybrid loss accepts: any loss or weighting behind one type, with a name for its metrics.
//
// example-begin any_loss
//   hafrm::AnyPolicyLoss dpo = hafrm::Dpo{.beta = 0.1};          // named "dpo" (its kName)
//   hafrm::AnyRewardLoss bt{hafrm::BradleyTerry{}, "bt"};         // or a name of your own
//   hafrm::AnyWeighting warm = hafrm::LinearWarmupWeighting{.warmup_steps = 10};
// example-end
// An AnyWeighting answers policy_always_zero() as the weighting it holds does (false for one
// that does not say, e.g. a plain lambda).
#pragma once

#include <torch/torch.h>

#include <concepts>
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
// The name an erased functor without a kName gets, by what it computes.
template <class Signature>
inline constexpr const char* kErasedName = "functor";
template <>
inline constexpr const char* kErasedName<LossOutput(const PolicyInputs&)> = "policy_loss";
template <>
inline constexpr const char* kErasedName<LossOutput(const RewardInputs&)> = "reward_loss";
template <>
inline constexpr const char* kErasedName<HybridWeights(int64_t)> = "weighting";
}  // namespace detail

template <class Signature>
class AnyFunctor;

// Anything callable as R(Arg), with a name (the functor's kName when it has one).
template <class R, class Arg>
class AnyFunctor<R(Arg)> {
 public:
  AnyFunctor() = default;
  template <class F>
  requires(!std::same_as<std::decay_t<F>, AnyFunctor> && std::is_invocable_r_v<R, const F&, Arg>)
      AnyFunctor(F f, std::string name = "")  // NOLINT: implicit by design, like std::function
      : policy_always_zero_(detail::weighting_policy_always_zero(f)),
        fn_([f = std::move(f)](Arg a) -> R { return f(std::forward<Arg>(a)); }),
        name_(name.empty() ? default_name<F>() : std::move(name)) {}
  R operator()(Arg a) const {
    TORCH_CHECK(fn_, "hafrm::", detail::kErasedName<R(Arg)>, ": called while empty");
    return fn_(std::forward<Arg>(a));
  }
  const std::string& name() const { return name_; }
  explicit operator bool() const { return static_cast<bool>(fn_); }
  // Weightings only: the held weighting's policy_always_zero() (weighting.hpp), read when erased.
  bool policy_always_zero() const requires std::same_as<R, HybridWeights> {
    return policy_always_zero_;
  }

 private:
  template <class F>
  static std::string default_name() {
    if constexpr (requires { F::kName; }) return F::kName;
    return detail::kErasedName<R(Arg)>;
  }
  bool policy_always_zero_ = false;
  std::function<R(Arg)> fn_;
  std::string name_;
};

using AnyPolicyLoss = AnyFunctor<LossOutput(const PolicyInputs&)>;  // the policy (LM-head) term
using AnyRewardLoss = AnyFunctor<LossOutput(const RewardInputs&)>;  // the reward-head term
using AnyWeighting = AnyFunctor<HybridWeights(int64_t)>;            // the two terms' weights

}  // namespace hafrm
