// The model trait, reward read-out and the concatenated chosen/rejected forward pass, with a
// tiny torch::nn model that has the HaF architecture (shared backbone, LM head, reward head).
#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {
// Embedding -> causal running mean -> MLP backbone; LM head = LayerNorm -> Linear(V);
// reward head = Linear(1) on the pre-norm hidden state.
struct TinyHafImpl : torch::nn::Module {
  TinyHafImpl(int64_t V, int64_t H, bool fused_head = false) : fused(fused_head) {
    emb = register_module("emb", torch::nn::Embedding(V, H));
    mix = register_module("mix", torch::nn::Linear(H, H));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({H})));
    head = register_module("head", torch::nn::Linear(torch::nn::LinearOptions(H, V).bias(false)));
    score = register_module("score", torch::nn::Linear(H, 1));
  }
  hafrm::ModelOutputs haf_forward(const torch::Tensor& ids, const torch::Tensor& mask) {
    auto x = emb(ids) * mask.unsqueeze(-1).to(torch::kFloat);
    auto csum = x.cumsum(1) / torch::arange(1, ids.size(1) + 1, torch::kFloat).view({1, -1, 1});
    auto h = torch::tanh(mix(csum)) + x;
    hafrm::ModelOutputs out;
    if (fused) {
      out.lm_hidden = norm(h);
      out.lm_head_weight = head->weight;
    } else {
      out.logits = head(norm(h));
    }
    out.token_rewards = score(h).squeeze(-1);
    return out;
  }
  bool fused;
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear mix{nullptr}, head{nullptr}, score{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(TinyHaf);

// A type with no haf_forward, plugged in through a trait specialisation.
struct ExternalModel {
  TinyHaf inner{60, 8};
};

// Prompt of 3 tokens; right padding of 2 on the last row only.
hafrm::PreferenceBatch make_batch(int64_t B, int64_t V) {
  return random_preference_batch<hafrm::PreferenceBatch>(
      B, V, 9, 7, 3, [B](int64_t r, int64_t) -> int64_t { return r == B - 1 ? 2 : 0; });
}
}  // namespace

template <>
struct hafrm::model_traits<ExternalModel> {
  static hafrm::ModelOutputs forward(ExternalModel& m, const torch::Tensor& ids,
                                     const torch::Tensor& mask) {
    return m.inner->haf_forward(ids, mask);
  }
};

TEST_CASE("reward read-out: last real token by default, last position on request", "[model]") {
  auto r = torch::arange(12, torch::kFloat).view({3, 4});
  auto mask = torch::tensor({{1, 1, 1, 1}, {1, 1, 0, 0}, {0, 1, 1, 0}});  // right and left pad
  auto last = hafrm::read_rewards(r, mask);
  CHECK(last[0].item<float>() == 3);
  CHECK(last[1].item<float>() == 5);
  CHECK(last[2].item<float>() == 10);
  auto pos = hafrm::read_rewards(r.unsqueeze(-1), mask, hafrm::RewardReadout::kLastPosition);
  CHECK(pos[1].item<float>() == 7);
  require_error(
      [&] {
        hafrm::read_rewards(r, torch::zeros({3, 4}));
      },
      {"attention_mask", "at least one real"});
  require_error([&] { hafrm::read_rewards(r, torch::ones({3, 5})); }, {"attention_mask", "shape"});
}

TEST_CASE("forward_pair equals two separate forwards and feeds the hybrid loss", "[model]") {
  torch::manual_seed(static_cast<int64_t>(fresh_seed() % 100000));
  const int64_t V = 50;
  TinyHaf model(V, 16), reference(V, 16);
  auto b = make_batch(3, V);
  auto f = hafrm::forward_pair(model, reference, b);
  // Separate forwards on each side, with the shift done by hand.
  auto side = [&](TinyHafImpl& m, const torch::Tensor& ids, const torch::Tensor& mask,
                  const torch::Tensor& labels) {
    auto out = m.haf_forward(ids, mask);
    auto lsm = torch::log_softmax(out.logits.slice(1, 0, -1).to(torch::kDouble), -1);
    auto y = labels.slice(1, 1);
    auto lp = lsm.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1) * (y != -100);
    return std::make_pair(lp.sum(1), hafrm::read_rewards(out.token_rewards, mask));
  };
  auto [pc, rc] = side(*model, b.chosen_ids, b.chosen_mask, b.chosen_labels);
  auto [pr, rr] = side(*model, b.rejected_ids, b.rejected_mask, b.rejected_labels);
  torch::NoGradGuard ng;
  auto [qc, unused1] = side(*reference, b.chosen_ids, b.chosen_mask, b.chosen_labels);
  auto [qr, unused2] = side(*reference, b.rejected_ids, b.rejected_mask, b.rejected_labels);
  CHECK(close(f.policy.policy_chosen, pc, 1e-5, 1e-5));
  CHECK(close(f.policy.policy_rejected, pr, 1e-5, 1e-5));
  CHECK(close(f.policy.reference_chosen, qc, 1e-5, 1e-5));
  CHECK(close(f.policy.reference_rejected, qr, 1e-5, 1e-5));
  CHECK(close(f.rewards.chosen, rc, 1e-5, 1e-6));
  CHECK(close(f.rewards.rejected, rr, 1e-5, 1e-6));
  CHECK(f.policy.chosen_count[2].item<int64_t>() == 9 - 1 - 2 - 2);
}

