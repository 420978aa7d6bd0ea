// The library side of the bad-input sweep: ignored positions that hold exactly 0 on the reference
// path, 0-weight hybrid terms that leave the total alone, parameters that would overflow float32
// rejected with their range (every built-in loss, enumerated from the registry), named errors for
// the cases that would otherwise be silent, exact f-divergence gradients, ORPO's NLL scope,
// is_argmax ties, mixed-dtype fused linear log-probs and unpaired KTO by name.
// Over 400 lines on purpose: it is the one list of cases that docs/reliability.md counts, entry
// point by entry point, so the table and the file can be checked against each other.
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

hafrm::PolicyInputs pairs(int64_t B, torch::Dtype dt = torch::kDouble) {
  hafrm::PolicyInputs in;
  auto lp = [&] { return (-(randn({B}).abs() + 0.05) * 10).to(dt); };
  in.policy_chosen = lp().requires_grad_(), in.policy_rejected = lp().requires_grad_();
  in.reference_chosen = lp(), in.reference_rejected = lp();
  in.chosen_count = torch::randint(1, 30, {B}), in.rejected_count = torch::randint(1, 30, {B});
  in.kl_estimate = torch::tensor(0.3, dt);
  return in;
}

hafrm::RewardInputs rewards(int64_t B) {
  return {randn({B}).requires_grad_(), randn({B}).requires_grad_(), {}};
}

double grad_sum(const torch::Tensor& x) {
  return x.grad().defined() ? x.grad().abs().sum().item<double>() : 0.0;
}

// Every built-in policy loss of the catalogue with a beta, through the registry (so a new loss is
// swept without being named here), plus each non-default f-divergence on every loss that accepts
// one. run(beta, inputs) builds the spec with that beta and evaluates it.
struct NamedLoss {
  std::string spec;
  bool exp_score = false;  // an exponential f-divergence score (reaches e^80 at its cap)
  hafrm::LossOutput run(double beta, const hafrm::PolicyInputs& in) const {
    std::ostringstream b;
    b.precision(17);
    b << beta;
    return hafrm::make_policy_loss(spec + (spec.find(':') == std::string::npos ? ":" : ",") +
                                   "beta=" + b.str())(in);
  }
};

std::vector<NamedLoss> every_policy_loss() {
  std::vector<NamedLoss> all;
  for (const auto& l : hafrm::loss_catalogue()) {
    if (l.registry != "policy" || !l.built_in) continue;
    bool has_beta = false, any_divergence = false;
    for (const auto& p : l.params) {
      has_beta = has_beta || p.name == "beta";
      any_divergence = any_divergence || (p.name == "f_divergence_type" && p.type != "reverse_kl");
    }
    if (!has_beta) continue;
    all.push_back({l.name});
    // The quadratic ipo forms square an exponential score: unbounded there in any precision.
    if (any_divergence && !l.name.starts_with("ipo"))
      for (const char* f : {"forward_kl", "js_divergence", "alpha_divergence"})
        all.push_back({l.name + ":f_divergence_type=" + f, std::string(f) != "js_divergence"});
  }
  REQUIRE(all.size() > 40);
  return all;
}

}  // namespace

// ---- 1. silent wrong values ---------------------------------------------------------------------

