// The haf_rm trainer's model and objectives: the HaF architecture and its two LM-head paths,
// activation checkpointing (same gradients and random stream, nothing kept in inference), the
// objectives' weights and value, what each objective trains, the two log-prob backends taking the
// same steps, and the link order that keeps SentencePiece's global flag its own.
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cli.hpp"
#include "test_util.hpp"
#include "trainer.hpp"

namespace rm = hafrm::examples::rm;
using Catch::Matchers::Contains;
using rm::test::TempDir;

TEST_CASE("--logprob-backend reference takes the same steps as the fused kernels",
          "[haf_rm][backend]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  cfg.model.fused_lm_head = GENERATE(true, false);  // fused linear path, or full logits
  CAPTURE(cfg.model.fused_lm_head);
  REQUIRE(rm::parse_args({"--logprob-backend", "reference"}).logprob_backend == "reference");
  rm::Trainer fused(cfg);
  cfg.logprob_backend = "reference";
  rm::Trainer ref(cfg);
  for (int i = 0; i < 3; ++i) {
    const auto a = fused.step(), b = ref.step();
    // Same maths in a different order of float32 operations (a fused row vs log_softmax).
    CHECK(a.loss == Approx(b.loss).epsilon(1e-4));
    CHECK(a.policy_loss == Approx(b.policy_loss).epsilon(1e-4));
  }
}

TEST_CASE("objectives weigh the two terms as documented", "[haf_rm][objective]") {
  auto bt = rm::resolve_objective("bt", "", "", "");
  auto haf = rm::resolve_objective("haf", "", "", "");
  auto dpo = rm::resolve_objective("dpo", "", "", "");
  CHECK_FALSE(bt.score_is_implicit);
  CHECK_FALSE(haf.score_is_implicit);
  CHECK(dpo.score_is_implicit);
  auto w = [](const rm::ObjectiveSpec& s) { return rm::make_objective(s).weighting(0); };
  CHECK(w(bt).reward == 1.0);
  CHECK(w(bt).policy == 0.0);
  CHECK(w(haf).reward == 1.0);
  CHECK(w(haf).policy == Approx(0.2));
  CHECK(w(dpo).reward == 0.0);
  CHECK(w(dpo).policy == 1.0);
  CHECK(w(rm::resolve_objective("haf", "", "", "alternate:period=10")).reward == 0.0);

  // The hybrid's value on fixed inputs: BT(r) + 0.2 * DPO(beta 0.1).
  hafrm::RewardInputs r{.chosen = torch::tensor({1.0, -0.5}, torch::kDouble),
                        .rejected = torch::tensor({0.0, 0.5}, torch::kDouble)};
  hafrm::PolicyInputs p;
  p.policy_chosen = torch::tensor({-3.0, -4.0}, torch::kDouble);
  p.policy_rejected = torch::tensor({-5.0, -2.0}, torch::kDouble);
  p.reference_chosen = torch::tensor({-4.0, -4.0}, torch::kDouble);
  p.reference_rejected = torch::tensor({-4.0, -3.0}, torch::kDouble);
  const auto out = rm::make_objective(haf)(r, p, 0);
  const double bt_ref = (std::log1p(std::exp(-1.0)) + std::log1p(std::exp(1.0))) / 2;
  const double dpo_ref = (std::log1p(std::exp(-0.1 * 2.0)) + std::log1p(std::exp(0.1 * 1.0))) / 2;
  CHECK(out.loss.item<double>() == Approx(bt_ref + 0.2 * dpo_ref).epsilon(1e-12));

  CHECK_THROWS_WITH(rm::resolve_objective("ppo", "", "", ""), Contains("bt, haf, dpo, lm or sft"));
  CHECK_THROWS(rm::make_objective(rm::resolve_objective("haf", "no_such_loss", "", "")));
}

