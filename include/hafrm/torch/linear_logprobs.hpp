// hafrm/torch/linear_logprobs.hpp: the LM-head matmul fused with the per-token log-prob, so the
// [N, V] logits are never stored whole. Only rows whose label is not ignore_index are projected.
//
// example-begin linear_token_logprobs Logits
//   // hidden [B, T, H] (LM-head input), weight [V, H], labels [B, T]
//   torch::Tensor lp = hafrm::linear_token_logprobs(hidden, weight, labels);
// example-end
//
// The logits are formed in 2-D tiles (a chunk of Ct scored tokens x a block of Vb vocabulary
// rows, Cut Cross-Entropy style) with LibTorch's BLAS / cuBLAS, so every matmul keeps large
// dimensions while the tile stays small. Forward: the fused row kernel reduces each tile to
// per-row statistics (LSE, and entropy / sum p^2 / mean when asked), merged across vocabulary
// blocks in float32; only O(N) floats survive. Backward recomputes each tile, overwrites it with
// dL/dz in place using the saved global LSE, and accumulates dL/dh += dz W_b and
// dL/dW_b += dz^T h_c (float32 accumulation for bfloat16/float16 weights). With one token chunk
// (N <= Ct) each block of dL/dW is written exactly once. Extra memory: O(Ct x Vb) + O(N).
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "hafrm/torch/fused_logprobs.hpp"
#include "hafrm/torch/logprob_checks.hpp"
#include "hafrm/torch/logprob_options.hpp"
#include "hafrm/torch/reference_logprobs.hpp"
#include "hafrm/torch/token_logprobs.hpp"

