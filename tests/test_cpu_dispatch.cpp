// The CPU kernels at every instruction-set level this CPU has (AVX-512, AVX2, baseline), each
// against float64; the bad-row contract (NaN in, NaN out; out-of-range labels never read) at
// every level; the grain rule (small work opens no parallel region).
#include <cmath>
#include <cstdlib>
#include <limits>

#include "hafrm/kernels/cpu/token_logprobs.hpp"
#include "hafrm/torch/token_logprobs.hpp"
#include "test_util.hpp"

using namespace hafrm_test;
namespace kc = hafrm::kernels::cpu;

namespace {
// Runs the body at one level and restores the process's level afterwards.
struct LevelGuard {
  kc::CpuCapability saved = kc::cpu_capability();
  explicit LevelGuard(kc::CpuCapability c) { kc::set_cpu_capability(c); }
  ~LevelGuard() { kc::set_cpu_capability(saved); }
};

std::vector<kc::CpuCapability> supported_levels() {
  std::vector<kc::CpuCapability> v;
  for (int c = 0; c <= static_cast<int>(kc::detect_cpu_capability()); ++c)
    v.push_back(static_cast<kc::CpuCapability>(c));
  return v;
}

// A parallel_for that runs serially and records whether, and with which grain, it was called.
struct Counting {
  int* calls;
  int64_t* grain;
  template <class F>
  void operator()(int64_t b, int64_t e, int64_t g, F&& f) const {
    ++*calls, *grain = g;
    f(b, e);
  }
};

}  // namespace

TEST_CASE("the CPU level is detected, can be lowered, and HAFRM_CPU_CAPABILITY is honoured",
          "[dispatch]") {
  const auto have = kc::detect_cpu_capability();
  INFO("detected " << kc::capability_name(have) << ", active "
                   << kc::capability_name(kc::cpu_capability()));
  CHECK(static_cast<int>(kc::cpu_capability()) <= static_cast<int>(have));
  if (const char* env = std::getenv("HAFRM_CPU_CAPABILITY"); env && *env) {
    // The ctest entry hafrm.dispatch_baseline sets it: the first use must have obeyed it.
    const auto want = kc::parse_cpu_capability(env);
    CHECK(kc::cpu_capability() == (static_cast<int>(want) < static_cast<int>(have) ? want : have));
  }
  CHECK(kc::parse_cpu_capability("avx2") == kc::CpuCapability::kAvx2);
  CHECK(kc::parse_cpu_capability("baseline") == kc::CpuCapability::kBaseline);
  CHECK_THROWS_WITH(kc::parse_cpu_capability("avx3"), Catch::Contains("HAFRM_CPU_CAPABILITY"));
  {
    LevelGuard g(kc::CpuCapability::kAvx512);  // never more than the CPU has
    CHECK(kc::cpu_capability() == have);
  }
  LevelGuard g(kc::CpuCapability::kBaseline);
  CHECK(kc::cpu_capability() == kc::CpuCapability::kBaseline);
}

