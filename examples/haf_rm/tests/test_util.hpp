// Helpers of the example trainers' tests: a self-deleting temp directory, tiny synthetic splits,
// a tiny, fast trainer configuration, and readers of what a run writes.
#pragma once

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_set>
#include <vector>

#include <hafrm_examples/synthetic_task.hpp>

#include "temp_dir.hpp"
#include "trainer.hpp"

namespace hafrm::examples::rm::test {

using TempDir = hafrm::examples::test::TempDir;  // examples/common/tests/temp_dir.hpp

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

// Small "sort the letters" splits (short prompts, so every step is quick) in `dir`.
inline void write_tiny_splits(const std::filesystem::path& dir, std::size_t train = 20,
                              std::size_t eval = 12) {
  namespace syn = hafrm::examples::synthetic;
  std::unordered_set<std::string> used;
  auto tr = syn::generate_split({"train", train, 3, 5, 11}, used);
  auto ev = syn::generate_split({"eval", eval, 3, 5, 12}, used);
  auto ood = syn::generate_split({"ood", eval, 6, 7, 13}, used);
  syn::write_jsonl(dir / "train.jsonl", tr.pairs);
  syn::write_jsonl(dir / "eval.jsonl", ev.pairs);
  syn::write_jsonl(dir / "ood.jsonl", ood.pairs);
}

// A trainer configuration that runs a step in milliseconds on the tiny splits.
inline TrainConfig tiny_config(const TempDir& dir) {
  write_tiny_splits(dir.path());
  TrainConfig c;
  c.train_path = (dir / "train.jsonl").string();
  c.eval_path = (dir / "eval.jsonl").string();
  c.ood_path = (dir / "ood.jsonl").string();
  c.model.d_model = 16;
  c.model.n_layers = 1;
  c.model.n_heads = 2;
  c.model.d_ff = 32;
  c.batch_size = 4;
  c.steps = 8;
  c.warmup_steps = 2;
  c.lr = 5e-3;
  c.eval_batch = 8;
  c.threads = 1;
  c.progress = "none";
  c.log_every = 1;
  c.eval_every = 0;
  c.checkpoint_every = 0;
  c.out_dir = (dir / "run").string();
  return c;
}

inline std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& p) {
  std::vector<nlohmann::json> v;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) v.push_back(nlohmann::json::parse(line));
  return v;
}

// The "loss" of every training record of a metrics file, in order.
inline std::vector<double> train_losses(const std::filesystem::path& metrics) {
  std::vector<double> v;
  for (const auto& r : read_jsonl(metrics))
    if (r["split"] == "train") v.push_back(r["loss"].get<double>());
  return v;
}

inline bool same_parameters(const HafTransformer& a, const HafTransformer& b) {
  const auto pb = b->named_parameters();
  for (const auto& p : a->named_parameters())
    if (!torch::equal(p.value(), pb[p.key()])) return false;
  return true;
}

// A run of `cfg` takes 3 steps, checkpoints to `ckpt` and takes 2 more; a run resumed from the
// checkpoint must take those 2 steps bitwise (the same losses) and end at the same weights.
inline void check_exact_resume(TrainConfig cfg, const std::filesystem::path& ckpt) {
  Trainer a(cfg);
  for (int i = 0; i < 3; ++i) a.step();
  a.save_checkpoint(ckpt);
  const auto a4 = a.step(), a5 = a.step();
  REQUIRE(a4.loss != a5.loss);  // the steps differ, so the equality below is no coincidence
  cfg.resume = ckpt.string();
  Trainer b(cfg);
  REQUIRE(b.global_step() == 3);
  CHECK(b.step().loss == a4.loss);
  CHECK(b.step().loss == a5.loss);
  CHECK(same_parameters(a.model(), b.model()));
}

// Runs `f` and returns the message of the CheckpointError it must throw.
template <class F>
std::string checkpoint_error(F&& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  FAIL("expected a CheckpointError");
  return {};
}

// The message of the exception `f` must throw.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  FAIL("expected an exception");
  return {};
}

}  // namespace hafrm::examples::rm::test