TEST_CASE("reference path: ignored positions hold exactly 0 with -inf, NaN or +inf in the row",
          "[logprobs]") {
  const auto dt = GENERATE(torch::kFloat, torch::kDouble);
  const int64_t B = 2, T = 4, V = 9;
  INFO("dtype " << dt);
  auto x = randn({B, T, V}, dt, 3.0);
  auto y = torch::randint(0, V, {B, T}, torch::kLong);
  // Ignored rows carrying each poison; one scored row with a -inf logit away from its label.
  y[0][1] = -100, x[0][1][3] = -kInf;
  y[1][0] = -100, x[1][0][5] = NAN;
  y[1][2] = -100, x[1][2][0] = kInf, x[1][2][7] = -kInf;
  y[0][2] = 4, x[0][2][6] = -kInf;
  auto ignored = y == -100;
  hafrm::TokenLogProbOptions o;
  o.backend = hafrm::LogProbBackend::kReference;
  o.return_lse = o.return_entropy = o.return_log_sum_p2 = true;
  o.return_mean_logit = o.return_is_argmax = true;
  auto xg = x.clone().requires_grad_();
  auto out = hafrm::compute_token_logprobs(xg, y, o);
  for (auto* t : {&out.logprobs, &out.lse, &out.entropy, &out.log_sum_p2, &out.mean_logit})
    CHECK(t->masked_select(ignored).eq(0).all().item<bool>());
  // The scored row with a -inf logit stays finite (its mean logit is -inf, rightly).
  for (auto* t : {&out.logprobs, &out.lse, &out.entropy, &out.log_sum_p2})
    CHECK(all_finite(t->masked_select(~ignored)));
  CHECK_FALSE(out.is_argmax.masked_select(ignored).any().item<bool>());
  // The scored rows are unchanged by the poison next door: the float64 oracle on clean rows.
  auto clean = x.masked_fill(ignored.unsqueeze(-1), 0.0).to(torch::kDouble);
  auto ref = hafrm::compute_token_logprobs(clean, y, o);
  CHECK(close(out.logprobs, ref.logprobs, 1e-6, 1e-6));
  CHECK(close(out.entropy, ref.entropy, 1e-6, 1e-6));
  // Gradient: exactly 0 on ignored rows, finite on the others (the -inf entry gets 0).
  (out.logprobs.sum() + out.entropy.sum()).backward();
  auto g = xg.grad();
  CHECK(g.masked_select(ignored.unsqueeze(-1).expand({B, T, V})).eq(0).all().item<bool>());
  CHECK(all_finite(g));
  // The float64 default (kAuto keeps float64 on the reference path) and the linear reference.
  if (dt == torch::kDouble) {
    hafrm::TokenLogProbOptions a;
    a.return_mean_logit = true;
    auto auto_out = hafrm::compute_token_logprobs(x, y, a);
    CHECK(auto_out.logprobs.masked_select(ignored).eq(0).all().item<bool>());
    CHECK(auto_out.mean_logit.masked_select(ignored).eq(0).all().item<bool>());
  }
}

TEST_CASE("a hybrid term whose weight is 0 this step does not touch the total", "[hybrid]") {
  const int64_t B = 4;
  auto r = rewards(B);
  auto p = pairs(B);
  // An inf policy loss (a -inf log-prob: d = -inf) and, separately, an inf reward loss.
  auto p_inf = p;
  p_inf.policy_chosen = p.policy_chosen.detach().clone();
  p_inf.policy_chosen[0] = -kInf;
  p_inf.policy_chosen.requires_grad_();
  REQUIRE(std::isinf(hafrm::Dpo{}(p_inf).loss.item<double>()));
  auto r_inf = r;
  r_inf.rejected = r.rejected.detach().clone();
  r_inf.rejected[1] = kInf;
  r_inf.rejected.requires_grad_();
  REQUIRE(std::isinf(hafrm::BradleyTerry{}(r_inf).loss.item<double>()));
  const double bt = hafrm::BradleyTerry{}(r).loss.item<double>();
  const double dpo = hafrm::Dpo{}(p).loss.item<double>();

  SECTION("alternate: reward block with an inf policy term") {
    hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo, hafrm::AlternateWeighting> haf{
        {}, {}, {.period = 1}};
    auto out = haf(r, p_inf, 1);
    CHECK(out.loss.item<double>() == Approx(bt).epsilon(1e-12));
    CHECK(std::isinf(out.metrics.at("policy/loss").item<double>()));  // still logged
    out.loss.backward();
    CHECK(all_finite(r.chosen.grad()));
    CHECK(grad_sum(p_inf.policy_chosen) == 0.0);
  }
  SECTION("alternate: policy block with an inf reward term") {
    hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo, hafrm::AlternateWeighting> haf{
        {}, {}, {.period = 1}};
    auto out = haf(r_inf, p, 0);
    CHECK(out.loss.item<double>() == Approx(0.2 * dpo).epsilon(1e-12));
    out.loss.backward();
    CHECK(all_finite(p.policy_chosen.grad()));
  }
  SECTION("warm-up step 0 (alpha 0) with an inf policy term") {
    hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo, hafrm::LinearWarmupWeighting> haf;
    auto out = haf(r, p_inf, 0);
    CHECK(out.loss.item<double>() == Approx(bt).epsilon(1e-12));
  }
  SECTION("every weight 0: an exact 0 that backward() accepts") {
    hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo, hafrm::LinearWarmupWeighting> haf{
        {}, {}, {.reward_weight = 0.0}};
    auto out = haf(r_inf, p_inf, 0);
    CHECK(out.loss.item<double>() == 0.0);
    out.loss.backward();
    CHECK(grad_sum(r_inf.chosen) == 0.0);
  }
  SECTION("a 0-weight member of a policy list") {
    // A +inf rejected log-prob: Dpo is inf (d = -inf), the chosen NLL does not read it.
    auto p_rej = p;
    p_rej.policy_rejected = p.policy_rejected.detach().clone();
    p_rej.policy_rejected[0] = kInf;
    p_rej.policy_rejected.requires_grad_();
    REQUIRE(std::isinf(hafrm::Dpo{}(p_rej).loss.item<double>()));
    hafrm::PolicyLossList list{{1.0, hafrm::ChosenNll{}}, {0.0, hafrm::Dpo{}}};
    auto out = list(p_rej);
    CHECK(out.loss.item<double>() == Approx(hafrm::ChosenNll{}(p).loss.item<double>()));
    CHECK(std::isinf(out.metrics.at("dpo/loss").item<double>()));  // still logged
    out.loss.backward();
    CHECK(all_finite(p_rej.policy_chosen.grad()));
    CHECK(grad_sum(p_rej.policy_rejected) == 0.0);
    hafrm::PolicyLossList all_zero{{0.0, hafrm::Dpo{}}};
    auto z = all_zero(p_rej);
    CHECK(z.loss.item<double>() == 0.0);
    z.loss.backward();  // accepted, reaches nothing
  }
}

