// hafrm/torch/logprob_checks.hpp: the argument checks of every per-token log-prob entry point
// (token, causal, linear, vocabulary-parallel): the options, (logits, labels) shapes and devices,
// and the one label-range check. Internal: the public options are in logprob_options.hpp.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "hafrm/torch/checks.hpp"
#include "hafrm/torch/logprob_options.hpp"

namespace hafrm::detail {

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

// Whether CUDA labels are checked on the host before the kernel, with one device-to-host sync
// per call, so that a bad label's error comes from the very call; see
// TokenLogProbOptions::check_labels_sync.
inline bool sync_label_check(const TokenLogProbOptions& o) {
  static const bool env = [] {
    const char* v = std::getenv("HAFRM_CUDA_SYNC_LABEL_CHECK");
    return v != nullptr && v[0] != '\0' && std::string_view(v) != "0";
  }();
  return o.check_labels_sync || env;
}

// Labels in [0, V) or ignore_index: the one range check of every path that checks before its
// kernel (token and causal on the CPU and the reference path, linear, vocabulary-parallel; the
// fused CUDA token kernel's own check reports through src/hafrm_cuda_ops.cu with the same
// wording). Through values_hold (checks.hpp): on the CPU it throws at once, naming the first bad
// label; on a GPU it queues a device-side assert with no sync, unless sync_label_check(o) asks
// for the host read (one sync) so that the error, naming the label, comes from this call.
inline void check_label_range(const torch::Tensor& labels, int64_t V, const TokenLogProbOptions& o,
                              std::string_view fn) {
  if (labels.numel() == 0) return;
  auto ok = (labels == o.ignore_index) | ((labels >= 0) & (labels < V));
  const std::string expected =
      c10::str("expected values in [0, ", V, ") or ignore_index (", o.ignore_index, ")");
  bool held;
  if (!labels.is_cpu() && sync_label_check(o)) {
    host_value_reads().fetch_add(1, std::memory_order_relaxed);
    held = ok.all().item<bool>();
  } else {
    held = values_hold(ok, fn, "labels", expected);
  }
  if (!held) {
    auto first = labels.masked_select(~ok).flatten()[0].item<int64_t>();
    HAFRM_CHECK_ARG(false, fn, "labels", expected, ", found ", first);
  }
}

// Shared validation of (logits [..., V], labels [...]) for every log-prob entry point.
// range_on_host = false leaves the label range to the fused CUDA kernel (see check_labels).
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

}  // namespace hafrm::detail