TEST_CASE("hybrid training step: gradients reach the right parameters", "[model]") {
  const int64_t V = 40;
  TinyHaf model(V, 12), reference(V, 12);
  for (auto& p : reference->parameters()) p.requires_grad_(false);
  auto b = make_batch(4, V);
  auto f = hafrm::forward_pair(model, reference, b);
  hafrm::HybridLoss<> haf;
  auto out = haf(f.rewards, f.policy, 0);
  out.loss.backward();
  CHECK(model->head->weight.grad().abs().sum().item<double>() > 0);   // policy term
  CHECK(model->score->weight.grad().abs().sum().item<double>() > 0);  // reward term
  CHECK(model->emb->weight.grad().abs().sum().item<double>() > 0);    // shared backbone
  CHECK(!reference->head->weight.grad().defined());
  // The reward head is the only path of the reward loss: with alpha 0 the LM head gets nothing.
  model->zero_grad();
  auto f2 = hafrm::forward_pair(model, reference, b);
  hafrm::HybridLoss<> bt_only{{}, {}, {.reward_weight = 1.0, .alpha = 0.0}};
  bt_only(f2.rewards, f2.policy).loss.backward();
  auto g = model->head->weight.grad();
  CHECK((!g.defined() || g.abs().sum().item<double>() == 0.0));
}

TEST_CASE("a training step reads its content checks through values_hold only", "[model]") {
  // Every check on tensor contents goes through detail::values_hold: read on the CPU (counted
  // here), queued as a device-side assert on a GPU, where it is then no device-to-host sync. A
  // default HaF step (forward_pair, Bradley-Terry + DPO, backward) makes a handful of them.
  const int64_t V = 40;
  TinyHaf model(V, 12), reference(V, 12);
  auto b = make_batch(4, V);
  const int64_t before = hafrm::detail::host_value_reads().load();
  auto f = hafrm::forward_pair(model, reference, b);
  const int64_t after_forward = hafrm::detail::host_value_reads().load();
  hafrm::HybridLoss<> haf;
  auto out = haf(f.rewards, f.policy, 0);
  out.loss.backward();
  const int64_t after_step = hafrm::detail::host_value_reads().load();
  INFO("content checks: forward_pair " << after_forward - before << ", loss "
                                       << after_step - after_forward);
  CHECK(after_forward - before >= 1);      // the reward read-out's mask
  CHECK(after_step - after_forward == 2);  // DPO's token counts, chosen and rejected
  CHECK(after_step - before <= 6);
}

TEST_CASE("precomputed reference log-probs and the fused linear head give the same result",
          "[model]") {
  const int64_t V = 60;
  TinyHaf model(V, 16), fused(V, 16, /*fused_head=*/true), reference(V, 16);
  torch::NoGradGuard ng_copy;
  for (size_t i = 0; i < model->parameters().size(); ++i)
    fused->parameters()[i].copy_(model->parameters()[i]);
  auto b = make_batch(3, V);
  auto direct = hafrm::forward_pair(model, reference, b);
  auto [rc, rr] = hafrm::reference_logprobs(reference, b);
  b.reference_chosen = rc, b.reference_rejected = rr;
  auto pre = hafrm::forward_pair(fused, b);
  CHECK(close(pre.policy.reference_chosen, direct.policy.reference_chosen, 0, 0));
  CHECK(close(pre.policy.policy_chosen, direct.policy.policy_chosen, 1e-5, 1e-5));
  CHECK(close(pre.policy.policy_rejected, direct.policy.policy_rejected, 1e-5, 1e-5));
  ExternalModel ext;
  auto e = hafrm::forward_pair(ext, b);
  CHECK(e.rewards.chosen.size(0) == 3);
}

TEST_CASE("forward_pair rejects malformed batches", "[model]") {
  TinyHaf model(30, 8);
  auto b = make_batch(2, 30);
  auto bad = b;
  bad.rejected_ids = bad.rejected_ids.slice(0, 0, 1);
  require_error([&] { hafrm::forward_pair(model, bad); }, {"forward_pair", "rejected"});
  bad = b;
  bad.chosen_labels = bad.chosen_labels.slice(1, 0, 5);
  require_error([&] { hafrm::forward_pair(model, bad); }, {"chosen_labels", "same shape"});
  bad = b;
  bad.chosen_ids = bad.chosen_ids.to(torch::kFloat);
  require_error([&] { hafrm::forward_pair(model, bad); }, {"chosen_ids", "int64"});
  bad = b;
  bad.chosen_labels = bad.chosen_labels.clone().fill_(99);
  require_error([&] { hafrm::forward_pair(model, bad); }, {"labels", "[0, 30)"});
}
