// train_state.hpp: everything one haf_rm run holds (tokenizer, splits, model, frozen reference,
// AdamW, objective, data order, counters), and the forward passes that the step, the evaluation
// and the reference log-probs share. A plain struct: step.hpp, evaluation.hpp,
// trainer_checkpoint.hpp and run_loop.hpp each work on it, and trainer.hpp's Trainer owns one.
//
// Construction does exactly what a fresh run and a resumed run have in common, in an order that
// the initial weights depend on (seed, model, reference copy, optimizer). Starting the first
// epoch (start_fresh) or loading a checkpoint (trainer_checkpoint.hpp) comes after.
//
//   hafrm::examples::rm::TrainState st(cfg, /*dp=*/nullptr);
//   st.start_fresh();
//   auto f = st.forward(st.train, st.train_refs, {0, 1, 2, 3});
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <hafrm/model/pair_forward.hpp>
#include <hafrm_examples/tokenizer.hpp>

#include "batch_order.hpp"
#include "config.hpp"
#include "data.hpp"
#include "distributed.hpp"
#include "losses.hpp"
#include "model.hpp"

namespace hafrm::examples::rm {

// Summed reference log-probs of every pair of a split: {chosen, rejected}.
using RefSums = std::pair<torch::Tensor, torch::Tensor>;

// DPO's implicit reward margin, up to the factor beta > 0 (which does not change its sign):
// (logp_c - ref_c) - (logp_r - ref_r).
inline torch::Tensor implicit_margin(const hafrm::PairForward& f) {
  const auto& p = f.policy;
  return (p.policy_chosen - p.reference_chosen) - (p.policy_rejected - p.reference_rejected);
}

struct TrainState {
  // dp: null for one process (exactly the single-process trainer); see distributed.hpp.
  TrainState(TrainConfig config, std::shared_ptr<DataParallel> data_parallel)
      : cfg(std::move(config)), dp(std::move(data_parallel)) {
    if (cfg.threads > 0) torch::set_num_threads(cfg.threads);
    if (cfg.device != "cpu" && !cfg.device.starts_with("cuda"))
      throw std::invalid_argument("--device must be cpu or cuda[:N], got \"" + cfg.device + "\"");
    if (cfg.device.starts_with("cuda") && !torch::cuda::is_available())
      throw std::runtime_error("--device " + cfg.device +
                               ": CUDA is not available (no GPU, or a CPU-only LibTorch)");
    device = torch::Device(cfg.device);
    validate_config(cfg);
    spec = resolve_objective(cfg.objective, cfg.reward_loss, cfg.policy_loss, cfg.weighting);
    objective = make_objective(spec);
    forward_options.readout = cfg.readout == "last-position" ? hafrm::RewardReadout::kLastPosition
                                                             : hafrm::RewardReadout::kLastNonPad;

    tokenizer = make_tokenizer(cfg.tokenizer);
    forward_options.pad_id = tokenizer->pad_id();
    if (cfg.logprob_backend == "reference")
      forward_options.logprobs.backend = hafrm::LogProbBackend::kReference;
    AssemblyOptions ao;
    ao.prompt_template = template_by_name(cfg.prompt_template);
    ao.max_length = cfg.max_length;
    ao.max_prompt_length = cfg.max_prompt_length;
    train = load_split("train", cfg.train_path, *tokenizer, ao, cfg.skip_bad);
    if (static_cast<int64_t>(train.pairs.size()) < global_batch())
      throw std::invalid_argument(
          cfg.train_path + " has " + std::to_string(train.pairs.size()) +
          " pairs, fewer than --batch-size " + std::to_string(cfg.batch_size) +
          (world() > 1 ? " x " + std::to_string(world()) + " processes" : std::string()));
    if (!cfg.eval_path.empty())
      eval = load_split("eval", cfg.eval_path, *tokenizer, ao, cfg.skip_bad);
    if (!cfg.ood_path.empty()) ood = load_split("ood", cfg.ood_path, *tokenizer, ao, cfg.skip_bad);

    // The initial weights depend on the seed only; the reference is a frozen copy of them.
    torch::manual_seed(cfg.seed);
    ModelConfig mc = cfg.model;
    mc.vocab_size = tokenizer->vocab_size();
    model = HafTransformer(mc);
    model->to(device);
    reference = frozen_copy(model);
    if (dp && dp->vocab_parallel()) {
      // Every rank computes its rows of the LM head, for the policy and the reference alike.
      const auto [v0, v1] = dp->vocab_range(mc.vocab_size);
      forward_options.model_logprobs =
          dp->attach_vocab_parallel(mc.vocab_size, model->lm_head->weight);
      auto hook = [d = dp.get()](const torch::Tensor& x) { return d->reduce_grad_over_shards(x); };
      model->shard_lm_head(v0, v1, hook);
      reference->shard_lm_head(v0, v1, hook);
    }
    if (dp) dp->attach(model->parameters());

    // Weight decay on weight matrices only; biases and LayerNorm parameters (1-d) are not
    // decayed, as usual for transformers.
    std::vector<torch::Tensor> decay, no_decay;
    for (auto& p : model->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
    auto opts = [&](double wd) {
      return std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(cfg.lr).eps(cfg.adam_eps).weight_decay(wd));
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, opts(cfg.weight_decay));
    groups.emplace_back(no_decay, opts(0.0));
    optimizer = std::make_unique<torch::optim::AdamW>(std::move(groups));

    batches.seed(cfg.seed);
  }
  // split_refs_cache is keyed by the address of this state's own splits.
  TrainState(const TrainState&) = delete;
  TrainState& operator=(const TrainState&) = delete;

