// hafrm/losses/modifiers.hpp: LD-DPO (length desensitisation) and WPO (weighted pairs) on
// per-token inputs against float64 transcriptions, value and gradient, composed with each other
// and with other losses; missing or malformed per-token inputs named in the error.
#include <algorithm>
#include <cmath>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;
using namespace hafrm_test::catalogue;

namespace {
// A batch with per-token inputs: prompt zeros, then the response, then padding; masked positions
// hold garbage that must not count.
struct TokenBatch {
  torch::Tensor lc, lr, mc, mr, rc, rr, sc, sr;  // [B, T] each
  hafrm::PolicyInputs inputs(bool with_ref = true) const {
    hafrm::PolicyInputs in;
    in.policy_chosen = torch::full({lc.size(0)}, 123.0, torch::kDouble);  // replaced by LD
    in.policy_rejected = torch::full({lc.size(0)}, 456.0, torch::kDouble);
    in.chosen_count = mc.sum(1), in.rejected_count = mr.sum(1);
    hafrm::PolicyTokenInputs tk{lc, lr, mc, mr, {}, {}, sc, sr};
    if (with_ref) {
      in.reference_chosen = torch::zeros({lc.size(0)}, torch::kDouble);
      in.reference_rejected = torch::zeros({lc.size(0)}, torch::kDouble);
      tk.reference_chosen = rc, tk.reference_rejected = rr;
    }
    in.tokens = tk;
    return in;
  }
};
torch::Tensor make_mask(int64_t B, int64_t T) {
  auto m = torch::zeros({B, T}, torch::kBool);
  for (int64_t b = 0; b < B; ++b) {
    int64_t start = torch::randint(0, 3, {1}).item<int64_t>();
    int64_t len = torch::randint(1, T - start + 1, {1}).item<int64_t>();
    m.index_put_({b, torch::indexing::Slice(start, start + len)}, true);
  }
  return m;
}
TokenBatch make_tokens(int64_t B, int64_t Tc, int64_t Tr) {
  TokenBatch t;
  t.mc = make_mask(B, Tc), t.mr = make_mask(B, Tr);
  t.lc = -randn({B, Tc}).abs() * 2, t.lr = -randn({B, Tr}).abs() * 2;
  t.rc = -randn({B, Tc}).abs() * 2, t.rr = -randn({B, Tr}).abs() * 2;
  t.sc = -randn({B, Tc}).abs() - 0.5, t.sr = -randn({B, Tr}).abs() - 0.5;
  return t;
}
using Rows = std::vector<std::vector<double>>;
Rows rows(const torch::Tensor& t) {
  Rows r;
  for (int64_t b = 0; b < t.size(0); ++b) r.push_back(to_vec(t[b]));
  return r;
}
// LD-DPO sum of one row: the first `shared` scored tokens fully, the rest times ld_alpha.
double ld_row(const std::vector<double>& lp, const std::vector<double>& m, double shared,
              double ld_alpha) {
  double s = 0, k = 0;
  for (size_t t = 0; t < lp.size(); ++t)
    if (m[t] > 0) s += (++k <= shared ? 1.0 : ld_alpha) * lp[t];
  return s;
}
double count(const std::vector<double>& m) {
  double n = 0;
  for (double x : m) n += x > 0;
  return n;
}
}  // namespace