namespace hafrm {

namespace detail {

struct LinearTiles {
  int64_t tokens, vocab;
};

inline LinearTiles linear_tiles(const TokenLogProbOptions& o, int64_t M, int64_t V, bool cuda) {
  LinearTiles t;
  t.tokens = o.linear_chunk_tokens > 0 ? o.linear_chunk_tokens
                                       : std::clamp<int64_t>(M, 1, cuda ? 16384 : 4096);
  const int64_t budget = cuda ? (int64_t{256} << 20) : (int64_t{16} << 20);
  // At least 256 vocabulary rows per block (keeps the matmuls wide), at most V (one block). Not
  // std::clamp: its lower bound exceeds its upper one when V < 256, which is undefined behaviour.
  const int64_t fit = budget / (4 * std::max<int64_t>(t.tokens, 1)) / 256 * 256;
  t.vocab = o.linear_chunk_vocab > 0
                ? o.linear_chunk_vocab
                : std::min(std::max<int64_t>(fit, 256), std::max<int64_t>(V, 1));
  return t;
}

// Labels of one vocabulary block: the label's column inside the block, or -1 (never a column).
// The offset is taken after the selection, so no label (INT64_MIN included) overflows.
inline torch::Tensor block_labels(const torch::Tensor& y, int64_t v0, int64_t v1) {
  auto inside = (y >= v0) & (y < v1);
  return torch::where(inside, y, torch::full({}, v0 - 1, y.options())) - v0;
}

// The tile sizes a linear Function's backward recomputes with (those of its forward).
inline void save_tiles(torch::autograd::AutogradContext* ctx, const LinearTiles& t) {
  ctx->saved_data["chunk_tokens"] = t.tokens;
  ctx->saved_data["chunk_vocab"] = t.vocab;
}
inline LinearTiles load_tiles(torch::autograd::AutogradContext* ctx) {
  return {ctx->saved_data["chunk_tokens"].toInt(), ctx->saved_data["chunk_vocab"].toInt()};
}

// Per-row statistics of z = transform(hidden W^T) over the scored rows (label != ignore_index),
// formed tile by tile and merged across vocabulary blocks in float32 ([M] each; an output not
// asked for in `o` stays undefined). Shared by the fused linear path and the vocabulary-parallel
// one (hafrm/distributed/vocab_parallel_linear.hpp), which passes labels outside [0, V) for rows
// whose target lives on another rank: their `target` is 0.
struct LinearRowStats {
  torch::Tensor idx;  // [M] int64: the scored rows
  torch::Tensor lse, entropy, log_sum_p2, mean_logit;
  torch::Tensor zmax;    // max of the transformed z (only with return_is_argmax)
  torch::Tensor target;  // transformed z at the label (0 when the label is outside [0, V))
  LinearTiles tiles;
};

inline LinearRowStats linear_row_stats(const torch::Tensor& hidden, const torch::Tensor& weight,
                                       const torch::Tensor& labels, const TokenLogProbOptions& o) {
  static constexpr int64_t kNoIgnore = std::numeric_limits<int64_t>::min();
  const int64_t V = weight.size(0);
  // Tiles are formed in the wider of the two dtypes (mixed float32 hidden / bfloat16 head):
  // each block is converted as it is used, never the whole [V, H] weight.
  const auto ct = torch::promote_types(hidden.scalar_type(), weight.scalar_type());
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(hidden.device());
  LinearRowStats r;
  r.idx = (labels != o.ignore_index).nonzero().squeeze(1);
  const int64_t M = r.idx.size(0);
  r.tiles = linear_tiles(o, M, V, hidden.is_cuda());
  const auto& tiles = r.tiles;
  const bool want_h = o.return_entropy, want_p2 = o.return_log_sum_p2;
  const bool want_mean = o.return_mean_logit, want_max = o.return_is_argmax;
  // Per-tile statistics: the row kernel on a tile, labels unused (0), nothing ignored.
  auto tile_opts = o;
  tile_opts.ignore_index = kNoIgnore;
  tile_opts.check_labels = false;
  tile_opts.return_lse = true;

  // Merged per scored row (float32): lse, entropy, log sum p^2, mean z, max z, target z.
  r.lse = torch::empty({M}, f32), r.target = torch::empty({M}, f32);
  if (want_h) r.entropy = torch::empty({M}, f32);
  if (want_p2) r.log_sum_p2 = torch::empty({M}, f32);
  if (want_mean) r.mean_logit = torch::empty({M}, f32);
  if (want_max) r.zmax = torch::empty({M}, f32);
  torch::NoGradGuard ng;
  for (int64_t s = 0; s < M; s += tiles.tokens) {
    const int64_t e = std::min(M, s + tiles.tokens);
    auto ic = r.idx.slice(0, s, e);
    auto hc = hidden.index_select(0, ic).to(ct);  // rows gathered per chunk: no [M, H] copy
    auto yc = labels.index_select(0, ic);
    auto dummy = torch::zeros({e - s}, yc.options());
    std::vector<torch::Tensor> lses, ents, p2s, means, maxs;
    auto zt_c = torch::zeros({e - s}, f32);
    for (int64_t v0 = 0; v0 < V; v0 += tiles.vocab) {
      const int64_t v1 = std::min(V, v0 + tiles.vocab);
      auto z = torch::mm(hc, weight.slice(0, v0, v1).to(ct).t());
      auto st = fused_forward_any(z, dummy, tile_opts, true);
      lses.push_back(st.lse);
      if (want_h) ents.push_back(st.entropy);
      if (want_p2) p2s.push_back(st.log_sum_p2);
      if (want_mean) means.push_back(st.mean_logit * (static_cast<double>(v1 - v0) / V));
      // On the transformed logits: a negative logit_scale reverses the order.
      if (want_max)
        maxs.push_back(std::get<0>(apply_logit_transform(z.to(torch::kFloat), o).max(1)));
      auto yb = block_labels(yc, v0, v1);
      auto in = yb >= 0;
      zt_c +=
          torch::where(in, z.gather(1, yb.clamp_min(0).unsqueeze(1)).squeeze(1).to(torch::kFloat),
                       torch::zeros({}, f32));
    }
    // Merge vocabulary blocks: block b holds mass w_b = exp(lse_b - lse) of the row softmax.
    auto L = torch::stack(lses);  // [blocks, rows]
    auto lse_c = torch::logsumexp(L, 0);
    auto w = torch::exp(L - lse_c.unsqueeze(0));
    r.lse.slice(0, s, e).copy_(lse_c);
    if (want_h) {
      // E[z] = sum_b w_b (lse_b - H_b); an all -inf block (w_b = 0) contributes nothing.
      auto ez = (w * torch::nan_to_num(L - torch::stack(ents), 0.0, 0.0, 0.0)).sum(0);
      r.entropy.slice(0, s, e).copy_(lse_c - ez);
    }
    if (want_p2) {
      const double ninf = -std::numeric_limits<double>::infinity();
      auto p2b = torch::nan_to_num(torch::stack(p2s), ninf);  // an all -inf block has no mass
      r.log_sum_p2.slice(0, s, e).copy_(torch::logsumexp(2 * torch::log(w) + p2b, 0));
    }
    if (want_mean) r.mean_logit.slice(0, s, e).copy_(torch::stack(means).sum(0));
    if (want_max) r.zmax.slice(0, s, e).copy_(std::get<0>(torch::stack(maxs).max(0)));
    r.target.slice(0, s, e).copy_(zt_c);
  }
  // The target logit was gathered raw: apply the same transform the kernel applied to z
  // (transform(0) = 0, so a label outside the weight's rows stays 0).
  r.target = apply_logit_transform(r.target, o);
  return r;
}

// The one contract of every log-prob path for a scored label outside [0, V) (reachable only
// with check_labels = false): every statistic of its row NaN (lse included) and is_argmax false.
// The backward then recomputes p = exp(z - NaN) for that row: its dL/dz row is NaN, so its
// hidden gradient is NaN and, through dz^T h, the weight's gradient too (as autograd gives for
// the token path on logits = hidden W^T); the other rows' hidden gradients are untouched. `st`
// as linear_row_stats returned it for `labels` (flat [N], global vocabulary ids).
inline void nan_for_bad_labels(LinearRowStats& st, const torch::Tensor& labels, int64_t V) {
  auto y = labels.index_select(0, st.idx);
  auto bad = (y < 0) | (y >= V);
  auto nan = torch::full({}, std::numeric_limits<float>::quiet_NaN(), st.lse.options());
  for (torch::Tensor* t : {&st.lse, &st.target, &st.entropy, &st.log_sum_p2, &st.mean_logit})
    if (t->defined()) *t = torch::where(bad, nan.to(t->scalar_type()), *t);
}

// dL/dhidden and dL/dweight of the fused linear path (each undefined unless asked for), from the
// gradients of the per-row log-prob (and entropy) and the saved per-row statistics. Rows whose
// label equals `ignore_index` get no gradient; a label outside [0, V) adds no one-hot term (the
// vocabulary-parallel path: the target is on another rank). lse_full, ent_full, g_lp, g_h: [N].
// `o` carries the logit transform; tiles as in the forward.
inline std::pair<torch::Tensor, torch::Tensor> linear_backward_tiles(
    const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels,
    int64_t ignore, const torch::Tensor& lse_full, const torch::Tensor& ent_full,
    const torch::Tensor& g_lp_full, const torch::Tensor& g_h_full, const TokenLogProbOptions& o_in,
    LinearTiles tiles, bool need_h, bool need_w) {
  static constexpr int64_t kNoIgnore = std::numeric_limits<int64_t>::min();
  auto o = o_in;
  o.ignore_index = kNoIgnore;
  o.inplace_backward = true;  // the recomputed tile is ours: overwrite it with dL/dz
  const int64_t V = weight.size(0), Ct = tiles.tokens, Vb = tiles.vocab;
  auto idx = (labels != ignore).nonzero().squeeze(1);
  const int64_t M = idx.size(0);
  auto pick = [&](const torch::Tensor& t) {
    return t.defined() ? t.index_select(0, idx).to(torch::kFloat).contiguous() : torch::Tensor();
  };
  auto g_lp = pick(g_lp_full);
  auto g_h = g_h_full.defined() && ent_full.defined() && ent_full.numel() > 0 ? pick(g_h_full)
                                                                              : torch::Tensor();
  auto lse = lse_full.index_select(0, idx);
  auto ent = g_h.defined() ? ent_full.index_select(0, idx) : torch::Tensor();

  // Recompute in the forward's dtype; accumulate in float32 (float64 for float64 tiles).
  const auto ct = torch::promote_types(hidden.scalar_type(), weight.scalar_type());
  const auto acc = ct == torch::kDouble ? torch::kDouble : torch::kFloat;
  torch::Tensor grad_w =
      need_w ? torch::zeros(weight.sizes(), weight.options().dtype(acc)) : torch::Tensor();
  torch::Tensor grad_hidden = need_h ? torch::zeros_like(hidden) : torch::Tensor();
  for (int64_t s = 0; s < M; s += Ct) {
    const int64_t e = std::min(M, s + Ct);
    auto ic = idx.slice(0, s, e);
    auto hc = hidden.index_select(0, ic).to(ct);
    auto yc = labels.index_select(0, ic);
    auto sl = [&](const torch::Tensor& t) { return t.defined() ? t.slice(0, s, e) : t; };
    auto grad_hc = need_h ? torch::zeros({e - s, hidden.size(1)}, hidden.options().dtype(acc))
                          : torch::Tensor();
    auto hc_acc = need_w ? hc.to(acc) : hc;
    for (int64_t v0 = 0; v0 < V; v0 += Vb) {
      const int64_t v1 = std::min(V, v0 + Vb);
      auto wb = weight.slice(0, v0, v1).to(ct);
      auto z = torch::mm(hc, wb.t());
      auto dz =
          fused_backward_any(z, block_labels(yc, v0, v1), sl(g_lp), sl(g_h), sl(lse), sl(ent), o);
      if (need_h) grad_hc.addmm_(dz.to(acc), wb.to(acc));
      if (need_w) grad_w.slice(0, v0, v1).addmm_(dz.t().to(acc), hc_acc);
    }
    if (need_h) grad_hidden.index_copy_(0, ic, grad_hc.to(hidden.scalar_type()));
  }
  if (need_w) grad_w = grad_w.to(weight.scalar_type());
  return {grad_hidden, grad_w};
}

// Flat in: hidden [N, H], weight [V, H], labels [N] int64. Outputs as FusedTokenLogProbsFunction.
struct FusedLinearLogProbsFunction : torch::autograd::Function<FusedLinearLogProbsFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& hidden,
                                                const torch::Tensor& weight,
                                                const torch::Tensor& labels,
                                                TokenLogProbOptions o) {
    const int64_t N = hidden.size(0);
    auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(hidden.device());
    const bool grad = hidden.requires_grad() || weight.requires_grad();
    const bool want_h = o.return_entropy, want_p2 = o.return_log_sum_p2;
    const bool want_mean = o.return_mean_logit, want_max = o.return_is_argmax;
    auto st = linear_row_stats(hidden, weight, labels, o);
    nan_for_bad_labels(st, labels, weight.size(0));  // the NaN lse is saved for the backward
    const int64_t M = st.idx.size(0);
    auto scatter = [&](const torch::Tensor& v, torch::ScalarType t) {
      auto full = torch::zeros({N}, f32.dtype(t));
      if (M > 0) full.index_copy_(0, st.idx, v.to(t));
      return full;
    };
    auto lp = scatter(st.target - st.lse, torch::kFloat);
    auto lse_full = scatter(st.lse, torch::kFloat);
    auto ent_full = want_h ? scatter(st.entropy, torch::kFloat) : torch::Tensor();
    if (grad) {
      ctx->save_for_backward(
          {hidden, weight, labels, lse_full, want_h ? ent_full : torch::Tensor()});
      save_backward_options(ctx, o);
      save_tiles(ctx, st.tiles);
    }
    return finish_outputs(
        ctx, {lp, ent_full, o.return_lse ? lse_full : torch::Tensor(),
              want_p2 ? scatter(st.log_sum_p2, torch::kFloat) : torch::Tensor(),
              want_mean ? scatter(st.mean_logit, torch::kFloat) : torch::Tensor(),
              want_max ? scatter(st.target >= st.zmax, torch::kBool) : torch::Tensor()});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto o = load_backward_options(ctx);
    auto [gh, gw] =
        linear_backward_tiles(saved[0], saved[1], saved[2], o.ignore_index, saved[3], saved[4],
                              grads[0], grads.size() > 1 ? grads[1] : torch::Tensor(), o,
                              load_tiles(ctx), ctx->needs_input_grad(0), ctx->needs_input_grad(1));
    return {gh, gw, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace detail

// hidden [..., H] (the LM head's input), weight [V, H], labels [...]; same options and outputs
// as compute_token_logprobs. The reference backend materialises logits = hidden W^T. hidden and
// weight may differ in dtype (float32 hidden with a bfloat16 head): the logits are computed in the
// wider dtype, statistics and gradients accumulate in float32, and each gradient comes back in
// its input's dtype.
inline TokenLogProbs compute_linear_token_logprobs(const torch::Tensor& hidden,
                                                   const torch::Tensor& weight,
                                                   const torch::Tensor& labels,
                                                   const TokenLogProbOptions& o = {}) {
  constexpr const char* fn = "linear_token_logprobs";
  detail::check_floating(hidden, fn, "hidden");
  detail::check_floating(weight, fn, "weight");
  detail::check_integral(labels, fn, "labels");
  detail::check_dim(weight, 2, fn, "weight");
  HAFRM_CHECK_ARG(hidden.dim() >= 1 && hidden.size(-1) == weight.size(1), fn, "hidden",
                  "expected shape [..., H] with H = weight.size(1) = ", weight.size(1), ", got ",
                  hidden.sizes());
  HAFRM_CHECK_ARG(labels.sizes() == hidden.sizes().slice(0, hidden.dim() - 1), fn, "labels",
                  "expected shape ", hidden.sizes().slice(0, hidden.dim() - 1), ", got ",
                  labels.sizes());
  HAFRM_CHECK_ARG(weight.size(1) >= 1, fn, "weight",
                  "expected a hidden size H = weight.size(1) >= 1, got shape ", weight.sizes());
  detail::check_same_device(hidden, weight, fn, "hidden", "weight");
  detail::check_same_device(hidden, labels, fn, "hidden", "labels");
  HAFRM_CHECK_ARG(weight.size(0) >= 1, fn, "weight", "expected V >= 1 rows, got ", weight.sizes());
  detail::check_options(o, fn);
  if (o.check_labels) detail::check_label_range(labels, weight.size(0), o, fn);
  // Mixed dtypes (float32 hidden, bfloat16 head) compute in the wider one, as TRL does.
  const auto ct = torch::promote_types(hidden.scalar_type(), weight.scalar_type());
  if (!detail::use_fused(torch::empty({0}, hidden.options().dtype(ct)), o)) {
    auto logits = torch::matmul(hidden.to(ct), weight.to(ct).t());
    return detail::reference_token_logprobs(logits, labels, o);
  }
  auto shape = labels.sizes().vec();
  auto h2 = hidden.reshape({-1, hidden.size(-1)});
  auto y = labels.reshape({-1}).to(torch::kLong).contiguous();
  auto outs = detail::FusedLinearLogProbsFunction::apply(h2, weight, y, o);
  return detail::unpack_outputs(outs, o, shape, labels != o.ignore_index);
}

inline torch::Tensor linear_token_logprobs(const torch::Tensor& hidden, const torch::Tensor& weight,
                                           const torch::Tensor& labels,
                                           const TokenLogProbOptions& o = {}) {
  return compute_linear_token_logprobs(hidden, weight, labels, o).logprobs;
}

}  // namespace hafrm