TEST_CASE("a bt run leaves the LM head alone and a dpo run the reward head",
          "[haf_rm][objective]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  cfg.weight_decay = 0.0;  // decay would move every weight
  for (const std::string objective : {"bt", "dpo"}) {
    CAPTURE(objective);
    cfg.objective = objective;
    rm::Trainer t(cfg);
    auto& m = t.model();
    const auto lm0 = m->lm_head->weight.clone(), score0 = m->score->weight.clone();
    for (int i = 0; i < 3; ++i) t.step();
    if (objective == "bt") {
      CHECK(torch::equal(m->lm_head->weight, lm0));  // alpha 0: the policy layer gets no gradient
      CHECK_FALSE(torch::equal(m->score->weight, score0));
    } else {
      CHECK(torch::equal(m->score->weight, score0));  // w_R 0: the reward head stays at zero
      CHECK(m->score->weight.abs().max().item<double>() == 0.0);
      CHECK_FALSE(torch::equal(m->lm_head->weight, lm0));
    }
  }
}

TEST_CASE("the model has the HaF architecture and both LM-head paths agree", "[haf_rm][model]") {
  torch::manual_seed(0);
  rm::ModelConfig c;
  c.vocab_size = 30, c.d_model = 16, c.n_heads = 2, c.n_layers = 2, c.d_ff = 32;
  c.positions = GENERATE(std::string("rope"), std::string("alibi"));
  rm::HafTransformer fused(c);
  c.fused_lm_head = false;
  rm::HafTransformer full(c);
  {
    torch::NoGradGuard ng;
    auto src = fused->named_parameters();
    for (auto& p : full->named_parameters()) p.value().copy_(src[p.key()]);
  }
  CHECK(fused->score->weight.abs().sum().item<double>() == 0.0);  // zero-initialised head
  CHECK(fused->score->bias.abs().sum().item<double>() == 0.0);
  auto ids = torch::randint(0, 30, {3, 9}, torch::kLong);
  auto mask = torch::ones_like(ids);
  mask.index_put_({0, torch::indexing::Slice(6, torch::indexing::None)}, 0);
  auto a = fused->haf_forward(ids, mask), b = full->haf_forward(ids, mask);
  REQUIRE(a.lm_hidden.defined());
  REQUIRE_FALSE(a.logits.defined());
  CHECK(torch::allclose(torch::matmul(a.lm_hidden, a.lm_head_weight.t()), b.logits, 1e-5, 1e-6));

  // Causal: changing a later token leaves earlier positions unchanged.
  auto ids2 = ids.clone();
  ids2.index_put_({torch::indexing::Slice(), 5},
                  (ids.index({torch::indexing::Slice(), 5}) + 1) % 30);
  auto a2 = fused->haf_forward(ids2, mask);
  using torch::indexing::Slice;
  CHECK(torch::allclose(a.lm_hidden.index({Slice(), Slice(0, 5)}),
                        a2.lm_hidden.index({Slice(), Slice(0, 5)})));
  CHECK_FALSE(torch::allclose(a.lm_hidden.index({Slice(), 5}), a2.lm_hidden.index({Slice(), 5})));

  // A vocab-parallel rank's rows of the head: the weight rows on the fused path, the logits'
  // columns (after the input hook) otherwise; the reference copy keeps the rows.
  int hook_calls = 0;
  auto hook = [&hook_calls](const torch::Tensor& x) { return ++hook_calls, x; };
  fused->shard_lm_head(7, 19);
  full->shard_lm_head(7, 19, hook);
  auto fs = fused->haf_forward(ids, mask), ls = full->haf_forward(ids, mask);
  CHECK(torch::equal(fs.lm_head_weight, fused->lm_head->weight.narrow(0, 7, 12)));
  CHECK(torch::allclose(ls.logits, b.logits.narrow(-1, 7, 12), 1e-5, 1e-6));
  CHECK(hook_calls == 1);
  CHECK(rm::frozen_copy(fused)->head_rows == std::pair<int64_t, int64_t>{7, 19});
  for (auto [first, last] : {std::pair<int64_t, int64_t>{-1, 5}, {5, 5}, {3, 31}})
    CHECK_THROWS_WITH(fused->shard_lm_head(first, last),
                      Contains("shard_lm_head") && Contains("of [0, 30)"));
}

