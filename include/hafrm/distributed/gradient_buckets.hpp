// gradient_buckets.hpp: data-parallel gradient averaging in flattened buckets.
//
// One all-reduce per parameter costs a round trip per tensor; one for the whole model holds a
// copy of every gradient at once. The parameters are grouped, in reverse order (the order the
// backward produces them), into buckets of at most bucket_bytes (a larger tensor gets a bucket
// of its own; one dtype per bucket); each bucket is flattened, all-reduced and divided by the
// world size. All buckets are launched before the first is waited on, so the process group works
// on one while the next is copied.
//
//   hafrm::distributed::GradientBuckets buckets(model->parameters(), 25 << 20);
//   loss.backward();
//   buckets.allreduce_mean(*comm);   // every rank now holds the mean gradient
//
// Or overlapped with the backward: each bucket's all-reduce starts from inside the backward as
// soon as the last of its gradients is accumulated (post-hooks on the parameters' AccumulateGrad
// nodes, the mechanism DDP's Reducer uses), so communication runs while the backward computes
// the earlier layers' gradients:
//
//   buckets.attach(comm);                      // once
//   buckets.prepare_for_backward(last_micro);  // each backward; false: accumulate, no traffic
//   loss.backward();
//   buckets.finish();                          // after the last micro-batch: mean gradients
//
// c10d's own Reducer is exported by libtorch_cpu.so but takes a c10d::ProcessGroup and the
// per-forward protocol of Python's DistributedDataParallel; see the README.
#pragma once

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "process_group.hpp"

namespace hafrm::distributed {

class GradientBuckets {
 public:
  GradientBuckets(std::vector<torch::Tensor> params, int64_t bucket_bytes)
      : params_(std::move(params)), bucket_bytes_(bucket_bytes) {
    HAFRM_CHECK_ARG(bucket_bytes > 0, "distributed::GradientBuckets", "bucket_bytes",
                    "expected > 0, got ", bucket_bytes);
    Bucket cur;
    int64_t cur_bytes = 0;
    for (auto i = static_cast<int64_t>(params_.size()) - 1; i >= 0; --i) {
      const auto& p = params_[static_cast<std::size_t>(i)];
      if (!p.requires_grad()) continue;
      const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
      const bool other_type =
          !cur.members.empty() && (p.scalar_type() != cur.dtype || p.device() != cur.device);
      if (!cur.members.empty() && (other_type || cur_bytes + bytes > bucket_bytes_)) {
        buckets_.push_back(std::move(cur));
        cur = Bucket{};
        cur_bytes = 0;
      }
      if (cur.members.empty()) cur.dtype = p.scalar_type(), cur.device = p.device();
      cur.members.push_back(static_cast<std::size_t>(i));
      cur.numel += p.numel();
      cur_bytes += bytes;
    }
    if (!cur.members.empty()) buckets_.push_back(std::move(cur));
  }

  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Bytes this rank sends into all-reduces per call (the flattened gradients).
  int64_t bytes_per_call() const {
    int64_t b = 0;
    for (const auto& k : buckets_) b += k.numel * static_cast<int64_t>(c10::elementSize(k.dtype));
    return b;
  }

  // Replaces every parameter's gradient by its mean over the ranks. A parameter without a
  // gradient on this rank contributes zeros (and then holds the mean, like the others).
  void allreduce_mean(Communicator& comm) {
    if (comm.world_size() == 1) return;
    torch::NoGradGuard ng;
    std::vector<torch::Tensor> flats(buckets_.size());
    std::vector<c10::intrusive_ptr<c10d::Work>> works(buckets_.size());
    for (std::size_t b = 0; b < buckets_.size(); ++b) launch(comm, b, flats, works);
    wait_and_scatter(comm, flats, works);
  }

  // ---- overlap with the backward ---------------------------------------------------------------
  // Registers a post-hook on every bucketed parameter's AccumulateGrad node (kept alive here, as
  // DDP does, so the hooks survive from one step's graph to the next). Call once.
  void attach(Communicator& comm) {
    TORCH_CHECK(!overlap_, "hafrm::distributed::GradientBuckets::attach: already attached");
    overlap_ = std::make_shared<Overlap>();
    overlap_->comm = &comm;
    overlap_->pending.assign(buckets_.size(), 0);
    overlap_->seen.assign(params_.size(), 1);
    std::vector<int64_t> bucket_of(params_.size(), -1);
    for (std::size_t b = 0; b < buckets_.size(); ++b)
      for (auto i : buckets_[b].members) bucket_of[i] = static_cast<int64_t>(b);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (bucket_of[i] < 0) continue;  // requires_grad false: not bucketed
      auto acc = torch::autograd::impl::grad_accumulator(params_[i]);
      HAFRM_CHECK_ARG(acc, "distributed::GradientBuckets::attach", "params",
                      "expected leaf tensors, but parameter ", i,
                      " is not one (it has no gradient accumulator)");
      acc->add_post_hook(
          std::make_unique<ReadyHook>(overlap_, this, i, static_cast<std::size_t>(bucket_of[i])));
      accumulators_.push_back(std::move(acc));
    }
  }
  bool attached() const { return overlap_ != nullptr; }
  // Buckets the last synced backward launched from its hooks (the rest waited for finish()).
  int64_t launched_during_backward() const { return overlap_ ? overlap_->early : 0; }

