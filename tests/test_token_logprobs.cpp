// Fused per-token log-probs (CPU) against the float64 reference, for every dtype and option.
#include <cmath>
#include <limits>
#include <tuple>

#include "hafrm/kernels/cpu/token_logprobs.hpp"
#include "hafrm/torch/linear_logprobs.hpp"
#include "hafrm/torch/token_logprobs.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {

torch::Tensor random_labels(int64_t N, int64_t V, double ignore_frac = 0.25) {
  auto y = torch::randint(0, V, {N}, torch::kLong);
  auto drop = torch::rand({N}) < ignore_frac;
  return y.masked_fill(drop, -100);
}

// Tolerances: float32 relative 1e-6 on the log-prob (scaled by the row's magnitude, as an LSE of
// values ~s carries ~s * 1e-7 absolute rounding), 1e-2 for bf16/fp16 inputs (input rounding).
void check_close(const hafrm::TokenLogProbs& f, const hafrm::TokenLogProbs& r, torch::Dtype dt,
                 double scale) {
  const double rtol = dt == torch::kFloat ? 1e-6 : 1e-2;
  const double atol = (dt == torch::kFloat ? 2e-6 : 1e-2) * std::max(1.0, scale);
  CHECK(f.logprobs.scalar_type() == torch::kFloat);
  CHECK(close(f.logprobs, r.logprobs, rtol, atol));
  CHECK(close(f.lse, r.lse, rtol, atol));
  CHECK(close(f.entropy, r.entropy, 1e-5, atol));
  CHECK(close(f.log_sum_p2, r.log_sum_p2, 1e-5, atol));
  CHECK(close(f.mean_logit, r.mean_logit, 1e-5, atol));
  CHECK(torch::equal(f.mask, r.mask));
}
}  // namespace

TEST_CASE("fused CPU log-probs match the float64 reference", "[logprobs]") {
  const auto dt = GENERATE(torch::kFloat, torch::kBFloat16, torch::kHalf);
  const int64_t V = GENERATE(1, 7, 33, 2048, 2049, 5003);
  const int64_t N = 19;
  const double scale = 4.0;
  INFO("dtype " << dt << " V " << V);
  auto x = randn({N, V}, torch::kDouble, scale).to(dt);
  auto y = random_labels(N, V);
  auto f = hafrm::compute_token_logprobs(x, y, all_outputs(hafrm::LogProbBackend::kFused));
  auto r = hafrm::compute_token_logprobs(x.to(torch::kDouble), y,
                                         all_outputs(hafrm::LogProbBackend::kReference));
  check_close(f, r, dt, scale);
  // is_argmax compares the stored (rounded) logits, so both paths see the same values.
  CHECK(torch::equal(f.is_argmax, r.is_argmax));
  // Ignored rows are exactly 0.
  auto ign = y == -100;
  CHECK(f.logprobs.masked_select(ign).abs().sum().item<double>() == 0.0);
}

TEST_CASE("fused log-probs honour scale, soft-cap and temperature", "[logprobs]") {
  const double scale = GENERATE(1.0, 0.5), cap = GENERATE(0.0, 30.0), temp = GENERATE(1.0, 0.7);
  auto x = randn({11, 3001}, torch::kDouble, 20.0).to(torch::kFloat);
  auto y = random_labels(11, 3001);
  auto o = all_outputs(hafrm::LogProbBackend::kFused);
  o.logit_scale = scale, o.softcap = cap, o.temperature = temp;
  auto f = hafrm::compute_token_logprobs(x, y, o);
  o.backend = hafrm::LogProbBackend::kReference;
  auto r = hafrm::compute_token_logprobs(x.to(torch::kDouble), y, o);
  check_close(f, r, torch::kFloat, 30.0);
}

