// The language-model objectives (--objective lm, sft) and starting a reward model from a trained
// backbone (--init-from): what each objective scores, that it learns, resume and the metrics
// file, the loaded weights and reference, and every refusal.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
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

// A small corpus of prompt/response rows in the synthetic task's language.
std::filesystem::path write_corpus(const TempDir& dir, const std::string& name = "corpus.jsonl") {
  std::string rows;
  const char* letters[] = {"dcba", "zyx", "qpo", "mlkj", "hgf", "tsr", "wvu", "edc"};
  for (int i = 0; i < 24; ++i) {
    std::string src = letters[i % 8];
    std::string sorted = src;
    std::sort(sorted.begin(), sorted.end());
    rows += "{\"prompt\":\"sort " + src + "\",\"response\":\"" + sorted + "\"}\n";
  }
  return dir.write(name, rows);
}

rm::TrainConfig lm_config(const TempDir& dir, const std::string& objective) {
  auto c = rm::test::tiny_config(dir);
  c.objective = objective;
  c.train_path = write_corpus(dir).string();
  c.eval_path = (dir / "eval.jsonl").string();  // a preference file: its responses
  c.ood_path = "";
  return c;
}

}  // namespace

TEST_CASE("lm scores every token, sft the responses given their prompts", "[haf_rm][pretrain]") {
  TempDir dir;
  const auto corpus = write_corpus(dir);
  rm::test::write_tiny_splits(dir.path());
  hafrm::data::ByteTokenizer tok;
  hafrm::data::AssemblyOptions ao;
  ao.max_length = 64;
  ao.max_prompt_length = 32;
  const auto lm = rm::load_sequence_split("train", corpus.string(), tok, ao, false,
                                          rm::SequenceObjective::kLanguageModel);
  const auto sft = rm::load_sequence_split("train", corpus.string(), tok, ao, false,
                                           rm::SequenceObjective::kSupervised);
  REQUIRE(lm.size() == 24);
  REQUIRE(sft.size() == 24);
  CHECK(lm.unit() == std::string("sequences"));
  for (std::size_t i = 0; i < lm.size(); ++i) {
    const auto& a = lm.sequences[i];
    const auto& b = sft.sequences[i];
    CHECK(a.ids == b.ids);     // the same assembled sequence ...
    CHECK(a.labels == a.ids);  // ... lm scores every token
    CHECK(a.ids.back() == tok.eos_id());
    const auto p = static_cast<std::size_t>(b.prompt_length);
    REQUIRE(p > 0);
    for (std::size_t t = 0; t < b.labels.size(); ++t)  // sft: the response and EOS only
      CHECK(b.labels[t] == (t < p ? -100 : b.ids[t]));
  }
  CHECK(rm::fingerprint(lm) != rm::fingerprint(sft));  // the labels differ

  SECTION("a preference file: lm reads both sides, sft the chosen side") {
    const auto pairs = rm::load_split("eval", (dir / "eval.jsonl").string(), tok, ao, false);
    const auto both = rm::load_sequence_split("eval", (dir / "eval.jsonl").string(), tok, ao, false,
                                              rm::SequenceObjective::kLanguageModel);
    const auto chosen = rm::load_sequence_split("eval", (dir / "eval.jsonl").string(), tok, ao,
                                                false, rm::SequenceObjective::kSupervised);
    REQUIRE(both.size() == 2 * pairs.size());
    REQUIRE(chosen.size() == pairs.size());
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      CHECK(both.sequences[2 * i].ids == pairs.pairs[i].chosen_ids);
      CHECK(both.sequences[2 * i + 1].ids == pairs.pairs[i].rejected_ids);
      CHECK(chosen.sequences[i].labels == pairs.pairs[i].chosen_labels);
    }
  }
  SECTION("text rows: every token, cut to --max-length from the end") {
    const auto text = dir.write(
        "text.jsonl", "{\"text\":\"hello\"}\n{\"text\":\"" + std::string(100, 'x') + "\"}\n");
    const auto t = rm::load_sequence_split("t", text.string(), tok, ao, false,
                                           rm::SequenceObjective::kLanguageModel);
    REQUIRE(t.size() == 2);
    CHECK(t.sequences[0].ids == std::vector<int64_t>{'h', 'e', 'l', 'l', 'o', tok.eos_id()});
    CHECK(t.sequences[0].labels == t.sequences[0].ids);
    CHECK(t.sequences[1].ids.size() == 64);
    CHECK(t.sequences[1].ids.back() == tok.eos_id());
    CHECK(t.truncated == 1);
    CHECK_THAT(
        rm::test::error_of([&] {
          rm::load_sequence_split("t", text.string(), tok, ao, false,
                                  rm::SequenceObjective::kSupervised);
        }),
        Contains("--objective sft scores responses given their prompts") && Contains("text rows"));
  }
}

