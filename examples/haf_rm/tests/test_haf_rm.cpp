// Tests of the haf_rm example trainer: exact resume, refusal of corrupt and mismatched
// checkpoints, interruption, the objectives, and the command line end to end on tiny data.
// Over 400 lines as one file because it is the one test file of one example program: its cases
// share the tiny-data runs and helpers of test_util.hpp, and a reader looks for the trainer's
// tests here (the multi-process ones are test_data_parallel.py).
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.hpp"
#include "test_util.hpp"
#include "trainer.hpp"

namespace rm = hafrm::examples::rm;
using Catch::Matchers::Contains;
using rm::test::TempDir;

namespace {

std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& p) {
  std::vector<nlohmann::json> v;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) v.push_back(nlohmann::json::parse(line));
  return v;
}

std::vector<double> train_losses(const std::filesystem::path& metrics) {
  std::vector<double> v;
  for (const auto& r : read_jsonl(metrics))
    if (r["split"] == "train") v.push_back(r["loss"].get<double>());
  return v;
}

bool same_parameters(rm::HafTransformer& a, rm::HafTransformer& b) {
  auto pb = b->named_parameters();
  for (const auto& p : a->named_parameters())
    if (!torch::equal(p.value(), pb[p.key()])) return false;
  return true;
}

// Runs `f` and returns the message of the CheckpointError it must throw.
template <class F>
std::string checkpoint_error(F&& f) {
  try {
    f();
  } catch (const rm::CheckpointError& e) {
    return e.what();
  }
  FAIL("expected a CheckpointError");
  return {};
}

}  // namespace

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
  CHECK(same_parameters(a.model(), b.model()));
}

TEST_CASE("an interrupted run checkpoints, and its resumption matches an uninterrupted run",
          "[haf_rm][resume]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  cfg.steps = 6;
  cfg.out_dir = (dir / "straight").string();
  REQUIRE(rm::Trainer(cfg).run() == 0);
  const auto straight = train_losses(dir / "straight" / "metrics.jsonl");
  REQUIRE(straight.size() == 6);

  cfg.out_dir = (dir / "stopped").string();
  {
    rm::Trainer t(cfg);
    t.after_step = [&t](const rm::StepStats& s) {
      if (s.step == 3) t.request_stop();  // what SIGINT / SIGTERM do
    };
    REQUIRE(t.run() == 130);
    REQUIRE(t.global_step() == 3);
  }
  const auto ckpt = dir / "stopped" / "checkpoint.pt";
  REQUIRE(std::filesystem::exists(ckpt));
  REQUIRE_FALSE(std::filesystem::exists(dir / "stopped" / "summary.json"));
  cfg.resume = ckpt.string();
  REQUIRE(rm::Trainer(cfg).run() == 0);
  // The metrics file reads like one run: steps 1-3 from the first process, 4-6 from the second.
  CHECK(train_losses(dir / "stopped" / "metrics.jsonl") == straight);
  const auto summary = nlohmann::json::parse(rm::test::read_file(dir / "stopped" / "summary.json"));
  CHECK(summary["resumed_from"] == 3);
  CHECK(summary["steps"] == 6);
}

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

