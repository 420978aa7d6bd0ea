// Per-token log-probs: naive LibTorch (log_softmax + gather, autograd) beside hafrm's fused CPU
// kernel, plus a streaming-read bandwidth probe so each kernel's GB/s can be read as a fraction
// of what this machine can read. Counters: bytes_per_second (the kernel's compulsory traffic:
// forward reads the logits once; forward+backward reads them twice and writes the gradient
// once), peak_extra_MB (peak tensor bytes allocated beyond the inputs, exact, from a tracking
// CPU allocator) and peak_rss_MB (peak resident memory above the start, includes BLAS scratch).
//
//   bench_token_logprobs --benchmark_format=json --benchmark_out=bench/results/token.json
#include <ATen/Parallel.h>

#include <Eigen/Core>

#include <hafrm/torch/token_logprobs.hpp>

#include "bench_common.hpp"

using namespace hafrm_bench;

namespace {

torch::Dtype dtype_of(int64_t code) { return code == 0 ? torch::kFloat : torch::kBFloat16; }

// Streaming read of N*V floats (a vectorised sum), split over LibTorch's threads like the
// kernels: the bandwidth ceiling a forward pass over the logits can reach on this machine.
void BM_StreamRead(benchmark::State& state) {
  const int64_t N = state.range(0), V = state.range(1);
  auto x = make_logits(N, V, torch::kFloat);
  const float* p = x.const_data_ptr<float>();
  for (auto _ : state) {
    std::vector<double> partial(at::get_num_threads() * 8, 0.0);
    at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
      partial[at::get_thread_num() * 8] +=
          Eigen::Map<const Eigen::ArrayXf>(p + b * V, (e - b) * V).sum();
    });
    benchmark::DoNotOptimize(partial.data());
  }
  state.SetBytesProcessed(state.iterations() * N * V * 4);
}

void run_logprobs(benchmark::State& state, hafrm::LogProbBackend backend, bool backward,
                  bool inplace = false) {
  const int64_t N = state.range(0), V = state.range(1);
  const auto dt = dtype_of(state.range(2));
  const auto dev = bench_device();
  auto logits = make_logits(N, V, dt).to(dev);
  auto labels = make_labels(N, V).to(dev);
  hafrm::TokenLogProbOptions o;
  o.backend = backend;
  o.check_labels = false;  // time the kernel, not the argument checks
  o.inplace_backward = inplace;
  double peak = 0, peak_rss = 0;
  // A training loop's steady state: the pool holds the buffer of the step before (an untimed
  // first step puts it there; with the pool off it holds nothing and every step faults fresh
  // pages in). The pool's buffer counts in peak_extra_MB below, like any other.
  hafrm::release_gradient_buffers();
  auto step = [&] {
    if (backward) {
      auto x = logits.detach().requires_grad_();
      auto lp = hafrm::token_logprobs(x, labels, o);
      lp.sum().backward();
      benchmark::DoNotOptimize(x.grad().data_ptr());
    } else {
      torch::NoGradGuard ng;
      auto lp = hafrm::token_logprobs(logits, labels, o);
      benchmark::DoNotOptimize(lp.data_ptr());
    }
  };
  if (backward && !inplace && backend == hafrm::LogProbBackend::kFused) step();
  for (auto _ : state) {
    PeakMemory mem;
    PeakDeviceMemory tmem(dev);
    mem.start();
    tmem.start();
    if (backward && inplace) {
      // The logits are a non-leaf activation (as an LM head's output is): their storage takes
      // the gradient, so backward allocates nothing of size [N, V].
      state.PauseTiming();
      auto leaf = logits.detach().requires_grad_();
      auto x = leaf.view_as(leaf);
      state.ResumeTiming();
      auto lp = hafrm::token_logprobs(x, labels, o);
      lp.sum().backward();
      benchmark::DoNotOptimize(leaf.grad().data_ptr());
    } else {
      step();
    }
    sync(dev);
    peak = std::max(peak, tmem.extra_bytes());
    peak_rss = std::max(peak_rss, mem.extra_bytes());
  }
  const double held = static_cast<double>(hafrm::gradient_buffer_stats().bytes_held);
  const int64_t bytes = N * V * static_cast<int64_t>(torch::elementSize(dt));
  state.SetBytesProcessed(state.iterations() * bytes * (backward ? 3 : 1));
  state.counters["peak_extra_MB"] = std::max(peak, held) / 1e6;  // tensor bytes beyond the inputs
  state.counters["peak_rss_MB"] = peak_rss / 1e6;
  state.counters["logits_MB"] = static_cast<double>(bytes) / 1e6;
  state.counters["pool_held_MB"] = held / 1e6;  // kept between steps by the gradient pool
  hafrm::release_gradient_buffers();
}

