// model_eval.hpp: `haf_rm eval` -- the trainer's preference accuracies (reward head, implicit
// reward where a reference model exists, by corruption kind, against the gold ordering where
// the records carry one) of a trained model on preference files, without training. The pairs
// are assembled, batched and run exactly as the training run's evaluation does them
// (evaluation.hpp's preference_flags and summarize_flags), so the same weights give the same
// figures; summary.json has the training run's format.
//
//   rm::EvalOptions o;
//   o.model = "runs/haf_rm/model";                 // an export directory or a checkpoint
//   o.data = {"data/synthetic/eval.jsonl", "ood=data/synthetic/ood.jsonl"};
//   rm::EvalRun r = rm::evaluate_files(o);         // r.results[0].all.reward
#pragma once

#include <unistd.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <hafrm/model/pair_forward.hpp>

#include "data.hpp"
#include "evaluation.hpp"
#include "progress.hpp"
#include "reward_model.hpp"
#include "run_report.hpp"

namespace hafrm::examples::rm {

struct EvalOptions {
  std::string model;              // export directory or checkpoint file
  std::vector<std::string> data;  // preference files, each "FILE" or "NAME=FILE"
  std::string out;                // "" = no summary.json
  int64_t eval_batch = 256;       // pairs per forward (the trainer's --eval-batch default)
  bool skip_bad = false;
  std::string tokenizer;  // see LoadOptions::tokenizer
  std::string device = "cpu";
  int threads = 0;  // 0 = LibTorch's default
};

// The summary.json keys of the run itself; a split may not take one of these names.
inline const std::set<std::string>& summary_reserved_keys() {
  static const std::set<std::string> k = {"objective",    "score",         "seed",
                                          "steps",        "train_seconds", "wall_seconds",
                                          "resumed_from", "identity",      "model"};
  return k;
}

// {name, file} of each --data argument: "NAME=FILE", or FILE named by its stem ("eval" for
// data/synthetic/eval.jsonl, so the figures sit under the training run's split names); a
// repeated name gets "-2", "-3", ...
inline std::vector<std::pair<std::string, std::string>> eval_split_names(
    const std::vector<std::string>& data) {
  std::vector<std::pair<std::string, std::string>> out;
  std::set<std::string> used;
  for (const auto& arg : data) {
    std::string name, file = arg;
    const auto eq = arg.find('=');
    if (eq != std::string::npos && eq > 0 &&
        arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
            eq) {
      name = arg.substr(0, eq);
      file = arg.substr(eq + 1);
    }
    if (file.empty()) throw std::invalid_argument("--data \"" + arg + "\": no file");
    if (name.empty()) {
      name = std::filesystem::path(file).stem().string();
      if (name.empty()) name = "data";
      const std::string base = name;
      for (int k = 2; used.contains(name) || summary_reserved_keys().contains(name); ++k)
        name = base + "-" + std::to_string(k);
    } else if (used.contains(name) || summary_reserved_keys().contains(name)) {
      throw std::invalid_argument("--data " + arg + ": the split name \"" + name +
                                  "\" is repeated or reserved in summary.json");
    }
    used.insert(name);
    out.emplace_back(name, file);
  }
  return out;
}

// The accuracies of `m` on `split`: the training run's evaluation, with the reference sums
// computed per batch of `eval_batch` pairs as the trainer computes and caches them. Without a
// reference (exports, reward-only runs) the implicit reward is not measured.
inline SplitEval evaluate_model(RewardModel& m, const Split& split, int64_t eval_batch) {
  torch::NoGradGuard ng;
  const auto n = static_cast<int64_t>(split.pairs.size());
  const auto opts = m.forward_options();
  const bool implicit = static_cast<bool>(m.reference);
  const auto batch = [&](const std::vector<int64_t>& idx) {
    return make_batch(split, idx, m.spec.pad_id, m.device);
  };
  torch::Tensor ref_c, ref_r;
  if (implicit) {
    std::vector<torch::Tensor> c, r;
    for (int64_t s = 0; s < n; s += eval_batch) {
      std::vector<int64_t> idx;
      for (int64_t i = s; i < std::min(n, s + eval_batch); ++i) idx.push_back(i);
      auto [rc, rr] = hafrm::reference_logprobs(m.reference, batch(idx), opts);
      c.push_back(rc), r.push_back(rr);
    }
    ref_c = torch::cat(c), ref_r = torch::cat(r);
  }
  auto flags =
      preference_flags(n, {0, n}, eval_batch, implicit, [&](const std::vector<int64_t>& idx) {
        auto b = batch(idx);
        if (implicit) {
          auto ix = torch::tensor(idx, torch::kLong).to(m.device);
          b.reference_chosen = ref_c.index_select(0, ix);
          b.reference_rejected = ref_r.index_select(0, ix);
        }
        return hafrm::forward_pair(m.model, b, opts);
      });
  return summarize_flags(split, flags, m.spec.score_is_implicit(), implicit);
}

// summary.json of an evaluation: the training run's format (its objective, seed, steps, times
// and identity, then one block per split), plus "model", the evaluated directory or file.
inline nlohmann::ordered_json eval_summary_json(const RewardModel& m, double wall_seconds,
                                                const std::vector<SplitEval>& results) {
  const auto& t = m.spec.training;
  nlohmann::ordered_json s = {
      {"objective", m.spec.objective},
      {"score", m.spec.score_is_implicit() ? "implicit" : "reward"},
      {"seed", t.contains("seed") ? t.at("seed") : nlohmann::ordered_json(nullptr)},
      {"steps", t.contains("step") ? t.at("step") : nlohmann::ordered_json(nullptr)},
      {"train_seconds", t.value("train_seconds", 0.0)},
      {"wall_seconds", wall_seconds},
      {"resumed_from", -1},
      {"identity", t.contains("identity") ? t.at("identity") : nlohmann::ordered_json::object()},
      {"model", m.source.string()}};
  for (const auto& e : results) s[e.split] = split_summary_json(e);
  return s;
}

struct EvalRun {
  std::vector<Split> splits;
  std::vector<SplitEval> results;
  nlohmann::ordered_json summary;
};

// Loads the model and the files, evaluates each, and (with o.out) writes DIR/summary.json
// through a temporary file. `log` receives the lines to print.
template <class Log>
EvalRun evaluate_files(const EvalOptions& o, Log&& log) {
  const auto wall0 = std::chrono::steady_clock::now();
  if (o.eval_batch < 1) throw std::invalid_argument("--eval-batch must be >= 1");
  if (o.data.empty()) throw std::invalid_argument("eval: --data needs at least one file");
  const auto names = eval_split_names(o.data);
  if (o.threads > 0) torch::set_num_threads(o.threads);
  LoadOptions lo;
  lo.device = torch::Device(o.device);
  lo.tokenizer = o.tokenizer;
  RewardModel m = load_reward_model(o.model, lo);
  require_reward(m.spec, "eval", o.model);
  log("haf_rm eval: " + m.source.string() + " (" + (m.from_export ? "export" : "checkpoint") +
      ", objective " + m.spec.objective + ", step " +
      (m.spec.training.contains("step") ? m.spec.training["step"].dump() : std::string("?")) +
      ", " + m.tokenizer->name() + ")");
  EvalRun run;
  for (const auto& [name, file] : names)
    run.splits.push_back(load_split(name, file, *m.tokenizer, m.spec.assembly, o.skip_bad));
  for (const auto& s : run.splits) {
    if (s.report.skipped > 0) log("  " + s.report.summary());
    run.results.push_back(evaluate_model(m, s, o.eval_batch));
    log(describe_eval(run.results.back(), s));
  }
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  run.summary = eval_summary_json(m, wall, run.results);
  if (!o.out.empty()) {
    namespace fs = std::filesystem;
    fs::create_directories(o.out);
    const fs::path path = fs::path(o.out) / "summary.json";
    const fs::path tmp = path.string() + ".tmp-" + std::to_string(::getpid());
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << run.summary.dump(2) << "\n";
      f.flush();
      if (!f) {
        std::error_code ignored;
        fs::remove(tmp, ignored);
        throw std::runtime_error("cannot write " + path.string());
      }
    }
    fs::rename(tmp, path);
    log("summary written to " + path.string());
  }
  return run;
}

inline EvalRun evaluate_files(const EvalOptions& o) {
  return evaluate_files(o, [](const std::string&) {});
}

}  // namespace hafrm::examples::rm
