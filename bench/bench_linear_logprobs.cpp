// Fused linear -> log-prob (LM-head matmul fused with the log-prob; logits never stored whole)
// beside the naive path (matmul, log_softmax, gather, autograd). Counters: FLOP/s of the
// compulsory matmuls (forward 2NHV; forward+backward 6NHV — the fused path recomputes the
// forward matmul in backward, which is not counted), peak_extra_MB (peak tensor bytes beyond the
// inputs, exact: the naive path's logits, log-softmax and their gradients; the fused path's
// chunk buffers; both include the parameter gradients, grads_MB), peak_rss_MB (resident).
//
//   bench_linear_logprobs --benchmark_format=json --benchmark_out=bench/results/linear.json
#include <hafrm/torch/linear_logprobs.hpp>

#include "bench_common.hpp"

using namespace hafrm_bench;

namespace {

// Args {N, H, V, token chunk (0 = automatic), bf16}; vocab_chunk > 0 fixes the vocabulary tile.
void run_linear(benchmark::State& state, hafrm::LogProbBackend backend, bool backward,
                int64_t vocab_chunk = 0) {
  const int64_t N = state.range(0), H = state.range(1), V = state.range(2);
  const auto dev = bench_device();
  const auto dt = state.range(4) ? torch::kBFloat16 : torch::kFloat;
  auto hidden = torch::randn({N, H}).to(dt).to(dev);
  auto weight = (torch::randn({V, H}) * (1.0 / std::sqrt(static_cast<double>(H)))).to(dt).to(dev);
  auto labels = make_labels(N, V).to(dev);
  hafrm::TokenLogProbOptions o;
  o.backend = backend;
  o.check_labels = false;
  if (state.range(3) > 0) o.linear_chunk_tokens = state.range(3);
  if (vocab_chunk > 0) o.linear_chunk_vocab = vocab_chunk;
  double peak = 0, peak_rss = 0;
  for (auto _ : state) {
    PeakMemory mem;
    PeakDeviceMemory tmem(dev);
    mem.start();
    tmem.start();
    if (backward) {
      auto h = hidden.detach().requires_grad_();
      auto w = weight.detach().requires_grad_();
      hafrm::linear_token_logprobs(h, w, labels, o).sum().backward();
      benchmark::DoNotOptimize(h.grad().data_ptr());
      benchmark::DoNotOptimize(w.grad().data_ptr());
    } else {
      torch::NoGradGuard ng;
      auto lp = hafrm::linear_token_logprobs(hidden, weight, labels, o);
      benchmark::DoNotOptimize(lp.data_ptr());
    }
    sync(dev);
    peak = std::max(peak, tmem.extra_bytes());
    peak_rss = std::max(peak_rss, mem.extra_bytes());
  }
  const double flops = 2.0 * N * H * V * (backward ? 3 : 1);
  state.counters["FLOPS"] =
      benchmark::Counter(flops * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["peak_extra_MB"] = peak / 1e6;  // tensor bytes beyond the inputs
  state.counters["peak_rss_MB"] = peak_rss / 1e6;
  // What both paths must hold regardless: the parameter gradients (H x V) and hidden gradients.
  state.counters["grads_MB"] = backward ? (4.0 * V * H + 4.0 * N * H) / 1e6 : 0.0;
}

void BM_NaiveLinear_Forward(benchmark::State& s) {
  run_linear(s, hafrm::LogProbBackend::kReference, false);
}
void BM_FusedLinear_Forward(benchmark::State& s) {
  run_linear(s, hafrm::LogProbBackend::kFused, false);
}
void BM_NaiveLinear_ForwardBackward(benchmark::State& s) {
  run_linear(s, hafrm::LogProbBackend::kReference, true);
}
void BM_FusedLinear_ForwardBackward(benchmark::State& s) {
  run_linear(s, hafrm::LogProbBackend::kFused, true);
}
// The vocabulary tile fixed by the 6th argument (the automatic one on the CPU: 16 MiB of float32
// logits per tile, 2048 vocabulary rows at 2048 tokens).
void BM_FusedLinearVocabTile_ForwardBackward(benchmark::State& s) {
  run_linear(s, hafrm::LogProbBackend::kFused, true, s.range(5));
}

// {N, H, V, chunk (0 = automatic), bf16}
void sizes(benchmark::internal::Benchmark* b) {
  b->Args({2048, 512, 32000, 0, 0})->Args({2048, 512, 32000, 0, 1});
  if (bench_device().is_cuda()) b->Args({8192, 4096, 128256, 0, 1});  // Liger's SM90 shape
  b->ArgNames({"N", "H", "V", "chunk", "bf16"})->Unit(benchmark::kMillisecond)->UseRealTime();
  add_min_statistic(b);
}
void chunks(benchmark::internal::Benchmark* b) {
  for (int64_t c : {64, 256, 1024}) b->Args({2048, 512, 32000, c, 0});
  b->ArgNames({"N", "H", "V", "chunk", "bf16"})->Unit(benchmark::kMillisecond)->UseRealTime();
  add_min_statistic(b);
}
// {N, H, V, chunk, bf16, vocab tile}
void vocab_tiles(benchmark::internal::Benchmark* b) {
  for (int64_t bf16 : {0, 1})
    for (int64_t vt : {512, 1024, 2048, 4096, 8192}) b->Args({2048, 512, 32000, 0, bf16, vt});
  b->ArgNames({"N", "H", "V", "chunk", "bf16", "vocab"})->Unit(benchmark::kMillisecond);
  b->UseRealTime();
  add_min_statistic(b);
}

}  // namespace

// The BLAS check: a plain [N, H] x [H, V] float32 product through LibTorch. Debian's libtorch on
// its reference BLAS manages ~2 GFLOP/s here; an optimised BLAS (the wheel's MKL) ~100+.
void BM_Matmul(benchmark::State& state) {
  const int64_t N = state.range(0), H = state.range(1), V = state.range(2);
  const auto dev = bench_device();
  auto a = torch::randn({N, H}).to(dev), b = torch::randn({H, V}).to(dev);
  for (auto _ : state) {
    auto c = torch::mm(a, b);
    sync(dev);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  state.counters["FLOPS"] =
      benchmark::Counter(2.0 * N * H * V * state.iterations(), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_Matmul)
    ->Args({2048, 512, 32000})
    ->ArgNames({"N", "H", "V"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Apply(add_min_statistic);
BENCHMARK(BM_NaiveLinear_Forward)->Apply(sizes);
BENCHMARK(BM_FusedLinear_Forward)->Apply(sizes);
BENCHMARK(BM_NaiveLinear_ForwardBackward)->Apply(sizes);
BENCHMARK(BM_FusedLinear_ForwardBackward)->Apply(sizes)->Apply(chunks);
BENCHMARK(BM_FusedLinearVocabTile_ForwardBackward)->Apply(vocab_tiles);
BENCHMARK_MAIN();
