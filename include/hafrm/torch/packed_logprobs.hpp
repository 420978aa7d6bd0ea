// hafrm/torch/packed_logprobs.hpp: log-probs and rewards of packed (padding-free) sequences.
//
// A packed batch lays its sequences ("segments") end to end in a token grid ([R, L] rows, or one
// flat stream [N]); cu_seqlens [S + 1] gives the boundaries over the flattened grid: segment s is
// the flat positions [cu[s], cu[s + 1]). Positions after cu[S] are padding. The kernels' rows are
// unchanged (one row per token); only the causal shift and the reductions know the boundaries:
// a token never predicts the first token of the next segment, sums run per segment, and a
// segment's reward is read at its last token.
//
// example-begin packed_logprobs Logits
//   auto seg = hafrm::packed_segments(torch::tensor({0, 5, 12}), /*tokens=*/12);  // 2 segments
//   auto lg = logits.reshape({1, 12, -1});                                       // [R, L, V]
//   auto lb = labels.reshape({1, 12});          // aligned with the ids, -100 where not scored
//   hafrm::SequenceLogProbs s = hafrm::packed_causal_sequence_logprobs(lg, lb, seg);  // .sum [2]
//   auto pos = hafrm::packed_positions(seg);    // [12]: 0 1 2 3 4 0 1 2 3 4 5 6
// example-end
//
// The same numbers as the padded path (one sequence per row, causal_sequence_logprobs) to float
// round-off, values and gradients; tests/test_packed.cpp checks that.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "hafrm/torch/checks.hpp"
#include "hafrm/torch/linear_logprobs.hpp"
#include "hafrm/torch/token_logprobs.hpp"

