// The scoring API and the reward-only path: score_sequences / score_batch (no LM-head work,
// bucketing, input order, eval and inference mode), forward_pair with Heads::kReward,
// HybridLoss::needs_policy(), best-of-N rankings and reward normalisation.
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "hafrm/model/torchscript.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A causal HaF model (embedding -> running mean -> MLP, LM head, reward head) that takes
// hafrm::Heads. Its LM head throws while forbid_lm_head is set, so a test proves that a path never
// evaluates it. It records each forward's batch shape and the training flag it saw.
struct HeadsModelImpl : torch::nn::Module {
  HeadsModelImpl(int64_t V, int64_t H) {
    emb = register_module("emb", torch::nn::Embedding(V, H));
    mix = register_module("mix", torch::nn::Linear(H, H));
    drop = register_module("drop", torch::nn::Dropout(0.5));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({H})));
    head = register_module("head", torch::nn::Linear(torch::nn::LinearOptions(H, V).bias(false)));
    score = register_module("score", torch::nn::Linear(H, 1));
  }
  torch::Tensor lm_head(const torch::Tensor& h) {
    if (forbid_lm_head) throw std::logic_error("HeadsModel: LM head evaluated");
    ++lm_head_calls;
    return head(norm(h));
  }
  hafrm::ModelOutputs haf_forward(const torch::Tensor& ids, const torch::Tensor& mask,
                                  hafrm::Heads heads) {
    if (throw_in_forward) throw std::runtime_error("HeadsModel: forward failed");
    shapes.emplace_back(ids.size(0), ids.size(1));
    saw_training.push_back(is_training());
    auto x = emb(ids) * mask.unsqueeze(-1).to(torch::kFloat);
    auto mean = x.cumsum(1) / torch::arange(1, ids.size(1) + 1, torch::kFloat).view({1, -1, 1});
    auto h = drop(torch::tanh(mix(mean))) + x;
    hafrm::ModelOutputs out;
    if (heads == hafrm::Heads::kAll) out.logits = lm_head(h);
    out.token_rewards = score(h).squeeze(-1);
    return out;
  }
  bool forbid_lm_head = false, throw_in_forward = false;
  int64_t lm_head_calls = 0;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  std::vector<bool> saw_training;
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear mix{nullptr}, head{nullptr}, score{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(HeadsModel);

// A sequence classifier: no LM head at all, token rewards only, the two-argument haf_forward.
struct ClassifierImpl : torch::nn::Module {
  ClassifierImpl(int64_t V, int64_t H) {
    emb = register_module("emb", torch::nn::Embedding(V, H));
    score = register_module("score", torch::nn::Linear(H, 1));
  }
  hafrm::ModelOutputs haf_forward(const torch::Tensor& ids, const torch::Tensor& mask) {
    auto x = emb(ids) * mask.unsqueeze(-1).to(torch::kFloat);
    auto mean = x.cumsum(1) / torch::arange(1, ids.size(1) + 1, torch::kFloat).view({1, -1, 1});
    return {.token_rewards = score(torch::tanh(mean)).squeeze(-1)};
  }
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear score{nullptr};
};
TORCH_MODULE(Classifier);

// n sequences of lengths in [1, max_len], ids in [0, V), every length at least once when n allows.
std::vector<std::vector<int64_t>> random_sequences(int64_t n, int64_t max_len, int64_t V) {
  std::vector<std::vector<int64_t>> seqs;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len =
        i < max_len ? max_len - i : torch::randint(1, max_len + 1, {1}).item<int64_t>();
    auto t = torch::randint(0, V, {len}, torch::kLong);
    seqs.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + len);
  }
  // Shuffled, so that input order is neither sorted by length nor its reverse.
  auto perm = torch::randperm(n, torch::kLong);
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(seqs[perm[i].item<int64_t>()]);
  return out;
}

// The reward of each sequence alone, [1, L], through haf_forward directly, read at its last token.
torch::Tensor one_by_one(HeadsModelImpl& m, const std::vector<std::vector<int64_t>>& seqs) {
  torch::NoGradGuard ng;
  std::vector<float> r;
  for (const auto& s : seqs) {
    auto ids = torch::tensor(s, torch::kLong).unsqueeze(0);
    auto out = m.haf_forward(ids, torch::ones_like(ids), hafrm::Heads::kAll);
    r.push_back(out.token_rewards[0][-1].item<float>());
  }
  return torch::tensor(r);
}

