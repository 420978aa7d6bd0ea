// vocab_parallel_linear.hpp: the fused LM-head log-probs (hafrm::linear_token_logprobs) with the
// head's weight split over the vocabulary across ranks, and the hook that runs forward_pair on
// such a model.
//
//   // hidden [B, T, H] (replicated), weight_shard = W[vocab_begin:vocab_end] [V_shard, H]
//   auto lp = hafrm::distributed::linear_token_logprobs(hidden, weight_shard, labels, vp);
//
//   hafrm::PairForwardOptions po;
//   po.model_logprobs = hafrm::distributed::vocab_parallel_logprobs(vp);
//   auto f = hafrm::forward_pair(model, batch, po);  // model returns its shard (see below)
//   po.model_token_logprobs = hafrm::distributed::vocab_parallel_token_logprobs(vp);
//   auto fp = hafrm::forward_pair_packed(model, packed_batch, po);  // packed batches
//
// Each rank forms the logits of its shard in tiles (as the single-process fused linear path) and
// reduces them to per-row statistics; the two all-reduces of vocab_parallel.hpp merge them. The
// backward recomputes the tiles with the merged LSE: the weight shard's gradient is local, and the
// hidden state's is this rank's partial sum, which HiddenGrad::kSumOverRanks (the default)
// all-reduces, so every rank holds the unsplit gradient of hidden (Megatron's identity-forward /
// all-reduce-backward operator on the head's input). HiddenGrad::kLocal leaves the partial sum for
// a caller whose model already applies that operator.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "hafrm/model/pair_forward.hpp"
#include "hafrm/torch/linear_logprobs.hpp"
#include "vocab_parallel.hpp"

