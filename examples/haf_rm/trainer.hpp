// trainer.hpp: the HaF-RM example trainer (shared by main.cpp and the tests).
//
// One Trainer owns the tokenizer, the three splits, the model and its frozen reference, AdamW and
// the hybrid objective. step() is one optimizer step (gradient accumulation, clipping, learning-
// rate schedule); evaluate() measures preference accuracy of the reward head and of DPO's
// implicit reward; save_checkpoint()/load_checkpoint() capture everything that decides the next
// step (weights, reference, optimizer state, data order, RNG states), so a resumed run takes
// exactly the step an uninterrupted one would. run() is the whole command-line training job.
//
//   hafrm::examples::rm::TrainConfig cfg;          // defaults: hybrid model on data/synthetic
//   cfg.objective = "bt";
//   hafrm::examples::rm::Trainer t(cfg);
//   double loss = t.step().loss;
//   auto eval = t.evaluate(t.eval_split());
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numbers>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <hafrm/model/pair_forward.hpp>
#include <hafrm_examples/synthetic_task.hpp>
#include <hafrm_examples/tokenizer.hpp>

#include "checkpoint.hpp"
#include "data.hpp"
#include "distributed.hpp"
#include "losses.hpp"
#include "metrics.hpp"
#include "model.hpp"
#include "progress.hpp"

#ifndef HAFRM_EXAMPLES_DATA_DIR
#define HAFRM_EXAMPLES_DATA_DIR "data"
#endif

namespace hafrm::examples::rm {

struct TrainConfig {
  // Data and tokenization.
  std::string train_path = HAFRM_EXAMPLES_DATA_DIR "/synthetic/train.jsonl";
  std::string eval_path = HAFRM_EXAMPLES_DATA_DIR "/synthetic/eval.jsonl";
  std::string ood_path = HAFRM_EXAMPLES_DATA_DIR "/synthetic/ood.jsonl";  // "" = none
  std::string tokenizer = "byte";       // or a SentencePiece .model path
  std::string prompt_template = "phi";  // phi | mistral | raw
  int64_t max_length = 128;
  int64_t max_prompt_length = 64;
  bool skip_bad = false;
  // Model.
  ModelConfig model;
  // Objective.
  std::string objective = "haf";                    // bt | haf | dpo
  std::string reward_loss, policy_loss, weighting;  // "" = the objective's default
  std::string readout = "last-token";               // last-token | last-position
  std::string logprob_backend = "fused";            // fused | reference (timing comparisons)
  std::string reference = "precompute";  // precompute (once, cached) | model (live forward)
  // Optimisation.
  int64_t steps = 2000;
  int64_t batch_size = 32;
  int64_t grad_accum = 1;
  double lr = 2e-3;
  double weight_decay = 0.1;
  double adam_eps = 1e-5;  // the HaF reference code's value
  double clip = 1.0;       // <= 0: no clipping (the norm is still logged)
  int64_t warmup_steps = 50;
  std::string schedule = "cosine";  // cosine | constant
  double min_lr_ratio = 0.1;
  uint64_t seed = 0;
  int threads = 0;  // 0 = LibTorch's default
  std::string device = "cpu";
  // Output.
  std::string out_dir = "runs/haf_rm";
  std::string metrics_path;        // "" = <out_dir>/metrics.jsonl; ".csv" for CSV
  int64_t checkpoint_every = 500;  // 0 = only at the end and on SIGINT/SIGTERM
  int64_t log_every = 25;
  int64_t eval_every = 250;  // 0 = only at the end
  int64_t eval_batch = 256;
  std::string progress = "auto";  // auto | bar | plain | none
  std::string resume;             // checkpoint to continue from
  // Data parallel (under torchrun; see distributed.hpp). batch_size is per rank.
  int64_t bucket_kb = 25 << 10;  // gradient all-reduce bucket size, KiB
  int64_t dist_timeout_s = 300;  // c10d store and collective timeout
};

struct StepStats {
  int64_t step = 0;  // optimizer steps done after this one
  double loss = 0, reward_loss = 0, policy_loss = 0;
  double reward_acc = 0, implicit_acc = 0;
  double grad_norm = 0, lr = 0, w_reward = 0, alpha = 0;
};

struct Accuracy {
  int64_t n = 0;
  double reward = 0, implicit = 0;  // fraction of pairs with score(chosen) > score(rejected)
};

struct SplitEval {
  std::string split;
  Accuracy all;
  std::map<std::string, Accuracy> by_kind;  // "swap" / "substitute" on the synthetic data
  double score = 0;                         // the objective's score: reward or implicit
  // Accuracy against the hidden gold ordering (score(gold-better) > score(gold-worse)) over the
  // pairs whose records carry "gold_agrees" (data/rules); absent when none does.
  std::optional<Accuracy> gold;
  double gold_score = 0;  // the objective's score against the gold ordering
};

// Accuracy against a hidden gold ordering: over the pairs whose gold is known (gold[i] 1: the
// label agrees with it, 0: it does not, -1: unknown), the fraction the score ranks the gold way,
// i.e. chosen_wins[i] (score(chosen) > score(rejected)) where the label agrees and
// rejected_wins[i] where it does not; a tie is wrong either way. Returns {pairs, accuracy},
// {0, 0} when no pair has a known gold ordering.
inline std::pair<int64_t, double> gold_accuracy(const std::vector<int8_t>& gold,
                                                const torch::Tensor& chosen_wins,
                                                const torch::Tensor& rejected_wins) {
  TORCH_CHECK(chosen_wins.numel() == static_cast<int64_t>(gold.size()) &&
                  rejected_wins.numel() == chosen_wins.numel(),
              "gold_accuracy: chosen_wins and rejected_wins need one entry per gold flag (",
              gold.size(), "), got ", chosen_wins.numel(), " and ", rejected_wins.numel());
  const auto c = chosen_wins.to(torch::kBool).cpu().contiguous(),
             r = rejected_wins.to(torch::kBool).cpu().contiguous();
  const bool* cw = c.data_ptr<bool>();
  const bool* rw = r.data_ptr<bool>();
  int64_t known = 0, right = 0;
  for (std::size_t i = 0; i < gold.size(); ++i) {
    if (gold[i] < 0) continue;
    ++known;
    right += gold[i] == 1 ? cw[i] : rw[i];
  }
  return {known, known ? static_cast<double>(right) / static_cast<double>(known) : 0.0};
}

namespace detail {

inline std::atomic<int> g_stop_signal{0};
extern "C" inline void on_stop_signal(int sig) { g_stop_signal.store(sig); }

// Installs SIGINT/SIGTERM handlers for the guard's lifetime. The first signal asks the loop to
// checkpoint and stop; SA_RESETHAND makes a second one terminate at once.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

inline PromptTemplate template_by_name(const std::string& name) {
  if (name == "phi") return PromptTemplate::phi();
  if (name == "mistral") return PromptTemplate::mistral();
  if (name == "raw") return PromptTemplate::raw();
  throw std::invalid_argument("--template must be phi, mistral or raw, got \"" + name + "\"");
}

inline std::string file_fingerprint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return hex64(fnv1a(bytes.data(), bytes.size()));
}

inline std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Lists every key whose value differs between two JSON objects, "section.key: a vs b".
inline void diff_section(const std::string& section, const nlohmann::ordered_json& stored,
                         const nlohmann::ordered_json& now, std::vector<std::string>& out) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : now.items()) keys.push_back(k);
  for (const auto& [k, v] : stored.items())
    if (!now.contains(k)) keys.push_back(k);
  for (const auto& k : keys) {
    const auto a = stored.contains(k) ? stored[k].dump() : std::string("(absent)");
    const auto b = now.contains(k) ? now[k].dump() : std::string("(absent)");
    if (a != b) out.push_back(section + "." + k + ": checkpoint " + a + ", this run " + b);
  }
}

}  // namespace detail

