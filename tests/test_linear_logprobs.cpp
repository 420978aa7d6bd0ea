// The fused linear -> log-prob path against logits = hidden W^T on the reference path, and
// beside the token path on those logits for out-of-range labels (one NaN contract for both).
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "hafrm/torch/linear_logprobs.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

TEST_CASE("fused linear log-probs match the materialised reference, values and gradients",
          "[linear]") {
  const auto dt = GENERATE(torch::kFloat, torch::kBFloat16);
  const int64_t chunk = GENERATE(0, 3, 64);
  const int64_t vchunk = GENERATE(0, 100, 512);  // 100 and 512: blocks that do not divide V
  const bool entropy = GENERATE(false, true);
  const int64_t B = 2, T = 17, H = 24, V = 517;
  INFO("dtype " << dt << " chunk " << chunk << "x" << vchunk << " entropy " << entropy);
  auto h0 = randn({B, T, H}, torch::kDouble, 1.0).to(dt);
  auto w0 = randn({V, H}, torch::kDouble, 0.5).to(dt);
  auto y = torch::randint(0, V, {B, T}, torch::kLong).masked_fill(torch::rand({B, T}) < 0.3, -100);
  auto g = randn({B, T});
  auto run = [&](hafrm::LogProbBackend be, torch::Tensor h, torch::Tensor w) {
    hafrm::TokenLogProbOptions o;
    o.backend = be;
    o.linear_chunk_tokens = chunk;
    o.linear_chunk_vocab = vchunk;
    o.return_entropy = entropy;
    o.return_lse = o.return_is_argmax = o.return_mean_logit = o.return_log_sum_p2 = true;
    auto out = hafrm::compute_linear_token_logprobs(h, w, y, o);
    auto loss = (out.logprobs.to(torch::kDouble) * g).sum();
    if (entropy) loss = loss - 0.3 * out.entropy.to(torch::kDouble).sum();
    loss.backward();
    return out;
  };
  auto hf = h0.clone().requires_grad_(), wf = w0.clone().requires_grad_();
  auto f = run(hafrm::LogProbBackend::kFused, hf, wf);
  auto hr = h0.to(torch::kDouble).requires_grad_(), wr = w0.to(torch::kDouble).requires_grad_();
  auto r = run(hafrm::LogProbBackend::kReference, hr, wr);
  const bool f32 = dt == torch::kFloat;
  CHECK(close(f.logprobs, r.logprobs, f32 ? 1e-5 : 3e-2, f32 ? 1e-5 : 5e-2));
  CHECK(close(f.lse, r.lse, f32 ? 1e-5 : 1e-2, f32 ? 1e-5 : 5e-2));
  CHECK(close(f.mean_logit, r.mean_logit, 1e-4, f32 ? 1e-5 : 2e-2));
  CHECK(close(f.log_sum_p2, r.log_sum_p2, f32 ? 1e-4 : 3e-2, f32 ? 1e-5 : 5e-2));
  // Entropy = lse - E[z] cancels: the fp32 matmul's ~1e-6 rounding of logits of size ~10 stays
  // as an absolute error however small the entropy is, so float32 gets an absolute 1e-4 (a wrong
  // block merge is off by ~1e-1).
  if (entropy) {
    INFO("entropy max |diff| " << max_abs_diff(f.entropy, r.entropy));
    CHECK(close(f.entropy, r.entropy, f32 ? 1e-4 : 3e-2, f32 ? 1e-4 : 5e-2));
  }
  if (f32) CHECK(torch::equal(f.is_argmax, r.is_argmax));
  CHECK(hf.grad().scalar_type() == dt);
  CHECK(wf.grad().scalar_type() == dt);
  // The same fp32 matmul rounding reaches the gradients (a BLAS with another summation order,
  // as on another CPU, moves them by a few 1e-6): absolute 3e-5.
  CHECK(close(hf.grad(), hr.grad(), f32 ? 1e-4 : 5e-2, f32 ? 3e-5 : 5e-2));
  CHECK(close(wf.grad(), wr.grad(), f32 ? 1e-4 : 5e-2, f32 ? 3e-5 : 5e-2));
  // Rows with an ignored label get exactly zero hidden gradient.
  auto ign = (y == -100).unsqueeze(-1).expand({B, T, H});
  CHECK(hf.grad().masked_select(ign).abs().sum().item<double>() == 0.0);
}

