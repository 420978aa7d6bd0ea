// --packing of the haf_rm trainer: the example model's packed forward (block-diagonal causal
// attention, positions restarting per sequence) equals its padded forward per sequence, values and
// gradients; a packed run trains as the padded run does, with and without a token budget; resume is
// exact with packing; bad packing options are refused with the option's name.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include <hafrm/model/packed_pair.hpp>
#include <hafrm/model/pair_forward.hpp>

#include <hafrm_examples/synthetic_task.hpp>

#include "cli.hpp"
#include "packing.hpp"
#include "test_util.hpp"
#include "trainer.hpp"

namespace rm = hafrm::examples::rm;
using Catch::Matchers::Contains;
using rm::test::TempDir;

namespace {

// Pairs of varied lengths (1 to 13 tokens, a shared prompt of 0 to 3 tokens whose labels are
// -100), so rows hold several sequences and some sides are a single token.
rm::Split random_pairs(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 g(seed);
  auto below = [&g](int64_t k) { return static_cast<int64_t>(g() % static_cast<uint64_t>(k)); };
  rm::Split s;
  s.name = "train";
  for (int64_t i = 0; i < n; ++i) {
    hafrm::data::TokenizedPair p;
    p.prompt_length = below(4);
    std::vector<int64_t> prompt(static_cast<std::size_t>(p.prompt_length));
    for (auto& t : prompt) t = below(vocab);
    for (auto* side : {&p.chosen_ids, &p.rejected_ids}) {
      *side = prompt;
      const int64_t extra = std::max<int64_t>(p.prompt_length == 0 ? 1 : 0, 1 + below(10));
      for (int64_t k = 0; k < extra; ++k) side->push_back(below(vocab));
    }
    if (i == 0) p.chosen_ids.resize(1), p.prompt_length = 0;  // a one-token side
    auto labels = [&p](const std::vector<int64_t>& ids) {
      std::vector<int64_t> l = ids;
      for (int64_t k = 0; k < std::min<int64_t>(p.prompt_length, static_cast<int64_t>(l.size()));
           ++k)
        l[static_cast<std::size_t>(k)] = -100;
      return l;
    };
    p.chosen_labels = labels(p.chosen_ids), p.rejected_labels = labels(p.rejected_ids);
    s.pairs.push_back(std::move(p));
  }
  return s;
}

// Sum of the rewards and policy log-probs: a scalar that reaches every parameter.
torch::Tensor probe(const hafrm::PairForward& f) {
  return f.rewards.chosen.sum() - 0.5 * f.rewards.rejected.sum() +
         0.1 * (f.policy.policy_chosen.sum() - f.policy.policy_rejected.sum());
}

std::vector<torch::Tensor> gradients(const rm::HafTransformer& m) {
  std::vector<torch::Tensor> g;
  for (const auto& p : m->parameters()) g.push_back(p.grad().clone()), p.mutable_grad().zero_();
  return g;
}

}  // namespace

