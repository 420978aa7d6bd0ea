// hafrm/losses/policy_base.hpp: the plumbing every pairwise policy loss shares, written once, so
// that a loss is its parameters, its formula and its paper note. A loss of your own, outside
// namespace hafrm (BcoPair in dpo_family.hpp is the same loss inside it):
//
// example-begin policy_base_loss global
//   struct MyBcoPair {                            // parameters: plain fields, designated-init
//     double beta = 0.1;
//     bool reference_free = false;
//     hafrm::Reduction reduction = hafrm::Reduction::kMean;
//     static constexpr const char* kName = "my_bco_pair";   // the name its errors use
//     torch::Tensor per_pair(const hafrm::detail::PolicyTerms& t) const {   // the formula
//       return -torch::log_sigmoid(beta * t.delta_c()) - torch::log_sigmoid(-beta * t.delta_r());
//     }
//     HAFRM_POLICY_LOSS_PLUMBING
//   };
// example-end
// example-begin policy_base_call Policy
//   hafrm::LossOutput out = MyBcoPair{.beta = 0.2}(inputs);   // checks, reduction, metrics
// example-end
//
// The skeleton (detail::validate_policy, detail::run_policy) checks beta and the f-divergence
// when the loss has them, then the loss's own check_params(); checks the inputs (counts when the
// loss needs them, the reference unless the loss is reference-free); reduces per_pair's result
// and adds DPO's implicit-reward metrics. Why free functions and not a CRTP base: a base class
// makes `hafrm::Dpo{.beta = 0.1}` warn under GCC 12's -Wextra (missing initializer for the base),
// and every user writes losses that way.
//
// What a loss may declare besides its fields:
//   static constexpr bool kNeedsCounts = true;     // reads t.n_c, t.n_r (default false), or
//   bool needs_counts() const;                     //   decided by a field (Ipo's form)
//   static constexpr bool kReferenceFree = true;   // when it has no reference_free field
//   void check_params() const;                     // its own parameters beyond beta
//   per_pair(t, in, metrics)                       // when it needs the raw inputs or adds metrics
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

#include "hafrm/losses/f_divergence.hpp"
#include "hafrm/losses/policy_inputs.hpp"

namespace hafrm {
namespace detail {

inline void check_beta(double beta, std::string_view fn) { check_scale(beta, fn, "beta"); }

// The f-divergence scores s(Delta_c), s(Delta_r) of a checked batch.
struct Scores {
  torch::Tensor chosen, rejected;
  torch::Tensor margin() const { return chosen - rejected; }
};
inline Scores scores(const PolicyTerms& t, const FDivergence& f) {
  return {f.score(t.delta_c()), f.score(t.delta_r())};
}

using Metrics = std::map<std::string, torch::Tensor>;

template <class L>
void validate_policy(const L& l) {
  if constexpr (requires { l.beta; }) check_beta(l.beta, L::kName);
  if constexpr (requires { l.check_params(); }) l.check_params();
  if constexpr (requires { l.f_divergence; }) l.f_divergence.validate(L::kName);
}

template <class L>
bool policy_needs_counts(const L& l) {
  if constexpr (requires { l.needs_counts(); })
    return l.needs_counts();
  else if constexpr (requires { L::kNeedsCounts; })
    return L::kNeedsCounts;
  else
    return false;
}

template <class L>
bool policy_reference_free(const L& l) {
  if constexpr (requires { l.reference_free; }) {
    return l.reference_free;
  } else {
    static_assert(
        requires { L::kReferenceFree; },
        "a policy loss declares `bool reference_free = false;` or, when it never reads "
        "a reference, `static constexpr bool kReferenceFree = true;`");
    return L::kReferenceFree;
  }
}

template <class L>
LossOutput run_policy(const L& l, const PolicyInputs& in) {
  validate_policy(l);
  auto t = check_policy(in, L::kName, policy_needs_counts(l), policy_reference_free(l));
  LossOutput out;
  torch::Tensor per;
  if constexpr (requires { l.per_pair(t, in, out.metrics); })
    per = l.per_pair(t, in, out.metrics);
  else
    per = l.per_pair(t);
  out.loss = reduce(per, l.reduction);
  implicit_reward_metrics(out, t, l.beta);
  return out;
}

}  // namespace detail
}  // namespace hafrm

// The two members every policy loss forwards to the skeleton. A macro (the one in this header)
// because a base class would break designated initialisation warnings-free (see the top).
#define HAFRM_POLICY_LOSS_PLUMBING                                        \
  void validate() const { ::hafrm::detail::validate_policy(*this); }      \
  ::hafrm::LossOutput operator()(const ::hafrm::PolicyInputs& in) const { \
    return ::hafrm::detail::run_policy(*this, in);                        \
  }
