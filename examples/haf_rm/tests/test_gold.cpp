// Accuracy against a hidden gold ordering (records with "gold_agrees", data/rules): the counting
// rule on hand-made outcomes, and the trainer reporting it beside label accuracy in its
// evaluation, metrics and summary.json (and not at all on data without gold).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_set>
#include <vector>

#include <hafrm_examples/rules_task.hpp>

#include "test_util.hpp"
#include "trainer.hpp"

namespace rm = hafrm::examples::rm;
namespace rt = hafrm::examples::rules;

namespace {

// Small "rules" splits (short prompts, so every step is quick); every record has gold_agrees.
void write_tiny_rules_splits(const std::filesystem::path& dir) {
  std::unordered_set<std::string> used;
  auto tr = rt::generate_split({"train", 24, 3, 4, 2, 3, 21}, used);
  auto ev = rt::generate_split({"eval", 40, 3, 4, 2, 3, 22}, used);
  auto ood = rt::generate_split({"ood", 40, 5, 6, 4, 5, 23}, used);
  rt::write_jsonl(dir / "train.jsonl", tr.pairs);
  rt::write_jsonl(dir / "eval.jsonl", ev.pairs);
  rt::write_jsonl(dir / "ood.jsonl", ood.pairs);
}

}  // namespace

TEST_CASE("gold accuracy counts the gold-better response winning, ties wrong", "[haf_rm][gold]") {
  const std::vector<int8_t> gold = {1, 0, -1, 1, 0};
  //                     agree: right  disagree: right  unknown  agree: wrong  disagree: tie
  const auto chosen_wins = torch::tensor({true, false, true, false, false});
  const auto rejected_wins = torch::tensor({false, true, false, true, false});
  const auto [n, acc] = rm::gold_accuracy(gold, chosen_wins, rejected_wins);
  CHECK(n == 4);
  CHECK(acc == 0.5);
  const auto none =
      rm::gold_accuracy({-1, -1}, torch::tensor({true, false}), torch::tensor({false, true}));
  CHECK(none.first == 0);
  CHECK_THROWS_AS(rm::gold_accuracy(gold, torch::tensor({true}), torch::tensor({false})),
                  c10::Error);
}

TEST_CASE("evaluation reports accuracy against the gold ordering beside the labels",
          "[haf_rm][gold]") {
  rm::test::TempDir dir;
  auto cfg = rm::test::tiny_config(dir);  // writes tiny synthetic splits, replaced below
  write_tiny_rules_splits(dir.path());
  cfg.steps = 12;

  rm::Trainer t(cfg);
  REQUIRE(t.run() == 0);
  const auto e = t.evaluate(*t.eval_split());
  REQUIRE(e.gold.has_value());
  CHECK(e.gold->n == 40);
  CHECK(e.gold_score == e.gold->reward);  // haf: the score is the reward head

  // The same pairs with every label declared right: gold accuracy is label accuracy. Declared
  // wrong: the gold-better response is the rejected one, so the two accuracies plus the ties
  // make up every pair. (All copies stay alive: the trainer caches reference sums per split.)
  const rm::Split& shipped = *t.eval_split();
  REQUIRE(shipped.gold.size() == 40);
  rm::Split all_true = shipped, all_false = shipped, none = shipped, mixed = shipped;
  all_true.gold.assign(40, 1);
  all_false.gold.assign(40, 0);
  none.gold.assign(40, -1);
  const auto et = t.evaluate(all_true), ef = t.evaluate(all_false), en = t.evaluate(none);
  REQUIRE(et.all.reward == e.all.reward);  // the same weights and pairs
  REQUIRE(et.gold.has_value());
  CHECK(et.gold->reward == et.all.reward);
  CHECK(et.gold->implicit == et.all.implicit);
  REQUIRE(ef.gold.has_value());
  CHECK(ef.gold->reward + ef.all.reward <= 1.0 + 1e-12);
  CHECK(ef.gold->reward + ef.all.reward >= 1.0 - 2.0 / 40 - 1e-12);  // at most 2 ties
  CHECK(ef.gold->implicit + ef.all.implicit <= 1.0 + 1e-12);
  CHECK_FALSE(en.gold.has_value());
  // Half unknown: only the known half counts.
  for (std::size_t i = 0; i < 20; ++i) mixed.gold[i] = -1;
  const auto em = t.evaluate(mixed);
  REQUIRE(em.gold.has_value());
  CHECK(em.gold->n == 20);

  // The run's files carry the gold accuracy of eval and OOD.
  const auto summary = nlohmann::json::parse(rm::test::read_file(dir / "run" / "summary.json"));
  for (const char* split : {"eval", "ood"}) {
    INFO(split);
    REQUIRE(summary[split].contains("gold"));
    CHECK(summary[split]["gold"]["pairs"] == 40);
    CHECK(summary[split]["gold"]["score_acc"].get<double>() ==
          summary[split]["gold"]["reward_acc"].get<double>());
  }
  CHECK(summary["eval"]["gold"]["reward_acc"].get<double>() == e.gold->reward);
  bool logged = false;
  std::ifstream metrics(dir / "run" / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["split"] == "eval")
      logged = j.contains("gold_score_acc") && j.contains("gold_reward_acc");
  }
  CHECK(logged);
}

TEST_CASE("data without gold_agrees has no gold accuracy anywhere", "[haf_rm][gold]") {
  rm::test::TempDir dir;
  auto cfg = rm::test::tiny_config(dir);  // the synthetic task: no gold field
  cfg.steps = 2;
  rm::Trainer t(cfg);
  REQUIRE(t.run() == 0);
  CHECK_FALSE(t.evaluate(*t.eval_split()).gold.has_value());
  const auto summary = nlohmann::json::parse(rm::test::read_file(dir / "run" / "summary.json"));
  CHECK_FALSE(summary["eval"].contains("gold"));
}
