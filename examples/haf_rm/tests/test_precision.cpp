// --precision bf16 of the haf_rm trainer: it learns as fp32 does, with finite losses and gradient
// norms, float32 weights, AdamW state and losses, the autocast state restored after every pass,
// a bad name refused, and checkpoints of the other precision refused on resume.
#include <catch2/catch.hpp>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "cli.hpp"
#include "precision.hpp"
#include "test_util.hpp"
#include "trainer.hpp"

namespace rm = hafrm::examples::rm;
using Catch::Matchers::Contains;
using rm::test::TempDir;

namespace {

// A small model on the shipped "sort the letters" splits (3000 training pairs, 300 eval pairs):
// enough steps that its implicit reward ranks the held-out pairs well above chance.
rm::TrainConfig learning_config(const TempDir& dir, const std::string& precision) {
  auto c = rm::test::tiny_config(dir);
  c.train_path = HAFRM_EXAMPLES_DATA_DIR "/synthetic/train.jsonl";
  c.eval_path = HAFRM_EXAMPLES_DATA_DIR "/synthetic/eval.jsonl";
  c.ood_path = "";
  c.precision = precision;
  c.objective = "haf";
  c.model.d_model = 32;
  c.model.d_ff = 64;
  c.batch_size = 16;
  c.steps = 200;
  c.warmup_steps = 10;
  c.lr = 1e-2;
  c.eval_batch = 64;
  return c;
}

struct LearningRun {
  double eval_acc = 0;
  std::vector<rm::StepStats> steps;
};

LearningRun train(const rm::TrainConfig& c) {
  rm::Trainer t(c);
  LearningRun r;
  for (int64_t i = 0; i < c.steps; ++i) r.steps.push_back(t.step());
  r.eval_acc = t.evaluate(*t.eval_split()).all.implicit;
  return r;
}

bool autocast_off() {
  return !at::autocast::is_autocast_enabled(at::kCPU) &&
         at::autocast::get_autocast_dtype(at::kCPU) == at::kBFloat16;
}

}  // namespace

TEST_CASE("a bf16 run learns as the fp32 run does, with finite losses and gradient norms",
          "[haf_rm][precision]") {
  TempDir dir;
  const auto fp32 = train(learning_config(dir, "fp32"));
  const auto bf16 = train(learning_config(dir, "bf16"));
  CAPTURE(fp32.eval_acc, bf16.eval_acc);
  for (const auto& s : bf16.steps) {
    CAPTURE(s.step);
    REQUIRE(std::isfinite(s.loss));
    REQUIRE(std::isfinite(s.grad_norm));
    REQUIRE(std::isfinite(s.reward_loss));
    REQUIRE(std::isfinite(s.policy_loss));
  }
  // The same data order and initial weights: the first step's gradient norms agree to bfloat16
  // rounding but are not equal (the passes did run in bfloat16). Its loss is no witness: the
  // zero reward head and the policy equal to its reference give the same loss in any precision.
  CHECK(bf16.steps[0].grad_norm != fp32.steps[0].grad_norm);
  CHECK(bf16.steps[0].grad_norm == Approx(fp32.steps[0].grad_norm).epsilon(0.05));
  // The implicit reward's accuracy (DPO's beta * (logp - ref)): chance is 0.5, and both runs
  // reach about 0.78 on this configuration.
  CHECK(fp32.eval_acc >= 0.65);
  CHECK(bf16.eval_acc >= 0.65);
  CHECK(std::abs(bf16.eval_acc - fp32.eval_acc) <= 0.1);
}

