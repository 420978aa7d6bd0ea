// Vocabularies smaller than, equal to and just above one 256-row vocabulary block: the fused
// linear path's default tiles (at least 256 vocabulary rows, at most V) must hold for V < 256
// too, where a clamp of [256, V] would be undefined (an abort under -D_GLIBCXX_ASSERTIONS, which
// this project's tests are built with). Both fused paths are checked against float64
// log_softmax + gather, values and gradients.
#include "hafrm/torch/linear_logprobs.hpp"
#include "hafrm/torch/token_logprobs.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {
// Labels in [0, V) with about a quarter ignored (-100), but never all of them.
torch::Tensor small_vocab_labels(std::vector<int64_t> shape, int64_t V) {
  auto y = torch::randint(0, V, shape, torch::kLong);
  auto drop = torch::rand(shape) < 0.25;
  drop.view({-1})[0] = false;
  return y.masked_fill(drop, -100);
}

// float64 reference: log_softmax over the last dimension, the label's entry, 0 where ignored.
torch::Tensor reference_logprobs(const torch::Tensor& logits64, const torch::Tensor& labels) {
  auto keep = labels != -100;
  auto lp = torch::log_softmax(logits64, -1).gather(-1, labels.clamp_min(0).unsqueeze(-1));
  return torch::where(keep, lp.squeeze(-1), torch::zeros({}, logits64.options()));
}
}  // namespace

TEST_CASE("default vocabulary tiles never exceed a small vocabulary", "[linear][small_vocab]") {
  const int64_t V = GENERATE(1, 2, 65, 255, 256, 257, 100000);
  const bool cuda = GENERATE(false, true);
  hafrm::TokenLogProbOptions o;
  for (int64_t M : {int64_t{0}, int64_t{1}, int64_t{37}, int64_t{5000}, int64_t{1} << 20}) {
    INFO("V " << V << " M " << M << " cuda " << cuda);
    const auto t = hafrm::detail::linear_tiles(o, M, V, cuda);
    CHECK(t.tokens >= 1);
    CHECK(t.vocab >= 1);
    CHECK(t.vocab <= V);                          // one block holds the whole small vocabulary
    CHECK(t.vocab >= std::min<int64_t>(V, 256));  // and a large one keeps blocks >= 256 wide
  }
}

TEST_CASE("linear_token_logprobs with a small vocabulary matches float64",
          "[linear][small_vocab]") {
  const int64_t V = GENERATE(1, 2, 65, 255, 256, 257);
  const int64_t B = 2, T = 9, H = 12;
  INFO("V " << V);
  auto h0 = randn({B, T, H}, torch::kDouble);
  auto w0 = randn({V, H}, torch::kDouble, 0.5);
  auto y = small_vocab_labels({B, T}, V);
  auto g = randn({B, T});

  // The fused path in float32, default options (default tiles: the code under test).
  auto hf = h0.to(torch::kFloat).requires_grad_(), wf = w0.to(torch::kFloat).requires_grad_();
  auto lp = hafrm::linear_token_logprobs(hf, wf, y);
  CHECK(lp.scalar_type() == torch::kFloat);
  (lp.to(torch::kDouble) * g).sum().backward();

  // float64 reference from the same (float32-rounded) inputs.
  auto hr = h0.to(torch::kFloat).to(torch::kDouble).requires_grad_();
  auto wr = w0.to(torch::kFloat).to(torch::kDouble).requires_grad_();
  auto ref = reference_logprobs(torch::matmul(hr, wr.t()), y);
  (ref * g).sum().backward();

  INFO("max |diff| " << max_abs_diff(lp, ref));
  CHECK(close(lp, ref, 1e-5, 1e-5));
  if (V == 1) CHECK(lp.abs().max().item<double>() == 0.0);  // the only token: log 1
  CHECK(close(hf.grad(), hr.grad(), 1e-4, 3e-5));
  CHECK(close(wf.grad(), wr.grad(), 1e-4, 3e-5));
}

TEST_CASE("token_logprobs with a small vocabulary matches float64", "[logprobs][small_vocab]") {
  const int64_t V = GENERATE(1, 2, 65, 255, 256, 257);
  const auto backend = GENERATE(hafrm::LogProbBackend::kAuto, hafrm::LogProbBackend::kFused);
  const int64_t B = 3, T = 7;
  INFO("V " << V << " backend " << static_cast<int>(backend));
  auto z0 = randn({B, T, V}, torch::kDouble, 3.0);
  auto y = small_vocab_labels({B, T}, V);
  auto g = randn({B, T});

  hafrm::TokenLogProbOptions o;
  o.backend = backend;
  auto zf = z0.to(torch::kFloat).requires_grad_();
  auto lp = hafrm::token_logprobs(zf, y, o);
  CHECK(lp.scalar_type() == torch::kFloat);
  (lp.to(torch::kDouble) * g).sum().backward();

  auto zr = z0.to(torch::kFloat).to(torch::kDouble).requires_grad_();
  auto ref = reference_logprobs(zr, y);
  (ref * g).sum().backward();

  INFO("max |diff| " << max_abs_diff(lp, ref));
  CHECK(close(lp, ref, 1e-6, 2e-6 * 3.0));
  if (V == 1) CHECK(lp.abs().max().item<double>() == 0.0);
  CHECK(close(zf.grad(), zr.grad(), 1e-5, 1e-6));
}
