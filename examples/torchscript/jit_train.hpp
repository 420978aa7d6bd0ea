// jit_train.hpp: training a TorchScript model with the HaF-RM hybrid loss (shared by main.cpp
// and the tests). The model is whatever torch::jit::load returned; hafrm reaches it through its
// ready trait specialisation, so no C++ class of the model exists anywhere.
//
//   torch::jit::Module m = torch::jit::load("tiny_haf_rm.pt");
//   hafrm::examples::jit::JitTrainer t(m, hafrm::examples::jit::JitOptions{});
//   double loss = t.step(batch).loss;
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include <hafrm/model/pair_forward.hpp>
#include <hafrm/model/torchscript.hpp>

#include "losses.hpp"  // examples/haf_rm: the objective from spec strings

namespace hafrm::examples::jit {

struct JitOptions {
  std::string objective = "haf";  // bt | haf | dpo, as in haf_rm
  double lr = 2e-3;
  double clip = 1.0;
  int64_t pad_id = 256;  // the byte tokenizer's EOS/PAD
};

struct JitStep {
  double loss = 0, reward_loss = 0, policy_loss = 0, reward_acc = 0, implicit_acc = 0;
};

class JitTrainer {
 public:
  // Takes the loaded module; its initial weights, deep-copied and frozen, are the reference.
  JitTrainer(torch::jit::Module model, const JitOptions& o)
      : model_(std::move(model)),
        reference_(frozen_copy(model_)),
        spec_(rm::resolve_objective(o.objective, "", "", "")),
        objective_(rm::make_objective(spec_)),
        clip_(o.clip) {
    forward_options_.pad_id = o.pad_id;
    model_.train();
    for (const auto& p : model_.parameters()) params_.push_back(p.requires_grad_(true));
    optimizer_ = std::make_unique<torch::optim::AdamW>(
        params_, torch::optim::AdamWOptions(o.lr).eps(1e-5).weight_decay(0.0));
  }

  torch::jit::Module& model() { return model_; }
  const std::vector<torch::Tensor>& parameters() const { return params_; }

  // One optimizer step on `batch`. Leaves the gradients in place (tests inspect them).
  JitStep step(const hafrm::PreferenceBatch& batch) {
    optimizer_->zero_grad();
    auto f = hafrm::forward_pair(model_, reference_, batch, forward_options_);
    auto out = objective_(f.rewards, f.policy, step_++);
    out.loss.backward();
    torch::nn::utils::clip_grad_norm_(params_, clip_);
    optimizer_->step();
    JitStep s;
    s.loss = out.loss.item<double>();
    s.reward_loss = out.reward_loss.item<double>();
    s.policy_loss = out.policy_loss.item<double>();
    s.reward_acc = (f.rewards.chosen > f.rewards.rejected).to(torch::kDouble).mean().item<double>();
    s.implicit_acc = (implicit_margin(f) > 0).to(torch::kDouble).mean().item<double>();
    return s;
  }

  // Accuracy of the reward head and of the implicit reward on one batch, without gradients.
  std::pair<double, double> accuracy(const hafrm::PreferenceBatch& batch) {
    torch::NoGradGuard ng;
    model_.eval();
    auto f = hafrm::forward_pair(model_, reference_, batch, forward_options_);
    model_.train();
    return {(f.rewards.chosen > f.rewards.rejected).to(torch::kDouble).mean().item<double>(),
            (implicit_margin(f) > 0).to(torch::kDouble).mean().item<double>()};
  }

 private:
  // A deep copy made without autograd history, so its parameters are leaves we can freeze.
  static torch::jit::Module frozen_copy(const torch::jit::Module& m) {
    torch::NoGradGuard ng;
    auto ref = m.deepcopy();
    for (const auto& p : ref.parameters()) p.requires_grad_(false);
    ref.eval();
    return ref;
  }

  static torch::Tensor implicit_margin(const hafrm::PairForward& f) {
    const auto& p = f.policy;
    return (p.policy_chosen - p.reference_chosen) - (p.policy_rejected - p.reference_rejected);
  }

  torch::jit::Module model_, reference_;
  rm::ObjectiveSpec spec_;
  rm::HybridObjective objective_;
  double clip_;
  hafrm::PairForwardOptions forward_options_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  int64_t step_ = 0;
};

}  // namespace hafrm::examples::jit