void BM_Naive_Forward(benchmark::State& s) {
  run_logprobs(s, hafrm::LogProbBackend::kReference, false);
}
void BM_Fused_Forward(benchmark::State& s) {
  run_logprobs(s, hafrm::LogProbBackend::kFused, false);
}
void BM_Naive_ForwardBackward(benchmark::State& s) {
  run_logprobs(s, hafrm::LogProbBackend::kReference, true);
}
void BM_Fused_ForwardBackward(benchmark::State& s) {
  run_logprobs(s, hafrm::LogProbBackend::kFused, true);
}
// A fresh gradient buffer every step (the pool off): first-touch page faults of [N, V] each time.
void BM_FusedNoPool_ForwardBackward(benchmark::State& s) {
  hafrm::set_gradient_buffer_reuse(false);
  run_logprobs(s, hafrm::LogProbBackend::kFused, true);
  hafrm::set_gradient_buffer_reuse(true);
}
void BM_FusedInPlace_ForwardBackward(benchmark::State& s) {
  run_logprobs(s, hafrm::LogProbBackend::kFused, true, /*inplace=*/true);
}

// Causal LM shapes [B, T, V]: the shifted view (shift_for_causal_lm + sequence_logprobs, whose
// slice backward zero-fills a fresh [B, T, V] gradient and copies into it) against the causal
// entry (labels shifted, the kernel writes the full-size gradient itself).
void run_causal(benchmark::State& state, bool causal) {
  const int64_t B = state.range(0), T = state.range(1), V = state.range(2);
  auto logits = make_logits(B * T, V, torch::kFloat).view({B, T, V});
  auto ids = make_labels(B * T, V).view({B, T});
  hafrm::TokenLogProbOptions o;
  o.check_labels = false;
  double peak = 0;
  for (auto _ : state) {
    PeakDeviceMemory tmem(torch::kCPU);
    tmem.start();
    auto x = logits.detach().requires_grad_();
    torch::Tensor sum;
    if (causal) {
      sum = hafrm::causal_sequence_logprobs(x, ids, o).sum;
    } else {
      auto s = hafrm::shift_for_causal_lm(x, ids);
      sum = hafrm::sequence_logprobs(s.logits, s.labels, o).sum;
    }
    sum.sum().backward();
    benchmark::DoNotOptimize(x.grad().data_ptr());
    peak = std::max(peak, tmem.extra_bytes());
  }
  state.SetBytesProcessed(state.iterations() * B * T * V * 4 * 3);
  state.counters["peak_extra_MB"] = peak / 1e6;
}
void BM_ShiftedView_ForwardBackward(benchmark::State& s) { run_causal(s, false); }
void BM_CausalEntry_ForwardBackward(benchmark::State& s) { run_causal(s, true); }
void causal_sizes(benchmark::internal::Benchmark* b) {
  b->Args({8, 1024, 32000})->ArgNames({"B", "T", "V"})->Unit(benchmark::kMillisecond);
  b->UseRealTime();
  add_min_statistic(b);
}

// {N, V, dtype (0 = float32, 1 = bfloat16)}
void sizes(benchmark::internal::Benchmark* b) {
  b->Args({8192, 32000, 0})->Args({2048, 32000, 0})->Args({1024, 128256, 0});
  b->Args({8192, 32000, 1});
  if (bench_device().is_cuda()) b->Args({16384, 128256, 1});
  b->ArgNames({"N", "V", "bf16"})->Unit(benchmark::kMillisecond)->UseRealTime();
  add_min_statistic(b);
}

}  // namespace

// Device-to-device copy of the logits on a GPU: the bandwidth reference there.
void BM_DeviceCopy(benchmark::State& state) {
  const auto dev = bench_device();
  if (!dev.is_cuda()) {
    state.SkipWithError("GPU only (HAFRM_BENCH_DEVICE=cuda)");
    return;
  }
  auto x = make_logits(state.range(0), state.range(1), torch::kFloat).to(dev);
  auto y = torch::empty_like(x);
  for (auto _ : state) {
    y.copy_(x);
    sync(dev);
  }
  state.SetBytesProcessed(state.iterations() * x.nbytes() * 2);  // read + write
}

BENCHMARK(BM_DeviceCopy)
    ->Args({8192, 32000})
    ->ArgNames({"N", "V"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_StreamRead)
    ->Args({8192, 32000})
    ->ArgNames({"N", "V"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Apply(add_min_statistic);
BENCHMARK(BM_Naive_Forward)->Apply(sizes);
BENCHMARK(BM_Fused_Forward)->Apply(sizes);
BENCHMARK(BM_Naive_ForwardBackward)->Apply(sizes);
BENCHMARK(BM_Fused_ForwardBackward)->Apply(sizes);
BENCHMARK(BM_FusedNoPool_ForwardBackward)->Apply(sizes);
BENCHMARK(BM_FusedInPlace_ForwardBackward)->Apply(sizes);
BENCHMARK(BM_ShiftedView_ForwardBackward)->Apply(causal_sizes);
BENCHMARK(BM_CausalEntry_ForwardBackward)->Apply(causal_sizes);
BENCHMARK_MAIN();
