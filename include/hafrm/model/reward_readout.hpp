// hafrm/model/reward_readout.hpp: which position's reward-head output is the sequence reward.
//
// example-begin read_rewards PairModel
//   auto r = hafrm::read_rewards(token_rewards, attention_mask);   // at the last real token
//   auto f = hafrm::read_rewards(token_rewards, mask, hafrm::RewardReadout::kLastPosition);
// example-end
#pragma once

#include <torch/torch.h>

#include "hafrm/torch/checks.hpp"

namespace hafrm {

enum class RewardReadout {
  kLastNonPad,    // the last position whose attention_mask is 1 (correct; the default)
  kLastPosition,  // the last position of the padded batch (what the HaF reference code reads)
};

inline torch::Tensor read_rewards(torch::Tensor token_rewards, const torch::Tensor& attention_mask,
                                  RewardReadout readout = RewardReadout::kLastNonPad) {
  constexpr const char* fn = "read_rewards";
  detail::check_floating(token_rewards, fn, "token_rewards");
  if (token_rewards.dim() == 3 && token_rewards.size(2) == 1)
    token_rewards = token_rewards.squeeze(2);
  HAFRM_CHECK_ARG(token_rewards.dim() == 2, fn, "token_rewards",
                  "expected shape [B, T] or [B, T, 1], got ", token_rewards.sizes());
  detail::check_defined(attention_mask, fn, "attention_mask");
  HAFRM_CHECK_ARG(attention_mask.sizes() == token_rewards.sizes(), fn, "attention_mask",
                  "expected shape ", token_rewards.sizes(), ", got ", attention_mask.sizes());
  const int64_t T = token_rewards.size(1);
  if (readout == RewardReadout::kLastPosition) return token_rewards.select(1, T - 1);
  auto real = attention_mask != 0;
  constexpr const char* why =
      "every sequence needs at least one real (mask 1) token to read a reward from";
  if (!detail::values_hold(real.any(1), fn, "attention_mask", why)) {
    const int64_t row = (~real.any(1)).nonzero()[0][0].item<int64_t>();
    HAFRM_CHECK_ARG(false, fn, "attention_mask", why, "; sequence ", row, " has none");
  }
  auto pos = torch::arange(T, attention_mask.options().dtype(torch::kLong));
  auto last = torch::where(real, pos, torch::full({}, -1, pos.options())).amax(1);
  return token_rewards.gather(1, last.unsqueeze(1)).squeeze(1);
}

}  // namespace hafrm