hafrm::PreferenceBatch make_batch(int64_t B, int64_t V) {
  return random_preference_batch<hafrm::PreferenceBatch>(
      B, V, 9, 7, 3, [B](int64_t r, int64_t) -> int64_t { return r == B - 1 ? 2 : 0; });
}

}  // namespace

TEST_CASE("scoring never evaluates the LM head of a model that takes Heads", "[scoring][model]") {
  const int64_t V = 23;
  HeadsModel model(V, 8);
  model->forbid_lm_head = true;
  // The guard itself: a forward with every head does reach the LM head and throws.
  auto ids = torch::randint(0, V, {3, 6}, torch::kLong), mask = torch::ones({3, 6}, torch::kLong);
  CHECK_THROWS_WITH(hafrm::model_forward(model, ids, mask), Catch::Contains("LM head evaluated"));
  CHECK_THROWS_WITH(hafrm::model_forward(model, ids, mask, hafrm::Heads::kAll),
                    Catch::Contains("LM head evaluated"));

  auto seqs = random_sequences(11, 7, V);
  torch::Tensor r;
  REQUIRE_NOTHROW(r = hafrm::score_sequences(model, seqs));
  CHECK(r.sizes() == torch::IntArrayRef{11});
  CHECK(r.scalar_type() == torch::kFloat);
  CHECK(r.device().is_cpu());
  CHECK(!r.is_inference());
  mask[1].slice(0, 4).fill_(0);
  torch::Tensor b;
  REQUIRE_NOTHROW(b = hafrm::score_batch(model, ids, mask));
  CHECK(b.sizes() == torch::IntArrayRef{3});
  CHECK(!b.is_inference());
  // forward_pair's reward-only path: rewards only, same values as the full pass.
  auto batch = make_batch(4, V);
  hafrm::PairForward f;
  REQUIRE_NOTHROW(f = hafrm::forward_pair(model, model, batch, {.heads = hafrm::Heads::kReward}));
  CHECK(!f.policy.policy_chosen.defined());
  CHECK(!f.policy.policy_rejected.defined());
  CHECK(!f.policy.reference_chosen.defined());
  CHECK(model->lm_head_calls == 0);
  // Labels are optional there, but a pair's two sides must agree.
  auto half_labelled = batch;
  half_labelled.rejected_labels = torch::Tensor();
  require_error(
      [&] { hafrm::forward_pair(model, half_labelled, {.heads = hafrm::Heads::kReward}); },
      {"forward_pair", "'rejected_labels'", "exactly when chosen_labels"});
  half_labelled.chosen_labels = torch::Tensor();
  CHECK_NOTHROW(hafrm::forward_pair(model, half_labelled, {.heads = hafrm::Heads::kReward}));
  model->forbid_lm_head = false;
  model->eval();  // dropout off, so that the two passes compare
  auto full = hafrm::forward_pair(model, batch);
  CHECK(model->lm_head_calls == 1);
  auto reward_only = hafrm::forward_pair(model, batch, {.heads = hafrm::Heads::kReward});
  CHECK(close(reward_only.rewards.chosen, full.rewards.chosen, 0, 1e-6));
  CHECK(close(reward_only.rewards.rejected, full.rewards.rejected, 0, 1e-6));
  CHECK(reward_only.rewards.chosen.requires_grad());  // trainable: not under inference mode
}

