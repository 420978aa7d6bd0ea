// Scoring with a trained model (haf_rm score): rows in, rows out with "score" or "scores",
// "ranking" and "best"; the ranking follows the scores with ties in input order; a pair's two
// scores order it as the trainer's evaluation does; the stored normalisation (and --raw);
// truncation counted; bad rows refused with file, line and field and no output left. And the
// reward-only training path (bt): no reference, no LM head, no implicit reward, resumable.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.hpp"
#include "model_eval.hpp"
#include "model_score.hpp"
#include "reward_model.hpp"
#include "test_util.hpp"
#include "trainer.hpp"

namespace fs = std::filesystem;
namespace rm = hafrm::examples::rm;
using Catch::Matchers::Contains;
using rm::test::TempDir;

namespace {

// A tiny trained run in dir/run, exported to dir/model (with --normalize FILE when given).
void trained_export(const TempDir& dir, const std::string& normalize = "") {
  auto cfg = rm::test::tiny_config(dir);
  cfg.steps = 10;
  REQUIRE(rm::Trainer(cfg).run() == 0);
  rm::ExportOptions o;
  o.checkpoint = dir / "run" / "checkpoint.pt", o.out = dir / "model", o.normalize = normalize;
  rm::export_reward_model(o);
}

using rm::test::error_of;

void write_rows(const fs::path& p, const std::vector<nlohmann::ordered_json>& rows) {
  std::string s;
  for (const auto& r : rows) s += r.dump() + "\n";
  rm::test::write_file(p, s);
}

std::vector<nlohmann::ordered_json> read_rows(const fs::path& p) {
  std::vector<nlohmann::ordered_json> v;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) v.push_back(nlohmann::ordered_json::parse(line));
  return v;
}

rm::ScoreFileOptions options(const TempDir& dir, const std::string& in, const std::string& out) {
  rm::ScoreFileOptions o;
  o.model = (dir / "model").string();
  o.input = (dir / in).string();
  o.output = (dir / out).string();
  o.progress = "none";
  return o;
}

}  // namespace

TEST_CASE("score adds score, or scores + ranking + best, to every row and keeps its fields",
          "[haf_rm][score]") {
  TempDir dir;
  trained_export(dir);
  using J = nlohmann::ordered_json;
  const std::vector<J> rows = {
      {{"id", 1}, {"prompt", "cab"}, {"response", "abc"}},
      {{"prompt", J::array({{{"role", "user"}, {"content", "cab"}}})},
       {"response", J::array({{{"role", "assistant"}, {"content", "acb"}}})}},
      {{"prompt", "cab"}, {"responses", {"acb", "abc", "acb", "bca"}}, {"tag", "group"}},
      {{"prompt", "fed"}, {"responses", {"def"}}},
  };
  write_rows(dir / "in.jsonl", rows);
  REQUIRE(rm::run_cli({"score", "--model", (dir / "model").string(), "--input",
                       (dir / "in.jsonl").string(), "--output", (dir / "out.jsonl").string(),
                       "--progress", "none"}) == 0);
  const auto out = read_rows(dir / "out.jsonl");
  REQUIRE(out.size() == rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    CAPTURE(i);
    // Every input field, in its order, then the scores.
    auto it = out[i].begin();
    for (const auto& [k, v] : rows[i].items()) {
      CHECK(it.key() == k);
      CHECK(it.value() == v);
      ++it;
    }
  }
  CHECK(out[0].contains("score"));
  CHECK_FALSE(out[0].contains("ranking"));
  const auto scores = out[2]["scores"].get<std::vector<double>>();
  const auto ranking = out[2]["ranking"].get<std::vector<int64_t>>();
  REQUIRE(scores.size() == 4);
  REQUIRE(ranking.size() == 4);
  CHECK(out[2]["best"] == ranking[0]);
  // Best first; equal scores (the same response twice) keep input order.
  for (std::size_t k = 1; k < 4; ++k) {
    const auto a = static_cast<std::size_t>(ranking[k - 1]),
               b = static_cast<std::size_t>(ranking[k]);
    CHECK(scores[a] >= scores[b]);
    if (scores[a] == scores[b]) CHECK(a < b);
  }
  CHECK(scores[0] == Approx(scores[2]).margin(1e-6));  // "acb" twice
  // The same prompt and response score the same alone, in a group, or as a message list.
  CHECK(out[0]["score"].get<double>() == Approx(scores[1]).margin(1e-6));
  CHECK(out[1]["score"].get<double>() == Approx(scores[0]).margin(1e-6));
  CHECK(out[3]["ranking"].get<std::vector<int64_t>>() == std::vector<int64_t>{0});
  CHECK(out[3]["best"] == 0);
  // Not a constant: the trained head tells the responses apart.
  CHECK(scores[1] != scores[0]);

  // Length-bucketed or padded in input order, one row per batch or all together: same scores.
  auto o = options(dir, "in.jsonl", "padded.jsonl");
  o.bucket_by_length = false;
  o.batch_sequences = 1;
  const auto padded = rm::score_file(o).out_rows;
  const auto unbatched = padded[2]["scores"].get<std::vector<double>>();
  for (std::size_t k = 0; k < 4; ++k) CHECK(unbatched[k] == Approx(scores[k]).margin(1e-6));
}

