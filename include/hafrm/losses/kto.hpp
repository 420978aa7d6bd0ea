// hafrm/losses/kto.hpp: unpaired preference losses (docs/losses.md, "Unpaired: KTO"): each
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
#include "hafrm/losses/policy.hpp"
#include "hafrm/losses/trainer_helpers.hpp"

namespace hafrm {

struct KtoInputs {
  torch::Tensor policy;     // [N] summed log-probs pi of each completion, with grad
  torch::Tensor reference;  // [N] the reference's rho; undefined: reference-free (rho = 0)
  torch::Tensor desirable;  // [N] bool (or 0/1): desirable completion
  torch::Tensor kl;         // scalar z from kto_kl_estimate; required by Kto only
};

namespace detail {

// desirable:   lambda_D (1 - sigmoid(beta (Delta - z)))
// undesirable: lambda_U (1 - sigmoid(beta (z - Delta)))        (use_kl, KTO)
// or, without the KL term, lambda_D (1 - sigmoid(beta Delta)) and lambda_U sigmoid(beta Delta),
// which are the same expressions at z = 0 (APO-zero, unpaired). Per item, in input order.
inline LossOutput unpaired_loss(const KtoInputs& in, std::string_view fn, double beta,
                                double desirable_weight, double undesirable_weight, bool use_kl,
                                Reduction reduction) {
  check_beta(beta, fn);
  check_weight(desirable_weight, fn, "desirable_weight");
  check_weight(undesirable_weight, fn, "undesirable_weight");
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
  auto good = in.desirable.to(torch::kBool);
  auto delta = pi - rho.to(pi.scalar_type());
  torch::Tensor z = torch::zeros({}, pi.options());
  if (use_kl) {
    HAFRM_CHECK_ARG(in.kl.defined(), fn, "inputs.kl",
                    "is required by this loss (the KL estimate z from mismatched pairs, see "
                    "kto_kl_estimate)");
    HAFRM_CHECK_ARG(in.kl.numel() == 1 && in.kl.is_floating_point(), fn, "inputs.kl",
                    "expected a floating-point scalar, got ", in.kl.sizes(), " ",
                    in.kl.scalar_type());
    // A scalar may live on the host: moving one value is free of consequence.
    z = in.kl.detach().reshape({}).to(pi.options()).clamp_min(0.0);
  }
  auto desirable_loss = desirable_weight * (1.0 - torch::sigmoid(beta * (delta - z)));
  auto undesirable_loss = undesirable_weight * (1.0 - torch::sigmoid(beta * (z - delta)));
  auto per = torch::where(good, desirable_loss, undesirable_loss);
  LossOutput out{reduce(per, reduction), {}};
  torch::NoGradGuard ng;
  auto rewards = beta * delta.detach();
  const auto n_good = good.sum().item<int64_t>();
  if (n_good > 0) {
    out.metrics["rewards_chosen"] = rewards.masked_select(good).mean();
    out.metrics["logps_chosen"] = pi.detach().masked_select(good).mean();
  }
  if (n_good < n) {
    out.metrics["rewards_rejected"] = rewards.masked_select(~good).mean();
    out.metrics["logps_rejected"] = pi.detach().masked_select(~good).mean();
  }
  if (use_kl) out.metrics["kl"] = z;
  return out;
}

// A preference batch as unpaired completions: chosen desirable, rejected undesirable.
inline KtoInputs unpair(const PolicyInputs& in, std::string_view fn) {
  auto t = check_policy(in, fn, false, /*reference_free=*/false);
  const int64_t b = t.pi_c.size(0);
  auto opts = torch::TensorOptions().dtype(torch::kBool).device(t.pi_c.device());
  return {torch::cat({t.pi_c, t.pi_r}), torch::cat({t.rho_c, t.rho_r}),
          torch::cat({torch::ones({b}, opts), torch::zeros({b}, opts)}), in.kl_estimate};
}

}  // namespace detail

// KTO (Ethayarajh et al. 2024, eq. 7).
struct Kto {
  double beta = 0.1;
  double desirable_weight = 1.0;    // lambda_D
  double undesirable_weight = 1.0;  // lambda_U
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "kto";
  void validate() const {
    detail::check_beta(beta, kName);
    detail::check_weight(desirable_weight, kName, "desirable_weight");
    detail::check_weight(undesirable_weight, kName, "undesirable_weight");
  }
  LossOutput operator()(const KtoInputs& in) const {
    return detail::unpaired_loss(in, kName, beta, desirable_weight, undesirable_weight, true,
                                 reduction);
  }
  // Pairs as 2B unpaired completions; the KL estimate is PolicyInputs::kl_estimate.
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    auto u = detail::unpair(in, kName);
    HAFRM_CHECK_ARG(u.kl.defined(), kName, "inputs.kl_estimate",
                    "is required by this loss (the KL estimate z from mismatched pairs, see "
                    "kto_kl_estimate)");
    return (*this)(u);
  }
};

// APO-zero on unpaired completions: desirable 1 - sigmoid(beta Delta), undesirable
// sigmoid(beta Delta); no KL term.
struct ApoZeroUnpaired {
  double beta = 0.1;
  double desirable_weight = 1.0;
  double undesirable_weight = 1.0;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "apo_zero_unpaired";
  void validate() const {
    detail::check_beta(beta, kName);
    detail::check_weight(desirable_weight, kName, "desirable_weight");
    detail::check_weight(undesirable_weight, kName, "undesirable_weight");
  }
  LossOutput operator()(const KtoInputs& in) const {
    return detail::unpaired_loss(in, kName, beta, desirable_weight, undesirable_weight, false,
                                 reduction);
  }
  LossOutput operator()(const PolicyInputs& in) const {
    validate();
    return (*this)(detail::unpair(in, kName));
  }
};

namespace detail {
template <>
inline constexpr const char* kAnyLossName<KtoInputs> = "unpaired_loss";
}  // namespace detail

// Type-erased unpaired loss: anything callable as LossOutput(const KtoInputs&).
using AnyUnpairedLoss = AnyLoss<KtoInputs>;

}  // namespace hafrm
