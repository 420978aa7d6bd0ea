// step.hpp: one optimizer step of the haf_rm trainer: the learning rate of the schedule,
// gradient accumulation over --grad-accum micro-batches, the data-parallel gradient mean,
// clipping, AdamW. Returns the step's statistics (the mean over its micro-batches and ranks).
//
//   hafrm::examples::rm::StepStats s = hafrm::examples::rm::train_step(state);
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <limits>

#include "config.hpp"
#include "train_state.hpp"

namespace hafrm::examples::rm {

struct StepStats {
  int64_t step = 0;  // optimizer steps done after this one
  double loss = 0, reward_loss = 0, policy_loss = 0;
  double reward_acc = 0, implicit_acc = 0;
  double grad_norm = 0, lr = 0, w_reward = 0, alpha = 0;
};

inline StepStats train_step(TrainState& st) {
  st.model->train();
  st.optimizer->zero_grad();
  StepStats s;
  const double lr = learning_rate(st.cfg, st.step);
  for (auto& g : st.optimizer->param_groups())
    static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  // Each micro-batch's loss is scaled by 1/accum so the accumulated gradient is the mean's.
  const double inv = 1.0 / static_cast<double>(st.cfg.grad_accum);
  for (int64_t m = 0; m < st.cfg.grad_accum; ++m) {
    const auto idx = st.next_indices();
    auto f = st.forward(st.train, st.train_refs, idx);
    auto out = st.objective(f.rewards, f.policy, st.step);
    if (st.dp) st.dp->prepare_for_backward(m + 1 == st.cfg.grad_accum);  // overlap: last only
    (out.loss * inv).backward();
    torch::NoGradGuard ng;
    s.loss += inv * out.loss.item<double>();
    s.reward_loss += inv * out.reward_loss.item<double>();
    s.policy_loss += inv * out.policy_loss.item<double>();
    s.reward_acc +=
        inv * (f.rewards.chosen > f.rewards.rejected).to(torch::kDouble).mean().item<double>();
    s.implicit_acc += inv * (implicit_margin(f) > 0).to(torch::kDouble).mean().item<double>();
    s.w_reward = out.weights.reward, s.alpha = out.weights.policy;
  }
  if (st.dp) {  // mean gradient and mean statistics over the ranks' slices of the global batch
    st.dp->average_gradients();
    const auto m =
        st.dp->mean({s.loss, s.reward_loss, s.policy_loss, s.reward_acc, s.implicit_acc});
    s.loss = m[0], s.reward_loss = m[1], s.policy_loss = m[2], s.reward_acc = m[3];
    s.implicit_acc = m[4];
  }
  // Without clipping the norm is still computed, for the log.
  const double max_norm = st.cfg.clip > 0 ? st.cfg.clip : std::numeric_limits<double>::infinity();
  s.grad_norm = torch::nn::utils::clip_grad_norm_(st.model->parameters(), max_norm);
  st.optimizer->step();
  s.lr = lr;
  s.step = ++st.step;
  return s;
}

}  // namespace hafrm::examples::rm
