// distributed.hpp: the data-parallel and vocab-parallel glue of the haf_rm trainer, over
// hafrm/distributed (c10d).
//
// Launched by torchrun (`torchrun --no-python --nproc-per-node N haf_rm ...`), every process
// builds the same model from the seed, trains on its slice of each global batch (per-rank batch
// x world size), and averages gradients in buckets (all-reduces overlapped with the backward)
// before clipping and the optimizer step, so all ranks keep identical weights. Reference log-probs
// and evaluation are split over the ranks and summed back; rank 0 alone writes metrics, checkpoints
// and the summary. Without the launch variables (or with WORLD_SIZE=1) from_environment() returns
// no DataParallel and the trainer runs as one process, with no collective anywhere.
//
// With --vocab-parallel the ranks form groups of --vocab-parallel-size consecutive ranks (all of
// them by default) that split the LM head's vocabulary instead of the batch: the ranks of a
// group take the same slice of the global batch, compute the log-probs of their rows [v0, v1)
// of the vocabulary only, and hafrm::distributed merges the rows' statistics over the group (two
// all-reduces per forward; the LM head's input gradient is summed in the backward). The groups
// themselves are data parallel: rank r is data rank r / size, and the gradient buckets average
// over the ranks that hold the same rows (r % size). Each rank still holds the whole model (a
// demonstration of the library path, not a memory saving): the only gradient that differs
// inside a group is the LM head's, whose rows are summed over the group after the backward, so
// every rank stays identical.
//
//   auto launch = hafrm::examples::rm::DataParallel::from_environment(options.device, dp_opts);
//   hafrm::examples::rm::Trainer t(RunConfig::resolve(options, launch.device),
//   launch.data_parallel);
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
  bool vocab_parallel = false;      // split the LM head's vocabulary over groups of ranks
  int64_t vocab_parallel_size = 0;  // ranks per vocab-parallel group; 0: all of them
};

class DataParallel;

// What DataParallel::from_environment() set up: the process group (null when this process was not
// launched as one of several) and the device this process trains on.
struct DataParallelLaunch {
  std::shared_ptr<DataParallel> data_parallel;
  std::string device;
};