namespace {

// Two layers with dropout `p`, the weights drawn from `seed`; the reward head, which starts at
// zero, drawn too, so that the backbone's gradient comes through both heads.
rm::HafTransformer random_model(double p, const std::string& positions, bool checkpoint,
                                uint64_t seed = 3) {
  rm::ModelConfig c;
  c.vocab_size = 30, c.d_model = 16, c.n_heads = 2, c.n_layers = 2, c.d_ff = 32;
  c.dropout = p, c.positions = positions, c.checkpoint_activations = checkpoint;
  torch::manual_seed(seed);
  rm::HafTransformer m(c);
  torch::NoGradGuard ng;
  m->score->weight.normal_(0.0, 0.5);
  m->score->bias.fill_(0.1);
  return m;
}

// A batch of 3 sequences of 9 tokens, the first right-padded after 6.
std::pair<torch::Tensor, torch::Tensor> batch(uint64_t seed = 1) {
  torch::manual_seed(seed);
  auto ids = torch::randint(0, 30, {3, 9}, torch::kLong);
  auto mask = torch::ones_like(ids);
  mask.index_put_({0, torch::indexing::Slice(6, torch::indexing::None)}, 0);
  return {ids, mask};
}

// A loss through both heads: the real tokens' rewards and the LM head's log-sum-exp.
torch::Tensor both_heads_loss(rm::HafTransformer& m,
                              const std::pair<torch::Tensor, torch::Tensor>& b) {
  auto out = m->haf_forward(b.first, b.second);
  auto keep = b.second.to(torch::kFloat);
  auto lse = torch::logsumexp(torch::matmul(out.lm_hidden, out.lm_head_weight.t()), -1);
  return (out.token_rewards * keep).sum() + (lse * keep).sum() / keep.sum();
}

// How many checkpointed blocks the graph behind `t` holds.
int checkpoint_nodes(const torch::Tensor& t) {
  int n = 0;
  std::unordered_set<torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> todo;
  if (t.grad_fn()) todo.push_back(t.grad_fn().get());
  while (!todo.empty()) {
    auto* node = todo.back();
    todo.pop_back();
    if (!seen.insert(node).second) continue;
    if (node->name().find("CheckpointFunction") != std::string::npos) ++n;
    for (const auto& e : node->next_edges())
      if (e.function) todo.push_back(e.function.get());
  }
  return n;
}

// Every parameter's gradient of `a` equals `b`'s to float round-off (1e-6 of its largest
// entry), and where one is undefined (a frozen parameter) so is the other.
void check_same_grads(rm::HafTransformer& a, rm::HafTransformer& b) {
  auto other = b->named_parameters();
  for (const auto& p : a->named_parameters()) {
    CAPTURE(p.key());
    const auto& ga = p.value().grad();
    const auto& gb = other[p.key()].grad();
    REQUIRE(ga.defined() == gb.defined());
    if (!ga.defined()) continue;
    const double scale = std::max(1.0, gb.abs().max().item<double>());
    CHECK((ga - gb).abs().max().item<double>() <= 1e-6 * scale);
  }
}

}  // namespace

