// Reward-ranking losses against independent float64 transcriptions of their formulas.
#include <cmath>

#include "hafrm/losses/reward.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {
// Scalar float64 transcriptions, written without any hafrm helper.
double log_sig(double x) { return x < 0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x)); }

torch::Tensor bt_formula(const torch::Tensor& c, const torch::Tensor& r, const torch::Tensor& m,
                         double eps, double center) {
  auto out = torch::empty_like(c);
  for (int64_t i = 0; i < c.size(0); ++i) {
    double d = c[i].item<double>() - r[i].item<double>() - (m.defined() ? m[i].item<double>() : 0);
    double v = -(1 - eps) * log_sig(d) - eps * log_sig(-d);
    double s = c[i].item<double>() + r[i].item<double>();
    out[i] = v + center * s * s;
  }
  return out;
}
}  // namespace

TEST_CASE("Bradley-Terry matches its formula, with margin, smoothing and centering", "[losses]") {
  auto eps = GENERATE(0.0, 0.1, 0.3);
  auto center = GENERATE(0.0, 0.01);
  auto with_margin = GENERATE(false, true);
  const int64_t B = 9;
  auto c = randn({B}, torch::kDouble, 3.0), r = randn({B}, torch::kDouble, 3.0);
  auto m = with_margin ? randn({B}).abs() : torch::Tensor();
  hafrm::BradleyTerry bt{
      .label_smoothing = eps, .center_coefficient = center, .reduction = hafrm::Reduction::kNone};
  auto out = bt({c, r, m});
  auto expect = bt_formula(c, r, m, eps, center);
  CHECK(max_abs_diff(out.loss, expect) < 1e-12);
  bt.reduction = hafrm::Reduction::kMean;
  CHECK(std::abs(bt({c, r, m}).loss.item<double>() - expect.mean().item<double>()) < 1e-12);
  bt.reduction = hafrm::Reduction::kSum;
  CHECK(std::abs(bt({c, r, m}).loss.item<double>() - expect.sum().item<double>()) < 1e-11);
  CHECK(out.metrics.at("accuracy").item<double>() ==
        Approx((c > r).to(torch::kDouble).mean().item<double>()));
  CHECK(out.metrics.at("margin").item<double>() == Approx((c - r).mean().item<double>()));
}

TEST_CASE("Bradley-Terry gradient matches finite differences", "[losses]") {
  const int64_t B = 5;
  auto c = randn({B}, torch::kDouble, 2.0).requires_grad_(), r = randn({B}, torch::kDouble, 2.0);
  hafrm::BradleyTerry bt{.label_smoothing = 0.1, .center_coefficient = 0.01};
  bt({c, r}).loss.backward();
  auto fd = finite_diff([&](torch::Tensor x) { return bt_formula(x, r, {}, 0.1, 0.01).mean(); },
                        c.detach().clone());
  CHECK(max_abs_diff(c.grad(), fd) < 1e-7);
}

TEST_CASE("reward hinge matches max(0, m - d)", "[losses]") {
  auto c = randn({16}, torch::kDouble, 2.0), r = randn({16}, torch::kDouble, 2.0);
  hafrm::RewardHinge h{.margin = 0.7, .reduction = hafrm::Reduction::kNone};
  auto out = h({c, r});
  for (int64_t i = 0; i < 16; ++i) {
    double d = c[i].item<double>() - r[i].item<double>();
    CHECK(out.loss[i].item<double>() == Approx(std::max(0.0, 0.7 - d)).margin(1e-12));
  }
  auto m = randn({16}).abs();
  auto out2 = h({c, r, m});
  CHECK(max_abs_diff(out2.loss, torch::relu(m - (c - r))) < 1e-12);
}

TEST_CASE("Plackett-Luce matches its listwise formula and reduces to BT for K = 2", "[losses]") {
  const int64_t B = 4, K = GENERATE(2, 3, 6);
  auto s = randn({B, K}, torch::kDouble, 2.0);
  auto out = hafrm::PlackettLuce{.reduction = hafrm::Reduction::kNone}(s);
  for (int64_t b = 0; b < B; ++b) {
    double loss = 0;
    for (int64_t k = 0; k < K; ++k) {
      double mx = -INFINITY;
      for (int64_t j = k; j < K; ++j) mx = std::max(mx, s[b][j].item<double>());
      double se = 0;
      for (int64_t j = k; j < K; ++j) se += std::exp(s[b][j].item<double>() - mx);
      loss -= s[b][k].item<double>() - (mx + std::log(se));
    }
    CHECK(out.loss[b].item<double>() == Approx(loss).epsilon(1e-12));
  }
  if (K == 2) {
    auto bt =
        hafrm::BradleyTerry{.reduction = hafrm::Reduction::kNone}({s.select(1, 0), s.select(1, 1)});
    CHECK(max_abs_diff(bt.loss, out.loss) < 1e-12);
  }
}

TEST_CASE("reward losses stay finite for margins of 1e4 in float32", "[losses]") {
  auto sign = GENERATE(-1.0, 1.0);
  auto c = torch::full({4}, sign * 5e3, torch::kFloat).requires_grad_();
  auto r = torch::full({4}, -sign * 5e3, torch::kFloat).requires_grad_();
  auto out = hafrm::BradleyTerry{.label_smoothing = 0.1}({c, r});
  out.loss.backward();
  CHECK(all_finite(out.loss));
  CHECK(all_finite(c.grad()));
  auto s = torch::stack({c.detach(), r.detach()}, 1).requires_grad_();
  auto pl = hafrm::PlackettLuce{}(s);
  pl.loss.backward();
  CHECK(all_finite(pl.loss));
  CHECK(all_finite(s.grad()));
  if (sign < 0) CHECK(out.loss.item<double>() == Approx(0.9 * 1e4).epsilon(1e-4));
}

TEST_CASE("reward losses reject bad input with a named argument", "[losses]") {
  auto c = randn({4}), r = randn({4});
  require_error(
      [&] {
        hafrm::BradleyTerry{}({c, randn({3})});
      },
      {"bradley_terry", "inputs.rejected", "batch size 4"});
  require_error(
      [&] {
        hafrm::BradleyTerry{}({torch::empty({0}), torch::empty({0})});
      },
      {"inputs.chosen", "empty"});
  require_error(
      [&] {
        hafrm::BradleyTerry{.label_smoothing = 0.5}({c, r});
      },
      {"label_smoothing", "[0, 0.5)"});
  require_error([&] { hafrm::BradleyTerry{.label_smoothing = -0.1}({c, r}); }, {"label_smoothing"});
  require_error(
      [&] {
        hafrm::BradleyTerry{}({torch::ones({4}, torch::kLong), r});
      },
      {"inputs.chosen", "floating-point"});
  require_error([&] { hafrm::BradleyTerry{}({c, r, randn({5})}); }, {"inputs.margin"});
  require_error(
      [&] {
        hafrm::BradleyTerry{}({randn({2, 2}), randn({2, 2})});
      },
      {"inputs.chosen", "1-D"});
  require_error([&] { hafrm::PlackettLuce{}(randn({3, 1})); }, {"scores", "K >= 2"});
  require_error([&] { hafrm::PlackettLuce{}(randn({3})); }, {"scores", "[B, K]"});
  require_error([&] { hafrm::RewardHinge{.margin = -1}({c, r}); }, {"margin"});
}
