// Resume and early stop of the haf_rm trainer: a resumed run takes exactly the steps an
// uninterrupted one takes, and a stop -- requested through the API or by SIGINT / SIGTERM, all
// through the one RunControl -- ends the run after the current step with a checkpoint.
#include <catch2/catch.hpp>

#include <signal.h>
#include <torch/torch.h>

#include <csignal>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "trainer.hpp"

namespace rm = hafrm::examples::rm;
using rm::test::TempDir;

TEST_CASE("resume takes exactly the step an uninterrupted run takes", "[haf_rm][resume]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  // Dropout makes the torch RNG state matter; 2 micro-batches of 4 on 20 pairs cross an epoch
  // boundary (reshuffle) between the checkpoint and the compared steps.
  cfg.model.dropout = 0.1;
  cfg.grad_accum = 2;
  cfg.reference = GENERATE(std::string("precompute"), std::string("model"));
  cfg.objective = GENERATE(std::string("haf"), std::string("dpo"));
  CAPTURE(cfg.reference, cfg.objective);
  const auto ckpt = dir / "resume.pt";

  rm::Trainer a(cfg);
  for (int i = 0; i < 3; ++i) a.step();
  a.save_checkpoint(ckpt);
  const auto a4 = a.step(), a5 = a.step();
  REQUIRE(a4.loss != a5.loss);  // the steps differ, so equality below is not a coincidence

  cfg.resume = ckpt.string();
  rm::Trainer b(cfg);
  REQUIRE(b.global_step() == 3);
  const auto b4 = b.step();
  CHECK(b4.loss == a4.loss);  // bitwise: same weights, optimizer state, batch and dropout mask
  CHECK(b4.reward_loss == a4.reward_loss);
  CHECK(b4.policy_loss == a4.policy_loss);
  const auto b5 = b.step();
  CHECK(b5.loss == a5.loss);
  CHECK(rm::test::same_parameters(a.model(), b.model()));
}

TEST_CASE("an interrupted run checkpoints, and its resumption matches an uninterrupted run",
          "[haf_rm][resume]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  cfg.steps = 6;
  cfg.out_dir = (dir / "straight").string();
  REQUIRE(rm::Trainer(cfg).run() == 0);
  const auto straight = rm::test::train_losses(dir / "straight" / "metrics.jsonl");
  REQUIRE(straight.size() == 6);

  cfg.out_dir = (dir / "stopped").string();
  {
    rm::Trainer t(cfg);
    REQUIRE(t.run([&t](const rm::StepStats& s) {
      if (s.step == 3) t.request_stop();  // what SIGINT / SIGTERM do
    }) == 130);
    REQUIRE(t.global_step() == 3);
  }
  const auto ckpt = dir / "stopped" / "checkpoint.pt";
  REQUIRE(std::filesystem::exists(ckpt));
  REQUIRE_FALSE(std::filesystem::exists(dir / "stopped" / "summary.json"));
  cfg.resume = ckpt.string();
  REQUIRE(rm::Trainer(cfg).run() == 0);
  // The metrics file reads like one run: steps 1-3 from the first process, 4-6 from the second.
  CHECK(rm::test::train_losses(dir / "stopped" / "metrics.jsonl") == straight);
  const auto summary = nlohmann::json::parse(rm::test::read_file(dir / "stopped" / "summary.json"));
  CHECK(summary["resumed_from"] == 3);
  CHECK(summary["steps"] == 6);
}

