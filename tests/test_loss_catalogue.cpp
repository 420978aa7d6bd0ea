// The preference-loss catalogue (docs/losses.md) against independent float64 transcriptions:
// the DPO family with its f-divergences, the reference-free losses, KTO, LD-DPO and WPO; value and
// gradient on fresh random inputs, float32 stability at |Delta| = 1e4, and every documented error.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {
// ---- scalar float64 transcriptions, written without any hafrm helper ----
double log_sig(double x) { return x < 0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x)); }
double sig(double x) { return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x)); }

enum class FDiv { kReverse, kForward, kJs, kAlpha };
// s(Delta) of LOSSES.md; the exponent cap (700 in float64) is never reached by these inputs.
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

// One batch of pairs in plain doubles (counts as doubles).
struct Batch {
  std::vector<double> pc, pr, rc, rr, nc, nr;
  size_t size() const { return pc.size(); }
};
using BatchFormula = std::function<std::vector<double>(const Batch&)>;
using PairFormula = std::function<double(double, double, double, double, double, double)>;

BatchFormula pairwise(PairFormula f) {
  return [f](const Batch& b) {
    std::vector<double> out(b.size());
    for (size_t i = 0; i < b.size(); ++i)
      out[i] = f(b.pc[i], b.pr[i], b.rc[i], b.rr[i], b.nc[i], b.nr[i]);
    return out;
  };
}

std::vector<double> to_vec(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}
torch::Tensor to_tensor(const std::vector<double>& v) { return torch::tensor(v, torch::kDouble); }
double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

struct Pairs {
  torch::Tensor pc, pr, rc, rr, nc, nr;
  hafrm::PolicyInputs inputs(bool with_ref = true) const {
    hafrm::PolicyInputs in;
    in.policy_chosen = pc, in.policy_rejected = pr, in.chosen_count = nc, in.rejected_count = nr;
    if (with_ref) in.reference_chosen = rc, in.reference_rejected = rr;
    return in;
  }
  Batch batch(bool with_ref = true) const {
    Batch b{to_vec(pc), to_vec(pr), to_vec(rc), to_vec(rr), to_vec(nc), to_vec(nr)};
    if (!with_ref)
      std::fill(b.rc.begin(), b.rc.end(), 0.0), std::fill(b.rr.begin(), b.rr.end(), 0.0);
    return b;
  }
};

// Log-probs below -0.05 * scale, so that ORPO's log(1 - e^q) stays away from its pole at 0.
Pairs make_pairs(int64_t B, double scale = 20.0) {
  Pairs p;
  auto lp = [&] { return -(randn({B}).abs() + 0.05) * scale; };
  p.pc = lp(), p.pr = lp(), p.rc = lp(), p.rr = lp();
  p.nc = torch::randint(1, 40, {B}, torch::kLong), p.nr = torch::randint(1, 40, {B}, torch::kLong);
  return p;
}