TEST_CASE("fused log-probs survive extreme logits and -inf entries", "[logprobs]") {
  const int64_t N = 8, V = 4099;
  auto x = randn({N, V}, torch::kDouble, 1e4).to(torch::kFloat);  // +-1e4 spread
  x.index_put_({torch::rand({N, V}) < 0.3}, -std::numeric_limits<float>::infinity());
  auto y = torch::randint(0, V, {N}, torch::kLong);
  // Labels on finite entries so the reference log-prob is finite.
  for (int64_t i = 0; i < N; ++i) x[i][y[i].item<int64_t>()] = 5e3;
  auto o = all_outputs(hafrm::LogProbBackend::kFused);
  auto xf = x.clone().requires_grad_();
  auto f = hafrm::compute_token_logprobs(xf, y, o);
  o.backend = hafrm::LogProbBackend::kReference;
  auto xr = x.to(torch::kDouble).requires_grad_();
  auto r = hafrm::compute_token_logprobs(xr, y, o);
  CHECK(all_finite(f.logprobs));
  CHECK(all_finite(f.entropy));
  CHECK(close(f.logprobs, r.logprobs, 1e-6, 1e-2));
  CHECK(close(f.lse, r.lse, 1e-6, 1e-2));
  (f.logprobs.sum() + f.entropy.sum()).backward();
  (r.logprobs.sum() + r.entropy.sum()).backward();
  CHECK(all_finite(xf.grad()));
  // float32 holds a logit of 1e4 to ~1e-3 absolute, so p = exp(z - lse) carries that error, and
  // the entropy term p (z - lse + H) carries the LSE's and H's roundings at 1e4 (half an ulp,
  // 4.9e-4, each, plus their propagation through p): ~3e-3 is reachable (seen 1 in ~70 runs).
  INFO("max grad diff " << max_abs_diff(xf.grad(), xr.grad()));
  CHECK(close(xf.grad(), xr.grad(), 1e-3, 5e-3));
}

TEST_CASE("the online max across vocabulary blocks: small and large jumps, every output set",
          "[logprobs]") {
  // The CPU kernel sweeps 2048-logit blocks against the running max and re-centres when a block
  // tops it; a block that tops it by more than 8 is redone against its own max. Offsets per block
  // exercise both paths, rising and falling, with and without -inf entries.
  const double jump = GENERATE(0.0, 3.0, 7.9, 8.1, 40.0, 300.0);
  const int64_t blocks = 4, V = blocks * 2048 + 37, N = 6;
  INFO("jump " << jump);
  auto x = randn({N, V}, torch::kDouble, 2.0);
  for (int64_t b = 0; b < blocks + 1; ++b) {
    const double off = (b % 2 == 1 ? jump : -0.5 * jump) * (b + 1);
    x.slice(1, b * 2048, std::min(V, (b + 1) * 2048)).add_(off);
  }
  x[1] = x[1].flip(0);  // falling instead of rising
  x[2].index_put_({torch::rand({V}) < 0.5}, -std::numeric_limits<double>::infinity());
  auto y = torch::randint(0, V, {N}, torch::kLong);
  x[2][y[2].item<int64_t>()] = 0.0;
  auto xf = x.to(torch::kFloat);
  const double mag = x.masked_fill(x.isinf(), 0).abs().max().item<double>();
  for (int set = 0; set < 3; ++set) {
    hafrm::TokenLogProbOptions o;
    o.return_lse = true;
    o.return_entropy = set >= 1;
    o.return_log_sum_p2 = o.return_mean_logit = set == 2;
    auto f = hafrm::compute_token_logprobs(xf, y, o);
    o.backend = hafrm::LogProbBackend::kReference;
    auto r = hafrm::compute_token_logprobs(xf.to(torch::kDouble), y, o);
    INFO("output set " << set << " max lse diff " << max_abs_diff(f.lse, r.lse));
    CHECK(close(f.logprobs, r.logprobs, 1e-6, 2e-6 * std::max(1.0, mag)));
    CHECK(close(f.lse, r.lse, 1e-6, 2e-6 * std::max(1.0, mag)));
    if (set >= 1) CHECK(close(f.entropy, r.entropy, 1e-5, 2e-6 * std::max(1.0, mag)));
    if (set == 2) {
      CHECK(close(f.log_sum_p2, r.log_sum_p2, 1e-5, 2e-6 * std::max(1.0, mag)));
      // The -inf row's mean logit is -inf on both paths.
      CHECK(torch::equal(f.mean_logit.isinf(), r.mean_logit.isinf()));
    }
  }
}

TEST_CASE("a NaN or +inf logit makes its row NaN, never a finite value, and only that row",
          "[logprobs]") {
  const int64_t N = 4, V = 5000;
  auto x = randn({N, V}, torch::kFloat, 2.0);
  x[1][3000] = std::numeric_limits<float>::quiet_NaN();  // in a later block
  x[2][7] = std::numeric_limits<float>::quiet_NaN();     // in the first block
  x[3][4500] = std::numeric_limits<float>::infinity();
  auto y = torch::tensor({1, 2, 3, 4}, torch::kLong);
  auto o = all_outputs(hafrm::LogProbBackend::kFused);
  auto f = hafrm::compute_token_logprobs(x, y, o);
  CHECK(std::isfinite(f.logprobs[0].item<float>()));
  CHECK(std::isfinite(f.lse[0].item<float>()));
  for (int64_t i = 1; i < N; ++i) {
    INFO("row " << i);
    CHECK(std::isnan(f.logprobs[i].item<float>()));
    CHECK(std::isnan(f.lse[i].item<float>()));
  }
}