class Trainer {
 public:
  // dp: null for one process (exactly the single-process trainer); see distributed.hpp.
  explicit Trainer(TrainConfig config, std::shared_ptr<DataParallel> dp = nullptr)
      : cfg_(std::move(config)), dp_(std::move(dp)) {
    if (cfg_.threads > 0) torch::set_num_threads(cfg_.threads);
    if (cfg_.device != "cpu" && !cfg_.device.starts_with("cuda"))
      throw std::invalid_argument("--device must be cpu or cuda[:N], got \"" + cfg_.device + "\"");
    if (cfg_.device.starts_with("cuda") && !torch::cuda::is_available())
      throw std::runtime_error("--device " + cfg_.device +
                               ": CUDA is not available (no GPU, or a CPU-only LibTorch)");
    device_ = torch::Device(cfg_.device);
    check_config();
    spec_ = resolve_objective(cfg_.objective, cfg_.reward_loss, cfg_.policy_loss, cfg_.weighting);
    objective_ = make_objective(spec_);
    forward_options_.readout = cfg_.readout == "last-position" ? hafrm::RewardReadout::kLastPosition
                                                               : hafrm::RewardReadout::kLastNonPad;

    tokenizer_ = make_tokenizer(cfg_.tokenizer);
    forward_options_.pad_id = tokenizer_->pad_id();
    if (cfg_.logprob_backend == "reference")
      forward_options_.logprobs.backend = hafrm::LogProbBackend::kReference;
    AssemblyOptions ao;
    ao.prompt_template = detail::template_by_name(cfg_.prompt_template);
    ao.max_length = cfg_.max_length;
    ao.max_prompt_length = cfg_.max_prompt_length;
    train_ = load_split("train", cfg_.train_path, *tokenizer_, ao, cfg_.skip_bad);
    if (static_cast<int64_t>(train_.pairs.size()) < global_batch())
      throw std::invalid_argument(
          cfg_.train_path + " has " + std::to_string(train_.pairs.size()) +
          " pairs, fewer than --batch-size " + std::to_string(cfg_.batch_size) +
          (world() > 1 ? " x " + std::to_string(world()) + " processes" : std::string()));
    if (!cfg_.eval_path.empty())
      eval_ = load_split("eval", cfg_.eval_path, *tokenizer_, ao, cfg_.skip_bad);
    if (!cfg_.ood_path.empty())
      ood_ = load_split("ood", cfg_.ood_path, *tokenizer_, ao, cfg_.skip_bad);

    // The initial weights depend on the seed only; the reference is a frozen copy of them.
    torch::manual_seed(cfg_.seed);
    ModelConfig mc = cfg_.model;
    mc.vocab_size = tokenizer_->vocab_size();
    model_ = HafTransformer(mc);
    model_->to(device_);
    reference_ = frozen_copy(model_);
    if (dp_) dp_->attach(model_->parameters());

    std::vector<torch::Tensor> decay, no_decay;
    for (auto& p : model_->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
    auto opts = [&](double wd) {
      return std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(cfg_.lr).eps(cfg_.adam_eps).weight_decay(wd));
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, opts(cfg_.weight_decay));
    groups.emplace_back(no_decay, opts(0.0));
    optimizer_ = std::make_unique<torch::optim::AdamW>(std::move(groups));

    shuffle_rng_.seed(cfg_.seed * 0x9E3779B97F4A7C15ull + 0x5EEDull);
    if (!cfg_.resume.empty()) {
      load_checkpoint(cfg_.resume);
    } else {
      new_epoch();
      if (cfg_.reference == "precompute") train_refs_ = reference_sums(train_);
    }
  }