TEST_CASE("the model's packed forward equals its padded forward per sequence, with gradients",
          "[haf_rm][packing]") {
  rm::ModelConfig mc;
  mc.vocab_size = 23, mc.d_model = 16, mc.n_layers = 2, mc.n_heads = 2, mc.d_ff = 32;
  mc.positions = GENERATE(std::string("rope"), std::string("alibi"));
  mc.fused_lm_head = GENERATE(true, false);
  CAPTURE(mc.positions, mc.fused_lm_head);
  torch::manual_seed(3);
  rm::HafTransformer model(mc);
  {  // a non-zero reward head, so the rewards and their gradients are not trivially zero
    torch::NoGradGuard ng;
    model->score->weight.normal_(0.0, 0.5);
  }
  const auto split = random_pairs(7, mc.vocab_size, 11);
  std::vector<int64_t> idx(split.pairs.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
  const torch::Device cpu(torch::kCPU);

  const auto padded = hafrm::forward_pair(model, rm::make_batch(split, idx, 0, cpu));
  probe(padded).backward();
  const auto g_padded = gradients(model);
  // Rows of 16 tokens: several sequences share a row, and pairs split across rows.
  const auto packed_batch = rm::make_packed_batch(split, idx, 16, 0, cpu);
  REQUIRE(packed_batch.input_ids.size(0) < 2 * static_cast<int64_t>(idx.size()));
  const auto packed = hafrm::forward_pair_packed(model, packed_batch);
  probe(packed).backward();
  const auto g_packed = gradients(model);

  const double tol = 1e-5;
  CHECK(torch::allclose(packed.rewards.chosen, padded.rewards.chosen, tol, tol));
  CHECK(torch::allclose(packed.rewards.rejected, padded.rewards.rejected, tol, tol));
  CHECK(torch::allclose(packed.policy.policy_chosen, padded.policy.policy_chosen, tol, tol));
  CHECK(torch::allclose(packed.policy.policy_rejected, padded.policy.policy_rejected, tol, tol));
  CHECK(torch::equal(packed.policy.chosen_count, padded.policy.chosen_count));
  CHECK(torch::equal(packed.policy.rejected_count, padded.policy.rejected_count));
  REQUIRE(g_packed.size() == g_padded.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < g_padded.size(); ++i) {
    CAPTURE(i);
    CHECK(torch::allclose(g_packed[i], g_padded[i], 1e-4, 1e-5));
    worst = std::max(worst, (g_packed[i] - g_padded[i]).abs().max().item<double>());
  }
  // Attention leaking across sequences (or positions not restarting) changes these at O(1e-2).
  CAPTURE(worst);
  CHECK(worst < 1e-5);
}

namespace {

// A small model on "sort the letters" pairs of long-tailed length (four in five prompts of 2-5
// letters, one in five of 20-28), where padding to the longest sequence of a batch wastes most
// positions.
rm::TrainConfig varied_config(const TempDir& dir) {
  namespace syn = hafrm::examples::synthetic;
  auto c = rm::test::tiny_config(dir);
  std::unordered_set<std::string> used;
  auto shorts = syn::generate_split({"train", 48, 2, 5, 21}, used).pairs;
  auto longs = syn::generate_split({"train", 12, 20, 28, 22}, used).pairs;
  std::vector<syn::Pair> pairs;
  for (std::size_t i = 0; i < shorts.size(); ++i) {
    pairs.push_back(shorts[i]);
    if (i % 4 == 3) pairs.push_back(longs[i / 4]);
  }
  syn::write_jsonl(dir / "varied.jsonl", pairs);
  c.train_path = (dir / "varied.jsonl").string();
  c.eval_path = c.ood_path = "";
  c.model.d_model = 32, c.model.n_layers = 2, c.model.n_heads = 2, c.model.d_ff = 64;
  c.batch_size = 8, c.grad_accum = 2;
  c.steps = 50, c.warmup_steps = 5, c.lr = 3e-3;
  return c;
}

std::vector<rm::StepStats> steps_of(const rm::TrainConfig& c) {
  rm::Trainer t(c);
  std::vector<rm::StepStats> v;
  for (int64_t i = 0; i < c.steps; ++i) v.push_back(t.step());
  return v;
}

double rel(double a, double b) { return std::abs(a - b) / std::max(1.0, std::abs(b)); }

}  // namespace

TEST_CASE("a packed run trains as the padded run does over 50 steps", "[haf_rm][packing]") {
  TempDir dir;
  auto cfg = varied_config(dir);
  cfg.objective = GENERATE(std::string("haf"), std::string("bt"));
  cfg.reference = GENERATE(std::string("precompute"), std::string("model"));
  if (cfg.objective == "bt" && cfg.reference == "model") return;  // bt has no reference
  CAPTURE(cfg.objective, cfg.reference);
  const auto padded = steps_of(cfg);
  cfg.packing = true;
  const auto packed = steps_of(cfg);
  // A budget of a few pairs per micro-batch: the step's 16 pairs in several micro-batches.
  cfg.pack_tokens = 256;
  const auto budget = steps_of(cfg);
  REQUIRE(padded.size() == 50);
  double worst = 0.0, positions_padded = 0.0, positions_packed = 0.0;
  for (std::size_t i = 0; i < padded.size(); ++i) {
    CAPTURE(i);
    positions_padded += padded[i].positions;
    positions_packed += packed[i].positions;
    for (const auto* run : {&packed, &budget}) {
      const auto& s = (*run)[i];
      worst = std::max(
          {worst, rel(s.loss, padded[i].loss), rel(s.reward_loss, padded[i].reward_loss),
           rel(s.policy_loss, padded[i].policy_loss), rel(s.grad_norm, padded[i].grad_norm)});
      CHECK(s.tokens == padded[i].tokens);  // the same pairs
    }
  }
  CAPTURE(worst);
  CHECK(worst < 1e-4);
  // Fewer positions computed over the run (a step without a long pair may pack into rows with a
  // longer tail than its padding).
  CAPTURE(positions_padded, positions_packed);
  CHECK(positions_packed < 0.8 * positions_padded);
  // The runs did train: the loss moved.
  CHECK(rel(padded.back().loss, padded.front().loss) > 1e-3);
}

TEST_CASE("a packed bf16 run follows the padded bf16 run", "[haf_rm][packing][precision]") {
  TempDir dir;
  auto cfg = varied_config(dir);
  cfg.precision = "bf16";
  cfg.steps = 12;
  cfg.reference = GENERATE(std::string("precompute"), std::string("model"));
  CAPTURE(cfg.reference);
  const auto padded = steps_of(cfg);
  cfg.packing = true;
  const auto packed = steps_of(cfg);
  for (std::size_t i = 0; i < padded.size(); ++i) {
    CAPTURE(i);
    REQUIRE(std::isfinite(packed[i].loss));
    REQUIRE(std::isfinite(packed[i].grad_norm));
    // bfloat16 matmuls of other shapes round differently: agreement to bfloat16 precision.
    CHECK(packed[i].loss == Approx(padded[i].loss).epsilon(2e-2));
    CHECK(packed[i].grad_norm == Approx(padded[i].grad_norm).epsilon(5e-2));
  }
}

TEST_CASE("a packed run resumes exactly", "[haf_rm][packing][resume]") {
  TempDir dir;
  auto cfg = varied_config(dir);
  cfg.model.dropout = 0.1;  // the RNG state matters too
  cfg.packing = true;
  cfg.pack_tokens = GENERATE(int64_t{0}, int64_t{300});
  CAPTURE(cfg.pack_tokens);
  rm::test::check_exact_resume(cfg, dir / "packed.pt");
}

TEST_CASE("packing options are checked with the option's name", "[haf_rm][packing]") {
  TempDir dir;
  auto cfg = varied_config(dir);
  cfg.pack_tokens = 512;
  CHECK_THROWS_WITH(rm::validate_config(cfg), Contains("--pack-tokens 512 needs --packing"));
  cfg.packing = true;
  cfg.pack_tokens = -1;
  CHECK_THROWS_WITH(rm::validate_config(cfg), Contains("--pack-tokens must be >= 0"));
  cfg.pack_tokens = 0;
  cfg.readout = "last-position";
  CHECK_THROWS_WITH(rm::validate_config(cfg), Contains("--readout last-position"));
  cfg.readout = "last-token";
  cfg.objective = "lm";
  CHECK_THROWS_WITH(rm::validate_config(cfg), Contains("--objective lm"));
  cfg.objective = "haf";
  // Below the longest pair of the training split: refused when the run starts, naming the file.
  cfg.pack_tokens = 20;
  const auto msg = rm::test::error_of([&] { rm::Trainer t(cfg); });
  CHECK_THAT(msg, Contains("--pack-tokens 20 is below the longest pair"));
  CHECK_THAT(msg, Contains("varied.jsonl"));
  CHECK_THROWS_WITH(rm::parse_args({"--packing", "--pack-tokens", "-5"}),
                    Contains("--pack-tokens"));
  const auto p = rm::parse_args({"--packing", "--pack-tokens", "4096"});
  CHECK(p.packing);
  CHECK(p.pack_tokens == 4096);
}

TEST_CASE("split_by_tokens cuts the pairs in order under the budget", "[haf_rm][packing]") {
  const auto split = random_pairs(30, 11, 5);
  std::vector<int64_t> idx;
  for (int64_t i = 29; i >= 0; i -= 2) idx.push_back(i);
  int64_t longest = 0;
  for (auto i : idx) longest = std::max(longest, rm::pair_tokens(split, i));
  for (int64_t budget : {longest, longest + 7, 4 * longest}) {
    CAPTURE(budget);
    const auto runs = rm::split_by_tokens(split, idx, budget);
    std::vector<int64_t> joined;
    for (std::size_t r = 0; r < runs.size(); ++r) {
      int64_t used = 0;
      for (auto i : runs[r]) used += rm::pair_tokens(split, i);
      CHECK(used <= budget);
      // Greedy: the next run's first pair did not fit this one.
      if (r + 1 < runs.size()) CHECK(used + rm::pair_tokens(split, runs[r + 1][0]) > budget);
      joined.insert(joined.end(), runs[r].begin(), runs[r].end());
    }
    CHECK(joined == idx);
  }
  CHECK(rm::split_by_tokens(split, idx, 0).size() == 1);
  CHECK_THROWS_WITH(rm::split_by_tokens(split, idx, longest - 1), Contains("--pack-tokens"));
}