// Central differences of mean(f) w.r.t. one field of the batch.
std::vector<double> fd_grad(const BatchFormula& f, Batch b, std::vector<double> Batch::*field,
                            double eps = 1e-6) {
  std::vector<double> g(b.size());
  for (size_t i = 0; i < b.size(); ++i) {
    const double v = (b.*field)[i];
    (b.*field)[i] = v + eps;
    const double fp = mean(f(b));
    (b.*field)[i] = v - eps;
    const double fm = mean(f(b));
    (b.*field)[i] = v;
    g[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

// An input the loss does not read gets no gradient at all.
torch::Tensor grad_or_zero(const torch::Tensor& x) {
  return x.grad().defined() ? x.grad() : torch::zeros_like(x);
}

template <class Loss>
void set_reduction(Loss& l, hafrm::Reduction r) {
  if constexpr (requires { l.reduction; })
    l.reduction = r;
  else
    set_reduction(l.loss, r);
}

// Value per pair (kNone) and the gradient of the mean w.r.t. pi_c and pi_r.
template <class Loss>
void check_value_and_grad(Loss loss, const BatchFormula& f, bool ref = true, double scale = 20.0,
                          int64_t B = 7) {
  auto p = make_pairs(B, scale);
  const auto b = p.batch(ref);
  set_reduction(loss, hafrm::Reduction::kNone);
  auto out = loss(p.inputs(ref));
  auto expect = to_tensor(f(b));
  CHECK(max_abs_diff(out.loss, expect) < 1e-9 * (1 + expect.abs().max().item<double>()));
  set_reduction(loss, hafrm::Reduction::kMean);
  auto pc = p.pc.clone().requires_grad_(), pr = p.pr.clone().requires_grad_();
  auto in = p.inputs(ref);
  in.policy_chosen = pc, in.policy_rejected = pr;
  auto mean_out = loss(in);
  CHECK(mean_out.loss.template item<double>() == Approx(mean(f(b))).epsilon(1e-10).margin(1e-12));
  mean_out.loss.backward();
  auto gc = to_tensor(fd_grad(f, b, &Batch::pc)), gr = to_tensor(fd_grad(f, b, &Batch::pr));
  const double tol = 1e-6 * (1 + gc.abs().max().item<double>() + gr.abs().max().item<double>());
  CHECK(max_abs_diff(grad_or_zero(pc), gc) < tol);
  CHECK(max_abs_diff(grad_or_zero(pr), gr) < tol);
}

// ---- per-pair transcriptions of LOSSES.md ----
double cons(double x, double eps) { return -(1 - eps) * log_sig(x) - eps * log_sig(-x); }
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
                         return -log_sig(z) * (1 - m) + std::exp(-z) * m;
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

TEST_CASE("the rest of the DPO family matches LOSSES.md", "[losses]") {
  const double beta = GENERATE(0.1, 0.7);
  const bool ref = GENERATE(true, false);
  INFO("beta " << beta << ", reference " << ref);
  check_value_and_grad(hafrm::NcaPair{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double c = beta * (pc - rc), r = beta * (pr - rr);
                         return -log_sig(c) - 0.5 * log_sig(-c) - 0.5 * log_sig(-r);
                       }),
                       ref);
  check_value_and_grad(hafrm::BcoPair{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         return -log_sig(beta * (pc - rc)) - log_sig(-beta * (pr - rr));
                       }),
                       ref);
  check_value_and_grad(hafrm::SppoHard{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double w = (pc - rc) - 1 / (2 * beta), l = (pr - rr) + 1 / (2 * beta);
                         return w * w + l * l;
                       }),
                       ref);
  check_value_and_grad(hafrm::ApoZero{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         return (1 - sig(beta * (pc - rc))) + sig(beta * (pr - rr));
                       }),
                       ref);
  check_value_and_grad(hafrm::ApoDown{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double dc = pc - rc, dr = pr - rr;
                         return sig(beta * dc) + (1 - sig(beta * (dc - dr)));
                       }),
                       ref);
  check_value_and_grad(hafrm::DiscoPop{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double z = beta * ((pc - rc) - (pr - rr)), m = sig(z / 0.05);
                         return -log_sig(z) * (1 - m) + std::exp(-z) * m;
                       }),
                       ref, 2.0);
  const double eps = GENERATE(0.0, 0.15);
  // aot: sort both margins over the batch, ascending, then the conservative sigmoid loss.
  auto sorted_cons = [=](std::vector<double> x, std::vector<double> y) {
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = cons(beta * (x[i] - y[i]), eps);
    return out;
  };
  check_value_and_grad(
      hafrm::Aot{.beta = beta, .label_smoothing = eps},
      [=](const Batch& b) {
        std::vector<double> x(b.size()), y(b.size());
        for (size_t i = 0; i < b.size(); ++i) x[i] = b.pc[i] - b.pr[i], y[i] = b.rc[i] - b.rr[i];
        return sorted_cons(x, y);
      },
      ref);
  check_value_and_grad(
      hafrm::AotUnpaired{.beta = beta, .label_smoothing = eps},
      [=](const Batch& b) {
        std::vector<double> x(b.size()), y(b.size());
        for (size_t i = 0; i < b.size(); ++i) x[i] = b.pc[i] - b.rc[i], y[i] = b.pr[i] - b.rr[i];
        return sorted_cons(x, y);
      },
      ref);
  // sft: the chosen tokens' mean NLL over the whole batch, the same value for every pair.
  check_value_and_grad(hafrm::ChosenNll{.token_weighted = true}, [](const Batch& b) {
    double s = 0, n = 0;
    for (size_t i = 0; i < b.size(); ++i) s += b.pc[i], n += b.nc[i];
    return std::vector<double>(b.size(), -s / n);
  });
}

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