  // ---- accessors -----------------------------------------------------------------------------
  const TrainConfig& config() const { return cfg_; }
  const ObjectiveSpec& objective() const { return spec_; }
  HafTransformer& model() { return model_; }
  const Split& train_split() const { return train_; }
  const std::optional<Split>& eval_split() const { return eval_; }
  const std::optional<Split>& ood_split() const { return ood_; }
  int64_t global_step() const { return step_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // Asks run() to checkpoint and stop after the current step (what SIGINT/SIGTERM do).
  void request_stop() { stop_requested_ = true; }
  // Called by run() after every optimizer step (tests use it to interrupt at a given step).
  std::function<void(const StepStats&)> after_step;

  // ---- one optimizer step --------------------------------------------------------------------
  StepStats step() {
    model_->train();
    optimizer_->zero_grad();
    StepStats s;
    const double lr = lr_at(step_);
    for (auto& g : optimizer_->param_groups())
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    const double inv = 1.0 / static_cast<double>(cfg_.grad_accum);
    for (int64_t m = 0; m < cfg_.grad_accum; ++m) {
      const auto idx = next_indices();
      auto f = forward(train_, train_refs_, idx);
      auto out = objective_(f.rewards, f.policy, step_);
      (out.loss * inv).backward();
      torch::NoGradGuard ng;
      s.loss += inv * out.loss.item<double>();
      s.reward_loss += inv * out.reward_loss.item<double>();
      s.policy_loss += inv * out.policy_loss.item<double>();
      s.reward_acc +=
          inv * (f.rewards.chosen > f.rewards.rejected).to(torch::kDouble).mean().item<double>();
      s.implicit_acc += inv * (implicit_margin(f) > 0).to(torch::kDouble).mean().item<double>();
      s.w_reward = out.weights.reward, s.alpha = out.weights.policy;
    }
    if (dp_) {  // mean gradient and mean statistics over the ranks' slices of the global batch
      dp_->average_gradients();
      const auto m =
          dp_->mean({s.loss, s.reward_loss, s.policy_loss, s.reward_acc, s.implicit_acc});
      s.loss = m[0], s.reward_loss = m[1], s.policy_loss = m[2], s.reward_acc = m[3];
      s.implicit_acc = m[4];
    }
    const double max_norm = cfg_.clip > 0 ? cfg_.clip : std::numeric_limits<double>::infinity();
    s.grad_norm = torch::nn::utils::clip_grad_norm_(model_->parameters(), max_norm);
    optimizer_->step();
    s.lr = lr;
    s.step = ++step_;
    return s;
  }

  // ---- evaluation ----------------------------------------------------------------------------
  // Preference accuracy on a split: strict r(chosen) > r(rejected), for the reward head and for
  // the implicit reward beta * ((logp_c - ref_c) - (logp_r - ref_r)) (beta > 0 does not change
  // the ranking). A zero reward head (untrained, e.g. under dpo) scores 0 here, as in the paper.
  SplitEval evaluate(const Split& split) {
    auto& refs = split_refs(split);
    torch::NoGradGuard ng;
    model_->eval();
    const auto n = static_cast<int64_t>(split.pairs.size());
    // Rows: reward ok, implicit ok, reward reversed, implicit reversed; each rank fills its share
    // of the pairs and the sum over the ranks completes them.
    auto flags = torch::zeros({4, n}, torch::kDouble);
    const auto [first, last] = share(n);
    for (int64_t s = first; s < last; s += cfg_.eval_batch) {
      std::vector<int64_t> idx;
      for (int64_t i = s; i < std::min(last, s + cfg_.eval_batch); ++i) idx.push_back(i);
      auto f = forward(split, refs, idx);
      const auto len = static_cast<int64_t>(idx.size());
      flags[0].narrow(0, s, len).copy_(f.rewards.chosen > f.rewards.rejected);
      flags[1].narrow(0, s, len).copy_(implicit_margin(f) > 0);
      flags[2].narrow(0, s, len).copy_(f.rewards.rejected > f.rewards.chosen);
      flags[3].narrow(0, s, len).copy_(implicit_margin(f) < 0);
    }
    if (dp_) dp_->sum_(flags);
    model_->train();
    auto r = flags[0], m = flags[1];
    SplitEval e;
    e.split = split.name;
    e.all = {n, r.mean().item<double>(), m.mean().item<double>()};
    std::map<std::string, std::vector<int64_t>> groups;
    for (int64_t i = 0; i < n; ++i)
      if (!split.kinds[static_cast<std::size_t>(i)].empty())
        groups[split.kinds[static_cast<std::size_t>(i)]].push_back(i);
    for (auto& [kind, rows] : groups) {
      auto ix = torch::tensor(rows, torch::kLong);
      e.by_kind[kind] = {static_cast<int64_t>(rows.size()),
                         r.index_select(0, ix).mean().item<double>(),
                         m.index_select(0, ix).mean().item<double>()};
    }
    e.score = spec_.score_is_implicit ? e.all.implicit : e.all.reward;
    if (split.gold.size() == split.pairs.size()) {
      const auto gr = gold_accuracy(split.gold, flags[0], flags[2]);
      const auto gm = gold_accuracy(split.gold, flags[1], flags[3]);
      if (gr.first > 0) {
        e.gold = Accuracy{gr.first, gr.second, gm.second};
        e.gold_score = spec_.score_is_implicit ? e.gold->implicit : e.gold->reward;
      }
    }
    return e;
  }

  // ---- checkpoints ---------------------------------------------------------------------------
  // Everything a checkpoint must agree on with the run that loads it, by section.
  nlohmann::ordered_json identity() const {
    nlohmann::ordered_json id;
    id["model"] = model_->config.to_json();
    nlohmann::ordered_json tok = {{"kind", cfg_.tokenizer == "byte" ? "byte" : "sentencepiece"},
                                  {"vocab_size", tokenizer_->vocab_size()},
                                  {"eos_id", tokenizer_->eos_id()}};
    if (cfg_.tokenizer != "byte")
      tok["model_file_fnv1a"] = detail::file_fingerprint(cfg_.tokenizer);
    id["tokenizer"] = tok;
    id["objective"] = {{"objective", spec_.objective},     {"reward_loss", spec_.reward_loss},
                       {"policy_loss", spec_.policy_loss}, {"weighting", spec_.weighting},
                       {"readout", cfg_.readout},          {"reference", cfg_.reference}};
    id["data"] = {{"template", cfg_.prompt_template},
                  {"max_length", cfg_.max_length},
                  {"max_prompt_length", cfg_.max_prompt_length},
                  {"train_pairs", train_.pairs.size()},
                  {"train_fingerprint", detail::hex64(fingerprint(train_))}};
    // The global batch: a checkpoint resumes with any number of processes that keeps it.
    id["optimisation"] = {{"batch_size", global_batch()},
                          {"grad_accum", cfg_.grad_accum},
                          {"lr", cfg_.lr},
                          {"weight_decay", cfg_.weight_decay},
                          {"adam_eps", cfg_.adam_eps},
                          {"clip", cfg_.clip},
                          {"warmup_steps", cfg_.warmup_steps},
                          {"schedule", cfg_.schedule},
                          {"min_lr_ratio", cfg_.min_lr_ratio},
                          {"seed", cfg_.seed}};
    return id;
  }

  // Rank 0 writes; every rank waits for the file (so none exits while it is being written).
  void save_checkpoint(const std::filesystem::path& path) {
    if (dp_ && dp_->rank() != 0) return dp_->barrier();
    nlohmann::ordered_json meta;
    meta["format"] = "hafrm-examples-haf_rm";
    meta["identity"] = identity();
    std::ostringstream rng;
    rng << shuffle_rng_;
    meta["state"] = {
        {"step", step_},     {"steps", cfg_.steps},      {"epoch", epoch_},
        {"cursor", cursor_}, {"shuffle_rng", rng.str()}, {"train_seconds", train_seconds_}};
    torch::serialize::OutputArchive a;
    a.write("meta", c10::IValue(meta.dump()));
    torch::serialize::OutputArchive m, r, o;
    model_->save(m);
    reference_->save(r);
    optimizer_->save(o);
    a.write("model", m);
    a.write("reference", r);
    a.write("optimizer", o);
    a.write("order", torch::tensor(order_, torch::kLong));
    a.write("rng_cpu", generator_state(torch::kCPU));
    if (device_.is_cuda()) a.write("rng_cuda", generator_state(device_));
    if (train_refs_.first.defined()) {
      a.write("ref_chosen", train_refs_.first.cpu());
      a.write("ref_rejected", train_refs_.second.cpu());
    }
    write_checkpoint(path, a);
    if (dp_) dp_->barrier();
  }

  void load_checkpoint(const std::filesystem::path& path) {
    auto a = read_checkpoint(path, device_);
    nlohmann::ordered_json meta;
    try {
      c10::IValue v;
      a.read("meta", v);
      meta = nlohmann::ordered_json::parse(v.toStringRef());
      if (meta.value("format", "") != "hafrm-examples-haf_rm") throw std::runtime_error("format");
    } catch (const std::exception&) {
      throw CheckpointError("checkpoint " + path.string() +
                            " holds no haf_rm trainer metadata; refusing to load it");
    }
    std::vector<std::string> diffs;
    const auto now = identity();
    for (const auto& [section, values] : now.items())
      detail::diff_section(section,
                           meta["identity"].value(section, nlohmann::ordered_json::object()),
                           values, diffs);
    if (!diffs.empty()) {
      std::string msg = "checkpoint " + path.string() + " does not match this run:";
      for (const auto& d : diffs) msg += "\n  " + d;
      msg +=
          "\nresume with the settings it was written with, or train from scratch in another "
          "--out directory";
      throw CheckpointError(msg);
    }
    try {
      torch::serialize::InputArchive m, r, o;
      a.read("model", m);
      a.read("reference", r);
      a.read("optimizer", o);
      model_->load(m);
      reference_->load(r);
      optimizer_->load(o);
      torch::Tensor order, rng_cpu;
      a.read("order", order);
      a.read("rng_cpu", rng_cpu);
      set_generator_state(torch::kCPU, rng_cpu);
      if (device_.is_cuda()) {
        torch::Tensor rng_cuda;
        a.read("rng_cuda", rng_cuda);
        set_generator_state(device_, rng_cuda);
      }
      order = order.cpu();
      order_.assign(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + order.numel());
      if (cfg_.reference == "precompute") {
        torch::Tensor rc, rr;
        a.read("ref_chosen", rc);
        a.read("ref_rejected", rr);
        train_refs_ = {rc.to(device_), rr.to(device_)};
      }
    } catch (const c10::Error& e) {
      throw CheckpointError("checkpoint " + path.string() +
                            " is incomplete or damaged: " + e.what_without_backtrace());
    }
    // The archive's checksum only proves the bytes are the ones written; a crafted file can still
    // carry any state, so every field is range-checked before it can index or size anything.
    const auto corrupt = [&](const std::string& why) {
      return CheckpointError("checkpoint " + path.string() + " is corrupt: " + why);
    };
    int64_t stored_steps = cfg_.steps;
    try {
      const auto& st = meta.at("state");
      step_ = st.at("step").get<int64_t>();
      epoch_ = st.at("epoch").get<int64_t>();
      cursor_ = st.at("cursor").get<int64_t>();
      train_seconds_ = st.value("train_seconds", 0.0);
      std::istringstream rng(st.at("shuffle_rng").get<std::string>());
      rng >> shuffle_rng_;
      if (rng.fail()) throw corrupt("state 'shuffle_rng' is not a generator state");
      stored_steps = st.value("steps", cfg_.steps);
    } catch (const nlohmann::json::exception& e) {
      throw corrupt(std::string("state: ") + e.what());
    }
    const auto n = static_cast<int64_t>(order_.size());
    if (step_ < 0) throw corrupt("state 'step' is negative (" + std::to_string(step_) + ")");
    if (epoch_ < 0) throw corrupt("state 'epoch' is negative (" + std::to_string(epoch_) + ")");
    if (cursor_ < 0 || cursor_ > n)
      throw corrupt("state 'cursor' " + std::to_string(cursor_) + " is outside [0, " +
                    std::to_string(n) + "]");
    if (n != 0 && n != static_cast<int64_t>(train_.pairs.size()))
      throw corrupt("the stored data order has " + std::to_string(n) + " entries for " +
                    std::to_string(train_.pairs.size()) + " training pairs");
    std::vector<char> seen(order_.size(), 0);
    for (const auto i : order_) {
      if (i < 0 || i >= n || seen[static_cast<std::size_t>(i)])
        throw corrupt("the stored data order is not a permutation of the training pairs");
      seen[static_cast<std::size_t>(i)] = 1;
    }
    resumed_from_ = step_;
    if (stored_steps != cfg_.steps)
      notes_.push_back("note: --steps " + std::to_string(cfg_.steps) + " differs from the " +
                       std::to_string(stored_steps) +
                       " the checkpoint was written for; the learning-rate schedule follows the "
                       "new value from here on");
  }

  // ---- the whole job -------------------------------------------------------------------------
  // Trains to cfg.steps with progress, metrics, periodic evaluation and checkpoints; on
  // SIGINT/SIGTERM (or request_stop()) writes a checkpoint and returns 128 + signal (130 for a
  // request). Returns 0 when training finished, after the final evaluation and summary.json.
  int run() {
    const auto wall0 = std::chrono::steady_clock::now();
    const std::filesystem::path out(cfg_.out_dir);
    const auto ckpt = out / "checkpoint.pt";
    std::filesystem::create_directories(out);
    const bool lead = !dp_ || dp_->rank() == 0;  // the one rank that writes and prints
    if (lead)
      for (const auto& stale : remove_stale_checkpoint_temporaries(ckpt))
        notes_.push_back("note: removed " + stale.string() + ", left by a killed checkpoint write");
    MetricsLog metrics =
        lead ? MetricsLog(cfg_.metrics_path.empty() ? out / "metrics.jsonl"
                                                    : std::filesystem::path(cfg_.metrics_path),
                          resumed_from_)
             : MetricsLog();
    Progress progress(lead ? Progress::resolve(cfg_.progress) : Progress::Mode::kNone, cfg_.steps,
                      step_);
    detail::StopSignals signals;

    progress.line(describe());
    for (const auto& n : notes_) progress.line(n);
    if (resumed_from_ < 0 && std::filesystem::exists(ckpt))
      progress.line("note: " + ckpt.string() + " exists and will be overwritten (pass --resume " +
                    ckpt.string() + " to continue it)");

    auto log_eval = [&](const SplitEval& e) {
      nlohmann::ordered_json rec = {{"step", step_},
                                    {"split", e.split},
                                    {"time_s", train_seconds_},
                                    {"reward_acc", e.all.reward},
                                    {"implicit_acc", e.all.implicit},
                                    {"score_acc", e.score},
                                    {"pairs", e.all.n}};
      for (const auto& [k, a] : e.by_kind) {
        rec["reward_acc_" + k] = a.reward;
        rec["implicit_acc_" + k] = a.implicit;
      }
      if (e.gold) {
        rec["gold_reward_acc"] = e.gold->reward;
        rec["gold_implicit_acc"] = e.gold->implicit;
        rec["gold_score_acc"] = e.gold_score;
      }
      metrics.write(rec);
    };
    auto evaluate_all = [&](bool verbose) {
      std::vector<SplitEval> res;
      for (const auto* s : {&eval_, &ood_})
        if (s->has_value()) {
          res.push_back(evaluate(**s));
          log_eval(res.back());
          if (verbose) progress.line(describe(res.back(), **s));
        }
      return res;
    };

    StepStats window;
    int64_t in_window = 0;
    double ema_loss = std::nan(""), ema_acc = std::nan("");
    int exit_code = 0;
    while (step_ < cfg_.steps) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto s = step();
      train_seconds_ +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double acc = spec_.score_is_implicit ? s.implicit_acc : s.reward_acc;
      ema_loss = std::isnan(ema_loss) ? s.loss : 0.95 * ema_loss + 0.05 * s.loss;
      ema_acc = std::isnan(ema_acc) ? acc : 0.95 * ema_acc + 0.05 * acc;
      window.loss += s.loss, window.reward_loss += s.reward_loss;
      window.policy_loss += s.policy_loss, window.grad_norm += s.grad_norm;
      window.reward_acc += s.reward_acc, window.implicit_acc += s.implicit_acc;
      ++in_window;
      progress.update(
          step_, "loss " + detail::fmt("%.4f", ema_loss) + " acc " + detail::fmt("%.3f", ema_acc));
      if (step_ % cfg_.log_every == 0 || step_ == cfg_.steps) {
        const double k = 1.0 / static_cast<double>(in_window);
        nlohmann::ordered_json rec = {
            {"step", step_},
            {"split", "train"},
            {"time_s", train_seconds_},
            {"loss", window.loss * k},
            {"reward_loss", window.reward_loss * k},
            {"policy_loss", window.policy_loss * k},
            {"reward_acc", window.reward_acc * k},
            {"implicit_acc", window.implicit_acc * k},
            {"score_acc", (spec_.score_is_implicit ? window.implicit_acc : window.reward_acc) * k},
            {"grad_norm", window.grad_norm * k},
            {"lr", s.lr},
            {"w_reward", s.w_reward},
            {"alpha", s.alpha}};
        metrics.write(rec);
        if (progress.mode() == Progress::Mode::kPlain)
          progress.line("step " + std::to_string(step_) + "/" + std::to_string(cfg_.steps) +
                        "  loss " + detail::fmt("%.4f", window.loss * k) + "  reward_loss " +
                        detail::fmt("%.4f", window.reward_loss * k) + "  policy_loss " +
                        detail::fmt("%.4f", window.policy_loss * k) + "  acc " +
                        detail::fmt("%.3f", window.reward_acc * k) + "  implicit_acc " +
                        detail::fmt("%.3f", window.implicit_acc * k) + "  lr " +
                        detail::fmt("%.2e", s.lr) + "  " +
                        detail::fmt("%.1f", progress.rate(step_)) + " it/s  ETA " +
                        progress.eta(step_));
        window = {};
        in_window = 0;
      }
      if (after_step) after_step(s);
      const int sig = detail::g_stop_signal.load();
      // Under data parallelism every rank stops at the same step (one signalled rank suffices).
      if (dp_ ? dp_->any(sig != 0 || stop_requested_) : (sig != 0 || stop_requested_)) {
        save_checkpoint(ckpt);
        progress.line(std::string("interrupted by ") +
                      (sig == SIGTERM  ? "SIGTERM"
                       : sig == SIGINT ? "SIGINT"
                                       : "a stop request") +
                      " at step " + std::to_string(step_) + ": checkpoint written to " +
                      ckpt.string() + "; continue with the same arguments plus --resume " +
                      ckpt.string());
        exit_code = 128 + (sig != 0 ? sig : SIGINT);
        break;
      }
      if (cfg_.checkpoint_every > 0 && step_ % cfg_.checkpoint_every == 0 && step_ < cfg_.steps)
        save_checkpoint(ckpt);
      if (cfg_.eval_every > 0 && step_ % cfg_.eval_every == 0 && step_ < cfg_.steps)
        evaluate_all(progress.mode() == Progress::Mode::kPlain);
    }
    progress.finish();
    if (exit_code != 0) return exit_code;

    save_checkpoint(ckpt);
    const auto results = evaluate_all(true);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    nlohmann::ordered_json summary = {{"objective", spec_.objective},
                                      {"score", spec_.score_is_implicit ? "implicit" : "reward"},
                                      {"seed", cfg_.seed},
                                      {"steps", step_},
                                      {"train_seconds", train_seconds_},
                                      {"wall_seconds", wall},
                                      {"resumed_from", resumed_from_},
                                      {"identity", identity()}};
    for (const auto& e : results) {
      nlohmann::ordered_json j = {{"pairs", e.all.n},
                                  {"reward_acc", e.all.reward},
                                  {"implicit_acc", e.all.implicit},
                                  {"score_acc", e.score}};
      for (const auto& [k, a] : e.by_kind)
        j["by_kind"][k] = {{"pairs", a.n}, {"reward_acc", a.reward}, {"implicit_acc", a.implicit}};
      if (e.gold)
        j["gold"] = {{"pairs", e.gold->n},
                     {"reward_acc", e.gold->reward},
                     {"implicit_acc", e.gold->implicit},
                     {"score_acc", e.gold_score}};
      summary[e.split] = j;
    }
    if (lead) std::ofstream(out / "summary.json") << summary.dump(2) << "\n";
    std::string final_line = "final " + spec_.objective + " (score: " +
                             (spec_.score_is_implicit ? "implicit reward" : "reward head") + ")";
    for (const auto& e : results) {
      final_line += "  " + e.split + " " + detail::fmt("%.3f", e.score);
      if (e.gold) final_line += " (gold " + detail::fmt("%.3f", e.gold_score) + ")";
    }
    final_line += "  train " + format_duration(train_seconds_) + ", wall " + format_duration(wall);
    progress.line(final_line);
    return 0;
  }

