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
// Runs after the backward: c10d's Reducer (overlapping buckets with the backward through autograd
// hooks) is exported by libtorch_cpu.so but takes a c10d::ProcessGroup and a per-forward
// prepare_for_backward protocol written for Python's DistributedDataParallel; see the README.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "process_group.hpp"

namespace hafrm::distributed {

class GradientBuckets {
 public:
  GradientBuckets(std::vector<torch::Tensor> params, int64_t bucket_bytes)
      : params_(std::move(params)), bucket_bytes_(bucket_bytes) {
    TORCH_CHECK(bucket_bytes > 0, "GradientBuckets: bucket_bytes must be > 0, got ", bucket_bytes);
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
    std::vector<torch::Tensor> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    flats.reserve(buckets_.size());
    for (const auto& k : buckets_) {
      std::vector<torch::Tensor> parts;
      parts.reserve(k.members.size());
      for (auto i : k.members) {
        auto& p = params_[i];
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
        parts.push_back(p.grad().reshape({-1}));
      }
      flats.push_back(torch::cat(parts).to(comm.device()));
      works.push_back(comm.allreduce_async_(flats.back()));
    }
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
};

}  // namespace hafrm::distributed
