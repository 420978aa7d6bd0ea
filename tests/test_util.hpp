// Shared helpers for hafrm's tests: seeded random inputs (never zeros) and tolerance checks;
// in hafrm_test::catalogue, the float64 transcriptions and value-and-gradient check that the
// policy-loss tests (test_policy_losses, test_f_divergence, test_dpo_family, test_reference_free,
// test_kto, test_modifiers) share. A nested namespace, because other test files define their own
// log_sig, Pairs or Batch under `using namespace hafrm_test`.
#pragma once

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "hafrm/losses/policy_inputs.hpp"
#include "hafrm/torch/logprob_options.hpp"

namespace hafrm_test {

// A fresh seed per call, printed on failure through Catch's INFO by the caller.
inline uint64_t fresh_seed() {
  static std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

inline torch::Tensor randn(std::vector<int64_t> shape, torch::Dtype dtype = torch::kDouble,
                           double scale = 1.0) {
  return (torch::randn(shape, torch::kDouble) * scale).to(dtype);
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// |a - b| <= atol + rtol * |b| elementwise.
inline bool close(const torch::Tensor& a, const torch::Tensor& b, double rtol, double atol) {
  auto ad = a.to(torch::kDouble), bd = b.to(torch::kDouble);
  return ((ad - bd).abs() <= atol + rtol * bd.abs()).all().item<bool>();
}

inline bool all_finite(const torch::Tensor& t) { return torch::isfinite(t).all().item<bool>(); }

// Central finite differences of a scalar function f(x) for a float64 x, element by element.
template <class F>
torch::Tensor finite_diff(F&& f, torch::Tensor x, double eps = 1e-6) {
  auto g = torch::zeros_like(x);
  auto xf = x.flatten();
  auto gf = g.flatten();
  for (int64_t i = 0; i < xf.numel(); ++i) {
    const double v = xf[i].item<double>();
    xf[i] = v + eps;
    const double fp = f(x).template item<double>();
    xf[i] = v - eps;
    const double fm = f(x).template item<double>();
    xf[i] = v;
    gf[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

// Checks that calling f throws a c10::Error whose message contains every given fragment.
template <class F>
void require_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    for (const auto& frag : fragments) {
      INFO("message: " << msg);
      CHECK(msg.find(frag) != std::string::npos);
    }
    return;
  }
  FAIL("expected a c10::Error mentioning " << *fragments.begin());
}

// Options asking for every optional output of the log-prob functions, on backend b.
inline hafrm::TokenLogProbOptions all_outputs(hafrm::LogProbBackend b) {
  hafrm::TokenLogProbOptions o;
  o.backend = b;
  o.return_lse = o.return_entropy = o.return_log_sum_p2 = o.return_mean_logit = true;
  o.return_is_argmax = true;
  return o;
}

// B random pairs of token ids below V, chosen rows t_chosen long and rejected rows t_rejected: the
// first `prompt` positions of every row are prompt (label -100) and the last pad(row, T) positions
// of a row are right padding (mask 0, label -100); labels are the ids elsewhere. Batch is
// hafrm::PreferenceBatch, a parameter so that this header needs no model header.
template <class Batch, class Pad>
Batch random_preference_batch(int64_t B, int64_t V, int64_t t_chosen, int64_t t_rejected,
                              int64_t prompt, Pad&& pad) {
  using torch::indexing::None, torch::indexing::Slice;
  auto side = [&](int64_t T, torch::Tensor& ids, torch::Tensor& mask, torch::Tensor& labels) {
    ids = torch::randint(0, V, {B, T}, torch::kLong);
    mask = torch::ones({B, T}, torch::kLong);
    labels = ids.clone();
    labels.index_put_({Slice(), Slice(0, prompt)}, -100);
    for (int64_t r = 0; r < B; ++r) {
      const int64_t n = pad(r, T);
      mask.index_put_({r, Slice(T - n, None)}, 0);
      labels.index_put_({r, Slice(T - n, None)}, -100);
    }
  };
  Batch b;
  side(t_chosen, b.chosen_ids, b.chosen_mask, b.chosen_labels);
  side(t_rejected, b.rejected_ids, b.rejected_mask, b.rejected_labels);
  return b;
}

namespace catalogue {

// Scalar float64 transcriptions of docs/losses.md, written without any hafrm helper.
inline double log_sig(double x) {
  return x < 0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x));
}
inline double sig(double x) {
  return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x));
}

// One batch of pairs in plain doubles (counts as doubles).
struct Batch {
  std::vector<double> pc, pr, rc, rr, nc, nr;
  size_t size() const { return pc.size(); }
};
using BatchFormula = std::function<std::vector<double>(const Batch&)>;
using PairFormula = std::function<double(double, double, double, double, double, double)>;

inline BatchFormula pairwise(PairFormula f) {
  return [f](const Batch& b) {
    std::vector<double> out(b.size());
    for (size_t i = 0; i < b.size(); ++i)
      out[i] = f(b.pc[i], b.pr[i], b.rc[i], b.rr[i], b.nc[i], b.nr[i]);
    return out;
  };
}

inline std::vector<double> to_vec(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}
inline torch::Tensor to_tensor(const std::vector<double>& v) {
  return torch::tensor(v, torch::kDouble);
}
inline double mean(const std::vector<double>& v) {
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
inline Pairs make_pairs(int64_t B, double scale = 20.0) {
  Pairs p;
  auto lp = [&] { return -(randn({B}).abs() + 0.05) * scale; };
  p.pc = lp(), p.pr = lp(), p.rc = lp(), p.rr = lp();
  p.nc = torch::randint(1, 40, {B}, torch::kLong), p.nr = torch::randint(1, 40, {B}, torch::kLong);
  return p;
}

// Central differences of mean(f) w.r.t. one field of the batch.
inline std::vector<double> fd_grad(const BatchFormula& f, Batch b,
                                   std::vector<double> Batch::*field, double eps = 1e-6) {
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
inline torch::Tensor grad_or_zero(const torch::Tensor& x) {
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

// The smoothing-aware sigmoid loss of docs/losses.md, per pair.
inline double cons(double x, double eps) { return -(1 - eps) * log_sig(x) - eps * log_sig(-x); }

}  // namespace catalogue
}  // namespace hafrm_test