  std::string describe() const {
    int64_t params = 0;
    for (const auto& p : model_->parameters()) params += p.numel();
    const auto& mc = model_->config;
    std::string s = "haf_rm: objective " + spec_.objective + " (reward " + spec_.reward_loss +
                    ", policy " + spec_.policy_loss + ", weighting " + spec_.weighting + ")\n";
    s += "  model: " + std::to_string(mc.n_layers) + " layers, d " + std::to_string(mc.d_model) +
         ", " + std::to_string(mc.n_heads) + " heads, " + mc.positions + ", vocab " +
         std::to_string(mc.vocab_size) + " (" + tokenizer_->name() + "), " +
         std::to_string(params) + " parameters, " + cfg_.device + ", " +
         std::to_string(torch::get_num_threads()) + " threads\n";
    s += "  data: train " + std::to_string(train_.pairs.size());
    if (eval_) s += ", eval " + std::to_string(eval_->pairs.size());
    if (ood_) s += ", ood " + std::to_string(ood_->pairs.size());
    s += " pairs";
    for (const Split* sp : std::initializer_list<const Split*>{&train_, eval_ ? &*eval_ : nullptr,
                                                               ood_ ? &*ood_ : nullptr})
      if (sp && sp->report.skipped > 0) s += "\n  " + sp->report.summary();
    s += "\n  steps " + std::to_string(cfg_.steps) + " x batch " + std::to_string(cfg_.batch_size) +
         " x accum " + std::to_string(cfg_.grad_accum) + ", lr " + detail::fmt("%g", cfg_.lr) +
         ", seed " + std::to_string(cfg_.seed);
    if (dp_)
      s += "\n  data parallel: " + std::to_string(world()) + " processes (" + dp_->backend_name() +
           "), global batch " + std::to_string(global_batch()) + ", " +
           std::to_string(dp_->num_buckets()) + " gradient buckets, " +
           std::to_string(dp_->allreduce_bytes_per_step()) + " bytes all-reduced per micro-step";
    if (resumed_from_ >= 0)
      s += "\n  resumed from " + cfg_.resume + " at step " + std::to_string(resumed_from_);
    return s;
  }