TEST_CASE("parameters that overflow float32 are rejected with their range", "[losses]") {
  auto in = pairs(4, torch::kFloat);
  const std::string range = "[1e-06, 1e+06]";
  // Every functor's beta, both ends: 1e300 (beta * d = inf) and 1e-300 (1/(2 beta) = inf).
  for (const auto& l : every_policy_loss()) {
    INFO(l.spec);
    for (double beta : {1e300, 1e-300, 1e7, 1e-7, kInf, -1.0})
      require_error([&] { l.run(beta, in); }, {"beta", range});
  }
  // The other scales, weights and coefficients.
  require_error([&] { hafrm::DiscoPop{.tau = 1e-300}(in); }, {"discopop", "tau", range});
  require_error([&] { hafrm::DiscoPop{.tau = 1e300}(in); }, {"discopop", "tau", range});
  require_error([&] { hafrm::Simpo{.gamma = 1e300}(in); }, {"simpo", "gamma", range});
  require_error([&] { hafrm::Simpo{.alpha = 1e300}(in); }, {"simpo", "alpha", range});
  require_error([&] { hafrm::Simpo{.alpha = -1e-300}(in); }, {"simpo", "alpha", range});
  require_error([&] { hafrm::Cpo{.gamma = 1e300}(in); }, {"cpo", "gamma", range});
  require_error([&] { hafrm::Cpo{.alpha = 1e-300}(in); }, {"cpo", "alpha", range});
  require_error([&] { hafrm::Cpo{.cpo_alpha = 1e300}(in); }, {"cpo", "cpo_alpha", range});
  require_error([&] { hafrm::Kto{.desirable_weight = 1e300}(in); },
                {"kto", "desirable_weight", range});
  require_error([&] { hafrm::Kto{.undesirable_weight = 1e-300}(in); },
                {"kto", "undesirable_weight", range});
  require_error([&] { hafrm::ApoZeroUnpaired{.desirable_weight = 1e300}(in); },
                {"apo_zero_unpaired", "desirable_weight", range});
  auto fd = hafrm::FDivergence{hafrm::FDivergenceType::kAlphaDivergence, 1e300};
  require_error([&] { hafrm::Dpo{.f_divergence = fd}(in); }, {"dpo", "f_divergence.alpha", range});
  auto r = rewards(4);
  require_error([&] { hafrm::BradleyTerry{.center_coefficient = 1e300}(r); },
                {"bradley_terry", "center_coefficient", range});
  require_error([&] { hafrm::RewardHinge{.margin = 1e300}(r); }, {"reward_hinge", "margin"});
  // Weightings, the policy list and the registry's '@' weight.
  require_error([&] { hafrm::ConstantWeighting{.alpha = 1e300}(0); }, {"alpha", range});
  require_error([&] { hafrm::ConstantWeighting{.reward_weight = 1e-300}(0); },
                {"reward_weight", range});
  require_error([&] { hafrm::AlternateWeighting{.alpha = 1e300}(0); }, {"alpha", range});
  require_error([&] { hafrm::LinearWarmupWeighting{.reward_weight = 1e300}(0); },
                {"reward_weight", range});
  require_error([&] { hafrm::CosineWeighting{.alpha_end = 1e300}(0); }, {"alpha_end", range});
  require_error([&] { hafrm::CosineWeighting{.alpha_start = 1e300}(0); }, {"alpha", range});
  require_error([&] { hafrm::PolicyLossList{}.add(1e300, hafrm::Dpo{}); }, {"weight", range});
  require_error([] { hafrm::make_policy_loss("sigmoid@1e300"); }, {"sigmoid@weight", range});
  require_error([] { hafrm::make_policy_loss("ipo:beta=1e-300"); }, {"ipo", "beta", range});
  require_error([] { hafrm::make_weighting("constant:alpha=1e300"); }, {"alpha", range});
}