TEST_CASE("every CPU level matches float64: outputs and gradients, every dtype", "[dispatch]") {
  const auto dt = GENERATE(torch::kFloat, torch::kBFloat16, torch::kHalf);
  const int64_t V = GENERATE(1, 7, 17, 33, 2048, 2049, 5003);
  const bool transform = GENERATE(false, true);
  const int64_t N = 23;
  auto x = randn({N, V}, torch::kDouble, 4.0).to(dt);
  auto y = torch::randint(0, V, {N}, torch::kLong).masked_fill(torch::rand({N}) < 0.25, -100);
  auto g = randn({N}), ge = randn({N});
  auto run = [&](hafrm::LogProbBackend be, torch::Tensor xin) {
    auto o = all_outputs(be);
    if (transform) o.logit_scale = 0.8, o.softcap = 12.0, o.temperature = 0.9;
    auto xl = xin.clone().requires_grad_();
    auto out = hafrm::compute_token_logprobs(xl, y, o);
    auto loss =
        (out.logprobs.to(torch::kDouble) * g).sum() + (out.entropy.to(torch::kDouble) * ge).sum();
    loss.backward();
    return std::make_pair(out, xl.grad());
  };
  auto [r, gr] = run(hafrm::LogProbBackend::kReference, x.to(torch::kDouble));
  const bool f32 = dt == torch::kFloat;
  const double tol = f32 ? 2e-5 : 2e-2;
  const double gmax = std::max(1.0, gr.abs().max().item<double>());
  torch::Tensor first_grad;
  for (auto level : supported_levels()) {
    LevelGuard guard(level);
    INFO("level " << kc::capability_name(level) << " dtype " << dt << " V " << V << " transform "
                  << transform);
    auto [f, gf] = run(hafrm::LogProbBackend::kFused, x);
    CHECK(close(f.logprobs, r.logprobs, 1e-6, tol));
    CHECK(close(f.lse, r.lse, 1e-6, tol));
    CHECK(close(f.entropy, r.entropy, 1e-5, tol));
    CHECK(close(f.log_sum_p2, r.log_sum_p2, 1e-5, tol));
    CHECK(close(f.mean_logit, r.mean_logit, 1e-5, tol));
    // is_argmax on transformed logits can differ where float32 rounding makes a tie (tanh).
    if (!transform) CHECK(torch::equal(f.is_argmax, r.is_argmax));
    CHECK(gf.scalar_type() == dt);
    // float32: 1e-5 of the largest gradient, the same bound as between levels below (the entropy
    // term multiplies the LSE's last bits by |z - lse + H|: about 6e-6 at V 5003, scale 4).
    CHECK(close(gf, gr, f32 ? 1e-5 : 2e-2, (f32 ? 1e-5 : 1e-3) * gmax));
    // The levels differ only in summation order: float32 gradients agree to ~1e-5 of the
    // largest (the LSE's last bits, times |z - lse + H| in the entropy term).
    if (!first_grad.defined())
      first_grad = gf;
    else if (f32)
      CHECK(max_abs_diff(gf, first_grad) < 1e-5 * gmax);
  }
}

// The plain forward (log-probs, LSE, is_argmax: no entropy, no e^2 sum) is its own instantiation,
// and from AVX2 up it takes its exps against an integer multiple of ln2/N near the running max
// rather than the max itself (row_kernels.inc, block_sums). So: logits at large offsets (the
// centre's integer grows; past |1e5| the other path takes over), a later block whose max jumps
// far above the running one (redone), blocks far below it (the -87 clamp), -inf entries.
TEST_CASE("every CPU level: the plain forward matches float64 at any logit offset", "[dispatch]") {
  const double offset = GENERATE(0.0, 37.3, -1234.5, 5.0e4, -9.9e4, 2.0e5, -3.0e5);
  const int64_t V = GENERATE(37, 4099, 9000);
  const int64_t N = 6;
  auto xd = randn({N, V}, torch::kDouble, 3.0) + offset;
  if (V > 4096) {
    xd[1].narrow(0, 4096, V - 4096) += 30.0;   // jumps past the running max: redone
    xd[2].narrow(0, 2048, V - 2048) -= 150.0;  // far below it: clamped, adds ~nothing
  }
  xd[3].narrow(0, 0, V / 2).fill_(-std::numeric_limits<double>::infinity());
  auto x = xd.to(torch::kFloat);
  auto y = torch::randint(V / 2, V, {N}, torch::kLong);  // row 3's label among its finite half
  hafrm::TokenLogProbOptions o;
  o.return_lse = o.return_is_argmax = true;
  o.backend = hafrm::LogProbBackend::kReference;
  const auto ref = hafrm::compute_token_logprobs(x.to(torch::kDouble), y, o);
  // float32 logits at |offset| carry ulp(offset); the log-prob is x_y - lse: allow a few of them.
  const double atol = 2e-5 + 4.0 * std::abs(offset) * std::ldexp(1.0, -24);
  for (auto level : supported_levels()) {
    LevelGuard guard(level);
    INFO("level " << kc::capability_name(level) << " offset " << offset << " V " << V);
    o.backend = hafrm::LogProbBackend::kFused;
    const auto f = hafrm::compute_token_logprobs(x, y, o);
    CHECK(all_finite(f.logprobs));
    CHECK(close(f.logprobs, ref.logprobs, 1e-6, atol));
    CHECK(close(f.lse, ref.lse, 1e-7, atol));
    CHECK(torch::equal(f.is_argmax, ref.is_argmax));
  }
}

