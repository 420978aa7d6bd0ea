// Computes the HaF hybrid loss through the installed hafrm package and checks it is sane.
#include <hafrm/hafrm.hpp>

#include <iostream>

int main() {
  torch::manual_seed(0);
  // Rewards from a reward head and summed response log-probs from the LM head.
  auto logits = torch::randn({4, 6, 32}, torch::requires_grad());
  auto labels = torch::randint(0, 32, {4, 6});
  auto shifted = hafrm::shift_for_causal_lm(logits, labels);
  auto seq = hafrm::sequence_logprobs(shifted.logits, shifted.labels);
  hafrm::RewardInputs rewards{.chosen = torch::randn({2}), .rejected = torch::randn({2})};
  hafrm::PolicyInputs policy;
  policy.policy_chosen = seq.sum.slice(0, 0, 2);
  policy.policy_rejected = seq.sum.slice(0, 2, 4);
  policy.reference_chosen = torch::randn({2}) - 20;
  policy.reference_rejected = torch::randn({2}) - 20;
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo> haf;
  auto out = haf(rewards, policy, /*step=*/0);
  out.loss.backward();
  const bool ok =
      std::isfinite(out.loss.item<double>()) && logits.grad().abs().sum().item<double>() > 0;
  std::cout << "hybrid loss " << out.loss.item<double>() << (ok ? "" : " (FAILED)") << "\n";
  return ok ? 0 : 1;
}
