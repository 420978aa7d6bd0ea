// What the header examples (// example-begin <name> <Fixture>) take as given: each fixture holds,
// under the names the examples use, small valid inputs built from fresh random numbers. The
// generated TU (extract.py) makes every example a TEST_CASE_METHOD over its fixture, so the
// example's code sees these members as plain names. Kept to what the examples need.
#pragma once

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "hafrm/kernels/cpu/capability.hpp"
#include "hafrm/kernels/cpu/token_logprobs.hpp"
#include "hafrm/model/torchscript.hpp"
#include "hafrm/torch/checks.hpp"
#include "hafrm/torch/reference_logprobs.hpp"

namespace hafrm_examples {

struct NoFixture {};

// A row of logits for the scalar online log-sum-exp.
struct Row {
  std::vector<float> row{0.5f, -1.25f, 3.f, 2.f, -INFINITY, 0.f};
};

// Raw-pointer inputs of the CPU kernel: n rows of v float logits and their labels.
struct KernelRows {
  int64_t n = 5, v = 11;
  std::vector<float> logits_storage = make_logits();
  std::vector<int64_t> labels_storage{3, -100, 0, 10, 7};
  const float* logits = logits_storage.data();
  const int64_t* labels = labels_storage.data();
  std::vector<float> lp = std::vector<float>(static_cast<size_t>(n));
  std::vector<float> make_logits() const {
    auto t = torch::randn({n * v});
    return {t.data_ptr<float>(), t.data_ptr<float>() + t.numel()};
  }
};

// The CPU level an example sets is put back afterwards (later tests run at the detected level).
struct CpuLevel {
  hafrm::kernels::cpu::CpuCapability saved = hafrm::kernels::cpu::cpu_capability();
  ~CpuLevel() { hafrm::kernels::cpu::set_cpu_capability(saved); }
};

// Logits [B, T, V] with response labels (-100 on a prompt of 2), the LM head's input and weight.
struct Logits {
  int64_t B = 2, T = 6, V = 13, H = 4;
  torch::Tensor logits = torch::randn({B, T, V}).requires_grad_();
  torch::Tensor labels = make_labels();
  torch::Tensor hidden = torch::randn({B, T, H});
  torch::Tensor weight = torch::randn({V, H});
  torch::Tensor lm_head_weight = weight;
  hafrm::TokenLogProbOptions opts{};
  torch::Tensor make_labels() const {
    auto l = torch::randint(0, V, {B, T}, torch::kLong);
    l.slice(1, 0, 2).fill_(-100);
    return l;
  }
};

// Summed log-probs of B pairs: policy (with grad) and reference, token counts, the per-token part
// (LD-DPO, WPO), a KTO KL estimate and the chosen prompts' sums (ORPO's TRL form), so that every
// policy loss accepts `inputs`.
struct Policy {
  int64_t B = 4, T = 5;
  int64_t step = 3;
  hafrm::PolicyInputs inputs = make();
  static torch::Tensor logprobs(std::vector<int64_t> shape) {
    return -(torch::rand(shape, torch::kDouble) * 3 + 0.1);
  }
  hafrm::PolicyInputs make() const {
    hafrm::PolicyInputs in;
    auto mask = torch::ones({B, T}, torch::kBool);
    hafrm::PolicyTokenInputs tk;
    tk.policy_chosen = logprobs({B, T}).requires_grad_();
    tk.policy_rejected = logprobs({B, T}).requires_grad_();
    tk.reference_chosen = logprobs({B, T}), tk.reference_rejected = logprobs({B, T});
    tk.chosen_mask = mask, tk.rejected_mask = mask;
    tk.log_sum_p2_chosen = logprobs({B, T}), tk.log_sum_p2_rejected = logprobs({B, T});
    in.policy_chosen = tk.policy_chosen.sum(1), in.policy_rejected = tk.policy_rejected.sum(1);
    in.reference_chosen = tk.reference_chosen.sum(1);
    in.reference_rejected = tk.reference_rejected.sum(1);
    in.chosen_count = torch::full({B}, T, torch::kLong);
    in.rejected_count = torch::full({B}, T, torch::kLong);
    in.tokens = tk;
    in.kl_estimate = torch::tensor(0.1, torch::kDouble);
    in.policy_chosen_prompt = logprobs({B});
    in.chosen_prompt_count = torch::full({B}, 3, torch::kLong);
    return in;
  }
};

// Per-sequence log-probs of B pairs (sequence_logprobs' result) and reference sums.
struct Sequences {
  int64_t B = 3, T = 4, V = 7;
  hafrm::SequenceLogProbs seq_c = make(), seq_r = make();
  torch::Tensor ref_c = Policy::logprobs({B}), ref_r = Policy::logprobs({B});
  hafrm::SequenceLogProbs make() const {
    return hafrm::sequence_logprobs(torch::randn({B, T, V}),
                                    torch::randint(0, V, {B, T}, torch::kLong));
  }
};

// Reward-head scores: a pair's rewards r_c, r_r (and as RewardInputs), a [B, K] ranking.
struct Rewards {
  int64_t B = 4;
  torch::Tensor r_c = torch::randn({B}).requires_grad_(), r_r = torch::randn({B});
  hafrm::RewardInputs rewards{.chosen = r_c, .rejected = r_r};
  torch::Tensor scores = torch::randn({B, 3});
};

// Both terms of the hybrid loss.
struct Hybrid : Policy {
  hafrm::RewardInputs reward_inputs{.chosen = torch::randn({B}).requires_grad_(),
                                    .rejected = torch::randn({B})};
  hafrm::PolicyInputs policy_inputs = inputs;
};

// Unpaired completions: log-probs, desirable labels, a KL batch of mismatched pairs.
struct Unpaired {
  int64_t n = 6;
  torch::Tensor pi = Policy::logprobs({n}), rho = Policy::logprobs({n});
  torch::Tensor labels = torch::tensor({1, 0, 1, 1, 0, 0}, torch::kBool);
  torch::Tensor pi_kl = Policy::logprobs({n}), rho_kl = Policy::logprobs({n});
  hafrm::KtoInputs in{.policy = pi, .reference = rho, .desirable = labels};
};

// A tiny HaF model (shared backbone, LM head, reward head) with haf_forward.
struct TinyModelImpl : torch::nn::Module {
  TinyModelImpl(int64_t V, int64_t H) {
    emb = register_module("emb", torch::nn::Embedding(V, H));
    head = register_module("head", torch::nn::Linear(torch::nn::LinearOptions(H, V).bias(false)));
    score = register_module("score", torch::nn::Linear(H, 1));
  }
  hafrm::ModelOutputs haf_forward(const torch::Tensor& ids, const torch::Tensor& mask) {
    auto h = torch::tanh(emb(ids).cumsum(1)) * mask.unsqueeze(-1).to(torch::kFloat);
    return {.logits = head(h), .token_rewards = score(h).squeeze(-1)};
  }
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear head{nullptr}, score{nullptr};
};
TORCH_MODULE(TinyModel);

// A policy model, a frozen reference copy, one preference batch (right-padded, prompt of 2).
struct PairModel {
  int64_t B = 3, V = 17, H = 8;
  int64_t step = 5;
  TinyModel model{V, H};
  TinyModel reference = frozen_copy();
  torch::Tensor ids_c = make_ids(7), mask_c = make_mask(7), labels_c = make_labels(ids_c, mask_c);
  torch::Tensor ids_r = make_ids(5), mask_r = make_mask(5), labels_r = make_labels(ids_r, mask_r);
  hafrm::PreferenceBatch batch{.chosen_ids = ids_c,
                               .chosen_mask = mask_c,
                               .chosen_labels = labels_c,
                               .rejected_ids = ids_r,
                               .rejected_mask = mask_r,
                               .rejected_labels = labels_r};
  torch::Tensor token_rewards = torch::randn({B, 7});
  torch::Tensor attention_mask = mask_c, mask = mask_c;
  TinyModel frozen_copy() {
    TinyModel r{V, H};
    torch::NoGradGuard no_grad;
    auto dst = r->parameters(), src = model->parameters();
    for (size_t i = 0; i < dst.size(); ++i) dst[i].copy_(src[i]).requires_grad_(false);
    return r;
  }
  torch::Tensor make_ids(int64_t T) const { return torch::randint(0, V, {B, T}, torch::kLong); }
  torch::Tensor make_mask(int64_t T) const {
    auto m = torch::ones({B, T}, torch::kLong);
    m.index_put_({B - 1, torch::indexing::Slice(T - 2, torch::indexing::None)}, 0);
    return m;
  }
  static torch::Tensor make_labels(const torch::Tensor& ids, const torch::Tensor& m) {
    auto l = ids.masked_fill(m == 0, -100);
    l.slice(1, 0, 2).fill_(-100);
    return l;
  }
};

// A TorchScript module saved to a temporary file `path`, returning (logits, token_rewards).
struct ScriptedModel {
  std::string path = save();
  torch::Tensor ids = torch::randint(0, 9, {2, 5}, torch::kLong);
  torch::Tensor mask = torch::ones({2, 5}, torch::kLong);
  ~ScriptedModel() { std::filesystem::remove(path); }
  static std::string save() {
    torch::jit::Module m("ExampleModel");
    m.define(R"JIT(
def forward(self, input_ids, attention_mask):
    logits = torch.ones([input_ids.size(0), input_ids.size(1), 9])
    return (logits, attention_mask.float())
)JIT");
    const auto p = std::filesystem::temp_directory_path() /
                   ("hafrm_header_example_" + std::to_string(hafrm_fresh_id()) + ".pt");
    m.save(p.string());
    return p.string();
  }
  static uint64_t hafrm_fresh_id() {
    static std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
};

}  // namespace hafrm_examples

// A model type without haf_forward (model_traits.hpp's specialisation example plugs it in).
struct MyModel {
  hafrm_examples::TinyModel net{11, 4};
  hafrm::ModelOutputs run(const torch::Tensor& ids, const torch::Tensor& mask) {
    return net->haf_forward(ids, mask);
  }
};

namespace hafrm_examples {
struct TraitModel {
  MyModel my_model;
  torch::Tensor ids = torch::randint(0, 11, {2, 6}, torch::kLong);
  torch::Tensor mask = torch::ones({2, 6}, torch::kLong);
};
}  // namespace hafrm_examples
