// CUDA path: the same checks as the CPU tests, run where a GPU exists. Without one, the test
// prints HAFRM_SKIP and ctest reports it as skipped (SKIP_REGULAR_EXPRESSION).
#include <cstdint>
#include <limits>

#include "hafrm/torch/linear_logprobs.hpp"
#include "hafrm/torch/token_logprobs.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {
bool skip_without_gpu() {
  if (torch::cuda::is_available() && hafrm::detail::kCudaCompiled) return false;
  std::cout << "HAFRM_SKIP: no CUDA device or CUDA kernels not compiled" << std::endl;
  return true;
}
}  // namespace

TEST_CASE("CUDA fused log-probs match the float64 reference", "[cuda]") {
  if (skip_without_gpu()) return;
  const auto dt = GENERATE(torch::kFloat, torch::kBFloat16, torch::kHalf);
  const int64_t V = GENERATE(1, 7, 255, 2049, 32000, 128256);
  const int64_t N = V > 100000 ? 37 : 129;
  INFO("dtype " << dt << " V " << V);
  auto x = randn({N, V}, torch::kDouble, 3.0).to(dt);
  auto y = torch::randint(0, V, {N}, torch::kLong).masked_fill(torch::rand({N}) < 0.2, -100);
  hafrm::TokenLogProbOptions o;
  o.return_lse = o.return_entropy = o.return_log_sum_p2 = o.return_mean_logit = true;
  o.return_is_argmax = true;
  o.backend = hafrm::LogProbBackend::kFused;
  auto xc = x.cuda().requires_grad_();
  auto f = hafrm::compute_token_logprobs(xc, y.cuda(), o);
  o.backend = hafrm::LogProbBackend::kReference;
  auto xr = x.to(torch::kDouble).requires_grad_();
  auto r = hafrm::compute_token_logprobs(xr, y, o);
  const bool f32 = dt == torch::kFloat;
  CHECK(close(f.logprobs.cpu(), r.logprobs, f32 ? 1e-6 : 1e-2, f32 ? 1e-5 : 1e-2));
  CHECK(close(f.lse.cpu(), r.lse, f32 ? 1e-6 : 1e-2, f32 ? 1e-5 : 1e-2));
  CHECK(close(f.entropy.cpu(), r.entropy, 1e-4, f32 ? 1e-4 : 1e-2));
  CHECK(close(f.log_sum_p2.cpu(), r.log_sum_p2, 1e-4, f32 ? 1e-4 : 1e-2));
  CHECK(close(f.mean_logit.cpu(), r.mean_logit, 1e-4, f32 ? 1e-4 : 1e-2));
  CHECK(torch::equal(f.is_argmax.cpu(), r.is_argmax));
  auto g = randn({N});
  (f.logprobs.to(torch::kDouble) * g.cuda()).sum().add(f.entropy.sum()).backward();
  (r.logprobs * g).sum().add(r.entropy.sum()).backward();
  CHECK(close(xc.grad().cpu(), xr.grad(), f32 ? 1e-5 : 2e-2, f32 ? 1e-6 : 1e-3));
}

TEST_CASE("CUDA fused linear log-probs match the reference", "[cuda]") {
  if (skip_without_gpu()) return;
  // 0: one vocabulary tile; 1000: four, whose backward sees labels of other tiles (no one-hot).
  const int64_t vchunk = GENERATE(0, 1000);
  INFO("vocabulary tile " << vchunk);
  auto h = randn({64, 128}, torch::kFloat).cuda().requires_grad_();
  auto w = randn({3001, 128}, torch::kFloat, 0.1).cuda().requires_grad_();
  auto y = torch::randint(0, 3001, {64}, torch::kLong).cuda();
  hafrm::TokenLogProbOptions o;
  o.linear_chunk_tokens = 16;
  o.linear_chunk_vocab = vchunk;
  auto f = hafrm::linear_token_logprobs(h, w, y, o);
  f.sum().backward();
  auto hr = h.detach().cpu().to(torch::kDouble).requires_grad_();
  auto wr = w.detach().cpu().to(torch::kDouble).requires_grad_();
  o.backend = hafrm::LogProbBackend::kReference;
  auto r = hafrm::linear_token_logprobs(hr, wr, y.cpu(), o);
  r.sum().backward();
  CHECK(close(f.cpu(), r, 1e-4, 1e-4));
  CHECK(close(h.grad().cpu(), hr.grad(), 1e-3, 1e-4));
  CHECK(close(w.grad().cpu(), wr.grad(), 1e-3, 1e-4));
}

