// hafrm/torch/linear_logprobs.hpp: the LM-head matmul fused with the per-token log-prob, so the
// [N, V] logits are never stored whole. Only rows whose label is not ignore_index are projected.
//
//   // hidden [B, T, H] (LM-head input), weight [V, H], labels [B, T]
//   torch::Tensor lp = hafrm::linear_token_logprobs(hidden, weight, labels);
//
// Forward: for each chunk of C scored tokens, z = h_c W^T (LibTorch's BLAS / cuBLAS), then the
// fused row kernel keeps only the LSE and the asked-for statistics. Backward recomputes the
// chunk's z, overwrites it with dL/dz in place, and accumulates dL/dh = dz W and dL/dW += dz^T h
// (in float32 for bfloat16/float16 weights). Extra memory: O(C x V) plus O(N) per-row floats.
#pragma once

#include <torch/torch.h>

#include <algorithm>

#include "hafrm/torch/fused_logprobs.hpp"
#include "hafrm/torch/logprob_options.hpp"
#include "hafrm/torch/reference_logprobs.hpp"
#include "hafrm/torch/token_logprobs.hpp"

namespace hafrm {

namespace detail {

inline int64_t linear_chunk_tokens(const TokenLogProbOptions& o, int64_t V, bool cuda) {
  if (o.linear_chunk_tokens > 0) return o.linear_chunk_tokens;
  const int64_t budget = cuda ? (int64_t{512} << 20) : (int64_t{16} << 20);
  return std::clamp<int64_t>(budget / (std::max<int64_t>(V, 1) * 4), 16, 8192);
}

// Flat in: hidden [N, H], weight [V, H], labels [N] int64. Outputs as FusedTokenLogProbsFunction.
struct FusedLinearLogProbsFunction : torch::autograd::Function<FusedLinearLogProbsFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& hidden,
                                                const torch::Tensor& weight,
                                                const torch::Tensor& labels,
                                                TokenLogProbOptions o) {
    const int64_t N = hidden.size(0), V = weight.size(0);
    auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(hidden.device());
    auto idx = (labels != o.ignore_index).nonzero().squeeze(1);
    const int64_t M = idx.size(0);
    auto y = labels.index_select(0, idx);
    const int64_t C = linear_chunk_tokens(o, V, hidden.is_cuda());
    const bool grad = hidden.requires_grad() || weight.requires_grad();
    auto inner = o;
    inner.ignore_index = -1;  // every selected row is scored
    inner.check_labels = false;

    std::vector<FusedForward> parts;
    for (int64_t s = 0; s < M; s += C) {
      const int64_t e = std::min(M, s + C);
      torch::NoGradGuard ng;
      // Rows are gathered per chunk, so no [M, H] copy of the hidden states is ever held.
      auto z = torch::mm(hidden.index_select(0, idx.slice(0, s, e)), weight.t());
      parts.push_back(fused_forward_any(z, y.slice(0, s, e), inner, grad));
    }
    auto gather = [&](auto member, torch::ScalarType t, bool want) -> torch::Tensor {
      if (!want) return {};
      auto full = torch::zeros({N}, f32.dtype(t));
      if (M == 0) return full;
      std::vector<torch::Tensor> xs;
      for (auto& p : parts) xs.push_back(p.*member);
      full.index_copy_(0, idx, torch::cat(xs));
      return full;
    };
    auto lp = gather(&FusedForward::logprob, torch::kFloat, true);
    auto ent = gather(&FusedForward::entropy, torch::kFloat, o.return_entropy);
    auto lse = gather(&FusedForward::lse, torch::kFloat, o.return_lse || grad);
    auto p2 = gather(&FusedForward::log_sum_p2, torch::kFloat, o.return_log_sum_p2);
    auto ml = gather(&FusedForward::mean_logit, torch::kFloat, o.return_mean_logit);
    auto am = gather(&FusedForward::is_argmax, torch::kBool, o.return_is_argmax);
    if (grad) {
      ctx->save_for_backward({hidden, weight, labels, lse, ent.defined() ? ent : torch::Tensor()});
      ctx->saved_data["ignore_index"] = o.ignore_index;
      ctx->saved_data["scale"] = o.logit_scale;
      ctx->saved_data["softcap"] = o.softcap;
      ctx->saved_data["temperature"] = o.temperature;
      ctx->saved_data["chunk"] = C;
    }
    return finish_outputs(ctx, {lp, ent, o.return_lse ? lse : torch::Tensor(), p2, ml, am});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &hidden = saved[0], &weight = saved[1], &labels = saved[2];
    const auto &lse_full = saved[3], &ent_full = saved[4];
    TokenLogProbOptions o;
    o.ignore_index = -1;
    o.logit_scale = ctx->saved_data["scale"].toDouble();
    o.softcap = ctx->saved_data["softcap"].toDouble();
    o.temperature = ctx->saved_data["temperature"].toDouble();
    o.inplace_backward = true;  // the recomputed chunk is ours: overwrite it with dL/dz
    const int64_t ignore = ctx->saved_data["ignore_index"].toInt();
    const int64_t C = ctx->saved_data["chunk"].toInt();
    const bool need_h = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);

