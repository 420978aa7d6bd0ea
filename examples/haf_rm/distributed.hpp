// distributed.hpp: the data-parallel glue of the haf_rm trainer, over hafrm/distributed (c10d).
//
// Launched by torchrun (`torchrun --no-python --nproc-per-node N haf_rm ...`), every process
// builds the same model from the seed, trains on its slice of each global batch (per-rank batch
// x world size), and averages gradients in buckets (all-reduces overlapped with the backward)
// before clipping and the optimizer step, so all ranks keep identical weights. Reference log-probs
// and evaluation are split over the ranks and summed back; rank 0 alone writes metrics, checkpoints
// and the summary. Without the launch variables (or with WORLD_SIZE=1) from_environment() returns
// null and the trainer runs exactly as a single process always did.
//
//   auto dp = hafrm::examples::rm::DataParallel::from_environment(cfg);  // may rewrite cfg.device
//   hafrm::examples::rm::Trainer t(cfg, dp);
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <hafrm/distributed/launch_env.hpp>
#include <hafrm/distributed/sampler.hpp>
#include <hafrm/model/pair_forward.hpp>
#ifdef HAFRM_WITH_DISTRIBUTED
#include <hafrm/distributed/gradient_buckets.hpp>
#include <hafrm/distributed/process_group.hpp>
#include <hafrm/distributed/vocab_parallel_linear.hpp>
#endif

namespace hafrm::examples::rm {

struct DataParallelOptions {
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  int64_t bucket_bytes = int64_t{25} << 20;
  bool vocab_parallel = false;  // split the LM head's vocabulary over the ranks, not the batch
};

class DataParallel {
 public:
  // Null when this process was not launched as one of several. `device` "cuda" becomes
  // "cuda:LOCAL_RANK" (one process per GPU); the process group is NCCL there, Gloo on CPU.
  static std::shared_ptr<DataParallel> from_environment(std::string& device,
                                                        const DataParallelOptions& opt) {
    const auto env = hafrm::distributed::LaunchEnv::from_environment();
    if (!env || env->world_size == 1) return nullptr;
#ifdef HAFRM_WITH_DISTRIBUTED
    if (device == "cuda") device = "cuda:" + std::to_string(env->local_rank);
    hafrm::distributed::CommunicatorOptions co;
    co.timeout = opt.timeout;
    co.device = torch::Device(device);
    auto dp = std::shared_ptr<DataParallel>(new DataParallel());
    dp->comm_ = hafrm::distributed::Communicator::create(*env, co);
    dp->bucket_bytes_ = opt.bucket_bytes;
    dp->vocab_parallel_ = opt.vocab_parallel;
    return dp;
#else
    (void)opt;
    throw std::runtime_error(
        "WORLD_SIZE=" + std::to_string(env->world_size) +
        " but haf_rm was built without the distributed layer (needs libgloo-dev; configure with "
        "-DHAFRM_WITH_DISTRIBUTED=ON to see what is missing)");
#endif
  }

#ifdef HAFRM_WITH_DISTRIBUTED
  int rank() const { return comm_->rank(); }
  int world_size() const { return comm_->world_size(); }
  std::string backend_name() const { return comm_->backend_name(); }
  bool vocab_parallel() const { return vocab_parallel_; }

