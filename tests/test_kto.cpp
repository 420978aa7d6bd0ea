// hafrm/losses/unpaired.hpp: KTO and unpaired APO-zero against float64 transcriptions of
// docs/losses.md (value and gradient), the same losses as PolicyInputs terms, and their errors.
#include <algorithm>
#include <cmath>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;
using namespace hafrm_test::catalogue;

TEST_CASE("KTO and unpaired APO-zero match LOSSES.md", "[losses]") {
  const int64_t N = 11;
  const double beta = GENERATE(0.1, 0.9), wd = 1.0, wu = GENERATE(1.0, 1.5);
  auto pi = -randn({N}).abs() * 20, rho = -randn({N}).abs() * 20;
  auto labels = torch::randint(0, 2, {N}, torch::kLong);
  labels[0] = 1, labels[1] = 0;  // both kinds present
  auto pi_kl = -randn({N}).abs() * 20, rho_kl = -randn({N}).abs() * 20;
  auto z = hafrm::kto_kl_estimate(pi_kl, rho_kl);
  const double zv = std::max(0.0, mean(to_vec(pi_kl)) - mean(to_vec(rho_kl)));
  CHECK(z.item<double>() == Approx(zv).epsilon(1e-12));
  const auto P = to_vec(pi), R = to_vec(rho), Y = to_vec(labels);
  auto formula = [&](const std::vector<double>& p, bool kto) {
    std::vector<double> out(N);
    for (int64_t i = 0; i < N; ++i) {
      double d = p[i] - R[i], zz = kto ? zv : 0.0;
      out[i] = Y[i] > 0 ? wd * (1 - sig(beta * (d - zz))) : wu * (1 - sig(beta * (zz - d)));
    }
    return out;
  };
  for (bool kto : {true, false}) {
    INFO((kto ? "kto" : "apo_zero_unpaired") << ", beta " << beta);
    auto pg = pi.clone().requires_grad_();
    hafrm::KtoInputs in{pg, rho, labels, z};
    hafrm::LossOutput out = kto ? hafrm::Kto{.beta = beta,
                                             .desirable_weight = wd,
                                             .undesirable_weight = wu,
                                             .reduction = hafrm::Reduction::kNone}(in)
                                : hafrm::ApoZeroUnpaired{.beta = beta,
                                                         .desirable_weight = wd,
                                                         .undesirable_weight = wu,
                                                         .reduction = hafrm::Reduction::kNone}(in);
    CHECK(max_abs_diff(out.loss, to_tensor(formula(P, kto))) < 1e-12);
    out.loss.mean().backward();
    std::vector<double> fd(N);
    for (int64_t i = 0; i < N; ++i) {
      auto p = P;
      p[i] += 1e-6;
      double fp = mean(formula(p, kto));
      p[i] -= 2e-6;
      fd[i] = (fp - mean(formula(p, kto))) / 2e-6;
    }
    CHECK(max_abs_diff(pg.grad(), to_tensor(fd)) < 1e-7);
  }
  // As a policy loss: chosen desirable, rejected undesirable, z from PolicyInputs::kl_estimate.
  auto p = make_pairs(5);
  auto pin = p.inputs();
  pin.kl_estimate = z;
  hafrm::KtoInputs unpaired{torch::cat({p.pc, p.pr}), torch::cat({p.rc, p.rr}),
                            torch::cat({torch::ones({5}), torch::zeros({5})}), z};
  CHECK(hafrm::Kto{.beta = beta}(pin).loss.item<double>() ==
        Approx(hafrm::Kto{.beta = beta}(unpaired).loss.item<double>()).epsilon(1e-12));
  CHECK(hafrm::ApoZeroUnpaired{.beta = beta}(pin).loss.item<double>() ==
        Approx(hafrm::ApoZeroUnpaired{.beta = beta}(unpaired).loss.item<double>()).epsilon(1e-12));
}

TEST_CASE("KTO and unpaired APO-zero reject bad parameters and inputs by name", "[losses]") {
  auto p = make_pairs(4);
  auto in = p.inputs();
  require_error([&] { hafrm::Kto{.beta = 0}(in); }, {"kto", "beta"});
  require_error([&] { hafrm::ApoZeroUnpaired{.beta = 0}(in); }, {"apo_zero_unpaired", "beta"});
  require_error([&] { hafrm::Kto{.undesirable_weight = -1}(in); }, {"kto", "undesirable_weight"});
  // KTO's KL estimate is required (not by the unpaired APO-zero).
  require_error([&] { hafrm::Kto{}(in); }, {"kto", "inputs.kl_estimate", "kto_kl_estimate"});
  hafrm::KtoInputs kin{p.pc, p.rc, torch::ones({4}, torch::kBool), {}};
  require_error([&] { hafrm::Kto{}(kin); }, {"kto", "inputs.kl", "required"});
  CHECK_NOTHROW(hafrm::ApoZeroUnpaired{}(kin));
  kin.desirable = torch::ones({3}, torch::kBool);
  require_error([&] { hafrm::ApoZeroUnpaired{}(kin); }, {"inputs.desirable", "[4]"});
  hafrm::KtoInputs kempty{torch::empty({0}), {}, torch::empty({0}), torch::tensor(0.0)};
  require_error([&] { hafrm::Kto{}(kempty); }, {"kto", "inputs.policy", "empty"});
}