TEST_CASE("fused gradients match the reference's autograd", "[logprobs]") {
  const auto dt = GENERATE(torch::kFloat, torch::kBFloat16);
  const bool with_entropy = GENERATE(false, true);
  const int64_t B = 3, T = 5, V = 2053;
  auto base = randn({B, T, V}, torch::kDouble, 3.0).to(dt);
  auto y = random_labels(B * T, V).view({B, T});
  auto g = randn({B, T});  // random upstream gradients
  auto ge = randn({B, T});
  auto run = [&](hafrm::LogProbBackend be, torch::Tensor x) {
    hafrm::TokenLogProbOptions o;
    o.backend = be;
    o.return_entropy = with_entropy;
    o.logit_scale = 0.9;
    auto out = hafrm::compute_token_logprobs(x, y, o);
    auto loss = (out.logprobs.to(torch::kDouble) * g).sum();
    if (with_entropy) loss = loss + (out.entropy.to(torch::kDouble) * ge).sum();
    loss.backward();
    return x.grad();
  };
  auto gf = run(hafrm::LogProbBackend::kFused, base.clone().requires_grad_());
  auto gr = run(hafrm::LogProbBackend::kReference, base.to(torch::kDouble).requires_grad_());
  CHECK(gf.scalar_type() == dt);
  INFO("with_entropy " << with_entropy << " max diff " << max_abs_diff(gf, gr) << " max |grad| "
                       << gr.abs().max().item<double>());
  // Absolute error scales with the largest gradient entry (|g| * (1 - p) rounds at ~1e-7 of it).
  const double gmax = std::max(1.0, gr.abs().max().item<double>());
  CHECK(
      close(gf, gr, dt == torch::kFloat ? 1e-5 : 2e-2, (dt == torch::kFloat ? 2e-6 : 1e-3) * gmax));
}

TEST_CASE("the reference gradient matches float64 finite differences", "[logprobs]") {
  auto x = randn({2, 3, 6}, torch::kDouble, 2.0);
  auto y = torch::tensor({{1, -100, 5}, {0, 2, 3}});
  hafrm::TokenLogProbOptions o;
  o.backend = hafrm::LogProbBackend::kReference;
  o.return_entropy = true;
  o.softcap = 3.0;
  auto f = [&](torch::Tensor z) {
    auto out = hafrm::compute_token_logprobs(z, y, o);
    return out.logprobs.sum() + 0.5 * out.entropy.sum();
  };
  auto xg = x.clone().requires_grad_();
  f(xg).backward();
  CHECK(max_abs_diff(xg.grad(), finite_diff(f, x.clone())) < 1e-7);
  // And the fused float32 gradient against the same finite differences.
  auto xf = x.to(torch::kFloat).requires_grad_();
  o.backend = hafrm::LogProbBackend::kFused;
  f(xf).backward();
  o.backend = hafrm::LogProbBackend::kReference;
  CHECK(max_abs_diff(xf.grad(), finite_diff(f, x.clone())) < 1e-5);
}