TEST_CASE("every catalogue loss stays finite at |Delta| = 1e4 in float32", "[losses]") {
  const double sign = GENERATE(-1.0, 1.0);
  const int64_t B = 3, T = 4;
  auto pc = torch::full({B}, sign * 1e4, torch::kFloat).requires_grad_();
  auto pr = torch::full({B}, -sign * 1e4, torch::kFloat).requires_grad_();
  auto lc = torch::full({B, T}, -2500.0f).requires_grad_();
  hafrm::PolicyInputs in;
  in.policy_chosen = pc, in.policy_rejected = pr;
  in.reference_chosen = torch::zeros({B}), in.reference_rejected = torch::zeros({B});
  in.chosen_count = torch::full({B}, 5), in.rejected_count = torch::full({B}, 7);
  auto mask = torch::ones({B, T}, torch::kBool);
  in.tokens = hafrm::PolicyTokenInputs{lc,
                                       torch::full({B, T}, -2500.0f),
                                       mask,
                                       mask,
                                       torch::zeros({B, T}),
                                       torch::zeros({B, T}),
                                       torch::full({B, T}, -1.0f),
                                       torch::full({B, T}, -1.0f)};
  in.kl_estimate = torch::tensor(0.5f);
  std::vector<std::string> specs = hafrm::policy_loss_names();
  for (const char* extra :
       {"sigmoid:ld_alpha=0.5,use_weighting=true", "hinge:use_weighting=true", "alphapo:alpha=0.25",
        "alphapo:alpha=-0.5", "cpo:alpha=0.25", "cpo:loss_type=simpo,alpha=0.5",
        "conservative:label_smoothing=0.3", "exo_pair:label_smoothing=0.4"})
    specs.push_back(extra);
  // Every f-divergence on every loss that accepts one (except the quadratic ipo forms: squaring
  // exp(80) overflows float32, and the formula is unbounded there).
  for (const char* name :
       {"sigmoid", "robust", "hinge", "sigmoid_norm", "exo_pair", "discopop", "sft"})
    for (const char* f : {"forward_kl", "js_divergence", "alpha_divergence"})
      specs.push_back(std::string(name) + ":f_divergence_type=" + f);
  for (const auto& spec : specs) {
    INFO(spec << ", sign " << sign);
    pc.mutable_grad() = torch::Tensor(), pr.mutable_grad() = torch::Tensor();
    lc.mutable_grad() = torch::Tensor();
    auto out = hafrm::make_policy_loss(spec)(in);
    out.loss.backward();
    CHECK(all_finite(out.loss));
    for (auto* g : {&pc, &pr, &lc})
      if (g->grad().defined()) CHECK(all_finite(g->grad()));
  }
  // DiscoPOP at large |z| in both directions, also with tau > 1.
  for (double tau : {0.05, 3.0}) {
    pc.mutable_grad() = torch::Tensor();
    auto out = hafrm::DiscoPop{.beta = 1.0, .tau = tau}(in);
    out.loss.backward();
    CHECK(all_finite(out.loss));
    CHECK(all_finite(pc.grad()));
  }
  // ORPO with a mean log-prob of exactly 0 (probability 1) and just below it.
  auto q0 = torch::tensor({0.0f, -1e-9f, -3.0f}).requires_grad_();
  hafrm::PolicyInputs o;
  o.policy_chosen = q0, o.policy_rejected = torch::tensor({-1e4f, 0.0f, -2.0f});
  o.chosen_count = torch::ones({3}), o.rejected_count = torch::ones({3});
  auto orpo = hafrm::Orpo{}(o);
  orpo.loss.backward();
  CHECK(all_finite(orpo.loss));
  CHECK(all_finite(q0.grad()));
}