  static std::string describe(const SplitEval& e, const Split& s) {
    auto kinds = [&](bool implicit) {
      std::string k;
      for (const auto& [name, a] : e.by_kind)
        k += (k.empty() ? " [" : ", ") + name + " " +
             detail::fmt("%.3f", implicit ? a.implicit : a.reward);
      return k.empty() ? k : k + "]";
    };
    return e.split + " (" + std::to_string(e.all.n) + " pairs, " + s.path + "): reward head acc " +
           detail::fmt("%.3f", e.all.reward) + kinds(false) + " | implicit reward acc " +
           detail::fmt("%.3f", e.all.implicit) + kinds(true) +
           (e.gold ? " | vs gold ordering: reward head " + detail::fmt("%.3f", e.gold->reward) +
                         ", implicit " + detail::fmt("%.3f", e.gold->implicit)
                   : std::string());
  }

 private:
  using RefSums = std::pair<torch::Tensor, torch::Tensor>;

  void check_config() const {
    auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
    if (cfg_.steps < 0) fail("--steps must be >= 0");
    if (cfg_.batch_size < 1 || cfg_.grad_accum < 1 || cfg_.eval_batch < 1)
      fail("--batch-size, --grad-accum and --eval-batch must be >= 1");
    if (!(cfg_.lr > 0)) fail("--lr must be > 0");
    if (cfg_.warmup_steps < 0) fail("--warmup-steps must be >= 0");
    if (cfg_.schedule != "cosine" && cfg_.schedule != "constant")
      fail("--schedule must be cosine or constant, got \"" + cfg_.schedule + "\"");
    if (cfg_.readout != "last-token" && cfg_.readout != "last-position")
      fail("--readout must be last-token or last-position, got \"" + cfg_.readout + "\"");
    if (cfg_.reference != "precompute" && cfg_.reference != "model")
      fail("--reference must be precompute or model, got \"" + cfg_.reference + "\"");
    if (cfg_.log_every < 1) fail("--log-every must be >= 1");
    if (cfg_.checkpoint_every < 0 || cfg_.eval_every < 0)
      fail("--checkpoint-every and --eval-every must be >= 0");
  }