TEST_CASE("the TorchScript trait uses haf_forward_reward for Heads::kReward", "[scoring][model]") {
  torch::jit::Module m("ScoringModel");
  if (!m.hasattr("training")) m.register_attribute("training", c10::BoolType::get(), true);
  m.define(R"JIT(
def forward(self, input_ids, attention_mask):
    logits = torch.ones([input_ids.size(0), input_ids.size(1), 5])
    return (logits, attention_mask.float())
def haf_forward_reward(self, input_ids, attention_mask):
    return attention_mask.float() * 2.0 + float(self.training)
)JIT");
  auto ids = torch::randint(0, 5, {2, 4}, torch::kLong);
  auto mask = torch::ones({2, 4}, torch::kLong);
  auto full = hafrm::model_forward(m, ids, mask);
  CHECK(full.logits.defined());
  auto reward = hafrm::model_forward(m, ids, mask, hafrm::Heads::kReward);
  CHECK(!reward.logits.defined());
  // In eval mode for the call (training adds 1), and the flag is put back.
  CHECK(torch::equal(hafrm::score_batch(m, ids, mask), torch::full({2}, 2.0f)));
  CHECK(m.is_training());
  CHECK(torch::equal(hafrm::score_sequences(m, {{1, 2}, {3}}), torch::full({2}, 2.0f)));
  CHECK(m.is_training());
}

TEST_CASE("bucketed, unbucketed and one-at-a-time scores agree, in input order",
          "[scoring][model]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  torch::manual_seed(static_cast<int64_t>(seed % 100000));
  const int64_t V = 31;
  HeadsModel model(V, 12);
  model->eval();
  auto seqs = random_sequences(37, 19, V);
  const auto expected = one_by_one(*model, seqs);

  hafrm::ScoreOptions bucketed{.max_batch_sequences = 5, .max_batch_tokens = 48};
  std::vector<std::pair<int64_t, int64_t>> progress;
  bucketed.progress = [&](int64_t done, int64_t total) { progress.emplace_back(done, total); };
  model->shapes.clear();
  auto rb = hafrm::score_sequences(model, seqs, bucketed);
  const auto bucketed_shapes = model->shapes;

  hafrm::ScoreOptions padded = bucketed;
  padded.bucket_by_length = false;
  padded.progress = nullptr;
  model->shapes.clear();
  auto ru = hafrm::score_sequences(model, seqs, padded);
  const auto padded_shapes = model->shapes;

  auto r1 = hafrm::score_sequences(model, seqs, {.max_batch_sequences = 1});
  auto rall = hafrm::score_sequences(model, seqs,
                                     {.max_batch_sequences = 1000, .max_batch_tokens = 1 << 20});
  INFO("max diff bucketed " << max_abs_diff(rb, expected) << ", unbucketed "
                            << max_abs_diff(ru, expected));
  CHECK(close(rb, expected, 1e-5, 1e-6));
  CHECK(close(ru, expected, 1e-5, 1e-6));
  CHECK(close(r1, expected, 1e-5, 1e-6));
  CHECK(close(rall, expected, 1e-5, 1e-6));

  // Every batch within the limits; bucketing pads less than input order.
  auto cells = [](const std::vector<std::pair<int64_t, int64_t>>& s) {
    int64_t rows = 0, cells = 0;
    for (auto [b, t] : s) {
      CHECK(b <= 5);
      CHECK((b == 1 || b * t <= 48));
      rows += b;
      cells += b * t;
    }
    CHECK(rows == 37);
    return cells;
  };
  CHECK(cells(bucketed_shapes) < cells(padded_shapes));
  // Unbucketed batches follow input order: the first batch is padded to its rows' longest.
  int64_t first_longest = 0;
  for (int64_t i = 0; i < padded_shapes.front().first; ++i)
    first_longest = std::max<int64_t>(first_longest, static_cast<int64_t>(seqs[i].size()));
  CHECK(padded_shapes.front().second == first_longest);
  // Bucketed batches come in increasing length.
  for (size_t k = 1; k < bucketed_shapes.size(); ++k)
    CHECK(bucketed_shapes[k].second >= bucketed_shapes[k - 1].second);
  REQUIRE(progress.size() == bucketed_shapes.size());
  CHECK((progress.back() == std::pair<int64_t, int64_t>{37, 37}));

  // score_batch on one right-padded batch gives the same rewards.
  const int64_t T = 19;
  auto ids = torch::zeros({4, T}, torch::kLong), mask = torch::zeros({4, T}, torch::kLong);
  for (int64_t i = 0; i < 4; ++i) {
    const auto n = static_cast<int64_t>(seqs[i].size());
    ids[i].slice(0, 0, n).copy_(torch::tensor(seqs[i], torch::kLong));
    mask[i].slice(0, 0, n).fill_(1);
  }
  CHECK(close(hafrm::score_batch(model, ids, mask), expected.slice(0, 0, 4), 1e-5, 1e-6));
  CHECK(close(hafrm::score_batch(model, ids.to(torch::kInt), mask), expected.slice(0, 0, 4), 1e-5,
              1e-6));
}

