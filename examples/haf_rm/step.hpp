// step.hpp: one optimizer step of the haf_rm trainer: the learning rate of the schedule,
// gradient accumulation over --grad-accum micro-batches (with --packing and --pack-tokens, over
// the runs of at most that many tokens the step's pairs are cut into), the data-parallel mean,
// clipping, AdamW. It advances the training state (weights, AdamW, data order, step counter,
// training time) and returns the step's statistics (the mean over its micro-batches and ranks).
// For --objective lm and sft the step's loss is the mean NLL over every scored token of the global
// batch (all micro-batches, all ranks): each micro-batch's summed NLL is divided by that count,
// so gradient accumulation and data parallelism give the gradient of one big batch, however the
// tokens fall between micro-batches and ranks.
//
//   hafrm::examples::rm::StepStats s = hafrm::examples::rm::train_step(state);
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <vector>

#include "config.hpp"
#include "packing.hpp"
#include "train_state.hpp"

namespace hafrm::examples::rm {

struct StepStats {
  int64_t step = 0;  // optimizer steps done after this one
  double loss = 0, reward_loss = 0, policy_loss = 0;
  double reward_acc = 0, implicit_acc = 0;
  double grad_norm = 0, lr = 0, w_reward = 0, alpha = 0;
  // False in a reward-only run: no policy loss and no implicit reward were computed (both 0 here;
  // reports leave them out).
  bool policy_measured = true;
  // --objective lm or sft: `loss` is the token-mean NLL and no pair statistic was computed.
  bool sequence = false;
  // Pair steps, over all ranks: the tokens of the step's pairs and the token positions the model
  // computed for them (padding or a packed row's unused tail included).
  double tokens = 0, positions = 0;
};

inline StepStats train_step(TrainState& st) {
  const auto t0 = std::chrono::steady_clock::now();
  const TrainConfig& cfg = st.config().options();
  DataParallel* dp = st.data_parallel();
  st.model_->train();
  st.optimizer_->zero_grad();
  StepStats s;
  s.sequence = st.sequence_;
  s.policy_measured = !st.reward_only_ && !st.sequence_;
  const double lr = learning_rate(cfg, st.step_);
  for (auto& g : st.optimizer_->param_groups())
    static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  // This rank's micro-batches: --grad-accum draws of --batch-size pairs (or sequences). With
  // --packing and a token budget the step's pairs are cut into runs of at most --pack-tokens
  // tokens instead (packing.hpp); either way the step trains on the same pairs in the same order.
  std::vector<std::vector<int64_t>> micro;
  for (int64_t m = 0; m < cfg.grad_accum; ++m) micro.push_back(st.next_indices());
  if (st.row_length_ > 0 && cfg.pack_tokens > 0) {
    std::vector<int64_t> all;
    for (const auto& m : micro) all.insert(all.end(), m.begin(), m.end());
    micro = split_by_tokens(st.data_.train, all, cfg.pack_tokens);
  }
  double nll_scale = 0.0;
  if (st.sequence_) {
    double tokens = 0.0;
    for (const auto& m : micro) tokens += static_cast<double>(scored_tokens(st.data_.train, m));
    // The data-parallel gradient is the mean over the ranks' (groups') gradients, hence the
    // factor world: mean_r(world * nll_r / N) = sum_r nll_r / N.
    if (dp) tokens = dp->mean({tokens})[0] * st.world();
    nll_scale = static_cast<double>(st.world()) / std::max(tokens, 1.0);
  }
  // Each micro-batch's (mean) loss is weighted by its share of the step's pairs, so the
  // accumulated gradient is the mean's: 1/accum for --grad-accum micro-batches of equal size.
  double pairs = 0.0;
  for (const auto& m : micro) pairs += static_cast<double>(m.size());
  for (std::size_t m = 0; m < micro.size(); ++m) {
    const bool last = m + 1 == micro.size();
    if (st.sequence_) {
      const auto loss = -st.sequence_logprobs(st.data_.train, micro[m]).first * nll_scale;
      if (dp) dp->prepare_for_backward(last);
      loss.backward();
      s.loss += loss.item<double>();
      continue;
    }
    const double share = static_cast<double>(micro[m].size()) / pairs;
    int64_t positions = 0;
    auto f = st.row_length_ > 0
                 ? st.forward_packed(st.data_.train, st.train_refs_, micro[m], &positions)
                 : st.forward(st.data_.train, st.train_refs_, micro[m], &positions);
    for (auto i : micro[m]) s.tokens += static_cast<double>(pair_tokens(st.data_.train, i));
    s.positions += static_cast<double>(positions);
    auto out = (*st.objective_)(f.rewards, f.policy, st.step_);
    if (dp) dp->prepare_for_backward(last);  // overlap: last only
    (out.loss * share).backward();
    torch::NoGradGuard ng;
    s.loss += share * out.loss.item<double>();
    s.reward_loss += share * out.reward_loss.item<double>();
    s.reward_acc +=
        share * (f.rewards.chosen > f.rewards.rejected).to(torch::kDouble).mean().item<double>();
    if (s.policy_measured) {
      s.policy_loss += share * out.policy_loss.item<double>();
      s.implicit_acc += share * (implicit_margin(f) > 0).to(torch::kDouble).mean().item<double>();
    }
    s.w_reward = out.weights.reward, s.alpha = out.weights.policy;
  }
  if (dp) {  // mean gradient and mean statistics over the ranks' slices of the global batch
    dp->average_gradients();
    const auto m = dp->mean({s.loss, s.reward_loss, s.policy_loss, s.reward_acc, s.implicit_acc,
                             s.tokens, s.positions});
    s.loss = m[0], s.reward_loss = m[1], s.policy_loss = m[2], s.reward_acc = m[3];
    s.implicit_acc = m[4];
    s.tokens = m[5] * st.world(), s.positions = m[6] * st.world();  // sums over the ranks
  }
  // Without clipping the norm is still computed, for the log.
  const double max_norm = cfg.clip > 0 ? cfg.clip : std::numeric_limits<double>::infinity();
  s.grad_norm = torch::nn::utils::clip_grad_norm_(st.model_->parameters(), max_norm);
  st.optimizer_->step();
  s.lr = lr;
  s.step = ++st.step_;
  st.train_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

}  // namespace hafrm::examples::rm
