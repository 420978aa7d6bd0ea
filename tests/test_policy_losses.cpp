// Token-level policy losses against independent float64 transcriptions (docs/losses.md).
#include <cmath>
#include <functional>

#include "hafrm/losses/dpo_family.hpp"
#include "hafrm/losses/reference_free.hpp"
#include "test_util.hpp"

using namespace hafrm_test;
using namespace hafrm_test::catalogue;  // Pairs, make_pairs, check_value_and_grad, log_sig

TEST_CASE("DPO sigmoid, conservative and reference-free match the formula", "[losses]") {
  const double beta = GENERATE(0.1, 0.5), eps = GENERATE(0.0, 0.2);
  check_value_and_grad(hafrm::Dpo{.beta = beta, .label_smoothing = eps},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double d = (pc - rc) - (pr - rr);
                         return -(1 - eps) * log_sig(beta * d) - eps * log_sig(-beta * d);
                       }));
  // Reference-free: omitted reference tensors, or the explicit flag.
  check_value_and_grad(hafrm::Dpo{.beta = beta, .label_smoothing = eps},
                       pairwise([=](double pc, double pr, double, double, double, double) {
                         double d = pc - pr;
                         return -(1 - eps) * log_sig(beta * d) - eps * log_sig(-beta * d);
                       }),
                       /*ref=*/false);
  auto p = make_pairs(5);
  auto a = hafrm::Dpo{.beta = beta, .reference_free = true}(p.inputs(true)).loss;
  auto b = hafrm::Dpo{.beta = beta}(p.inputs(false)).loss;
  CHECK(a.item<double>() == Approx(b.item<double>()).epsilon(1e-12));
}

TEST_CASE("robust DPO and hinge match their formulas", "[losses]") {
  const double beta = 0.3, eps = GENERATE(0.0, 0.1, 0.4);
  check_value_and_grad(hafrm::RobustDpo{.beta = beta, .label_smoothing = eps},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double x = beta * ((pc - rc) - (pr - rr));
                         return (-(1 - eps) * log_sig(x) + eps * log_sig(-x)) / (1 - 2 * eps);
                       }));
  check_value_and_grad(hafrm::DpoHinge{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         return std::max(0.0, 1 - beta * ((pc - rc) - (pr - rr)));
                       }));
}

TEST_CASE("IPO in its four forms", "[losses]") {
  const double b = GENERATE(0.1, 0.5);
  using F = hafrm::IpoForm;
  check_value_and_grad(
      hafrm::Ipo{.beta = b, .form = F::kLengthNormalised},
      pairwise([=](double pc, double pr, double rc, double rr, double nc, double nr) {
        double v = (pc - rc) / nc - (pr - rr) / nr - 1 / (2 * b);
        return v * v;
      }));
  check_value_and_grad(hafrm::Ipo{.beta = b, .form = F::kSum},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double v = (pc - rc) - (pr - rr) - 1 / (2 * b);
                         return v * v;
                       }));
  check_value_and_grad(hafrm::Ipo{.beta = b, .form = F::kSqrt},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double v = (pc - rc) - (pr - rr) - 1 / (2 * b);
                         return b * v * v;
                       }));
  check_value_and_grad(hafrm::Ipo{.beta = b, .form = F::kFull},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double v = b * ((pc - rc) - (pr - rr)) - 0.5;
                         return v * v;
                       }));
}

TEST_CASE("SimPO and the chosen NLL", "[losses]") {
  const double beta = 2.0, gamma = GENERATE(0.0, 0.5), eps = GENERATE(0.0, 0.1);
  check_value_and_grad(hafrm::Simpo{.beta = beta, .gamma = gamma, .label_smoothing = eps},
                       pairwise([=](double pc, double pr, double, double, double nc, double nr) {
                         double l = pc / nc - pr / nr - gamma / beta;
                         return -(1 - eps) * log_sig(beta * l) - eps * log_sig(-beta * l);
                       }));
  check_value_and_grad(hafrm::ChosenNll{}, pairwise([=](double pc, double, double, double,
                                                        double nc, double) { return -pc / nc; }));
  auto p = make_pairs(6);
  auto tw = hafrm::ChosenNll{.token_weighted = true}(p.inputs());
  CHECK(tw.loss.item<double>() ==
        Approx((-p.pc.sum() / p.nc.sum().to(torch::kDouble)).item<double>()).epsilon(1e-12));
}

