// trainer.hpp: the HaF-RM example trainer (shared by main.cpp and the tests).
//
// One Trainer is one run, and owns each of its parts in one place:
//   RunConfig     run_config.hpp     the resolved settings: validated once, read-only
//   DataParallel  distributed.hpp    the process group under torchrun (null for one process)
//   TrainingData  training_data.hpp  the tokenizer and the three splits: loaded once, read-only
//                 init_from.hpp      the --init-from weights, checked and copied into the state
//   TrainState    train_state.hpp    the mutable state: model, frozen reference, AdamW, data
//                                    order, counters; written only by the step and the restore
//   RunControl    run_control.hpp    "stop requested": fed by request_stop() and SIGINT/SIGTERM
// The work is in functions that return what they compute:
//   step.hpp                train_step: one optimizer step -> StepStats
//   evaluation.hpp          evaluate_split: preference accuracy -> SplitEval
//   trainer_checkpoint.hpp  save, and load -> RestoredCheckpoint (file format: checkpoint.hpp)
//   run_report.hpp          the run's description, metrics records, summary.json
//   run_loop.hpp            run_training: the command-line job -> exit code
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
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>

#include "checkpoint.hpp"
#include "config.hpp"
#include "distributed.hpp"
#include "evaluation.hpp"
#include "init_from.hpp"
#include "run_config.hpp"
#include "run_control.hpp"
#include "run_loop.hpp"
#include "run_report.hpp"
#include "step.hpp"
#include "train_state.hpp"
#include "trainer_checkpoint.hpp"
#include "training_data.hpp"

namespace hafrm::examples::rm {

class Trainer {
 public:
  // dp: null for one process; see distributed.hpp. With cfg.options().resume set, continues from
  // that checkpoint (CheckpointError if it does not fit).
  Trainer(RunConfig cfg, std::shared_ptr<DataParallel> dp)
      : cfg_(std::move(cfg)),
        dp_(std::move(dp)),
        data_(load_training_data(cfg_, dp_ ? dp_->data_world_size() : 1)),
        state_(cfg_, data_, dp_.get(), load_initial_weights(cfg_, *data_.tokenizer)) {
    if (!cfg_.options().resume.empty())
      resumed_ = load_trainer_checkpoint(state_, cfg_.options().resume);
    else
      state_.start_fresh();
  }
  // Resolves `options` for its own device (RunConfig::resolve).
  explicit Trainer(TrainConfig options, std::shared_ptr<DataParallel> dp = nullptr)
      : Trainer(RunConfig::resolve(std::move(options)), std::move(dp)) {}
  // The state refers to the config and the splits held here, so a Trainer stays where it is.
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // ---- accessors -----------------------------------------------------------------------------
  const RunConfig& config() const { return cfg_; }
  const ObjectiveSpec& objective() const { return cfg_.objective(); }
  const HafTransformer& model() const { return state_.model(); }
  const Split& train_split() const { return data_.train; }
  const std::optional<Split>& eval_split() const { return data_.eval; }
  const std::optional<Split>& ood_split() const { return data_.ood; }
  const hafrm::data::Tokenizer& tokenizer() const { return *data_.tokenizer; }
  int64_t global_step() const { return state_.step(); }
  const TrainState& state() const { return state_; }
  // What the state was restored from: the constructor's --resume or load_checkpoint().
  const std::optional<RestoredCheckpoint>& resumed() const { return resumed_; }

  // ---- run control ---------------------------------------------------------------------------
  // Asks run() to checkpoint and stop after the current step, as SIGINT/SIGTERM do (from any
  // thread, or from run()'s after_step).
  void request_stop() { control_.request_stop(); }
  const RunControl& control() const { return control_; }

  // ---- work ----------------------------------------------------------------------------------
  // One optimizer step (step.hpp).
  StepStats step() { return train_step(state_); }

  // Preference accuracy on a split (evaluation.hpp).
  SplitEval evaluate(const Split& split) { return evaluate_split(state_, split); }

  // Checkpoints (trainer_checkpoint.hpp).
  nlohmann::ordered_json identity() const { return checkpoint_identity(state_); }
  void save_checkpoint(const std::filesystem::path& path) const {
    save_trainer_checkpoint(state_, path);
  }
  const RestoredCheckpoint& load_checkpoint(const std::filesystem::path& path) {
    return resumed_.emplace(load_trainer_checkpoint(state_, path));
  }

  // The whole job (run_loop.hpp): trains to --steps; 0 when done, 128 + signal when stopped
  // (130 for request_stop()). after_step runs after every optimizer step.
  int run(const StepObserver& after_step = {}) {
    return run_training(state_, control_, resumed_, after_step);
  }

  std::string describe() const { return describe_run(state_, resumed_); }
  static std::string describe(const SplitEval& e, const Split& s) { return describe_eval(e, s); }

 private:
  const RunConfig cfg_;
  const std::shared_ptr<DataParallel> dp_;
  const TrainingData data_;
  TrainState state_;
  RunControl control_;
  std::optional<RestoredCheckpoint> resumed_;
};

}  // namespace hafrm::examples::rm
