// hafrm/model/pair_forward.hpp: one concatenated forward pass over [chosen; rejected] that
// yields everything the hybrid loss needs: rewards from the reward head, the policy's summed
// response log-probs, and the reference's (from a frozen model, or precomputed).
//
// example-begin forward_pair PairModel
//   hafrm::PreferenceBatch b{.chosen_ids = ids_c, .chosen_mask = mask_c, .chosen_labels = labels_c,
//                            .rejected_ids = ids_r, .rejected_mask = mask_r,
//                            .rejected_labels = labels_r};            // [B, Tc] and [B, Tr]
//   hafrm::PairForward f = hafrm::forward_pair(model, reference, b);
//   auto out = hafrm::HybridLoss<>{}(f.rewards, f.policy, step);
// example-end
//
// With PairForwardOptions::keep_token_inputs, f.policy.tokens also holds the per-token log-probs,
// masks (and the reference's per-token log-probs, and log sum p^2 when
// logprobs.return_log_sum_p2 is set) that LD-DPO and WPO need, from the same single pass.
//
// PairForwardOptions::model_logprobs replaces how the model's outputs become log-probs (for an
// LM head split over the vocabulary across ranks: hafrm::distributed::vocab_parallel_logprobs);
// PairForwardOptions::model_token_logprobs does the same for packed batches (packed_pair.hpp;
// hafrm::distributed::vocab_parallel_token_logprobs).
//
// Reward-only path (objectives with no policy term: bt, hinge, Plackett-Luce): with
// PairForwardOptions::heads = Heads::kReward the model runs with Heads::kReward (model_traits.hpp)
// and only f.rewards is filled; no log-prob is computed, the reference model is not run, and the
// labels may be left undefined. HybridLoss::needs_policy() says when a loss allows this.
// example-begin forward_pair_reward PairModel
//   hafrm::PairForwardOptions reward_only{.heads = hafrm::Heads::kReward};
//   auto r = hafrm::forward_pair(model, batch, reward_only);            // r.policy left empty
//   hafrm::HybridLoss<> bt{{}, {}, {.reward_weight = 1.0, .alpha = 0.0}};   // needs_policy() false
//   bt(r.rewards, r.policy, step).loss.backward();
// example-end
//
// Labels are aligned with input_ids (the token's own id where it is scored, -100 on prompt and
// padding); the causal shift happens here, on the labels (causal_sequence_logprobs).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>

#include "hafrm/losses/policy_inputs.hpp"
#include "hafrm/losses/reward.hpp"
#include "hafrm/model/model_traits.hpp"
#include "hafrm/model/reward_readout.hpp"
#include "hafrm/torch/linear_logprobs.hpp"
#include "hafrm/torch/token_logprobs.hpp"