TEST_CASE("activation checkpointing gives the same gradients through both heads",
          "[haf_rm][model]") {
  const auto positions = GENERATE(std::string("rope"), std::string("alibi"));
  CAPTURE(positions);
  auto plain = random_model(0.0, positions, false), ckpt = random_model(0.0, positions, true);
  // Not part of the checkpoint identity: the parameters and the function are the same.
  CHECK(plain->config.to_json() == ckpt->config.to_json());
  const auto b = batch();
  auto lp = both_heads_loss(plain, b), lc = both_heads_loss(ckpt, b);
  CHECK(checkpoint_nodes(lp) == 0);
  CHECK(checkpoint_nodes(lc) == 2);  // one per block
  CHECK(lc.item<double>() == Approx(lp.item<double>()).epsilon(1e-6));
  // torch::autograd::grad through the checkpointed blocks (the node returns the gradients; it
  // does not write .grad itself).
  auto& w = ckpt->blocks[0]->as<rm::Block>()->fc->weight;
  auto gw = torch::autograd::grad({lc}, {w}, {}, /*retain_graph=*/true)[0];
  CHECK_FALSE(w.grad().defined());
  lp.backward();
  lc.backward();
  check_same_grads(ckpt, plain);
  CHECK(torch::allclose(gw, w.grad(), 1e-6, 1e-7));
  CHECK(ckpt->blocks[0]->as<rm::Block>()->attn->qkv->weight.grad().abs().max().item<double>() >
        0.0);
}

TEST_CASE("activation checkpointing replays dropout and leaves the random stream as it was",
          "[haf_rm][model]") {
  auto plain = random_model(0.1, "rope", false), ckpt = random_model(0.1, "rope", true);
  const auto b = batch();
  torch::manual_seed(11);
  both_heads_loss(plain, b).backward();
  const auto after_plain = torch::rand({16});
  torch::manual_seed(11);
  auto lc = both_heads_loss(ckpt, b);
  CHECK(checkpoint_nodes(lc) == 2);
  lc.backward();
  const auto after_ckpt = torch::rand({16});
  // The recompute drew the forward's masks, and put the generator back where it was.
  check_same_grads(ckpt, plain);
  CHECK(torch::equal(after_ckpt, after_plain));

  // The masks matter: without dropout the gradients are others.
  auto no_drop = random_model(0.1, "rope", true);
  no_drop->eval();
  both_heads_loss(no_drop, b).backward();
  auto& wc = ckpt->blocks[1]->as<rm::Block>()->fc->weight;
  auto& we = no_drop->blocks[1]->as<rm::Block>()->fc->weight;
  CHECK((wc.grad() - we.grad()).abs().max().item<double>() > 1e-4);
}

TEST_CASE("activation checkpointing with frozen parameters and accumulated gradients",
          "[haf_rm][model]") {
  const int frozen = GENERATE(0, 1);  // the embedding and block 0, or block 1
  CAPTURE(frozen);
  auto plain = random_model(0.0, "rope", false), ckpt = random_model(0.0, "rope", true);
  for (auto* m : {&plain, &ckpt}) {
    auto& mod = *m;
    for (auto& p : mod->blocks[frozen]->parameters()) p.requires_grad_(false);
    if (frozen == 0) mod->embed->weight.requires_grad_(false);
  }
  // Two backward passes into the same .grad (gradient accumulation).
  for (uint64_t s : {1, 2}) {
    const auto b = batch(s);
    auto lp = both_heads_loss(plain, b), lc = both_heads_loss(ckpt, b);
    // Block 0 with nothing to differentiate runs as it is.
    CHECK(checkpoint_nodes(lc) == (frozen == 0 ? 1 : 2));
    lp.backward();
    lc.backward();
  }
  check_same_grads(ckpt, plain);
  for (auto& p : ckpt->blocks[frozen]->parameters()) CHECK_FALSE(p.grad().defined());
  auto& w = ckpt->blocks[1 - frozen]->as<rm::Block>()->attn->qkv->weight;
  CHECK(w.grad().abs().max().item<double>() > 0.0);
}

TEST_CASE("activation checkpointing refuses parameters changed between forward and backward",
          "[haf_rm][model]") {
  const bool checkpoint = GENERATE(false, true);  // as the graph without checkpointing does
  CAPTURE(checkpoint);
  auto m = random_model(0.0, "rope", checkpoint);
  auto loss = both_heads_loss(m, batch());
  {
    torch::NoGradGuard ng;  // an optimizer step
    m->blocks[1]->as<rm::Block>()->fc->weight.add_(0.01);
  }
  CHECK_THROWS_WITH(loss.backward(), Contains("modified by an inplace operation"));
}

