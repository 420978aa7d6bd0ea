// train_state.hpp: the mutable state of one haf_rm run (TrainState) -- the model, its frozen
// reference, AdamW, the data order, the counters and the cached reference log-probs, i.e. what a
// checkpoint holds -- and the forward passes that the step, the evaluation and the reference
// log-probs share.
//
// The state reads the run's resolved config and splits (const, owned by trainer.hpp's Trainer)
// and owns everything it writes. Its members are private: train_step (step.hpp) advances them and
// load_trainer_checkpoint (trainer_checkpoint.hpp) restores them, as the two friends below; every
// other reader goes through the const accessors. set_training(), forward() and split_refs()
// switch dropout, run the models and fill the reference log-prob cache; they change no weight,
// counter or data order.
//
// Construction does exactly what a fresh run and a resumed run have in common, in an order that
// the initial weights depend on (seed, model, reference copy, optimizer). start_fresh() or a
// checkpoint load comes after.
//
// Reward-only runs: when the objective's weighting never gives the policy term a weight
// (HybridLoss::needs_policy() false: bt with any reward loss), there is no reference model and
// no reference log-prob, the forward passes run the model with hafrm::Heads::kReward (no final
// norm, no LM head), and the LM head and final norm are frozen (they get no gradient).
//
// Sequence runs (--objective lm, sft): the splits hold single sequences (sequence_data.hpp), the
// loss is the mean next-token NLL of their labelled tokens, there is no reference, and the reward
// head is frozen at its initial zero, so such a checkpoint starts a reward-model run
// (--init-from) exactly as a fresh one would start its reward head.
//
// Initial weights (--init-from, init_from.hpp): copied over the seeded ones before the reference
// is made, except the reward head, which stays at zero.
//
// Packing (--packing, packing.hpp): the step's forward runs on packed micro-batches
// (forward_packed(), rows of row_length() tokens); the evaluation and the reference log-probs
// stay padded. Either way the same numbers, to float round-off.
//
// Precision (--precision, precision.hpp): every forward pass here -- the step's, the evaluation's
// and the reference log-probs' -- runs under the run's precision, so the evaluation measures the
// function that was trained, and the reference log-probs come from the same numerics as the
// policy's: the implicit reward (policy minus reference log-probs) carries no float32-vs-bfloat16
// offset. The backward passes run outside autocast, on the graph the forward recorded; the
// weights and AdamW's state are float32 either way.
//
//   hafrm::examples::rm::TrainState st(cfg, data, /*dp=*/nullptr);
//   st.start_fresh();
//   auto f = st.forward(data.train, st.train_refs(), {0, 1, 2, 3});
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <hafrm/model/pair_forward.hpp>

#include "batch_order.hpp"
#include "distributed.hpp"
#include "initial_weights.hpp"
#include "losses.hpp"
#include "model.hpp"
#include "packing.hpp"
#include "precision.hpp"
#include "run_config.hpp"
#include "sequence_data.hpp"
#include "training_data.hpp"

