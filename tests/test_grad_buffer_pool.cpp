// The gradient-buffer pool (hafrm/torch/grad_buffer_pool.hpp): a large logits' gradient reuses the
// previous step's buffer once that gradient is dead, never while anything still refers to it, and
// the values are the same as with a fresh buffer every step.
#include "hafrm/torch/token_logprobs.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {
// 1024 x 8192 float32 = 32 MiB: the smallest size the pool takes.
constexpr int64_t kN = 1024, kV = 8192;

struct PoolReset {
  PoolReset() { hafrm::set_gradient_buffer_reuse(true), hafrm::release_gradient_buffers(); }
  ~PoolReset() { hafrm::release_gradient_buffers(); }
};

// The float64 reference gradient of sum(w * logprobs) w.r.t. logits.
torch::Tensor reference_grad(const torch::Tensor& x, const torch::Tensor& y,
                             const torch::Tensor& w) {
  auto xr = x.to(torch::kDouble).requires_grad_();
  hafrm::TokenLogProbOptions o;
  o.backend = hafrm::LogProbBackend::kReference;
  (hafrm::token_logprobs(xr, y, o) * w).sum().backward();
  return xr.grad();
}

torch::Tensor fused_grad(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& w) {
  auto leaf = x.detach().requires_grad_();
  (hafrm::token_logprobs(leaf, y) * w.to(torch::kFloat)).sum().backward();
  return leaf.grad();
}
}  // namespace

TEST_CASE("gradient pool: a dead gradient's buffer is reused, with exact values",
          "[logprobs][pool]") {
  PoolReset reset;
  void* first_ptr = nullptr;
  for (int step = 0; step < 3; ++step) {
    auto x = randn({kN, kV}, torch::kFloat, 2.0);
    auto y = torch::randint(0, kV, {kN}, torch::kLong);
    y.index_put_({torch::rand({kN}) < 0.2}, -100);  // ignored rows must be written as zeros too
    auto w = randn({kN}, torch::kDouble);
    const auto before = hafrm::gradient_buffer_stats();
    auto g = fused_grad(x, y, w);
    const auto after = hafrm::gradient_buffer_stats();
    if (step == 0) {
      first_ptr = g.data_ptr();
      CHECK(after.allocated == before.allocated + 1);
      CHECK(after.bytes_held >= kN * kV * 4);
    } else {
      // The previous step's gradient went out of scope: its buffer comes back, with the old
      // step's values overwritten everywhere (ignored rows included).
      CHECK(after.reused == before.reused + 1);
      CHECK(g.data_ptr() == first_ptr);
    }
    CHECK(max_abs_diff(g.to(torch::kDouble), reference_grad(x, y, w)) < 1e-5);
  }
}

TEST_CASE("gradient pool: a gradient still referenced is never written over", "[logprobs][pool]") {
  PoolReset reset;
  auto x1 = randn({kN, kV}, torch::kFloat, 2.0), x2 = randn({kN, kV}, torch::kFloat, 2.0);
  auto y = torch::randint(0, kV, {kN}, torch::kLong);
  auto w = randn({kN}, torch::kDouble);
  auto g1 = fused_grad(x1, y, w);  // kept alive, as a leaf's .grad or a user's tensor would be
  auto g1_copy = g1.clone();
  auto kept_view = g1.narrow(0, 5, 7);  // a view keeps the storage alive too
  g1 = torch::Tensor();
  auto g2 = fused_grad(x2, y, w);
  CHECK_FALSE(g2.is_alias_of(kept_view));
  CHECK(torch::equal(kept_view, g1_copy.narrow(0, 5, 7)));
  CHECK(max_abs_diff(g2.to(torch::kDouble), reference_grad(x2, y, w)) < 1e-5);
}

TEST_CASE("gradient pool: off, small and released", "[logprobs][pool]") {
  PoolReset reset;
  auto y = torch::randint(0, kV, {kN}, torch::kLong);
  auto w = randn({kN}, torch::kDouble);
  SECTION("turned off: nothing is held or reused") {
    hafrm::set_gradient_buffer_reuse(false);
    CHECK_FALSE(hafrm::gradient_buffer_reuse());
    const auto before = hafrm::gradient_buffer_stats();
    for (int i = 0; i < 2; ++i) (void)fused_grad(randn({kN, kV}, torch::kFloat), y, w);
    const auto after = hafrm::gradient_buffer_stats();
    CHECK(after.reused == before.reused);
    CHECK(after.bytes_held == 0);
    hafrm::set_gradient_buffer_reuse(true);
  }
  SECTION("buffers under 32 MiB use the normal allocator") {
    const auto before = hafrm::gradient_buffer_stats();
    (void)fused_grad(randn({16, kV}, torch::kFloat), y.narrow(0, 0, 16), w.narrow(0, 0, 16));
    const auto after = hafrm::gradient_buffer_stats();
    CHECK(after.allocated == before.allocated);
    CHECK(after.bytes_held == before.bytes_held);
  }
  SECTION("release gives the memory back") {
    (void)fused_grad(randn({kN, kV}, torch::kFloat), y, w);
    CHECK(hafrm::gradient_buffer_stats().bytes_held > 0);
    hafrm::release_gradient_buffers();
    CHECK(hafrm::gradient_buffer_stats().bytes_held == 0);
  }
}