TEST_CASE("shifted views, non-contiguous input and in-place backward", "[logprobs]") {
  const int64_t B = 2, T = 9, V = 1031;
  auto logits = randn({B, T, V}, torch::kFloat, 2.0);
  auto ids = torch::randint(0, V, {B, T}, torch::kLong);
  ids[0][4] = -100;
  auto s = hafrm::shift_for_causal_lm(logits, ids);
  CHECK(s.logits.size(1) == T - 1);
  CHECK(!s.logits.is_contiguous());
  auto f = hafrm::token_logprobs(s.logits, s.labels);
  hafrm::TokenLogProbOptions ro;
  ro.backend = hafrm::LogProbBackend::kReference;
  auto r = hafrm::token_logprobs(s.logits.to(torch::kDouble), s.labels, ro);
  CHECK(close(f, r, 1e-6, 1e-6));
  CHECK(r[0][3].item<double>() == 0.0);  // label ids[0][4] ignored
  // A transposed (vocab-strided) input is copied and still correct.
  auto xt = randn({V, 6}, torch::kFloat).t();
  auto yt = torch::randint(0, V, {6}, torch::kLong);
  CHECK(close(hafrm::token_logprobs(xt, yt), hafrm::token_logprobs(xt.to(torch::kDouble), yt, ro),
              1e-6, 1e-6));
  // In-place backward writes the gradient over the logits' storage and gives the same values.
  auto g = randn({B * 4, V}, torch::kFloat);
  auto yy = random_labels(B * 4, V);
  auto a = g.clone().requires_grad_();
  hafrm::token_logprobs(a, yy).sum().backward();
  hafrm::TokenLogProbOptions io;
  io.inplace_backward = true;
  auto leaf = g.clone().requires_grad_();
  auto tmp = leaf * 1.0;  // a non-leaf whose storage may be overwritten
  auto data_ptr = tmp.data_ptr();
  hafrm::token_logprobs(tmp, yy, io).sum().backward();
  CHECK(close(leaf.grad(), a.grad(), 1e-6, 1e-7));
  CHECK(data_ptr == tmp.data_ptr());
  CHECK(close(tmp.detach(), a.grad(), 1e-6, 1e-7));  // storage now holds the gradient
}

TEST_CASE("sequence log-probs sum, mean and count scored tokens", "[logprobs]") {
  auto x = randn({3, 6, 50}, torch::kFloat);
  auto y = torch::randint(0, 50, {3, 6}, torch::kLong);
  y.index_put_({0, torch::indexing::Slice(0, 2)}, -100);
  y.index_put_({2}, -100);  // a row with no scored token
  auto s = hafrm::sequence_logprobs(x, y);
  auto tok = hafrm::token_logprobs(x, y);
  CHECK(close(s.sum, tok.sum(1), 1e-6, 1e-6));
  CHECK(s.count[0].item<int64_t>() == 4);
  CHECK(s.count[2].item<int64_t>() == 0);
  CHECK(s.mean[0].item<double>() == Approx(s.sum[0].item<double>() / 4));
  CHECK(s.mean[2].item<double>() == 0.0);
}

TEST_CASE("all-ignored rows and poisoned outputs: the CPU kernel writes every element",
          "[logprobs]") {
  const int64_t N = 13, V = 2500;
  auto x = randn({N, V}, torch::kFloat, 2.0);
  auto y = random_labels(N, V, 0.4);
  y[0] = -100;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> lp(N, nan), lse(N, nan), ent(N, nan), p2(N, nan), ml(N, nan);
  std::vector<char> am(N, 7);
  hafrm::kernels::cpu::ForwardOutputs out;
  out.logprob = lp.data(), out.lse = lse.data(), out.entropy = ent.data();
  out.log_sum_p2 = p2.data(), out.mean_logit = ml.data();
  out.is_argmax = reinterpret_cast<bool*>(am.data());
  hafrm::core::RowLayout L{1, N, 0, V, V};
  auto serial = [](int64_t b, int64_t e, int64_t, auto&& f) { f(b, e); };
  hafrm::kernels::cpu::token_logprobs_forward(x.data_ptr<float>(), L, y.data_ptr<int64_t>(), {},
                                              out, serial);
  for (int64_t i = 0; i < N; ++i) {
    CHECK(std::isfinite(lp[i]));
    CHECK(std::isfinite(lse[i]));
    CHECK(std::isfinite(ent[i]));
    CHECK(std::isfinite(p2[i]));
    CHECK(std::isfinite(ml[i]));
    CHECK((am[i] == 0 || am[i] == 1));
  }
  std::vector<float> grad(N * V, nan);
  std::vector<float> g(N, 1.f);
  hafrm::kernels::cpu::BackwardInputs in;
  in.grad_logprob = g.data(), in.lse = lse.data();
  hafrm::kernels::cpu::token_logprobs_backward(x.data_ptr<float>(), grad.data(), L, L,
                                               y.data_ptr<int64_t>(), {}, in, serial);
  for (float v : grad) REQUIRE(std::isfinite(v));
  // Everything ignored: zeros out, zero gradient.
  auto yi = torch::full({4}, -100, torch::kLong);
  auto xi = randn({4, 9}, torch::kFloat).requires_grad_();
  auto lpi = hafrm::token_logprobs(xi, yi);
  lpi.sum().backward();
  CHECK(lpi.abs().sum().item<double>() == 0.0);
  CHECK(xi.grad().abs().sum().item<double>() == 0.0);
}

