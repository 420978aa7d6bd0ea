// The haf_rm trainer's model and objectives: the HaF architecture and its two LM-head paths, the
// objectives' weights and value, what each objective trains, the two log-prob backends taking the
// same steps, and the link order that keeps SentencePiece's global flag its own.
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <utility>

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

  CHECK_THROWS_WITH(rm::resolve_objective("ppo", "", "", ""), Contains("bt, haf or dpo"));
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