namespace hafrm::examples::rm {

// Summed reference log-probs of every pair of a split: {chosen, rejected}.
using RefSums = std::pair<torch::Tensor, torch::Tensor>;

// DPO's implicit reward margin, up to the factor beta > 0 (which does not change its sign):
// (logp_c - ref_c) - (logp_r - ref_r).
inline torch::Tensor implicit_margin(const hafrm::PairForward& f) {
  const auto& p = f.policy;
  return (p.policy_chosen - p.reference_chosen) - (p.policy_rejected - p.reference_rejected);
}

// The two functions that write the state (step.hpp, trainer_checkpoint.hpp).
struct StepStats;
struct RestoredCheckpoint;
class TrainState;
inline StepStats train_step(TrainState& st);
inline RestoredCheckpoint load_trainer_checkpoint(TrainState& st,
                                                  const std::filesystem::path& path);

class TrainState {
 public:
  // `cfg` and `data` must outlive the state. dp: null for one process; see distributed.hpp.
  // init: the --init-from weights (init_from.hpp), or nullopt for the seeded random ones.
  TrainState(const RunConfig& cfg, const TrainingData& data, DataParallel* dp,
             const std::optional<InitialWeights>& init = std::nullopt)
      : cfg_(cfg),
        data_(data),
        dp_(dp),
        sequence_(cfg.objective().sequence),
        objective_(sequence_ ? std::nullopt
                             : std::optional<HybridObjective>(make_objective(cfg.objective()))),
        reward_only_(!sequence_ && !objective_->needs_policy()),
        bf16_(is_bf16(cfg.options().precision)) {
    const TrainConfig& o = cfg.options();
    if (o.threads > 0) torch::set_num_threads(o.threads);
    forward_options_ = cfg.forward_options();
    forward_options_.pad_id = data.tokenizer->pad_id();
    if (reward_only_) forward_options_.heads = hafrm::Heads::kReward;

    // The initial weights depend on the seed only; the reference is a frozen copy of them.
    torch::manual_seed(o.seed);
    ModelConfig mc = o.model;
    mc.vocab_size = data.tokenizer->vocab_size();
    model_ = HafTransformer(mc);
    if (init) load_initial(*init);
    model_->to(cfg.device());
    if (sequence_) {
      for (auto& p : model_->score->parameters()) p.requires_grad_(false);
    } else if (reward_only_) {
      for (torch::nn::Module* head :
           {static_cast<torch::nn::Module*>(model_->final_norm.ptr().get()),
            static_cast<torch::nn::Module*>(model_->lm_head.ptr().get())})
        for (auto& p : head->parameters()) p.requires_grad_(false);
    } else {
      reference_ = frozen_copy(model_);
    }
    if (dp_ && dp_->vocab_parallel() && !reward_only_) {
      // Every rank computes its rows of the LM head, for the policy and the reference alike.
      const auto [v0, v1] = dp_->vocab_range(mc.vocab_size);
      forward_options_.model_logprobs =
          dp_->attach_vocab_parallel(mc.vocab_size, model_->lm_head->weight);
      auto hook = [d = dp_](const torch::Tensor& x) { return d->reduce_grad_over_shards(x); };
      model_->shard_lm_head(v0, v1, hook);
      if (reference_) reference_->shard_lm_head(v0, v1, hook);
    }
    // --precision bf16: the LM head's input and weight reach the fused path in bfloat16
    // (precision.hpp), for the policy and the reference alike.
    if (bf16_) forward_options_.model_logprobs = bf16_lm_head(forward_options_.model_logprobs);
    // The packed step's counterparts (per-token rows; packing.hpp): the same two layers.
    if (o.packing && !reward_only_) {
      hafrm::ModelTokenLogProbsFn rows;
      if (dp_ && dp_->vocab_parallel()) rows = dp_->vocab_parallel_token_logprobs();
      if (bf16_) rows = bf16_lm_head_rows(std::move(rows));
      forward_options_.model_token_logprobs = std::move(rows);
    }
    if (dp_) dp_->attach(model_->parameters());

    // Weight decay on weight matrices only; biases and LayerNorm parameters (1-d) are not
    // decayed, as usual for transformers. AdamW skips a parameter without a gradient (the frozen
    // heads of a reward-only run): no update, no decay.
    std::vector<torch::Tensor> decay, no_decay;
    for (auto& p : model_->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
    auto opts = [&](double wd) {
      return std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(o.lr).eps(o.adam_eps).weight_decay(wd));
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, opts(o.weight_decay));
    groups.emplace_back(no_decay, opts(0.0));
    optimizer_ = std::make_unique<torch::optim::AdamW>(std::move(groups));

    batches_.seed(o.seed);

    if (o.packing) {
      const SplitLengths l = split_lengths(data.train);
      row_length_ = l.longest_sequence;
      if (o.pack_tokens > 0 && o.pack_tokens < l.longest_pair)
        throw std::invalid_argument(
            "--pack-tokens " + std::to_string(o.pack_tokens) + " is below the longest pair of " +
            data.train.path + " (" + std::to_string(l.longest_pair) +
            " tokens, both sides): every micro-batch must hold at least one whole pair");
    }
  }
  TrainState(const TrainState&) = delete;
  TrainState& operator=(const TrainState&) = delete;

  // A run from step 0: the first epoch's order and, with --reference precompute, the training
  // split's reference log-probs (a resumed run reads both from its checkpoint instead).
  void start_fresh() {
    batches_.new_epoch(static_cast<int64_t>(data_.train.size()));
    if (reference_ && cfg_.precompute_reference()) train_refs_ = reference_sums(data_.train);
  }

  // ---- the run's read-only context --------------------------------------------------------------
  const RunConfig& config() const { return cfg_; }
  const TrainingData& data() const { return data_; }
  DataParallel* data_parallel() const { return dp_; }
  // The processes that split the batch (under --vocab-parallel, one per LM-head group).
  int world() const { return dp_ ? dp_->data_world_size() : 1; }
  int64_t global_batch() const { return cfg_.options().batch_size * world(); }
  // This rank's share [first, last) of n items (all of them for one process).
  std::pair<int64_t, int64_t> share(int64_t n) const {
    return dp_ ? dp_->share(n) : std::pair<int64_t, int64_t>{0, n};
  }
  // The rank that prints and writes files (every rank of one process).
  bool is_lead() const { return !dp_ || dp_->rank() == 0; }