TEST_CASE("scoring runs in eval mode and puts every training flag back", "[scoring][model]") {
  const int64_t V = 13;
  HeadsModel model(V, 6);
  model->train(true);
  model->norm->eval();  // a child whose own flag differs from its parent's
  auto seqs = random_sequences(5, 4, V);
  // Dropout 0.5 is active in training mode: scores would then differ between calls.
  auto a = hafrm::score_sequences(model, seqs);
  auto b = hafrm::score_sequences(model, seqs);
  CHECK(torch::equal(a, b));
  for (bool t : model->saw_training) CHECK(!t);
  CHECK(model->is_training());
  CHECK(model->drop->is_training());
  CHECK(!model->norm->is_training());

  model->saw_training.clear();
  hafrm::score_batch(model, torch::randint(0, V, {2, 3}, torch::kLong), torch::ones({2, 3}));
  REQUIRE(model->saw_training.size() == 1);
  CHECK(!model->saw_training[0]);
  CHECK(model->is_training());
  CHECK(!model->norm->is_training());

  model->throw_in_forward = true;
  CHECK_THROWS_WITH(hafrm::score_sequences(model, seqs), Catch::Contains("forward failed"));
  CHECK(model->is_training());
  CHECK(model->drop->is_training());
  CHECK(!model->norm->is_training());
  model->throw_in_forward = false;

  // The module itself rather than its holder; a model in eval mode stays so.
  model->saw_training.clear();
  hafrm::score_sequences(*model, seqs);
  for (bool t : model->saw_training) CHECK(!t);
  CHECK(model->is_training());
  CHECK(!model->norm->is_training());
  model->eval();
  hafrm::score_sequences(model, seqs);
  CHECK(!model->is_training());
  CHECK(!model->drop->is_training());
}

TEST_CASE("score_sequences and score_batch: bad inputs", "[scoring][model]") {
  const int64_t V = 11;
  HeadsModel model(V, 4);
  CHECK(hafrm::score_sequences(model, {}).numel() == 0);
  CHECK(model->shapes.empty());
  require_error(
      [&] {
        hafrm::score_sequences(model, {{1, 2}, {}, {3}});
      },
      {"score_sequences", "'seqs'", "sequence 1 is empty"});
  require_error(
      [&] {
        hafrm::score_sequences(model, {{1, 2}, {3}, {4, -1}});
      },
      {"score_sequences", "'seqs'", "sequence 2", "-1", "position 1"});
  require_error([&] { hafrm::score_sequences(model, {{1}}, {.max_batch_sequences = 0}); },
                {"score_sequences", "max_batch_sequences"});
  require_error([&] { hafrm::score_sequences(model, {{1}}, {.max_batch_tokens = 0}); },
                {"score_sequences", "max_batch_tokens"});
  require_error([&] { hafrm::score_sequences(model, {{1}}, {.pad_id = -1}); },
                {"score_sequences", "pad_id"});
  hafrm::RewardNormalization bad{.mean = 0.0, .std = 0.0};
  require_error([&] { hafrm::score_sequences(model, {{1}}, {.normalization = bad}); },
                {"RewardNormalization", "'std'"});
  CHECK(model->shapes.empty());  // every error came before any forward

  auto ids = torch::randint(0, V, {2, 3}, torch::kLong);
  require_error(
      [&] {
        hafrm::score_batch(model, ids.to(torch::kFloat), torch::ones({2, 3}));
      },
      {"score_batch", "'ids'", "int64"});
  require_error([&] { hafrm::score_batch(model, ids[0], torch::ones({3})); },
                {"score_batch", "'ids'", "2 dimension"});
  require_error(
      [&] {
        hafrm::score_batch(model, ids, torch::ones({2, 4}));
      },
      {"score_batch", "'mask'", "shape"});
  require_error([&] { hafrm::score_batch(model, ids, torch::Tensor()); },
                {"score_batch", "'mask'", "defined"});
  require_error(
      [&] {
        hafrm::score_batch(model, ids, torch::tensor({{1, 1, 0}, {0, 0, 0}}));
      },
      {"attention_mask", "sequence 1 has none"});
}

