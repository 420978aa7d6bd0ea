// hafrm/losses/unpaired.hpp: unpaired preference losses (docs/losses.md, "Unpaired"): each
// completion is desirable or undesirable on its own, with Delta = pi - rho.
//
// example-begin kto Unpaired
//   hafrm::KtoInputs in{.policy = pi, .reference = rho, .desirable = labels,
//                       .kl = hafrm::kto_kl_estimate(pi_kl, rho_kl)};   // mismatched pairs
//   auto out = hafrm::Kto{.beta = 0.1}(in);
//   auto apo = hafrm::ApoZeroUnpaired{}(in);                              // no KL term
// example-end
//
// Both also take PolicyInputs (as the HaF policy term or in a PolicyLossList): a preference pair
// is then one desirable (chosen) and one undesirable (rejected) completion, and Kto reads its KL
// estimate from PolicyInputs::kl_estimate.
#pragma once

#include <torch/torch.h>

#include "hafrm/losses/any_loss.hpp"
#include "hafrm/losses/policy_base.hpp"
#include "hafrm/losses/trainer_helpers.hpp"

namespace hafrm {

struct KtoInputs {
  torch::Tensor policy;     // [N] summed log-probs pi of each completion, with grad
  torch::Tensor reference;  // [N] the reference's rho; undefined: reference-free (rho = 0)
  torch::Tensor desirable;  // [N] bool (or 0/1): desirable completion
  torch::Tensor kl;         // scalar z from kto_kl_estimate; required by Kto only
};

namespace detail {

// Checked unpaired completions: policy and reference sums, the desirable mask, the KL estimate.
struct UnpairedTerms {
  torch::Tensor pi, rho, good, z;
};

inline UnpairedTerms check_unpaired(const KtoInputs& in, std::string_view fn) {
  auto pi = check_batch_vector(in.policy, fn, "inputs.policy");
  const int64_t n = pi.size(0);
  auto rho = in.reference.defined()
                 ? check_batch_vector(in.reference, fn, "inputs.reference", n).detach()
                 : torch::zeros_like(pi);
  check_same_device(pi, rho, fn, "inputs.policy", "inputs.reference");
  check_defined(in.desirable, fn, "inputs.desirable");
  HAFRM_CHECK_ARG(in.desirable.dim() == 1 && in.desirable.size(0) == n, fn, "inputs.desirable",
                  "expected shape [", n, "] (one label per completion), got ",
                  in.desirable.sizes());
  check_same_device(pi, in.desirable, fn, "inputs.policy", "inputs.desirable");
  return {pi, rho.to(pi.scalar_type()), in.desirable.to(torch::kBool), in.kl};
}

// A preference batch as unpaired completions: chosen desirable, rejected undesirable.
inline UnpairedTerms unpair(const PolicyInputs& in, std::string_view fn) {
  auto t = check_policy(in, fn, false, /*reference_free=*/false);
  const int64_t b = t.pi_c.size(0);
  auto opts = torch::TensorOptions().dtype(torch::kBool).device(t.pi_c.device());
  return {torch::cat({t.pi_c, t.pi_r}), torch::cat({t.rho_c, t.rho_r}),
          torch::cat({torch::ones({b}, opts), torch::zeros({b}, opts)}), in.kl_estimate};
}

// Mean of x over the selected items without a host read: NaN when none is selected.
inline torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& selected) {
  auto s = selected.to(x.scalar_type());
  return (x * s).sum() / s.sum();
}

}  // namespace detail

// The unpaired losses (docs/losses.md, "Unpaired"), with Delta = pi - rho and z the KL estimate:
//   desirable:   lambda_D (1 - sigmoid(beta (Delta - z)))
//   undesirable: lambda_U (1 - sigmoid(beta (z - Delta)))
// KTO (Ethayarajh et al. 2024, eq. 7) reads z from the inputs; APO-zero on unpaired completions
// is the same expression at z = 0. Per item, in input order.
template <bool kUsesKl>
struct UnpairedLoss {
  double beta = 0.1;
  double desirable_weight = 1.0;    // lambda_D
  double undesirable_weight = 1.0;  // lambda_U
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = kUsesKl ? "kto" : "apo_zero_unpaired";
  void validate() const {
    check_scale(beta, kName, "beta");
    check_weight(desirable_weight, kName, "desirable_weight");
    check_weight(undesirable_weight, kName, "undesirable_weight");
  }
  LossOutput operator()(const KtoInputs& in) const {
    validate();
    return loss(detail::check_unpaired(in, kName), "inputs.kl");
  }
  // Pairs as 2B unpaired completions; the KL estimate is PolicyInputs::kl_estimate.
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    return loss(detail::unpair(in, kName), "inputs.kl_estimate");
  }

 private:
  LossOutput loss(const detail::UnpairedTerms& t, std::string_view kl_arg) const {
    auto delta = t.pi - t.rho;
    torch::Tensor z = torch::zeros({}, t.pi.options());
    if constexpr (kUsesKl) {
      HAFRM_CHECK_ARG(t.z.defined(), kName, kl_arg,
                      "is required by this loss (the KL estimate z from mismatched pairs, see "
                      "kto_kl_estimate)");
      HAFRM_CHECK_ARG(t.z.numel() == 1 && t.z.is_floating_point(), kName, kl_arg,
                      "expected a floating-point scalar, got ", t.z.sizes(), " ",
                      t.z.scalar_type());
      // A scalar may live on the host: moving one value is free of consequence.
      z = t.z.detach().reshape({}).to(t.pi.options()).clamp_min(0.0);
    }
    auto desirable_loss = desirable_weight * (1.0 - torch::sigmoid(beta * (delta - z)));
    auto undesirable_loss = undesirable_weight * (1.0 - torch::sigmoid(beta * (z - delta)));
    LossOutput out{
        detail::reduce(torch::where(t.good, desirable_loss, undesirable_loss), reduction), {}};
    torch::NoGradGuard ng;
    // Means over the desirable and the undesirable items: NaN for a kind the batch lacks.
    auto rewards = beta * delta.detach();
    out.metrics["rewards_chosen"] = detail::masked_mean(rewards, t.good);
    out.metrics["rewards_rejected"] = detail::masked_mean(rewards, ~t.good);
    out.metrics["logps_chosen"] = detail::masked_mean(t.pi.detach(), t.good);
    out.metrics["logps_rejected"] = detail::masked_mean(t.pi.detach(), ~t.good);
    if constexpr (kUsesKl) out.metrics["kl"] = z;
    return out;
  }
};

using Kto = UnpairedLoss<true>;               // KTO
using ApoZeroUnpaired = UnpairedLoss<false>;  // APO-zero on unpaired completions, no KL term

namespace detail {
template <>
inline constexpr const char* kErasedName<LossOutput(const KtoInputs&)> = "unpaired_loss";
}  // namespace detail

// Type-erased unpaired loss: anything callable as LossOutput(const KtoInputs&).
using AnyUnpairedLoss = AnyFunctor<LossOutput(const KtoInputs&)>;

}  // namespace hafrm