TEST_CASE("LD-DPO desensitises the sums of any loss, policy and reference alike", "[losses]") {
  const int64_t B = 5, Tc = 9, Tr = 6;
  const double ld_alpha = GENERATE(0.0, 0.3, 1.0), beta = 0.5;
  auto tb = make_tokens(B, Tc, Tr);
  const auto MC = rows(tb.mc.to(torch::kDouble)), MR = rows(tb.mr.to(torch::kDouble));
  const auto RC = rows(tb.rc), RR = rows(tb.rr);
  auto formula = [&](const Rows& LC, const Rows& LR) {
    std::vector<double> out(B);
    for (int64_t b = 0; b < B; ++b) {
      double shared = std::min(count(MC[b]), count(MR[b]));
      double pc = ld_row(LC[b], MC[b], shared, ld_alpha),
             pr = ld_row(LR[b], MR[b], shared, ld_alpha);
      double rc = ld_row(RC[b], MC[b], shared, ld_alpha),
             rr = ld_row(RR[b], MR[b], shared, ld_alpha);
      out[b] = -log_sig(beta * ((pc - rc) - (pr - rr)));
    }
    return out;
  };
  hafrm::LengthDesensitised<hafrm::Dpo> ld{
      .loss = {.beta = beta, .reduction = hafrm::Reduction::kNone}, .ld_alpha = ld_alpha};
  auto lc = tb.lc.clone().requires_grad_();
  auto in = tb.inputs();
  in.tokens->policy_chosen = lc;
  auto out = ld(in);
  CHECK(max_abs_diff(out.loss, to_tensor(formula(rows(tb.lc), rows(tb.lr)))) < 1e-12);
  out.loss.mean().backward();
  // Finite differences over every per-token log-prob of the chosen side (masked ones get 0).
  auto LC = rows(tb.lc);
  auto g = torch::zeros({B, Tc}, torch::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < Tc; ++t) {
      auto up = LC, down = LC;
      up[b][t] += 1e-6, down[b][t] -= 1e-6;
      g[b][t] = (mean(formula(up, rows(tb.lr))) - mean(formula(down, rows(tb.lr)))) / 2e-6;
    }
  CHECK(max_abs_diff(lc.grad(), g) < 1e-8);
  // ld_alpha = 1 is the plain sums; the loss's own reduction applies.
  if (ld_alpha == 1.0) {
    auto plain = tb.inputs();
    plain.policy_chosen = (tb.lc * tb.mc).sum(1), plain.policy_rejected = (tb.lr * tb.mr).sum(1);
    plain.reference_chosen = (tb.rc * tb.mc).sum(1),
    plain.reference_rejected = (tb.rr * tb.mr).sum(1);
    hafrm::LengthDesensitised<hafrm::Ipo> ipo{.loss = {.beta = 0.3}, .ld_alpha = 1.0};
    CHECK(ipo(tb.inputs()).loss.item<double>() ==
          Approx(hafrm::Ipo{.beta = 0.3}(plain).loss.item<double>()).epsilon(1e-12));
  }
}