  double lr_at(int64_t step) const {
    double f = 1.0;
    if (cfg_.warmup_steps > 0 && step < cfg_.warmup_steps)
      f = static_cast<double>(step + 1) / static_cast<double>(cfg_.warmup_steps);
    if (cfg_.schedule == "cosine") {
      const double span = static_cast<double>(std::max<int64_t>(1, cfg_.steps - cfg_.warmup_steps));
      const double t = std::clamp(static_cast<double>(step - cfg_.warmup_steps) / span, 0.0, 1.0);
      f *= cfg_.min_lr_ratio +
           (1.0 - cfg_.min_lr_ratio) * 0.5 * (1.0 + std::cos(std::numbers::pi * t));
    }
    return cfg_.lr * f;
  }

  // Fisher-Yates with the portable bounded draw of the synthetic task: the same permutation on
  // every platform for a given seed.
  void new_epoch() {
    const auto n = static_cast<int64_t>(train_.pairs.size());
    order_.resize(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i) order_[static_cast<std::size_t>(i)] = i;
    for (int64_t i = n - 1; i > 0; --i) {
      const auto j = static_cast<int64_t>(
          synthetic::uniform_below(shuffle_rng_, static_cast<uint64_t>(i + 1)));
      std::swap(order_[static_cast<std::size_t>(i)], order_[static_cast<std::size_t>(j)]);
    }
    cursor_ = 0;
    ++epoch_;
  }