namespace hafrm {

// A checked packed layout. segment_ids[t] is the segment of flat position t, -1 on padding.
struct PackedSegments {
  torch::Tensor cu_seqlens;   // [S + 1] int64, on the tokens' device
  torch::Tensor segment_ids;  // [N] int64
  int64_t tokens = 0;         // N, the flattened grid's size
  int64_t segments() const { return cu_seqlens.size(0) - 1; }
};

// Checks cu_seqlens (1-D integral, at least one segment, cu[0] = 0, every segment at least one
// token, cu[S] <= tokens) and, with row_length > 0, that no segment crosses a row of that length
// (a model attends within rows). On a GPU the value checks are asynchronous (values_hold).
inline PackedSegments packed_segments(const torch::Tensor& cu_seqlens, int64_t tokens,
                                      int64_t row_length = 0) {
  constexpr const char* fn = "packed_segments";
  detail::check_integral(cu_seqlens, fn, "cu_seqlens");
  detail::check_dim(cu_seqlens, 1, fn, "cu_seqlens");
  HAFRM_CHECK_ARG(cu_seqlens.size(0) >= 2, fn, "cu_seqlens",
                  "expected [S + 1] boundaries of S >= 1 segments, got ", cu_seqlens.size(0),
                  " value(s)");
  HAFRM_CHECK_ARG(tokens >= 1, fn, "tokens", "expected >= 1 token positions, got ", tokens);
  HAFRM_CHECK_ARG(row_length >= 0 && (row_length == 0 || tokens % row_length == 0), fn,
                  "row_length", "expected 0 (one stream) or a divisor of tokens = ", tokens,
                  ", got ", row_length);
  auto cu = cu_seqlens.to(torch::kLong);
  auto lengths = cu.slice(0, 1) - cu.slice(0, 0, -1);
  auto first = cu.slice(0, 0, 1), last = cu.slice(0, -1);
  if (!detail::values_hold(first == 0, fn, "cu_seqlens", "expected to start at 0"))
    HAFRM_CHECK_ARG(false, fn, "cu_seqlens", "expected to start at 0, got ", first.item<int64_t>());
  if (!detail::values_hold(lengths > 0, fn, "cu_seqlens",
                           "expected strictly increasing boundaries (every segment >= 1 token)")) {
    const int64_t s = (lengths <= 0).nonzero()[0][0].item<int64_t>();
    HAFRM_CHECK_ARG(false, fn, "cu_seqlens",
                    "expected strictly increasing boundaries (every segment >= 1 token); "
                    "segment ",
                    s, " is [", cu[s].item<int64_t>(), ", ", cu[s + 1].item<int64_t>(), ")");
  }
  if (!detail::values_hold(last <= tokens, fn, "cu_seqlens",
                           "expected the last boundary within the tokens"))
    HAFRM_CHECK_ARG(false, fn, "cu_seqlens", "expected the last boundary <= tokens = ", tokens,
                    ", got ", last.item<int64_t>());
  if (row_length > 0) {
    // A segment [a, b) lies in one row when a / L == (b - 1) / L.
    auto starts = cu.slice(0, 0, -1), ends = cu.slice(0, 1) - 1;
    auto same_row = starts.div(row_length, "floor") == ends.div(row_length, "floor");
    if (!detail::values_hold(same_row, fn, "cu_seqlens", "expected every segment inside one row")) {
      const int64_t s = (~same_row).nonzero()[0][0].item<int64_t>();
      HAFRM_CHECK_ARG(false, fn, "cu_seqlens", "expected every segment inside one row of ",
                      row_length, " tokens; segment ", s, " is [", cu[s].item<int64_t>(), ", ",
                      cu[s + 1].item<int64_t>(), ")");
    }
  }
  PackedSegments p;
  p.cu_seqlens = cu;
  p.tokens = tokens;
  // segment of t = the number of ends cu[1..S] that are <= t; S (past the last) becomes -1.
  auto t = torch::arange(tokens, cu.options());
  auto seg = torch::searchsorted(cu.slice(0, 1), t, /*out_int32=*/false, /*right=*/true);
  p.segment_ids = torch::where(seg < p.segments(), seg, torch::full({}, -1, seg.options()));
  return p;
}

// Position of each token inside its segment (0 on padding): what a packed model's positions
// restart from.
inline torch::Tensor packed_positions(const PackedSegments& p) {
  auto t = torch::arange(p.tokens, p.cu_seqlens.options());
  auto start = p.cu_seqlens.index_select(0, p.segment_ids.clamp_min(0));
  return torch::where(p.segment_ids >= 0, t - start, torch::zeros({}, t.options()));
}

namespace detail {

inline void check_packed_labels(const torch::Tensor& labels, const PackedSegments& p,
                                std::string_view fn) {
  check_integral(labels, fn, "labels");
  HAFRM_CHECK_ARG(labels.numel() == p.tokens, fn, "labels", "expected ", p.tokens,
                  " positions (the packed grid), got shape ", labels.sizes());
  check_same_device(labels, p.cu_seqlens, fn, "labels", "cu_seqlens");
}

// labels_s[t] = labels[t + 1] when t and t + 1 are in the same segment, ignore_index otherwise
// (each segment's last token, and padding). Flat [N] int64.
inline torch::Tensor packed_shift_labels(const torch::Tensor& labels, const PackedSegments& p,
                                         int64_t ignore_index) {
  auto flat = labels.reshape({-1}).to(torch::kLong);
  auto next = torch::constant_pad_nd(flat.slice(0, 1), {0, 1}, ignore_index);
  auto seg = p.segment_ids;
  auto next_seg = torch::constant_pad_nd(seg.slice(0, 1), {0, 1}, -1);
  auto inside = (seg >= 0) & (next_seg == seg);
  return torch::where(inside, next, torch::full({}, ignore_index, next.options()));
}

// Sums flat [N] per-token values into [S] per-segment ones (padding goes to a dropped bin).
inline torch::Tensor sum_segments(const torch::Tensor& values, const PackedSegments& p) {
  const int64_t S = p.segments();
  auto bin =
      torch::where(p.segment_ids >= 0, p.segment_ids, torch::full({}, S, p.segment_ids.options()));
  return torch::zeros({S + 1}, values.options()).index_add(0, bin, values).slice(0, 0, S);
}

}  // namespace detail

// Per-segment reductions of flat per-token outputs (label of the NEXT token at each position, as
// the packed paths below produce them). sum/mean/count are [S]; tokens keeps the flat outputs.
inline SequenceLogProbs reduce_segments(TokenLogProbs t, const PackedSegments& p) {
  SequenceLogProbs s;
  s.sum = detail::sum_segments(t.logprobs.reshape({-1}), p);
  s.count = detail::sum_segments(t.mask.reshape({-1}).to(torch::kLong), p);
  s.mean = s.sum / s.count.clamp_min(1).to(s.sum.scalar_type());
  s.tokens = std::move(t);
  return s;
}

// Packed causal LM: logits [..., V] over the packed grid (N positions), labels [...] aligned with
// the input ids. Returns [S] sums; tokens holds [N] outputs (position t scores token t + 1).
inline SequenceLogProbs packed_causal_sequence_logprobs(const torch::Tensor& logits,
                                                        const torch::Tensor& labels,
                                                        const PackedSegments& p,
                                                        const TokenLogProbOptions& o = {}) {
  constexpr const char* fn = "packed_causal_sequence_logprobs";
  detail::check_floating(logits, fn, "logits");
  detail::check_packed_labels(labels, p, fn);
  HAFRM_CHECK_ARG(
      logits.dim() >= 2 && logits.size(-1) > 0 && logits.numel() / logits.size(-1) == p.tokens, fn,
      "logits", "expected [..., V] over ", p.tokens, " positions, got shape ", logits.sizes());
  auto shifted = detail::packed_shift_labels(labels, p, o.ignore_index);
  auto flat = logits.reshape({p.tokens, logits.size(-1)});
  return reduce_segments(compute_token_logprobs(flat, shifted, o), p);
}

// Packed fused linear path: hidden [..., H] (the LM head's input over the grid), weight [V, H].
inline SequenceLogProbs packed_linear_sequence_logprobs(const torch::Tensor& hidden,
                                                        const torch::Tensor& weight,
                                                        const torch::Tensor& labels,
                                                        const PackedSegments& p,
                                                        const TokenLogProbOptions& o = {}) {
  constexpr const char* fn = "packed_linear_sequence_logprobs";
  detail::check_floating(hidden, fn, "hidden");
  detail::check_packed_labels(labels, p, fn);
  HAFRM_CHECK_ARG(
      hidden.dim() >= 2 && hidden.size(-1) > 0 && hidden.numel() / hidden.size(-1) == p.tokens, fn,
      "hidden", "expected [..., H] over ", p.tokens, " positions, got shape ", hidden.sizes());
  auto shifted = detail::packed_shift_labels(labels, p, o.ignore_index);
  auto flat = hidden.reshape({p.tokens, hidden.size(-1)});
  return reduce_segments(compute_linear_token_logprobs(flat, weight, shifted, o), p);
}

// Reward of each segment: token_rewards (any shape over the N positions, or [..., 1]) read at the
// segment's last token. [S].
inline torch::Tensor packed_read_rewards(const torch::Tensor& token_rewards,
                                         const PackedSegments& p) {
  constexpr const char* fn = "packed_read_rewards";
  detail::check_floating(token_rewards, fn, "token_rewards");
  HAFRM_CHECK_ARG(token_rewards.numel() == p.tokens, fn, "token_rewards", "expected ", p.tokens,
                  " positions (the packed grid), got shape ", token_rewards.sizes());
  detail::check_same_device(token_rewards, p.cu_seqlens, fn, "token_rewards", "cu_seqlens");
  return token_rewards.reshape({-1}).index_select(0, p.cu_seqlens.slice(0, 1) - 1);
}

}  // namespace hafrm
