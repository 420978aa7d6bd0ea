// run_report.hpp: what a haf_rm run reports, as values the run loop prints or writes: the run's
// description, the metrics records of a log interval and of an evaluation, summary.json and the
// final line. Every function reads the state and returns text or JSON; none prints.
//
//   std::string head = hafrm::examples::rm::describe_run(state, /*resumed=*/std::nullopt);
//   metrics.write(hafrm::examples::rm::eval_record(state, eval_result));
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evaluation.hpp"
#include "progress.hpp"
#include "step.hpp"
#include "train_state.hpp"
#include "trainer_checkpoint.hpp"

namespace hafrm::examples::rm {

// The lines a run starts with: objective, model, data, optimisation, data parallelism, resume.
inline std::string describe_run(const TrainState& st,
                                const std::optional<RestoredCheckpoint>& resumed) {
  const TrainConfig& cfg = st.config().options();
  const ObjectiveSpec& spec = st.config().objective();
  const TrainingData& data = st.data();
  const DataParallel* dp = st.data_parallel();
  int64_t params = 0;
  for (const auto& p : st.model()->parameters()) params += p.numel();
  const auto& mc = st.model()->config;
  std::string s =
      "haf_rm: objective " + spec.objective +
      (spec.sequence ? std::string(spec.objective == "lm"
                                       ? " (next-token loss over every token; LM head only)\n"
                                       : " (next-token loss over the responses given their "
                                         "prompts; LM head only)\n")
                     : " (reward " + spec.reward_loss + ", policy " + spec.policy_loss +
                           ", weighting " + spec.weighting + ")\n");
  s += "  model: " + std::to_string(mc.n_layers) + " layers, d " + std::to_string(mc.d_model) +
       ", " + std::to_string(mc.n_heads) + " heads, " + mc.positions + ", vocab " +
       std::to_string(mc.vocab_size) + " (" + data.tokenizer->name() + "), " +
       std::to_string(params) + " parameters, " + cfg.device + ", " +
       std::to_string(torch::get_num_threads()) + " threads\n";
  s += "  data: train " + std::to_string(data.train.size());
  if (data.eval) s += ", eval " + std::to_string(data.eval->size());
  if (data.ood) s += ", ood " + std::to_string(data.ood->size());
  s += std::string(" ") + data.train.unit();
  for (const Split* sp : std::initializer_list<const Split*>{
           &data.train, data.eval ? &*data.eval : nullptr, data.ood ? &*data.ood : nullptr}) {
    if (sp && sp->report.skipped > 0) s += "\n  " + sp->report.summary();
    if (sp && sp->truncated > 0)
      s += "\n  " + sp->path + ": " + std::to_string(sp->truncated) + " of " +
           std::to_string(sp->size()) + " sequences cut to --max-length " +
           std::to_string(cfg.max_length);
  }
  if (!st.init_description().empty()) s += "\n  initial weights: " + st.init_description();
  s += "\n  steps " + std::to_string(cfg.steps) + " x batch " + std::to_string(cfg.batch_size) +
       " x accum " + std::to_string(cfg.grad_accum) + ", lr " + detail::fmt("%g", cfg.lr) +
       ", seed " + std::to_string(cfg.seed) +
       (cfg.precision != "fp32" ? ", precision " + cfg.precision + " (autocast)" : std::string());
  if (st.row_length() > 0)
    s += "\n  packing: rows of " + std::to_string(st.row_length()) +
         " tokens (the longest training sequence), attention inside each sequence" +
         (cfg.pack_tokens > 0
              ? ", micro-batches of at most " + std::to_string(cfg.pack_tokens) + " tokens"
              : std::string());
  if (dp && dp->vocab_parallel()) {
    const auto V = mc.vocab_size;
    const auto [v0, v1] = dp->vocab_range(V);
    s += "\n  vocab parallel: " + std::to_string(dp->world_size()) + " processes (" +
         dp->backend_name() + "), the LM head split over groups of " +
         std::to_string(dp->head_world_size()) + " (rows [" + std::to_string(v0) + ", " +
         std::to_string(v1) + ") of " + std::to_string(V) + " on rank 0), " +
         std::to_string(st.world()) + " group(s) data parallel, global batch " +
         std::to_string(st.global_batch()) + ", " + std::to_string(dp->num_buckets()) +
         " gradient buckets, " + std::to_string(dp->allreduce_bytes_per_step()) +
         " bytes all-reduced per micro-step, " + std::to_string(dp->head_grad_bytes_per_step()) +
         " bytes of LM-head gradient summed per step";
  } else if (dp) {
    s += "\n  data parallel: " + std::to_string(st.world()) + " processes (" + dp->backend_name() +
         "), global batch " + std::to_string(st.global_batch()) + ", " +
         std::to_string(dp->num_buckets()) + " gradient buckets, " +
         std::to_string(dp->allreduce_bytes_per_step()) + " bytes all-reduced per micro-step";
  }
  if (st.reward_only())
    s += "\n  reward-only: the policy term never has a weight, so no reference model, no LM head "
         "and no implicit reward";
  if (resumed)
    s += "\n  resumed from " + resumed->path.string() + " at step " + std::to_string(resumed->step);
  return s;
}

// The metrics record of one log interval: `sum` holds the sums of the `steps` StepStats since
// the last record, `last` the latest one (its learning rate and weights are logged as they are).
inline nlohmann::ordered_json train_record(const TrainState& st, const StepStats& sum,
                                           int64_t steps, const StepStats& last) {
  const double k = 1.0 / static_cast<double>(steps);
  if (st.sequence_objective())  // a next-token loss: no pair statistic exists
    return {{"step", st.step()},
            {"split", "train"},
            {"time_s", st.train_seconds()},
            {"loss", sum.loss * k},
            {"grad_norm", sum.grad_norm * k},
            {"lr", last.lr}};
  const bool implicit = st.config().objective().score_is_implicit;
  // A reward-only run computes no policy loss and no implicit reward: those keys are left out.
  const bool policy = !st.reward_only();
  nlohmann::ordered_json rec = {{"step", st.step()},
                                {"split", "train"},
                                {"time_s", st.train_seconds()},
                                {"loss", sum.loss * k},
                                {"reward_loss", sum.reward_loss * k}};
  if (policy) rec["policy_loss"] = sum.policy_loss * k;
  rec["reward_acc"] = sum.reward_acc * k;
  if (policy) rec["implicit_acc"] = sum.implicit_acc * k;
  rec["score_acc"] = (implicit ? sum.implicit_acc : sum.reward_acc) * k;
  rec["grad_norm"] = sum.grad_norm * k;
  rec["lr"] = last.lr;
  // Tokens per step (both sides of every pair, all ranks) and the share of the positions the
  // model computed that held no token (padding, or a packed row's unused tail).
  rec["tokens"] = sum.tokens * k;
  rec["padding"] = sum.positions > 0 ? 1.0 - sum.tokens / sum.positions : 0.0;
  rec["w_reward"] = last.w_reward;
  rec["alpha"] = last.alpha;
  return rec;
}

// The metrics record of one evaluation. The implicit-reward fields are left out (absent, not 0)
// where the split had no implicit reward (SplitEval::implicit_measured).
inline nlohmann::ordered_json eval_record(const TrainState& st, const SplitEval& e) {
  if (e.lm)
    return {{"step", st.step()},
            {"split", e.split},
            {"time_s", st.train_seconds()},
            {"nll", e.lm->nll},
            {"ppl", std::exp(e.lm->nll)},
            {"tokens", e.lm->tokens},
            {"sequences", e.lm->sequences}};
  const bool imp = e.implicit_measured;
  nlohmann::ordered_json rec = {{"step", st.step()},
                                {"split", e.split},
                                {"time_s", st.train_seconds()},
                                {"reward_acc", e.all.reward}};
  if (imp) rec["implicit_acc"] = e.all.implicit;
  rec["score_acc"] = e.score;
  rec["pairs"] = e.all.n;
  for (const auto& [k, a] : e.by_kind) {
    rec["reward_acc_" + k] = a.reward;
    if (imp) rec["implicit_acc_" + k] = a.implicit;
  }
  if (e.gold) {
    rec["gold_reward_acc"] = e.gold->reward;
    if (imp) rec["gold_implicit_acc"] = e.gold->implicit;
    rec["gold_score_acc"] = e.gold_score;
  }
  return rec;
}

// One split's block of summary.json (implicit fields absent where not measured).
inline nlohmann::ordered_json split_summary_json(const SplitEval& e) {
  if (e.lm)
    return {{"sequences", e.lm->sequences},
            {"tokens", e.lm->tokens},
            {"nll", e.lm->nll},
            {"ppl", std::exp(e.lm->nll)}};
  const bool imp = e.implicit_measured;
  nlohmann::ordered_json j = {{"pairs", e.all.n}, {"reward_acc", e.all.reward}};
  if (imp) j["implicit_acc"] = e.all.implicit;
  j["score_acc"] = e.score;
  for (const auto& [k, a] : e.by_kind) {
    j["by_kind"][k] = {{"pairs", a.n}, {"reward_acc", a.reward}};
    if (imp) j["by_kind"][k]["implicit_acc"] = a.implicit;
  }
  if (e.gold) {
    j["gold"] = {{"pairs", e.gold->n}, {"reward_acc", e.gold->reward}};
    if (imp) j["gold"]["implicit_acc"] = e.gold->implicit;
    j["gold"]["score_acc"] = e.gold_score;
  }
  return j;
}

// summary.json: the run, then per evaluated split its accuracies.
inline nlohmann::ordered_json summary_json(const TrainState& st,
                                           const std::optional<RestoredCheckpoint>& resumed,
                                           double wall_seconds,
                                           const std::vector<SplitEval>& results) {
  const ObjectiveSpec& spec = st.config().objective();
  nlohmann::ordered_json summary = {{"objective", spec.objective},
                                    {"score", spec.sequence            ? "nll"
                                              : spec.score_is_implicit ? "implicit"
                                                                       : "reward"},
                                    {"seed", st.config().options().seed},
                                    {"steps", st.step()},
                                    {"train_seconds", st.train_seconds()},
                                    {"wall_seconds", wall_seconds},
                                    {"resumed_from", resumed ? resumed->step : int64_t{-1}},
                                    {"identity", checkpoint_identity(st)}};
  for (const auto& e : results) summary[e.split] = split_summary_json(e);
  return summary;
}

// The last line of a finished run: each split's score (and gold score), training and wall time.
inline std::string describe_final(const TrainState& st, double wall_seconds,
                                  const std::vector<SplitEval>& results) {
  const ObjectiveSpec& spec = st.config().objective();
  std::string line = "final " + spec.objective + " (score: " +
                     (spec.sequence            ? "next-token NLL"
                      : spec.score_is_implicit ? "implicit reward"
                                               : "reward head") +
                     ")";
  for (const auto& e : results) {
    if (e.lm) {
      line += "  " + e.split + " " + detail::fmt("%.4f", e.lm->nll);
      continue;
    }
    line += "  " + e.split + " " + detail::fmt("%.3f", e.score);
    if (e.gold) line += " (gold " + detail::fmt("%.3f", e.gold_score) + ")";
  }
  return line + "  train " + format_duration(st.train_seconds()) + ", wall " +
         format_duration(wall_seconds);
}

}  // namespace hafrm::examples::rm
