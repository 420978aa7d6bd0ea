// The haf_rm command line end to end on tiny data: it trains and writes its files, rejects bad
// values naming the option and its range, keeps its option names, defaults and value forms, and
// its --help states the same ranges it accepts.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"
#include "test_util.hpp"
#include "trainer.hpp"

namespace rm = hafrm::examples::rm;
using Catch::Matchers::Contains;
using rm::test::TempDir;

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
    const auto losses = rm::test::train_losses(out / "metrics.jsonl");
    REQUIRE(losses.size() == 4);
    CHECK(losses.back() < losses.front());  // it learns (policy term on 24 pairs)
    int evals = 0;
    for (const auto& r : rm::test::read_jsonl(out / "metrics.jsonl")) evals += r["split"] == "eval";
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
  // Trailing characters, a negative unsigned, zero or negative counts, fractions, values out of
  // range or beyond double, infinities and NaN: each is refused, never read as something else.
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
      {{"--lr", "0"}, "--lr", "must be in (0, 1], got 0"},
      {{"--lr", "1e308"}, "--lr", "must be in (0, 1], got 1e308"},
      {{"--lr", "1.5"}, "--lr", "must be in (0, 1], got 1.5"},
      {{"--lr", "inf"}, "--lr", "must be a finite number in (0, 1], got inf"},
      {{"--lr=-inf"}, "--lr", "must be a finite number in (0, 1], got -inf"},
      {{"--lr", "nan"}, "--lr", "must be a finite number in (0, 1], got nan"},
      {{"--lr", "1e999"}, "--lr", "must be a finite number in (0, 1], got 1e999"},
      {{"--lr", "2e-3x"}, "--lr", "expected a number"},
      {{"--weight-decay", "inf"}, "--weight-decay", "finite number in [0, 1], got inf"},
      {{"--weight-decay", "2"}, "--weight-decay", "must be in [0, 1], got 2"},
      {{"--adam-eps", "inf"}, "--adam-eps", "finite number in (0, 1], got inf"},
      {{"--adam-eps", "0"}, "--adam-eps", "must be in (0, 1], got 0"},
      {{"--clip", "inf"}, "--clip", "finite number in [-1e+06, 1e+06], got inf"},
      {{"--clip", "-inf"}, "--clip", "finite number in [-1e+06, 1e+06], got -inf"},
      {{"--clip", "1e7"}, "--clip", "must be in [-1e+06, 1e+06], got 1e7"},
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
                           "--init-from",
                           "--checkpoint-activations",
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
  CHECK_THAT(usage, Contains("INT:[1, 4096]") && Contains("{bt,haf,dpo,lm,sft}"));
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

TEST_CASE("--help states each real option's range, and exactly that range is accepted",
          "[haf_rm][cli]") {
  struct Real {
    std::string option;
    rm::RealRange range;
    double rm::TrainConfig::*field;  // null: --dropout, in the model config
  };
  const auto r = GENERATE(values<Real>({
      {"--lr", rm::kLrRange, &rm::TrainConfig::lr},
      {"--weight-decay", rm::kWeightDecayRange, &rm::TrainConfig::weight_decay},
      {"--adam-eps", rm::kAdamEpsRange, &rm::TrainConfig::adam_eps},
      {"--clip", rm::kClipRange, &rm::TrainConfig::clip},
      {"--min-lr-ratio", rm::kMinLrRatioRange, &rm::TrainConfig::min_lr_ratio},
      {"--dropout", rm::kDropoutRange, nullptr},
  }));
  CAPTURE(r.option);
  const std::string range = r.range.str();
  CHECK_THAT(range, !Contains("inf") && !Contains("nan"));

  // --help shows the range on the option's line.
  std::istringstream usage(rm::usage());
  std::string line, shown;
  while (std::getline(usage, line))
    if (line.find("  " + r.option + " ") != std::string::npos) shown = line;
  CAPTURE(shown);
  CHECK_THAT(shown, Contains("FLOAT:" + range));

  const auto value = [&](const std::string& v) {
    const auto c = rm::parse_args({r.option, v});
    return r.field ? c.*r.field : c.model.dropout;
  };
  const auto refused = [&](const std::string& v) {
    CAPTURE(v);
    CHECK_THROWS_WITH(rm::parse_args({r.option, v}), Contains(r.option) && Contains(range));
    rm::TrainConfig c;
    const double x = std::strtod(v.c_str(), nullptr);
    (r.field ? c.*r.field : c.model.dropout) = x;
    CHECK_THROWS_WITH(rm::validate_config(c), Contains(r.option) && Contains(range));
  };
  const auto str = [](double x) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", x);
    return std::string(buf);
  };
  // The bounds: in when closed, out when open; one past either end: out.
  if (r.range.open_lo)
    refused(str(r.range.lo));
  else
    CHECK(value(str(r.range.lo)) == r.range.lo);
  if (r.range.open_hi)
    refused(str(r.range.hi));
  else
    CHECK(value(str(r.range.hi)) == r.range.hi);
  refused(str(r.range.lo - 1));
  refused(str(r.range.hi + 1));
  refused("1e308");
  refused("inf");
  refused("-inf");
  refused("nan");
}

TEST_CASE("a learning rate out of range is a usage error naming --lr and its range",
          "[haf_rm][cli]") {
  CHECK(rm::run_cli({"--lr", "1e308"}) == 2);
  CHECK(rm::run_cli({"--lr", "inf"}) == 2);
  rm::TrainConfig c;
  c.lr = 1e308;
  CHECK_THROWS_WITH(rm::Trainer(c), Contains("--lr must be in (0, 1], got 1e+308"));
  c.lr = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(rm::Trainer(c), Contains("--lr must be a finite number in (0, 1], got inf"));
}