TEST_CASE("a corrupt checkpoint is refused with a clear message", "[haf_rm][checkpoint]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  const auto good = dir / "good.pt";
  rm::Trainer(cfg).save_checkpoint(good);
  const std::string bytes = rm::test::read_file(good);
  // No temporary file is left behind by the atomic write.
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);

  auto load = [&](const std::string& content) {
    const auto p = dir / "bad.pt";
    rm::test::write_file(p, content);
    auto c = cfg;
    c.resume = p.string();
    return checkpoint_error([&] { rm::Trainer t(c); });
  };
  SECTION("truncated") {
    CHECK_THAT(load(bytes.substr(0, bytes.size() / 2)),
               Contains("corrupt") && Contains("truncated"));
  }
  SECTION("one flipped byte") {
    auto flipped = bytes;
    flipped[flipped.size() / 2] ^= 0x20;
    CHECK_THAT(load(flipped), Contains("corrupt") && Contains("checksum"));
  }
  SECTION("not a checkpoint") {
    CHECK_THAT(load("{\"prompt\": \"not a checkpoint\"}\n"),
               Contains("not a hafrm example checkpoint"));
  }
  SECTION("empty file") { CHECK_THAT(load(""), Contains("not a hafrm example checkpoint")); }
  SECTION("missing file") {
    auto c = cfg;
    c.resume = (dir / "nope.pt").string();
    CHECK_THAT(checkpoint_error([&] { rm::Trainer t(c); }), Contains("cannot open checkpoint"));
  }
  SECTION("header sizes that do not fit the file are corrupt, never an allocation") {
    // -1 and 1e15 gave std::length_error (basic_string::_M_create) and std::bad_alloc.
    const std::string payload = bytes.substr(bytes.find('\n') + 1);
    const std::string hash = rm::detail::hex64(rm::detail::fnv1a(payload.data(), payload.size()));
    for (const std::string size : {"-1", "1e15", "1000000000000000", "18446744073709551615",
                                   "99999999999999999999999", "0x10", "", "12 34"}) {
      CAPTURE(size);
      CHECK_THAT(
          load(std::string(rm::kCheckpointMagic) + " 1 " + size + " " + hash + "\n" + payload),
          Contains("is corrupt"));
    }
  }
  SECTION("a damaged header is corrupt") {
    const std::string payload = bytes.substr(bytes.find('\n') + 1);
    const std::string size = std::to_string(payload.size());
    const std::string magic = rm::kCheckpointMagic;
    CHECK_THAT(load(magic + " 1 " + size + " XYZ\n" + payload),
               Contains("corrupt") && Contains("hex"));
    CHECK_THAT(load(magic + " 1 " + size + "\n" + payload),
               Contains("corrupt") && Contains("fields"));
    CHECK_THAT(load(magic + " x " + size + " 0\n"), Contains("corrupt") && Contains("format"));
    CHECK_THAT(load(magic + " 1 " + std::string(200, '7')),
               Contains("corrupt") && Contains("header"));
    CHECK_THAT(load(magic + " 2 1 0000000000000000\nx"), Contains("has format 2"));
    CHECK_THAT(load(magic + "X 1 1 0000000000000000\nx"),
               Contains("not a hafrm example checkpoint"));
  }
  SECTION("valid header, payload that is not a torch archive") {
    const std::string payload = "definitely not a zip archive";
    const std::string header = std::string(rm::kCheckpointMagic) + " 1 " +
                               std::to_string(payload.size()) + " " +
                               rm::detail::hex64(rm::detail::fnv1a(payload.data(), payload.size()));
    CHECK_THAT(load(header + "\n" + payload), Contains("is corrupt"));
  }
}

