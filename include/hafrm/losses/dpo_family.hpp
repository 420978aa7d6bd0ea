// hafrm/losses/dpo_family.hpp: every pairwise policy loss on log-ratios against a reference
// (docs/losses.md, "DPO family"): DPO (and cDPO), robust DPO, the hinge, the IPO forms, DPO on
// per-token means, EXO, NCA, BCO, SPPO-hard, AOT, APO-zero and APO-down, DiscoPOP and DPOP. Each
// takes PolicyInputs and returns LossOutput with DPO's implicit-reward metrics; the plumbing they
// share is policy_base.hpp, so each struct here is its parameters and its formula.
// Reference-free losses (SimPO, CPO, ORPO, sft) are reference_free.hpp; unpaired ones unpaired.hpp.
//
// example-begin dpo_family Policy
//   auto out = hafrm::Dpo{.beta = 0.1}(inputs);             // HaF default policy loss
//   auto ipo = hafrm::Ipo{.beta = 0.5, .form = hafrm::IpoForm::kLengthNormalised}(inputs);
//   auto js = hafrm::Dpo{.f_divergence = {hafrm::FDivergenceType::kJsDivergence}}(inputs);
//   auto dpop = hafrm::Dpop{.beta = 0.1, .lambda = 50.0}(inputs);
//   auto exo = hafrm::ExoPair{.beta = 0.1, .label_smoothing = 1e-3}(inputs);
//   auto aot = hafrm::Aot{.beta = 0.1}(inputs);          // sorts over the batch
//   auto dp = hafrm::DiscoPop{.tau = 0.05}(inputs);
// example-end
//
// Notation (docs/losses.md): Delta = pi - rho, s(Delta) the f-divergence score (default Delta;
// only the functors with an f_divergence field accept another), d = s(Delta_c) - s(Delta_r).
// Reference-free variants: leave the reference tensors undefined, or set reference_free = true.
#pragma once

#include <torch/torch.h>

#include <cmath>

#include "hafrm/losses/policy_base.hpp"
#include "hafrm/losses/trainer_helpers.hpp"