TEST_CASE("token_logprobs rejects bad input with a named argument", "[logprobs]") {
  auto x = randn({4, 10}, torch::kFloat);
  auto y = torch::randint(0, 10, {4}, torch::kLong);
  require_error(
      [&] {
        hafrm::token_logprobs(x, torch::tensor({1, 2, 10, 3}));
      },
      {"token_logprobs", "labels", "[0, 10)", "found 10"});
  require_error([&] { hafrm::token_logprobs(x, torch::tensor({1, -5, 0, 3})); }, {"found -5"});
  require_error([&] { hafrm::token_logprobs(x, y.slice(0, 0, 3)); }, {"labels", "expected shape"});
  require_error(
      [&] {
        hafrm::token_logprobs(torch::ones({4, 10}, torch::kLong), y);
      },
      {"logits", "floating-point"});
  require_error([&] { hafrm::token_logprobs(x, y.to(torch::kFloat)); }, {"labels", "int64"});
  hafrm::TokenLogProbOptions o;
  o.temperature = 0;
  require_error([&] { hafrm::token_logprobs(x, y, o); }, {"options.temperature"});
  o = {};
  o.softcap = -1;
  require_error([&] { hafrm::token_logprobs(x, y, o); }, {"options.softcap"});
  require_error(
      [&] {
        hafrm::shift_for_causal_lm(randn({2, 1, 5}), torch::zeros({2, 1}, torch::kLong));
      },
      {"at least 2 positions"});
  require_error([&] { hafrm::token_logprobs(randn({4, 0}), y); }, {"V >= 1"});
}

TEST_CASE("the label check: one host read on the CPU per call, the message naming the label",
          "[logprobs]") {
  // The only check of a call's tensor contents is the label range (logprob_checks.hpp), through
  // detail::values_hold: on the CPU one counted host read (on a GPU none: a device-side assert).
  const int64_t V = 50;
  auto x = randn({6, V}, torch::kFloat);
  auto x3 = randn({2, 3, V}, torch::kFloat);
  auto h = randn({6, 8}, torch::kFloat), w = randn({V, 8}, torch::kFloat);
  auto y = torch::randint(0, V, {6}, torch::kLong);
  auto y3 = torch::randint(0, V, {2, 3}, torch::kLong);
  const auto& reads = hafrm::detail::host_value_reads();
  for (auto backend : {hafrm::LogProbBackend::kFused, hafrm::LogProbBackend::kReference}) {
    for (const bool check : {true, false}) {
      hafrm::TokenLogProbOptions o;
      o.backend = backend;
      o.check_labels = check;
      INFO("backend " << static_cast<int>(backend) << " check_labels " << check);
      const int64_t per_call = check ? 1 : 0;
      int64_t before = reads.load();
      hafrm::token_logprobs(x, y, o);
      CHECK(reads.load() == before + per_call);
      before = reads.load();
      hafrm::compute_causal_token_logprobs(x3, y3, o);
      CHECK(reads.load() == before + per_call);
      before = reads.load();
      hafrm::linear_token_logprobs(h, w, y, o);
      CHECK(reads.load() == before + per_call);
    }
  }
  y[4] = V + 3;
  require_error([&] { hafrm::token_logprobs(x, y); },
                {"hafrm::token_logprobs: argument 'labels' expected values in [0, 50) or "
                 "ignore_index (-100), found 53"});
  require_error([&] { hafrm::linear_token_logprobs(h, w, y); },
                {"hafrm::linear_token_logprobs: argument 'labels' expected values in [0, 50) or "
                 "ignore_index (-100), found 53"});
}