TEST_CASE("out-of-range labels with check_labels off: NaN rows, never a read out of bounds",
          "[dispatch][logprobs]") {
  // A read of logits[row + label] for these labels would fault (an ASan SEGV): the kernel tests
  // the bounds first.
  const int64_t N = 6, V = 4099;
  auto x = randn({N, V}, torch::kFloat, 2.0);
  auto y = torch::tensor({int64_t{3}, std::numeric_limits<int64_t>::max(), int64_t{-5}, int64_t{V},
                          int64_t{-100}, int64_t{1} << 40});
  hafrm::TokenLogProbOptions o = all_outputs(hafrm::LogProbBackend::kFused);
  o.check_labels = false;
  for (auto level : supported_levels()) {
    LevelGuard guard(level);
    INFO("level " << kc::capability_name(level));
    auto xl = x.clone().requires_grad_();
    auto f = hafrm::compute_token_logprobs(xl, y, o);
    (f.logprobs.sum() + f.entropy.sum()).backward();
    CHECK(std::isfinite(f.logprobs[0].item<float>()));
    for (int64_t i : {1, 2, 3, 5}) {
      INFO("row " << i);
      CHECK(std::isnan(f.logprobs[i].item<float>()));
      CHECK(std::isnan(f.entropy[i].item<float>()));
      CHECK(f.is_argmax[i].item<bool>() == false);
      CHECK(xl.grad()[i].isnan().all().item<bool>());
    }
    CHECK(f.logprobs[4].item<float>() == 0.f);  // ignored
    CHECK(xl.grad()[4].abs().sum().item<double>() == 0.0);
    CHECK(xl.grad()[0].isfinite().all().item<bool>());
  }
  // With the check on (the default), the same labels are a named error.
  require_error([&] { hafrm::token_logprobs(x, y); }, {"labels"});
}

TEST_CASE("bad rows: NaN, +inf or all -inf logits give NaN out on every path, never 0",
          "[dispatch][logprobs]") {
  // A NaN probability stays NaN through the backward, with an entropy gradient too (its
  // p == 0 guard must not catch NaN).
  const int64_t N = 5, V = 3000;
  const float inf = std::numeric_limits<float>::infinity();
  auto x = randn({N, V}, torch::kFloat, 2.0);
  x[1][2500] = std::numeric_limits<float>::quiet_NaN();
  x[2][10] = inf;
  x[3].fill_(-inf);
  x.index_put_({4, torch::indexing::Slice(0, 2000)}, -inf);  // partly -inf: a normal row
  auto y = torch::tensor({0, 1, 2, 3, 2500}, torch::kLong);
  const bool entropy_grad = GENERATE(false, true);
  const auto dt = GENERATE(torch::kFloat, torch::kBFloat16);
  for (auto level : supported_levels()) {
    LevelGuard guard(level);
    INFO("level " << kc::capability_name(level) << " entropy gradient " << entropy_grad << " dtype "
                  << dt);
    auto xl = x.to(dt).requires_grad_();
    auto o = all_outputs(hafrm::LogProbBackend::kFused);
    auto f = hafrm::compute_token_logprobs(xl, y, o);
    auto loss = f.logprobs.sum();
    if (entropy_grad) loss = loss + 0.5 * f.entropy.sum();
    loss.backward();
    auto grad = xl.grad().to(torch::kFloat);
    for (int64_t i : {0, 4}) {
      INFO("finite row " << i);
      CHECK(std::isfinite(f.logprobs[i].item<float>()));
      CHECK(std::isfinite(f.entropy[i].item<float>()));
      CHECK(grad[i].isfinite().all().item<bool>());
    }
    CHECK(grad[4].slice(0, 0, 2000).abs().sum().item<double>() == 0.0);  // p = 0 at -inf
    for (int64_t i : {1, 2, 3}) {
      INFO("bad row " << i);
      CHECK(std::isnan(f.logprobs[i].item<float>()));
      CHECK(std::isnan(f.entropy[i].item<float>()));
      CHECK(grad[i].isnan().all().item<bool>());
    }
    // The float64 reference agrees on which log-probs are NaN.
    o.backend = hafrm::LogProbBackend::kReference;
    auto r = hafrm::compute_token_logprobs(x.to(dt).to(torch::kDouble), y, o);
    CHECK(torch::equal(r.logprobs.isnan(), f.logprobs.isnan()));
  }
}