  // ---- the state, read-only
  // ----------------------------------------------------------------------
  int64_t step() const { return step_; }                   // optimizer steps done
  double train_seconds() const { return train_seconds_; }  // time spent in train_step
  const HafTransformer& model() const { return model_; }
  // The frozen reference; null in a reward-only run.
  const HafTransformer& reference() const { return reference_; }
  // No policy term at any step: no reference, no LM head, no implicit reward (see the top).
  bool reward_only() const { return reward_only_; }
  // --objective lm or sft: single sequences, a next-token loss, no reward (see the top).
  bool sequence_objective() const { return sequence_; }
  // The --init-from weights' fingerprint and description; "" for a run from random weights.
  const std::string& init_fingerprint() const { return init_fingerprint_; }
  const std::string& init_description() const { return init_description_; }
  const torch::optim::AdamW& optimizer() const { return *optimizer_; }
  const BatchOrder& batch_order() const { return batches_; }
  // --packing: the row length of the packed micro-batches (the training split's longest
  // sequence); 0 without packing.
  int64_t row_length() const { return row_length_; }
  // With --reference precompute; undefined tensors otherwise (and in a reward-only run).
  const RefSums& train_refs() const { return train_refs_; }

  // ---- forward passes
  // ---------------------------------------------------------------------------- Dropout on
  // (training) or off (evaluation).
  void set_training(bool on) { on ? model_->train() : model_->eval(); }

  // The policy and reward forward of pairs `idx` of `split`, against the cached reference sums
  // when there are any and the frozen reference model otherwise; rewards only in a reward-only
  // run (f.policy left empty).
  // Under --precision bf16 the passes run under autocast and every tensor the objective reads
  // comes back float32 (precision.hpp), so the losses reduce in float32.
  // positions (optional): set to the token positions the model computed, padding included.
  hafrm::PairForward forward(const Split& split, const RefSums& refs,
                             const std::vector<int64_t>& idx, int64_t* positions = nullptr) {
    auto batch = make_batch(split, idx, data_.tokenizer->pad_id(), cfg_.device());
    if (positions) *positions = 2 * batch.chosen_ids.numel();
    return run_pair_forward(batch, refs, idx);
  }

  // forward() over pairs `idx` packed into rows of row_length() tokens (--packing,
  // packing.hpp): the same numbers to float round-off, without the padding.
  hafrm::PairForward forward_packed(const Split& split, const RefSums& refs,
                                    const std::vector<int64_t>& idx, int64_t* positions = nullptr) {
    auto batch =
        make_packed_batch(split, idx, row_length_, data_.tokenizer->pad_id(), cfg_.device());
    if (positions) *positions = batch.input_ids.numel();
    return run_pair_forward(batch, refs, idx);
  }

  // The summed log-probs of sequences `idx` of a sequence split and how many tokens they score:
  // {sum over the batch (differentiable), scored tokens}.
  std::pair<torch::Tensor, int64_t> sequence_logprobs(const Split& split,
                                                      const std::vector<int64_t>& idx) {
    const auto b = make_sequence_batch(split, idx, data_.tokenizer->pad_id(), cfg_.device());
    hafrm::SequenceLogProbs lp;
    {
      AutocastGuard autocast(cfg_.device().type(), bf16_);
      const auto out = hafrm::model_forward(model_, b.ids, b.mask);
      lp = hafrm::detail::model_sequence_logprobs(out, b.labels, forward_options_.logprobs,
                                                  forward_options_.model_logprobs);
    }
    return {lp.sum.sum().to(torch::kFloat), lp.count.sum().item<int64_t>()};
  }

  // The reference sums of a split, computed on first use and kept (the reference never moves):
  // the training split's cached ones under --reference precompute; none without a reference.
  const RefSums& split_refs(const Split& split) {
    if (!reference_) return train_refs_;  // undefined tensors
    if (&split == &data_.train && train_refs_.first.defined()) return train_refs_;
    auto it = split_refs_cache_.find(&split);
    if (it == split_refs_cache_.end())
      it = split_refs_cache_.emplace(&split, reference_sums(split)).first;
    return it->second;
  }

 private:
  friend StepStats train_step(TrainState& st);
  friend RestoredCheckpoint load_trainer_checkpoint(TrainState& st,
                                                    const std::filesystem::path& path);

