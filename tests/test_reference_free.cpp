// hafrm/losses/reference_free.hpp: CPO (every loss_type, with AlphaPO's reward shape and the NLL
// term), SimPO / AlphaPO (Simpo, which CPO reduces to) and ORPO against float64
// transcriptions of docs/losses.md, value and gradient; bad parameters named in the error.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;
using namespace hafrm_test::catalogue;

TEST_CASE("CPO, SimPO, AlphaPO and ORPO match LOSSES.md", "[losses]") {
  const double beta = GENERATE(0.1, 2.0), a = GENERATE(0.0, 0.25, -0.4);
  INFO("beta " << beta << ", AlphaPO a " << a);
  auto r = [=](double q) { return a == 0 ? q : (1 - std::pow(std::exp(q), -a)) / a; };
  const double eps = 0.1, gamma = 0.5, cpo_alpha = GENERATE(0.0, 1.0);
  auto nll = [](const Batch& b) {
    double s = 0, n = 0;
    for (size_t i = 0; i < b.size(); ++i) s += b.pc[i], n += b.nc[i];
    return -s / n;
  };
  auto cpo = [=](std::function<double(size_t, const Batch&)> pref) {
    return [=](const Batch& b) {
      std::vector<double> out(b.size());
      for (size_t i = 0; i < b.size(); ++i) out[i] = pref(i, b) + cpo_alpha * nll(b);
      return out;
    };
  };
  using L = hafrm::CpoLoss;
  // Small inputs (scale 0.5): AlphaPO's exp(-a q) on summed log-probs stays moderate.
  const double sc = 0.5;
  check_value_and_grad(
      hafrm::Cpo{.beta = beta, .label_smoothing = eps, .alpha = a, .cpo_alpha = cpo_alpha},
      cpo([=](size_t i, const Batch& b) { return cons(beta * (r(b.pc[i]) - r(b.pr[i])), eps); }),
      false, sc);
  check_value_and_grad(
      hafrm::Cpo{.beta = beta, .loss = L::kHinge, .alpha = a, .cpo_alpha = cpo_alpha},
      cpo([=](size_t i, const Batch& b) {
        return std::max(0.0, 1 - beta * (r(b.pc[i]) - r(b.pr[i])));
      }),
      false, sc);
  check_value_and_grad(
      hafrm::Cpo{.beta = beta, .loss = L::kIpo, .alpha = a, .cpo_alpha = cpo_alpha},
      cpo([=](size_t i, const Batch& b) {
        double v = r(b.pc[i] / b.nc[i]) - r(b.pr[i] / b.nr[i]) - 1 / (2 * beta);
        return v * v;
      }),
      false, sc);
  auto simpo = [=](size_t i, const Batch& b) {
    double l = r(b.pc[i] / b.nc[i]) - r(b.pr[i] / b.nr[i]) - gamma / beta;
    return cons(beta * l, eps);
  };
  check_value_and_grad(hafrm::Cpo{.beta = beta,
                                  .loss = L::kSimpo,
                                  .label_smoothing = eps,
                                  .gamma = gamma,
                                  .alpha = a,
                                  .cpo_alpha = cpo_alpha},
                       cpo(simpo), false, 20.0);
  // SimPO with alpha != 0 is AlphaPO; the reference tensors, if given, are ignored.
  check_value_and_grad(
      hafrm::Simpo{.beta = beta, .gamma = gamma, .label_smoothing = eps, .alpha = a},
      [=](const Batch& b) {
        std::vector<double> out(b.size());
        for (size_t i = 0; i < b.size(); ++i) out[i] = simpo(i, b);
        return out;
      },
      true, 20.0);
  // ORPO: lambda = beta; log(1 - e^q) written directly (accurate in float64 for these q).
  auto l1me = [](double q) { return std::log(1 - std::exp(q)); };
  check_value_and_grad(hafrm::Orpo{.beta = beta}, [=](const Batch& b) {
    std::vector<double> out(b.size());
    for (size_t i = 0; i < b.size(); ++i) {
      double qc = b.pc[i] / b.nc[i], qr = b.pr[i] / b.nr[i];
      double lo = (qc - qr) - (l1me(qc) - l1me(qr));
      out[i] = nll(b) - beta * log_sig(lo);
    }
    return out;
  });
  // CPO with cpo_alpha = 0 and the simpo loss is exactly SimPO.
  auto p = make_pairs(6);
  CHECK(max_abs_diff(
            hafrm::Cpo{.beta = 2, .loss = L::kSimpo, .gamma = 0.5, .cpo_alpha = 0}(p.inputs()).loss,
            hafrm::Simpo{.beta = 2, .gamma = 0.5}(p.inputs()).loss) == 0.0);
}

TEST_CASE("CPO and ORPO reject bad parameters and missing counts by name", "[losses]") {
  auto p = make_pairs(4);
  auto in = p.inputs();
  require_error([&] { hafrm::Cpo{.beta = 0}(in); }, {"cpo", "beta"});
  require_error([&] { hafrm::Orpo{.beta = 0}(in); }, {"orpo", "beta"});
  require_error([&] { hafrm::Cpo{.label_smoothing = 0.5}(in); }, {"cpo", "label_smoothing"});
  require_error([&] { hafrm::Cpo{.cpo_alpha = -1}(in); }, {"cpo", "cpo_alpha"});
  auto no_counts = in;
  no_counts.chosen_count = torch::Tensor();
  require_error([&] { hafrm::Orpo{}(no_counts); }, {"orpo", "inputs.chosen_count"});
  require_error([&] { hafrm::Cpo{}(no_counts); }, {"cpo", "inputs.chosen_count"});
}
