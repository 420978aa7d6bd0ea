// run_loop.hpp: the whole haf_rm training job around the step: the run's description, progress
// and metrics records, periodic evaluation and checkpoints, SIGINT/SIGTERM handling, and the
// final evaluation with summary.json. Under data parallelism every rank runs this loop; rank 0
// alone prints and writes files.
//
//   int rc = hafrm::examples::rm::run_training(state, after_step, stop_requested);
#pragma once

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint.hpp"
#include "evaluation.hpp"
#include "metrics.hpp"
#include "progress.hpp"
#include "step.hpp"
#include "train_state.hpp"
#include "trainer_checkpoint.hpp"

namespace hafrm::examples::rm {

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

}  // namespace detail

// The lines a run starts with: objective, model, data, optimisation, data parallelism, resume.
inline std::string describe_run(const TrainState& st) {
  const auto& cfg = st.cfg;
  int64_t params = 0;
  for (const auto& p : st.model->parameters()) params += p.numel();
  const auto& mc = st.model->config;
  std::string s = "haf_rm: objective " + st.spec.objective + " (reward " + st.spec.reward_loss +
                  ", policy " + st.spec.policy_loss + ", weighting " + st.spec.weighting + ")\n";
  s += "  model: " + std::to_string(mc.n_layers) + " layers, d " + std::to_string(mc.d_model) +
       ", " + std::to_string(mc.n_heads) + " heads, " + mc.positions + ", vocab " +
       std::to_string(mc.vocab_size) + " (" + st.tokenizer->name() + "), " +
       std::to_string(params) + " parameters, " + cfg.device + ", " +
       std::to_string(torch::get_num_threads()) + " threads\n";
  s += "  data: train " + std::to_string(st.train.pairs.size());
  if (st.eval) s += ", eval " + std::to_string(st.eval->pairs.size());
  if (st.ood) s += ", ood " + std::to_string(st.ood->pairs.size());
  s += " pairs";
  for (const Split* sp : std::initializer_list<const Split*>{
           &st.train, st.eval ? &*st.eval : nullptr, st.ood ? &*st.ood : nullptr})
    if (sp && sp->report.skipped > 0) s += "\n  " + sp->report.summary();
  s += "\n  steps " + std::to_string(cfg.steps) + " x batch " + std::to_string(cfg.batch_size) +
       " x accum " + std::to_string(cfg.grad_accum) + ", lr " + detail::fmt("%g", cfg.lr) +
       ", seed " + std::to_string(cfg.seed);
  if (st.dp && st.dp->vocab_parallel()) {
    const auto V = st.model->config.vocab_size;
    const auto [v0, v1] = st.dp->vocab_range(V);
    s += "\n  vocab parallel: " + std::to_string(st.dp->world_size()) + " processes (" +
         st.dp->backend_name() + "), the LM head split over groups of " +
         std::to_string(st.dp->head_world_size()) + " (rows [" + std::to_string(v0) + ", " +
         std::to_string(v1) + ") of " + std::to_string(V) + " on rank 0), " +
         std::to_string(st.world()) + " group(s) data parallel, global batch " +
         std::to_string(st.global_batch()) + ", " + std::to_string(st.dp->num_buckets()) +
         " gradient buckets, " + std::to_string(st.dp->allreduce_bytes_per_step()) +
         " bytes all-reduced per micro-step, " + std::to_string(st.dp->head_grad_bytes_per_step()) +
         " bytes of LM-head gradient summed per step";
  } else if (st.dp)
    s += "\n  data parallel: " + std::to_string(st.world()) + " processes (" +
         st.dp->backend_name() + "), global batch " + std::to_string(st.global_batch()) + ", " +
         std::to_string(st.dp->num_buckets()) + " gradient buckets, " +
         std::to_string(st.dp->allreduce_bytes_per_step()) + " bytes all-reduced per micro-step";
  if (st.resumed_from >= 0)
    s += "\n  resumed from " + cfg.resume + " at step " + std::to_string(st.resumed_from);
  return s;
}

