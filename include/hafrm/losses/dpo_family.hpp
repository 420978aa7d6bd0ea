// hafrm/losses/dpo_family.hpp: the rest of TRL's DPO family (docs/losses.md, "DPO family"),
// beside Dpo, RobustDpo, DpoHinge, Ipo and ChosenNll in policy.hpp. Each takes PolicyInputs and
// returns LossOutput with DPO's implicit-reward metrics.
//
// example-begin dpo_family Policy
//   auto exo = hafrm::ExoPair{.beta = 0.1, .label_smoothing = 1e-3}(inputs);
//   auto aot = hafrm::Aot{.beta = 0.1}(inputs);          // sorts over the batch
//   auto dp = hafrm::DiscoPop{.tau = 0.05}(inputs);
// example-end
//
// Notation: Delta = pi - rho, s the f-divergence score (only the functors with an f_divergence
// field accept a non-default one), d = s(Delta_c) - s(Delta_r).
#pragma once

#include <torch/torch.h>

#include <cmath>

#include "hafrm/losses/policy.hpp"
#include "hafrm/losses/trainer_helpers.hpp"

namespace hafrm {

// -logsigmoid(beta (s(Delta_c)/n_c - s(Delta_r)/n_r)): DPO on length-normalised scores.
struct SigmoidNorm {
  double beta = 0.1;
  FDivergence f_divergence{};
  bool reference_free = false;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "sigmoid_norm";
  static constexpr bool kNeedsCounts = true;
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
    auto s = detail::scores(t, f_divergence);
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
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
    auto x = beta * detail::scores(t, f_divergence).margin();
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
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
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
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
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
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
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
  void check_params() const { detail::check_smoothing(label_smoothing, kName); }
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
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
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
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
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
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
  void check_params() const { detail::check_scale(tau, kName, "tau"); }
  torch::Tensor per_pair(const detail::PolicyTerms& t) const {
    auto z = beta * detail::scores(t, f_divergence).margin();
    auto exponent =
        torch::clamp_max(-z + torch::log_sigmoid(z / tau), detail::exp_cap(z.scalar_type()));
    return -torch::log_sigmoid(z) * torch::sigmoid(-z / tau) + torch::exp(exponent);
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

}  // namespace hafrm