TEST_CASE("a sequence classifier with no LM head trains Bradley-Terry on the reward-only path",
          "[scoring][model]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  torch::manual_seed(static_cast<int64_t>(seed % 100000));
  const int64_t V = 20;
  Classifier model(V, 8);
  auto batch = make_batch(8, V);
  // Learnable: chosen responses end in token 1, rejected ones in token 2.
  batch.chosen_ids.select(1, 5).fill_(1);
  batch.rejected_ids.select(1, 4).fill_(2);
  batch.chosen_labels = batch.rejected_labels = torch::Tensor();  // not needed without log-probs
  // There is nothing for the full pass to compute log-probs from.
  require_error([&] { hafrm::forward_pair(model, batch); }, {"forward_pair", "labels"});

  // The trainer's path: objectives built by the registry, the weighting erased.
  hafrm::HybridLoss<hafrm::AnyRewardLoss, hafrm::AnyPolicyLoss, hafrm::AnyWeighting> bt{
      hafrm::make_reward_loss("bt"), hafrm::make_policy_loss("sigmoid:beta=0.1"),
      hafrm::make_weighting("constant:reward=1,alpha=0")};
  REQUIRE(!bt.needs_policy());
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(0.05));
  const hafrm::PairForwardOptions reward_only{.heads = hafrm::Heads::kReward};
  std::vector<double> losses;
  for (int64_t step = 0; step < 30; ++step) {
    opt.zero_grad();
    auto f = hafrm::forward_pair(model, batch, reward_only);
    auto out = bt(f.rewards, f.policy, step);
    CHECK(!out.policy_loss.defined());
    CHECK(out.metrics.count("policy/loss") == 0);
    out.loss.backward();
    opt.step();
    losses.push_back(out.loss.item<double>());
  }
  INFO("loss " << losses.front() << " -> " << losses.back());
  CHECK(losses.back() < 0.5 * losses.front());
  // The typed objective with a constant alpha-0 weighting does the same step.
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo> typed{{}, {}, {.alpha = 0.0}};
  REQUIRE(!typed.needs_policy());
  auto f = hafrm::forward_pair(model, batch, reward_only);
  CHECK(typed(f.rewards, f.policy, 0).loss.item<double>() ==
        Approx(bt(f.rewards, f.policy, 0).loss.item<double>()));
}