namespace hafrm {

// DPO (registry "dpo", TRL "sigmoid"): -logsigmoid(beta d); label_smoothing eps > 0 gives
// conservative DPO (cDPO, registry "conservative").
struct Dpo {
  double beta = 0.1;
  double label_smoothing = 0.0;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "dpo";
  void check_params() const { check_smoothing(label_smoothing, kName); }
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto d = scores(t, f_divergence).margin();
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
  void check_params() const { check_smoothing(label_smoothing, kName); }
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto x = beta * scores(t, f_divergence).margin();
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
  torch::Tensor per_pair(const PolicyTerms& t) const {
    return detail::hinge_loss(beta * scores(t, f_divergence).margin());
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
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto s = scores(t, f_divergence);
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

// DPO-Positive (DPOP, Pal et al. 2024, "Smaug", eq. 3): DPO with a penalty inside the sigmoid
// whenever the policy's log-prob of the chosen response falls below the reference's:
// -logsigmoid(beta (Delta_c - Delta_r - lambda max(0, rho_c - pi_c))). lambda = 50 is the paper's
// value; lambda = 0 is DPO. Reverse KL only: the penalty reads Delta_c itself, not a score.
struct Dpop {
  double beta = 0.1;
  double lambda = 50.0;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "dpop";
  void check_params() const { check_weight(lambda, kName, "lambda"); }
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto penalty = torch::relu(-t.delta_c());
    return -torch::log_sigmoid(beta * (t.delta_c() - t.delta_r() - lambda * penalty));
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// -logsigmoid(beta (s(Delta_c)/n_c - s(Delta_r)/n_r)): DPO on length-normalised scores.
struct SigmoidNorm {
  double beta = 0.1;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "sigmoid_norm";
  static constexpr bool kNeedsCounts = true;
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto s = scores(t, f_divergence);
    return -torch::log_sigmoid(beta * (s.chosen / t.n_c - s.rejected / t.n_r));
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// EXO (Ji et al. 2024, eq. 16), x = beta d:
// sigmoid(x) (logsigmoid(x) - log(1 - eps)) + sigmoid(-x) (logsigmoid(-x) - log eps).
struct ExoPair {
  double beta = 0.1;
  double label_smoothing = 1e-3;  // eps in (0, 1); the paper's 1e-3
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "exo_pair";
  void check_params() const {
    HAFRM_CHECK_ARG(label_smoothing > 0.0 && label_smoothing < 1.0, kName, "label_smoothing",
                    "expected a value in (0, 1) (the EXO paper uses 1e-3), got ", label_smoothing);
  }
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto x = beta * scores(t, f_divergence).margin();
    return torch::sigmoid(x) * (torch::log_sigmoid(x) - std::log1p(-label_smoothing)) +
           torch::sigmoid(-x) * (torch::log_sigmoid(-x) - std::log(label_smoothing));
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// NCA (Chen et al. 2024): -logsigmoid(beta Delta_c) - 1/2 logsigmoid(-beta Delta_c)
// - 1/2 logsigmoid(-beta Delta_r).
struct NcaPair {
  double beta = 0.1;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "nca_pair";
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto rc = beta * t.delta_c(), rr = beta * t.delta_r();
    return -torch::log_sigmoid(rc) - 0.5 * torch::log_sigmoid(-rc) - 0.5 * torch::log_sigmoid(-rr);
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// BCO on pairs: -logsigmoid(beta Delta_c) - logsigmoid(-beta Delta_r).
struct BcoPair {
  double beta = 0.1;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "bco_pair";
  torch::Tensor per_pair(const PolicyTerms& t) const {
    return -torch::log_sigmoid(beta * t.delta_c()) - torch::log_sigmoid(-beta * t.delta_r());
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// SPPO with hard (0/1) win probabilities: (Delta_c - 1/(2 beta))^2 + (Delta_r + 1/(2 beta))^2.
struct SppoHard {
  double beta = 0.1;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "sppo_hard";
  torch::Tensor per_pair(const PolicyTerms& t) const {
    const double half = 0.5 / beta;
    return (t.delta_c() - half).square() + (t.delta_r() + half).square();
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// AOT (Melnyk et al. 2024): delta = sort(a) - sort(b) over the batch, then
// -(1-eps) logsigmoid(beta delta) - eps logsigmoid(-beta delta). kNone gives the losses in
// sorted order, not per input pair. One loss, two ways to pair what is sorted:
enum class AotPairing {
  kPaired,    // Aot:         a = pi_c - pi_r, b = rho_c - rho_r (margins of each model)
  kUnpaired,  // AotUnpaired: a = Delta_c, b = Delta_r (chosen against rejected log-ratios)
};

template <AotPairing P>
struct AotLoss {
  double beta = 0.1;
  double label_smoothing = 0.0;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = P == AotPairing::kPaired ? "aot" : "aot_unpaired";
  static constexpr bool kSortsBatch = true;  // per-pair weights (WPO) would be misaligned
  void check_params() const { check_smoothing(label_smoothing, kName); }
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto delta = P == AotPairing::kPaired
                     ? aot_sorted_difference(t.pi_c - t.pi_r, t.rho_c - t.rho_r)
                     : aot_sorted_difference(t.delta_c(), t.delta_r());
    return detail::smoothed_sigmoid_loss(beta * delta, label_smoothing);
  }
  HAFRM_POLICY_LOSS_PLUMBING
};
using Aot = AotLoss<AotPairing::kPaired>;
using AotUnpaired = AotLoss<AotPairing::kUnpaired>;

// APO-zero (D'Oosterlinck et al. 2024, eq. 7), for chosen outputs better than the model's own:
// (1 - sigmoid(beta Delta_c)) + sigmoid(beta Delta_r).
struct ApoZero {
  double beta = 0.1;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "apo_zero";
  torch::Tensor per_pair(const PolicyTerms& t) const {
    return (1.0 - torch::sigmoid(beta * t.delta_c())) + torch::sigmoid(beta * t.delta_r());
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// APO-down (eq. 8), for chosen outputs worse than the model's own:
// sigmoid(beta Delta_c) + (1 - sigmoid(beta (Delta_c - Delta_r))).
struct ApoDown {
  double beta = 0.1;
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "apo_down";
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto dc = t.delta_c();
    return torch::sigmoid(beta * dc) + (1.0 - torch::sigmoid(beta * (dc - t.delta_r())));
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

// DiscoPOP (Lu et al. 2024, eq. 5), z = beta d, m = sigmoid(z / tau):
// -logsigmoid(z) (1 - m) + exp(-z) m. Evaluated as logsigmoid(z) sigmoid(-z/tau) and
// exp(-z + logsigmoid(z/tau)), so that exp(-z) * m never forms inf * 0 for large |z|.
struct DiscoPop {
  double beta = 0.1;
  double tau = 0.05;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "discopop";
  void check_params() const { check_scale(tau, kName, "tau"); }
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto z = beta * scores(t, f_divergence).margin();
    auto exponent =
        torch::clamp_max(-z + torch::log_sigmoid(z / tau), detail::exp_cap(z.scalar_type()));
    return -torch::log_sigmoid(z) * torch::sigmoid(-z / tau) + torch::exp(exponent);
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

}  // namespace hafrm