  int world() const { return dp_ ? dp_->world_size() : 1; }
  int64_t global_batch() const { return cfg_.batch_size * world(); }
  // This rank's share [first, last) of n items (all of them for one process).
  std::pair<int64_t, int64_t> share(int64_t n) const {
    return dp_ ? dp_->share(n) : std::pair<int64_t, int64_t>{0, n};
  }

  // The next micro-batch; an epoch's last partial batch is dropped (every batch has B pairs).
  // The order and cursor are global (the same on every rank, for any world size); each rank
  // takes its slice of the global batch.
  std::vector<int64_t> next_indices() {
    if (cursor_ + global_batch() > static_cast<int64_t>(order_.size())) new_epoch();
    std::vector<int64_t> idx(order_.begin() + cursor_, order_.begin() + cursor_ + global_batch());
    cursor_ += global_batch();
    return dp_ ? dp_->slice(idx) : idx;
  }

  hafrm::PairForward forward(const Split& split, const RefSums& refs,
                             const std::vector<int64_t>& idx) {
    auto batch = make_batch(split, idx, tokenizer_->pad_id(), device_);
    if (refs.first.defined()) {
      auto ix = torch::tensor(idx, torch::kLong).to(device_);
      batch.reference_chosen = refs.first.index_select(0, ix);
      batch.reference_rejected = refs.second.index_select(0, ix);
      return hafrm::forward_pair(model_, batch, forward_options_);
    }
    return hafrm::forward_pair(model_, reference_, batch, forward_options_);
  }