    auto idx = (labels != ignore).nonzero().squeeze(1);
    const int64_t M = idx.size(0);
    auto y = labels.index_select(0, idx);
    auto pick = [&](const torch::Tensor& t) {
      return t.defined() ? t.index_select(0, idx).to(torch::kFloat) : torch::Tensor();
    };
    auto g_lp = pick(grads[0]);
    auto g_h = grads.size() > 1 && ent_full.defined() && ent_full.numel() > 0 ? pick(grads[1])
                                                                               : torch::Tensor();
    auto lse = lse_full.index_select(0, idx);
    auto ent = g_h.defined() ? ent_full.index_select(0, idx) : torch::Tensor();

    const bool low = weight.scalar_type() != torch::kFloat && weight.scalar_type() != torch::kDouble;
    auto acc_type = low ? torch::kFloat : weight.scalar_type();
    torch::Tensor grad_w = need_w ? torch::zeros(weight.sizes(), weight.options().dtype(acc_type))
                                  : torch::Tensor();
    torch::Tensor grad_hidden = need_h ? torch::zeros_like(hidden) : torch::Tensor();
    for (int64_t s = 0; s < M; s += C) {
      const int64_t e = std::min(M, s + C);
      auto ic = idx.slice(0, s, e);
      auto hc = hidden.index_select(0, ic);
      auto z = torch::mm(hc, weight.t());
      auto sl = [&](const torch::Tensor& t) { return t.defined() ? t.slice(0, s, e) : t; };
      auto dz = fused_backward_any(z, y.slice(0, s, e), sl(g_lp), sl(g_h), lse.slice(0, s, e),
                                   sl(ent), o);
      if (need_h) grad_hidden.index_copy_(0, ic, torch::mm(dz, weight));
      if (need_w) {
        if (low) {
          grad_w.addmm_(dz.t().to(torch::kFloat), hc.to(torch::kFloat));
        } else {
          grad_w.addmm_(dz.t(), hc);
        }
      }
    }
    if (need_w && low) grad_w = grad_w.to(weight.scalar_type());
    return {grad_hidden, grad_w, torch::Tensor(), torch::Tensor()};
  }

  static torch::Tensor fused_backward_any(const torch::Tensor& z, const torch::Tensor& y,
                                          const torch::Tensor& g_lp, const torch::Tensor& g_h,
                                          const torch::Tensor& lse, const torch::Tensor& ent,
                                          const TokenLogProbOptions& o) {
    if (z.is_cuda()) return cuda_fused_backward(z, y, g_lp, g_h, lse, ent, o);
    return cpu_fused_backward(z, y, g_lp, g_h, lse, ent, o);
  }
};

}  // namespace detail

// hidden [..., H] (the LM head's input), weight [V, H], labels [...]; same options and outputs
// as compute_token_logprobs. The reference backend materialises logits = hidden W^T.
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
  HAFRM_CHECK_ARG(hidden.scalar_type() == weight.scalar_type(), fn, "weight",
                  "expected the same dtype as 'hidden' (", hidden.scalar_type(), "), got ",
                  weight.scalar_type());
  detail::check_same_device(hidden, weight, fn, "hidden", "weight");
  detail::check_same_device(hidden, labels, fn, "hidden", "labels");
  HAFRM_CHECK_ARG(weight.size(0) >= 1, fn, "weight", "expected V >= 1 rows, got ", weight.sizes());
  detail::check_options(o, fn);
  if (o.check_labels && labels.numel() > 0) {
    const int64_t V = weight.size(0);
    auto bad = (labels != o.ignore_index) & ((labels < 0) | (labels >= V));
    HAFRM_CHECK_ARG(!bad.any().item<bool>(), fn, "labels", "expected values in [0, ", V,
                    ") or ignore_index (", o.ignore_index, ")");
  }
  if (!detail::use_fused(hidden, o)) {
    auto logits = torch::matmul(hidden, weight.t());
    auto ro = o;
    ro.check_labels = false;
    return detail::reference_token_logprobs(logits, labels, ro);
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
