// hafrm/losses/policy_base.hpp: the public extension API for a pairwise policy loss of your own,
// and the plumbing every catalogue policy loss shares, written once, so that a loss is its
// parameters, its formula and its paper note. docs/extending.md walks through it; registry.hpp
// shows how to register such a loss so that specs, the trainer's --policy-loss and HybridLoss
// take it by name.
//
// example-begin policy_base_loss global
//   struct MyBcoPair {                            // parameters: plain fields, designated-init
//     double beta = 0.1;
//     double shift = 0.0;
//     bool reference_free = false;
//     hafrm::Reduction reduction = hafrm::Reduction::kMean;
//     static constexpr const char* kName = "my_bco_pair";   // the name its errors use
//     void check_params() const { hafrm::check_weight(shift, kName, "shift"); }
//     torch::Tensor per_pair(const hafrm::PolicyTerms& t) const {   // the formula
//       return -torch::log_sigmoid(beta * t.delta_c() - shift) -
//              torch::log_sigmoid(-beta * t.delta_r() + shift);
//     }
//     HAFRM_POLICY_LOSS_PLUMBING
//   };
// example-end
// example-begin policy_base_call Hybrid
//   hafrm::LossOutput out = MyBcoPair{.beta = 0.2}(inputs);   // checks, reduction, metrics
//   auto haf = hafrm::HybridLoss<hafrm::BradleyTerry, MyBcoPair>{}(reward_inputs, inputs, step);
// example-end
//
// What the skeleton (HAFRM_POLICY_LOSS_PLUMBING) does for every call: checks beta (when the loss
// has one), the f-divergence (when it has one) and the loss's own check_params(); checks the
// inputs into PolicyTerms (shapes, devices, dtypes; token counts when the loss needs them; the
// reference unless the loss is reference-free; every given count >= 1); reduces per_pair's
// result by `reduction`; adds DPO's implicit-reward metrics. Why a macro and not a CRTP base: a
// base class makes `hafrm::Dpo{.beta = 0.1}` warn under GCC 12's -Wextra (missing initializer for
// the base), and every user writes losses that way.
//
// What a loss may declare besides its fields:
//   static constexpr bool kNeedsCounts = true;     // reads t.n_c, t.n_r (default false), or
//   bool needs_counts() const;                     //   decided by a field (Ipo's form)
//   static constexpr bool kReferenceFree = true;   // when it has no reference_free field
//   void check_params() const;                     // its own parameters beyond beta
//   per_pair(t, in, metrics)                       // when it needs the raw inputs or adds metrics
//
// The parameter checks a loss uses (hafrm::check_scale, check_weight, check_coefficient,
// check_smoothing, check_closed) are the catalogue's own, with its ranges and messages.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <string_view>

#include "hafrm/losses/f_divergence.hpp"
#include "hafrm/losses/policy_inputs.hpp"

namespace hafrm {

// The parameter checks of the catalogue, for a loss of your own: each throws "hafrm::<fn>:
// argument '<arg>' expected ..." outside its range (torch/checks.hpp states the ranges and why).
using detail::check_closed;
using detail::check_coefficient;
using detail::check_scale;
using detail::check_weight;

// Label smoothing eps in [0, 0.5): 0.5 would make the pair's label a coin toss.
inline void check_smoothing(double eps, std::string_view fn) {
  detail::check_half_open(eps, 0.0, 0.5, fn, "label_smoothing");
}

// The f-divergence scores s(Delta_c), s(Delta_r) of a checked batch.
struct Scores {
  torch::Tensor chosen, rejected;
  torch::Tensor margin() const { return chosen - rejected; }
};
inline Scores scores(const PolicyTerms& t, const FDivergence& f) {
  return {f.score(t.delta_c()), f.score(t.delta_r())};
}

// Extra metrics a loss reports beside its value (per_pair(t, in, metrics)).
using Metrics = std::map<std::string, torch::Tensor>;

namespace detail {

template <class L>
void validate_policy(const L& l) {
  if constexpr (requires { l.beta; }) check_scale(l.beta, L::kName, "beta");
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
  double beta = 1.0;
  if constexpr (requires { l.beta; }) beta = l.beta;
  implicit_reward_metrics(out, t, beta);
  return out;
}

// ---- formulas several catalogue losses share ----------------------------------------------

// -(1-eps) logsigmoid(x) - eps logsigmoid(-x): smoothing-aware sigmoid loss.
inline torch::Tensor smoothed_sigmoid_loss(const torch::Tensor& x, double eps) {
  auto per = -torch::log_sigmoid(x);
  if (eps > 0.0) per = (1.0 - eps) * per - eps * torch::log_sigmoid(-x);
  return per;
}

// max(0, 1 - x): the SLiC hinge on x = beta * margin.
inline torch::Tensor hinge_loss(const torch::Tensor& x) { return torch::relu(1.0 - x); }

// (l - 1/(2 beta))^2: IPO's squared distance to its target margin.
inline torch::Tensor ipo_loss(const torch::Tensor& l, double beta) {
  return (l - 1.0 / (2.0 * beta)).square();
}

// -sum(pi_c) / sum(n_c): the chosen responses' mean per-token NLL over the whole batch (TRL
// "sft", the NLL term of CPO and ORPO). Equal to the per-token form: the sums are sums of the
// per-token log-probs.
inline torch::Tensor token_weighted_nll(const PolicyTerms& t) {
  return -t.pi_c.sum() / t.n_c.sum();
}

// A batch-level scalar as a per-pair tensor whose mean is that scalar (TRL's convention, so that
// kNone, WPO weighting and kMean agree with it).
inline torch::Tensor expand_batch(const torch::Tensor& scalar, const torch::Tensor& like) {
  return scalar.expand({like.size(0)});
}

// AlphaPO's reward shape r(q) = (1 - exp(q)^(-a)) / a = -expm1(-a q) / a, q itself when a = 0;
// the exponent is capped like the f-divergence scores.
inline torch::Tensor alphapo_reward(const torch::Tensor& q, double a) {
  if (a == 0.0) return q;
  return -capped_expm1(-a * q) / a;
}
inline void check_alphapo(double a, std::string_view fn) {
  check_coefficient(a, fn, "alpha");  // the AlphaPO coefficient; 0 = plain log-prob rewards
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