TEST_CASE("activation checkpointing leaves inference and the frozen reference alone",
          "[haf_rm][model]") {
  auto plain = random_model(0.1, "alibi", false), ckpt = random_model(0.1, "alibi", true);
  plain->eval(), ckpt->eval();
  const auto b = batch();
  auto a = plain->haf_forward(b.first, b.second);
  {
    torch::NoGradGuard ng;
    auto c = ckpt->haf_forward(b.first, b.second);
    CHECK_FALSE(c.token_rewards.grad_fn());
    CHECK_FALSE(c.lm_hidden.grad_fn());
    CHECK(torch::equal(c.token_rewards, a.token_rewards));
    CHECK(torch::equal(c.lm_hidden, a.lm_hidden));
  }
  // Eval mode with grad on and trainable parameters still checkpoints (no dropout to replay).
  auto e = ckpt->haf_forward(b.first, b.second);
  CHECK(checkpoint_nodes(e.token_rewards) == 2);
  CHECK(torch::equal(e.token_rewards, a.token_rewards));
  // The reference: its config says checkpoint, but no parameter requires grad.
  auto ref = rm::frozen_copy(ckpt);
  REQUIRE(ref->config.checkpoint_activations);
  auto r = ref->haf_forward(b.first, b.second);
  CHECK_FALSE(r.token_rewards.grad_fn());
  CHECK(torch::equal(r.lm_hidden, a.lm_hidden));
}

TEST_CASE("SentencePiece's FLAGS_minloglevel is not resolved to LibTorch's", "[haf_rm][link]") {
  // Both libraries export this global with different types (see examples/haf_rm/CMakeLists.txt);
  // the link order must make SentencePiece's own 32-byte object the one both reach, or its static
  // constructor overwrites c10 memory and TorchScript calls deadlock.
  void* spm = dlopen("libsentencepiece.so.0", RTLD_LAZY | RTLD_NOLOAD);
  REQUIRE(spm != nullptr);  // linked into this test executable
  void* own = dlsym(spm, "FLAGS_minloglevel");
  void* resolved = dlsym(RTLD_DEFAULT, "FLAGS_minloglevel");
  dlclose(spm);
  if (own == nullptr)
    SUCCEED("this SentencePiece build exports no FLAGS_minloglevel");
  else
    CHECK(resolved == own);
}

TEST_CASE("--checkpoint-activations trains the same steps", "[haf_rm][model]") {
  rm::test::TempDir dir;
  auto plain = rm::test::tiny_config(dir);
  plain.model.dropout = 0.1;  // the recompute must replay the dropout masks
  plain.model.n_layers = 2;
  auto ckpt = rm::parse_args({"--checkpoint-activations"});
  REQUIRE(ckpt.model.checkpoint_activations);
  CHECK_FALSE(rm::parse_args({}).model.checkpoint_activations);
  ckpt = plain;
  ckpt.model.checkpoint_activations = true;
  ckpt.out_dir = (dir / "ckpt").string();
  // One trainer after the other: both draw their dropout masks from torch's one CPU generator,
  // which each Trainer seeds when it is built.
  rm::Trainer a(plain);
  std::vector<rm::StepStats> sa;
  for (int i = 0; i < 3; ++i) sa.push_back(a.step());
  rm::Trainer b(ckpt);
  CHECK(a.identity() == b.identity());  // checkpoints stay interchangeable
  for (int i = 0; i < 3; ++i) {
    const auto sb = b.step();
    CHECK(sb.loss == Approx(sa[i].loss).epsilon(1e-6));
    CHECK(sb.grad_norm == Approx(sa[i].grad_norm).epsilon(1e-5));
  }
  const auto pb = b.model()->named_parameters();
  for (const auto& p : a.model()->named_parameters())
    CHECK((p.value() - pb[p.key()]).abs().max().item<double>() < 1e-6);
}
