// hafrm/torch/logprob_options.hpp: the options and result types shared by every per-token
// log-prob path (reference, fused CPU, fused CUDA, fused linear), so that all of them serve one
// API and tests can hold each fast path against the reference. Public types only: their checks
// are in logprob_checks.hpp, the kernels' plumbing (outputs, transform) in kernel_args.hpp.
//
// example-begin logprob_options Logits
//   hafrm::TokenLogProbOptions opts;
//   opts.return_entropy = true;          // differentiable per-token entropy
//   auto out = hafrm::compute_token_logprobs(logits, labels, opts);
// example-end
#pragma once

#include <torch/torch.h>

#include <cstdint>

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
  // Verify labels lie in [0, V) or equal ignore_index.
  // false: no check at all. Then one contract holds on every path (token, causal, linear; fused
  // and reference; CPU and CUDA): a label outside [0, V) that is not ignore_index (any int64) is
  // never read out of bounds and makes its row NaN: every output NaN (lse included), is_argmax
  // false, and a NaN gradient row (logits; for the linear path its hidden row, and the weight's
  // whole gradient, which every row feeds, as autograd gives for logits = hidden W^T). Other
  // rows' outputs, and their logits' or hidden gradients, are unaffected.
  // true: on the CPU the check runs before any kernel and throws naming the first bad label. On
  // CUDA nothing waits for the GPU: the fused token kernel records a bad label and hafrm throws
  // at its next CUDA call or at hafrm::check_cuda_label_errors() (README, "Label checks on
  // CUDA"); the other CUDA paths (linear, reference) queue a device-side assert that fails at
  // the next sync. check_labels_sync = true (or the environment variable
  // HAFRM_CUDA_SYNC_LABEL_CHECK=1) checks on the host before the kernel instead, at one
  // device-to-host sync per call: for debugging, when the error must come from the very call.
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

}  // namespace hafrm
