// hafrm/model/packed_pair.hpp: forward_pair over a packed (padding-free) batch.
//
// The chosen and rejected sequences of a batch are laid end to end in the rows of a token grid
// [R, L] (pack_pairs does it by first-fit decreasing under a row length); chosen_segments[i] and
// rejected_segments[i] say which segments pair i's two sides are, so the two sides of a pair may
// land in different rows. The model sees the grid once, with positions restarting per segment and
// the segment ids it needs to keep attention inside each segment (block-diagonal causal). The
// result is the PairForward of the padded forward_pair, to float round-off.
//
// A model opts in with a member (on the module, or through a ModuleHolder's operator->)
// example-begin packed_member global
//   struct MyPackedModuleImpl : torch::nn::Module {
//     hafrm::ModelOutputs haf_forward_packed(const hafrm::PackedInputs& in, hafrm::Heads heads);
//   };
// example-end
// or a specialisation of hafrm::packed_model_traits<M> with
//   static ModelOutputs forward(M&, const PackedInputs&, Heads).
// Its outputs are over the grid: logits [R, L, V] or lm_hidden [R, L, H] with lm_head_weight, and
// token_rewards [R, L].
//
// PairForwardOptions::model_token_logprobs, when set, turns the outputs into log-probs for the
// policy and the reference alike (an LM head split over the vocabulary across ranks:
// hafrm::distributed::vocab_parallel_token_logprobs): it gets one row per grid position (logits
// [R L, V] or lm_hidden [R L, H] with lm_head_weight) and the labels already shifted inside each
// segment, and returns per-token outputs that are summed per segment here. model_logprobs (the
// padded path's hook, which shifts and sums over [B, T] rows itself) is refused without it.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <numeric>
#include <vector>

#include "hafrm/model/pair_forward.hpp"
#include "hafrm/torch/packed_logprobs.hpp"

