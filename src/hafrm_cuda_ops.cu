// hafrm_cuda_ops.cu: the one compiled CUDA source of header-only hafrm. CMake builds it into the
// static library `hafrm_cuda_ops` inside the consumer's build when HAFRM_WITH_CUDA is ON (see
// include/hafrm/torch/cuda_logprobs.hpp). Each op reads the same way: checks, device guard,
// current stream, dtype dispatch, launch, status-to-exception.
#ifndef HAFRM_WITH_CUDA
#define HAFRM_WITH_CUDA 1
#endif

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "hafrm/kernels/cuda/token_logprobs.cuh"
#include "hafrm/torch/cuda_logprobs.hpp"
#include "hafrm/torch/kernel_args.hpp"
#include "hafrm/torch/logprob_checks.hpp"
#include "hafrm/torch/row_layout.hpp"

namespace hafrm::detail {

namespace {

template <class F>
void dispatch_cuda_dtype(at::ScalarType t, const char* op, F&& f) {
  switch (t) {
    case at::kFloat:
      return f(float{});
    case at::kBFloat16:
      return f(__nv_bfloat16{});
    case at::kHalf:
      return f(__half{});
    default:
      HAFRM_CHECK_ARG(false, op, "logits", "has dtype ", t,
                      "; the fused CUDA kernel takes float32, bfloat16 or float16 (use "
                      "LogProbBackend::kReference for float64)");
  }
}

void check_status(cudaError_t e, const char* op) {
  TORCH_CHECK(e == cudaSuccess, "hafrm::", op,
              ": CUDA kernel launch failed: ", cudaGetErrorString(e));
}

// ---- label checks without a sync -----------------------------------------------------------
// Checking labels on the host needs their values there: a device-to-host sync on every call,
// which stalls the CPU's run-ahead of the GPU. Instead the forward kernel records a bad label
// in a LabelError word (include/hafrm/kernels/cuda/token_logprobs.cuh) that lives in pinned,
// host-mapped memory, one per device; the host reads it, without a sync, at the start of every
// hafrm CUDA op and in hafrm::check_cuda_label_errors(). By then the kernel that wrote it has
// usually finished (a training step syncs at least once, e.g. for the loss's value), so the
// error comes at the latest one call late, naming `labels`, the position and the value; the
// row itself is NaN meanwhile, never a silent number. The words are never freed (one per device
// for the process's life; the driver reclaims them at exit).
using kernels::cuda::LabelError;

struct LabelWords {
  std::mutex mu;
  std::vector<LabelError*> host, device;  // by device index; nullptr: not allocated (yet)
  std::vector<bool> failed;               // no mapped memory there: fall back to the host check
};
LabelWords& label_words() {
  static LabelWords w;
  return w;
}

// This device's word as the device addresses it, or nullptr if mapped memory is unavailable.
// Called with the device current (the op's CUDAGuard).
LabelError* device_label_word(c10::DeviceIndex d) {
  LabelWords& w = label_words();
  std::lock_guard<std::mutex> lock(w.mu);
  const auto i = static_cast<size_t>(d);
  if (w.host.size() <= i) {
    w.host.resize(i + 1, nullptr), w.device.resize(i + 1, nullptr);
    w.failed.resize(i + 1, false);
  }
  if (!w.host[i] && !w.failed[i]) {
    void* h = nullptr;
    void* dp = nullptr;
    if (cudaHostAlloc(&h, sizeof(LabelError), cudaHostAllocMapped | cudaHostAllocPortable) ==
        cudaSuccess) {
      std::memset(h, 0, sizeof(LabelError));
      if (cudaHostGetDevicePointer(&dp, h, 0) == cudaSuccess) {
        w.host[i] = static_cast<LabelError*>(h);
        w.device[i] = static_cast<LabelError*>(dp);
      } else {
        cudaFreeHost(h);
      }
    }
    if (!w.host[i]) {
      (void)cudaGetLastError();  // the failure is handled here: not a later launch's error
      w.failed[i] = true;
    }
  }
  return w.device[i];
}

// Throws for a complete record in device d's word (if any), after clearing it.
void report_label_error(c10::DeviceIndex d) {
  LabelError* h = nullptr;
  {
    LabelWords& w = label_words();
    std::lock_guard<std::mutex> lock(w.mu);
    if (static_cast<size_t>(d) < w.host.size()) h = w.host[static_cast<size_t>(d)];
  }
  if (!h) return;
  std::atomic_ref<unsigned> state(h->state);
  if (state.load(std::memory_order_acquire) != LabelError::kReady) return;
  const LabelError e = *h;  // the kernel made the fields visible before it set kReady
  unsigned ready = LabelError::kReady;
  if (!state.compare_exchange_strong(ready, LabelError::kEmpty)) return;  // another thread has it
  HAFRM_CHECK_ARG(false, "token_logprobs", "labels", "expected values in [0, ", e.vocab,
                  ") or ignore_index (", e.ignore_index, "), found ", e.value, " at flat position ",
                  e.position, " (found on cuda:", static_cast<int>(d),
                  " by the kernel of this or an earlier call, which checks without a "
                  "device-to-host sync; TokenLogProbOptions::check_labels_sync = true checks "
                  "before the kernel, with a sync, so the error comes from the very call)");
}

}  // namespace

FusedForward cuda_fused_forward(const torch::Tensor& logits, const torch::Tensor& labels_flat,
                                const TokenLogProbOptions& o, bool need_lse) {
  c10::cuda::CUDAGuard guard(logits.device());
  const c10::DeviceIndex dev = logits.device().index();
  report_label_error(dev);  // an earlier call's bad label
  // check_labels = false: no check at all (the kernel still never reads out of bounds).
  LabelError* label_word = o.check_labels ? device_label_word(dev) : nullptr;
  if (o.check_labels && !label_word && !sync_label_check(o))  // no mapped memory here
    check_label_range(labels_flat, logits.size(-1), o, "token_logprobs");
  auto [x, layout] = row_layout(logits);
  check_kernel_labels(logits, labels_flat, layout.rows(), "token_logprobs");
  FusedForward r = allocate_fused_outputs(layout.rows(), o, need_lse, logits.device());
  const core::ForwardOutputs out = output_pointers(r);
  core::LogProbParams p{o.ignore_index, make_transform(o)};
  auto stream = at::cuda::getCurrentCUDAStream(logits.device().index()).stream();
  dispatch_cuda_dtype(x.scalar_type(), "token_logprobs (CUDA forward)", [&](auto tag) {
    using T = decltype(tag);
    check_status(kernels::cuda::launch_token_logprobs_forward(
                     reinterpret_cast<const T*>(x.const_data_ptr()), layout,
                     labels_flat.const_data_ptr<int64_t>(), p, out, stream, label_word),
                 "token_logprobs (CUDA forward)");
  });
  return r;
}

torch::Tensor cuda_fused_backward(const torch::Tensor& logits, const torch::Tensor& labels_flat,
                                  const torch::Tensor& grad_logprob,
                                  const torch::Tensor& grad_entropy, const torch::Tensor& lse,
                                  const torch::Tensor& entropy, const TokenLogProbOptions& o) {
  c10::cuda::CUDAGuard guard(logits.device());
  report_label_error(logits.device().index());  // usually the forward's, now that it has run
  auto [x, layout] = row_layout(logits);
  check_kernel_labels(logits, labels_flat, layout.rows(), "token_logprobs");
  const KernelBackwardInputs bi =
      backward_inputs(grad_logprob, grad_entropy, lse, entropy, layout.rows());
  const bool inplace = o.inplace_backward && x.is_same(logits) && rows_disjoint(layout);
  torch::Tensor grad = inplace ? x : torch::empty_like(x, at::MemoryFormat::Contiguous);
  auto glayout = row_layout(grad).second;
  core::LogProbParams p{o.ignore_index, make_transform(o)};
  auto stream = at::cuda::getCurrentCUDAStream(logits.device().index()).stream();
  dispatch_cuda_dtype(x.scalar_type(), "token_logprobs (CUDA backward)", [&](auto tag) {
    using T = decltype(tag);
    check_status(kernels::cuda::launch_token_logprobs_backward(
                     reinterpret_cast<const T*>(x.const_data_ptr()),
                     reinterpret_cast<T*>(grad.mutable_data_ptr()), layout, glayout,
                     labels_flat.const_data_ptr<int64_t>(), p, bi.in, stream),
                 "token_logprobs (CUDA backward)");
  });
  return inplace ? logits : grad;
}

}  // namespace hafrm::detail

void hafrm::check_cuda_label_errors() {
  size_t n = 0;
  {
    auto& w = detail::label_words();
    std::lock_guard<std::mutex> lock(w.mu);
    n = w.host.size();
  }
  for (size_t d = 0; d < n; ++d) detail::report_label_error(static_cast<c10::DeviceIndex>(d));
}