namespace detail {

// The metrics record of one evaluation.
inline nlohmann::ordered_json eval_record(const TrainState& st, const SplitEval& e) {
  nlohmann::ordered_json rec = {{"step", st.step},
                                {"split", e.split},
                                {"time_s", st.train_seconds},
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
  return rec;
}

// summary.json: the run, then per evaluated split its accuracies.
inline nlohmann::ordered_json summary_json(const TrainState& st, double wall_seconds,
                                           const std::vector<SplitEval>& results) {
  nlohmann::ordered_json summary = {{"objective", st.spec.objective},
                                    {"score", st.spec.score_is_implicit ? "implicit" : "reward"},
                                    {"seed", st.cfg.seed},
                                    {"steps", st.step},
                                    {"train_seconds", st.train_seconds},
                                    {"wall_seconds", wall_seconds},
                                    {"resumed_from", st.resumed_from},
                                    {"identity", checkpoint_identity(st)}};
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
  return summary;
}

}  // namespace detail

// Trains to cfg.steps with progress, metrics, periodic evaluation and checkpoints. after_step
// (may be empty) runs after every optimizer step; stop_requested is read after each one and may
// be set by after_step. On SIGINT/SIGTERM or a stop request, writes a checkpoint and returns
// 128 + signal (130 for a request). Returns 0 when training finished, after the final
// evaluation and summary.json.
inline int run_training(TrainState& st, const std::function<void(const StepStats&)>& after_step,
                        const bool& stop_requested) {
  const auto& cfg = st.cfg;
  const auto wall0 = std::chrono::steady_clock::now();
  const std::filesystem::path out(cfg.out_dir);
  const auto ckpt = out / "checkpoint.pt";
  std::filesystem::create_directories(out);
  const bool lead = !st.dp || st.dp->rank() == 0;  // the one rank that writes and prints
  if (lead)
    for (const auto& stale : remove_stale_checkpoint_temporaries(ckpt))
      st.notes.push_back("note: removed " + stale.string() + ", left by a killed checkpoint write");
  MetricsLog metrics =
      lead ? MetricsLog(cfg.metrics_path.empty() ? out / "metrics.jsonl"
                                                 : std::filesystem::path(cfg.metrics_path),
                        st.resumed_from)
           : MetricsLog();
  Progress progress(lead ? Progress::resolve(cfg.progress) : Progress::Mode::kNone, cfg.steps,
                    st.step);
  detail::StopSignals signals;

  progress.line(describe_run(st));
  for (const auto& n : st.notes) progress.line(n);
  if (st.resumed_from < 0 && std::filesystem::exists(ckpt))
    progress.line("note: " + ckpt.string() + " exists and will be overwritten (pass --resume " +
                  ckpt.string() + " to continue it)");

  auto evaluate_all = [&](bool verbose) {
    std::vector<SplitEval> res;
    for (const auto* s : {&st.eval, &st.ood})
      if (s->has_value()) {
        res.push_back(evaluate_split(st, **s));
        metrics.write(detail::eval_record(st, res.back()));
        if (verbose) progress.line(describe_eval(res.back(), **s));
      }
    return res;
  };

  // Metrics records average the steps since the last one; the bar shows running averages.
  StepStats window;
  int64_t in_window = 0;
  double ema_loss = std::nan(""), ema_acc = std::nan("");
  int exit_code = 0;
  while (st.step < cfg.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto s = train_step(st);
    st.train_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double acc = st.spec.score_is_implicit ? s.implicit_acc : s.reward_acc;
    ema_loss = std::isnan(ema_loss) ? s.loss : 0.95 * ema_loss + 0.05 * s.loss;
    ema_acc = std::isnan(ema_acc) ? acc : 0.95 * ema_acc + 0.05 * acc;
    window.loss += s.loss, window.reward_loss += s.reward_loss;
    window.policy_loss += s.policy_loss, window.grad_norm += s.grad_norm;
    window.reward_acc += s.reward_acc, window.implicit_acc += s.implicit_acc;
    ++in_window;
    progress.update(
        st.step, "loss " + detail::fmt("%.4f", ema_loss) + " acc " + detail::fmt("%.3f", ema_acc));
    if (st.step % cfg.log_every == 0 || st.step == cfg.steps) {
      const double k = 1.0 / static_cast<double>(in_window);
      nlohmann::ordered_json rec = {
          {"step", st.step},
          {"split", "train"},
          {"time_s", st.train_seconds},
          {"loss", window.loss * k},
          {"reward_loss", window.reward_loss * k},
          {"policy_loss", window.policy_loss * k},
          {"reward_acc", window.reward_acc * k},
          {"implicit_acc", window.implicit_acc * k},
          {"score_acc", (st.spec.score_is_implicit ? window.implicit_acc : window.reward_acc) * k},
          {"grad_norm", window.grad_norm * k},
          {"lr", s.lr},
          {"w_reward", s.w_reward},
          {"alpha", s.alpha}};
      metrics.write(rec);
      if (progress.mode() == Progress::Mode::kPlain)
        progress.line("step " + std::to_string(st.step) + "/" + std::to_string(cfg.steps) +
                      "  loss " + detail::fmt("%.4f", window.loss * k) + "  reward_loss " +
                      detail::fmt("%.4f", window.reward_loss * k) + "  policy_loss " +
                      detail::fmt("%.4f", window.policy_loss * k) + "  acc " +
                      detail::fmt("%.3f", window.reward_acc * k) + "  implicit_acc " +
                      detail::fmt("%.3f", window.implicit_acc * k) + "  lr " +
                      detail::fmt("%.2e", s.lr) + "  " +
                      detail::fmt("%.1f", progress.rate(st.step)) + " it/s  ETA " +
                      progress.eta(st.step));
      window = {};
      in_window = 0;
    }
    if (after_step) after_step(s);
    const int sig = detail::g_stop_signal.load();
    // Under data parallelism every rank stops at the same step (one signalled rank suffices).
    if (st.dp ? st.dp->any(sig != 0 || stop_requested) : (sig != 0 || stop_requested)) {
      save_trainer_checkpoint(st, ckpt);
      progress.line(std::string("interrupted by ") +
                    (sig == SIGTERM  ? "SIGTERM"
                     : sig == SIGINT ? "SIGINT"
                                     : "a stop request") +
                    " at step " + std::to_string(st.step) + ": checkpoint written to " +
                    ckpt.string() + "; continue with the same arguments plus --resume " +
                    ckpt.string());
      exit_code = 128 + (sig != 0 ? sig : SIGINT);
      break;
    }
    if (cfg.checkpoint_every > 0 && st.step % cfg.checkpoint_every == 0 && st.step < cfg.steps)
      save_trainer_checkpoint(st, ckpt);
    if (cfg.eval_every > 0 && st.step % cfg.eval_every == 0 && st.step < cfg.steps)
      evaluate_all(progress.mode() == Progress::Mode::kPlain);
  }
  progress.finish();
  if (exit_code != 0) return exit_code;

  save_trainer_checkpoint(st, ckpt);
  const auto results = evaluate_all(true);
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  if (lead)
    std::ofstream(out / "summary.json") << detail::summary_json(st, wall, results).dump(2) << "\n";
  std::string final_line = "final " + st.spec.objective + " (score: " +
                           (st.spec.score_is_implicit ? "implicit reward" : "reward head") + ")";
  for (const auto& e : results) {
    final_line += "  " + e.split + " " + detail::fmt("%.3f", e.score);
    if (e.gold) final_line += " (gold " + detail::fmt("%.3f", e.gold_score) + ")";
  }
  final_line += "  train " + format_duration(st.train_seconds) + ", wall " + format_duration(wall);
  progress.line(final_line);
  return 0;
}

}  // namespace hafrm::examples::rm