  // forward() and forward_packed() after building their batch (a hafrm::PreferenceBatch or a
  // hafrm::PackedPreferenceBatch of pairs `idx`): the cached reference sums attached, the pass
  // under the run's precision, the objective's inputs in float32.
  template <class Batch>
  hafrm::PairForward run_pair_forward(Batch& batch, const RefSums& refs,
                                      const std::vector<int64_t>& idx) {
    if (refs.first.defined() && !reward_only_) {
      auto ix = torch::tensor(idx, torch::kLong).to(cfg_.device());
      batch.reference_chosen = refs.first.index_select(0, ix);
      batch.reference_rejected = refs.second.index_select(0, ix);
    }
    constexpr bool packed = std::is_same_v<Batch, hafrm::PackedPreferenceBatch>;
    const bool live_reference = !reward_only_ && !refs.first.defined();
    hafrm::PairForward f;
    {
      AutocastGuard autocast(cfg_.device().type(), bf16_);
      if constexpr (packed)
        f = live_reference ? hafrm::forward_pair_packed(model_, reference_, batch, forward_options_)
                           : hafrm::forward_pair_packed(model_, batch, forward_options_);
      else
        f = live_reference ? hafrm::forward_pair(model_, reference_, batch, forward_options_)
                           : hafrm::forward_pair(model_, batch, forward_options_);
    }
    losses_in_float_(f);
    return f;
  }

  // The next micro-batch of this rank: its slice of the next global batch.
  std::vector<int64_t> next_indices() {
    const auto idx = batches_.next(global_batch(), static_cast<int64_t>(data_.train.size()));
    return dp_ ? dp_->slice(idx) : idx;
  }

  // Summed reference log-probs of every pair of a split. Under data parallelism each rank
  // computes its share and the sum over the ranks (of zeros elsewhere) completes the tensors.
  RefSums reference_sums(const Split& split) {
    const int64_t eval_batch = cfg_.options().eval_batch;
    const auto& device = cfg_.device();
    std::vector<torch::Tensor> c, r;
    const auto n = static_cast<int64_t>(split.pairs.size());
    const auto [first, last] = share(n);
    for (int64_t s = first; s < last; s += eval_batch) {
      std::vector<int64_t> idx;
      for (int64_t i = s; i < std::min(last, s + eval_batch); ++i) idx.push_back(i);
      const auto batch = make_batch(split, idx, data_.tokenizer->pad_id(), device);
      AutocastGuard autocast(device.type(), bf16_);
      auto [rc, rr] = hafrm::reference_logprobs(reference_, batch, forward_options_);
      c.push_back(rc.to(torch::kFloat)), r.push_back(rr.to(torch::kFloat));
    }
    if (!dp_) return {torch::cat(c), torch::cat(r)};
    const auto dtype = c.empty() ? torch::kFloat : c[0].scalar_type();
    auto both = torch::zeros({2, n}, torch::TensorOptions(torch::kDouble).device(device));
    if (!c.empty()) {
      both[0].narrow(0, first, last - first).copy_(torch::cat(c));
      both[1].narrow(0, first, last - first).copy_(torch::cat(r));
    }
    dp_->sum_(both);
    both = both.to(dtype);  // exact: each entry is one rank's value plus zeros
    return {both[0].clone(), both[1].clone()};
  }

  // Copies the --init-from weights into the model, all but the reward head ("score."), which
  // keeps its zero initialisation.
  void load_initial(const InitialWeights& init) {
    torch::NoGradGuard ng;
    auto src = init.model->named_parameters();
    for (auto& p : model_->named_parameters())
      if (!p.key().starts_with("score.")) p.value().copy_(src[p.key()]);
    init_fingerprint_ = init.fingerprint;
    init_description_ = init.source + " (objective " + init.objective +
                        (init.step >= 0 ? ", step " + std::to_string(init.step) : std::string()) +
                        ", template " + init.template_name + "; reward head reset to zero)";
  }

  const RunConfig& cfg_;
  const TrainingData& data_;
  DataParallel* dp_;
  const bool sequence_;
  const std::optional<HybridObjective> objective_;  // none for lm and sft
  const bool reward_only_;
  const bool bf16_;  // --precision bf16: the forward passes run under autocast (precision.hpp)
  std::string init_fingerprint_, init_description_;
  hafrm::PairForwardOptions forward_options_;  // set up by the constructor only
  HafTransformer model_{nullptr}, reference_{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  BatchOrder batches_;
  int64_t row_length_ = 0;  // --packing
  int64_t step_ = 0;
  double train_seconds_ = 0.0;
  RefSums train_refs_;
  std::map<const Split*, RefSums> split_refs_cache_;
};

}  // namespace hafrm::examples::rm
