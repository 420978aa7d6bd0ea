// hafrm/torch/token_logprobs.hpp: per-token and per-sequence log-probs of labels under logits,
// without a [tokens, vocab] float32 log-softmax on the fused paths.
//
//   auto [lg, lb] = hafrm::shift_for_causal_lm(logits, labels);  // logits[:, :-1] vs ids[:, 1:]
//   torch::Tensor lp = hafrm::token_logprobs(lg, lb);            // [B, T-1] float32, 0 if ignored
//   hafrm::SequenceLogProbs s = hafrm::sequence_logprobs(lg, lb); // .sum, .mean, .count per row
#pragma once

#include <torch/torch.h>

#include "hafrm/torch/fused_logprobs.hpp"
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

}  // namespace detail

// All per-token outputs (see TokenLogProbOptions for the optional ones). logits [..., V] in
// float32/bfloat16/float16 (float64 on the reference path), labels [...] int64/int32.
inline TokenLogProbs compute_token_logprobs(const torch::Tensor& logits,
                                            const torch::Tensor& labels,
                                            const TokenLogProbOptions& o = {}) {
  detail::check_logits_labels(logits, labels, o, "token_logprobs");
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

}  // namespace hafrm
