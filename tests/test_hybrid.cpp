// The HaF hybrid: weighting schedules, composition, weighted lists and their errors.
#include <cmath>
#include <numbers>

#include "hafrm/losses/hybrid.hpp"
#include "hafrm/losses/reference_free.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {
struct Batch {
  hafrm::RewardInputs rewards;
  hafrm::PolicyInputs policy;
};
Batch make_batch(int64_t B) {
  Batch b;
  b.rewards.chosen = randn({B}).requires_grad_();
  b.rewards.rejected = randn({B}).requires_grad_();
  b.policy.policy_chosen = (-randn({B}).abs() * 10).requires_grad_();
  b.policy.policy_rejected = (-randn({B}).abs() * 10).requires_grad_();
  b.policy.reference_chosen = -randn({B}).abs() * 10;
  b.policy.reference_rejected = -randn({B}).abs() * 10;
  b.policy.chosen_count = torch::randint(1, 20, {B});
  b.policy.rejected_count = torch::randint(1, 20, {B});
  return b;
}
}  // namespace

TEST_CASE("weighting schedules give the documented weights", "[hybrid]") {
  hafrm::ConstantWeighting c;
  CHECK(c(0).reward == 1.0);
  CHECK(c(12345).policy == 0.2);
  hafrm::AlternateWeighting alt{.period = 3, .reward_weight = 1.0, .alpha = 0.2};
  for (int64_t s = 0; s < 12; ++s) {
    auto w = alt(s);
    const bool policy_block = (s / 3) % 2 == 0;
    CHECK(w.policy == (policy_block ? 0.2 : 0.0));
    CHECK(w.reward == (policy_block ? 0.0 : 1.0));
  }
  hafrm::LinearWarmupWeighting lin{.warmup_steps = 10, .reward_weight = 1.0, .alpha = 0.5};
  CHECK(lin(0).policy == 0.0);
  CHECK(lin(5).policy == Approx(0.25));
  CHECK(lin(10).policy == Approx(0.5));
  CHECK(lin(100).policy == Approx(0.5));
  hafrm::CosineWeighting cos{
      .total_steps = 100, .reward_weight = 1.0, .alpha_start = 0.4, .alpha_end = 0.1};
  CHECK(cos(0).policy == Approx(0.4));
  CHECK(cos(50).policy == Approx(0.25));
  CHECK(cos(25).policy == Approx(0.1 + 0.15 * (1 + std::cos(std::numbers::pi / 4))));
  CHECK(cos(1000).policy == Approx(0.1));
}

TEST_CASE("hybrid loss is w_R * reward + alpha * policy, with every component exposed",
          "[hybrid]") {
  auto b = make_batch(6);
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo> haf;
  auto out = haf(b.rewards, b.policy, 0);
  auto r = hafrm::BradleyTerry{}(b.rewards).loss.item<double>();
  auto p = hafrm::Dpo{}(b.policy).loss.item<double>();
  CHECK(out.reward_loss.item<double>() == Approx(r));
  CHECK(out.policy_loss.item<double>() == Approx(p));
  CHECK(out.loss.item<double>() == Approx(r + 0.2 * p));
  CHECK(out.metrics.count("reward/accuracy") == 1);
  CHECK(out.metrics.count("policy/rewards_accuracy") == 1);
  // Gradient split: the reward term reaches the rewards only, the policy term the log-probs.
  out.loss.backward();
  CHECK(b.rewards.chosen.grad().abs().sum().item<double>() > 0);
  CHECK(b.policy.policy_chosen.grad().abs().sum().item<double>() > 0);
}

TEST_CASE("alternate mode removes one term's gradient exactly", "[hybrid]") {
  auto b = make_batch(5);
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Ipo, hafrm::AlternateWeighting> haf{
      {}, {.beta = 0.5, .form = hafrm::IpoForm::kSum}, {.period = 2}};
  // A 0-weight term is left out of the graph, so its inputs get no gradient (undefined = 0).
  auto grad_sum = [](const torch::Tensor& x) {
    return x.grad().defined() ? x.grad().abs().sum().item<double>() : 0.0;
  };
  haf(b.rewards, b.policy, 1).loss.backward();  // block 0: policy only
  CHECK(grad_sum(b.rewards.chosen) == 0.0);
  CHECK(grad_sum(b.policy.policy_chosen) > 0);
  b.policy.policy_chosen.mutable_grad().zero_();
  haf(b.rewards, b.policy, 2).loss.backward();  // block 1: reward only
  CHECK(grad_sum(b.rewards.chosen) > 0);
  CHECK(grad_sum(b.policy.policy_chosen) == 0.0);
}

TEST_CASE("a weighted list of policy losses sums its weighted members", "[hybrid]") {
  auto b = make_batch(7);
  hafrm::PolicyLossList list{
      {1.0, hafrm::Dpo{.beta = 0.1}}, {0.5, hafrm::Ipo{.beta = 0.5}}, {0.3, hafrm::ChosenNll{}}};
  auto out = list(b.policy);
  double expect = hafrm::Dpo{.beta = 0.1}(b.policy).loss.item<double>() +
                  0.5 * hafrm::Ipo{.beta = 0.5}(b.policy).loss.item<double>() +
                  0.3 * hafrm::ChosenNll{}(b.policy).loss.item<double>();
  CHECK(out.loss.item<double>() == Approx(expect));
  CHECK(out.metrics.count("ipo/loss") == 1);
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::PolicyLossList> haf{{}, list};
  auto h = haf(b.rewards, b.policy);
  CHECK(h.policy_loss.item<double>() == Approx(expect));
}

TEST_CASE("hybrid weightings and lists reject bad parameters", "[hybrid]") {
  auto b = make_batch(3);
  require_error([&] { hafrm::ConstantWeighting{.alpha = -0.1}(0); }, {"alpha", ">= 0"});
  require_error([&] { hafrm::ConstantWeighting{.reward_weight = -1}(0); }, {"reward_weight"});
  require_error([&] { hafrm::AlternateWeighting{.period = 0}(0); }, {"period"});
  require_error([&] { hafrm::ConstantWeighting{}(-1); }, {"step"});
  require_error([&] { hafrm::PolicyLossList{}.add(-1.0, hafrm::Dpo{}); }, {"weight"});
  require_error([&] { hafrm::PolicyLossList{}(b.policy); }, {"at least one loss"});
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo> bad{{}, {.beta = 0}};
  require_error([&] { bad(b.rewards, b.policy); }, {"beta"});
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo> none{{},
                                                          {.reduction = hafrm::Reduction::kNone}};
  require_error([&] { none(b.rewards, b.policy); }, {"reduction"});
}
