// trainer.hpp: the HaF-RM example trainer (shared by main.cpp and the tests).
//
// One Trainer owns one run's state (train_state.hpp: the tokenizer, the three splits, the model
// and its frozen reference, AdamW and the hybrid objective) and is the interface main.cpp and the
// tests use. The work is in the headers it includes, one concern each:
//   config.hpp              TrainConfig, its checks, the learning-rate schedule
//   step.hpp                one optimizer step (accumulation, clipping, data-parallel mean)
//   evaluation.hpp          preference accuracy of the reward head and the implicit reward
//   trainer_checkpoint.hpp  checkpoint contents and resume (file format: checkpoint.hpp)
//   run_loop.hpp            the command-line job: logging, periodic eval/checkpoints, signals
// A checkpoint captures everything that decides the next step, so a resumed run takes exactly
// the step an uninterrupted one would.
//
//   hafrm::examples::rm::TrainConfig cfg;          // defaults: hybrid model on data/synthetic
//   cfg.objective = "bt";
//   hafrm::examples::rm::Trainer t(cfg);
//   double loss = t.step().loss;
//   auto eval = t.evaluate(*t.eval_split());
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>

#include "checkpoint.hpp"
#include "config.hpp"
#include "distributed.hpp"
#include "evaluation.hpp"
#include "run_loop.hpp"
#include "step.hpp"
#include "train_state.hpp"
#include "trainer_checkpoint.hpp"

namespace hafrm::examples::rm {

class Trainer {
 public:
  // dp: null for one process (exactly the single-process trainer); see distributed.hpp.
  // With cfg.resume set, continues from that checkpoint (CheckpointError if it does not fit).
  explicit Trainer(TrainConfig config, std::shared_ptr<DataParallel> dp = nullptr)
      // On the heap: the state caches reference sums keyed by its own splits' addresses, so it
      // must not move when a Trainer does.
      : st_(std::make_unique<TrainState>(std::move(config), std::move(dp))) {
    if (!st_->cfg.resume.empty())
      load_trainer_checkpoint(*st_, st_->cfg.resume);
    else
      st_->start_fresh();
  }

  // ---- accessors -----------------------------------------------------------------------------
  const TrainConfig& config() const { return st_->cfg; }
  const ObjectiveSpec& objective() const { return st_->spec; }
  HafTransformer& model() { return st_->model; }
  const Split& train_split() const { return st_->train; }
  const std::optional<Split>& eval_split() const { return st_->eval; }
  const std::optional<Split>& ood_split() const { return st_->ood; }
  int64_t global_step() const { return st_->step; }
  const Tokenizer& tokenizer() const { return *st_->tokenizer; }
  TrainState& state() { return *st_; }
  // Asks run() to checkpoint and stop after the current step (what SIGINT/SIGTERM do).
  void request_stop() { stop_requested_ = true; }
  // Called by run() after every optimizer step (tests use it to interrupt at a given step).
  std::function<void(const StepStats&)> after_step;

  // One optimizer step (step.hpp).
  StepStats step() { return train_step(*st_); }

  // Preference accuracy on a split (evaluation.hpp).
  SplitEval evaluate(const Split& split) { return evaluate_split(*st_, split); }

  // Checkpoints (trainer_checkpoint.hpp).
  nlohmann::ordered_json identity() const { return checkpoint_identity(*st_); }
  void save_checkpoint(const std::filesystem::path& path) { save_trainer_checkpoint(*st_, path); }
  void load_checkpoint(const std::filesystem::path& path) { load_trainer_checkpoint(*st_, path); }

  // The whole job (run_loop.hpp): trains to cfg.steps; 0 when done, 128 + signal when stopped.
  int run() { return run_training(*st_, after_step, stop_requested_); }

  std::string describe() const { return describe_run(*st_); }
  static std::string describe(const SplitEval& e, const Split& s) { return describe_eval(e, s); }

 private:
  std::unique_ptr<TrainState> st_;
  bool stop_requested_ = false;
};

}  // namespace hafrm::examples::rm