TEST_CASE("at the ends of the parameter range every catalogue loss stays finite in float32",
          "[losses]") {
  // Both ends of beta's range; |Delta| up to 1e4 as the catalogue's stability test, 60 for the
  // exponential f-divergence scores (at their cap e^80, beta 1e6 would exceed float32's 3.4e38:
  // the input, not the parameter, is then out of float32's reach).
  const double sign = GENERATE(1.0, -1.0);
  const int64_t B = 3;
  for (const auto& l : every_policy_loss()) {
    const double mag = l.exp_score ? 60.0 : 1e4;
    for (double beta : {hafrm::detail::kMinScale, hafrm::detail::kMaxScale}) {
      INFO(l.spec << " beta " << beta << " sign " << sign);
      hafrm::PolicyInputs in;
      in.policy_chosen = torch::full({B}, sign * mag, torch::kFloat).requires_grad_();
      in.policy_rejected = torch::full({B}, -sign * mag, torch::kFloat).requires_grad_();
      in.reference_chosen = torch::zeros({B}), in.reference_rejected = torch::zeros({B});
      in.chosen_count = torch::full({B}, 1e4), in.rejected_count = torch::full({B}, 1e4);
      in.kl_estimate = torch::tensor(1.0f);
      auto out = l.run(beta, in);
      CHECK(all_finite(out.loss));
      out.loss.backward();
      CHECK(all_finite(in.policy_chosen.grad()));
    }
  }
  // The other ends: the largest weights and coefficients.
  auto in = pairs(B, torch::kFloat);
  CHECK(all_finite(hafrm::DiscoPop{.beta = 1e6, .tau = 1e-6}(in).loss));
  CHECK(all_finite(hafrm::Simpo{.beta = 1e-6, .gamma = 1e6, .alpha = 1e6}(in).loss));
  CHECK(all_finite(hafrm::Cpo{.alpha = -1e6, .cpo_alpha = 1e6}(in).loss));
  CHECK(all_finite(hafrm::Kto{.desirable_weight = 1e6, .undesirable_weight = 1e6}(in).loss));
  auto fd = hafrm::FDivergence{hafrm::FDivergenceType::kAlphaDivergence, 1e6};
  CHECK(all_finite(hafrm::Dpo{.beta = 1e6, .f_divergence = fd}(in).loss));
  hafrm::RewardInputs big{torch::full({B}, 5e3f), torch::full({B}, -5e3f), {}};
  CHECK(all_finite(hafrm::BradleyTerry{.center_coefficient = 1e6}(big).loss));
  CHECK(all_finite(hafrm::RewardHinge{.margin = 1e6}(big).loss));
}

