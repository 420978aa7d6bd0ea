// hafrm/losses/policy.hpp: token-level policy losses of the HaF-RM method (the LM-head term),
// from summed per-sequence log-probs. Every functor takes PolicyInputs and returns LossOutput; the
// shared plumbing (checks, reduction, metrics) is policy_base.hpp, so each struct here is its
// parameters and its formula.
//
// example-begin policy Policy
//   auto out = hafrm::Dpo{.beta = 0.1}(inputs);             // HaF default policy loss
//   auto ipo = hafrm::Ipo{.beta = 0.5, .form = hafrm::IpoForm::kLengthNormalised}(inputs);
//   auto js = hafrm::Dpo{.f_divergence = {hafrm::FDivergenceType::kJsDivergence}}(inputs);
// example-end
//
// Notation (docs/losses.md): Delta = pi - rho, s(Delta) the f-divergence score (default
// Delta), d = s(Delta_c) - s(Delta_r). Reference-free variants: leave the reference tensors
// undefined, or set reference_free = true. More of the DPO family: dpo_family.hpp.
#pragma once

#include <torch/torch.h>

#include "hafrm/losses/policy_base.hpp"

namespace hafrm {

namespace detail {
// Label smoothing eps in [0, 0.5): 0.5 would make the pair's label a coin toss.
inline void check_smoothing(double eps, std::string_view fn) {
  check_half_open(eps, 0.0, 0.5, fn, "label_smoothing");
}

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

// DPO (registry "dpo", TRL "sigmoid"): -logsigmoid(beta d); label_smoothing eps > 0 gives
// conservative DPO (cDPO, registry "conservative").
struct Dpo {
  double beta = 0.1;
  double label_smoothing = 0.0;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "dpo";
  void check_params() const { detail::check_smoothing(label_smoothing, kName); }
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
    auto d = detail::scores(t, f_divergence).margin();
    return detail::smoothed_sigmoid_loss(beta * d, label_smoothing);
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// Robust DPO (rDPO, TRL "robust"): (-(1-eps) logsigmoid(beta d) + eps logsigmoid(-beta d)) /
// (1 - 2 eps).
struct RobustDpo {
  double beta = 0.1;
  double label_smoothing = 0.0;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "robust_dpo";
  void check_params() const { detail::check_smoothing(label_smoothing, kName); }
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
    auto x = beta * detail::scores(t, f_divergence).margin();
    return (-(1.0 - label_smoothing) * torch::log_sigmoid(x) +
            label_smoothing * torch::log_sigmoid(-x)) /
           (1.0 - 2.0 * label_smoothing);
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// Hinge (SLiC-style calibration, TRL "hinge"): max(0, 1 - beta d).
struct DpoHinge {
  double beta = 0.1;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "dpo_hinge";
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
    return detail::hinge_loss(beta * detail::scores(t, f_divergence).margin());
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// IPO in the four forms users meet: which one a user gets must be explicit.
// With an f-divergence, s(Delta) replaces Delta in every form.
enum class IpoForm {
  kLengthNormalised,  // TRL:        (Delta_c/n_c - Delta_r/n_r - 1/(2 beta))^2
  kSum,               // HaF "ipo":  (d - 1/(2 beta))^2 on summed log-probs
  kSqrt,              // HaF "ipo-sqrt": beta (d - 1/(2 beta))^2
  kFull,              // HaF "ipo-full": (beta d - 1/2)^2
};

struct Ipo {
  double beta = 0.1;
  IpoForm form = IpoForm::kLengthNormalised;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "ipo";
  bool needs_counts() const { return form == IpoForm::kLengthNormalised; }
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
    auto s = detail::scores(t, f_divergence);
    switch (form) {
      case IpoForm::kLengthNormalised:
        return detail::ipo_loss(s.chosen / t.n_c - s.rejected / t.n_r, beta);
      case IpoForm::kSum:
        return detail::ipo_loss(s.margin(), beta);
      case IpoForm::kSqrt:
        return beta * detail::ipo_loss(s.margin(), beta);
      case IpoForm::kFull:
        return (beta * s.margin() - 0.5).square();
    }
    TORCH_INTERNAL_ASSERT(false, "hafrm::Ipo: unhandled IpoForm");
    return {};
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// SimPO: l = pi_c/n_c - pi_r/n_r - gamma/beta; -(1-eps) logsigmoid(beta l) - eps logsigmoid(-beta
// l). Reference-free by definition. gamma = 0 is the HaF code's "simpo" form; the SimPO paper uses
// beta 2.0, gamma 0.5 (TRL's defaults) — here beta defaults to the HaF value 0.1, gamma to 0.
// alpha != 0 is AlphaPO: each mean log-prob q becomes (1 - exp(q)^(-alpha)) / alpha.
struct Simpo {
  double beta = 0.1;
  double gamma = 0.0;
  double label_smoothing = 0.0;
  double alpha = 0.0;  // AlphaPO reward shape a; 0 = SimPO
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "simpo";
  static constexpr bool kNeedsCounts = true;
  static constexpr bool kReferenceFree = true;
  void check_params() const {
    detail::check_weight(gamma, kName, "gamma");
    detail::check_smoothing(label_smoothing, kName);
    detail::check_alphapo(alpha, kName);
  }
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
    auto l = detail::alphapo_reward(t.pi_c / t.n_c, alpha) -
             detail::alphapo_reward(t.pi_r / t.n_r, alpha) - gamma / beta;
    return detail::smoothed_sigmoid_loss(beta * l, label_smoothing);
  }
  HAFRM_POLICY_LOSS_PLUMBING
};
// The earlier spelling, kept so that code written against it still compiles.
using SimPO = Simpo;

// NLL of the chosen response (HaF "slic", RPO's extra term): -pi_c / n_c per pair, or the
// token-weighted batch form -sum(pi_c) / sum(n_c) (TRL "sft") with token_weighted = true: a batch
// value for kMean and kSum alike, repeated for every pair under kNone (TRL's convention).
struct ChosenNll {
  bool token_weighted = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "chosen_nll";
  void validate() const {}
  LossOutput operator()(const PolicyInputs& in) const {
    auto t = detail::check_policy(in, kName, true, /*reference_free=*/true);
    LossOutput out;
    if (token_weighted) {
      auto nll = detail::token_weighted_nll(t);
      out.loss = reduction == Reduction::kNone ? detail::expand_batch(nll, t.pi_c) : nll;
    } else {
      out.loss = detail::reduce(-t.pi_c / t.n_c, reduction);
    }
    torch::NoGradGuard ng;
    out.metrics["nll"] = (-t.pi_c.sum() / t.n_c.sum()).detach();
    return out;
  }
};

}  // namespace hafrm