TEST_CASE("lm and sft learn, train the LM head alone and report next-token NLL",
          "[haf_rm][pretrain]") {
  TempDir dir;
  const std::string objective = GENERATE(std::string("lm"), std::string("sft"));
  CAPTURE(objective);
  auto cfg = lm_config(dir, objective);
  cfg.steps = 30;
  cfg.lr = 1e-2;
  rm::Trainer t(cfg);
  CHECK_FALSE(t.state().reference());  // no reference: nothing to compare log-probs with
  CHECK(t.state().sequence_objective());
  const auto before = t.evaluate(*t.eval_split());
  REQUIRE(before.lm);
  CHECK(before.lm->sequences == static_cast<int64_t>(t.eval_split()->size()));
  CHECK(before.lm->nll > 4.0);  // about log(257) at initialisation
  REQUIRE(t.run() == 0);
  const auto after = t.evaluate(*t.eval_split());
  CHECK(after.lm->tokens == before.lm->tokens);
  CHECK(after.lm->nll < before.lm->nll - 1.0);
  // The reward head stays at its zero initialisation (frozen), ready for --init-from.
  for (const auto& p : t.model()->score->parameters()) {
    CHECK(p.abs().max().item<double>() == 0.0);
    CHECK_FALSE(p.requires_grad());
  }
  // The metrics file: next-token loss records, and evaluations in nll / ppl.
  const auto records = rm::test::read_jsonl(dir / "run" / "metrics.jsonl");
  int train = 0, eval = 0;
  for (const auto& r : records) {
    if (r["split"] == "train") {
      ++train;
      CHECK(r.contains("loss"));
      CHECK_FALSE(r.contains("reward_acc"));
    } else {
      ++eval;
      CHECK(r["nll"].get<double>() > 0.0);
      CHECK(r["ppl"].get<double>() == Approx(std::exp(r["nll"].get<double>())));
    }
  }
  CHECK(train == 30);
  CHECK(eval == 1);
  const auto summary = nlohmann::json::parse(rm::test::read_file(dir / "run" / "summary.json"));
  CHECK(summary["score"] == "nll");
  CHECK(summary["eval"]["nll"].get<double>() == Approx(after.lm->nll));
  CHECK(summary["identity"]["data"].contains("train_sequences"));
}

TEST_CASE("lm: a step's loss is the mean over all its tokens, however micro-batches split them",
          "[haf_rm][pretrain]") {
  TempDir dir;
  auto one = lm_config(dir, "lm");
  one.batch_size = 8;
  auto two = one;  // the same global batches as two micro-batches of 4
  two.batch_size = 4;
  two.grad_accum = 2;
  two.out_dir = (dir / "two").string();
  rm::Trainer a(one), b(two);
  for (int i = 0; i < 4; ++i) {  // 24 rows in batches of 8: crosses an epoch
    const auto sa = a.step(), sb = b.step();
    CHECK(sb.loss == Approx(sa.loss).epsilon(1e-5));
    CHECK(sb.grad_norm == Approx(sa.grad_norm).epsilon(1e-4));
  }
  const auto pb = b.model()->named_parameters();
  for (const auto& p : a.model()->named_parameters())
    CHECK((p.value() - pb[p.key()]).abs().max().item<double>() < 1e-5);
}