  // A run from step 0: the first epoch's order and, with --reference precompute, the training
  // split's reference log-probs (a resumed run reads both from its checkpoint instead).
  void start_fresh() {
    batches.new_epoch(static_cast<int64_t>(train.pairs.size()));
    if (cfg.reference == "precompute") train_refs = reference_sums(train);
  }

  // The processes that split the batch (under --vocab-parallel, one per LM-head group).
  int world() const { return dp ? dp->data_world_size() : 1; }
  int64_t global_batch() const { return cfg.batch_size * world(); }
  // This rank's share [first, last) of n items (all of them for one process).
  std::pair<int64_t, int64_t> share(int64_t n) const {
    return dp ? dp->share(n) : std::pair<int64_t, int64_t>{0, n};
  }

  // The next micro-batch of this rank: its slice of the next global batch.
  std::vector<int64_t> next_indices() {
    const auto idx = batches.next(global_batch(), static_cast<int64_t>(train.pairs.size()));
    return dp ? dp->slice(idx) : idx;
  }

  // The policy and reward forward of pairs `idx` of `split`, against the cached reference sums
  // when there are any and the frozen reference model otherwise.
  hafrm::PairForward forward(const Split& split, const RefSums& refs,
                             const std::vector<int64_t>& idx) {
    auto batch = make_batch(split, idx, tokenizer->pad_id(), device);
    if (refs.first.defined()) {
      auto ix = torch::tensor(idx, torch::kLong).to(device);
      batch.reference_chosen = refs.first.index_select(0, ix);
      batch.reference_rejected = refs.second.index_select(0, ix);
      return hafrm::forward_pair(model, batch, forward_options);
    }
    return hafrm::forward_pair(model, reference, batch, forward_options);
  }

  // Summed reference log-probs of every pair of a split, computed once (the reference is frozen).
  // Under data parallelism each rank computes its share and the sum over the ranks (of zeros
  // elsewhere) completes the tensors.
  RefSums reference_sums(const Split& split) {
    std::vector<torch::Tensor> c, r;
    const auto n = static_cast<int64_t>(split.pairs.size());
    const auto [first, last] = share(n);
    for (int64_t s = first; s < last; s += cfg.eval_batch) {
      std::vector<int64_t> idx;
      for (int64_t i = s; i < std::min(last, s + cfg.eval_batch); ++i) idx.push_back(i);
      auto [rc, rr] = hafrm::reference_logprobs(
          reference, make_batch(split, idx, tokenizer->pad_id(), device), forward_options);
      c.push_back(rc), r.push_back(rr);
    }
    if (!dp) return {torch::cat(c), torch::cat(r)};
    const auto dtype = c.empty() ? torch::kFloat : c[0].scalar_type();
    auto both = torch::zeros({2, n}, torch::TensorOptions(torch::kDouble).device(device));
    if (!c.empty()) {
      both[0].narrow(0, first, last - first).copy_(torch::cat(c));
      both[1].narrow(0, first, last - first).copy_(torch::cat(r));
    }
    dp->sum_(both);
    both = both.to(dtype);  // exact: each entry is one rank's value plus zeros
    return {both[0].clone(), both[1].clone()};
  }

  // Eval and OOD reference sums are computed on first use and kept (the reference never moves).
  const RefSums& split_refs(const Split& split) {
    if (&split == &train && train_refs.first.defined()) return train_refs;
    auto it = split_refs_cache.find(&split);
    if (it == split_refs_cache.end())
      it = split_refs_cache.emplace(&split, reference_sums(split)).first;
    return it->second;
  }

  TrainConfig cfg;
  std::shared_ptr<DataParallel> dp;
  torch::Device device{torch::kCPU};
  ObjectiveSpec spec;
  HybridObjective objective;
  hafrm::PairForwardOptions forward_options;
  std::unique_ptr<Tokenizer> tokenizer;
  Split train;
  std::optional<Split> eval, ood;
  HafTransformer model{nullptr}, reference{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer;
  RefSums train_refs;  // with --reference precompute; undefined tensors otherwise
  std::map<const Split*, RefSums> split_refs_cache;
  BatchOrder batches;
  int64_t step = 0;           // optimizer steps done
  int64_t resumed_from = -1;  // the checkpoint's step, -1 for a fresh run
  double train_seconds = 0.0;
  std::vector<std::string> notes;  // printed by the run loop after the run's description
};

}  // namespace hafrm::examples::rm