TEST_CASE("named errors for the remaining silent cases", "[losses]") {
  auto in = pairs(4);
  SECTION("a side with no scored token is an error naming the pair, for every loss") {
    // Its summed log-prob is 0 (probability 1): a loss on sums would read it silently.
    auto none = in;
    none.chosen_count = torch::tensor({3, 0, 5, 2});
    for (const auto& name : hafrm::policy_loss_names()) {
      INFO(name);
      require_error([&] { hafrm::make_policy_loss(name)(none); },
                    {"inputs.chosen_count", "at least one scored token", "pair 1"});
    }
    auto none_r = in;
    none_r.rejected_count = torch::tensor({3, 4, 5, 0});
    require_error([&] { hafrm::Dpo{}(none_r); }, {"dpo", "inputs.rejected_count", "pair 3"});
  }
  SECTION("Plackett-Luce: a last-ranked -inf score keeps the likelihood finite") {
    auto s = torch::tensor({{2.0, 0.5, -kInf}, {1.0, -1.0, 0.0}}, torch::kDouble).requires_grad_();
    auto out = hafrm::PlackettLuce{}(s);
    // Row 0's last term is log 1: the loss is that of its first two ranks.
    const double row0 = -(2.0 - std::log(std::exp(2.0) + std::exp(0.5)));
    const double row1 = -(1.0 - std::log(std::exp(1.0) + std::exp(-1.0) + std::exp(0.0))) -
                        (-1.0 - std::log(std::exp(-1.0) + std::exp(0.0)));
    CHECK(out.loss.item<double>() == Approx((row0 + row1) / 2).epsilon(1e-12));
    out.loss.backward();
    CHECK(all_finite(s.grad()));
    CHECK(s.grad()[0][2].item<double>() == 0.0);
  }
  SECTION("fractional or infinite token counts") {
    auto frac = in;
    frac.chosen_count = torch::tensor({3.0, 2.5, 7.0, 1.0}, torch::kDouble);
    require_error([&] { hafrm::Ipo{}(frac); }, {"ipo", "inputs.chosen_count", "whole", "2.5"});
    require_error([&] { hafrm::Simpo{}(frac); }, {"simpo", "inputs.chosen_count", "whole"});
    require_error([&] { hafrm::Orpo{}(frac); }, {"orpo", "inputs.chosen_count", "whole"});
    require_error([&] { hafrm::ChosenNll{}(frac); }, {"chosen_nll", "inputs.chosen_count"});
    auto inf = in;
    inf.rejected_count = torch::tensor({3.0, kInf, 7.0, 1.0}, torch::kDouble).to(torch::kFloat);
    require_error([&] { hafrm::SigmoidNorm{}(inf); }, {"inputs.rejected_count", "whole", "inf"});
    // Whole counts in a floating tensor stay accepted.
    auto whole = in;
    whole.chosen_count = in.chosen_count.to(torch::kFloat);
    CHECK(all_finite(hafrm::Ipo{}(whole).loss));
  }
  SECTION("a negative (or NaN) per-pair hinge margin") {
    auto r = rewards(4);
    r.margin = torch::tensor({0.5, -0.25, 1.0, 0.0}, torch::kDouble);
    require_error([&] { hafrm::RewardHinge{}(r); }, {"reward_hinge", "inputs.margin", "-0.25"});
    r.margin = torch::tensor({0.5, std::nan(""), 1.0, 0.0}, torch::kDouble);
    require_error([&] { hafrm::RewardHinge{}(r); }, {"reward_hinge", "inputs.margin", ">= 0"});
    r.margin = torch::tensor({0.5, 0.0, 1.0, 0.0}, torch::kDouble);
    CHECK(all_finite(hafrm::RewardHinge{}(r).loss));
    // Bradley-Terry's margin is subtracted from the difference and may be negative.
    r.margin = torch::tensor({0.5, -0.25, 1.0, 0.0}, torch::kDouble);
    CHECK(all_finite(hafrm::BradleyTerry{}(r).loss));
  }
  SECTION("reward and policy batch sizes that differ in HybridLoss") {
    hafrm::HybridLoss<> haf;
    require_error([&] { haf(rewards(3), in); },
                  {"HybridLoss", "policy_inputs.policy_chosen", "3", "4"});
    hafrm::HybridLoss<hafrm::AnyRewardLoss, hafrm::AnyPolicyLoss, hafrm::AnyWeighting> any{
        hafrm::make_reward_loss("bt"), hafrm::make_policy_loss("sigmoid"),
        hafrm::make_weighting("constant")};
    require_error([&] { any(rewards(5), in); }, {"HybridLoss", "reward batch size"});
  }
  SECTION("a temperature so small that 1 / temperature overflows") {
    auto x = randn({3, 7}, torch::kFloat);
    auto y = torch::randint(0, 7, {3}, torch::kLong);
    for (auto be : {hafrm::LogProbBackend::kFused, hafrm::LogProbBackend::kReference}) {
      hafrm::TokenLogProbOptions o;
      o.backend = be;
      o.temperature = 1e-300;
      require_error([&] { hafrm::token_logprobs(x, y, o); },
                    {"token_logprobs", "options.temperature", "[1e-06, 1e+06]"});
      require_error(
          [&] {
            hafrm::linear_token_logprobs(x, randn({5, 7}, torch::kFloat), y, o);
          },
          {"linear_token_logprobs", "options.temperature"});
      o.temperature = 1e-6;  // the smallest accepted: finite
      CHECK(all_finite(hafrm::token_logprobs(x, y, o)));
    }
  }
  SECTION("linear_token_logprobs with H = 0") {
    auto y = torch::randint(0, 5, {3}, torch::kLong);
    require_error(
        [&] {
          hafrm::linear_token_logprobs(torch::zeros({3, 0}), torch::zeros({5, 0}), y);
        },
        {"linear_token_logprobs", "weight", "H", ">= 1"});
  }
}

// ---- 4. precision and TRL parity ----------------------------------------------------------------

