// hafrm/torch/logprob_options.hpp: the options and result types shared by every per-token
// log-prob path (reference, fused CPU, fused CUDA, fused linear), so that all of them serve one
// API and tests can hold each fast path against the reference.
//
// example-begin logprob_options Logits
//   hafrm::TokenLogProbOptions opts;
//   opts.return_entropy = true;          // differentiable per-token entropy
//   auto out = hafrm::compute_token_logprobs(logits, labels, opts);
// example-end
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "hafrm/core/logprob_layout.hpp"
#include "hafrm/core/math.hpp"
#include "hafrm/torch/checks.hpp"

namespace hafrm {

// Which implementation computes the log-probs. kAuto picks the fused kernel for the tensor's
// device; kReference forces the plain ATen path (log_softmax + gather), kept as the oracle.
enum class LogProbBackend { kAuto, kReference, kFused };

struct TokenLogProbOptions {
  int64_t ignore_index = -100;  // labels equal to this score 0 and cost no exp work
  double logit_scale = 1.0;     // z = scale * x, applied first
  double softcap = 0.0;         // > 0: z = softcap * tanh(z / softcap) (Gemma-style)
  double temperature = 1.0;     // z = z / temperature, applied last
  LogProbBackend backend = LogProbBackend::kAuto;
  // Verify labels lie in [0, V) or equal ignore_index; false: no check at all (a bad label
  // then gives NaN for its row, never an out-of-bounds read). On the CPU the check runs before
  // the kernel. On CUDA (fused path) the kernel records a bad label and hafrm throws at its next
  // CUDA call or at hafrm::check_cuda_label_errors(), with no device-to-host sync (README,
  // "Label checks on CUDA"); check_labels_sync = true (or the environment variable
  // HAFRM_CUDA_SYNC_LABEL_CHECK=1) checks on the host before the kernel instead, at one sync
  // per call: for debugging, when the error must come from the very call.
  bool check_labels = true;
  bool check_labels_sync = false;
  // Optional per-token outputs, each computed only when asked.
  bool return_lse = false;         // log-sum-exp of z, no gradient
  bool return_entropy = false;     // -sum p log p, differentiable
  bool return_log_sum_p2 = false;  // log sum_v p_v^2 (WPO weighting), no gradient
  bool return_mean_logit = false;  // mean of z over the vocabulary, no gradient
  // z[label] equals the row maximum (token accuracy), no gradient. Ties: every maximum counts
  // (TRL counts only the first argmax); README, "Deliberate differences".
  bool return_is_argmax = false;
  // Fused kernels only: write d(logits) into the logits' own storage during backward. Saves one
  // [N, V] allocation; the caller must not read the logits after backward.
  bool inplace_backward = false;
  // Fused linear path only: the logits are computed in [tokens x vocab] tiles of
  // linear_chunk_tokens x linear_chunk_vocab; 0 picks sizes (up to 4096 tokens, and a vocab
  // block that keeps the tile near 16 MiB on the CPU, 256 MiB on a GPU).
  int64_t linear_chunk_tokens = 0;
  int64_t linear_chunk_vocab = 0;
};

// Per-token results, all float32 (is_argmax: bool) with the labels' shape; an output that was
// not asked for is an undefined tensor. Ignored positions hold 0 (false) in every output.
struct TokenLogProbs {
  torch::Tensor logprobs;
  torch::Tensor lse;
  torch::Tensor entropy;
  torch::Tensor log_sum_p2;
  torch::Tensor mean_logit;
  torch::Tensor is_argmax;
  torch::Tensor mask;  // bool: label != ignore_index
};

namespace detail {

// Per-row float32 outputs (flat [rows]) of a fused forward kernel.
struct FusedForward {
  torch::Tensor logprob, lse, entropy, log_sum_p2, mean_logit, is_argmax;
};

// The outputs a fused forward writes, allocated on `device` (only those asked for).
inline FusedForward allocate_fused_outputs(int64_t rows, const TokenLogProbOptions& o,
                                           bool need_lse, const torch::Device& device) {
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(device);
  FusedForward r;
  r.logprob = torch::empty({rows}, f32);
  if (need_lse || o.return_lse) r.lse = torch::empty({rows}, f32);
  if (o.return_entropy) r.entropy = torch::empty({rows}, f32);
  if (o.return_log_sum_p2) r.log_sum_p2 = torch::empty({rows}, f32);
  if (o.return_mean_logit) r.mean_logit = torch::empty({rows}, f32);
  if (o.return_is_argmax) r.is_argmax = torch::empty({rows}, f32.dtype(torch::kBool));
  return r;
}

// The raw-pointer view of those outputs that the kernels take (nullptr: not asked for).
inline core::ForwardOutputs output_pointers(FusedForward& r) {
  auto ptr = [](torch::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
  core::ForwardOutputs out;
  out.logprob = ptr(r.logprob);
  out.lse = ptr(r.lse);
  out.entropy = ptr(r.entropy);
  out.log_sum_p2 = ptr(r.log_sum_p2);
  out.mean_logit = ptr(r.mean_logit);
  out.is_argmax = r.is_argmax.defined() ? r.is_argmax.data_ptr<bool>() : nullptr;
  return out;
}

inline core::LogitTransform make_transform(const TokenLogProbOptions& o) {
  core::LogitTransform t;
  t.scale = static_cast<float>(o.logit_scale);
  t.softcap = static_cast<float>(o.softcap);
  t.inv_temperature = static_cast<float>(1.0 / o.temperature);
  return t;
}

inline void check_options(const TokenLogProbOptions& o, std::string_view fn) {
  HAFRM_CHECK_ARG(std::isfinite(o.logit_scale) && o.logit_scale != 0.0, fn, "options.logit_scale",
                  "expected a finite non-zero value, got ", o.logit_scale);
  check_nonnegative(o.softcap, fn, "options.softcap");
  // Bounded both ways: a temperature of 1e-300 makes 1 / temperature inf in float32, and 0 * inf
  // a NaN log-prob.
  check_scale(o.temperature, fn, "options.temperature");
  HAFRM_CHECK_ARG(o.linear_chunk_tokens >= 0, fn, "options.linear_chunk_tokens",
                  "expected >= 0 (0 = automatic), got ", o.linear_chunk_tokens);
  HAFRM_CHECK_ARG(o.linear_chunk_vocab >= 0, fn, "options.linear_chunk_vocab",
                  "expected >= 0 (0 = automatic), got ", o.linear_chunk_vocab);
}

// Labels in [0, V) or ignore_index, checked on the host: for CUDA labels a device-to-host sync.
inline void check_label_range(const torch::Tensor& labels, int64_t V, const TokenLogProbOptions& o,
                              std::string_view fn) {
  if (labels.numel() == 0) return;
  auto bad = (labels != o.ignore_index) & ((labels < 0) | (labels >= V));
  if (bad.any().item<bool>()) {
    auto first = labels.masked_select(bad).flatten()[0].item<int64_t>();
    HAFRM_CHECK_ARG(false, fn, "labels", "expected values in [0, ", V, ") or ignore_index (",
                    o.ignore_index, "), found ", first);
  }
}

// Whether CUDA labels are checked on the host before the kernel (one sync per call) rather than
// by the kernel itself; see TokenLogProbOptions::check_labels_sync.
inline bool sync_label_check(const TokenLogProbOptions& o) {
  static const bool env = [] {
    const char* v = std::getenv("HAFRM_CUDA_SYNC_LABEL_CHECK");
    return v != nullptr && v[0] != '\0' && std::string_view(v) != "0";
  }();
  return o.check_labels_sync || env;
}

// Shared validation of (logits [..., V], labels [...]) for every log-prob entry point.
// range_on_host = false leaves the label range to the CUDA kernel (no sync; see check_labels).
inline void check_logits_labels(const torch::Tensor& logits, const torch::Tensor& labels,
                                const TokenLogProbOptions& o, std::string_view fn,
                                bool range_on_host = true) {
  check_floating(logits, fn, "logits");
  check_integral(labels, fn, "labels");
  HAFRM_CHECK_ARG(logits.dim() >= 1, fn, "logits", "expected shape [..., V], got a scalar");
  HAFRM_CHECK_ARG(logits.size(-1) >= 1, fn, "logits", "expected a vocabulary size V >= 1, got ",
                  logits.sizes());
  HAFRM_CHECK_ARG(labels.sizes() == logits.sizes().slice(0, logits.dim() - 1), fn, "labels",
                  "expected shape ", logits.sizes().slice(0, logits.dim() - 1),
                  " (logits' shape without its last dimension), got ", labels.sizes());
  check_same_device(logits, labels, fn, "logits", "labels");
  check_options(o, fn);
  if (o.check_labels && range_on_host) check_label_range(labels, logits.size(-1), o, fn);
}

}  // namespace detail
}  // namespace hafrm
