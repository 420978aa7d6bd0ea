// vocab_parallel.hpp: per-token log-probs when the logits are split over the vocabulary across
// ranks (a Megatron-style column-parallel LM head): rank r holds logits[..., vocab_begin_r :
// vocab_end_r) and the same labels as every other rank.
//
//   auto vp = hafrm::distributed::VocabParallel::create(comm, v0, v1);  // collective, once
//   auto lp = hafrm::distributed::token_logprobs(logits_shard, labels, vp);
//   auto s = hafrm::distributed::sequence_logprobs(logits_shard, labels, vp, opts);
//
// Each rank reduces its shard with the fused kernel to per-row statistics (LSE of the shard, and
// its entropy / log sum p^2 / mean when asked); the target logit comes from the one rank that owns
// it. Two all-reduces of [k, rows] float32 merge them: MAX of the shard LSEs (and of the argmax
// key), then SUM of exp(lse_r - M), the target logit and the extras' terms. The results equal the
// unsplit computation up to float32 rounding. The backward is local (no communication):
// dlogits_shard = g (onehot_if_owned - exp(z - LSE)) [+ the entropy term], with the global LSE
// and entropy, written by the fused backward kernel.
//
// Gradients of what feeds the logits: each rank's backward only covers its own shard's path, so a
// replicated LM-head input (the trunk's hidden state) needs its gradient summed over the ranks;
// apply reduce_grad_over_shards (identity forward, all-reduce backward: Megatron's "copy to the
// tensor-parallel region") to it before the head. The fused linear path
// (vocab_parallel_linear.hpp) does that itself by default.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hafrm/torch/fused_logprobs.hpp"
#include "hafrm/torch/logprob_checks.hpp"
#include "hafrm/torch/reference_logprobs.hpp"
#include "hafrm/torch/token_logprobs.hpp"
#include "process_group.hpp"

namespace hafrm::distributed {

// This rank's slice [vocab_begin, vocab_end) of a vocabulary of vocab_size() entries split over
// the ranks of one process group. Build it with create(), which checks the ranges once.
class VocabParallel {
 public:
  // Collective: every rank of `comm` calls it with its own range (one all-reduce). Every rank
  // throws the same error (no rank is left waiting) unless the ranges are non-empty, disjoint and
  // together cover [0, V) for some V; any rank order is accepted.
  static VocabParallel create(std::shared_ptr<Communicator> comm, int64_t vocab_begin,
                              int64_t vocab_end) {
    constexpr const char* fn = "distributed::VocabParallel::create";
    HAFRM_CHECK_ARG(comm != nullptr, fn, "comm", "must be a process group, got null");
    const int W = comm->world_size();
    // Row q holds rank q's range; the others add zeros.
    std::vector<int64_t> mine(static_cast<std::size_t>(2 * W), 0);
    mine[static_cast<std::size_t>(2 * comm->rank())] = vocab_begin;
    mine[static_cast<std::size_t>(2 * comm->rank() + 1)] = vocab_end;
    auto t = torch::tensor(mine, torch::kLong).to(comm->device());
    comm->allreduce_(t);
    t = t.cpu();
    const int64_t* r = t.data_ptr<int64_t>();
    auto range_of = [&](int64_t q) {
      return "rank " + std::to_string(q) + " [" + std::to_string(r[2 * q]) + ", " +
             std::to_string(r[2 * q + 1]) + ")";
    };
    std::vector<std::pair<int64_t, int64_t>> order;  // (begin, rank)
    for (int64_t q = 0; q < W; ++q) {
      HAFRM_CHECK_ARG(r[2 * q] >= 0 && r[2 * q + 1] > r[2 * q], fn,
                      q == comm->rank() ? "vocab_end" : "vocab_begin/vocab_end of another rank",
                      "expected 0 <= vocab_begin < vocab_end on every rank, got ", range_of(q));
      order.emplace_back(r[2 * q], q);
    }
    std::sort(order.begin(), order.end());
    int64_t covered = 0;  // [0, covered) is owned by the ranks seen so far
    for (const auto& [b, q] : order) {
      HAFRM_CHECK_ARG(b <= covered, fn, "vocab_begin",
                      "the ranks' ranges must cover [0, V) without gaps: no rank owns [", covered,
                      ", ", b, ") (the next range is ", range_of(q), ")");
      HAFRM_CHECK_ARG(b >= covered, fn, "vocab_begin",
                      "the ranks' ranges must not overlap: ", range_of(q),
                      " overlaps one ending at ", covered);
      covered = r[2 * q + 1];
    }
    VocabParallel vp;
    vp.comm_ = std::move(comm);
    vp.begin_ = vocab_begin, vp.end_ = vocab_end, vp.size_ = covered;
    return vp;
  }

