// Trainer-side helpers (TR-DPO reference sync, KTO's KL estimate, the aot batch sort) and the
// per-token part of the policy inputs that forward_pair fills in its single pass.
#include <algorithm>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

TEST_CASE("TR-DPO sync mixes the policy into the reference in place", "[losses]") {
  torch::nn::Sequential policy(torch::nn::Linear(4, 3), torch::nn::Tanh(), torch::nn::Linear(3, 2));
  torch::nn::Sequential reference(torch::nn::Linear(4, 3), torch::nn::Tanh(),
                                  torch::nn::Linear(3, 2));
  std::vector<torch::Tensor> before_ref, before_pol;
  std::vector<const void*> storage;
  for (auto& p : reference->parameters()) {
    before_ref.push_back(p.detach().clone());
    storage.push_back(p.data_ptr());
  }
  for (auto& p : policy->parameters()) before_pol.push_back(p.detach().clone());
  const double alpha = 0.6;
  hafrm::sync_reference(*policy, *reference, alpha);
  auto ref = reference->parameters(), pol = policy->parameters();
  for (size_t i = 0; i < ref.size(); ++i) {
    auto expect = alpha * before_pol[i] + (1 - alpha) * before_ref[i];
    CHECK(max_abs_diff(ref[i], expect) < 1e-6);
    CHECK(ref[i].data_ptr() == storage[i]);           // in place
    CHECK(max_abs_diff(pol[i], before_pol[i]) == 0);  // the policy is untouched
  }
  // alpha 1 copies the policy, alpha 0 keeps the reference.
  hafrm::sync_reference(*policy, *reference, 1.0);
  for (size_t i = 0; i < ref.size(); ++i) CHECK(max_abs_diff(ref[i], pol[i]) == 0);
  // The schedule: every `steps` completed steps, never at step 0.
  hafrm::ReferenceSync sync{.steps = 3, .alpha = 0.5};
  std::vector<int64_t> synced;
  for (int64_t s = 0; s <= 9; ++s)
    if (sync(s, *policy, *reference)) synced.push_back(s);
  CHECK(synced == std::vector<int64_t>{3, 6, 9});
  CHECK(hafrm::ReferenceSync{}.due(512));
  CHECK(!hafrm::ReferenceSync{}.due(511));
  // Errors name the argument.
  require_error([&] { hafrm::sync_reference(*policy, *reference, 1.5); },
                {"sync_reference", "alpha"});
  torch::nn::Linear other(4, 2);
  require_error([&] { hafrm::sync_reference(*policy, *other, 0.5); },
                {"sync_reference", "reference", "as many parameters"});
  torch::nn::Sequential wrong(torch::nn::Linear(4, 5), torch::nn::Tanh(), torch::nn::Linear(5, 2));
  require_error([&] { hafrm::sync_reference(*policy, *wrong, 0.5); },
                {"reference parameter 0", "shape"});
  require_error([&] { hafrm::ReferenceSync{.steps = 0}.due(1); }, {"ReferenceSync", "steps"});
}

TEST_CASE("KTO's KL estimate from mismatched pairs", "[losses]") {
  CHECK(torch::equal(hafrm::kto_mismatched_index(4), torch::tensor({3, 0, 1, 2}, torch::kLong)));
  require_error([] { hafrm::kto_mismatched_index(1); },
                {"kto_mismatched_index", "n", "at least 2"});
  auto pi = randn({8}).requires_grad_(), rho = randn({8});
  auto z = hafrm::kto_kl_estimate(pi, rho);
  CHECK(!z.requires_grad());
  CHECK(z.dim() == 0);
  CHECK(z.item<double>() == Approx(std::max(0.0, (pi - rho).mean().item<double>())).margin(1e-12));
  CHECK(hafrm::kto_kl_estimate(rho - 5, rho).item<double>() == 0.0);  // clamped at 0
  CHECK(hafrm::kto_kl_estimate(rho + 2, rho).item<double>() == Approx(2.0));
  require_error([&] { hafrm::kto_kl_estimate(pi, randn({7})); },
                {"kto_kl_estimate", "reference_kl"});
  require_error([&] { hafrm::kto_kl_estimate(torch::empty({0}), torch::empty({0})); },
                {"policy_kl", "empty"});
}

TEST_CASE("the aot batch sort and its gradient", "[losses]") {
  const int64_t B = 9;
  auto a = randn({B}).requires_grad_(), b = randn({B});
  auto d = hafrm::aot_sorted_difference(a, b);
  std::vector<double> va(B), vb(B);
  for (int64_t i = 0; i < B; ++i) va[i] = a[i].item<double>(), vb[i] = b[i].item<double>();
  std::sort(va.begin(), va.end());
  std::sort(vb.begin(), vb.end());
  for (int64_t i = 0; i < B; ++i) CHECK(d[i].item<double>() == va[i] - vb[i]);
  // d(sum_k w_k d_k)/da_i = w at a_i's rank.
  auto w = torch::arange(1, B + 1, torch::kDouble);
  (d * w).sum().backward();
  auto rank = std::get<1>(torch::sort(std::get<1>(torch::sort(a.detach()))));
  CHECK(max_abs_diff(a.grad(), w.index({rank})) == 0);
  require_error([&] { hafrm::aot_sorted_difference(a, randn({B + 1})); },
                {"aot_sorted_difference", "b"});
}