  // Before each backward. sync=false (a gradient-accumulation micro-batch that is not the last):
  // the hooks stay quiet and gradients accumulate locally; sync=true: buckets are all-reduced as
  // they become ready, and finish() must follow the backward.
  void prepare_for_backward(bool sync) {
    TORCH_CHECK(overlap_,
                "hafrm::distributed::GradientBuckets::prepare_for_backward: call attach() first");
    std::lock_guard<std::mutex> lock(overlap_->mu);
    auto& o = *overlap_;
    o.armed = sync && o.comm->world_size() > 1;
    if (!o.armed) return;
    for (std::size_t b = 0; b < buckets_.size(); ++b)
      o.pending[b] = static_cast<int64_t>(buckets_[b].members.size());
    std::fill(o.seen.begin(), o.seen.end(), 0);
    o.next = 0, o.early = 0;
    o.ready.assign(buckets_.size(), 0);
    o.flats.assign(buckets_.size(), torch::Tensor());
    o.works.assign(buckets_.size(), {});
  }

  // After the synced backward: launches the buckets whose parameters got no gradient in it
  // (they contribute zeros, as in allreduce_mean), waits for all, and writes the means back.
  void finish() {
    TORCH_CHECK(overlap_, "hafrm::distributed::GradientBuckets::finish: call attach() first");
    std::lock_guard<std::mutex> lock(overlap_->mu);
    auto& o = *overlap_;
    if (!o.armed) return;
    o.armed = false;
    torch::NoGradGuard ng;
    for (; o.next < buckets_.size(); ++o.next) launch(*o.comm, o.next, o.flats, o.works);
    wait_and_scatter(*o.comm, o.flats, o.works);
  }

 private:
  // Collectives must be issued in the same order on every rank: buckets are launched strictly
  // in index order (a ready bucket waits for the ones before it), which the backward's order of
  // accumulation matches for the usual module (buckets are formed from the last parameter back).
  // A parameter that gets no gradient in a step holds back its bucket and the later ones until
  // finish(): still correct, less overlap (DDP's find_unused_parameters has no counterpart here).
  struct Overlap {
    std::mutex mu;
    Communicator* comm = nullptr;
    bool armed = false;
    std::vector<int64_t> pending;  // per bucket: parameters not yet accumulated
    std::vector<char> seen;        // per parameter: its hook fired in this backward
    std::vector<char> ready;       // per bucket
    std::size_t next = 0;          // first bucket not launched
    int64_t early = 0;             // launched by hooks during the backward
    std::vector<torch::Tensor> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
  };

  struct ReadyHook : torch::autograd::FunctionPostHook {
    ReadyHook(std::shared_ptr<Overlap> o, GradientBuckets* owner, std::size_t param,
              std::size_t bucket)
        : o_(std::move(o)), owner_(owner), param_(param), bucket_(bucket) {}
    torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                              const torch::autograd::variable_list&) override {
      std::lock_guard<std::mutex> lock(o_->mu);
      auto& o = *o_;
      // Not armed: an accumulation micro-batch, or the owner is gone (its destructor disarms).
      if (!o.armed || o.seen[param_]) return outputs;
      o.seen[param_] = 1;
      if (--o.pending[bucket_] == 0) {
        o.ready[bucket_] = 1;
        torch::NoGradGuard ng;
        while (o.next < o.ready.size() && o.ready[o.next]) {
          owner_->launch(*o.comm, o.next, o.flats, o.works);
          ++o.next, ++o.early;
        }
      }
      return outputs;
    }
    std::shared_ptr<Overlap> o_;
    GradientBuckets* owner_;
    std::size_t param_, bucket_;
  };

  // Flattens bucket b's gradients (zeros where a parameter has none) and starts its all-reduce.
  void launch(Communicator& comm, std::size_t b, std::vector<torch::Tensor>& flats,
              std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
    std::vector<torch::Tensor> parts;
    parts.reserve(buckets_[b].members.size());
    for (auto i : buckets_[b].members) {
      auto& p = params_[i];
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      parts.push_back(p.grad().reshape({-1}));
    }
    flats[b] = torch::cat(parts).to(comm.device());
    works[b] = comm.allreduce_async_(flats[b]);
  }

  void wait_and_scatter(Communicator& comm, std::vector<torch::Tensor>& flats,
                        std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
    const double inv = 1.0 / static_cast<double>(comm.world_size());
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      comm.wait(works[b]);
      auto flat = flats[b].mul_(inv);
      int64_t at = 0;
      for (auto i : buckets_[b].members) {
        auto& g = params_[i].mutable_grad();
        g.copy_(flat.narrow(0, at, g.numel()).view_as(g));
        at += g.numel();
      }
    }
  }

 public:
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;
  ~GradientBuckets() {
    if (overlap_) {  // the hooks outlive this object on the parameters: make them no-ops
      std::lock_guard<std::mutex> lock(overlap_->mu);
      overlap_->armed = false;
    }
  }

 private:
  struct Bucket {
    std::vector<std::size_t> members;
    int64_t numel = 0;
    torch::ScalarType dtype = torch::kFloat;
    torch::Device device{torch::kCPU};
  };
  std::vector<torch::Tensor> params_;
  int64_t bucket_bytes_;
  std::vector<Bucket> buckets_;
  std::shared_ptr<Overlap> overlap_;
  std::vector<c10::intrusive_ptr<torch::autograd::Node>> accumulators_;
};

}  // namespace hafrm::distributed