TEST_CASE("needs_policy and empty policy inputs follow the weighting", "[scoring][hybrid]") {
  using hafrm::AlternateWeighting, hafrm::ConstantWeighting, hafrm::CosineWeighting;
  using hafrm::LinearWarmupWeighting;
  CHECK(hafrm::HybridLoss<>{}.needs_policy());
  CHECK((!hafrm::HybridLoss<>{{}, {}, {.alpha = 0.0}}.needs_policy()));
  CHECK((hafrm::HybridLoss<>{{}, {}, {.reward_weight = 0.0, .alpha = 1.0}}.needs_policy()));
  using Alt = hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo, AlternateWeighting>;
  CHECK((Alt{{}, {}, {.period = 3}}.needs_policy()));
  CHECK((!Alt{{}, {}, {.period = 3, .alpha = 0.0}}.needs_policy()));
  using Warm = hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo, LinearWarmupWeighting>;
  CHECK(Warm{}.needs_policy());  // 0 at step 0 only
  CHECK((!Warm{{}, {}, {.alpha = 0.0}}.needs_policy()));
  using Cos = hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo, CosineWeighting>;
  CHECK(Cos{}.needs_policy());  // ends at 0, starts at 0.2
  CHECK((!Cos{{}, {}, {.alpha_start = 0.0, .alpha_end = 0.0}}.needs_policy()));
  CHECK((Cos{{}, {}, {.alpha_start = 0.0, .alpha_end = 0.1}}.needs_policy()));
  // Erased: the registry's weightings keep the answer; a plain lambda cannot say.
  CHECK(hafrm::make_weighting("constant:reward=1,alpha=0").policy_always_zero());
  CHECK(!hafrm::make_weighting("constant:reward=1,alpha=0.2").policy_always_zero());
  CHECK(!hafrm::make_weighting("alternate:period=2").policy_always_zero());
  hafrm::AnyWeighting lambda = [](int64_t) { return hafrm::HybridWeights{1.0, 0.0}; };
  CHECK(!lambda.policy_always_zero());
  using Erased = hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo, hafrm::AnyWeighting>;
  CHECK((Erased{{}, {}, lambda}.needs_policy()));
  CHECK((!Erased{{}, {}, ConstantWeighting{.alpha = 0.0}}.needs_policy()));

  // Empty policy inputs: accepted exactly where this step's policy weight is 0, never read.
  hafrm::RewardInputs r{.chosen = torch::randn({4}).requires_grad_(),
                        .rejected = torch::randn({4})};
  const hafrm::PolicyInputs empty;
  auto bt = hafrm::HybridLoss<>{{}, {}, {.alpha = 0.0}}(r, empty, 0);
  CHECK(bt.loss.item<double>() == Approx(hafrm::BradleyTerry{}(r).loss.item<double>()));
  CHECK(!bt.policy_loss.defined());
  CHECK(bt.metrics.count("reward/loss") == 1);
  require_error([&] { hafrm::HybridLoss<>{}(r, empty, 0); },
                {"HybridLoss", "policy_inputs.policy_chosen", "must be given", "0.2"});
  Alt alt{{}, {}, {.period = 2}};  // steps 0-1 policy only, steps 2-3 reward only
  CHECK_NOTHROW(alt(r, empty, 2));
  require_error([&] { alt(r, empty, 1); }, {"HybridLoss", "policy_inputs.policy_chosen"});
  // Reward weight 0 and no policy term: an exact 0 that backward() accepts.
  hafrm::HybridLoss<> none{{}, {}, {.reward_weight = 0.0, .alpha = 0.0}};
  auto z = none(r, empty, 0);
  CHECK(z.loss.item<double>() == 0.0);
  z.loss.backward();
}

TEST_CASE("rank_rewards and rank_groups: best first, ties in input order", "[scoring][model]") {
  auto r = torch::tensor({0.5, 2.0, 0.5, -1.0, 2.0, -kInf, kInf});
  auto k = hafrm::rank_rewards(r);
  CHECK((k.order == std::vector<int64_t>{6, 1, 4, 0, 2, 3, 5}));
  CHECK(k.best == 6);
  CHECK(hafrm::rank_rewards(torch::tensor({3.0f})).best == 0);
  auto all_tied = hafrm::rank_rewards(torch::full({4}, 1.5));
  CHECK((all_tied.order == std::vector<int64_t>{0, 1, 2, 3}));
  CHECK(all_tied.best == 0);

  auto g = torch::tensor({0.1f, 0.3f, 0.2f, 5.0f, -2.0f, -2.0f});
  std::vector<int64_t> sizes{3, 1, 2};
  auto groups = hafrm::rank_groups(g, sizes);
  REQUIRE(groups.size() == 3);
  CHECK((groups[0].order == std::vector<int64_t>{1, 2, 0}));
  CHECK(groups[0].best == 1);
  CHECK(groups[1].order == std::vector<int64_t>{0});
  CHECK((groups[2].order == std::vector<int64_t>{0, 1}));
  CHECK(hafrm::rank_groups(torch::empty({0}), std::vector<int64_t>{}).empty());

  require_error(
      [&] {
        hafrm::rank_rewards(torch::tensor({1.0, kNaN, 0.0}));
      },
      {"rank_rewards", "'rewards'", "reward 1 is NaN"});
  require_error([&] { hafrm::rank_rewards(torch::empty({0})); }, {"rank_rewards", "at least one"});
  require_error([&] { hafrm::rank_rewards(torch::ones({2, 2})); }, {"rank_rewards", "dimension"});
  require_error([&] { hafrm::rank_rewards(torch::tensor({1, 2})); }, {"rank_rewards", "floating"});
  std::vector<int64_t> short_sizes{3, 2};
  require_error([&] { hafrm::rank_groups(g, short_sizes); },
                {"rank_groups", "'group_sizes'", "summing to 6", "got 5"});
  std::vector<int64_t> with_empty{3, 0, 3};
  require_error([&] { hafrm::rank_groups(g, with_empty); }, {"rank_groups", "group 1 has 0"});
  auto g_nan = g.clone();
  g_nan[4] = kNaN;
  require_error([&] { hafrm::rank_groups(g_nan, sizes); }, {"rank_groups", "reward 4 is NaN"});
}

