// hafrm/losses/policy.hpp: token-level policy losses of the HaF-RM method (the LM-head term),
// from summed per-sequence log-probs. Every functor takes PolicyInputs and returns LossOutput.
//
//   auto out = hafrm::Dpo{.beta = 0.1}(inputs);             // HaF default policy loss
//   auto ipo = hafrm::Ipo{.beta = 0.5, .form = hafrm::IpoForm::kLengthNormalised}(inputs);
//   auto js = hafrm::Dpo{.f_divergence = {hafrm::FDivergenceType::kJsDivergence}}(inputs);
//
// Notation (docs/losses.md): Delta = pi - rho, s(Delta) the f-divergence score (default
// Delta), d = s(Delta_c) - s(Delta_r). Reference-free variants: leave the reference tensors
// undefined, or set reference_free = true. More of the DPO family: dpo_family.hpp.
#pragma once

#include <torch/torch.h>

#include "hafrm/losses/f_divergence.hpp"
#include "hafrm/losses/policy_inputs.hpp"

namespace hafrm {

namespace detail {
inline void check_beta(double beta, std::string_view fn) { check_scale(beta, fn, "beta"); }

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

// The f-divergence scores s(Delta_c), s(Delta_r) of a checked batch.
struct Scores {
  torch::Tensor chosen, rejected;
  torch::Tensor margin() const { return chosen - rejected; }
};
inline Scores scores(const PolicyTerms& t, const FDivergence& f) {
  return {f.score(t.delta_c()), f.score(t.delta_r())};
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

inline LossOutput finish(const torch::Tensor& per, Reduction r, const PolicyTerms& t, double beta) {
  LossOutput out{reduce(per, r), {}};
  implicit_reward_metrics(out, t, beta);
  return out;
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

// DPO "sigmoid": -logsigmoid(beta d); label_smoothing eps > 0 gives conservative DPO (cDPO).
struct Dpo {
  double beta = 0.1;
  double label_smoothing = 0.0;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "dpo";
  void validate() const {
    detail::check_beta(beta, kName);
    detail::check_half_open(label_smoothing, 0.0, 0.5, kName, "label_smoothing");
    f_divergence.validate(kName);
  }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    auto t = detail::check_policy(in, kName, false, reference_free);
    auto d = detail::scores(t, f_divergence).margin();
    return detail::finish(detail::smoothed_sigmoid_loss(beta * d, label_smoothing), reduction, t,
                          beta);
  }
};

// Robust DPO (rDPO): (-(1-eps) logsigmoid(beta d) + eps logsigmoid(-beta d)) / (1 - 2 eps).
struct RobustDpo {
  double beta = 0.1;
  double label_smoothing = 0.0;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "robust_dpo";
  void validate() const {
    detail::check_beta(beta, kName);
    detail::check_half_open(label_smoothing, 0.0, 0.5, kName, "label_smoothing");
    f_divergence.validate(kName);
  }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    auto t = detail::check_policy(in, kName, false, reference_free);
    auto x = beta * detail::scores(t, f_divergence).margin();
    auto per = (-(1.0 - label_smoothing) * torch::log_sigmoid(x) +
                label_smoothing * torch::log_sigmoid(-x)) /
               (1.0 - 2.0 * label_smoothing);
    return detail::finish(per, reduction, t, beta);
  }
};

// Hinge (SLiC-style calibration): max(0, 1 - beta d).
struct DpoHinge {
  double beta = 0.1;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "dpo_hinge";
  void validate() const {
    detail::check_beta(beta, kName);
    f_divergence.validate(kName);
  }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    auto t = detail::check_policy(in, kName, false, reference_free);
    auto per = detail::hinge_loss(beta * detail::scores(t, f_divergence).margin());
    return detail::finish(per, reduction, t, beta);
  }
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
  void validate() const {
    detail::check_beta(beta, kName);
    f_divergence.validate(kName);
  }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    const bool norm = form == IpoForm::kLengthNormalised;
    auto t = detail::check_policy(in, kName, norm, reference_free);
    auto s = detail::scores(t, f_divergence);
    torch::Tensor per;
    switch (form) {
      case IpoForm::kLengthNormalised:
        per = detail::ipo_loss(s.chosen / t.n_c - s.rejected / t.n_r, beta);
        break;
      case IpoForm::kSum:
        per = detail::ipo_loss(s.margin(), beta);
        break;
      case IpoForm::kSqrt:
        per = beta * detail::ipo_loss(s.margin(), beta);
        break;
      case IpoForm::kFull:
        per = (beta * s.margin() - 0.5).square();
        break;
    }
    return detail::finish(per, reduction, t, beta);
  }
};

// SimPO: l = pi_c/n_c - pi_r/n_r - gamma/beta; -(1-eps) logsigmoid(beta l) - eps logsigmoid(-beta
// l). Reference-free by definition. gamma = 0 is the HaF code's "simpo" form; the SimPO paper uses
// beta 2.0, gamma 0.5 (TRL's defaults) — here beta defaults to the HaF value 0.1, gamma to 0.
// alpha != 0 is AlphaPO: each mean log-prob q becomes (1 - exp(q)^(-alpha)) / alpha.
struct SimPO {
  double beta = 0.1;
  double gamma = 0.0;
  double label_smoothing = 0.0;
  double alpha = 0.0;  // AlphaPO reward shape a; 0 = SimPO
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "simpo";
  void validate() const {
    detail::check_beta(beta, kName);
    detail::check_weight(gamma, kName, "gamma");
    detail::check_half_open(label_smoothing, 0.0, 0.5, kName, "label_smoothing");
    detail::check_alphapo(alpha, kName);
  }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    auto t = detail::check_policy(in, kName, true, /*reference_free=*/true);
    auto l = detail::alphapo_reward(t.pi_c / t.n_c, alpha) -
             detail::alphapo_reward(t.pi_r / t.n_r, alpha) - gamma / beta;
    return detail::finish(detail::smoothed_sigmoid_loss(beta * l, label_smoothing), reduction, t,
                          beta);
  }
};

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