  static torch::Tensor implicit_margin(const hafrm::PairForward& f) {
    const auto& p = f.policy;
    return (p.policy_chosen - p.reference_chosen) - (p.policy_rejected - p.reference_rejected);
  }

  // Summed reference log-probs of every pair of a split, computed once (the reference is frozen).
  // Under data parallelism each rank computes its share and the sum over the ranks (of zeros
  // elsewhere) completes the tensors.
  RefSums reference_sums(const Split& split) {
    std::vector<torch::Tensor> c, r;
    const auto n = static_cast<int64_t>(split.pairs.size());
    const auto [first, last] = share(n);
    for (int64_t s = first; s < last; s += cfg_.eval_batch) {
      std::vector<int64_t> idx;
      for (int64_t i = s; i < std::min(last, s + cfg_.eval_batch); ++i) idx.push_back(i);
      auto [rc, rr] = hafrm::reference_logprobs(
          reference_, make_batch(split, idx, tokenizer_->pad_id(), device_), forward_options_);
      c.push_back(rc), r.push_back(rr);
    }
    if (!dp_) return {torch::cat(c), torch::cat(r)};
    const auto dtype = c.empty() ? torch::kFloat : c[0].scalar_type();
    auto both = torch::zeros({2, n}, torch::TensorOptions(torch::kDouble).device(device_));
    if (!c.empty()) {
      both[0].narrow(0, first, last - first).copy_(torch::cat(c));
      both[1].narrow(0, first, last - first).copy_(torch::cat(r));
    }
    dp_->sum_(both);
    both = both.to(dtype);  // exact: each entry is one rank's value plus zeros
    return {both[0].clone(), both[1].clone()};
  }

  // Eval and OOD reference sums are computed on first use and kept (the reference never moves).
  const RefSums& split_refs(const Split& split) {
    if (&split == &train_ && train_refs_.first.defined()) return train_refs_;
    auto it = split_refs_.find(&split);
    if (it == split_refs_.end()) it = split_refs_.emplace(&split, reference_sums(split)).first;
    return it->second;
  }

  static torch::Tensor generator_state(const torch::Device& d) {
    auto gen = at::globalContext().defaultGenerator(d);
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state();
  }
  static void set_generator_state(const torch::Device& d, const torch::Tensor& state) {
    auto gen = at::globalContext().defaultGenerator(d);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state.cpu());
  }

  TrainConfig cfg_;
  std::shared_ptr<DataParallel> dp_;
  torch::Device device_{torch::kCPU};
  ObjectiveSpec spec_;
  HybridObjective objective_;
  hafrm::PairForwardOptions forward_options_;
  std::unique_ptr<Tokenizer> tokenizer_;
  Split train_;
  std::optional<Split> eval_, ood_;
  HafTransformer model_{nullptr}, reference_{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  RefSums train_refs_;
  std::map<const Split*, RefSums> split_refs_;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0, epoch_ = 0, step_ = 0, resumed_from_ = -1;
  std::mt19937_64 shuffle_rng_;
  double train_seconds_ = 0.0;
  bool stop_requested_ = false;
  std::vector<std::string> notes_;
};

}  // namespace hafrm::examples::rm