TEST_CASE("an lm run resumes exactly", "[haf_rm][pretrain][resume]") {
  TempDir dir;
  auto cfg = lm_config(dir, "lm");
  cfg.model.dropout = 0.1;
  cfg.grad_accum = 2;
  const auto ckpt = dir / "lm.pt";
  rm::test::check_exact_resume(cfg, ckpt);

  SECTION("not as sft, nor as a pair objective") {
    cfg.resume = ckpt.string();
    cfg.objective = "sft";
    CHECK_THAT(rm::test::checkpoint_error([&] { rm::Trainer c(cfg); }),
               Contains("objective.objective: checkpoint \"lm\", this run \"sft\""));
  }
}

TEST_CASE("--init-from: the backbone and LM head loaded, a zero reward head, the reference",
          "[haf_rm][pretrain][init]") {
  TempDir dir;
  auto pre = lm_config(dir, "lm");
  pre.steps = 6;
  pre.out_dir = (dir / "lm").string();
  rm::Trainer lm(pre);
  REQUIRE(lm.run() == 0);
  const auto backbone = dir / "lm" / "checkpoint.pt";

  auto cfg = rm::test::tiny_config(dir);
  cfg.objective = GENERATE(std::string("haf"), std::string("bt"), std::string("dpo"));
  CAPTURE(cfg.objective);
  cfg.init_from = backbone.string();
  rm::Trainer t(cfg);
  const auto src = lm.model()->named_parameters();
  for (const auto& p : t.model()->named_parameters()) {
    CAPTURE(p.key());
    if (p.key().starts_with("score."))
      CHECK(p.value().abs().max().item<double>() == 0.0);
    else
      CHECK(torch::equal(p.value(), src[p.key()]));
  }
  if (t.state().reference()) CHECK(rm::test::same_parameters(t.state().reference(), lm.model()));
  CHECK(t.identity()["init"]["weights_fnv1a"].get<std::string>().size() == 16);
  CHECK_THAT(t.describe(),
             Contains("initial weights: " + backbone.string()) && Contains("objective lm, step 6"));
  const double loss0 = t.step().loss;
  CHECK(std::isfinite(loss0));

  SECTION("a resumed run must start from the same weights") {
    const auto ckpt = dir / "rm.pt";
    t.save_checkpoint(ckpt);
    const auto next = t.step().loss;
    auto again = cfg;
    again.resume = ckpt.string();
    rm::Trainer r(again);
    CHECK(r.step().loss == next);
    again.init_from = "";
    CHECK_THAT(rm::test::checkpoint_error([&] { rm::Trainer x(again); }),
               Contains("init.weights_fnv1a: checkpoint \""));
  }
  SECTION("an export directory works too, and a reward model's head is reset") {
    auto rcfg = rm::test::tiny_config(dir);
    rcfg.objective = "bt";
    rcfg.out_dir = (dir / "bt").string();
    rm::Trainer bt(rcfg);
    REQUIRE(bt.run() == 0);
    REQUIRE(bt.model()->score->weight.abs().max().item<double>() > 0.0);
    REQUIRE(rm::run_cli({"export", "--checkpoint", (dir / "bt" / "checkpoint.pt").string(), "--out",
                         (dir / "bt_model").string()}) == 0);
    auto from_export = cfg;
    from_export.init_from = (dir / "bt_model").string();
    rm::Trainer e(from_export);
    CHECK(e.model()->score->weight.abs().max().item<double>() == 0.0);
    CHECK(torch::equal(e.model()->embed->weight, bt.model()->embed->weight));
  }
}