TEST_CASE("forward-KL and alpha-divergence scores have exact gradients", "[losses]") {
  const auto dt = GENERATE(torch::kFloat, torch::kDouble);
  const double rtol = dt == torch::kFloat ? 2e-6 : 1e-14;
  const std::vector<double> deltas{10, 15, 17, 40, -3, 0.5};
  auto d64 = torch::tensor(deltas, torch::kDouble);
  struct Case {
    hafrm::FDivergence f;
    double slope;  // ds/dDelta = exp(slope * Delta)
  };
  using F = hafrm::FDivergenceType;
  for (const auto& c :
       {Case{{F::kForwardKl}, -1.0}, Case{{F::kAlphaDivergence, 0.5}, -0.5},
        Case{{F::kAlphaDivergence, -1.0}, -2.0}, Case{{F::kAlphaDivergence, 1.5}, 0.5}}) {
    INFO(hafrm::f_divergence_name(c.f.type) << " a " << c.f.alpha << " dtype " << dt);
    auto d = d64.to(dt).clone().requires_grad_();
    auto s = c.f.score(d);
    s.sum().backward();
    auto expect = torch::exp(c.slope * d64);  // float64 analytic
    INFO("grad " << d.grad() << " expected " << expect);
    CHECK(close(d.grad(), expect, rtol, 0.0));
    // The values are those of the float64 formula.
    auto s64 = c.f.type == F::kForwardKl ? -torch::expm1(-d64)
                                         : torch::expm1((c.f.alpha - 1) * d64) / (c.f.alpha - 1);
    CHECK(close(s, s64, rtol, 0.0));
  }
  // Above the exponent cap the score is constant and its gradient exactly 0, never NaN.
  auto far = torch::tensor({-800.0, -1000.0}, torch::kDouble).to(dt).clone().requires_grad_();
  hafrm::FDivergence{F::kForwardKl}.score(far).sum().backward();
  CHECK(far.grad().eq(0).all().item<bool>());
}

TEST_CASE("the exact score gradient reaches a loss: forward-KL DPO and AlphaPO", "[losses]") {
  // DPO with forward KL: dL/dpi_c = -beta sigmoid(-beta d) e^-Delta_c, Delta_c = 17, Delta_r = 0.
  const double beta = 0.1, dc = 17.0;
  hafrm::PolicyInputs in;
  in.policy_chosen = torch::tensor({dc - 20.0}, torch::kFloat).requires_grad_();
  in.policy_rejected = torch::tensor({-20.0f});
  in.reference_chosen = torch::tensor({-20.0f}), in.reference_rejected = torch::tensor({-20.0f});
  hafrm::Dpo{.beta = beta, .f_divergence = {hafrm::FDivergenceType::kForwardKl}}(in)
      .loss.backward();
  const double d = -std::expm1(-dc);
  const double expect = -beta / (1 + std::exp(beta * d)) * std::exp(-dc);
  CHECK(in.policy_chosen.grad().item<double>() == Approx(expect).epsilon(1e-5));
  // AlphaPO with a < 0: r(q) = -expm1(-a q)/a has dr/dq = e^(-a q) = e^-20 at a = -0.5, q = -40.
  hafrm::PolicyInputs s;
  s.policy_chosen = torch::tensor({-40.0f}).requires_grad_();
  s.policy_rejected = torch::tensor({-41.0f});
  s.chosen_count = torch::tensor({1}), s.rejected_count = torch::tensor({1});
  const double a = -0.5;
  hafrm::Simpo{.beta = 1.0, .alpha = a}(s).loss.backward();
  const double l = -std::expm1(-a * -40.0) / a + std::expm1(-a * -41.0) / a;
  const double g = -1.0 / (1 + std::exp(l)) * std::exp(-a * -40.0);
  CHECK(s.policy_chosen.grad().item<double>() == Approx(g).epsilon(1e-5));
}

