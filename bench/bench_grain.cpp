// Grain-size sweep of the CPU log-prob kernels: per-call time of forward+backward for small to
// large [N, V], split over threads with grain 1 row (the naive rule), with the library's rule
// (KernelPolicy::kGrainElements: serial below it, chunks of at least that much above), and
// serially; beside LibTorch's log_softmax + gather with autograd (unfused). Run it quiet and
// under load (bench/run_grain.sh starts two busy loops) to see what a parallel region costs when
// the other core is taken. Prints a markdown table: fastest of R repetitions, median in brackets.
//
//   bench_grain [repetitions]
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "hafrm/torch/token_logprobs.hpp"

namespace {
namespace kc = hafrm::kernels::cpu;

struct Stat {
  double best, median;
};

template <class F>
Stat time_it(F&& f, int reps, int inner) {
  std::vector<double> t;
  f();  // warm-up (first touch of buffers)
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < inner; ++i) f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                inner);
  }
  std::sort(t.begin(), t.end());
  return {t.front(), t[t.size() / 2]};
}

// Forward + backward through the kernel entry points with a given row split.
enum class Split { kGrain1, kPolicy, kSerial };

void fused_step(const torch::Tensor& x, const torch::Tensor& y, torch::Tensor& grad, Split split) {
  const int64_t N = x.size(0), V = x.size(1);
  kc::RowLayout L{1, N, 0, V, V};
  std::vector<float> lp(N), lse(N), g(N, 1.f);
  kc::ForwardOutputs out;
  out.logprob = lp.data(), out.lse = lse.data();
  kc::BackwardInputs in;
  in.grad_logprob = g.data(), in.lse = lse.data();
  const float* xp = x.const_data_ptr<float>();
  const int64_t* yp = y.const_data_ptr<int64_t>();
  float* gp = grad.mutable_data_ptr<float>();
  if (split == Split::kPolicy) {
    hafrm::detail::AtenParallelFor pf;
    kc::token_logprobs_forward(xp, L, yp, {}, out, pf);
    kc::token_logprobs_backward(xp, gp, L, L, yp, {}, in, pf);
    return;
  }
  const auto fwd = kc::detail::forward_variant<float>(kc::cpu_capability());
  const auto bwd = kc::detail::backward_variant<float>(kc::cpu_capability());
  if (split == Split::kSerial) {
    fwd(xp, L, yp, {}, out, 0, N);
    bwd(xp, gp, L, L, yp, {}, in, 0, N);
    return;
  }
  at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) { fwd(xp, L, yp, {}, out, b, e); });
  at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) { bwd(xp, gp, L, L, yp, {}, in, b, e); });
}

void unfused_step(const torch::Tensor& x, const torch::Tensor& y) {
  auto xl = x.detach().requires_grad_();
  auto lp = torch::log_softmax(xl, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
  lp.sum().backward();
}
}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 15;
  std::printf("threads %d, level %s, kGrainElements %lld\n\n", at::get_num_threads(),
              kc::capability_name(kc::cpu_capability()),
              static_cast<long long>(kc::KernelPolicy::kGrainElements));
  std::printf("| N x V | elements | grain 1 row us | policy us | serial us | unfused us |\n");
  std::printf("|---|---|---|---|---|---|\n");
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {16, 512},   {64, 512},   {256, 512},   {1024, 512},  {4096, 512},  {8, 32000},
      {32, 32000}, {64, 32000}, {128, 32000}, {512, 32000}, {2048, 32000}};
  for (auto [N, V] : shapes) {
    auto x = torch::randn({N, V}) * 3;
    auto y = torch::randint(0, V, {N}, torch::kLong);
    auto grad = torch::empty_like(x);
    const double elems = static_cast<double>(N * V);
    const int inner = std::max(1, static_cast<int>(2e6 / elems));
    auto a = time_it([&] { fused_step(x, y, grad, Split::kGrain1); }, reps, inner);
    auto b = time_it([&] { fused_step(x, y, grad, Split::kPolicy); }, reps, inner);
    auto c = time_it([&] { fused_step(x, y, grad, Split::kSerial); }, reps, inner);
    auto d = time_it([&] { unfused_step(x, y); }, reps, inner);
    std::printf("| %lld x %lld | %.0f | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f) |\n",
                static_cast<long long>(N), static_cast<long long>(V), elems, a.best * 1e6,
                a.median * 1e6, b.best * 1e6, b.median * 1e6, c.best * 1e6, c.median * 1e6,
                d.best * 1e6, d.median * 1e6);
    std::fflush(stdout);
  }
}