// The backward's exp (vexp_bwd; a masked table exp from AVX2 up) across its whole range: logits
// spread over [-120, 0], so d = z - lse runs from about -124 to -3, past the -87 where p becomes 0.
// V 4099: 256 vectors and a scalar tail.
TEST_CASE("every CPU level: the backward's p to float32 accuracy on [-87, 0], exactly 0 below",
          "[dispatch][logprobs]") {
  const int64_t N = 3, V = 4099;
  auto xd = torch::rand({N, V}, torch::kDouble) * -120.0;
  xd.select(1, 0).fill_(0.0);
  auto x = xd.to(torch::kFloat);
  auto y = torch::randint(1, V, {N}, torch::kLong);
  const bool entropy_grad = GENERATE(false, true);
  auto grads = [&](hafrm::LogProbBackend be, const torch::Tensor& xin) {
    auto xl = xin.clone().requires_grad_();
    auto out = hafrm::compute_token_logprobs(xl, y, all_outputs(be));
    auto loss = out.logprobs.sum();
    if (entropy_grad) loss = loss + 0.5 * out.entropy.sum();
    loss.backward();
    return std::make_pair(xl.grad().to(torch::kDouble), out.lse.to(torch::kDouble));
  };
  const auto [gr, lse] = grads(hafrm::LogProbBackend::kReference, x.to(torch::kDouble));
  const auto d = x.to(torch::kDouble) - lse.unsqueeze(1);
  // Not the label's entry: its gradient holds the one-hot's 1.
  const auto off_label = torch::ones({N, V}, torch::kBool).scatter_(1, y.unsqueeze(1), false);
  const auto below = d.lt(-87.01) & off_label, inside = d.gt(-86.99);
  REQUIRE(below.any().item<bool>());
  REQUIRE((inside & off_label).sum().item<int64_t>() > N * V / 2);
  for (auto level : supported_levels()) {
    LevelGuard guard(level);
    INFO("level " << kc::capability_name(level) << " entropy gradient " << entropy_grad);
    const auto gf = grads(hafrm::LogProbBackend::kFused, x).first;
    CHECK(all_finite(gf));
    CHECK(gf.masked_select(below).abs().max().item<double>() == 0.0);
    // Off the label the gradient is -p (times a factor with the entropy term): p within ~1e-5 of
    // itself (the exp's 2 + |d|/8 ulp, d's float32 rounding at |d| < 87, the LSE's last bits).
    const auto sel = inside & off_label;
    const auto err = (gf - gr).abs().masked_select(sel);
    const auto mag = gr.abs().masked_select(sel);
    if (!entropy_grad) {
      CHECK((err <= 2e-5 * mag).all().item<bool>());
    } else {
      // The entropy factor -1 - 0.5 (z - lse + H) crosses 0: its float32 rounding is absolute.
      CHECK((err <= 2e-5 * mag + 1e-7 * gr.abs().max()).all().item<bool>());
    }
    CHECK(close(gf, gr, 1e-5, 1e-6));
  }
}

TEST_CASE("small work runs serially; large work splits into chunks of at least one grain",
          "[dispatch]") {
  const int64_t V = 1000;
  auto run = [&](int64_t N) {
    auto x = randn({N, V}, torch::kFloat);
    auto y = torch::randint(0, V, {N}, torch::kLong);
    std::vector<float> lp(N);
    kc::ForwardOutputs out;
    out.logprob = lp.data();
    int calls = 0;
    int64_t grain = 0;
    kc::RowLayout L{1, N, 0, V, V};
    kc::token_logprobs_forward(x.data_ptr<float>(), L, y.data_ptr<int64_t>(), {}, out,
                               Counting{&calls, &grain});
    return std::make_pair(calls, grain);
  };
  const int64_t grain_rows = kc::KernelPolicy::kGrainElements / V;
  CHECK(run(3).first == 0);
  CHECK(run(grain_rows).first == 0);
  auto [calls, grain] = run(3 * grain_rows);
  CHECK(calls == 1);
  CHECK(grain == grain_rows);
}
