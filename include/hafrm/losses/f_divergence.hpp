// hafrm/losses/f_divergence.hpp: the f-divergence scores s(Delta) of f-DPO (Wang et al., 2023),
// which replace the log-ratio Delta = pi - rho of DPO-style losses; reverse KL (s = Delta) is plain
// DPO. docs/losses.md, "Notation".
//
// example-begin f_divergence Policy
//   hafrm::Dpo{.beta = 0.1, .f_divergence = {hafrm::FDivergenceType::kJsDivergence}}(inputs);
//   hafrm::Ipo{.f_divergence = {hafrm::FDivergenceType::kAlphaDivergence, 0.3}}(inputs);
// example-end
//
// Only dpo (and conservative), sigmoid_norm, dpo_hinge, the ipo forms, exo_pair, robust_dpo,
// discopop and sft accept a non-default score: the f-DPO reparameterisation leaves a beta log Z(x)
// term that cancels only in the chosen - rejected difference, so the other losses have no valid
// generalisation.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <numbers>
#include <string_view>

#include "hafrm/torch/checks.hpp"

namespace hafrm {

enum class FDivergenceType {
  kReverseKl,        // s = Delta (DPO)
  kForwardKl,        // s = 1 - exp(-Delta)
  kJsDivergence,     // s = log 2 + logsigmoid(Delta)
  kAlphaDivergence,  // s = (exp((a - 1) Delta) - 1) / (a - 1); a = 1 falls back to reverse KL
};

// Every type, the default first (the registry's choices).
inline constexpr FDivergenceType kFDivergenceTypes[] = {
    FDivergenceType::kReverseKl, FDivergenceType::kForwardKl, FDivergenceType::kJsDivergence,
    FDivergenceType::kAlphaDivergence};

// The name a spec writes (f_divergence_type=...).
inline constexpr std::string_view f_divergence_name(FDivergenceType t) {
  switch (t) {
    case FDivergenceType::kReverseKl:
      return "reverse_kl";
    case FDivergenceType::kForwardKl:
      return "forward_kl";
    case FDivergenceType::kJsDivergence:
      return "js_divergence";
    case FDivergenceType::kAlphaDivergence:
      return "alpha_divergence";
  }
  return "reverse_kl";
}

namespace detail {

// The largest exponent fed to exp() by the f-divergence and AlphaPO scores: 80 in float32 (as
// TRL, so exp stays finite with room for the loss arithmetic after it), 700 in float64. Beyond it
// the score is constant and its gradient 0.
inline double exp_cap(torch::ScalarType t) { return t == torch::kDouble ? 700.0 : 80.0; }

// expm1(min(x, cap)) with the exact gradient exp(x) (0 above the cap). Why a Function: LibTorch
// differentiates expm1 as (result + 1), which for x << 0 cancels to 0: the forward-KL score's
// gradient e^-Delta lost 2.6% at Delta = 15 in float32 and was exactly 0 from Delta ~ 17.
struct CappedExpm1Function : torch::autograd::Function<CappedExpm1Function> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
    auto xc = torch::clamp_max(x, exp_cap(x.scalar_type()));
    ctx->save_for_backward({x});
    return torch::expm1(xc);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto x = ctx->get_saved_variables()[0];
    const double cap = exp_cap(x.scalar_type());
    // Above the cap the score is constant: its gradient is 0 (select, never inf * 0).
    auto d =
        torch::where(x <= cap, torch::exp(torch::clamp_max(x, cap)), torch::zeros({}, x.options()));
    return {grads[0] * d};
  }
};

inline torch::Tensor capped_expm1(const torch::Tensor& x) { return CappedExpm1Function::apply(x); }

}  // namespace detail

struct FDivergence {
  FDivergenceType type = FDivergenceType::kReverseKl;
  double alpha = 0.5;  // alpha-divergence coefficient a (TRL f_alpha_divergence_coef)

  // Reverse KL, or the alpha-divergence at its a = 1 limit (TRL's |a - 1| < 1e-6 test).
  bool is_reverse_kl() const {
    return type == FDivergenceType::kReverseKl ||
           (type == FDivergenceType::kAlphaDivergence && std::abs(alpha - 1.0) < 1e-6);
  }

  void validate(std::string_view fn) const {
    if (type == FDivergenceType::kAlphaDivergence)
      detail::check_coefficient(alpha, fn, "f_divergence.alpha");
  }

  // s(Delta), elementwise. Forward KL is the alpha-divergence at a = 0 and shares its exponent cap
  // (TRL leaves it uncapped, which overflows to inf for Delta < -88 in float32).
  torch::Tensor score(const torch::Tensor& delta) const {
    if (is_reverse_kl()) return delta;
    switch (type) {
      case FDivergenceType::kForwardKl:
        return -detail::capped_expm1(-delta);
      case FDivergenceType::kJsDivergence:
        return std::numbers::ln2 + torch::log_sigmoid(delta);
      case FDivergenceType::kAlphaDivergence:
        return detail::capped_expm1((alpha - 1.0) * delta) / (alpha - 1.0);
      case FDivergenceType::kReverseKl:
        break;
    }
    return delta;
  }
};

}  // namespace hafrm
