// hafrm/torch/token_logprobs.hpp: per-token and per-sequence log-probs of labels under logits,
// without a [tokens, vocab] float32 log-softmax on the fused paths.
//
// example-begin token_logprobs Logits
//   auto [lg, lb] = hafrm::shift_for_causal_lm(logits, labels);  // logits[:, :-1] vs ids[:, 1:]
//   torch::Tensor lp = hafrm::token_logprobs(lg, lb);            // [B, T-1] float32, 0 if ignored
//   hafrm::SequenceLogProbs s = hafrm::sequence_logprobs(lg, lb); // .sum, .mean, .count per row
// example-end
//
// Causal LMs, faster: causal_sequence_logprobs(logits, labels) takes the unshifted [B, T, V]
// logits and labels aligned with the input ids, and gives the same results as the two lines
// above without the [B, T, V] gradient copy that the shifted view's backward costs.
#pragma once

#include <torch/torch.h>

#include "hafrm/torch/fused_logprobs.hpp"
#include "hafrm/torch/logprob_checks.hpp"
#include "hafrm/torch/logprob_options.hpp"
#include "hafrm/torch/reference_logprobs.hpp"

namespace hafrm {

// Causal-LM alignment: the logit at position t predicts the token at t + 1.
struct ShiftedLogits {
  torch::Tensor logits;  // [B, T-1, V], a view (no copy)
  torch::Tensor labels;  // [B, T-1]
};

inline ShiftedLogits shift_for_causal_lm(const torch::Tensor& logits, const torch::Tensor& labels) {
  constexpr const char* fn = "shift_for_causal_lm";
  detail::check_floating(logits, fn, "logits");
  detail::check_integral(labels, fn, "labels");
  detail::check_dim(logits, 3, fn, "logits");
  detail::check_dim(labels, 2, fn, "labels");
  HAFRM_CHECK_ARG(labels.size(0) == logits.size(0) && labels.size(1) == logits.size(1), fn,
                  "labels", "expected shape [", logits.size(0), ", ", logits.size(1),
                  "] to match logits [B, T, V], got ", labels.sizes());
  HAFRM_CHECK_ARG(logits.size(1) >= 2, fn, "logits", "expected at least 2 positions, got ",
                  logits.size(1));
  using torch::indexing::Slice;
  return {logits.index({Slice(), Slice(0, -1)}),
          labels.index({Slice(), Slice(1, torch::indexing::None)})};
}

namespace detail {

inline bool use_fused(const torch::Tensor& logits, const TokenLogProbOptions& o) {
  switch (o.backend) {
    case LogProbBackend::kReference:
      return false;
    case LogProbBackend::kFused:
      return true;
    case LogProbBackend::kAuto:
      break;
  }
  // float64 stays on the reference path: it is the exact oracle dtype.
  if (logits.scalar_type() == torch::kDouble) return false;
  if (logits.is_cpu()) return true;
  if (logits.is_cuda()) {
    if (kCudaCompiled) return true;
    TORCH_WARN_ONCE(
        "hafrm: CUDA logits are using the slow reference log-prob path because hafrm's CUDA "
        "kernels were not compiled in; configure with -DHAFRM_WITH_CUDA=ON.");
  }
  return false;
}

// False where the fused CUDA kernel checks the label range itself (without check_labels_sync).
// Everywhere else check_label_range checks before the kernel (on a GPU with no sync either,
// unless check_labels_sync asks for one).
inline bool label_range_on_host(const torch::Tensor& logits, const TokenLogProbOptions& o) {
  return !(logits.is_cuda() && use_fused(logits, o) && !sync_label_check(o));
}

}  // namespace detail

// All per-token outputs (see TokenLogProbOptions for the optional ones). logits [..., V] in
// float32/bfloat16/float16 (float64 on the reference path), labels [...] int64/int32.
inline TokenLogProbs compute_token_logprobs(const torch::Tensor& logits,
                                            const torch::Tensor& labels,
                                            const TokenLogProbOptions& o = {}) {
  detail::check_logits_labels(logits, labels, o, "token_logprobs",
                              detail::label_range_on_host(logits, o));
  if (!detail::use_fused(logits, o)) return detail::reference_token_logprobs(logits, labels, o);
  auto shape = labels.sizes().vec();
  auto flat = labels.reshape({-1}).to(torch::kLong).contiguous();
  auto outs = detail::FusedTokenLogProbsFunction::apply(logits, flat, o);
  return detail::unpack_outputs(outs, o, shape, labels != o.ignore_index);
}

// Per-token log-probs only: float32 with labels' shape, 0 where label == ignore_index.
inline torch::Tensor token_logprobs(const torch::Tensor& logits, const torch::Tensor& labels,
                                    const TokenLogProbOptions& o = {}) {
  return compute_token_logprobs(logits, labels, o).logprobs;
}

// Per-sequence reductions over the last dimension of the labels.
struct SequenceLogProbs {
  torch::Tensor sum;     // [B] summed log-probs of scored tokens (differentiable)
  torch::Tensor mean;    // [B] sum / count; 0 for a row with no scored token
  torch::Tensor count;   // [B] int64 number of scored tokens
  TokenLogProbs tokens;  // the per-token outputs they were reduced from
};

inline SequenceLogProbs reduce_sequences(TokenLogProbs t) {
  SequenceLogProbs s;
  s.sum = t.logprobs.sum(-1);
  s.count = t.mask.sum(-1);
  s.mean = s.sum / s.count.clamp_min(1).to(s.sum.scalar_type());
  s.tokens = std::move(t);
  return s;
}

// logits [B, T, V] (already shifted, see shift_for_causal_lm), labels [B, T].
inline SequenceLogProbs sequence_logprobs(const torch::Tensor& logits, const torch::Tensor& labels,
                                          const TokenLogProbOptions& o = {}) {
  HAFRM_CHECK_ARG(labels.dim() >= 1, "sequence_logprobs", "labels",
                  "expected shape [B, T] (at least one dimension), got a scalar");
  return reduce_sequences(compute_token_logprobs(logits, labels, o));
}

// ---- the causal shift inside the kernel ---------------------------------------------------------
// shift_for_causal_lm slices the logits; the backward of that slice zero-fills a fresh [B, T, V]
// gradient and copies the kernel's [B, T-1, V] one into it: two more passes over the largest
// tensor of a training step. Shifting the labels instead (labels_s[b, t] = labels[b, t + 1], and
// ignore_index at t = T - 1) lets the fused kernel run over the full logits and write the
// full-size gradient itself in one pass: the last position, and every ignored one, is zeroed
// without its logits being read. Outputs are then sliced to [B, T-1] ([B*T] floats, not logits).

namespace detail {
inline void check_causal(const torch::Tensor& logits, const torch::Tensor& labels,
                         std::string_view fn) {
  check_floating(logits, fn, "logits");
  check_integral(labels, fn, "labels");
  check_dim(logits, 3, fn, "logits");
  check_dim(labels, 2, fn, "labels");
  HAFRM_CHECK_ARG(labels.size(0) == logits.size(0) && labels.size(1) == logits.size(1), fn,
                  "labels", "expected shape [", logits.size(0), ", ", logits.size(1),
                  "] to match logits [B, T, V], got ", labels.sizes());
  HAFRM_CHECK_ARG(logits.size(1) >= 2, fn, "logits", "expected at least 2 positions, got ",
                  logits.size(1));
}

// labels_s[b, t] = labels[b, t + 1]; ignore_index at t = T - 1. int64, [B, T].
inline torch::Tensor shift_labels_left(const torch::Tensor& labels, int64_t ignore_index) {
  using torch::indexing::None;
  using torch::indexing::Slice;
  return torch::constant_pad_nd(labels.index({Slice(), Slice(1, None)}).to(torch::kLong), {0, 1},
                                ignore_index);
}

inline TokenLogProbs slice_positions(TokenLogProbs t, int64_t T) {
  auto cut = [T](torch::Tensor& x) {
    if (x.defined()) x = x.slice(1, 0, T - 1);
  };
  cut(t.logprobs), cut(t.lse), cut(t.entropy), cut(t.log_sum_p2), cut(t.mean_logit);
  cut(t.is_argmax), cut(t.mask);
  return t;
}
}  // namespace detail

// Per-token outputs of a causal LM: logits [B, T, V] (unshifted, as the model returns them),
// labels [B, T] aligned with the input ids (the token's own id where it is scored, ignore_index
// elsewhere). Returns [B, T-1] outputs equal to compute_token_logprobs on shift_for_causal_lm's
// views; on the fused paths the logits' gradient is written full-size by the kernel itself.
inline TokenLogProbs compute_causal_token_logprobs(const torch::Tensor& logits,
                                                   const torch::Tensor& labels,
                                                   const TokenLogProbOptions& o = {}) {
  constexpr const char* fn = "causal_token_logprobs";
  detail::check_causal(logits, labels, fn);
  if (!detail::use_fused(logits, o)) {
    auto s = shift_for_causal_lm(logits, labels);
    return compute_token_logprobs(s.logits, s.labels, o);
  }
  const int64_t T = logits.size(1);
  auto shifted = detail::shift_labels_left(labels, o.ignore_index);
  detail::check_logits_labels(logits, shifted, o, fn, detail::label_range_on_host(logits, o));
  auto flat = shifted.reshape({-1});
  auto outs = detail::FusedTokenLogProbsFunction::apply(logits, flat, o);
  return detail::slice_positions(
      detail::unpack_outputs(outs, o, shifted.sizes(), shifted != o.ignore_index), T);
}

// Per-sequence sums of a causal LM's response log-probs from unshifted logits and labels aligned
// with the input ids (see compute_causal_token_logprobs); the same numbers as
// sequence_logprobs(shift_for_causal_lm(logits, labels)), one [B, T, V] gradient copy fewer.
inline SequenceLogProbs causal_sequence_logprobs(const torch::Tensor& logits,
                                                 const torch::Tensor& labels,
                                                 const TokenLogProbOptions& o = {}) {
  return reduce_sequences(compute_causal_token_logprobs(logits, labels, o));
}

}  // namespace hafrm