  int64_t vocab_begin() const { return begin_; }
  int64_t vocab_end() const { return end_; }
  int64_t shard_size() const { return end_ - begin_; }
  int64_t vocab_size() const { return size_; }  // V over all ranks
  Communicator& comm() const { return *comm_; }
  const std::shared_ptr<Communicator>& comm_ptr() const { return comm_; }

 private:
  VocabParallel() = default;
  std::shared_ptr<Communicator> comm_;
  int64_t begin_ = 0, end_ = 0, size_ = 0;
};

namespace detail {

inline constexpr int64_t kNoIgnore = std::numeric_limits<int64_t>::min();

// Per-row statistics of one shard (float32 [rows], on the logits' device; optional ones
// undefined). Rows nobody scores may hold anything finite; the caller masks them.
struct ShardStats {
  torch::Tensor lse;         // log-sum-exp of the shard's z
  torch::Tensor target;      // z at the label where this shard owns it, else 0
  torch::Tensor entropy;     // entropy of the shard's own softmax
  torch::Tensor log_sum_p2;  // log sum p^2 under the shard's own softmax
  torch::Tensor mean_part;   // sum of the shard's z / V (all ranks' parts add up to the mean)
  // is_argmax: a key ordered like z (max over the shard; the target's where owned, else 0).
  torch::Tensor max_key, target_key;
};

struct MergedStats {
  torch::Tensor lse, logprob, entropy, log_sum_p2, mean_logit, is_argmax;
};

inline torch::Tensor allreduce_rows(Communicator& comm, const std::vector<torch::Tensor>& rows,
                                    c10d::ReduceOp op) {
  auto t = torch::stack(rows).to(comm.device()).contiguous();
  // No scored row anywhere (the labels are the same on every rank): nothing to exchange.
  if (t.numel() == 0) return t.to(rows[0].device());
  comm.allreduce_(t, op);
  return t.to(rows[0].device());
}

// The two all-reduces that turn shard statistics into the full-vocabulary ones. With
// M = max_r lse_r and S = sum_r exp(lse_r - M): LSE = M + log S; E[z] = sum_r w_r (lse_r - H_r)
// with w_r = exp(lse_r - M) / S, so H = LSE - E[z]; sum p^2 = sum_r w_r^2 sum_{shard r} p_r^2.
inline MergedStats merge_shards(Communicator& comm, const ShardStats& s) {
  std::vector<torch::Tensor> mx{s.lse};
  if (s.max_key.defined()) mx.push_back(s.max_key);
  auto m = allreduce_rows(comm, mx, c10d::ReduceOp::MAX);
  auto M = m[0];
  auto e = torch::exp(s.lse - M);
  std::vector<torch::Tensor> sm{e, s.target};
  const int64_t i_h = s.entropy.defined() ? static_cast<int64_t>(sm.size()) : -1;
  if (i_h >= 0) sm.push_back(e * (s.lse - s.entropy));
  const int64_t i_p2 = s.log_sum_p2.defined() ? static_cast<int64_t>(sm.size()) : -1;
  if (i_p2 >= 0) sm.push_back(torch::exp(2 * (s.lse - M) + s.log_sum_p2));
  const int64_t i_mean = s.mean_part.defined() ? static_cast<int64_t>(sm.size()) : -1;
  if (i_mean >= 0) sm.push_back(s.mean_part);
  const int64_t i_key = s.target_key.defined() ? static_cast<int64_t>(sm.size()) : -1;
  if (i_key >= 0) sm.push_back(s.target_key);
  auto g = allreduce_rows(comm, sm, c10d::ReduceOp::SUM);
  auto logS = torch::log(g[0]);
  MergedStats r;
  r.lse = M + logS;
  r.logprob = g[1] - r.lse;
  if (i_h >= 0) r.entropy = r.lse - g[i_h] / g[0];
  if (i_p2 >= 0) r.log_sum_p2 = torch::log(g[i_p2]) - 2 * logS;
  if (i_mean >= 0) r.mean_logit = g[i_mean];
  if (i_key >= 0) r.is_argmax = g[i_key] >= m[1];
  return r;
}

// Checks shared by every vocabulary-parallel entry point; labels are checked against the whole
// vocabulary (check_label_range: on a GPU a device-side assert, no host sync unless
// options.check_labels_sync asks for one).
inline void check_vocab_parallel(const VocabParallel& vp, int64_t shard_columns,
                                 const torch::Tensor& labels, const TokenLogProbOptions& o,
                                 std::string_view fn, std::string_view shard_arg) {
  HAFRM_CHECK_ARG(
      shard_columns == vp.shard_size(), fn, shard_arg,
      "expected this rank's vocabulary shard of vocab_end - vocab_begin = ", vp.vocab_end(), " - ",
      vp.vocab_begin(), " = ", vp.shard_size(), " entries, got ", shard_columns);
  HAFRM_CHECK_ARG(o.backend != LogProbBackend::kReference, fn, "options.backend",
                  "vocabulary-parallel log-probs run on the fused kernels; kReference is not "
                  "supported (compare against the unsplit call instead)");
  hafrm::detail::check_options(o, fn);
  if (o.check_labels) hafrm::detail::check_label_range(labels, vp.vocab_size(), o, fn);
}

// Labels as the shard's kernels see them: ignored rows -> kNoIgnore (skipped), rows whose target
// is on this rank -> the column in the shard, other rows -> `other`.
inline torch::Tensor shard_labels(const torch::Tensor& y, const VocabParallel& vp,
                                  int64_t ignore_index, int64_t other) {
  auto owned = (y >= vp.vocab_begin()) & (y < vp.vocab_end());
  // Clamped first, so that no label (INT64_MIN included) overflows the subtraction; the clamp
  // changes only rows that `owned` sends to `other`.
  auto column = y.clamp(vp.vocab_begin(), vp.vocab_end() - 1) - vp.vocab_begin();
  auto local = torch::where(owned, column, torch::full({}, other, y.options()));
  return torch::where(y == ignore_index, torch::full({}, kNoIgnore, y.options()), local);
}

// logits [..., V_shard], labels flat [rows] int64 (global ids). Outputs as
// FusedTokenLogProbsFunction (logprob and entropy differentiable).
struct VocabParallelLogProbsFunction : torch::autograd::Function<VocabParallelLogProbsFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& logits,
                                                const torch::Tensor& labels_flat,
                                                const VocabParallel* vp, TokenLogProbOptions o) {
    auto mask = labels_flat != o.ignore_index;
    auto y_fwd = shard_labels(labels_flat, *vp, o.ignore_index, /*other=*/-1);
    auto owned = y_fwd >= 0;
    auto col = y_fwd.clamp_min(0);
    // The shard's LSE and extras: the row kernel with a dummy in-range label (the log-prob it
    // writes is not used); ignored rows are skipped by the kernel and hold 0.
    auto ko = o;
    ko.ignore_index = kNoIgnore;
    ko.check_labels = false;
    ko.return_is_argmax = false;
    auto st = hafrm::detail::fused_forward_any(
        logits, torch::where(y_fwd == kNoIgnore, y_fwd, torch::zeros_like(y_fwd)), ko, true);
    ShardStats s;
    s.lse = st.lse;
    s.entropy = st.entropy;
    s.log_sum_p2 = st.log_sum_p2;
    const double frac = static_cast<double>(vp->shard_size()) / vp->vocab_size();
    if (o.return_mean_logit) s.mean_part = st.mean_logit * frac;
    // Gathered on the logits' own shape: no copy of a strided view.
    auto lead = logits.sizes().slice(0, logits.dim() - 1);
    auto raw_t = logits.gather(-1, col.view(lead).unsqueeze(-1)).reshape({-1}).to(torch::kFloat);
    auto zero = torch::zeros({}, raw_t.options());
    s.target = torch::where(owned, hafrm::detail::apply_logit_transform(raw_t, o), zero);
    if (o.return_is_argmax) {
      // Decided on the raw logits, as the unsplit kernel does (the transform is monotone; a
      // negative scale reverses the order): key = sign(scale) * x.
      const double sg = o.logit_scale < 0 ? -1.0 : 1.0;
      auto ext = sg > 0 ? logits.amax(-1) : logits.amin(-1);
      s.max_key = ext.reshape({-1}).to(torch::kFloat) * sg;
      s.target_key = torch::where(owned, raw_t * sg, zero);
    }
    auto g = merge_shards(vp->comm(), s);
    auto keep = [&](const torch::Tensor& t) {
      return t.defined() ? torch::where(mask, t, torch::zeros({}, t.options())) : t;
    };
    if (logits.requires_grad()) {
      ctx->save_for_backward(
          {logits, y_fwd, g.lse, o.return_entropy ? g.entropy : torch::Tensor()});
      hafrm::detail::save_backward_options(ctx, o);
    }
    return hafrm::detail::finish_outputs(
        ctx, {keep(g.logprob), keep(g.entropy), o.return_lse ? keep(g.lse) : torch::Tensor(),
              keep(g.log_sum_p2), keep(g.mean_logit), keep(g.is_argmax)});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto o = hafrm::detail::load_backward_options(ctx);
    o.ignore_index = kNoIgnore;
    // Labels -1 (target on another rank) add no one-hot term; kNoIgnore rows get a zero gradient.
    torch::Tensor g_ent =
        grads.size() > 1 && saved[3].defined() && saved[3].numel() > 0 ? grads[1] : torch::Tensor();
    auto g = hafrm::detail::fused_backward_any(saved[0], saved[1], grads[0], g_ent, saved[2],
                                               saved[3], o);
    return {g, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace detail

// x unchanged; its gradient summed over the ranks of vp's group in the backward. Apply it to the
// LM head's (replicated) input when each rank computes only its logits shard: every rank then
// holds the full gradient of the trunk, as one process would. The backward is a collective: every
// rank must run it. A hook on a view of x, holding the group alive until it has run.
inline torch::Tensor reduce_grad_over_shards(const torch::Tensor& x, const VocabParallel& vp) {
  if (!x.requires_grad()) return x;
  auto y = x.view_as(x);
  y.register_hook([comm = vp.comm_ptr()](const torch::Tensor& g) {
    auto t = g.to(comm->device()).contiguous().clone();
    comm->allreduce_(t);
    return t.to(g.device());
  });
  return y;
}

// All per-token outputs for this rank's logits shard [..., vocab_end - vocab_begin] and the
// (replicated) labels [...]; the same values on every rank, equal to hafrm::compute_token_logprobs
// on the unsplit logits. Collective: every rank calls it with the same labels and options; the
// backward is local.
inline TokenLogProbs compute_token_logprobs(const torch::Tensor& logits_shard,
                                            const torch::Tensor& labels, const VocabParallel& vp,
                                            const TokenLogProbOptions& o = {}) {
  constexpr const char* fn = "distributed::token_logprobs";
  auto lo = o;
  lo.check_labels = false;  // checked against the whole vocabulary below
  hafrm::detail::check_logits_labels(logits_shard, labels, lo, fn, false);
  detail::check_vocab_parallel(vp, logits_shard.size(-1), labels, o, fn, "logits_shard");
  auto shape = labels.sizes().vec();
  auto flat = labels.reshape({-1}).to(torch::kLong).contiguous();
  auto outs = detail::VocabParallelLogProbsFunction::apply(logits_shard, flat, &vp, o);
  return hafrm::detail::unpack_outputs(outs, o, shape, labels != o.ignore_index);
}

inline torch::Tensor token_logprobs(const torch::Tensor& logits_shard, const torch::Tensor& labels,
                                    const VocabParallel& vp, const TokenLogProbOptions& o = {}) {
  return compute_token_logprobs(logits_shard, labels, vp, o).logprobs;
}

// logits_shard [B, T, V_shard] (already shifted), labels [B, T].
inline SequenceLogProbs sequence_logprobs(const torch::Tensor& logits_shard,
                                          const torch::Tensor& labels, const VocabParallel& vp,
                                          const TokenLogProbOptions& o = {}) {
  HAFRM_CHECK_ARG(labels.dim() >= 1, "distributed::sequence_logprobs", "labels",
                  "expected shape [B, T] (at least one dimension), got a scalar");
  return reduce_sequences(compute_token_logprobs(logits_shard, labels, vp, o));
}

// Unshifted logits shard [B, T, V_shard] and labels aligned with the input ids, as
// hafrm::causal_sequence_logprobs: the labels are shifted, so the shard's gradient is written
// full-size by the kernel.
inline SequenceLogProbs causal_sequence_logprobs(const torch::Tensor& logits_shard,
                                                 const torch::Tensor& labels,
                                                 const VocabParallel& vp,
                                                 const TokenLogProbOptions& o = {}) {
  constexpr const char* fn = "distributed::causal_sequence_logprobs";
  hafrm::detail::check_causal(logits_shard, labels, fn);
  auto shifted = hafrm::detail::shift_labels_left(labels, o.ignore_index);
  const int64_t T = logits_shard.size(1);
  return reduce_sequences(
      hafrm::detail::slice_positions(compute_token_logprobs(logits_shard, shifted, vp, o), T));
}

}  // namespace hafrm::distributed