namespace hafrm {

// What a packed model receives. All [R, L] over the grid.
struct PackedInputs {
  torch::Tensor input_ids;
  torch::Tensor position_ids;    // position inside the token's segment (0 on padding)
  torch::Tensor segment_ids;     // the token's segment, -1 on padding: token i attends to token
                                 // j iff j <= i and segment_ids[j] == segment_ids[i] >= 0
  torch::Tensor attention_mask;  // 1 on segment tokens, 0 on padding
};

struct PackedPreferenceBatch {
  torch::Tensor input_ids;   // [R, L] segments end to end in each row, then padding
  torch::Tensor labels;      // [R, L] aligned with the ids; -100 on prompts and padding
  torch::Tensor cu_seqlens;  // [S + 1] boundaries over the flattened grid, each segment in a row
  torch::Tensor chosen_segments, rejected_segments;    // [B] segment index of each side
  torch::Tensor reference_chosen, reference_rejected;  // optional precomputed [B]
  torch::Tensor margin;                                // optional [B] reward margin
};

namespace detail {
template <class M>
concept HasPackedForward = requires(M& m, const PackedInputs& in, Heads h) {
  { m.haf_forward_packed(in, h) } -> std::convertible_to<ModelOutputs>;
};
template <class M>
concept HolderHasPackedForward = requires(M& m, const PackedInputs& in, Heads h) {
  { m->haf_forward_packed(in, h) } -> std::convertible_to<ModelOutputs>;
};
}  // namespace detail

template <class Model>
struct packed_model_traits {
  static ModelOutputs forward(Model& model, const PackedInputs& in, Heads heads) {
    if constexpr (detail::HasPackedForward<Model>) {
      return model.haf_forward_packed(in, heads);
    } else if constexpr (detail::HolderHasPackedForward<Model>) {
      return model->haf_forward_packed(in, heads);
    } else {
      static_assert(detail::kAlwaysFalse<Model>,
                    "hafrm: this model cannot take packed batches. Give it a member "
                    "`hafrm::ModelOutputs haf_forward_packed(const hafrm::PackedInputs&, "
                    "hafrm::Heads)` (attention inside each segment, positions from "
                    "position_ids), or specialise hafrm::packed_model_traits<YourModel> "
                    "(see hafrm/model/packed_pair.hpp).");
      return {};
    }
  }
};

template <class Model>
ModelOutputs model_forward_packed(Model& model, const PackedInputs& in, Heads heads = Heads::kAll) {
  return packed_model_traits<std::remove_cv_t<Model>>::forward(model, in, heads);
}

namespace detail {

struct CheckedPacked {
  PackedSegments seg;
  PackedInputs inputs;
};

inline CheckedPacked check_packed(const PackedPreferenceBatch& b, bool need_labels) {
  constexpr const char* fn = "forward_pair_packed";
  check_integral(b.input_ids, fn, "input_ids");
  check_dim(b.input_ids, 2, fn, "input_ids");
  if (need_labels || b.labels.defined()) {
    check_integral(b.labels, fn, "labels");
    check_same_shape(b.input_ids, b.labels, fn, "input_ids", "labels");
  }
  const int64_t R = b.input_ids.size(0), L = b.input_ids.size(1);
  HAFRM_CHECK_ARG(R * L > 0, fn, "input_ids", "must not be empty, got shape ", b.input_ids.sizes());
  CheckedPacked c;
  c.seg = packed_segments(b.cu_seqlens.to(b.input_ids.device()), R * L, L);
  const int64_t S = c.seg.segments();
  check_integral(b.chosen_segments, fn, "chosen_segments");
  check_dim(b.chosen_segments, 1, fn, "chosen_segments");
  check_integral(b.rejected_segments, fn, "rejected_segments");
  check_same_shape(b.chosen_segments, b.rejected_segments, fn, "chosen_segments",
                   "rejected_segments");
  HAFRM_CHECK_ARG(b.chosen_segments.size(0) > 0, fn, "chosen_segments",
                  "must not be empty (an empty batch)");
  for (const auto* side : {&b.chosen_segments, &b.rejected_segments}) {
    const char* arg = side == &b.chosen_segments ? "chosen_segments" : "rejected_segments";
    auto in_range = (*side >= 0) & (*side < S);
    if (!values_hold(in_range.to(c.seg.cu_seqlens.device()), fn, arg,
                     "expected segment indices in [0, S)"))
      HAFRM_CHECK_ARG(false, fn, arg, "expected segment indices in [0, ", S, "), got ",
                      side->masked_select(~in_range)[0].item<int64_t>());
  }
  auto grid = [&](const torch::Tensor& t) { return t.view({R, L}); };
  c.inputs.input_ids = b.input_ids;
  c.inputs.position_ids = grid(packed_positions(c.seg));
  c.inputs.segment_ids = grid(c.seg.segment_ids);
  c.inputs.attention_mask = grid((c.seg.segment_ids >= 0).to(torch::kLong));
  return c;
}

// PairForwardOptions::model_token_logprobs on a packed grid: the outputs flattened to one row per
// grid position (logits [N, V] or lm_hidden [N, H] with the weight as given), the labels shifted
// inside each segment, the hook's per-token outputs summed per segment.
inline SequenceLogProbs packed_hook_logprobs(const ModelOutputs& out, const torch::Tensor& labels,
                                             const PackedSegments& seg,
                                             const TokenLogProbOptions& o,
                                             const ModelTokenLogProbsFn& hook) {
  constexpr const char* fn = "forward_pair_packed";
  check_packed_labels(labels, seg, fn);
  const int64_t N = seg.tokens;
  auto rows_of = [&](const torch::Tensor& t, const char* what) {
    HAFRM_CHECK_ARG(t.dim() >= 2 && c10::multiply_integers(t.sizes().slice(0, t.dim() - 1)) == N,
                    fn, "model outputs", what, " expected [..., D] over the ", N,
                    " grid positions, got shape ", t.sizes());
    return t.reshape({N, t.size(-1)});
  };
  ModelOutputs rows;
  if (out.logits.defined()) {
    rows.logits = rows_of(out.logits, "logits");
  } else {
    HAFRM_CHECK_ARG(out.lm_hidden.defined() && out.lm_head_weight.defined(), fn, "model outputs",
                    "must hold logits, or lm_hidden and lm_head_weight for the fused linear path");
    rows.lm_hidden = rows_of(out.lm_hidden, "lm_hidden");
    rows.lm_head_weight = out.lm_head_weight;
  }
  auto t = hook(rows, packed_shift_labels(labels, seg, o.ignore_index), o);
  HAFRM_CHECK_ARG(
      t.logprobs.defined() && t.mask.defined() && t.logprobs.numel() == N && t.mask.numel() == N,
      fn, "options.model_token_logprobs", "must return logprobs and mask with one ",
      "value per row (", N, "), got shapes ",
      t.logprobs.defined() ? t.logprobs.sizes() : c10::IntArrayRef{}, " and ",
      t.mask.defined() ? t.mask.sizes() : c10::IntArrayRef{});
  return reduce_segments(std::move(t), seg);
}

inline SequenceLogProbs packed_model_logprobs(const ModelOutputs& out, const torch::Tensor& labels,
                                              const PackedSegments& seg,
                                              const TokenLogProbOptions& o,
                                              const ModelTokenLogProbsFn& hook) {
  if (hook) return packed_hook_logprobs(out, labels, seg, o, hook);
  if (out.logits.defined()) return packed_causal_sequence_logprobs(out.logits, labels, seg, o);
  HAFRM_CHECK_ARG(out.lm_hidden.defined() && out.lm_head_weight.defined(), "forward_pair_packed",
                  "model outputs",
                  "must hold logits, or lm_hidden and lm_head_weight for the fused linear path");
  return packed_linear_sequence_logprobs(out.lm_hidden, out.lm_head_weight, labels, seg, o);
}

inline void check_packed_options(const PairForwardOptions& o) {
  HAFRM_CHECK_ARG(!o.keep_token_inputs, "forward_pair_packed", "options.keep_token_inputs",
                  "is not supported on packed batches (per-token inputs are padded per pair)");
  // model_logprobs shifts and sums over a [B, T] layout; the packed path needs per-token rows.
  HAFRM_CHECK_ARG(!o.model_logprobs || o.model_token_logprobs, "forward_pair_packed",
                  "options.model_logprobs",
                  "is not used on packed batches (it shifts and sums over padded rows): set "
                  "options.model_token_logprobs for packed batches");
  HAFRM_CHECK_ARG(o.readout == RewardReadout::kLastNonPad, "forward_pair_packed", "options.readout",
                  "must be kLastNonPad (a packed segment has no padding)");
}

}  // namespace detail

// Reference log-probs of a packed batch under no-grad: {chosen [B], rejected [B]}.
template <class RefModel>
std::pair<torch::Tensor, torch::Tensor> reference_logprobs_packed(
    RefModel& reference, const PackedPreferenceBatch& b, const PairForwardOptions& o = {}) {
  detail::check_packed_options(o);
  torch::NoGradGuard ng;
  auto c = detail::check_packed(b, true);
  TokenLogProbOptions lo = o.logprobs;
  lo.return_lse = lo.return_entropy = lo.return_log_sum_p2 = false;
  lo.return_mean_logit = lo.return_is_argmax = false;
  auto out = model_forward_packed(reference, c.inputs, Heads::kAll);
  auto seq =
      detail::packed_model_logprobs(out, b.labels, c.seg, lo, o.model_token_logprobs).sum.detach();
  auto dev = seq.device();
  return {seq.index_select(0, b.chosen_segments.to(dev).to(torch::kLong)),
          seq.index_select(0, b.rejected_segments.to(dev).to(torch::kLong))};
}

// The packed forward_pair: rewards read at each side's last token, policy log-prob sums per side;
// reference sums from b.reference_* (or absent). With o.heads == Heads::kReward only the rewards.
template <class Model>
PairForward forward_pair_packed(Model& model, const PackedPreferenceBatch& b,
                                const PairForwardOptions& o = {}) {
  detail::check_packed_options(o);
  const bool rewards_only = o.heads == Heads::kReward;
  auto c = detail::check_packed(b, !rewards_only);
  auto out = model_forward_packed(model, c.inputs, o.heads);
  HAFRM_CHECK_ARG(out.token_rewards.defined(), "forward_pair_packed", "model outputs",
                  "must hold token_rewards (the reward head's output)");
  auto rewards = packed_read_rewards(out.token_rewards, c.seg);
  auto dev = rewards.device();
  auto ci = b.chosen_segments.to(dev).to(torch::kLong);
  auto ri = b.rejected_segments.to(dev).to(torch::kLong);
  PairForward f;
  f.rewards.chosen = rewards.index_select(0, ci);
  f.rewards.rejected = rewards.index_select(0, ri);
  f.rewards.margin = b.margin;
  if (rewards_only) return f;
  auto seq =
      detail::packed_model_logprobs(out, b.labels, c.seg, o.logprobs, o.model_token_logprobs);
  auto pick = [](const SequenceLogProbs& s, const torch::Tensor& idx) {
    SequenceLogProbs r;
    r.sum = s.sum.index_select(0, idx);
    r.mean = s.mean.index_select(0, idx);
    r.count = s.count.index_select(0, idx);
    return r;
  };
  f.chosen = pick(seq, ci);
  f.rejected = pick(seq, ri);
  f.policy.policy_chosen = f.chosen.sum;
  f.policy.policy_rejected = f.rejected.sum;
  f.policy.chosen_count = f.chosen.count;
  f.policy.rejected_count = f.rejected.count;
  f.policy.reference_chosen = b.reference_chosen;
  f.policy.reference_rejected = b.reference_rejected;
  return f;
}

// Policy forward plus a frozen reference model on the same packed batch (not run for kReward).
template <class Model, class RefModel>
PairForward forward_pair_packed(Model& model, RefModel& reference, const PackedPreferenceBatch& b,
                                const PairForwardOptions& o = {}) {
  if (o.heads == Heads::kReward) return forward_pair_packed(model, b, o);
  auto [rc, rr] = reference_logprobs_packed(reference, b, o);
  PackedPreferenceBatch with_ref = b;
  with_ref.reference_chosen = rc;
  with_ref.reference_rejected = rr;
  return forward_pair_packed(model, with_ref, o);
}

// ---- building a packed batch --------------------------------------------------------------------

// Packs B pairs (ids and labels of each side, host vectors) into rows of row_length tokens by
// first-fit decreasing over the 2B sequences. Each sequence must fit a row (1 <= length <=
// row_length); labels must match their ids in length. A row's unused tail is a filler segment
// (labels -100, named by no pair) except in the last row, where it is padding after cu[S].
inline PackedPreferenceBatch pack_pairs(const std::vector<std::vector<int64_t>>& chosen_ids,
                                        const std::vector<std::vector<int64_t>>& chosen_labels,
                                        const std::vector<std::vector<int64_t>>& rejected_ids,
                                        const std::vector<std::vector<int64_t>>& rejected_labels,
                                        int64_t row_length, int64_t pad_id = 0) {
  constexpr const char* fn = "pack_pairs";
  const std::size_t B = chosen_ids.size();
  HAFRM_CHECK_ARG(B > 0, fn, "chosen_ids", "must not be empty (an empty batch)");
  HAFRM_CHECK_ARG(
      rejected_ids.size() == B && chosen_labels.size() == B && rejected_labels.size() == B, fn,
      "rejected_ids", "expected ", B, " pairs on every side (chosen_ids has ", B, ")");
  HAFRM_CHECK_ARG(row_length >= 1, fn, "row_length", "expected >= 1, got ", row_length);
  // Sequence k: k < B chosen side of pair k, k >= B rejected side of pair k - B.
  auto ids_of = [&](std::size_t k) -> const std::vector<int64_t>& {
    return k < B ? chosen_ids[k] : rejected_ids[k - B];
  };
  auto labels_of = [&](std::size_t k) -> const std::vector<int64_t>& {
    return k < B ? chosen_labels[k] : rejected_labels[k - B];
  };
  for (std::size_t k = 0; k < 2 * B; ++k) {
    const char* arg = k < B ? "chosen_ids" : "rejected_ids";
    const auto n = static_cast<int64_t>(ids_of(k).size());
    HAFRM_CHECK_ARG(n >= 1 && n <= row_length, fn, arg, "sequence ", k % B,
                    " must hold 1 to row_length = ", row_length, " tokens, got ", n);
    HAFRM_CHECK_ARG(labels_of(k).size() == ids_of(k).size(), fn,
                    k < B ? "chosen_labels" : "rejected_labels", "sequence ", k % B, " expected ",
                    n, " labels (as its ids), got ", labels_of(k).size());
  }
  std::vector<std::size_t> order(2 * B);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return ids_of(a).size() > ids_of(b).size();
  });
  std::vector<int64_t> room;                   // free tokens per row
  std::vector<std::vector<std::size_t>> rows;  // sequences per row, in placement order
  for (std::size_t k : order) {
    const auto n = static_cast<int64_t>(ids_of(k).size());
    std::size_t r = 0;
    while (r < room.size() && room[r] < n) ++r;
    if (r == room.size()) room.push_back(row_length), rows.emplace_back();
    room[r] -= n;
    rows[r].push_back(k);
  }
  const auto R = static_cast<int64_t>(rows.size());
  auto ids = torch::full({R, row_length}, pad_id, torch::kLong);
  auto labels = torch::full({R, row_length}, -100, torch::kLong);
  auto* pi = ids.data_ptr<int64_t>();
  auto* pl = labels.data_ptr<int64_t>();
  std::vector<int64_t> cu{0}, segment_of(2 * B);
  for (int64_t r = 0; r < R; ++r) {
    int64_t at = r * row_length;
    // The previous row's unused tail becomes a filler segment that no pair names (cu_seqlens
    // covers the grid up to its last segment; only the last row's tail stays padding).
    if (cu.back() != at) cu.push_back(at);
    for (std::size_t k : rows[static_cast<std::size_t>(r)]) {
      const auto& s = ids_of(k);
      const auto& l = labels_of(k);
      std::copy(s.begin(), s.end(), pi + at);
      std::copy(l.begin(), l.end(), pl + at);
      at += static_cast<int64_t>(s.size());
      segment_of[k] = static_cast<int64_t>(cu.size()) - 1;
      cu.push_back(at);
    }
  }
  PackedPreferenceBatch b;
  b.input_ids = ids;
  b.labels = labels;
  b.cu_seqlens = torch::tensor(cu, torch::kLong);
  std::vector<int64_t> cs(segment_of.begin(), segment_of.begin() + static_cast<std::ptrdiff_t>(B));
  std::vector<int64_t> rs(segment_of.begin() + static_cast<std::ptrdiff_t>(B), segment_of.end());
  b.chosen_segments = torch::tensor(cs, torch::kLong);
  b.rejected_segments = torch::tensor(rs, torch::kLong);
  return b;
}

}  // namespace hafrm