TEST_CASE("CUDA bad rows: NaN in, NaN out, gradients included", "[cuda]") {
  // The contract documented in include/hafrm/kernels/cuda/token_logprobs.cuh; the emulator
  // tests (tests/cuda_emu) check it on every machine, this on a real GPU.
  if (skip_without_gpu()) return;
  const int64_t N = 6, V = 5000;
  auto x = randn({N, V}, torch::kFloat, 2.0);
  x[1][7] = std::numeric_limits<float>::quiet_NaN();
  x[2][100] = std::numeric_limits<float>::infinity();
  x[3].fill_(-std::numeric_limits<float>::infinity());
  // Rows 4 and 5: out of range, unchecked.
  auto y = torch::tensor(
      {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}, V + 7, std::numeric_limits<int64_t>::min()},
      torch::kLong);
  hafrm::TokenLogProbOptions o;
  o.return_entropy = true;
  o.check_labels = false;
  o.backend = hafrm::LogProbBackend::kFused;
  auto xc = x.cuda().requires_grad_();
  auto f = hafrm::compute_token_logprobs(xc, y.cuda(), o);
  f.logprobs.sum().add(f.entropy.sum()).backward();
  auto lp = f.logprobs.cpu(), g = xc.grad().cpu();
  CHECK(std::isfinite(lp[0].item<float>()));
  CHECK(torch::isfinite(g[0]).all().item<bool>());
  for (int64_t r = 1; r < N; ++r) {
    INFO("row " << r);
    CHECK(std::isnan(lp[r].item<float>()));
    CHECK(torch::isnan(g[r]).all().item<bool>());
  }
}

TEST_CASE("CUDA label checks: recorded by the kernel, reported without a sync", "[cuda]") {
  // README, "Label checks on CUDA". The kernel-side record is tested in the emulator too.
  if (skip_without_gpu()) return;
  const int64_t N = 64, V = 1000;
  auto x = randn({N, V}, torch::kFloat).cuda();
  auto y = torch::randint(0, V, {N}, torch::kLong);
  y[17] = V + 5;
  hafrm::TokenLogProbOptions o;
  // The call throws itself if its kernel finished in time, else the check after the sync does.
  require_error(
      [&] {
        auto lp = hafrm::token_logprobs(x, y.cuda(), o);
        CHECK(std::isnan(lp[17].item<float>()));  // a sync
        hafrm::check_cuda_label_errors();
      },
      {"'labels'", "1005", "position 17", "[0, 1000)"});
  y[17] = 3;  // reported once: the next good call succeeds
  CHECK_NOTHROW(hafrm::token_logprobs(x, y.cuda(), o).sum().item<float>());
  CHECK_NOTHROW(hafrm::check_cuda_label_errors());
  y[17] = -7;
  o.check_labels_sync = true;  // the host check: the call itself throws
  require_error([&] { hafrm::token_logprobs(x, y.cuda(), o); }, {"'labels'", "-7"});
  o.check_labels_sync = false;
  o.check_labels = false;  // no check at all: NaN row, nothing recorded
  auto lp = hafrm::token_logprobs(x, y.cuda(), o);
  CHECK(std::isnan(lp[17].item<float>()));
  CHECK_NOTHROW(hafrm::check_cuda_label_errors());
}

TEST_CASE("CUDA label checks before the kernel: no host read, or one with check_labels_sync",
          "[cuda]") {
  // The linear and reference paths check labels through detail::values_hold: a device-side
  // assert, no sync. A bad label is not tried here: its assert would end the CUDA context.
  if (skip_without_gpu()) return;
  const int64_t N = 32, V = 700, H = 16;
  auto x = randn({N, V}, torch::kFloat).cuda();
  auto h = randn({N, H}, torch::kFloat).cuda(), w = randn({V, H}, torch::kFloat).cuda();
  auto y = torch::randint(0, V, {N}, torch::kLong).cuda();
  const auto& reads = hafrm::detail::host_value_reads();
  hafrm::TokenLogProbOptions o;
  int64_t before = reads.load();
  hafrm::linear_token_logprobs(h, w, y, o);
  o.backend = hafrm::LogProbBackend::kReference;
  hafrm::token_logprobs(x, y, o);
  hafrm::linear_token_logprobs(h, w, y, o);
  CHECK(reads.load() == before);
  // check_labels_sync: the host reads the labels (one read per call) and the error comes from
  // the very call, naming the label.
  o = {};
  o.check_labels_sync = true;
  before = reads.load();
  hafrm::linear_token_logprobs(h, w, y, o);
  CHECK(reads.load() == before + 1);
  auto bad = y.clone();
  bad[9] = -3;
  require_error([&] { hafrm::linear_token_logprobs(h, w, bad, o); },
                {"linear_token_logprobs", "'labels'", "[0, 700)", "found -3"});
  o.backend = hafrm::LogProbBackend::kReference;
  require_error([&] { hafrm::token_logprobs(x, bad, o); }, {"'labels'", "found -3"});
}

#if !(defined(HAFRM_WITH_CUDA) && HAFRM_WITH_CUDA)
TEST_CASE("a CUDA tensor without compiled CUDA kernels names the CMake option", "[logprobs]") {
  // Calling the missing entry point directly: no GPU is needed to see the message.
  require_error([] { hafrm::detail::cuda_not_compiled(); }, {"HAFRM_WITH_CUDA"});
}
#endif
