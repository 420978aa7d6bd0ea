// The TorchScript path: a model scripted by make_model.py at build time, loaded with
// torch::jit::load and trained through hafrm::model_traits<torch::jit::Module>.
#include <catch2/catch.hpp>

#include <torch/script.h>
#include <torch/torch.h>

#include <map>
#include <numeric>
#include <string>
#include <unordered_set>
#include <vector>

#include <hafrm/data/tokenizer.hpp>
#include <hafrm_examples/synthetic_task.hpp>

#include "data.hpp"
#include "jit_train.hpp"

namespace rm = hafrm::examples::rm;
namespace hx = hafrm::examples;
namespace hd = hafrm::data;

namespace {

// 16 short "sort the letters" pairs as one batch.
hafrm::PreferenceBatch tiny_batch() {
  std::unordered_set<std::string> used;
  auto split = hx::synthetic::generate_split({"t", 16, 3, 5, 7}, used);
  hd::ByteTokenizer tok;
  rm::Split s;
  for (const auto& p : split.pairs)
    s.pairs.push_back(hd::assemble_pair(tok, hd::TextRecord{p.prompt, p.chosen, p.rejected, 0},
                                        hd::AssemblyOptions{}));
  std::vector<int64_t> idx(s.pairs.size());
  std::iota(idx.begin(), idx.end(), 0);
  return rm::make_batch(s, idx, tok.pad_id(), torch::kCPU);
}

std::map<std::string, torch::Tensor> snapshot(torch::jit::Module& m) {
  std::map<std::string, torch::Tensor> s;
  for (const auto& p : m.named_parameters()) s[p.name] = p.value.detach().clone();
  return s;
}

}  // namespace

TEST_CASE("a TorchScript model loads and trains through the hafrm trait", "[torchscript]") {
  const std::string path =
      GENERATE(std::string(HAFRM_TORCHSCRIPT_TUPLE), std::string(HAFRM_TORCHSCRIPT_DICT));
  CAPTURE(path);
  torch::manual_seed(0);
  torch::jit::Module module = torch::jit::load(path);
  const auto batch = tiny_batch();

  // The trait's view of the module: LM logits (tuple) or LM-head input + weight (dict), rewards.
  auto out = hafrm::model_forward(module, batch.chosen_ids, batch.chosen_mask);
  const auto B = batch.chosen_ids.size(0), T = batch.chosen_ids.size(1);
  if (path == HAFRM_TORCHSCRIPT_TUPLE) {
    REQUIRE(out.logits.sizes() == torch::IntArrayRef({B, T, 257}));
  } else {
    REQUIRE_FALSE(out.logits.defined());
    REQUIRE(out.lm_hidden.size(2) == out.lm_head_weight.size(1));
    REQUIRE(out.lm_head_weight.size(0) == 257);
  }
  REQUIRE(out.token_rewards.sizes() == torch::IntArrayRef({B, T}));
  CHECK(out.token_rewards.abs().max().item<double>() == 0.0);  // zero-initialised reward head

  hafrm::examples::jit::JitTrainer trainer(module, {.objective = "haf", .lr = 3e-3});
  const auto before = snapshot(trainer.model());
  const auto first = trainer.step(batch);

  // Gradients reach every parameter: the backbone (from both terms), the LM head (policy term)
  // and the reward head (reward term).
  for (const auto& p : trainer.model().named_parameters()) {
    CAPTURE(p.name);
    REQUIRE(p.value.grad().defined());
    CHECK(torch::isfinite(p.value.grad()).all().item<bool>());
    if (p.name == "embed.weight" || p.name == "lm_head.weight" || p.name == "score.weight" ||
        p.name == "blocks.0.qkv.weight")
      CHECK(p.value.grad().abs().sum().item<double>() > 0.0);
  }
  double last = first.loss;
  for (int i = 0; i < 40; ++i) last = trainer.step(batch).loss;
  CHECK(last < 0.8 * first.loss);  // it fits the batch
  int changed = 0;
  for (const auto& p : trainer.model().named_parameters())
    changed += !torch::equal(p.value, before.at(p.name));
  CHECK(changed == static_cast<int>(before.size()));
  const auto [reward_acc, implicit_acc] = trainer.accuracy(batch);
  CHECK(reward_acc > 0.5);
  CHECK(implicit_acc > 0.5);
}

TEST_CASE("a missing TorchScript file fails with torch's error", "[torchscript]") {
  CHECK_THROWS(torch::jit::load("/nonexistent/model.pt"));
}