TEST_CASE("bf16 keeps the weights, gradients, AdamW state and losses in float32",
          "[haf_rm][precision]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  cfg.precision = "bf16";
  cfg.objective = GENERATE(std::string("haf"), std::string("bt"));
  CAPTURE(cfg.objective);
  const auto run = rm::RunConfig::resolve(cfg);
  const auto data = rm::load_training_data(run, 1);
  rm::TrainState st(run, data, nullptr);
  st.start_fresh();

  const std::vector<int64_t> idx{0, 1, 2, 3};
  auto f = st.forward(data.train, st.train_refs(), idx);
  REQUIRE(autocast_off());
  CHECK(f.rewards.chosen.scalar_type() == torch::kFloat);
  CHECK(f.rewards.rejected.scalar_type() == torch::kFloat);
  if (!st.reward_only()) {
    CHECK(f.policy.policy_chosen.scalar_type() == torch::kFloat);
    CHECK(f.policy.policy_rejected.scalar_type() == torch::kFloat);
    CHECK(f.policy.reference_chosen.scalar_type() == torch::kFloat);
  }
  auto objective = rm::make_objective(run.objective());
  auto out = objective(f.rewards, f.policy, 0);
  CHECK(out.loss.scalar_type() == torch::kFloat);
  CHECK(out.reward_loss.scalar_type() == torch::kFloat);
  out.loss.backward();
  for (const auto& p : st.model()->named_parameters()) {
    CAPTURE(p.key());
    CHECK(p.value().scalar_type() == torch::kFloat);
    if (p.value().grad().defined()) CHECK(p.value().grad().scalar_type() == torch::kFloat);
  }

  for (int i = 0; i < 3; ++i) {
    const auto s = rm::train_step(st);
    CHECK(std::isfinite(s.loss));
    REQUIRE(autocast_off());  // restored after every step
  }
  int states = 0;
  for (const auto& [key, state] : st.optimizer().state()) {
    const auto& adam = static_cast<const torch::optim::AdamWParamState&>(*state);
    CHECK(adam.exp_avg().scalar_type() == torch::kFloat);
    CHECK(adam.exp_avg_sq().scalar_type() == torch::kFloat);
    ++states;
  }
  CHECK(states > 0);
  for (const auto& p : st.model()->parameters()) CHECK(p.scalar_type() == torch::kFloat);
}

TEST_CASE("under bf16 the reward head still computes in float32", "[haf_rm][precision]") {
  rm::ModelConfig mc;
  mc.d_model = 32;
  mc.n_heads = 2;
  rm::HafTransformer model(mc);
  {
    torch::NoGradGuard ng;
    model->score->weight.normal_(0.0, 1.0);  // a trained head: rewards far from zero
  }
  const auto ids = torch::randint(0, 257, {4, 9}, torch::kLong);
  const auto mask = torch::ones({4, 9}, torch::kLong);
  torch::Tensor rewards;
  {
    rm::AutocastGuard guard(torch::kCPU, true);
    rewards = model->haf_forward(ids, mask).token_rewards;
  }
  REQUIRE(rewards.scalar_type() == torch::kFloat);
  // bfloat16-rounded rewards would be exactly representable in bfloat16.
  CHECK((rewards.to(torch::kBFloat16).to(torch::kFloat) != rewards).any().item<bool>());
}

TEST_CASE("the bf16 forward differs from the fp32 one by bfloat16 rounding only",
          "[haf_rm][precision]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  auto forward = [&](const std::string& precision, bool fused) {
    cfg.precision = precision;
    cfg.model.fused_lm_head = fused;
    const auto run = rm::RunConfig::resolve(cfg);
    const auto data = rm::load_training_data(run, 1);
    rm::TrainState st(run, data, nullptr);
    st.start_fresh();
    torch::NoGradGuard ng;
    auto f = st.forward(data.train, st.train_refs(), {0, 1, 2, 3, 4, 5});
    return torch::stack({f.policy.policy_chosen, f.policy.policy_rejected});
  };
  for (bool fused : {true, false}) {
    CAPTURE(fused);
    const auto a = forward("fp32", fused), b = forward("bf16", fused);
    CHECK(b.scalar_type() == torch::kFloat);
    CHECK_FALSE(torch::equal(a, b));
    // Summed log-probs of ~10 tokens over a 257-token vocabulary: about -55 each.
    CHECK(torch::allclose(a, b, /*rtol=*/0.02, /*atol=*/0.5));
  }
}