TEST_CASE("--init-from refuses what does not fit, naming it", "[haf_rm][pretrain][init]") {
  TempDir dir;
  auto pre = lm_config(dir, "lm");
  pre.steps = 2;
  pre.out_dir = (dir / "lm").string();
  REQUIRE(rm::Trainer(pre).run() == 0);
  auto cfg = rm::test::tiny_config(dir);
  cfg.init_from = (dir / "lm" / "checkpoint.pt").string();
  const auto err = [&](rm::TrainConfig c) { return rm::test::error_of([&] { rm::Trainer t(c); }); };
  {
    auto c = cfg;
    c.model.d_model = 32;
    c.model.d_ff = 64;
    CHECK_THAT(err(c), Contains("--init-from " + cfg.init_from + " does not fit this run:") &&
                           Contains("--d-model: 16 there, 32 in this run") &&
                           Contains("--d-ff: 32 there, 64 in this run"));
  }
  {
    auto c = cfg;
    c.model.positions = "alibi";
    CHECK_THAT(err(c), Contains("--positions: rope there, alibi in this run"));
  }
  {
    auto c = cfg;
    c.init_from = (dir / "missing.pt").string();
    CHECK_THAT(err(c), Contains("--init-from " + c.init_from) &&
                           Contains("no such model directory or checkpoint"));
  }
  {
    auto c = cfg;
    c.init_from = dir.write("junk.pt", "not a checkpoint").string();
    CHECK_THAT(err(c), Contains("--init-from " + c.init_from + ":"));
  }
  SECTION("another tokenizer") {
    const auto sp = hafrm::data::train_sentencepiece(
        std::filesystem::path(HAFRM_EXAMPLES_DATA_DIR) / "text" / "corpus.txt", dir / "sp", 120);
    auto c = cfg;
    c.tokenizer = sp.string();
    CHECK_THAT(err(c), Contains("does not fit this run:") &&
                           Contains("tokenizer: byte there, sentencepiece (" + sp.string()));
  }
}

TEST_CASE("lm and sft: bad settings and model commands are refused", "[haf_rm][pretrain]") {
  TempDir dir;
  auto cfg = lm_config(dir, "lm");
  cfg.reward_loss = "hinge";
  CHECK_THAT(rm::test::error_of([&] { rm::Trainer t(cfg); }),
             Contains("--reward-loss \"hinge\" applies to --objective bt, haf and dpo"));
  cfg.reward_loss = "";
  cfg.weighting = "constant:reward=1,alpha=0.5";
  CHECK_THAT(rm::test::error_of([&] { rm::Trainer t(cfg); }), Contains("--weighting"));
  cfg.weighting = "";
  cfg.objective = "sft";
  cfg.train_path = dir.write("text.jsonl", "{\"text\":\"abc\"}\n").string();
  CHECK_THAT(rm::test::error_of([&] { rm::Trainer t(cfg); }),
             Contains("--objective sft scores responses given their prompts"));

  // An lm checkpoint has no trained reward: eval, score and export say so and point at
  // --init-from.
  auto good = lm_config(dir, "lm");
  good.steps = 1;
  REQUIRE(rm::Trainer(good).run() == 0);
  const auto ckpt = (dir / "run" / "checkpoint.pt").string();
  const auto rows = dir.write("rows.jsonl", "{\"prompt\":\"p\",\"response\":\"r\"}\n").string();
  // Each names the command and the file, and points at --init-from.
  const auto check_untrained = [&](const std::string& command, const std::string& msg) {
    CHECK_THAT(msg, Contains(command + ": " + ckpt + " was trained with --objective lm"));
    CHECK_THAT(msg,
               Contains("train a reward model from it with `haf_rm --init-from " + ckpt + "`"));
  };
  rm::ExportOptions eo;
  eo.checkpoint = ckpt;
  eo.out = dir / "m";
  check_untrained("export", rm::test::error_of([&] { rm::export_reward_model(eo); }));
  rm::EvalOptions ev;
  ev.model = ckpt;
  ev.data = {good.eval_path};
  check_untrained("eval", rm::test::error_of([&] { rm::evaluate_files(ev); }));
  rm::ScoreFileOptions so;
  so.model = ckpt;
  so.input = rows;
  so.output = (dir / "s.jsonl").string();
  check_untrained("score", rm::test::error_of([&] { rm::score_file(so); }));
  CHECK_FALSE(std::filesystem::exists(dir / "m"));
  CHECK_FALSE(std::filesystem::exists(dir / "s.jsonl"));
}
