// haf_tiny: the smallest complete HaF-RM training loop. A tiny shared backbone with an LM head
// and a zero-initialised reward head learns a synthetic preference (chosen = the prompt
// reversed, rejected = the same with one token changed) under the hybrid loss
// L = BT(rewards) + 0.2 * DPO(log-probs vs a frozen reference). Prints losses and accuracy.
//
//   haf_tiny [steps=300] [seed=0]
#include <hafrm/hafrm.hpp>

#include <cstdio>
#include <cstdlib>

namespace {
constexpr int64_t kVocab = 16, kPrompt = 6, kHidden = 32;

// Embedding -> causal running mean -> MLP; LM head = LayerNorm -> Linear; reward = Linear(1)
// on the pre-norm hidden state, zero-initialised as in the HaF reference code.
struct TinyRmImpl : torch::nn::Module {
  TinyRmImpl() {
    emb = register_module("emb", torch::nn::Embedding(kVocab, kHidden));
    pos = register_module("pos", torch::nn::Embedding(2 * kPrompt + 2, kHidden));
    mlp = register_module(
        "mlp", torch::nn::Sequential(torch::nn::Linear(2 * kHidden, 64), torch::nn::GELU(),
                                     torch::nn::Linear(64, kHidden)));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kHidden})));
    head = register_module("head", torch::nn::Linear(kHidden, kVocab));
    score = register_module("score", torch::nn::Linear(kHidden, 1));
    torch::NoGradGuard ng;
    score->weight.zero_();
    score->bias.zero_();
  }
  hafrm::ModelOutputs haf_forward(const torch::Tensor& ids, const torch::Tensor& mask) {
    auto T = ids.size(1);
    auto x = emb(ids) + pos(torch::arange(T, torch::kLong)).unsqueeze(0);
    x = x * mask.unsqueeze(-1).to(x.dtype());
    auto ctx = x.cumsum(1) / torch::arange(1, T + 1, x.options()).view({1, -1, 1});
    auto h = x + mlp->forward(torch::cat({x, ctx}, -1));
    return {.logits = head(norm(h)), .token_rewards = score(h).squeeze(-1)};
  }
  torch::nn::Embedding emb{nullptr}, pos{nullptr};
  torch::nn::Sequential mlp{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr}, score{nullptr};
};
TORCH_MODULE(TinyRm);

// A batch of prompt + response pairs; labels score only the response tokens.
hafrm::PreferenceBatch make_batch(int64_t B) {
  auto prompt = torch::randint(1, kVocab, {B, kPrompt}, torch::kLong);
  auto chosen = prompt.flip({1});
  auto rejected = chosen.clone();
  auto where = torch::randint(0, kPrompt, {B, 1}, torch::kLong);
  auto shift = torch::randint(1, kVocab - 1, {B, 1}, torch::kLong);
  auto old = rejected.gather(1, where);
  rejected.scatter_(1, where, (old - 1 + shift) % (kVocab - 1) + 1);  // always a different token
  auto assemble = [&](const torch::Tensor& resp, torch::Tensor& ids, torch::Tensor& mask,
                      torch::Tensor& labels) {
    ids = torch::cat({prompt, resp}, 1);
    mask = torch::ones_like(ids);
    labels = ids.clone();
    labels.slice(1, 0, kPrompt).fill_(-100);
  };
  hafrm::PreferenceBatch b;
  assemble(chosen, b.chosen_ids, b.chosen_mask, b.chosen_labels);
  assemble(rejected, b.rejected_ids, b.rejected_mask, b.rejected_labels);
  return b;
}
}  // namespace

int main(int argc, char** argv) {
  const int64_t steps = argc > 1 ? std::atol(argv[1]) : 300;
  torch::manual_seed(argc > 2 ? std::atol(argv[2]) : 0);
  TinyRm model, reference;
  {
    torch::NoGradGuard ng;  // the reference is a frozen copy of the initial weights
    auto src = model->parameters(), dst = reference->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
    for (auto& p : dst) p.requires_grad_(false);
  }
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3).eps(1e-5));
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo> haf;  // w_R 1, alpha 0.2, beta 0.1

  for (int64_t step = 0; step < steps; ++step) {
    auto f = hafrm::forward_pair(model, reference, make_batch(32));
    auto out = haf(f.rewards, f.policy, step);
    opt.zero_grad();
    out.loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    opt.step();
    if (step % 50 == 0 || step == steps - 1)
      std::printf("step %4lld  loss %.4f  reward_loss %.4f  policy_loss %.4f  acc %.3f\n",
                  static_cast<long long>(step), out.loss.item<double>(),
                  out.reward_loss.item<double>(), out.policy_loss.item<double>(),
                  out.metrics.at("reward/accuracy").item<double>());
  }
  torch::NoGradGuard ng;
  auto f = hafrm::forward_pair(model, reference, make_batch(512));
  auto acc = (f.rewards.chosen > f.rewards.rejected).to(torch::kFloat).mean().item<double>();
  std::printf("held-out preference accuracy (512 fresh pairs): %.3f\n", acc);
  return 0;
}
