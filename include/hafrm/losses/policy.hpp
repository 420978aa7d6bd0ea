// hafrm/losses/policy.hpp: token-level policy losses of the HaF-RM method (the LM-head term),
// from summed per-sequence log-probs. Every functor takes PolicyInputs and returns LossOutput.
//
//   auto out = hafrm::Dpo{.beta = 0.1}(inputs);             // HaF default policy loss
//   auto ipo = hafrm::Ipo{.beta = 0.5, .form = hafrm::IpoForm::kLengthNormalised}(inputs);
//
// Notation (../shared/LOSSES.md): Delta = pi - rho, d = Delta_c - Delta_r. Reference-free
// variants: leave the reference tensors undefined, or set reference_free = true.
#pragma once

#include <torch/torch.h>

#include "hafrm/losses/policy_inputs.hpp"

namespace hafrm {

namespace detail {
inline void check_beta(double beta, std::string_view fn) { check_positive(beta, fn, "beta"); }

// -(1-eps) logsigmoid(x) - eps logsigmoid(-x): smoothing-aware sigmoid loss.
inline torch::Tensor smoothed_sigmoid_loss(const torch::Tensor& x, double eps) {
  auto per = -torch::log_sigmoid(x);
  if (eps > 0.0) per = (1.0 - eps) * per - eps * torch::log_sigmoid(-x);
  return per;
}

inline LossOutput finish(const torch::Tensor& per, Reduction r, const PolicyTerms& t,
                         double beta) {
  LossOutput out{reduce(per, r), {}};
  implicit_reward_metrics(out, t, beta);
  return out;
}
}  // namespace detail

// DPO "sigmoid": -logsigmoid(beta d); label_smoothing eps > 0 gives conservative DPO (cDPO).
struct Dpo {
  double beta = 0.1;
  double label_smoothing = 0.0;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "dpo";
  void validate() const {
    detail::check_beta(beta, kName);
    detail::check_half_open(label_smoothing, 0.0, 0.5, kName, "label_smoothing");
  }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    auto t = detail::check_policy(in, kName, false, reference_free);
    auto d = t.delta_c() - t.delta_r();
    return detail::finish(detail::smoothed_sigmoid_loss(beta * d, label_smoothing), reduction, t,
                          beta);
  }
};

// Robust DPO (rDPO): (-(1-eps) logsigmoid(beta d) + eps logsigmoid(-beta d)) / (1 - 2 eps).
struct RobustDpo {
  double beta = 0.1;
  double label_smoothing = 0.0;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "robust_dpo";
  void validate() const {
    detail::check_beta(beta, kName);
    detail::check_half_open(label_smoothing, 0.0, 0.5, kName, "label_smoothing");
  }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    auto t = detail::check_policy(in, kName, false, reference_free);
    auto x = beta * (t.delta_c() - t.delta_r());
    auto per = (-(1.0 - label_smoothing) * torch::log_sigmoid(x) +
                label_smoothing * torch::log_sigmoid(-x)) /
               (1.0 - 2.0 * label_smoothing);
    return detail::finish(per, reduction, t, beta);
  }
};

// Hinge (SLiC-style calibration): max(0, 1 - beta d).
struct DpoHinge {
  double beta = 0.1;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "dpo_hinge";
  void validate() const { detail::check_beta(beta, kName); }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    auto t = detail::check_policy(in, kName, false, reference_free);
    auto per = torch::relu(1.0 - beta * (t.delta_c() - t.delta_r()));
    return detail::finish(per, reduction, t, beta);
  }
};

// IPO in the four forms users meet: which one a user gets must be explicit.
enum class IpoForm {
  kLengthNormalised,  // TRL:        (Delta_c/n_c - Delta_r/n_r - 1/(2 beta))^2
  kSum,               // HaF "ipo":  (d - 1/(2 beta))^2 on summed log-probs
  kSqrt,              // HaF "ipo-sqrt": beta (d - 1/(2 beta))^2
  kFull,              // HaF "ipo-full": (beta d - 1/2)^2
};

struct Ipo {
  double beta = 0.1;
  IpoForm form = IpoForm::kLengthNormalised;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "ipo";
  void validate() const { detail::check_beta(beta, kName); }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    const bool norm = form == IpoForm::kLengthNormalised;
    auto t = detail::check_policy(in, kName, norm, reference_free);
    const double tau = 1.0 / (2.0 * beta);
    torch::Tensor per;
    switch (form) {
      case IpoForm::kLengthNormalised:
        per = (t.delta_c() / t.n_c - t.delta_r() / t.n_r - tau).square();
        break;
      case IpoForm::kSum:
        per = (t.delta_c() - t.delta_r() - tau).square();
        break;
      case IpoForm::kSqrt:
        per = beta * (t.delta_c() - t.delta_r() - tau).square();
        break;
      case IpoForm::kFull:
        per = (beta * (t.delta_c() - t.delta_r()) - 0.5).square();
        break;
    }
    return detail::finish(per, reduction, t, beta);
  }
};

// SimPO: l = pi_c/n_c - pi_r/n_r - gamma/beta; -(1-eps) logsigmoid(beta l) - eps logsigmoid(-beta l).
// Reference-free by definition. gamma = 0 is the HaF code's "simpo" form; the SimPO paper uses
// beta 2.0, gamma 0.5 (TRL's defaults) — here beta defaults to the HaF value 0.1, gamma to 0.
struct SimPO {
  double beta = 0.1;
  double gamma = 0.0;
  double label_smoothing = 0.0;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "simpo";
  void validate() const {
    detail::check_beta(beta, kName);
    detail::check_nonnegative(gamma, kName, "gamma");
    detail::check_half_open(label_smoothing, 0.0, 0.5, kName, "label_smoothing");
  }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    auto t = detail::check_policy(in, kName, true, /*reference_free=*/true);
    auto l = t.pi_c / t.n_c - t.pi_r / t.n_r - gamma / beta;
    return detail::finish(detail::smoothed_sigmoid_loss(beta * l, label_smoothing), reduction, t,
                          beta);
  }
};

// NLL of the chosen response (HaF "slic", RPO's extra term): -pi_c / n_c per pair, or the
// token-weighted batch form -sum(pi_c) / sum(n_c) (TRL "sft") with token_weighted = true.
struct ChosenNll {
  bool token_weighted = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "chosen_nll";
  void validate() const {}
  LossOutput operator()(const PolicyInputs& in) const {
    auto t = detail::check_policy(in, kName, true, /*reference_free=*/true);
    LossOutput out;
    if (token_weighted) {
      HAFRM_CHECK_ARG(reduction != Reduction::kNone, kName, "reduction",
                      "token_weighted NLL is a batch quantity; use kMean or kSum");
      out.loss = -t.pi_c.sum() / t.n_c.sum();
    } else {
      out.loss = detail::reduce(-t.pi_c / t.n_c, reduction);
    }
    torch::NoGradGuard ng;
    out.metrics["nll"] = (-t.pi_c.sum() / t.n_c.sum()).detach();
    return out;
  }
};

}  // namespace hafrm