TEST_CASE("a checkpoint of another model, tokenizer, objective or data is refused",
          "[haf_rm][checkpoint]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  const auto ckpt = dir / "ckpt.pt";
  {
    rm::Trainer t(cfg);
    t.step();
    t.save_checkpoint(ckpt);
  }
  cfg.resume = ckpt.string();
  auto refused = [&](rm::TrainConfig c) { return checkpoint_error([&] { rm::Trainer t(c); }); };

  SECTION("model config") {
    auto c = cfg;
    c.model.d_model = 32;
    const auto msg = refused(c);
    CHECK_THAT(msg, Contains("does not match this run") &&
                        Contains("model.d_model: checkpoint 16, this run 32"));
  }
  SECTION("objective") {
    auto c = cfg;
    c.objective = "bt";
    const auto msg = refused(c);
    CHECK_THAT(msg, Contains("objective.objective: checkpoint \"haf\", this run \"bt\""));
    CHECK_THAT(msg, Contains("objective.weighting"));
  }
  SECTION("policy loss") {
    auto c = cfg;
    c.policy_loss = "sigmoid:beta=0.5";
    CHECK_THAT(refused(c), Contains("objective.policy_loss"));
  }
  SECTION("tokenizer") {
    const auto model = hafrm::examples::train_sentencepiece(
        std::filesystem::path(HAFRM_EXAMPLES_DATA_DIR) / "text" / "corpus.txt", dir / "sp", 120);
    auto c = cfg;
    c.tokenizer = model.string();
    const auto msg = refused(c);
    CHECK_THAT(msg, Contains("tokenizer.kind: checkpoint \"byte\", this run \"sentencepiece\""));
    CHECK_THAT(msg, Contains("tokenizer.vocab_size"));
  }
  SECTION("training data") {
    auto c = cfg;
    rm::test::write_file(dir / "other.jsonl",
                         "{\"prompt\":\"cab\",\"chosen\":\"abc\",\"rejected\":\"acb\"}\n"
                         "{\"prompt\":\"fed\",\"chosen\":\"def\",\"rejected\":\"dfe\"}\n"
                         "{\"prompt\":\"hgi\",\"chosen\":\"ghi\",\"rejected\":\"gih\"}\n"
                         "{\"prompt\":\"kjl\",\"chosen\":\"jkl\",\"rejected\":\"jll\"}\n");
    c.train_path = (dir / "other.jsonl").string();
    const auto msg = refused(c);
    CHECK_THAT(msg, Contains("data.train_pairs") && Contains("data.train_fingerprint"));
  }
  SECTION("optimiser settings") {
    auto c = cfg;
    c.lr = 1e-4;
    CHECK_THAT(refused(c), Contains("optimisation.lr"));
  }
  SECTION("the same settings load") {
    rm::Trainer t(cfg);
    CHECK(t.global_step() == 1);
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

TEST_CASE("the command line trains, evaluates and writes its files on tiny data", "[haf_rm][cli]") {
  TempDir dir;
  rm::test::write_tiny_splits(dir.path(), 24, 12);
  const auto out = dir / "run";
  std::vector<std::string> args = {"--train",
                                   (dir / "train.jsonl").string(),
                                   "--eval",
                                   (dir / "eval.jsonl").string(),
                                   "--ood",
                                   (dir / "ood.jsonl").string(),
                                   "--out",
                                   out.string(),
                                   "--d-model=16",
                                   "--layers=1",
                                   "--heads=2",
                                   "--d-ff=32",
                                   "--batch-size",
                                   "8",
                                   "--steps",
                                   "40",
                                   "--lr",
                                   "5e-3",
                                   "--warmup-steps",
                                   "5",
                                   "--eval-every",
                                   "20",
                                   "--checkpoint-every",
                                   "20",
                                   "--log-every",
                                   "10",
                                   "--threads",
                                   "1",
                                   "--progress",
                                   "plain"};
  SECTION("JSONL metrics") {
    REQUIRE(rm::run_cli(args) == 0);
    REQUIRE(std::filesystem::exists(out / "checkpoint.pt"));
    const auto summary = nlohmann::json::parse(rm::test::read_file(out / "summary.json"));
    CHECK(summary["objective"] == "haf");
    CHECK(summary["steps"] == 40);
    CHECK(summary["eval"]["pairs"] == 12);
    CHECK(summary["ood"]["pairs"] == 12);
    for (const char* split : {"eval", "ood"}) {
      const double acc = summary[split]["reward_acc"];
      CHECK(acc >= 0.0);
      CHECK(acc <= 1.0);
      CHECK(summary[split]["by_kind"].contains("swap"));
    }
    const auto losses = train_losses(out / "metrics.jsonl");
    REQUIRE(losses.size() == 4);
    CHECK(losses.back() < losses.front());  // it learns (policy term on 24 pairs)
    int evals = 0;
    for (const auto& r : read_jsonl(out / "metrics.jsonl")) evals += r["split"] == "eval";
    CHECK(evals == 2);  // step 20 and the final evaluation
  }
  SECTION("CSV metrics") {
    args.insert(args.end(), {"--metrics", (dir / "m.csv").string(), "--objective", "bt"});
    REQUIRE(rm::run_cli(args) == 0);
    std::ifstream in(dir / "m.csv");
    std::string header, line;
    std::getline(in, header);
    CHECK(header.starts_with("step,split,time_s,loss"));
    std::vector<std::string> rows;
    while (std::getline(in, line)) rows.push_back(line);
    REQUIRE(rows.size() == 4 + 2 * 2);  // 4 train rows, eval + ood at steps 20 and 40
    CHECK(rows[0].starts_with("10,train,"));
    CHECK(rows[2].starts_with("20,eval,"));
  }
  SECTION("usage errors") {
    CHECK(rm::run_cli({"--no-such-option"}) == 2);
    CHECK(rm::run_cli({"--steps", "many"}) == 2);
    CHECK(rm::run_cli({"--help"}) == 0);
    auto bad = args;
    bad.insert(bad.end(), {"--objective", "ppo"});  // a choice CLI11 checks: a usage error
    CHECK(rm::run_cli(bad) == 2);
    bad = args;
    bad.insert(bad.end(), {"--device", "tpu"});  // checked by the trainer: an error
    CHECK(rm::run_cli(bad) == 1);
  }
  SECTION("bad records: an error naming file and line, or skipped and counted") {
    std::string text = rm::test::read_file(dir / "train.jsonl");
    rm::test::write_file(dir / "train.jsonl", text + "{\"prompt\": \"ab\", \"chosen\": \"\"}\n");
    rm::TrainConfig c = rm::parse_args(args);
    CHECK_THROWS_WITH(rm::Trainer(c), Contains("train.jsonl:25"));
    c.skip_bad = true;
    rm::Trainer t(c);
    CHECK(t.train_split().pairs.size() == 24);
    CHECK(t.train_split().report.skipped == 1);
  }
}

TEST_CASE("the command line rejects bad values with the option's name", "[haf_rm][cli]") {
  // Each was accepted by the hand-written parser: "10x" read as 10, -1 as 2^64-1, 0 and -3
  // threads, octal, saturation, NaN.
  struct Case {
    std::vector<std::string> args;
    std::string option, reason;
  };
  const auto c = GENERATE(values<Case>({
      {{"--steps", "10x"}, "--steps", "expected an integer"},
      {{"--steps=10x"}, "--steps", "expected an integer"},
      {{"--steps", "many"}, "--steps", "expected an integer"},
      {{"--steps", "-1"}, "--steps", "must be in [0, "},
      {{"--steps", "99999999999999999999"}, "--steps", "must be in [0, "},
      {{"--seed", "-1"}, "--seed", "must be in [0, 18446744073709551615], got -1"},
      {{"--seed", "18446744073709551616"}, "--seed", "must be in [0, 18446744073709551615]"},
      {{"--threads", "0"}, "--threads", "must be in [1, 4096], got 0"},
      {{"--threads", "-3"}, "--threads", "must be in [1, 4096], got -3"},
      {{"--threads=0"}, "--threads", "must be in [1, 4096]"},
      {{"--batch-size", "0"}, "--batch-size", "must be in [1, "},
      {{"--batch-size", "1.5"}, "--batch-size", "expected an integer"},
      {{"--lr", "0"}, "--lr", "must be in (0, inf]"},
      {{"--lr", "nan"}, "--lr", "finite"},
      {{"--lr", "1e999"}, "--lr", "finite"},
      {{"--lr", "2e-3x"}, "--lr", "expected a number"},
      {{"--dropout", "1"}, "--dropout", "must be in [0, 1)"},
      {{"--min-lr-ratio", "-0.5"}, "--min-lr-ratio", "must be in [0, 1]"},
      {{"--log-every", "0"}, "--log-every", "must be in [1, "},
      {{"--objective", "ppo"}, "--objective", "ppo"},
      {{"--progress", "fancy"}, "--progress", "fancy"},
      {{"--steps"}, "--steps", ""},
      {{"--no-such-option"}, "--no-such-option", ""},
      {{"stray"}, "stray", ""},
  }));
  CAPTURE(c.args);
  try {
    rm::parse_args(c.args);
    FAIL("accepted");
  } catch (const std::invalid_argument& e) {
    CHECK_THAT(e.what(), Contains(c.option) && Contains(c.reason));
  }
}

TEST_CASE("the command line keeps its option names, defaults and both value forms",
          "[haf_rm][cli]") {
  const rm::TrainConfig d;
  const auto p = rm::parse_args({});
  CHECK(p.steps == d.steps);
  CHECK(p.seed == d.seed);
  CHECK(p.threads == 0);  // LibTorch's choice unless --threads is given
  CHECK(p.lr == d.lr);
  CHECK(p.train_path == d.train_path);
  CHECK(p.objective == "haf");
  CHECK(p.model.fused_lm_head);
  CHECK_FALSE(p.skip_bad);

  const auto q = rm::parse_args({"--steps", "010", "--seed=18446744073709551615", "--threads", "3",
                                 "--lr=5e-3", "--clip", "-1", "--ood=", "--eval", "", "--skip-bad",
                                 "--logits", "--d-model=32", "--steps", "12"});
  CHECK(q.steps == 12);  // the last occurrence wins; and 010 was read as ten, not octal eight
  CHECK(rm::parse_args({"--steps", "010"}).steps == 10);
  CHECK(q.seed == 18446744073709551615ull);
  CHECK(q.threads == 3);
  CHECK(q.lr == 5e-3);
  CHECK(q.clip == -1.0);
  CHECK(q.ood_path.empty());
  CHECK(q.eval_path.empty());
  // "--name=" is an empty value, not a request to take the next argument as the value.
  const auto e = rm::parse_args({"--ood=", "--eval", "x.jsonl", "--train", ""});
  CHECK(e.ood_path.empty());
  CHECK(e.eval_path == "x.jsonl");
  CHECK(e.train_path.empty());
  CHECK_THROWS_WITH(rm::parse_args({"--steps="}), Contains("--steps") && Contains("got \"\""));
  CHECK(q.skip_bad);
  CHECK_FALSE(q.model.fused_lm_head);
  CHECK(q.model.d_model == 32);

  bool help = false;
  rm::parse_args({"--steps", "5", "-h"}, &help);
  CHECK(help);
  // --help is generated from the declarations: every option, with its range or choices.
  const std::string usage = rm::usage();
  for (const char* name : {"--objective",
                           "--reward-loss",
                           "--policy-loss",
                           "--weighting",
                           "--readout",
                           "--reference",
                           "--train",
                           "--eval",
                           "--ood",
                           "--skip-bad",
                           "--tokenizer",
                           "--template",
                           "--max-length",
                           "--max-prompt-length",
                           "--layers",
                           "--d-model",
                           "--heads",
                           "--d-ff",
                           "--dropout",
                           "--positions",
                           "--logits",
                           "--steps",
                           "--batch-size",
                           "--grad-accum",
                           "--lr",
                           "--weight-decay",
                           "--adam-eps",
                           "--clip",
                           "--warmup-steps",
                           "--schedule",
                           "--min-lr-ratio",
                           "--seed",
                           "--threads",
                           "--device",
                           "--out",
                           "--metrics",
                           "--checkpoint-every",
                           "--resume",
                           "--eval-every",
                           "--eval-batch",
                           "--log-every",
                           "--progress",
                           "--help"}) {
    CAPTURE(name);
    CHECK_THAT(usage, Contains(name));
  }
  CHECK_THAT(usage, Contains("INT:[1, 4096]") && Contains("{bt,haf,dpo}"));
  for (const char* name :
       {"--vocab-parallel", "--vocab-parallel-size", "--bucket-kb", "--dist-timeout"}) {
    CAPTURE(name);
    CHECK_THAT(usage, Contains(name));
  }
  CHECK(rm::parse_args({"--vocab-parallel"}).vocab_parallel);
  CHECK_FALSE(p.vocab_parallel);
  // The vocab-parallel path runs the fused kernels only.
  auto vp = rm::parse_args({"--vocab-parallel"});
  vp.logprob_backend = "reference";
  CHECK_THROWS_WITH(rm::validate_config(vp),
                    Contains("--vocab-parallel") && Contains("--logprob-backend reference"));
  // A group size means nothing without the mode it sizes.
  CHECK(rm::parse_args({"--vocab-parallel", "--vocab-parallel-size", "2"}).vocab_parallel_size ==
        2);
  CHECK_THROWS_WITH(rm::validate_config(rm::parse_args({"--vocab-parallel-size", "2"})),
                    Contains("--vocab-parallel-size 2 needs --vocab-parallel"));
  CHECK_THROWS_WITH(rm::parse_args({"--vocab-parallel-size", "-1"}),
                    Contains("--vocab-parallel-size") && Contains("must be in [0, "));
}

TEST_CASE("stale checkpoint temporaries of dead writers are removed at start, nothing else",
          "[haf_rm][checkpoint]") {
  namespace fs = std::filesystem;
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  const fs::path run = cfg.out_dir;
  fs::create_directories(run);
  // Pids that are certainly dead: children we started and reaped.
  const auto dead_pid = [] {
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    REQUIRE(child > 0);
    ::waitpid(child, nullptr, 0);
    return std::to_string(child);
  };
  const std::string dead = dead_pid(), dead_dir = dead_pid();
  const std::string live = std::to_string(::getppid()), own = std::to_string(::getpid());
  const std::string tmp = "checkpoint.pt.tmp-";
  // Only the first is a stale temporary of this run's checkpoint.
  // (The run's own pid is kept by the function; a training run then writes through that name.)
  const std::vector<std::string> kept = {
      tmp + live, tmp + dead + ".bak",    tmp + "x" + dead,
      tmp,        "other.pt.tmp-" + dead, tmp + "99999999999"};  // too long to be a pid
  rm::test::write_file(run / (tmp + dead), "partial");
  for (const auto& name : kept) rm::test::write_file(run / name, "partial");
  fs::create_directory(run / (tmp + dead_dir));  // a directory, not a file we wrote: kept
  const auto expect_kept = [&] {
    for (const auto& name : kept) {
      CAPTURE(name);
      CHECK(fs::exists(run / name));
    }
    CHECK(fs::is_directory(run / (tmp + dead_dir)));
  };
  SECTION("the function") {
    const auto removed = rm::remove_stale_checkpoint_temporaries(run / "checkpoint.pt");
    REQUIRE(removed.size() == 1);
    CHECK(removed[0].filename() == "checkpoint.pt.tmp-" + dead);
    CHECK_FALSE(fs::exists(run / ("checkpoint.pt.tmp-" + dead)));
    expect_kept();
    rm::test::write_file(run / (tmp + own), "partial");
    CHECK(rm::remove_stale_checkpoint_temporaries(run / "checkpoint.pt").empty());
    CHECK(fs::exists(run / (tmp + own)));
  }
  SECTION("a training run") {
    REQUIRE(rm::Trainer(cfg).run() == 0);
    CHECK_FALSE(fs::exists(run / ("checkpoint.pt.tmp-" + dead)));
    expect_kept();
  }
  SECTION("no directory yet") {
    CHECK(rm::remove_stale_checkpoint_temporaries(dir / "absent" / "checkpoint.pt").empty());
  }
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
