// hafrm/losses/reference_free.hpp: policy losses without a reference model (docs/losses.md,
// "Reference-free losses"): SimPO (and AlphaPO on it), the chosen responses' NLL (TRL's sft, the
// HaF code's "slic"), CPO (with AlphaPO's reward shape) and ORPO.
//
// example-begin reference_free Policy
//   auto cpo = hafrm::Cpo{.beta = 0.1, .cpo_alpha = 1.0}(inputs);           // needs counts
//   auto simpo = hafrm::Simpo{.beta = 2.0, .gamma = 0.5}(inputs);             // needs counts
//   auto alphapo = hafrm::Simpo{.beta = 2.5, .gamma = 0.1, .alpha = 0.25}(inputs);
//   auto sft = hafrm::ChosenNll{.token_weighted = true}(inputs);
//   auto orpo = hafrm::Orpo{.beta = 0.1}(inputs);                            // beta is lambda
//   auto trl = hafrm::Orpo{.nll_scope = hafrm::OrpoNll::kPromptAndResponse}(inputs);  // TRL's NLL
// example-end
//
// Any reference tensors in the inputs are ignored.
#pragma once

#include <torch/torch.h>

#include <limits>
#include <numbers>

#include "hafrm/losses/policy_base.hpp"

namespace hafrm {

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
    check_smoothing(label_smoothing, kName);
    detail::check_alphapo(alpha, kName);
  }
  torch::Tensor per_pair(const PolicyTerms& t) const {
    auto l = detail::alphapo_reward(t.pi_c / t.n_c, alpha) -
             detail::alphapo_reward(t.pi_r / t.n_r, alpha) - gamma / beta;
    return detail::smoothed_sigmoid_loss(beta * l, label_smoothing);
  }
  HAFRM_POLICY_LOSS_PLUMBING
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

enum class CpoLoss {
  kSigmoid,  // -(1-eps) logsigmoid(beta l) - eps logsigmoid(-beta l), l = pi_c - pi_r
  kHinge,    // max(0, 1 - beta l)
  kIpo,      // (l - 1/(2 beta))^2 with l = pi_c/n_c - pi_r/n_r
  kSimpo,    // SimPO's loss (Simpo), so that CPO with cpo_alpha = 0 is exactly SimPO
};

// CPO (Xu et al. 2024): a reference-free preference term plus cpo_alpha times the chosen responses'
// per-token NLL over the batch (-sum pi_c / sum n_c; repeated per pair under kNone, as TRL).
// alpha != 0 applies AlphaPO's r(q) = (1 - exp(q)^(-alpha)) / alpha to the log-probs the loss
// compares (means for ipo and simpo, sums otherwise; TRL's CPOTrainer does the same).
struct Cpo {
  double beta = 0.1;
  CpoLoss loss = CpoLoss::kSigmoid;
  double label_smoothing = 0.0;  // sigmoid and simpo
  double gamma = 0.5;            // simpo only (TRL simpo_gamma)
  double alpha = 0.0;            // AlphaPO reward shape; 0 = log-prob rewards
  double cpo_alpha = 1.0;        // weight of the NLL (behaviour-cloning) term
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "cpo";
  static constexpr bool kReferenceFree = true;
  bool needs_counts() const {
    return loss == CpoLoss::kIpo || loss == CpoLoss::kSimpo || cpo_alpha > 0.0;
  }
  void check_params() const {
    check_smoothing(label_smoothing, kName);
    detail::check_weight(gamma, kName, "gamma");
    detail::check_alphapo(alpha, kName);
    detail::check_weight(cpo_alpha, kName, "cpo_alpha");
  }
  torch::Tensor per_pair(const PolicyTerms& t, const PolicyInputs&, Metrics& metrics) const {
    torch::Tensor per;
    if (loss == CpoLoss::kSimpo) {
      per = Simpo{.beta = beta, .gamma = gamma, .label_smoothing = label_smoothing, .alpha = alpha}
                .per_pair(t);
    } else {
      const bool normalised = loss == CpoLoss::kIpo;
      auto qc = normalised ? t.pi_c / t.n_c : t.pi_c;
      auto qr = normalised ? t.pi_r / t.n_r : t.pi_r;
      auto l = detail::alphapo_reward(qc, alpha) - detail::alphapo_reward(qr, alpha);
      if (loss == CpoLoss::kSigmoid) per = detail::smoothed_sigmoid_loss(beta * l, label_smoothing);
      if (loss == CpoLoss::kHinge) per = detail::hinge_loss(beta * l);
      if (loss == CpoLoss::kIpo) per = detail::ipo_loss(l, beta);
    }
    if (cpo_alpha > 0.0) {
      auto nll = detail::token_weighted_nll(t);
      per = per + cpo_alpha * detail::expand_batch(nll, per);
      metrics["nll_loss"] = nll.detach();
    }
    return per;
  }
  HAFRM_POLICY_LOSS_PLUMBING
};