TEST_CASE("RewardNormalization: fit, apply, validate", "[scoring][model]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  torch::manual_seed(static_cast<int64_t>(seed % 100000));
  auto ref = torch::randn({257}, torch::kDouble) * 3.0 + 1.5;
  auto n = hafrm::RewardNormalization::fit(ref.to(torch::kFloat));
  CHECK(n.count == 257);
  CHECK(n.mean == Approx(ref.mean().item<double>()).epsilon(1e-6));
  CHECK(n.std == Approx(ref.std(/*unbiased=*/false).item<double>()).epsilon(1e-6));
  auto z = n.apply(ref.to(torch::kFloat));
  CHECK(z.scalar_type() == torch::kFloat);
  CHECK(z.to(torch::kDouble).mean().item<double>() == Approx(0.0).margin(1e-5));
  CHECK(z.to(torch::kDouble).std(false).item<double>() == Approx(1.0).epsilon(1e-5));
  CHECK(torch::equal(std::get<1>(z.sort()), std::get<1>(ref.sort())));  // rankings unchanged
  auto two = hafrm::RewardNormalization::fit(torch::tensor({1.0, 3.0}));
  CHECK(two.mean == 2.0);
  CHECK(two.std == 1.0);  // population std (the sample std would be sqrt(2))
  CHECK(torch::equal(two.apply(torch::tensor({5.0})), torch::tensor({3.0})));
  CHECK(torch::equal(hafrm::RewardNormalization{}.apply(torch::tensor({0.25f})),
                     torch::tensor({0.25f})));  // the default is the identity

  // score_sequences applies it to what it returns.
  HeadsModel model(9, 4);
  model->eval();
  std::vector<std::vector<int64_t>> seqs{{1, 2, 3}, {4}, {5, 6}, {7, 8, 1, 2}};
  auto raw = hafrm::score_sequences(model, seqs);
  auto fitted = hafrm::RewardNormalization::fit(raw);
  auto normed = hafrm::score_sequences(model, seqs, {.normalization = fitted});
  CHECK(close(normed, (raw.to(torch::kDouble) - fitted.mean) / fitted.std, 1e-5, 1e-6));

  using RN = hafrm::RewardNormalization;
  require_error([] { RN::fit(torch::tensor({1.0})); }, {"RewardNormalization::fit", "at least 2"});
  require_error([] { RN::fit(torch::tensor({0.5, 0.5, 0.5})); }, {"fit", "not all equal"});
  require_error([] { RN::fit(torch::tensor({0.1f, 0.1f, 0.1f})); }, {"fit", "not all equal"});
  require_error([] { RN::fit(torch::tensor({1.0, kInf})); }, {"fit", "reward 1 is inf"});
  require_error([] { RN::fit(torch::tensor({kNaN, 1.0})); }, {"fit", "reward 0 is nan"});
  require_error([] { RN::fit(torch::tensor({1, 2})); }, {"fit", "floating"});
  require_error([] { RN::fit(torch::ones({2, 2})); }, {"fit", "dimension"});
  require_error([] { RN{.mean = kNaN}.validate(); }, {"RewardNormalization", "'mean'"});
  require_error([] { RN{.std = -1.0}.validate(); }, {"RewardNormalization", "'std'"});
  require_error([] { RN{.std = kInf}.validate(); }, {"RewardNormalization", "'std'"});
  require_error([] { RN{.count = -1}.validate(); }, {"RewardNormalization", "'count'"});
  require_error([] { RN{.std = 0.0}.apply(torch::ones({2})); }, {"RewardNormalization", "'std'"});
  require_error([] { RN{}.apply(torch::ones({2}, torch::kLong)); }, {"apply", "floating"});
}