TEST_CASE("the autocast guard enables bf16 for its scope and restores the previous state",
          "[haf_rm][precision]") {
  REQUIRE(autocast_off());
  {
    rm::AutocastGuard outer(at::kCPU, true);
    CHECK(at::autocast::is_autocast_enabled(at::kCPU));
    CHECK(at::autocast::get_autocast_dtype(at::kCPU) == at::kBFloat16);
    auto x = torch::randn({4, 8});
    CHECK(torch::mm(x, x.t()).scalar_type() == torch::kBFloat16);
    {
      rm::AutocastGuard inner(at::kCPU, true);
      CHECK(at::autocast::is_autocast_enabled(at::kCPU));
    }
    CHECK(at::autocast::is_autocast_enabled(at::kCPU));  // the outer scope's state is back
    rm::AutocastGuard off(at::kCPU, false);              // disabled: changes nothing
    CHECK(at::autocast::is_autocast_enabled(at::kCPU));
  }
  CHECK(autocast_off());
  auto x = torch::randn({4, 8});
  CHECK(torch::mm(x, x.t()).scalar_type() == torch::kFloat);
}

TEST_CASE("--precision accepts fp32 and bf16 only, and bf16 refuses --checkpoint-activations",
          "[haf_rm][precision]") {
  CHECK(rm::parse_args({}).precision == "fp32");
  CHECK(rm::parse_args({"--precision", "bf16"}).precision == "bf16");
  CHECK_THROWS_WITH(rm::parse_args({"--precision", "fp16"}), Contains("--precision"));
  rm::TrainConfig c;
  c.precision = "fp16";
  CHECK_THROWS_WITH(rm::validate_config(c), Contains("--precision") && Contains("fp16"));
  c.precision = "bf16";
  CHECK_NOTHROW(rm::validate_config(c));
  c.model.checkpoint_activations = true;
  CHECK_THROWS_WITH(rm::validate_config(c),
                    Contains("--precision bf16") && Contains("--checkpoint-activations"));
}

TEST_CASE("a resume refuses a checkpoint of the other precision and continues one of its own",
          "[haf_rm][precision]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  const auto fp32_ckpt = dir / "fp32.pt", bf16_ckpt = dir / "bf16.pt";
  {
    rm::Trainer t(cfg);
    t.step();
    t.save_checkpoint(fp32_ckpt);
    // An fp32 run's identity has no precision key: its checkpoints read as they always have.
    CHECK_FALSE(rm::checkpoint_identity(t.state())["optimisation"].contains("precision"));
  }
  cfg.precision = "bf16";
  rm::Trainer a(cfg);
  a.step();
  a.save_checkpoint(bf16_ckpt);
  CHECK(rm::checkpoint_identity(a.state())["optimisation"]["precision"] == "bf16");
  const auto a2 = a.step();

  auto resume = [&](const std::string& precision, const std::filesystem::path& ckpt) {
    auto c = cfg;
    c.precision = precision;
    c.resume = ckpt.string();
    rm::Trainer t(c);
    return t.step();
  };
  CHECK_THROWS_WITH(resume("bf16", fp32_ckpt),
                    Contains("optimisation.precision: checkpoint (absent), this run \"bf16\""));
  CHECK_THROWS_WITH(resume("fp32", bf16_ckpt),
                    Contains("optimisation.precision: checkpoint \"bf16\", this run (absent)"));
  // Its own precision: the step an uninterrupted bf16 run takes.
  CHECK(resume("bf16", bf16_ckpt).loss == a2.loss);
}

TEST_CASE("the run's description names a bf16 precision", "[haf_rm][precision]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  CHECK_THAT(rm::Trainer(cfg).describe(), !Contains("precision"));
  cfg.precision = "bf16";
  rm::Trainer t(cfg);
  CHECK_THAT(t.describe(), Contains(", precision bf16 (autocast)"));
  CHECK(t.identity()["optimisation"]["precision"] == "bf16");  // and summary.json's identity
}