TEST_CASE("policy losses report DPO's implicit-reward metrics", "[losses]") {
  auto p = make_pairs(8);
  auto out = hafrm::Dpo{.beta = 0.1}(p.inputs());
  auto rc = 0.1 * (p.pc - p.rc), rr = 0.1 * (p.pr - p.rr);
  CHECK(out.metrics.at("rewards_chosen").item<double>() == Approx(rc.mean().item<double>()));
  CHECK(out.metrics.at("rewards_accuracy").item<double>() ==
        Approx((rc > rr).to(torch::kDouble).mean().item<double>()));
  CHECK(out.metrics.at("rewards_margin").item<double>() == Approx((rc - rr).mean().item<double>()));
}

TEST_CASE("policy losses stay finite for |d| up to 1e4 in float32", "[losses]") {
  const double sign = GENERATE(-1.0, 1.0);
  auto pc = torch::full({3}, sign * 1e4, torch::kFloat).requires_grad_();
  hafrm::PolicyInputs in;
  in.policy_chosen = pc;
  in.policy_rejected = torch::zeros({3});
  in.chosen_count = torch::full({3}, 5), in.rejected_count = torch::full({3}, 7);
  std::vector<std::function<hafrm::LossOutput()>> losses{
      [&] { return hafrm::Dpo{.beta = 1.0, .label_smoothing = 0.1}(in); },
      [&] { return hafrm::RobustDpo{.beta = 1.0, .label_smoothing = 0.1}(in); },
      [&] { return hafrm::Simpo{.beta = 2.0, .gamma = 0.5}(in); },
      [&] { return hafrm::DpoHinge{.beta = 1.0}(in); },
      [&] { return hafrm::Ipo{.beta = 0.1, .form = hafrm::IpoForm::kFull}(in); }};
  for (auto& f : losses) {
    pc.mutable_grad() = torch::Tensor();
    auto out = f();
    out.loss.backward();
    CHECK(all_finite(out.loss));
    CHECK(all_finite(pc.grad()));
  }
}

TEST_CASE("policy losses reject bad input with a named argument", "[losses]") {
  auto p = make_pairs(4);
  auto in = p.inputs();
  require_error([&] { hafrm::Dpo{.beta = 0.0}(in); }, {"dpo", "beta", "> 0"});
  require_error([&] { hafrm::Dpo{.beta = -1}(in); }, {"beta"});
  require_error([&] { hafrm::Dpo{.label_smoothing = 0.5}(in); }, {"label_smoothing"});
  require_error([&] { hafrm::RobustDpo{.label_smoothing = 0.6}(in); }, {"label_smoothing"});
  require_error([&] { hafrm::RobustDpo{.label_smoothing = 0.5}(in); },
                {"robust_dpo", "label_smoothing"});
  require_error([&] { hafrm::Simpo{.alpha = NAN}(in); }, {"simpo", "alpha", "finite"});
  auto bad = in;
  bad.policy_rejected = randn({3});
  require_error([&] { hafrm::Dpo{}(bad); }, {"inputs.policy_rejected", "batch size 4"});
  bad = in;
  bad.reference_rejected = torch::Tensor();
  require_error([&] { hafrm::Dpo{}(bad); }, {"inputs.reference_rejected", "together"});
  bad = in;
  bad.chosen_count = torch::Tensor();
  require_error([&] { hafrm::Simpo{}(bad); }, {"simpo", "inputs.chosen_count", "required"});
  bad = in;
  bad.rejected_count = torch::tensor({3, 0, 2, 1});
  require_error([&] { hafrm::Ipo{}(bad); }, {"inputs.rejected_count", "at least one scored token"});
  hafrm::PolicyInputs empty;
  empty.policy_chosen = torch::empty({0});
  empty.policy_rejected = torch::empty({0});
  require_error([&] { hafrm::Dpo{}(empty); }, {"inputs.policy_chosen", "empty"});
  bad = in;
  bad.policy_chosen = torch::ones({4}, torch::kInt);
  require_error([&] { hafrm::Dpo{}(bad); }, {"inputs.policy_chosen", "floating-point"});
}