namespace hafrm {

struct PreferenceBatch {
  torch::Tensor chosen_ids, chosen_mask, chosen_labels;        // [B, Tc]
  torch::Tensor rejected_ids, rejected_mask, rejected_labels;  // [B, Tr]
  torch::Tensor reference_chosen, reference_rejected;          // optional precomputed [B]
  torch::Tensor margin;                                        // optional [B] reward margin
};

// Turns a model's outputs and labels aligned with the input ids (unshifted: the causal shift is
// the callee's) into per-sequence log-probs. PairForwardOptions::model_logprobs holds one when the
// model's LM head is not a plain single-process one: hafrm::distributed::vocab_parallel_logprobs
// (hafrm/distributed/vocab_parallel_linear.hpp) gives one for heads split over the vocabulary
// across ranks. Declared here, implemented above: the model layer does not depend on c10d.
using ModelLogProbsFn = std::function<SequenceLogProbs(
    const ModelOutputs& out, const torch::Tensor& labels, const TokenLogProbOptions& options)>;

// Per-token log-probs of rows as given -- no causal shift: `rows` holds logits [N, V] (or this
// rank's shard) or lm_hidden [N, H] with lm_head_weight; labels [N] is the token each row scores
// (ignore_index where none).
using ModelTokenLogProbsFn = std::function<TokenLogProbs(
    const ModelOutputs& rows, const torch::Tensor& labels, const TokenLogProbOptions& options)>;

struct PairForwardOptions {
  RewardReadout readout = RewardReadout::kLastNonPad;
  // kReward: rewards only (no LM head, no log-probs, no reference pass); f.policy stays empty.
  Heads heads = Heads::kAll;
  TokenLogProbOptions logprobs{};
  int64_t pad_id = 0;  // fills the shorter side when chosen and rejected lengths differ
  // Fill PolicyInputs::tokens (per-token log-probs and masks, for LD-DPO and WPO). Views of the
  // tensors the pass computes anyway: no extra log-prob work, no copies.
  bool keep_token_inputs = false;
  // Empty: the log-probs come from the full logits or the fused linear path in this process.
  // Used for the policy and the reference model alike.
  ModelLogProbsFn model_logprobs;
  // The packed path's counterpart (forward_pair_packed, reference_logprobs_packed), used there for
  // the policy and the reference model alike: the packed path flattens the model's outputs to one
  // row per grid position, shifts the labels inside each segment, calls this, and sums per
  // segment. Empty: the full logits or the fused linear path in this process. The padded path
  // keeps using model_logprobs (set both to run a custom head on either layout).
  ModelTokenLogProbsFn model_token_logprobs;
};

struct PairForward {
  RewardInputs rewards;
  PolicyInputs policy;
  SequenceLogProbs chosen, rejected;  // per-token detail of the policy's log-probs
};

namespace detail {

// Labels are checked when the pass computes log-probs (need_labels) or when given.
inline void check_side(const torch::Tensor& ids, const torch::Tensor& mask,
                       const torch::Tensor& labels, const char* side, bool need_labels) {
  const std::string s(side);
  check_integral(ids, "forward_pair", s + "_ids");
  check_dim(ids, 2, "forward_pair", s + "_ids");
  check_defined(mask, "forward_pair", s + "_mask");
  check_same_shape(ids, mask, "forward_pair", s + "_ids", s + "_mask");
  if (!need_labels && !labels.defined()) {
    HAFRM_CHECK_ARG(ids.size(1) >= 1, "forward_pair", s + "_ids",
                    "expected at least 1 position, got ", ids.size(1));
    return;
  }
  check_integral(labels, "forward_pair", s + "_labels");
  check_same_shape(ids, labels, "forward_pair", s + "_ids", s + "_labels");
  if (need_labels)
    HAFRM_CHECK_ARG(ids.size(1) >= 2, "forward_pair", s + "_ids",
                    "expected at least 2 positions (one to predict from, one scored), got ",
                    ids.size(1));
}

inline torch::Tensor pad_to(const torch::Tensor& t, int64_t T, int64_t value) {
  if (t.size(1) == T) return t;
  return torch::constant_pad_nd(t, {0, T - t.size(1)}, value);
}

struct Concatenated {
  torch::Tensor ids, mask, labels;
  int64_t batch;
};

inline Concatenated concatenate(const PreferenceBatch& b, int64_t pad_id, bool need_labels = true) {
  check_side(b.chosen_ids, b.chosen_mask, b.chosen_labels, "chosen", need_labels);
  check_side(b.rejected_ids, b.rejected_mask, b.rejected_labels, "rejected", need_labels);
  HAFRM_CHECK_ARG(b.chosen_labels.defined() == b.rejected_labels.defined(), "forward_pair",
                  "rejected_labels", "must be given exactly when chosen_labels is");
  const int64_t B = b.chosen_ids.size(0);
  HAFRM_CHECK_ARG(B > 0, "forward_pair", "chosen_ids", "must not be empty (an empty batch)");
  HAFRM_CHECK_ARG(b.rejected_ids.size(0) == B, "forward_pair", "rejected_ids",
                  "expected batch size ", B, " (as chosen_ids), got ", b.rejected_ids.size(0));
  const int64_t T = std::max(b.chosen_ids.size(1), b.rejected_ids.size(1));
  Concatenated c;
  c.batch = B;
  c.ids = torch::cat({pad_to(b.chosen_ids, T, pad_id), pad_to(b.rejected_ids, T, pad_id)});
  c.mask = torch::cat({pad_to(b.chosen_mask, T, 0), pad_to(b.rejected_mask, T, 0)});
  if (need_labels)  // the reward-only pass has no use for them
    c.labels = torch::cat({pad_to(b.chosen_labels, T, -100), pad_to(b.rejected_labels, T, -100)});
  return c;
}

// Per-sequence log-probs from whatever the model produced: full logits, or the LM head's input
// and weight (fused linear path, logits never stored).
inline SequenceLogProbs model_sequence_logprobs(const ModelOutputs& out,
                                                const torch::Tensor& labels,
                                                const TokenLogProbOptions& o,
                                                const ModelLogProbsFn& hook = {}) {
  if (hook) return hook(out, labels, o);
  using torch::indexing::None;
  using torch::indexing::Slice;
  auto shifted_labels = labels.index({Slice(), Slice(1, None)});
  // Full logits: the shift happens on the labels inside the fused kernel's entry, so the
  // logits' gradient is written full-size in one pass (no slice-backward copy).
  if (out.logits.defined()) return causal_sequence_logprobs(out.logits, labels, o);
  HAFRM_CHECK_ARG(out.lm_hidden.defined() && out.lm_head_weight.defined(), "forward_pair",
                  "model outputs",
                  "must hold logits, or lm_hidden and lm_head_weight for the fused linear path");
  auto h = out.lm_hidden.index({Slice(), Slice(0, -1)});
  return reduce_sequences(compute_linear_token_logprobs(h, out.lm_head_weight, shifted_labels, o));
}

// The reference's log-probs of the concatenated batch [2B, ...] under no-grad; only the log-probs
// themselves are computed (the optional per-token outputs are the policy's business).
template <class RefModel>
SequenceLogProbs reference_forward(RefModel& reference, const PreferenceBatch& b,
                                   const PairForwardOptions& o) {
  torch::NoGradGuard ng;
  auto c = concatenate(b, o.pad_id);
  auto out = model_forward(reference, c.ids, c.mask);
  TokenLogProbOptions lo = o.logprobs;
  lo.return_lse = lo.return_entropy = lo.return_log_sum_p2 = false;
  lo.return_mean_logit = lo.return_is_argmax = false;
  return model_sequence_logprobs(out, c.labels, lo, o.model_logprobs);
}

// Heads::kReward: the rewards of the concatenated batch, nothing else.
template <class Model>
PairForward reward_only_forward(Model& model, const PreferenceBatch& b,
                                const PairForwardOptions& o) {
  auto c = concatenate(b, o.pad_id, /*need_labels=*/false);
  auto out = model_forward(model, c.ids, c.mask, Heads::kReward);
  HAFRM_CHECK_ARG(out.token_rewards.defined(), "forward_pair", "model outputs",
                  "must hold token_rewards (the reward head's output)");
  auto rewards = read_rewards(out.token_rewards, c.mask, o.readout);
  PairForward f;
  f.rewards.chosen = rewards.slice(0, 0, c.batch);
  f.rewards.rejected = rewards.slice(0, c.batch);
  f.rewards.margin = b.margin;
  return f;
}

}  // namespace detail

// Reference log-probs (summed over response tokens) under no-grad, e.g. to precompute them once
// per dataset. Returns {chosen [B], rejected [B]}.
template <class RefModel>
std::pair<torch::Tensor, torch::Tensor> reference_logprobs(RefModel& reference,
                                                           const PreferenceBatch& b,
                                                           const PairForwardOptions& o = {}) {
  auto sums = detail::reference_forward(reference, b, o).sum.detach();
  const int64_t B = b.chosen_ids.size(0);
  return {sums.slice(0, 0, B), sums.slice(0, B)};
}

// Policy forward only; reference log-probs come from b.reference_* (precomputed) or are absent
// (reference-free losses).
template <class Model>
PairForward forward_pair(Model& model, const PreferenceBatch& b, const PairForwardOptions& o = {}) {
  if (o.heads == Heads::kReward) return detail::reward_only_forward(model, b, o);
  auto c = detail::concatenate(b, o.pad_id);
  auto out = model_forward(model, c.ids, c.mask);
  HAFRM_CHECK_ARG(out.token_rewards.defined(), "forward_pair", "model outputs",
                  "must hold token_rewards (the reward head's output)");
  auto seq = detail::model_sequence_logprobs(out, c.labels, o.logprobs, o.model_logprobs);
  auto rewards = read_rewards(out.token_rewards, c.mask, o.readout);
  const int64_t B = c.batch;
  auto first = [B](const torch::Tensor& t) { return t.slice(0, 0, B); };
  auto second = [B](const torch::Tensor& t) { return t.slice(0, B); };
  PairForward f;
  f.rewards.chosen = first(rewards);
  f.rewards.rejected = second(rewards);
  f.rewards.margin = b.margin;
  f.policy.policy_chosen = first(seq.sum);
  f.policy.policy_rejected = second(seq.sum);
  f.policy.chosen_count = first(seq.count);
  f.policy.rejected_count = second(seq.count);
  f.policy.reference_chosen = b.reference_chosen;
  f.policy.reference_rejected = b.reference_rejected;
  auto split_tokens = [&](const TokenLogProbs& t, bool chosen) {
    TokenLogProbs r;
    auto pick = [&](const torch::Tensor& x) {
      return x.defined() ? (chosen ? first(x) : second(x)) : x;
    };
    r.logprobs = pick(t.logprobs), r.lse = pick(t.lse), r.entropy = pick(t.entropy);
    r.log_sum_p2 = pick(t.log_sum_p2), r.mean_logit = pick(t.mean_logit);
    r.is_argmax = pick(t.is_argmax), r.mask = pick(t.mask);
    return r;
  };
  f.chosen = reduce_sequences(split_tokens(seq.tokens, true));
  f.rejected = reduce_sequences(split_tokens(seq.tokens, false));
  if (o.keep_token_inputs) {
    PolicyTokenInputs tk;
    tk.policy_chosen = f.chosen.tokens.logprobs, tk.policy_rejected = f.rejected.tokens.logprobs;
    tk.chosen_mask = f.chosen.tokens.mask, tk.rejected_mask = f.rejected.tokens.mask;
    tk.log_sum_p2_chosen = f.chosen.tokens.log_sum_p2;
    tk.log_sum_p2_rejected = f.rejected.tokens.log_sum_p2;
    f.policy.tokens = std::move(tk);
  }
  return f;
}

// Policy forward plus a frozen reference model run under no-grad on the same batch.
// With Heads::kReward the reference is not run (reward-only path above).
template <class Model, class RefModel>
PairForward forward_pair(Model& model, RefModel& reference, const PreferenceBatch& b,
                         const PairForwardOptions& o = {}) {
  if (o.heads == Heads::kReward) return detail::reward_only_forward(model, b, o);
  auto ref = detail::reference_forward(reference, b, o);
  const int64_t B = b.chosen_ids.size(0);
  PreferenceBatch with_ref = b;
  with_ref.reference_chosen = ref.sum.detach().slice(0, 0, B);
  with_ref.reference_rejected = ref.sum.detach().slice(0, B);
  auto f = forward_pair(model, with_ref, o);
  if (o.keep_token_inputs) {
    f.policy.tokens->reference_chosen = ref.tokens.logprobs.detach().slice(0, 0, B);
    f.policy.tokens->reference_rejected = ref.tokens.logprobs.detach().slice(0, B);
  }
  return f;
}

}  // namespace hafrm