TEST_CASE("a non-default ignore_index: CPU fused equals the reference, -100 becomes a label",
          "[logprobs]") {
  // 0 and 7 are valid vocabulary ids (ignoring them must not score them), -1 is not.
  const int64_t ignore = GENERATE(0, 7, -1);
  const int64_t B = 3, T = 6, V = 37;
  INFO("ignore_index " << ignore);
  auto x = randn({B, T, V}, torch::kFloat, 3.0);
  auto y = torch::randint(0, V, {B, T}, torch::kLong);
  y.masked_fill_(y == ignore, (ignore + 1) % V);            // scored tokens: never the ignored id
  y.index_put_({0, torch::indexing::Slice(0, 2)}, ignore);  // a prompt
  y.index_put_({2}, ignore);                                // a row with no scored token
  auto g = randn({B, T}, torch::kFloat);
  auto run = [&](hafrm::LogProbBackend be, torch::Tensor logits) {
    auto o = all_outputs(be);
    o.ignore_index = ignore;
    auto leaf = logits.clone().requires_grad_();
    auto tok = hafrm::compute_token_logprobs(leaf, y, o);
    auto seq = hafrm::sequence_logprobs(leaf, y, o);
    ((tok.logprobs.to(torch::kDouble) * g).sum() + seq.sum.to(torch::kDouble).sum()).backward();
    return std::tuple{tok, seq, leaf.grad()};
  };
  auto [ft, fs, fg] = run(hafrm::LogProbBackend::kFused, x);
  auto [rt, rs, rg] = run(hafrm::LogProbBackend::kReference, x.to(torch::kDouble));
  check_close(ft, rt, torch::kFloat, 3.0);
  CHECK(torch::equal(ft.is_argmax, rt.is_argmax));
  CHECK(torch::equal(ft.mask, y != ignore));
  // Ignored positions: exactly 0 in every output and in the gradient, whatever their id.
  auto ign = y == ignore;
  CHECK(ft.logprobs.masked_select(ign).abs().sum().item<double>() == 0.0);
  CHECK(ft.entropy.masked_select(ign).abs().sum().item<double>() == 0.0);
  CHECK(fg.index({ign}).abs().sum().item<double>() == 0.0);
  CHECK(close(fg, rg, 1e-5, 2e-6 * 4));
  // Per sequence: sums, counts (the prompt and the ignored row not counted), means.
  CHECK(torch::equal(fs.count, rs.count));
  CHECK(fs.count[0].item<int64_t>() == T - 2);
  CHECK(fs.count[2].item<int64_t>() == 0);
  CHECK(close(fs.sum, rs.sum, 1e-6, 1e-5));
  CHECK(close(fs.mean, rs.mean, 1e-6, 1e-5));
  CHECK(fs.mean[2].item<double>() == 0.0);
  // The causal entry shifts with the same ignore_index (its padding of the last position).
  auto co = all_outputs(hafrm::LogProbBackend::kFused);
  co.ignore_index = ignore;
  auto causal = hafrm::causal_sequence_logprobs(x, y, co);
  auto sh = hafrm::shift_for_causal_lm(x.to(torch::kDouble), y);
  co.backend = hafrm::LogProbBackend::kReference;
  auto shifted = hafrm::sequence_logprobs(sh.logits, sh.labels, co);
  CHECK(torch::equal(causal.count, shifted.count));
  CHECK(close(causal.sum, shifted.sum, 1e-6, 1e-5));
  // With another ignore_index, -100 is an ordinary label outside [0, V): an error naming it.
  auto bad = y.clone();
  bad[1][3] = -100;
  for (auto be : {hafrm::LogProbBackend::kFused, hafrm::LogProbBackend::kReference}) {
    auto o = all_outputs(be);
    o.ignore_index = ignore;
    require_error([&] { hafrm::compute_token_logprobs(x, bad, o); }, {"labels", "-100"});
  }
}

TEST_CASE("the CPU and CUDA adapters check the same kernel arguments", "[logprobs]") {
  // detail::check_kernel_labels / backward_inputs (torch/kernel_args.hpp) serve both adapters;
  // on the CPU they are reachable without a GPU, so they are tested here for both.
  auto x = randn({4, 10}, torch::kFloat);
  auto y = torch::randint(0, 10, {4}, torch::kLong);
  hafrm::TokenLogProbOptions o;
  // Labels on another device than the logits: a named error, not a read of foreign memory.
  require_error([&] { hafrm::detail::cpu_fused_forward(x, y.to(torch::kMeta), o, false); },
                {"token_logprobs", "labels", "expected to be on cpu"});
  // An entropy gradient without the forward's entropy is a library bug: an internal assert
  // naming what is missing, never a read past an empty tensor.
  auto f = hafrm::detail::cpu_fused_forward(x, y, o, true);
  auto g = torch::ones({4});
  require_error([&] { hafrm::detail::cpu_fused_backward(x, y, g, g, f.lse, torch::empty({0}), o); },
                {"entropy"});
  // The linear path's range check is the same function: its message names the bad value too.
  require_error(
      [&] {
        hafrm::linear_token_logprobs(randn({4, 3}), randn({10, 3}), torch::tensor({1, 2, 12, 3}));
      },
      {"linear_token_logprobs", "labels", "[0, 10)", "found 12"});
}