  // Data parallel: the model's parameters, bucketed once; each bucket's all-reduce then starts
  // inside the backward of the step's last micro-batch, as soon as its gradients are complete.
  void attach(std::vector<torch::Tensor> params) {
    TORCH_INTERNAL_ASSERT(!vocab_parallel_, "DataParallel: attach() is for data parallelism");
    buckets_ =
        std::make_unique<hafrm::distributed::GradientBuckets>(std::move(params), bucket_bytes_);
    buckets_->attach(*comm_);
  }
  // Vocab parallel: this rank's rows [first, last) of a vocabulary of `vocab_size` (contiguous,
  // in rank order, sizes differing by at most one).
  std::pair<int64_t, int64_t> vocab_range(int64_t vocab_size) const {
    const int64_t r = rank(), w = world_size();
    return {vocab_size * r / w, vocab_size * (r + 1) / w};
  }
  // Vocab parallel (collective: every rank calls it once): the log-prob path of forward_pair for
  // a model that returns its rows of the LM head, and the LM-head weight whose gradient rows are
  // summed over the ranks after each backward.
  hafrm::ModelLogProbsFn attach_vocab_parallel(int64_t vocab_size, torch::Tensor lm_head_weight) {
    TORCH_INTERNAL_ASSERT(vocab_parallel_, "DataParallel: not started with vocab_parallel");
    const auto [v0, v1] = vocab_range(vocab_size);
    vp_ = hafrm::distributed::VocabParallel::create(comm_, v0, v1);
    lm_head_weight_ = std::move(lm_head_weight);
    return hafrm::distributed::vocab_parallel_logprobs(*vp_);
  }
  // For a model that returns its logits shard: identity forward, gradient summed over the ranks
  // in the backward (the fused linear path does this itself).
  torch::Tensor reduce_grad_over_shards(const torch::Tensor& lm_input) const {
    TORCH_INTERNAL_ASSERT(vp_, "DataParallel: attach_vocab_parallel() first");
    return hafrm::distributed::reduce_grad_over_shards(lm_input, *vp_);
  }
  // Before each micro-batch's backward; `last`: the one whose backward completes the gradients.
  void prepare_for_backward(bool last) {
    if (vocab_parallel_) return;
    TORCH_INTERNAL_ASSERT(buckets_, "DataParallel: attach() the parameters first");
    buckets_->prepare_for_backward(last);
  }
  // After the last micro-batch's backward: every rank holds the whole gradient (the mean over
  // the data ranks; under vocab parallelism, the LM head's rows summed over the ranks).
  void average_gradients() {
    if (vocab_parallel_) {
      TORCH_INTERNAL_ASSERT(lm_head_weight_.defined(), "DataParallel: attach_vocab_parallel()");
      auto g = lm_head_weight_.mutable_grad();
      if (g.defined()) comm_->allreduce_(g);
      return;
    }
    TORCH_INTERNAL_ASSERT(buckets_, "DataParallel: attach() the parameters first");
    buckets_->finish();
  }
  int64_t num_buckets() const { return buckets_ ? buckets_->num_buckets() : 0; }
  int64_t allreduce_bytes_per_step() const {
    if (vocab_parallel_) return lm_head_weight_.defined() ? lm_head_weight_.nbytes() : 0;
    return buckets_ ? buckets_->bytes_per_call() : 0;
  }

  // The mean over the data ranks (all ranks agree already under vocab parallelism).
  std::vector<double> mean(std::vector<double> v) {
    if (vocab_parallel_) return v;
    auto s = comm_->allreduce(std::move(v));
    for (auto& x : s) x /= world_size();
    return s;
  }
  // Sums a tensor over the data ranks in place (through the process group's device).
  void sum_(torch::Tensor& t) {
    if (vocab_parallel_) return;
    auto c = t.to(comm_->device()).contiguous();
    comm_->allreduce_(c);
    t.copy_(c);
  }
  bool any(bool flag) { return comm_->any(flag); }
  void barrier() { comm_->barrier(); }
#else
  int rank() const { return 0; }
  int world_size() const { return 1; }
  std::string backend_name() const { return "none"; }
  bool vocab_parallel() const { return false; }
  void attach(std::vector<torch::Tensor>) {}
  std::pair<int64_t, int64_t> vocab_range(int64_t vocab_size) const { return {0, vocab_size}; }
  hafrm::ModelLogProbsFn attach_vocab_parallel(int64_t, torch::Tensor) { return {}; }
  torch::Tensor reduce_grad_over_shards(const torch::Tensor& t) const { return t; }
  void prepare_for_backward(bool) {}
  void average_gradients() {}
  int64_t num_buckets() const { return 0; }
  int64_t allreduce_bytes_per_step() const { return 0; }
  std::vector<double> mean(std::vector<double> v) { return v; }
  void sum_(torch::Tensor&) {}
  bool any(bool flag) { return flag; }
  void barrier() {}
#endif

  // The data group: every rank under data parallelism, this rank alone under vocab parallelism.
  int data_rank() const { return vocab_parallel() ? 0 : rank(); }
  int data_world_size() const { return vocab_parallel() ? 1 : world_size(); }

  // This rank's contiguous share [first, last) of n items (evaluation, reference log-probs).
  std::pair<int64_t, int64_t> share(int64_t n) const {
    const int64_t r = data_rank(), w = data_world_size();
    return {n * r / w, n * (r + 1) / w};
  }
  // This rank's slice of one global batch (hafrm::distributed::rank_slice).
  std::vector<int64_t> slice(const std::vector<int64_t>& global_batch) const {
    return hafrm::distributed::rank_slice(global_batch, data_rank(), data_world_size());
  }

 private:
  DataParallel() = default;
#ifdef HAFRM_WITH_DISTRIBUTED
  std::shared_ptr<hafrm::distributed::Communicator> comm_;
  std::unique_ptr<hafrm::distributed::GradientBuckets> buckets_;
  int64_t bucket_bytes_ = 0;
  bool vocab_parallel_ = false;
  std::optional<hafrm::distributed::VocabParallel> vp_;
  torch::Tensor lm_head_weight_;
#endif
};

}  // namespace hafrm::examples::rm