TEST_CASE("fused linear log-probs: every label ignored, and bad input", "[linear]") {
  auto h = randn({5, 8}, torch::kFloat).requires_grad_();
  auto w = randn({11, 8}, torch::kFloat).requires_grad_();
  auto y = torch::full({5}, -100, torch::kLong);
  auto lp = hafrm::linear_token_logprobs(h, w, y);
  lp.sum().backward();
  CHECK(lp.abs().sum().item<double>() == 0.0);
  CHECK(h.grad().abs().sum().item<double>() == 0.0);
  CHECK(w.grad().abs().sum().item<double>() == 0.0);
  auto yl = torch::randint(0, 11, {5}, torch::kLong);
  require_error(
      [&] {
        hafrm::linear_token_logprobs(h, randn({11, 7}, torch::kFloat), yl);
      },
      {"linear_token_logprobs", "hidden", "H"});
  require_error(
      [&] {
        hafrm::linear_token_logprobs(h, w, torch::tensor({0, 1, 2, 3, 11}));
      },
      {"labels", "[0, 11)"});
  // Mixed floating dtypes are accepted (test_bad_inputs_losses.cpp); a non-floating head is not.
  require_error([&] { hafrm::linear_token_logprobs(h, w.to(torch::kLong), yl); },
                {"weight", "floating-point"});
  hafrm::TokenLogProbOptions o;
  o.linear_chunk_tokens = -2;
  require_error([&] { hafrm::linear_token_logprobs(h, w, yl, o); }, {"linear_chunk_tokens"});
  o.linear_chunk_tokens = 0;
  o.linear_chunk_vocab = -1;
  require_error([&] { hafrm::linear_token_logprobs(h, w, yl, o); }, {"linear_chunk_vocab"});
}

namespace {
// a and b NaN at the same places, and within tolerance everywhere else.
bool same_nans_and_close(const torch::Tensor& a, const torch::Tensor& b, double rtol, double atol) {
  auto an = torch::isnan(a), bn = torch::isnan(b);
  if (!torch::equal(an, bn)) return false;
  return close(a.masked_select(~an), b.masked_select(~bn), rtol, atol);
}
}  // namespace

TEST_CASE("out-of-range labels with check_labels off: the linear path gives the token path's NaNs",
          "[linear]") {
  // One contract (logprob_options.hpp): a scored label outside [0, V) makes its row NaN, every
  // output and its gradient row; the weight's gradient, fed by every row, is NaN as autograd
  // makes it for the token path on logits = hidden W^T. Held against exactly that composition.
  const int64_t N = 10, H = 16, V = 300;
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  auto y = torch::tensor({int64_t{3}, V, int64_t{-1}, kMin, kMax, int64_t{-100}, int64_t{1} << 40,
                          int64_t{7}, V - 1, int64_t{-5}},
                         torch::kLong);
  const std::vector<int64_t> bad{1, 2, 3, 4, 6, 9}, good{0, 7, 8};
  const int64_t ignored = 5;
  const auto backend = GENERATE(hafrm::LogProbBackend::kFused, hafrm::LogProbBackend::kReference);
  // 0: one vocabulary tile; 128: three, so every bad label lies outside every tile.
  const int64_t vchunk = GENERATE(0, 128);
  INFO("backend " << static_cast<int>(backend) << " vocabulary tile " << vchunk);
  auto h0 = randn({N, H}, torch::kFloat), w0 = randn({V, H}, torch::kFloat, 0.5);
  auto g = randn({N}, torch::kFloat);
  auto o = all_outputs(backend);
  o.check_labels = false;
  o.linear_chunk_tokens = 4;
  o.linear_chunk_vocab = vchunk;
  auto backward = [&](const hafrm::TokenLogProbs& t) {
    ((t.logprobs * g).sum() + 0.3 * t.entropy.sum()).backward();
  };
  auto hl = h0.clone().requires_grad_(), wl = w0.clone().requires_grad_();
  const auto lin = hafrm::compute_linear_token_logprobs(hl, wl, y, o);
  backward(lin);
  auto ht = h0.clone().requires_grad_(), wt = w0.clone().requires_grad_();
  const auto tok = hafrm::compute_token_logprobs(torch::matmul(ht, wt.t()), y, o);
  backward(tok);

  for (const auto& [name, a, b] : {std::tuple{"logprobs", lin.logprobs, tok.logprobs},
                                   {"lse", lin.lse, tok.lse},
                                   {"entropy", lin.entropy, tok.entropy},
                                   {"log_sum_p2", lin.log_sum_p2, tok.log_sum_p2},
                                   {"mean_logit", lin.mean_logit, tok.mean_logit}}) {
    INFO(name);
    CHECK(same_nans_and_close(a, b, 1e-4, 1e-4));
    for (int64_t r : bad) CHECK(std::isnan(a[r].item<float>()));
    for (int64_t r : good) CHECK(std::isfinite(a[r].item<float>()));
    CHECK(a[ignored].item<float>() == 0.f);
  }
  CHECK(torch::equal(lin.is_argmax, tok.is_argmax));
  for (int64_t r : bad) CHECK_FALSE(lin.is_argmax[r].item<bool>());

  // Hidden gradients: NaN rows exactly where the token path's are, the others its values.
  CHECK(same_nans_and_close(hl.grad(), ht.grad(), 1e-4, 1e-4));
  for (int64_t r : bad) CHECK(hl.grad()[r].isnan().all().item<bool>());
  for (int64_t r : good) CHECK(all_finite(hl.grad()[r]));
  CHECK(hl.grad()[ignored].abs().sum().item<double>() == 0.0);
  CHECK(torch::equal(torch::isnan(wl.grad()), torch::isnan(wt.grad())));
  CHECK(wl.grad().isnan().all().item<bool>());

  // With the check on (the default), the same labels are a named error naming the first one.
  o.check_labels = true;
  require_error([&] { hafrm::compute_linear_token_logprobs(h0, w0, y, o); },
                {"linear_token_logprobs", "'labels'", "[0, 300)", "found 300"});
}