TEST_CASE("WPO weighs each pair by its detached token probabilities", "[losses]") {
  const int64_t B = 6, Tc = 7, Tr = 8;
  auto tb = make_tokens(B, Tc, Tr);
  auto p = make_pairs(B);
  auto in = p.inputs();
  in.tokens = tb.inputs().tokens;
  const auto MC = rows(tb.mc.to(torch::kDouble)), MR = rows(tb.mr.to(torch::kDouble));
  auto weight = [](const std::vector<double>& lp, const std::vector<double>& s,
                   const std::vector<double>& m) {
    double acc = 0;
    for (size_t t = 0; t < lp.size(); ++t)
      if (m[t] > 0) acc += lp[t] - s[t];
    return std::exp(acc / count(m));
  };
  std::vector<double> w(B);
  const auto LC = rows(tb.lc), LR = rows(tb.lr), SC = rows(tb.sc), SR = rows(tb.sr);
  for (int64_t b = 0; b < B; ++b) w[b] = weight(LC[b], SC[b], MC[b]) * weight(LR[b], SR[b], MR[b]);
  const double beta = 0.2;
  auto formula = pairwise([=](double pc, double pr, double rc, double rr, double, double) {
    return -log_sig(beta * ((pc - rc) - (pr - rr)));
  });
  auto weighted = [&](const Batch& b) {
    auto v = formula(b);
    for (int64_t i = 0; i < B; ++i) v[i] *= w[i];
    return v;
  };
  hafrm::WpoWeighted<hafrm::Dpo> wpo{.loss = {.beta = beta}, .reduction = hafrm::Reduction::kNone};
  CHECK(max_abs_diff(wpo(in).loss, to_tensor(weighted(p.batch()))) < 1e-12);
  // The weights carry no gradient: only the loss's own inputs receive one.
  wpo.reduction = hafrm::Reduction::kMean;
  auto pc = p.pc.clone().requires_grad_();
  auto lc = tb.lc.clone().requires_grad_();
  in.policy_chosen = pc;
  in.tokens->policy_chosen = lc;
  wpo(in).loss.backward();
  CHECK(max_abs_diff(pc.grad(), to_tensor(fd_grad(weighted, p.batch(), &Batch::pc))) < 1e-7);
  CHECK((!lc.grad().defined() || lc.grad().abs().sum().item<double>() == 0.0));
  // WPO on top of LD-DPO: weights from the raw tokens, the loss from the desensitised sums.
  hafrm::WpoWeighted<hafrm::LengthDesensitised<hafrm::Dpo>> both{
      .loss = {.loss = {.beta = beta}, .ld_alpha = 0.5}, .reduction = hafrm::Reduction::kNone};
  auto ld_in = hafrm::length_desensitised(tb.inputs(), 0.5);
  auto expect =
      hafrm::Dpo{.beta = beta, .reduction = hafrm::Reduction::kNone}(ld_in).loss * to_tensor(w);
  CHECK(max_abs_diff(both(tb.inputs()).loss, expect) < 1e-12);
  // sft under WPO: its batch value times each pair's weight, as TRL.
  hafrm::WpoWeighted<hafrm::ChosenNll> sft{.loss = {.token_weighted = true}};
  auto nll = -p.pc.sum().item<double>() / p.nc.sum().item<double>();
  CHECK(sft(in).loss.item<double>() == Approx(nll * mean(w)).epsilon(1e-12));
}

TEST_CASE("LD-DPO and WPO reject bad parameters and missing per-token inputs by name", "[losses]") {
  auto in = make_pairs(4).inputs();
  // ld_alpha outside [0, 1].
  require_error([&] { hafrm::LengthDesensitised<hafrm::Dpo>{.ld_alpha = 1.5}(in); },
                {"ld_dpo", "ld_alpha", "[0, 1]"});
  require_error([&] { hafrm::length_desensitised(in, -0.1); }, {"ld_alpha"});
  // Missing per-token inputs.
  require_error([&] { hafrm::LengthDesensitised<hafrm::Dpo>{}(in); },
                {"ld_dpo", "inputs.tokens", "required"});
  require_error([&] { hafrm::WpoWeighted<hafrm::Dpo>{}(in); },
                {"wpo", "inputs.tokens", "required"});
  auto tb = make_tokens(4, 5, 5);
  auto with_tokens = tb.inputs();
  with_tokens.tokens->log_sum_p2_rejected = torch::Tensor();
  require_error([&] { hafrm::WpoWeighted<hafrm::Dpo>{}(with_tokens); },
                {"wpo", "inputs.tokens.log_sum_p2_rejected", "return_log_sum_p2"});
  auto no_ref_tokens = tb.inputs();
  no_ref_tokens.tokens->reference_chosen = torch::Tensor();
  require_error([&] { hafrm::LengthDesensitised<hafrm::Dpo>{}(no_ref_tokens); },
                {"ld_dpo", "inputs.tokens.reference_chosen", "reference"});
  auto bad_shape = tb.inputs();
  bad_shape.tokens->policy_rejected = tb.lr.slice(1, 0, 3);
  require_error([&] { hafrm::LengthDesensitised<hafrm::Dpo>{}(bad_shape); },
                {"inputs.tokens.policy_rejected", "shape"});
  require_error([&] { hafrm::WpoWeighted<hafrm::Aot>{}(tb.inputs()); }, {"wpo", "aot"});
}