TEST_CASE("a pair's two scores order it exactly as the trainer's evaluation does",
          "[haf_rm][score]") {
  TempDir dir;
  trained_export(dir);
  // Chosen and rejected of every eval pair as two separate rows.
  std::vector<nlohmann::ordered_json> rows;
  for (const auto& r : rm::test::read_jsonl(dir / "eval.jsonl")) {
    rows.push_back({{"prompt", r["prompt"]}, {"response", r["chosen"]}});
    rows.push_back({{"prompt", r["prompt"]}, {"response", r["rejected"]}});
  }
  write_rows(dir / "pairs.jsonl", rows);
  const auto scored = rm::score_file(options(dir, "pairs.jsonl", "pairs_out.jsonl")).out_rows;

  auto m = rm::load_reward_model(dir / "model");
  const auto split =
      rm::load_split("eval", (dir / "eval.jsonl").string(), *m.tokenizer, m.spec.assembly, false);
  std::vector<int64_t> all(split.pairs.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  torch::NoGradGuard ng;
  const auto f = hafrm::forward_pair(
      m.model, rm::make_batch(split, all, m.spec.pad_id, torch::kCPU), m.forward_options());
  int64_t right = 0;
  for (std::size_t i = 0; i < split.pairs.size(); ++i) {
    CAPTURE(i);
    const bool by_score =
        scored[2 * i]["score"].get<double>() > scored[2 * i + 1]["score"].get<double>();
    const bool by_eval = f.rewards.chosen[static_cast<int64_t>(i)].item<float>() >
                         f.rewards.rejected[static_cast<int64_t>(i)].item<float>();
    CHECK(by_score == by_eval);
    right += by_score;
  }
  const auto e = rm::evaluate_model(m, split, 256);
  CHECK(static_cast<double>(right) / static_cast<double>(split.pairs.size()) == e.all.reward);
}

TEST_CASE("scores are normalised when the export stores a normalisation, raw with --raw",
          "[haf_rm][score]") {
  TempDir dir;
  trained_export(dir, (dir / "eval.jsonl").string());
  const auto norm = *rm::load_reward_model(dir / "model").spec.normalization;
  std::vector<nlohmann::ordered_json> rows;
  for (const auto& r : rm::test::read_jsonl(dir / "eval.jsonl"))
    rows.push_back({{"prompt", r["prompt"]}, {"responses", {r["chosen"], r["rejected"]}}});
  write_rows(dir / "in.jsonl", rows);
  auto o = options(dir, "in.jsonl", "norm.jsonl");
  const auto z = rm::score_file(o);
  CHECK(z.normalized);
  o.raw = true, o.output = (dir / "raw.jsonl").string();
  const auto raw = rm::score_file(o);
  CHECK_FALSE(raw.normalized);
  double sum = 0, sq = 0;
  int64_t n = 0;
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t k = 0; k < 2; ++k) {
      const double r = raw.out_rows[i]["scores"][k], s = z.out_rows[i]["scores"][k];
      CHECK(s == Approx((r - norm.mean) / norm.std).margin(1e-4));
      sum += s, sq += s * s, ++n;
    }
  // Fitted on these very responses: the normalised scores have mean 0 and std 1.
  CHECK(n == norm.count);
  CHECK(sum / static_cast<double>(n) == Approx(0.0).margin(1e-3));
  CHECK(std::sqrt(sq / static_cast<double>(n)) == Approx(1.0).epsilon(1e-3));
  // The ranking does not depend on the normalisation.
  for (std::size_t i = 0; i < rows.size(); ++i)
    CHECK(raw.out_rows[i]["ranking"] == z.out_rows[i]["ranking"]);
}