namespace hafrm::distributed {

// What the gradient of the (replicated) hidden state holds after the backward.
enum class HiddenGrad {
  kSumOverRanks,  // all-reduced: the unsplit gradient, on every rank
  kLocal,         // this shard's contribution only; the caller sums over the ranks
};

namespace detail {

// Flat in: hidden [N, H], weight_shard [V_shard, H], labels [N] int64 (global ids). Outputs as
// hafrm::detail::FusedLinearLogProbsFunction.
struct VocabParallelLinearFunction : torch::autograd::Function<VocabParallelLinearFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& hidden,
                                                const torch::Tensor& weight,
                                                const torch::Tensor& labels,
                                                const VocabParallel* vp, TokenLogProbOptions o) {
    const int64_t N = hidden.size(0);
    // Rows whose target is on another rank get -1: no column of this shard, target logit 0.
    auto y = shard_labels(labels, *vp, o.ignore_index, /*other=*/-1);
    auto ko = o;
    ko.ignore_index = kNoIgnore;
    ko.check_labels = false;
    auto st = hafrm::detail::linear_row_stats(hidden, weight, y, ko);
    ShardStats s;
    s.lse = st.lse, s.target = st.target;
    s.entropy = st.entropy, s.log_sum_p2 = st.log_sum_p2;
    if (o.return_mean_logit)
      s.mean_part = st.mean_logit * (static_cast<double>(vp->shard_size()) / vp->vocab_size());
    // On the transformed logits, as the single-process linear path decides it.
    if (o.return_is_argmax) s.max_key = st.zmax, s.target_key = st.target;
    auto g = merge_shards(vp->comm(), s);
    const int64_t M = st.idx.size(0);
    auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(hidden.device());
    auto scatter = [&](const torch::Tensor& v) {
      if (!v.defined()) return torch::Tensor();
      auto full = torch::zeros({N}, f32.dtype(v.scalar_type()));
      if (M > 0) full.index_copy_(0, st.idx, v);
      return full;
    };
    auto lse_full = scatter(g.lse), ent_full = scatter(g.entropy);
    if (hidden.requires_grad() || weight.requires_grad()) {
      ctx->save_for_backward({hidden, weight, y, lse_full, ent_full});
      hafrm::detail::save_backward_options(ctx, o);
      hafrm::detail::save_tiles(ctx, st.tiles);
    }
    return hafrm::detail::finish_outputs(
        ctx, {scatter(g.logprob), ent_full, o.return_lse ? lse_full : torch::Tensor(),
              scatter(g.log_sum_p2), scatter(g.mean_logit), scatter(g.is_argmax)});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto o = hafrm::detail::load_backward_options(ctx);
    // kNoIgnore: the saved labels were remapped (-1 = target on another rank) before saving.
    auto [gh, gw] = hafrm::detail::linear_backward_tiles(
        saved[0], saved[1], saved[2], kNoIgnore, saved[3], saved[4], grads[0],
        grads.size() > 1 ? grads[1] : torch::Tensor(), o, hafrm::detail::load_tiles(ctx),
        ctx->needs_input_grad(0), ctx->needs_input_grad(1));
    return {gh, gw, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace detail

// hidden [..., H] (the LM head's input, the same on every rank), weight_shard [V_shard, H] (rows
// vocab_begin..vocab_end of the head), labels [...] (global ids, the same on every rank). Same
// options and outputs as hafrm::compute_linear_token_logprobs on the unsplit weight, on every
// rank. Collective (forward; and the backward with HiddenGrad::kSumOverRanks).
inline TokenLogProbs compute_linear_token_logprobs(
    const torch::Tensor& hidden, const torch::Tensor& weight_shard, const torch::Tensor& labels,
    const VocabParallel& vp, const TokenLogProbOptions& o = {},
    HiddenGrad hidden_grad = HiddenGrad::kSumOverRanks) {
  constexpr const char* fn = "distributed::linear_token_logprobs";
  namespace hd = hafrm::detail;
  hd::check_floating(hidden, fn, "hidden");
  hd::check_floating(weight_shard, fn, "weight_shard");
  hd::check_integral(labels, fn, "labels");
  hd::check_dim(weight_shard, 2, fn, "weight_shard");
  HAFRM_CHECK_ARG(hidden.dim() >= 1 && hidden.size(-1) == weight_shard.size(1), fn, "hidden",
                  "expected shape [..., H] with H = weight_shard.size(1) = ", weight_shard.size(1),
                  ", got ", hidden.sizes());
  HAFRM_CHECK_ARG(weight_shard.size(1) >= 1, fn, "weight_shard",
                  "expected a hidden size H >= 1, got shape ", weight_shard.sizes());
  HAFRM_CHECK_ARG(labels.sizes() == hidden.sizes().slice(0, hidden.dim() - 1), fn, "labels",
                  "expected shape ", hidden.sizes().slice(0, hidden.dim() - 1), ", got ",
                  labels.sizes());
  hd::check_same_device(hidden, weight_shard, fn, "hidden", "weight_shard");
  hd::check_same_device(hidden, labels, fn, "hidden", "labels");
  detail::check_vocab_parallel(vp, weight_shard.size(0), labels, o, fn, "weight_shard");
  auto h = hidden_grad == HiddenGrad::kSumOverRanks ? reduce_grad_over_shards(hidden, vp) : hidden;
  auto h2 = h.reshape({-1, hidden.size(-1)});
  auto y = labels.reshape({-1}).to(torch::kLong).contiguous();
  auto outs = detail::VocabParallelLinearFunction::apply(h2, weight_shard, y, &vp, o);
  return hd::unpack_outputs(outs, o, labels.sizes(), labels != o.ignore_index);
}

inline torch::Tensor linear_token_logprobs(const torch::Tensor& hidden,
                                           const torch::Tensor& weight_shard,
                                           const torch::Tensor& labels, const VocabParallel& vp,
                                           const TokenLogProbOptions& o = {},
                                           HiddenGrad hidden_grad = HiddenGrad::kSumOverRanks) {
  return compute_linear_token_logprobs(hidden, weight_shard, labels, vp, o, hidden_grad).logprobs;
}

// PairForwardOptions::model_logprobs for a model whose LM head is split over the vocabulary:
// its ModelOutputs hold this rank's logits shard [B, T, V_shard] (and the model applies
// reduce_grad_over_shards to the head's input), or lm_hidden [B, T, H] with lm_head_weight = the
// weight shard [V_shard, H] (fused linear path; the hidden gradient is summed per `hidden_grad`).
// Captures vp (a shared handle on its group).
inline ModelLogProbsFn vocab_parallel_logprobs(VocabParallel vp,
                                               HiddenGrad hidden_grad = HiddenGrad::kSumOverRanks) {
  return [vp = std::move(vp), hidden_grad](const ModelOutputs& out, const torch::Tensor& labels,
                                           const TokenLogProbOptions& o) {
    using torch::indexing::None;
    using torch::indexing::Slice;
    if (out.logits.defined()) return causal_sequence_logprobs(out.logits, labels, vp, o);
    HAFRM_CHECK_ARG(out.lm_hidden.defined() && out.lm_head_weight.defined(), "forward_pair",
                    "model outputs",
                    "must hold the logits shard, or lm_hidden and the lm_head_weight shard");
    auto h = out.lm_hidden.index({Slice(), Slice(0, -1)});
    auto y = labels.index({Slice(), Slice(1, None)});
    return reduce_sequences(
        compute_linear_token_logprobs(h, out.lm_head_weight, y, vp, o, hidden_grad));
  };
}

// PairForwardOptions::model_token_logprobs, the packed path's counterpart of
// vocab_parallel_logprobs: rows as the packed path hands them, no causal shift here. rows.logits is
// this rank's logits shard [N, V_shard] (the model applies reduce_grad_over_shards to the head's
// input), or rows.lm_hidden [N, H] with rows.lm_head_weight the weight shard [V_shard, H] (the
// hidden gradient summed per `hidden_grad`). Captures vp (a shared handle on its group).
inline ModelTokenLogProbsFn vocab_parallel_token_logprobs(
    VocabParallel vp, HiddenGrad hidden_grad = HiddenGrad::kSumOverRanks) {
  return [vp = std::move(vp), hidden_grad](const ModelOutputs& rows, const torch::Tensor& labels,
                                           const TokenLogProbOptions& o) {
    if (rows.logits.defined())
      return distributed::compute_token_logprobs(rows.logits, labels, vp, o);
    HAFRM_CHECK_ARG(rows.lm_hidden.defined() && rows.lm_head_weight.defined(),
                    "distributed::vocab_parallel_token_logprobs", "rows",
                    "must hold the logits shard, or lm_hidden and the lm_head_weight shard");
    return distributed::compute_linear_token_logprobs(rows.lm_hidden, rows.lm_head_weight, labels,
                                                      vp, o, hidden_grad);
  };
}

}  // namespace hafrm::distributed