class DataParallel {
 public:
  // `device` is the requested one; under several processes "cuda" becomes "cuda:LOCAL_RANK" (one
  // process per GPU) in the result. The process group is NCCL on CUDA, Gloo on CPU.
  static DataParallelLaunch from_environment(const std::string& device,
                                             const DataParallelOptions& opt) {
    const auto env = hafrm::distributed::LaunchEnv::from_environment();
    if (!env || env->world_size == 1) return {nullptr, device};
    const int64_t W = env->world_size;
    const int64_t head =
        opt.vocab_parallel ? (opt.vocab_parallel_size > 0 ? opt.vocab_parallel_size : W) : 1;
    if (W % head != 0)
      throw std::invalid_argument("--vocab-parallel-size " + std::to_string(head) +
                                  " must divide the number of processes (" + std::to_string(W) +
                                  ")");
#ifdef HAFRM_WITH_DISTRIBUTED
    const std::string chosen =
        device == "cuda" ? "cuda:" + std::to_string(env->local_rank) : device;
    hafrm::distributed::CommunicatorOptions co;
    co.timeout = opt.timeout;
    co.device = torch::Device(chosen);
    auto dp = std::shared_ptr<DataParallel>(new DataParallel());
    dp->comm_ = hafrm::distributed::Communicator::create(*env, co);
    dp->bucket_bytes_ = opt.bucket_bytes;
    dp->vocab_parallel_ = opt.vocab_parallel;
    const int r = dp->comm_->rank(), h = static_cast<int>(head);
    if (!opt.vocab_parallel) {
      dp->data_comm_ = dp->comm_;
    } else {
      // Both splits are collective over the world, in this order on every rank.
      dp->head_comm_ = h == W ? dp->comm_ : dp->comm_->split(r / h);
      if (h < W) dp->data_comm_ = dp->comm_->split(r % h);
    }
    return {std::move(dp), chosen};
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
  // The data group (the ranks that split the batch; none: this rank alone) and, under
  // --vocab-parallel, the rank's place in its head group.
  int data_rank() const { return data_comm_ ? data_comm_->rank() : 0; }
  int data_world_size() const { return data_comm_ ? data_comm_->world_size() : 1; }
  int head_world_size() const { return head_comm_ ? head_comm_->world_size() : 1; }

  // The model's parameters, bucketed once over the data group; each bucket's all-reduce then
  // starts inside the backward of the step's last micro-batch, as soon as its gradients are
  // complete. Nothing to do without a data group.
  void attach(std::vector<torch::Tensor> params) {
    if (!data_comm_) return;
    buckets_ =
        std::make_unique<hafrm::distributed::GradientBuckets>(std::move(params), bucket_bytes_);
    buckets_->attach(*data_comm_);
  }
  // Vocab parallel: this rank's rows [first, last) of a vocabulary of `vocab_size` (contiguous,
  // in head-group rank order, sizes differing by at most one).
  std::pair<int64_t, int64_t> vocab_range(int64_t vocab_size) const {
    TORCH_INTERNAL_ASSERT(head_comm_, "DataParallel: not started with vocab_parallel");
    const int64_t r = head_comm_->rank(), w = head_comm_->world_size();
    return {vocab_size * r / w, vocab_size * (r + 1) / w};
  }
  // Vocab parallel (collective over the head group, once): the log-prob path of forward_pair for
  // a model that returns its rows of the LM head, and the LM-head weight whose gradient rows are
  // summed over the group after each backward.
  hafrm::ModelLogProbsFn attach_vocab_parallel(int64_t vocab_size, torch::Tensor lm_head_weight) {
    const auto [v0, v1] = vocab_range(vocab_size);
    vp_ = hafrm::distributed::VocabParallel::create(head_comm_, v0, v1);
    lm_head_weight_ = std::move(lm_head_weight);
    return hafrm::distributed::vocab_parallel_logprobs(*vp_);
  }
  // The packed path's counterpart of attach_vocab_parallel's result (after it).
  hafrm::ModelTokenLogProbsFn vocab_parallel_token_logprobs() const {
    TORCH_INTERNAL_ASSERT(vp_, "DataParallel: attach_vocab_parallel() first");
    return hafrm::distributed::vocab_parallel_token_logprobs(*vp_);
  }
  // For a model that returns its logits shard: identity forward, gradient summed over the head
  // group in the backward (the fused linear path does this itself).
  torch::Tensor reduce_grad_over_shards(const torch::Tensor& lm_input) const {
    TORCH_INTERNAL_ASSERT(vp_, "DataParallel: attach_vocab_parallel() first");
    return hafrm::distributed::reduce_grad_over_shards(lm_input, *vp_);
  }
  // Before each micro-batch's backward; `last`: the one whose backward completes the gradients.
  void prepare_for_backward(bool last) {
    if (buckets_) buckets_->prepare_for_backward(last);
  }
  // After the last micro-batch's backward: every rank holds the whole gradient (the mean over the
  // data group, then the LM head's rows summed over the head group).
  void average_gradients() {
    if (buckets_) buckets_->finish();
    if (head_comm_) {
      TORCH_INTERNAL_ASSERT(lm_head_weight_.defined(), "DataParallel: attach_vocab_parallel()");
      auto g = lm_head_weight_.mutable_grad();
      if (g.defined()) head_comm_->allreduce_(g);
    }
  }
  int64_t num_buckets() const { return buckets_ ? buckets_->num_buckets() : 0; }
  int64_t allreduce_bytes_per_step() const { return buckets_ ? buckets_->bytes_per_call() : 0; }
  int64_t head_grad_bytes_per_step() const {
    return head_comm_ && lm_head_weight_.defined() ? lm_head_weight_.nbytes() : 0;
  }

  // The mean over the data group (the ranks of a head group agree already).
  std::vector<double> mean(std::vector<double> v) {
    if (!data_comm_) return v;
    auto s = data_comm_->allreduce(std::move(v));
    for (auto& x : s) x /= data_world_size();
    return s;
  }
  // Sums a tensor over the data group in place (through the process group's device).
  void sum_(torch::Tensor& t) {
    if (!data_comm_) return;
    auto c = t.to(data_comm_->device()).contiguous();
    data_comm_->allreduce_(c);
    t.copy_(c);
  }
  bool any(bool flag) { return comm_->any(flag); }
  void barrier() { comm_->barrier(); }
#else
  int rank() const { return 0; }
  int world_size() const { return 1; }
  std::string backend_name() const { return "none"; }
  bool vocab_parallel() const { return false; }
  int data_rank() const { return 0; }
  int data_world_size() const { return 1; }
  int head_world_size() const { return 1; }
  void attach(std::vector<torch::Tensor>) {}
  std::pair<int64_t, int64_t> vocab_range(int64_t vocab_size) const { return {0, vocab_size}; }
  hafrm::ModelLogProbsFn attach_vocab_parallel(int64_t, torch::Tensor) { return {}; }
  hafrm::ModelTokenLogProbsFn vocab_parallel_token_logprobs() const { return {}; }
  torch::Tensor reduce_grad_over_shards(const torch::Tensor& t) const { return t; }
  void prepare_for_backward(bool) {}
  void average_gradients() {}
  int64_t num_buckets() const { return 0; }
  int64_t allreduce_bytes_per_step() const { return 0; }
  int64_t head_grad_bytes_per_step() const { return 0; }
  std::vector<double> mean(std::vector<double> v) { return v; }
  void sum_(torch::Tensor&) {}
  bool any(bool flag) { return flag; }
  void barrier() {}
#endif

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
  std::shared_ptr<hafrm::distributed::Communicator> comm_;       // the world
  std::shared_ptr<hafrm::distributed::Communicator> data_comm_;  // splits the batch; may be null
  std::shared_ptr<hafrm::distributed::Communicator> head_comm_;  // splits the LM head; may be null
  std::unique_ptr<hafrm::distributed::GradientBuckets> buckets_;
  int64_t bucket_bytes_ = 0;
  bool vocab_parallel_ = false;
  std::optional<hafrm::distributed::VocabParallel> vp_;
  torch::Tensor lm_head_weight_;
#endif
};

}  // namespace hafrm::examples::rm