TEST_CASE("ORPO's NLL over the response (default) or over prompt and response (TRL)", "[losses]") {
  const int64_t B = 5;
  auto in = pairs(B);
  in.policy_chosen_prompt = (-randn({B}).abs() * 30).requires_grad_();
  in.chosen_prompt_count = torch::randint(0, 40, {B});
  in.chosen_prompt_count[0] = 0;  // a prompt with no scored token is allowed
  const double beta = 0.2;
  auto nc = in.chosen_count.to(torch::kDouble), nr = in.rejected_count.to(torch::kDouble);
  auto qc = in.policy_chosen.detach() / nc, qr = in.policy_rejected.detach() / nr;
  auto log1mexp = [](const torch::Tensor& q) { return torch::log(-torch::expm1(q)); };
  auto ratio = torch::log_sigmoid((qc - qr) - (log1mexp(qc) - log1mexp(qr)));
  auto np = in.chosen_prompt_count.to(torch::kDouble);
  const double nll_resp = (-in.policy_chosen.detach().sum() / nc.sum()).item<double>();
  const double nll_full =
      (-(in.policy_chosen.detach().sum() + in.policy_chosen_prompt.detach().sum()) /
       (nc.sum() + np.sum()))
          .item<double>();
  const double odds = (beta * ratio.mean()).item<double>();

  auto resp = hafrm::Orpo{.beta = beta}(in);
  CHECK(resp.loss.item<double>() == Approx(nll_resp - odds).epsilon(1e-12));
  auto full = hafrm::Orpo{.beta = beta, .nll_scope = hafrm::OrpoNll::kPromptAndResponse}(in);
  CHECK(full.loss.item<double>() == Approx(nll_full - odds).epsilon(1e-12));
  CHECK(full.metrics.at("nll_loss").item<double>() == Approx(nll_full).epsilon(1e-12));
  full.loss.backward();
  // d/d(prompt_c) of -(sum pi_c + sum prompt_c) / N = -1 / N for every pair.
  CHECK(close(in.policy_chosen_prompt.grad(),
              torch::full({B}, -1.0 / (nc.sum() + np.sum()).item<double>(), torch::kDouble), 1e-12,
              0.0));
  // By name, and the errors of the option.
  auto by_name = hafrm::make_policy_loss("orpo:beta=0.2,nll_scope=prompt_and_response")(in);
  CHECK(by_name.loss.item<double>() == Approx(full.loss.item<double>()).epsilon(1e-12));
  CHECK(hafrm::make_policy_loss("orpo:beta=0.2,nll_scope=response")(in).loss.item<double>() ==
        Approx(resp.loss.item<double>()).epsilon(1e-12));
  require_error([] { hafrm::make_policy_loss("orpo:nll_scope=prompt"); },
                {"orpo:nll_scope", "response", "prompt_and_response"});
  auto missing = in;
  missing.policy_chosen_prompt = torch::Tensor();
  require_error([&] { hafrm::Orpo{.nll_scope = hafrm::OrpoNll::kPromptAndResponse}(missing); },
                {"orpo", "inputs.policy_chosen_prompt", "required"});
  auto bad_count = in;
  bad_count.chosen_prompt_count = torch::full({B}, -1, torch::kLong);
  require_error([&] { hafrm::Orpo{.nll_scope = hafrm::OrpoNll::kPromptAndResponse}(bad_count); },
                {"orpo", "inputs.chosen_prompt_count", ">= 0"});
  auto short_prompt = in;
  short_prompt.policy_chosen_prompt = randn({B - 1});
  require_error([&] { hafrm::Orpo{.nll_scope = hafrm::OrpoNll::kPromptAndResponse}(short_prompt); },
                {"orpo", "inputs.policy_chosen_prompt", "batch size"});
}

TEST_CASE("is_argmax with tied maxima: every maximum counts, on every path", "[logprobs]") {
  // Row 0: the label holds the second of two tied maxima (TRL's first-argmax would say false).
  // Row 1: the label holds the first of them. Row 2: the label is below the maximum.
  auto x = torch::tensor(
      {{1.0f, 3.0f, 0.5f, 3.0f}, {3.0f, 3.0f, -1.0f, 2.0f}, {0.0f, 2.0f, 2.0f, 1.0f}});
  auto y = torch::tensor({3, 0, 3}, torch::kLong);
  auto expect = torch::tensor({true, true, false});
  for (auto be : {hafrm::LogProbBackend::kReference, hafrm::LogProbBackend::kFused}) {
    hafrm::TokenLogProbOptions o;
    o.backend = be;
    o.return_is_argmax = true;
    CHECK(torch::equal(hafrm::compute_token_logprobs(x, y, o).is_argmax, expect));
    // The linear path: hidden = x, weight = I, so the logits are x itself.
    auto out = hafrm::compute_linear_token_logprobs(x, torch::eye(4), y, o);
    CHECK(torch::equal(out.is_argmax, expect));
  }
}

