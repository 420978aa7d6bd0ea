// The causal shift done on the labels inside the fused entry: same numbers as the shifted views,
// the logits' gradient arriving full-size straight from the kernel (no slice-backward copy), and
// ignored positions never read.
#include <limits>

#include "hafrm/torch/token_logprobs.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {
torch::Tensor causal_labels(int64_t B, int64_t T, int64_t V) {
  auto ids = torch::randint(0, V, {B, T}, torch::kLong);
  ids.index_put_({torch::rand({B, T}) < 0.3}, -100);
  ids.index_put_({torch::indexing::Slice(), 0}, -100);  // a prompt token
  return ids;
}
}  // namespace

TEST_CASE("causal entry equals shift_for_causal_lm + sequence_logprobs, values and gradients",
          "[logprobs][shift]") {
  const auto dt = GENERATE(torch::kFloat, torch::kBFloat16);
  const bool entropy = GENERATE(false, true);
  const int64_t B = 3, T = 7, V = 2100;
  auto x = randn({B, T, V}, torch::kDouble, 3.0).to(dt);
  auto ids = causal_labels(B, T, V);
  hafrm::TokenLogProbOptions o;
  o.return_entropy = entropy;
  o.return_lse = o.return_is_argmax = true;
  auto gs = randn({B}), ge = randn({B, T - 1});
  auto loss_of = [&](const hafrm::SequenceLogProbs& s) {
    auto l = (s.sum.to(torch::kDouble) * gs).sum();
    if (entropy) l = l + (s.tokens.entropy.to(torch::kDouble) * ge).sum();
    return l;
  };
  // Oracle: float64 reference on the shifted views.
  auto xr = x.to(torch::kDouble).requires_grad_();
  auto ro = o;
  ro.backend = hafrm::LogProbBackend::kReference;
  auto sv = hafrm::shift_for_causal_lm(xr, ids);
  auto r = hafrm::sequence_logprobs(sv.logits, sv.labels, ro);
  loss_of(r).backward();
  // Fused, shift on the labels.
  auto xf = x.clone().requires_grad_();
  auto f = hafrm::causal_sequence_logprobs(xf, ids, o);
  loss_of(f).backward();
  INFO("dtype " << dt << " entropy " << entropy);
  REQUIRE(f.tokens.logprobs.sizes() == torch::IntArrayRef({B, T - 1}));
  CHECK(torch::equal(f.count, r.count));
  CHECK(torch::equal(f.tokens.mask, r.tokens.mask));
  const bool f32 = dt == torch::kFloat;
  CHECK(close(f.sum, r.sum, 1e-5, f32 ? 1e-4 : 5e-2));
  CHECK(close(f.tokens.logprobs, r.tokens.logprobs, 1e-6, f32 ? 2e-5 : 2e-2));
  CHECK(close(f.tokens.lse, r.tokens.lse, 1e-6, f32 ? 2e-5 : 2e-2));
  CHECK(torch::equal(f.tokens.is_argmax, r.tokens.is_argmax));
  if (entropy) CHECK(close(f.tokens.entropy, r.tokens.entropy, 1e-5, f32 ? 2e-5 : 2e-2));
  const double gmax = std::max(1.0, xr.grad().abs().max().item<double>());
  CHECK(close(xf.grad(), xr.grad(), f32 ? 1e-5 : 2e-2, (f32 ? 2e-6 : 1e-3) * gmax));
  // The last position predicts nothing: its gradient is exactly zero.
  CHECK(xf.grad().select(1, T - 1).abs().sum().item<double>() == 0.0);
  // The reference backend through the causal entry gives the reference's numbers.
  auto rr = hafrm::causal_sequence_logprobs(x.to(torch::kDouble), ids, ro);
  CHECK(close(rr.sum, r.sum, 0, 1e-12));
}

TEST_CASE("causal entry: the logits' gradient is the kernel's own full-size buffer",
          "[logprobs][shift]") {
  // A hook on the logits sees the gradient autograd delivers to them. Through the shifted view
  // it is SliceBackward's fresh zero-filled copy; through the causal entry with
  // inplace_backward it is the kernel's output written over the logits' own storage.
  const int64_t B = 2, T = 5, V = 3001;
  auto leaf = randn({B, T, V}, torch::kFloat, 2.0).requires_grad_();
  auto logits = leaf * 1.0;  // a non-leaf, like a model's output
  const void* storage = logits.data_ptr();
  const void* seen = nullptr;
  logits.register_hook([&](torch::Tensor g) {
    seen = g.data_ptr();
    return g;
  });
  auto ids = causal_labels(B, T, V);
  hafrm::TokenLogProbOptions o;
  o.inplace_backward = true;
  auto f = hafrm::causal_sequence_logprobs(logits, ids, o);
  // Oracle before backward overwrites the logits.
  auto xr = logits.detach().to(torch::kDouble).requires_grad_();
  auto sv = hafrm::shift_for_causal_lm(xr, ids);
  hafrm::TokenLogProbOptions ro;
  ro.backend = hafrm::LogProbBackend::kReference;
  hafrm::sequence_logprobs(sv.logits, sv.labels, ro).sum.sum().backward();
  f.sum.sum().backward();
  CHECK(seen == storage);
  CHECK(close(leaf.grad(), xr.grad(), 1e-5, 1e-6));
}

TEST_CASE("causal entry: ignored positions are never read, forward or backward",
          "[logprobs][shift]") {
  // NaN logits at positions whose (shifted) label is ignored, and at the last position, must not
  // reach any output or gradient: the kernel skips those rows instead of reading them.
  const int64_t B = 2, T = 6, V = 700;
  auto x = randn({B, T, V}, torch::kFloat, 2.0);
  auto ids = torch::randint(0, V, {B, T}, torch::kLong);
  ids[0][3] = -100;  // so position 2 predicts an ignored token
  const float nan = std::numeric_limits<float>::quiet_NaN();
  x[0][2].fill_(nan);
  x.select(1, T - 1).fill_(nan);
  auto xl = x.clone().requires_grad_();
  auto f = hafrm::compute_causal_token_logprobs(xl, ids);
  f.logprobs.sum().backward();
  CHECK(all_finite(f.logprobs));
  CHECK(f.logprobs[0][2].item<float>() == 0.f);
  CHECK(all_finite(xl.grad()));
  CHECK(xl.grad()[0][2].abs().sum().item<double>() == 0.0);
  CHECK(xl.grad().select(1, T - 1).abs().sum().item<double>() == 0.0);
}

TEST_CASE("causal entry rejects bad shapes with a named argument", "[logprobs][shift]") {
  auto x = randn({2, 4, 9}, torch::kFloat);
  require_error(
      [&] {
        hafrm::causal_sequence_logprobs(x, torch::zeros({2, 3}, torch::kLong));
      },
      {"labels", "[2, 4]"});
  require_error(
      [&] {
        hafrm::causal_sequence_logprobs(x.slice(1, 0, 1), torch::zeros({2, 1}, torch::kLong));
      },
      {"logits", "at least 2"});
  require_error(
      [&] {
        hafrm::causal_sequence_logprobs(x, torch::full({2, 4}, 9, torch::kLong));
      },
      {"labels"});
}