TEST_CASE("over-long responses are truncated as in training and counted", "[haf_rm][score]") {
  TempDir dir;
  trained_export(dir);
  const auto m = rm::load_reward_model(dir / "model");
  const std::string prompt = "cab";
  // Byte tokenizer: the template's " " + response, cut so that prompt + response + EOS fits.
  const auto prompt_ids = m.tokenizer->encode("Instruct: " + prompt + "\nOutput:");
  const auto budget =
      static_cast<std::size_t>(m.spec.assembly.max_length) - prompt_ids.size() - 1 - 1;
  const std::string long_response(budget + 40, 'x');
  write_rows(dir / "in.jsonl", {{{"prompt", prompt}, {"response", long_response}},
                                {{"prompt", prompt}, {"response", long_response.substr(0, budget)}},
                                {{"prompt", prompt}, {"response", "abc"}}});
  std::vector<std::string> lines;
  const auto r = rm::score_file(options(dir, "in.jsonl", "out.jsonl"),
                                [&](const std::string& l) { lines.push_back(l); });
  CHECK(r.truncated == 1);
  CHECK(r.responses == 3);
  CHECK(r.out_rows[0]["score"] == r.out_rows[1]["score"]);  // what was kept is what is scored
  REQUIRE(lines.size() == 2);
  CHECK_THAT(lines[0], Contains("3 responses") && Contains("responses/s"));
  CHECK_THAT(lines[1], Contains("1 responses truncated"));
}

TEST_CASE(
    "bad rows, an empty response or a dpo model: an error naming file, line and field, and "
    "no output",
    "[haf_rm][score]") {
  TempDir dir;
  trained_export(dir);
  const auto out = dir / "out.jsonl";
  rm::test::write_file(out, "previous output\n");
  const auto refused = [&](const std::string& content) {
    rm::test::write_file(dir / "in.jsonl", content);
    const auto msg = error_of([&] { rm::score_file(options(dir, "in.jsonl", "out.jsonl")); });
    CHECK(rm::test::read_file(out) == "previous output\n");  // untouched
    for (const auto& e : fs::directory_iterator(dir.path()))
      CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
    return msg;
  };
  const std::string good = "{\"prompt\": \"cab\", \"response\": \"abc\"}\n";
  CHECK_THAT(refused(good + "{\"prompt\": \"cab\", \"response\": \n"), Contains("in.jsonl:2"));
  CHECK_THAT(refused(good + good + "{\"prompt\": \"cab\", \"response\": \"\"}\n"),
             Contains("in.jsonl:3") && Contains("'response'"));
  CHECK_THAT(refused("{\"prompt\": \"cab\", \"responses\": [\"abc\", \"\"]}\n"),
             Contains("in.jsonl:1") && Contains("'responses[1]'"));
  CHECK_THAT(refused("{\"prompt\": \"cab\", \"responses\": []}\n"),
             Contains("in.jsonl:1") && Contains("'responses'"));
  CHECK_THAT(refused("{\"prompt\": \"cab\"}\n"), Contains("in.jsonl:1") && Contains("'response'"));
  CHECK_THAT(refused("{\"prompt\": \"cab\", \"response\": \"abc\", \"responses\": [\"x\"]}\n"),
             Contains("in.jsonl:1"));
  // The command line reports the same as an error (exit 1).
  CHECK(rm::run_cli({"score", "--model", (dir / "model").string(), "--input",
                     (dir / "in.jsonl").string(), "--output", out.string()}) == 1);
  CHECK(rm::run_cli({"score", "--model", (dir / "model").string(), "--input", "x"}) == 2);

  // A dpo model ranks by its implicit reward, not the reward head.
  TempDir d2;
  auto cfg = rm::test::tiny_config(d2);
  cfg.objective = "dpo";
  cfg.steps = 2;
  REQUIRE(rm::Trainer(cfg).run() == 0);
  rm::test::write_file(dir / "in.jsonl", good);
  auto o = options(dir, "in.jsonl", "dpo.jsonl");
  o.model = (d2 / "run" / "checkpoint.pt").string();
  CHECK_THAT(error_of([&] { rm::score_file(o); }), Contains("--objective dpo"));
  CHECK_FALSE(fs::exists(dir / "dpo.jsonl"));

  // An untrained (zero) reward head gives every response the same reward: nothing to normalise.
  cfg.objective = "bt";
  cfg.steps = 0;
  cfg.out_dir = (d2 / "zero").string();
  REQUIRE(rm::Trainer(cfg).run() == 0);
  rm::ExportOptions eo;
  eo.checkpoint = d2 / "zero" / "checkpoint.pt", eo.out = d2 / "zero_model";
  eo.normalize = (d2 / "eval.jsonl").string();
  CHECK_THAT(error_of([&] { rm::export_reward_model(eo); }),
             Contains("--normalize") && Contains("not all equal"));
  CHECK_FALSE(fs::exists(d2 / "zero_model"));
}

