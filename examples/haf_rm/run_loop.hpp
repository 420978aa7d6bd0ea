// run_loop.hpp: the whole haf_rm training job around the step: the run's description, progress
// and metrics records, periodic evaluation and checkpoints, stopping early when the run control
// says so (SIGINT/SIGTERM or a request through the API), and the final evaluation with
// summary.json. Under data parallelism every rank runs this loop; rank 0 alone prints and writes
// files. Everything printed goes through one Progress; the texts and records come from
// run_report.hpp.
//
//   RunControl control;
//   int rc = hafrm::examples::rm::run_training(state, control, /*resumed=*/std::nullopt, {});
#pragma once

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint.hpp"
#include "evaluation.hpp"
#include "metrics.hpp"
#include "progress.hpp"
#include "run_control.hpp"
#include "run_report.hpp"
#include "step.hpp"
#include "train_state.hpp"
#include "trainer_checkpoint.hpp"

namespace hafrm::examples::rm {

// Called by the run loop after every optimizer step with that step's statistics.
using StepObserver = std::function<void(const StepStats&)>;

// Trains to --steps with progress, metrics, periodic evaluation and checkpoints. `resumed`: what
// the state was restored from (nullopt for a fresh run). `after_step` (may be empty) runs after
// every optimizer step. `control` is read after each step, once `after_step` has run; SIGINT and
// SIGTERM feed it while the loop runs. When it asks for a stop, writes a checkpoint and returns
// control.exit_code() (128 + signal, 130 for an API request). Returns 0 when training finished,
// after the final evaluation and summary.json.
inline int run_training(TrainState& st, RunControl& control,
                        const std::optional<RestoredCheckpoint>& resumed,
                        const StepObserver& after_step) {
  const TrainConfig& cfg = st.config().options();
  const bool implicit = st.config().objective().score_is_implicit;
  const auto wall0 = std::chrono::steady_clock::now();
  const std::filesystem::path out(cfg.out_dir);
  const auto ckpt = out / "checkpoint.pt";
  std::filesystem::create_directories(out);
  const bool lead = st.is_lead();  // the one rank that writes and prints
  const auto stale =
      lead ? remove_stale_checkpoint_temporaries(ckpt) : std::vector<std::filesystem::path>{};
  MetricsLog metrics =
      lead ? MetricsLog(cfg.metrics_path.empty() ? out / "metrics.jsonl"
                                                 : std::filesystem::path(cfg.metrics_path),
                        resumed ? resumed->step : -1)
           : MetricsLog();
  Progress progress(lead ? Progress::resolve(cfg.progress) : Progress::Mode::kNone, cfg.steps,
                    st.step());
  StopSignals signals(control);

  progress.line(describe_run(st, resumed));
  if (resumed)
    if (const auto note = resume_note(*resumed, cfg.steps); !note.empty()) progress.line(note);
  for (const auto& path : stale)
    progress.line("note: removed " + path.string() + ", left by a killed checkpoint write");
  if (!resumed && std::filesystem::exists(ckpt))
    progress.line("note: " + ckpt.string() + " exists and will be overwritten (pass --resume " +
                  ckpt.string() + " to continue it)");

  const auto evaluate_all = [&](bool verbose) {
    std::vector<SplitEval> res;
    for (const auto* s : {&st.data().eval, &st.data().ood})
      if (s->has_value()) {
        res.push_back(evaluate_split(st, **s));
        metrics.write(eval_record(st, res.back()));
        if (verbose) progress.line(describe_eval(res.back(), **s));
      }
    return res;
  };

  // Metrics records average the steps since the last one; the bar shows running averages.
  StepStats window;
  int64_t in_window = 0;
  double ema_loss = std::nan(""), ema_acc = std::nan("");
  while (st.step() < cfg.steps) {
    const auto s = train_step(st);
    const double acc = implicit ? s.implicit_acc : s.reward_acc;
    ema_loss = std::isnan(ema_loss) ? s.loss : 0.95 * ema_loss + 0.05 * s.loss;
    ema_acc = std::isnan(ema_acc) ? acc : 0.95 * ema_acc + 0.05 * acc;
    window.loss += s.loss, window.reward_loss += s.reward_loss;
    window.policy_loss += s.policy_loss, window.grad_norm += s.grad_norm;
    window.reward_acc += s.reward_acc, window.implicit_acc += s.implicit_acc;
    window.tokens += s.tokens, window.positions += s.positions;
    ++in_window;
    progress.update(st.step(),
                    "loss " + detail::fmt("%.4f", ema_loss) +
                        (s.sequence ? std::string() : " acc " + detail::fmt("%.3f", ema_acc)));
    if (st.step() % cfg.log_every == 0 || st.step() == cfg.steps) {
      metrics.write(train_record(st, window, in_window, s));
      if (progress.mode() == Progress::Mode::kPlain && s.sequence) {
        const double k = 1.0 / static_cast<double>(in_window);
        progress.line("step " + std::to_string(st.step()) + "/" + std::to_string(cfg.steps) +
                      "  loss " + detail::fmt("%.4f", window.loss * k) + "  lr " +
                      detail::fmt("%.2e", s.lr) + "  " +
                      detail::fmt("%.1f", progress.rate(st.step())) + " it/s  ETA " +
                      progress.eta(st.step()));
      } else if (progress.mode() == Progress::Mode::kPlain) {
        const double k = 1.0 / static_cast<double>(in_window);
        // A reward-only run has no policy loss and no implicit reward to show.
        const std::string policy =
            s.policy_measured ? "  policy_loss " + detail::fmt("%.4f", window.policy_loss * k)
                              : std::string();
        const std::string implicit_acc =
            s.policy_measured ? "  implicit_acc " + detail::fmt("%.3f", window.implicit_acc * k)
                              : std::string();
        progress.line("step " + std::to_string(st.step()) + "/" + std::to_string(cfg.steps) +
                      "  loss " + detail::fmt("%.4f", window.loss * k) + "  reward_loss " +
                      detail::fmt("%.4f", window.reward_loss * k) + policy + "  acc " +
                      detail::fmt("%.3f", window.reward_acc * k) + implicit_acc + "  lr " +
                      detail::fmt("%.2e", s.lr) + "  " +
                      detail::fmt("%.1f", progress.rate(st.step())) + " it/s  ETA " +
                      progress.eta(st.step()));
      }
      window = {};
      in_window = 0;
    }
    if (after_step) after_step(s);
    // Under data parallelism every rank stops at the same step (one rank asked suffices).
    const bool stop = control.stop_requested();
    if (auto* dp = st.data_parallel(); dp ? dp->any(stop) : stop) {
      save_trainer_checkpoint(st, ckpt);
      progress.line("interrupted by " + control.cause() + " at step " + std::to_string(st.step()) +
                    ": checkpoint written to " + ckpt.string() +
                    "; continue with the same arguments plus --resume " + ckpt.string());
      progress.finish();
      return control.exit_code();
    }
    if (cfg.checkpoint_every > 0 && st.step() % cfg.checkpoint_every == 0 && st.step() < cfg.steps)
      save_trainer_checkpoint(st, ckpt);
    if (cfg.eval_every > 0 && st.step() % cfg.eval_every == 0 && st.step() < cfg.steps)
      evaluate_all(progress.mode() == Progress::Mode::kPlain);
  }
  progress.finish();

  save_trainer_checkpoint(st, ckpt);
  const auto results = evaluate_all(true);
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  if (lead)
    std::ofstream(out / "summary.json") << summary_json(st, resumed, wall, results).dump(2) << "\n";
  progress.line(describe_final(st, wall, results));
  return 0;
}

}  // namespace hafrm::examples::rm
