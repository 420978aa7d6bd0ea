// evaluation.hpp: preference accuracy of the haf_rm trainer on a split, for the reward head and
// for DPO's implicit reward, overall, by the records' "corruption" kind, and against the hidden
// gold ordering where the records carry one (data/rules); for --objective lm and sft, the mean
// next-token NLL of a split's sequences instead.
//
//   const hafrm::examples::rm::Split& eval = *state.data().eval;
//   hafrm::examples::rm::SplitEval e = hafrm::examples::rm::evaluate_split(state, eval);
//   std::puts(hafrm::examples::rm::describe_eval(e, eval).c_str());
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "progress.hpp"
#include "train_state.hpp"

namespace hafrm::examples::rm {

struct Accuracy {
  int64_t n = 0;
  double reward = 0, implicit = 0;  // fraction of pairs with score(chosen) > score(rejected)
};

// A sequence split's next-token loss (--objective lm, sft).
struct SequenceEval {
  int64_t sequences = 0;
  int64_t tokens = 0;  // labelled tokens scored
  double nll = 0;      // mean NLL per scored token, nats
};

struct SplitEval {
  std::string split;
  // Set for a sequence split, whose evaluation is this alone (every pair field below stays 0).
  std::optional<SequenceEval> lm;
  Accuracy all;
  std::map<std::string, Accuracy> by_kind;  // "swap" / "substitute" on the synthetic data
  double score = 0;                         // the objective's score: reward or implicit
  // Accuracy against the hidden gold ordering (score(gold-better) > score(gold-worse)) over the
  // pairs whose records carry "gold_agrees" (data/rules); absent when none does.
  std::optional<Accuracy> gold;
  double gold_score = 0;  // the objective's score against the gold ordering
  // False where there is no reference model (a reward-only run, an exported model): every
  // "implicit" field is then 0 and reports leave it out.
  bool implicit_measured = true;
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

// Per pair of a split, whether each score ranks it: rows reward ok, implicit ok, reward
// reversed, implicit reversed (1 or 0), one column per pair; this process fills the columns of
// its share [first, last) in batches of `eval_batch` and leaves the others 0. `forward(idx)`
// returns the hafrm::PairForward of pairs idx; without `implicit` its policy fields may be
// undefined and the implicit rows stay 0.
template <class Forward>
torch::Tensor preference_flags(int64_t n, std::pair<int64_t, int64_t> share, int64_t eval_batch,
                               bool implicit, Forward&& forward) {
  auto flags = torch::zeros({4, n}, torch::kDouble);
  const auto [first, last] = share;
  for (int64_t s = first; s < last; s += eval_batch) {
    std::vector<int64_t> idx;
    for (int64_t i = s; i < std::min(last, s + eval_batch); ++i) idx.push_back(i);
    const hafrm::PairForward f = forward(idx);
    const auto len = static_cast<int64_t>(idx.size());
    flags[0].narrow(0, s, len).copy_(f.rewards.chosen > f.rewards.rejected);
    flags[2].narrow(0, s, len).copy_(f.rewards.rejected > f.rewards.chosen);
    if (implicit) {
      flags[1].narrow(0, s, len).copy_(implicit_margin(f) > 0);
      flags[3].narrow(0, s, len).copy_(implicit_margin(f) < 0);
    }
  }
  return flags;
}

// The accuracies of a split from its complete preference_flags. `implicit_score`: the objective
// ranks by the implicit reward; `implicit_measured`: the implicit rows were computed (a run or
// model without a reference has no implicit reward).
inline SplitEval summarize_flags(const Split& split, const torch::Tensor& flags,
                                 bool implicit_score, bool implicit_measured) {
  const auto n = static_cast<int64_t>(split.pairs.size());
  auto r = flags[0], m = flags[1];
  SplitEval e;
  e.split = split.name;
  e.implicit_measured = implicit_measured;
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
  e.score = implicit_score ? e.all.implicit : e.all.reward;
  if (split.gold.size() == split.pairs.size()) {
    const auto gr = gold_accuracy(split.gold, flags[0], flags[2]);
    const auto gm = gold_accuracy(split.gold, flags[1], flags[3]);
    if (gr.first > 0) {
      e.gold = Accuracy{gr.first, gr.second, gm.second};
      e.gold_score = implicit_score ? e.gold->implicit : e.gold->reward;
    }
  }
  return e;
}

// The mean next-token NLL of a sequence split's labelled tokens, without dropout; like
// evaluate_split it leaves the model in training mode and changes no state.
inline SplitEval evaluate_sequences(TrainState& st, const Split& split) {
  torch::NoGradGuard ng;
  st.set_training(false);
  const auto n = static_cast<int64_t>(split.size());
  const int64_t batch = st.config().options().eval_batch;
  // {sum of log-probs, tokens}; each rank sums its share, the sum over the ranks completes it.
  auto totals = torch::zeros({2}, torch::kDouble);
  const auto [first, last] = st.share(n);
  for (int64_t s = first; s < last; s += batch) {
    std::vector<int64_t> idx;
    for (int64_t i = s; i < std::min(last, s + batch); ++i) idx.push_back(i);
    const auto [logp, tokens] = st.sequence_logprobs(split, idx);
    totals[0] += logp.item<double>();
    totals[1] += static_cast<double>(tokens);
  }
  if (auto* dp = st.data_parallel()) dp->sum_(totals);
  st.set_training(true);
  SplitEval e;
  e.split = split.name;
  e.implicit_measured = false;
  const double tokens = totals[1].item<double>();
  e.lm = SequenceEval{n, static_cast<int64_t>(tokens),
                      tokens > 0 ? -totals[0].item<double>() / tokens : 0.0};
  return e;
}

// Preference accuracy on a split: strict r(chosen) > r(rejected), for the reward head and for
// the implicit reward beta * ((logp_c - ref_c) - (logp_r - ref_r)) (beta > 0 does not change
// the ranking; not measured in a reward-only run, which has no reference). A zero reward head
// (untrained, e.g. under dpo) scores 0 here, as in the paper.
// Runs the model without dropout and leaves it in training mode; changes no weight, counter or
// data order (it fills the state's reference log-prob cache on a split's first evaluation).
// A sequence split (--objective lm, sft) gets evaluate_sequences instead.
inline SplitEval evaluate_split(TrainState& st, const Split& split) {
  if (split.of_sequences()) return evaluate_sequences(st, split);
  auto& refs = st.split_refs(split);
  torch::NoGradGuard ng;
  st.set_training(false);
  const auto n = static_cast<int64_t>(split.pairs.size());
  // Each rank fills its share of the pairs; the sum over the ranks completes them.
  const bool implicit = !st.reward_only();
  auto flags = preference_flags(
      n, st.share(n), st.config().options().eval_batch, implicit,
      [&](const std::vector<int64_t>& idx) { return st.forward(split, refs, idx); });
  if (auto* dp = st.data_parallel()) dp->sum_(flags);
  st.set_training(true);
  return summarize_flags(split, flags, st.config().objective().score_is_implicit, implicit);
}

// One line for the log: "eval (N pairs, path): reward head acc ... | implicit reward acc ...".
inline std::string describe_eval(const SplitEval& e, const Split& s) {
  if (e.lm)
    return e.split + " (" + std::to_string(e.lm->sequences) + " sequences, " + s.path +
           "): next-token NLL " + detail::fmt("%.4f", e.lm->nll) + " (perplexity " +
           detail::fmt("%.3f", std::exp(e.lm->nll)) + ") over " + std::to_string(e.lm->tokens) +
           " tokens";
  auto kinds = [&](bool implicit) {
    std::string k;
    for (const auto& [name, a] : e.by_kind)
      k += (k.empty() ? " [" : ", ") + name + " " +
           detail::fmt("%.3f", implicit ? a.implicit : a.reward);
    return k.empty() ? k : k + "]";
  };
  const bool imp = e.implicit_measured;
  return e.split + " (" + std::to_string(e.all.n) + " pairs, " + s.path + "): reward head acc " +
         detail::fmt("%.3f", e.all.reward) + kinds(false) +
         (imp ? " | implicit reward acc " + detail::fmt("%.3f", e.all.implicit) + kinds(true)
              : std::string(" | implicit reward: none (no reference model)")) +
         (e.gold ? " | vs gold ordering: reward head " + detail::fmt("%.3f", e.gold->reward) +
                       (imp ? ", implicit " + detail::fmt("%.3f", e.gold->implicit) : "")
                 : std::string());
}

}  // namespace hafrm::examples::rm
