// precision.hpp: --precision of the haf_rm trainer. fp32 runs everything in float32; bf16 is
// mixed precision: the forward passes run under LibTorch's autocast with bfloat16 (matmuls,
// linear layers and attention in bfloat16; LayerNorm, softmax-type reductions and the residual
// stream in float32), while the parameters, their gradients and AdamW's state stay float32 (the
// master weights: autocast casts a parameter for the op that reads it, it never changes it).
//
// The LM head: the library's fused linear -> log-prob path is a custom autograd Function, whose
// backward recomputes the logits outside autocast. bf16_lm_head() casts its input and weight to
// bfloat16 before the call, so the forward and the recompute form the same bfloat16 tiles (the
// fused kernel's bfloat16 input path; statistics and gradients accumulate in float32 there) and
// the weight's gradient comes back float32 through the cast.
//
//   AutocastGuard guard(torch::kCPU, /*enabled=*/true);  // bf16 until the end of the scope
//   auto f = hafrm::forward_pair(model, batch, options);
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <string>
#include <utility>

#include <hafrm/model/pair_forward.hpp>

namespace hafrm::examples::rm {

// --precision: "fp32" or "bf16" (config.hpp checks the name).
inline bool is_bf16(const std::string& precision) { return precision == "bf16"; }

// Autocast to bfloat16 on `device` for the guard's lifetime (nothing when not enabled), as
// Python's torch.autocast: the previous enabled flag, dtype and cache setting come back on exit,
// and the outermost guard clears the cache of casted parameters.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, bool enabled) : device_(device), active_(enabled) {
    if (!active_) return;
    prev_enabled_ = at::autocast::is_autocast_enabled(device_);
    prev_dtype_ = at::autocast::get_autocast_dtype(device_);
    prev_cache_ = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
    at::autocast::increment_nesting();
    at::autocast::set_autocast_cache_enabled(true);
  }
  ~AutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, prev_enabled_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
    at::autocast::set_autocast_cache_enabled(prev_cache_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool active_;
  bool prev_enabled_ = false, prev_cache_ = true;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

// A PairForwardOptions::model_logprobs that, while autocast is on for the outputs' device, casts
// the LM head's input and weight to the autocast dtype and then runs `inner` (the vocabulary-
// parallel path) or, when empty, the library's own path. Outside autocast, and for a model that
// returns logits, it changes nothing.
inline hafrm::ModelLogProbsFn bf16_lm_head(hafrm::ModelLogProbsFn inner) {
  return [inner = std::move(inner)](const hafrm::ModelOutputs& out, const torch::Tensor& labels,
                                    const hafrm::TokenLogProbOptions& o) {
    if (!out.lm_hidden.defined() || !out.lm_head_weight.defined() ||
        !at::autocast::is_autocast_enabled(out.lm_hidden.device().type()))
      return hafrm::detail::model_sequence_logprobs(out, labels, o, inner);
    const auto dtype = at::autocast::get_autocast_dtype(out.lm_hidden.device().type());
    hafrm::ModelOutputs cast = out;
    cast.lm_hidden = out.lm_hidden.to(dtype);
    cast.lm_head_weight = out.lm_head_weight.to(dtype);
    return hafrm::detail::model_sequence_logprobs(cast, labels, o, inner);
  };
}

// The packed path's counterpart (PairForwardOptions::model_token_logprobs: rows, labels already
// shifted): the same cast, then `inner` or, when empty, the library's own per-token path.
inline hafrm::ModelTokenLogProbsFn bf16_lm_head_rows(hafrm::ModelTokenLogProbsFn inner) {
  return [inner = std::move(inner)](const hafrm::ModelOutputs& rows, const torch::Tensor& labels,
                                    const hafrm::TokenLogProbOptions& o) {
    hafrm::ModelOutputs r = rows;
    if (r.lm_hidden.defined() && r.lm_head_weight.defined() &&
        at::autocast::is_autocast_enabled(r.lm_hidden.device().type())) {
      const auto dtype = at::autocast::get_autocast_dtype(r.lm_hidden.device().type());
      r.lm_hidden = r.lm_hidden.to(dtype);
      r.lm_head_weight = r.lm_head_weight.to(dtype);
    }
    if (inner) return inner(r, labels, o);
    if (r.logits.defined()) return hafrm::compute_token_logprobs(r.logits, labels, o);
    return hafrm::compute_linear_token_logprobs(r.lm_hidden, r.lm_head_weight, labels, o);
  };
}

namespace detail {

inline void to_float_(torch::Tensor& t) {
  if (t.defined() && t.is_floating_point() && t.scalar_type() != torch::kFloat)
    t = t.to(torch::kFloat);
}

}  // namespace detail

// Every floating tensor the objective reads -- rewards, summed and per-token log-probs -- as
// float32, so each loss reduction runs in float32 whatever dtype the forward produced (autocast
// leaves the reward head's output in bfloat16). Differentiable: the gradient flows back through
// the cast.
inline void losses_in_float_(hafrm::PairForward& f) {
  using detail::to_float_;
  to_float_(f.rewards.chosen), to_float_(f.rewards.rejected), to_float_(f.rewards.margin);
  auto& p = f.policy;
  to_float_(p.policy_chosen), to_float_(p.policy_rejected);
  to_float_(p.reference_chosen), to_float_(p.reference_rejected);
  to_float_(p.kl_estimate), to_float_(p.policy_chosen_prompt);
  if (p.tokens) {
    auto& t = *p.tokens;
    to_float_(t.policy_chosen), to_float_(t.policy_rejected);
    to_float_(t.reference_chosen), to_float_(t.reference_rejected);
    to_float_(t.log_sum_p2_chosen), to_float_(t.log_sum_p2_rejected);
  }
}

}  // namespace hafrm::examples::rm