namespace {
// A tiny HaF-shaped model: embedding -> causal running mean -> MLP; LM head and reward head.
struct MiniHafImpl : torch::nn::Module {
  MiniHafImpl(int64_t V, int64_t H) {
    emb = register_module("emb", torch::nn::Embedding(V, H));
    mix = register_module("mix", torch::nn::Linear(H, H));
    head = register_module("head", torch::nn::Linear(H, V));
    score = register_module("score", torch::nn::Linear(H, 1));
  }
  hafrm::ModelOutputs haf_forward(const torch::Tensor& ids, const torch::Tensor& mask) {
    auto x = emb(ids) * mask.unsqueeze(-1).to(torch::kFloat);
    auto h = torch::tanh(mix(x.cumsum(1))) + x;
    hafrm::ModelOutputs out;
    out.logits = head(h);
    out.token_rewards = score(h).squeeze(-1);
    return out;
  }
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear mix{nullptr}, head{nullptr}, score{nullptr};
};
TORCH_MODULE(MiniHaf);

// Prompt of 2 tokens; right padding of a random length on every row.
hafrm::PreferenceBatch make_batch(int64_t B, int64_t V) {
  return random_preference_batch<hafrm::PreferenceBatch>(B, V, 10, 7, 2, [](int64_t, int64_t T) {
    return torch::randint(0, T - 3, {1}).item<int64_t>();
  });
}
}  // namespace

TEST_CASE("forward_pair keeps one pass's per-token inputs for LD-DPO and WPO", "[hybrid]") {
  const int64_t V = 40;
  MiniHaf model(V, 12), reference(V, 12);
  auto b = make_batch(4, V);
  hafrm::PairForwardOptions o;
  o.keep_token_inputs = true;
  o.logprobs.return_log_sum_p2 = true;
  auto f = hafrm::forward_pair(model, reference, b, o);
  REQUIRE(f.policy.tokens.has_value());
  const auto& tk = *f.policy.tokens;
  CHECK(close(tk.policy_chosen.sum(1), f.policy.policy_chosen, 1e-6, 1e-5));
  CHECK(close(tk.policy_rejected.sum(1), f.policy.policy_rejected, 1e-6, 1e-5));
  CHECK(close(tk.reference_chosen.sum(1), f.policy.reference_chosen, 1e-6, 1e-5));
  CHECK(close(tk.reference_rejected.sum(1), f.policy.reference_rejected, 1e-6, 1e-5));
  CHECK(torch::equal(tk.chosen_mask.sum(1), f.policy.chosen_count));
  CHECK(tk.log_sum_p2_chosen.defined());
  CHECK(!tk.reference_chosen.requires_grad());
  // Without the flag nothing changes.
  auto plain = hafrm::forward_pair(model, reference, b);
  CHECK(!plain.policy.tokens.has_value());
  CHECK(close(plain.policy.policy_chosen, f.policy.policy_chosen, 1e-6, 1e-6));
  // ld_alpha = 1 is plain DPO; a list of LD, WPO and sft losses runs off the same inputs and its
  // gradient reaches the LM head through the per-token log-probs.
  auto ld1 = hafrm::make_policy_loss("sigmoid:ld_alpha=1")(f.policy).loss.item<double>();
  CHECK(ld1 == Approx(hafrm::Dpo{}(f.policy).loss.item<double>()).epsilon(1e-5));
  auto list = hafrm::make_policy_loss("sigmoid:ld_alpha=0.5,ipo:use_weighting=true,sft@0.1");
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::AnyPolicyLoss> haf{{}, list};
  auto out = haf(f.rewards, f.policy, 0);
  CHECK(all_finite(out.loss));
  out.loss.backward();
  CHECK(model->head->weight.grad().abs().sum().item<double>() > 0);
  // Precomputed reference sums carry no per-token reference: LD-DPO says what is missing.
  auto [rc, rr] = hafrm::reference_logprobs(reference, b);
  b.reference_chosen = rc, b.reference_rejected = rr;
  auto pre = hafrm::forward_pair(model, b, o);
  CHECK(close(pre.policy.reference_chosen, f.policy.reference_chosen, 0, 0));
  require_error([&] { hafrm::make_policy_loss("sigmoid:ld_alpha=0.5")(pre.policy); },
                {"inputs.tokens.reference_chosen", "required"});
  CHECK_NOTHROW(hafrm::make_policy_loss("sigmoid:use_weighting=true")(pre.policy));
}