TEST_CASE("fused linear log-probs accept mixed dtypes and match float64", "[linear]") {
  struct Mix {
    torch::Dtype hidden, weight;
  };
  const auto mix = GENERATE(Mix{torch::kFloat, torch::kBFloat16},
                            Mix{torch::kBFloat16, torch::kFloat}, Mix{torch::kFloat, torch::kHalf});
  const auto be = GENERATE(hafrm::LogProbBackend::kFused, hafrm::LogProbBackend::kReference);
  const int64_t chunk = GENERATE(0, 5);
  const int64_t N = 19, H = 16, V = 300;
  INFO("hidden " << mix.hidden << " weight " << mix.weight << " chunk " << chunk);
  auto h0 = randn({N, H}, torch::kDouble).to(mix.hidden);
  auto w0 = randn({V, H}, torch::kDouble, 0.5).to(mix.weight);
  auto y = torch::randint(0, V, {N}, torch::kLong).masked_fill(torch::rand({N}) < 0.3, -100);
  auto g = randn({N});
  hafrm::TokenLogProbOptions o;
  o.backend = be;
  o.linear_chunk_tokens = chunk;
  o.linear_chunk_vocab = chunk ? 128 : 0;
  o.return_entropy = o.return_lse = true;
  auto hf = h0.clone().requires_grad_(), wf = w0.clone().requires_grad_();
  auto f = hafrm::compute_linear_token_logprobs(hf, wf, y, o);
  ((f.logprobs.to(torch::kDouble) * g).sum() - 0.3 * f.entropy.to(torch::kDouble).sum()).backward();
  // The float64 oracle on the same (already rounded) inputs.
  auto hr = h0.to(torch::kDouble).requires_grad_(), wr = w0.to(torch::kDouble).requires_grad_();
  hafrm::TokenLogProbOptions ro = o;
  ro.backend = hafrm::LogProbBackend::kReference;
  auto r = hafrm::compute_linear_token_logprobs(hr, wr, y, ro);
  ((r.logprobs * g).sum() - 0.3 * r.entropy.sum()).backward();
  // float32 compute: errors are float32 rounding, not bfloat16's 1e-2.
  CHECK(close(f.logprobs, r.logprobs, 1e-5, 2e-5));
  CHECK(close(f.entropy, r.entropy, 1e-4, 1e-4));
  CHECK(hf.grad().scalar_type() == mix.hidden);
  CHECK(wf.grad().scalar_type() == mix.weight);
  // Each gradient is the float64 one rounded once to its own dtype.
  auto tol = [](torch::Dtype t) { return t == torch::kFloat ? 1e-4 : 1e-2; };
  CHECK(close(hf.grad(), hr.grad(), tol(mix.hidden), tol(mix.hidden) * 1e-1));
  CHECK(close(wf.grad(), wr.grad(), tol(mix.weight), tol(mix.weight) * 1e-1));
}

TEST_CASE("unpaired KTO by name: make_unpaired_loss", "[losses]") {
  const int64_t N = 9;
  auto pi = (-randn({N}).abs() * 20).requires_grad_();
  auto rho = -randn({N}).abs() * 20;
  auto desirable = torch::randint(0, 2, {N}, torch::kLong);
  desirable[0] = 1, desirable[1] = 0;
  auto z = hafrm::kto_kl_estimate(-randn({N}).abs() * 20, -randn({N}).abs() * 20);
  hafrm::KtoInputs in{pi, rho, desirable, z};
  CHECK(hafrm::unpaired_loss_names() == std::vector<std::string>{"kto", "apo_zero_unpaired"});

  auto kto = hafrm::make_unpaired_loss("kto:beta=0.2,desirable_weight=1.5,undesirable_weight=0.5");
  CHECK(kto.name() == "kto");
  auto direct = hafrm::Kto{.beta = 0.2, .desirable_weight = 1.5, .undesirable_weight = 0.5}(in);
  auto by_name = kto(in);
  CHECK(by_name.loss.item<double>() == Approx(direct.loss.item<double>()).epsilon(1e-14));
  CHECK(by_name.metrics.count("kl") == 1);
  by_name.loss.backward();
  CHECK(all_finite(pi.grad()));
  auto apo = hafrm::make_unpaired_loss("apo_zero_unpaired:beta=0.3")(in);
  CHECK(apo.loss.item<double>() ==
        Approx(hafrm::ApoZeroUnpaired{.beta = 0.3}(in).loss.item<double>()).epsilon(1e-14));
  // Errors: a paired name, a weighted list, an unknown parameter, an out-of-range value, no KL.
  require_error(
      [] { hafrm::make_unpaired_loss("sigmoid"); },
      {"make_unpaired_loss", "unknown unpaired loss 'sigmoid'", "kto", "apo_zero_unpaired"});
  require_error([] { hafrm::make_unpaired_loss("kto,apo_zero_unpaired"); },
                {"make_unpaired_loss", "one unpaired loss"});
  require_error([] { hafrm::make_unpaired_loss("kto@0.5"); }, {"make_unpaired_loss", "'@'"});
  require_error([] { hafrm::make_unpaired_loss("kto:gamma=1"); },
                {"kto:gamma", "valid parameters", "desirable_weight"});
  require_error([] { hafrm::make_unpaired_loss("kto:beta=1e300"); }, {"kto", "beta"});
  auto no_kl = in;
  no_kl.kl = torch::Tensor();
  require_error([&] { kto(no_kl); }, {"kto", "inputs.kl", "required"});
}