TEST_CASE(
    "a stop requested through the API stops after the current step and checkpoints, as "
    "SIGINT and SIGTERM do",
    "[haf_rm][resume][stop]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  cfg.steps = 6;
  struct Way {
    std::string name;
    std::function<void(rm::Trainer&)> stop;
    int exit_code;
    std::string cause;
  };
  const std::vector<Way> ways = {
      {"api", [](rm::Trainer& t) { t.request_stop(); }, 130, "a stop request"},
      {"sigint", [](rm::Trainer&) { std::raise(SIGINT); }, 128 + SIGINT, "SIGINT"},
      {"sigterm", [](rm::Trainer&) { std::raise(SIGTERM); }, 128 + SIGTERM, "SIGTERM"},
  };
  std::vector<std::filesystem::path> checkpoints;
  for (const auto& way : ways) {
    CAPTURE(way.name);
    cfg.out_dir = (dir / way.name).string();
    cfg.resume.clear();
    {
      rm::Trainer t(cfg);
      int steps_seen = 0;
      const int rc = t.run([&](const rm::StepStats& s) {
        ++steps_seen;
        if (s.step == 3) way.stop(t);
      });
      CHECK(rc == way.exit_code);
      CHECK(steps_seen == 3);       // no step after the one the request came in
      CHECK(t.global_step() == 3);  // the current step completed
      CHECK(t.control().stop_requested());
      CHECK(t.control().cause() == way.cause);
    }
    const std::filesystem::path run = cfg.out_dir;
    REQUIRE(std::filesystem::exists(run / "checkpoint.pt"));
    CHECK_FALSE(std::filesystem::exists(run / "summary.json"));  // not a finished run
    CHECK(rm::test::train_losses(run / "metrics.jsonl").size() == 3);
    checkpoints.push_back(run / "checkpoint.pt");
  }
  // Every way wrote the same state: the same weights, and a resumption at step 3.
  std::vector<std::unique_ptr<rm::Trainer>> resumed;
  for (const auto& ckpt : checkpoints) {
    cfg.resume = ckpt.string();
    cfg.out_dir = (dir / "resumed").string();
    resumed.push_back(std::make_unique<rm::Trainer>(cfg));
    REQUIRE(resumed.back()->global_step() == 3);
    REQUIRE(resumed.back()->resumed().has_value());
    CHECK(resumed.back()->resumed()->step == 3);
  }
  CHECK(rm::test::same_parameters(resumed[0]->model(), resumed[1]->model()));
  CHECK(rm::test::same_parameters(resumed[0]->model(), resumed[2]->model()));
}

TEST_CASE("a stop requested before the run starts ends it after its first step", "[haf_rm][stop]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  rm::Trainer t(cfg);
  t.request_stop();
  CHECK(t.run() == 130);
  CHECK(t.global_step() == 1);
  CHECK(std::filesystem::exists(dir / "run" / "checkpoint.pt"));
}

TEST_CASE("the run control keeps the first stop request and routes signals while guarded",
          "[haf_rm][stop]") {
  rm::RunControl c;
  CHECK_FALSE(c.stop_requested());
  CHECK(c.stop_signal() == 0);
  SECTION("an API request, then a signal: the request is the cause") {
    c.request_stop();
    c.request_stop(SIGTERM);
    CHECK(c.stop_requested());
    CHECK(c.stop_signal() == 0);
    CHECK(c.cause() == "a stop request");
    CHECK(c.exit_code() == 130);
  }
  SECTION("a signal while a StopSignals guard is installed, and the old handler after it") {
    struct sigaction before {};
    sigaction(SIGTERM, nullptr, &before);
    {
      rm::StopSignals guard(c);
      std::raise(SIGTERM);  // handled: the process lives on
    }
    CHECK(c.stop_requested());
    CHECK(c.stop_signal() == SIGTERM);
    CHECK(c.cause() == "SIGTERM");
    CHECK(c.exit_code() == 128 + SIGTERM);
    struct sigaction after {};
    sigaction(SIGTERM, nullptr, &after);
    CHECK(after.sa_handler == before.sa_handler);
  }
  SECTION("nested guards: the inner one's control gets the signal, the outer one's after it") {
    rm::RunControl inner;
    rm::StopSignals outer_guard(c);
    {
      rm::StopSignals inner_guard(inner);
      std::raise(SIGINT);
    }
    CHECK(inner.stop_signal() == SIGINT);
    CHECK_FALSE(c.stop_requested());
    // SA_RESETHAND reset SIGINT when it was delivered; the inner guard restored the outer one's.
    std::raise(SIGINT);
    CHECK(c.stop_signal() == SIGINT);
  }
}