TEST_CASE("catalogue losses reject bad parameters and missing inputs by name", "[losses]") {
  auto p = make_pairs(4);
  auto in = p.inputs();
  // beta <= 0 for every functor.
  require_error([&] { hafrm::SigmoidNorm{.beta = 0}(in); }, {"sigmoid_norm", "beta", "> 0"});
  require_error([&] { hafrm::ExoPair{.beta = -1}(in); }, {"exo_pair", "beta"});
  require_error([&] { hafrm::NcaPair{.beta = 0}(in); }, {"nca_pair", "beta"});
  require_error([&] { hafrm::BcoPair{.beta = 0}(in); }, {"bco_pair", "beta"});
  require_error([&] { hafrm::SppoHard{.beta = 0}(in); }, {"sppo_hard", "beta"});
  require_error([&] { hafrm::Aot{.beta = 0}(in); }, {"aot", "beta"});
  require_error([&] { hafrm::AotUnpaired{.beta = 0}(in); }, {"aot_unpaired", "beta"});
  require_error([&] { hafrm::ApoZero{.beta = 0}(in); }, {"apo_zero", "beta"});
  require_error([&] { hafrm::ApoDown{.beta = 0}(in); }, {"apo_down", "beta"});
  require_error([&] { hafrm::DiscoPop{.beta = 0}(in); }, {"discopop", "beta"});
  require_error([&] { hafrm::Cpo{.beta = 0}(in); }, {"cpo", "beta"});
  require_error([&] { hafrm::Orpo{.beta = 0}(in); }, {"orpo", "beta"});
  require_error([&] { hafrm::Kto{.beta = 0}(in); }, {"kto", "beta"});
  require_error([&] { hafrm::ApoZeroUnpaired{.beta = 0}(in); }, {"apo_zero_unpaired", "beta"});
  // epsilon outside its range.
  require_error([&] { hafrm::ExoPair{.label_smoothing = 0}(in); },
                {"exo_pair", "label_smoothing", "(0, 1)"});
  require_error([&] { hafrm::ExoPair{.label_smoothing = 1}(in); }, {"exo_pair", "label_smoothing"});
  require_error([&] { hafrm::RobustDpo{.label_smoothing = 0.5}(in); },
                {"robust_dpo", "label_smoothing"});
  require_error([&] { hafrm::Aot{.label_smoothing = -0.1}(in); }, {"aot", "label_smoothing"});
  require_error([&] { hafrm::Cpo{.label_smoothing = 0.5}(in); }, {"cpo", "label_smoothing"});
  require_error([&] { hafrm::DiscoPop{.tau = 0}(in); }, {"discopop", "tau"});
  require_error([&] { hafrm::Cpo{.cpo_alpha = -1}(in); }, {"cpo", "cpo_alpha"});
  require_error([&] { hafrm::Simpo{.alpha = NAN}(in); }, {"simpo", "alpha", "finite"});
  require_error([&] { hafrm::Kto{.undesirable_weight = -1}(in); }, {"kto", "undesirable_weight"});
  // The alpha-divergence coefficient must be finite.
  auto bad_alpha = hafrm::FDivergence{hafrm::FDivergenceType::kAlphaDivergence, INFINITY};
  require_error([&] { hafrm::Dpo{.f_divergence = bad_alpha}(in); },
                {"dpo", "f_divergence.alpha", "finite"});
  require_error([&] { hafrm::DiscoPop{.f_divergence = bad_alpha}(in); },
                {"discopop", "f_divergence.alpha"});
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
  // KTO's KL estimate is required (not by the unpaired APO-zero).
  require_error([&] { hafrm::Kto{}(in); }, {"kto", "inputs.kl_estimate", "kto_kl_estimate"});
  hafrm::KtoInputs kin{p.pc, p.rc, torch::ones({4}, torch::kBool), {}};
  require_error([&] { hafrm::Kto{}(kin); }, {"kto", "inputs.kl", "required"});
  CHECK_NOTHROW(hafrm::ApoZeroUnpaired{}(kin));
  kin.desirable = torch::ones({3}, torch::kBool);
  require_error([&] { hafrm::ApoZeroUnpaired{}(kin); }, {"inputs.desirable", "[4]"});
  // Counts where a loss takes means.
  auto no_counts = in;
  no_counts.chosen_count = torch::Tensor();
  require_error([&] { hafrm::SigmoidNorm{}(no_counts); }, {"sigmoid_norm", "inputs.chosen_count"});
  require_error([&] { hafrm::Orpo{}(no_counts); }, {"orpo", "inputs.chosen_count"});
  require_error([&] { hafrm::Cpo{}(no_counts); }, {"cpo", "inputs.chosen_count"});
  // An empty batch, for every registry loss.
  hafrm::PolicyInputs empty;
  empty.policy_chosen = torch::empty({0}), empty.policy_rejected = torch::empty({0});
  empty.chosen_count = torch::empty({0}), empty.rejected_count = torch::empty({0});
  empty.kl_estimate = torch::tensor(0.0);
  for (const auto& name : hafrm::policy_loss_names()) {
    INFO(name);
    require_error([&] { hafrm::make_policy_loss(name)(empty); }, {"inputs.policy_chosen", "empty"});
  }
  hafrm::KtoInputs kempty{torch::empty({0}), {}, torch::empty({0}), torch::tensor(0.0)};
  require_error([&] { hafrm::Kto{}(kempty); }, {"kto", "inputs.policy", "empty"});
}