TEST_CASE("a bt run is reward-only: no reference, no LM head, no implicit reward; it resumes",
          "[haf_rm][reward_only]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  cfg.objective = "bt";
  cfg.model.dropout = 0.1;  // the RNG state matters for the resume check below
  const auto ckpt = dir / "bt.pt";
  rm::Trainer a(cfg);
  CHECK(a.state().reward_only());
  CHECK_FALSE(a.state().reference());
  CHECK_FALSE(a.state().train_refs().first.defined());
  // The heads the reward does not read are frozen: no gradient, so no update even with decay.
  const auto lm0 = a.model()->lm_head->weight.clone();
  for (int i = 0; i < 3; ++i) {
    const auto s = a.step();
    CHECK_FALSE(s.policy_measured);
  }
  CHECK_FALSE(a.model()->lm_head->weight.grad().defined());
  CHECK(torch::equal(a.model()->lm_head->weight, lm0));
  a.save_checkpoint(ckpt);
  CHECK_FALSE(rm::load_reward_model(ckpt).reference);  // the checkpoint holds no reference
  const auto a4 = a.step(), a5 = a.step();
  REQUIRE(a4.loss != a5.loss);

  auto resumed = cfg;
  resumed.resume = ckpt.string();
  rm::Trainer b(resumed);
  REQUIRE(b.global_step() == 3);
  CHECK(b.step().loss == a4.loss);  // bitwise, as every resume
  CHECK(b.step().loss == a5.loss);
  CHECK(rm::test::same_parameters(a.model(), b.model()));

  // Its reports leave the implicit reward and the policy loss out (absent, not 0).
  cfg.out_dir = (dir / "run").string();
  REQUIRE(rm::Trainer(cfg).run() == 0);
  for (const auto& r : rm::test::read_jsonl(dir / "run" / "metrics.jsonl")) {
    CHECK_FALSE(r.contains("implicit_acc"));
    CHECK_FALSE(r.contains("policy_loss"));
    CHECK(r.contains("reward_acc"));
    CHECK(r.contains("score_acc"));
  }
  const auto summary = nlohmann::json::parse(rm::test::read_file(dir / "run" / "summary.json"));
  CHECK(summary["eval"].contains("reward_acc"));
  CHECK_FALSE(summary["eval"].contains("implicit_acc"));
  // eval of its checkpoint gives the same figures.
  rm::EvalOptions eo;
  eo.model = (dir / "run" / "checkpoint.pt").string();
  eo.data = {(dir / "eval.jsonl").string(), (dir / "ood.jsonl").string()};
  const auto ev = rm::evaluate_files(eo);
  CHECK(nlohmann::json::parse(ev.summary["eval"].dump()) == summary["eval"]);
  CHECK(nlohmann::json::parse(ev.summary["ood"].dump()) == summary["ood"]);

  // haf keeps its reference and implicit reward; vocab parallel needs an LM head to split.
  auto haf = cfg;
  haf.objective = "haf";
  rm::Trainer h(haf);
  CHECK_FALSE(h.state().reward_only());
  CHECK(h.state().reference());
  CHECK(h.step().policy_measured);
  cfg.vocab_parallel = true;
  CHECK_THROWS_WITH(rm::RunConfig::resolve(cfg), Contains("--vocab-parallel"));
}

TEST_CASE("the model skips its LM head for rewards only", "[haf_rm][reward_only][model]") {
  torch::manual_seed(0);
  rm::ModelConfig c;
  c.vocab_size = 30, c.d_model = 16, c.n_heads = 2, c.n_layers = 1, c.d_ff = 32;
  c.fused_lm_head = GENERATE(true, false);
  rm::HafTransformer m(c);
  torch::NoGradGuard ng;
  {
    auto p = m->score->weight;
    p.normal_();  // a non-zero head, so the rewards compared are not all 0
  }
  const auto ids = torch::randint(0, 30, {2, 7}, torch::kLong);
  const auto mask = torch::ones({2, 7}, torch::kLong);
  const auto all = m->haf_forward(ids, mask, hafrm::Heads::kAll);
  const auto reward = hafrm::model_forward(m, ids, mask, hafrm::Heads::kReward);
  CHECK(torch::equal(reward.token_rewards, all.token_rewards));
  CHECK_FALSE(reward.logits.defined());
  CHECK_FALSE(reward.lm_hidden.defined());
  CHECK_FALSE(reward.lm_head_weight.defined());
  CHECK((all.logits.defined() || all.lm_hidden.defined()));
}
