// hafrm/losses/f_divergence.hpp: the f-divergence scores s(Delta) through every loss that accepts
// one, against float64 transcriptions (value and gradient), the a = 1 and a = 0 limits of the
// alpha-divergence, and a bad coefficient named in the error.
#include <algorithm>
#include <cmath>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;
using namespace hafrm_test::catalogue;

namespace {
enum class FDiv { kReverse, kForward, kJs, kAlpha };
// s(Delta) of docs/losses.md; the exponent cap (700 in float64) is never reached by these inputs.
double f_score(FDiv f, double a, double d) {
  switch (f) {
    case FDiv::kReverse:
      return d;
    case FDiv::kForward:
      return 1 - std::exp(-d);
    case FDiv::kJs:
      return std::log(2.0) + log_sig(d);
    case FDiv::kAlpha:
      return std::abs(a - 1) < 1e-6 ? d : (std::exp((a - 1) * d) - 1) / (a - 1);
  }
  return d;
}
hafrm::FDivergence to_hafrm(FDiv f, double a) {
  using T = hafrm::FDivergenceType;
  const T t[] = {T::kReverseKl, T::kForwardKl, T::kJsDivergence, T::kAlphaDivergence};
  return {t[static_cast<int>(f)], a};
}
}  // namespace

TEST_CASE("f-divergence scores and the losses that accept them", "[losses]") {
  const auto f = GENERATE(FDiv::kReverse, FDiv::kForward, FDiv::kJs, FDiv::kAlpha);
  const double a = GENERATE(0.5, -0.3, 1.0, 1.7);
  if (f != FDiv::kAlpha && a != 0.5) return;  // the coefficient only matters for alpha
  const auto fd = to_hafrm(f, a);
  const double beta = 0.4, eps = 0.2;
  INFO("f-divergence " << static_cast<int>(f) << ", a = " << a);
  auto sd = [=](double pc, double pr, double rc, double rr) {
    return f_score(f, a, pc - rc) - f_score(f, a, pr - rr);
  };
  // Inputs at scale 2 keep exp((a - 1) Delta) in the range where the losses are not saturated.
  const double sc = 2.0;
  check_value_and_grad(hafrm::Dpo{.beta = beta, .label_smoothing = eps, .f_divergence = fd},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         return cons(beta * sd(pc, pr, rc, rr), eps);
                       }),
                       true, sc);
  check_value_and_grad(hafrm::RobustDpo{.beta = beta, .label_smoothing = eps, .f_divergence = fd},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double x = beta * sd(pc, pr, rc, rr);
                         return (-(1 - eps) * log_sig(x) + eps * log_sig(-x)) / (1 - 2 * eps);
                       }),
                       true, sc);
  check_value_and_grad(hafrm::DpoHinge{.beta = beta, .f_divergence = fd},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         return std::max(0.0, 1 - beta * sd(pc, pr, rc, rr));
                       }),
                       true, sc);
  check_value_and_grad(
      hafrm::Ipo{.beta = beta, .f_divergence = fd},
      pairwise([=](double pc, double pr, double rc, double rr, double nc, double nr) {
        double v = f_score(f, a, pc - rc) / nc - f_score(f, a, pr - rr) / nr - 1 / (2 * beta);
        return v * v;
      }),
      true, sc);
  check_value_and_grad(hafrm::Ipo{.beta = beta, .form = hafrm::IpoForm::kFull, .f_divergence = fd},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double v = beta * sd(pc, pr, rc, rr) - 0.5;
                         return v * v;
                       }),
                       true, sc);
  check_value_and_grad(
      hafrm::SigmoidNorm{.beta = beta, .f_divergence = fd},
      pairwise([=](double pc, double pr, double rc, double rr, double nc, double nr) {
        return -log_sig(beta * (f_score(f, a, pc - rc) / nc - f_score(f, a, pr - rr) / nr));
      }),
      true, sc);
  check_value_and_grad(hafrm::ExoPair{.beta = beta, .label_smoothing = 0.01, .f_divergence = fd},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double x = beta * sd(pc, pr, rc, rr);
                         return sig(x) * (log_sig(x) - std::log(1 - 0.01)) +
                                sig(-x) * (log_sig(-x) - std::log(0.01));
                       }),
                       true, sc);
  check_value_and_grad(hafrm::DiscoPop{.beta = beta, .tau = 0.5, .f_divergence = fd},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double z = beta * sd(pc, pr, rc, rr), m = sig(z / 0.5);
                         // exp(-z) m in log space: for z < -709 exp(-z) overflows while m
                         // underflows to 0, and inf * 0 would make the expected value NaN.
                         return -log_sig(z) * (1 - m) + std::exp(-z + log_sig(z / 0.5));
                       }),
                       true, sc);
  // a = 1 is the reverse-KL limit, and a = 0 is forward KL.
  auto p = make_pairs(5, sc);
  auto alpha1 = hafrm::FDivergence{hafrm::FDivergenceType::kAlphaDivergence, 1.0};
  CHECK(alpha1.is_reverse_kl());
  CHECK(max_abs_diff(hafrm::Dpo{.f_divergence = alpha1}(p.inputs()).loss,
                     hafrm::Dpo{}(p.inputs()).loss) == 0.0);
  auto alpha0 = hafrm::FDivergence{hafrm::FDivergenceType::kAlphaDivergence, 0.0};
  auto fwd = hafrm::FDivergence{hafrm::FDivergenceType::kForwardKl};
  CHECK(max_abs_diff(hafrm::Dpo{.f_divergence = alpha0}(p.inputs()).loss,
                     hafrm::Dpo{.f_divergence = fwd}(p.inputs()).loss) < 1e-12);
}

TEST_CASE("an alpha-divergence coefficient that is not finite is rejected by name", "[losses]") {
  auto in = make_pairs(4).inputs();
  auto bad_alpha = hafrm::FDivergence{hafrm::FDivergenceType::kAlphaDivergence, INFINITY};
  require_error([&] { hafrm::Dpo{.f_divergence = bad_alpha}(in); },
                {"dpo", "f_divergence.alpha", "finite"});
  require_error([&] { hafrm::DiscoPop{.f_divergence = bad_alpha}(in); },
                {"discopop", "f_divergence.alpha"});
}