namespace detail {

// log(1 - exp(q)) for q < 0 (Maechler 2012): log(-expm1(q)) near 0, log1p(-exp(q)) below -ln 2.
// Each branch sees only its own range, so the branch torch::where drops has a finite gradient
// (an unclamped branch would give inf * 0 = NaN). q is first capped at -eps of its dtype, since a
// mean token probability of exactly 1 has no odds.
inline torch::Tensor log1mexp(const torch::Tensor& q) {
  const double eps = q.scalar_type() == torch::kDouble ? std::numeric_limits<double>::epsilon()
                                                       : std::numeric_limits<float>::epsilon();
  auto x = torch::clamp_max(q, -eps);
  constexpr double t = -std::numbers::ln2;
  auto near_zero = torch::log(-torch::expm1(torch::clamp_min(x, t)));
  auto far = torch::log1p(-torch::exp(torch::clamp_max(x, t)));
  return torch::where(x < t, far, near_zero);
}

}  // namespace detail

// Which tokens ORPO's NLL term averages over.
enum class OrpoNll {
  kResponse,           // the chosen responses' tokens (hafrm's default, as the paper's eq. 2)
  kPromptAndResponse,  // prompt and response tokens of the chosen sequences (TRL's ORPOTrainer)
};

// ORPO (Hong et al. 2024), lambda = beta (TRL's name, default 0.1): with mean log-probs q = pi/n,
// log_odds = (q_c - q_r) - (log(1 - e^q_c) - log(1 - e^q_r));
// loss = NLL(chosen, per-token over the batch) - lambda * mean(logsigmoid(log_odds)).
// nll_scope = kPromptAndResponse reads PolicyInputs::policy_chosen_prompt and chosen_prompt_count:
// NLL = -(sum(pi_c) + sum(prompt_c)) / (sum(n_c) + sum(n_prompt_c)).
struct Orpo {
  double beta = 0.1;  // lambda, the odds-ratio weight
  OrpoNll nll_scope = OrpoNll::kResponse;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "orpo";
  static constexpr bool kNeedsCounts = true;
  static constexpr bool kReferenceFree = true;
  torch::Tensor per_pair(const PolicyTerms& t, const PolicyInputs& in, Metrics& metrics) const {
    auto qc = t.pi_c / t.n_c, qr = t.pi_r / t.n_r;
    auto log_odds = (qc - qr) - (detail::log1mexp(qc) - detail::log1mexp(qr));
    auto ratio = torch::log_sigmoid(log_odds);
    auto nll = nll_scope == OrpoNll::kResponse ? detail::token_weighted_nll(t) : prompt_nll(in, t);
    auto per = detail::expand_batch(nll, ratio) - beta * ratio;
    torch::NoGradGuard ng;  // the metrics below stay out of the graph
    metrics["nll_loss"] = nll.detach();
    metrics["log_odds_ratio"] = ratio.mean();
    metrics["log_odds_chosen"] = log_odds.mean();
    return per;
  }
  HAFRM_POLICY_LOSS_PLUMBING

 private:
  static torch::Tensor prompt_nll(const PolicyInputs& in, const PolicyTerms& t) {
    constexpr const char* why = "nll_scope = OrpoNll::kPromptAndResponse";
    HAFRM_CHECK_ARG(in.policy_chosen_prompt.defined(), kName, "inputs.policy_chosen_prompt",
                    "is required by this loss (", why,
                    ": the summed log-probs of the chosen prompts' tokens)");
    auto pp = detail::check_batch_vector(in.policy_chosen_prompt, kName,
                                         "inputs.policy_chosen_prompt", t.pi_c.size(0))
                  .to(t.pi_c.scalar_type());
    detail::check_same_device(t.pi_c, pp, kName, "inputs.policy_chosen",
                              "inputs.policy_chosen_prompt");
    auto np = detail::check_counts(in.chosen_prompt_count, kName, "inputs.chosen_prompt_count",
                                   t.pi_c, /*allow_zero=*/true);
    return -(t.pi_c.sum() + pp.sum()) / (t.n_c.sum() + np.sum());
  }
};

}  // namespace hafrm
