// process_group.hpp: a c10d process group from the environment torchrun sets.
//
// hafrm has no launcher or engine of its own: `torchrun --no-python --nproc-per-node N prog`
// starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; this
// header turns them into a c10d::TCPStore and a Gloo (CPU) or NCCL (CUDA) process group, with a
// timeout on every collective, so a dead peer ends the others with an error instead of a hang.
//
//   auto env = hafrm::distributed::LaunchEnv::from_environment();  // nullopt: not launched
//   if (env) {
//     auto comm = hafrm::distributed::Communicator::create(*env, {.timeout = 60s});
//     auto t = torch::ones({4});
//     comm->allreduce_(t);                                           // sum over the ranks
//     auto tp = comm->split(comm->rank() / 2);  // tensor-parallel pairs {0,1}, {2,3}, ...
//   }
//
// Needs the hafrm::distributed CMake target (USE_C10D_GLOO and the Gloo headers).
#pragma once

#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hafrm/torch/checks.hpp"
#include "launch_env.hpp"

#ifndef USE_C10D_GLOO
#error "hafrm/distributed needs USE_C10D_GLOO and the Gloo headers: link hafrm::distributed"
#endif

namespace hafrm::distributed {

enum class BackendKind { kAuto, kGloo, kNccl };

struct CommunicatorOptions {
  // Bounds store connection, rendezvous and every collective: a rank whose peer died or hangs
  // fails with c10d's error after at most this long.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // kAuto: NCCL when `device` is CUDA (and hafrm was built with NCCL), else Gloo.
  BackendKind backend = BackendKind::kAuto;
  torch::Device device{torch::kCPU};
};

// One process group with its store; the tensors its collectives take live on device().
class Communicator {
 public:
  static std::shared_ptr<Communicator> create(const LaunchEnv& env,
                                              const CommunicatorOptions& opt = {}) {
    auto c = std::shared_ptr<Communicator>(new Communicator());
    c->rank_ = env.rank, c->world_size_ = env.world_size, c->local_rank_ = env.local_rank;
    c->launch_rank_ = env.rank;
    c->device_ = opt.device;
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = !env.agent_store && env.rank == 0;
    so.numWorkers = env.world_size;
    so.waitWorkers = false;
    so.timeout = opt.timeout;
    c10::intrusive_ptr<c10d::Store> tcp;
    try {
      tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "hafrm::distributed::Communicator::create: rank ", env.rank,
                  ": cannot reach the c10d store at ", env.master_addr, ":", env.master_port, ": ",
                  without_backtrace(e));
    }
    c->store_ = c10::make_intrusive<c10d::PrefixStore>(
        "hafrm/attempt_" + std::to_string(env.restart_count), tcp);

    c->master_addr_ = env.master_addr;
    c->options_ = opt;
    c->backend_ = c->make_backend();
    c->timeout_ = opt.timeout;
    return c;
  }

  // Collective over this group: every rank calls it with a color >= 0 and gets the group of the
  // ranks that gave the same color, numbered in this group's rank order (MPI_Comm_split with the
  // rank as key; torch.distributed.new_subgroups_by_enumeration). Tensor-parallel groups of size
  // tp over data-parallel ones: split(rank() / tp) and split(rank() % tp). The new group has its
  // own store prefix and connections, the same backend, device and timeout; the colors travel
  // in one all-reduce, so a rank that does not call it makes the others fail on the timeout.
  std::shared_ptr<Communicator> split(int color) {
    HAFRM_CHECK_ARG(color >= 0, "distributed::Communicator::split", "color",
                    "must be >= 0 (the ranks of one color form one group), got ", color);
    std::vector<double> colors(static_cast<std::size_t>(world_size_), 0.0);
    colors[static_cast<std::size_t>(rank_)] = static_cast<double>(color) + 1.0;  // 0: unset
    colors = allreduce(std::move(colors));
    auto c = std::shared_ptr<Communicator>(new Communicator(*this));
    c->world_size_ = 0;
    for (int r = 0; r < world_size_; ++r) {
      if (colors[static_cast<std::size_t>(r)] != colors[static_cast<std::size_t>(rank_)]) continue;
      if (r == rank_) c->rank_ = c->world_size_;
      ++c->world_size_;
    }
    TORCH_INTERNAL_ASSERT(c->world_size_ >= 1, "Communicator::split: this rank's own color lost");
    // Every rank of the parent counts its splits alike (split is collective), so the prefix is
    // the same within a new group and differs between groups and between successive splits.
    c->store_ = c10::make_intrusive<c10d::PrefixStore>(
        "split_" + std::to_string(splits_++) + "_color_" + std::to_string(color), store_);
    c->splits_ = 0;
    c->backend_ = c->make_backend();
    return c;
  }

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }
  const torch::Device& device() const { return device_; }
  const std::string& backend_name() const { return backend_name_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  c10d::Backend& backend() { return *backend_; }

  // In-place all-reduce of one tensor on device(); blocks; throws c10::Error (naming this rank
  // and why: a peer gone, or the timeout) when a rank is gone.
  void allreduce_(torch::Tensor& t, c10d::ReduceOp op = c10d::ReduceOp::SUM) {
    wait(allreduce_async_(t, op));
  }
  c10::intrusive_ptr<c10d::Work> allreduce_async_(torch::Tensor& t,
                                                  c10d::ReduceOp op = c10d::ReduceOp::SUM) {
    constexpr const char* fn = "distributed::Communicator::allreduce_";
    HAFRM_CHECK_ARG(t.device() == device_, fn, "t", "expected on the process group's device ",
                    device_.str(), ", got ", t.device().str());
    HAFRM_CHECK_ARG(t.is_contiguous(), fn, "t", "expected a contiguous tensor");
    std::vector<at::Tensor> v{t};
    c10d::AllreduceOptions o;
    o.reduceOp = op;
    o.timeout = timeout_;
    return backend_->allreduce(v, o);
  }
  // A collective whose peer died fails here: Gloo reports the closed connection at once, a peer
  // that hangs runs into the timeout. Either way the error names this rank and says why.
  void wait(const c10::intrusive_ptr<c10d::Work>& w) {
    constexpr const char* fn = "hafrm::distributed::Communicator::wait";
    bool done = false;
    try {
      done = w->wait(timeout_);
    } catch (const std::exception& e) {
      TORCH_CHECK(
          false, fn, ": rank ", launch_rank_, ": a ", backend_name_,
          " collective failed (a peer exited or stopped answering, or the network failed): ",
          without_backtrace(e));
    }
    TORCH_CHECK(done, fn, ": rank ", launch_rank_, ": a ", backend_name_,
                " collective did not finish within ", timeout_.count(), " ms");
  }

  // Sums (or maxes) a few host numbers over the ranks: metrics, flags.
  std::vector<double> allreduce(std::vector<double> values,
                                c10d::ReduceOp op = c10d::ReduceOp::SUM) {
    if (values.empty()) return values;
    auto t = torch::tensor(values, torch::kDouble).to(device_);
    allreduce_(t, op);
    t = t.cpu();
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  }
  double allreduce(double v, c10d::ReduceOp op = c10d::ReduceOp::SUM) {
    return allreduce(std::vector<double>{v}, op)[0];
  }
  // True on every rank when it is true on any.
  bool any(bool flag) { return allreduce(flag ? 1.0 : 0.0, c10d::ReduceOp::MAX) > 0; }
  // Every rank has reached this point (an all-reduce, so it is bounded by the same timeout).
  void barrier() { (void)allreduce(0.0); }

 private:
  Communicator() = default;
  Communicator(const Communicator&) = default;  // split() starts from its parent's settings

  // The process group over store_ for rank_ of world_size_, of the kind options_ asks for (the
  // options are create()'s argument: a split group inherits them).
  c10::intrusive_ptr<c10d::Backend> make_backend() {
    constexpr const char* fn = "distributed::Communicator::create";
    const auto& opt = options_;
    const bool nccl = opt.backend == BackendKind::kNccl ||
                      (opt.backend == BackendKind::kAuto && opt.device.is_cuda());
    if (nccl) {
#ifdef USE_C10D_NCCL
      HAFRM_CHECK_ARG(opt.device.is_cuda(), fn, "options.device",
                      "expected a CUDA device for the NCCL backend, got ", opt.device.str());
      c10::cuda::set_device(opt.device.index());
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = opt.timeout;
      backend_name_ = "nccl";
      return c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, rank_, world_size_, o);
#else
      HAFRM_CHECK_ARG(false, fn,
                      opt.backend == BackendKind::kNccl ? "options.backend" : "options.device",
                      "expected Gloo: NCCL (device ", opt.device.str(),
                      ") needs hafrm built with it (a CUDA build finds the wheel's nccl.h)");
#endif
    }
    HAFRM_CHECK_ARG(!opt.device.is_cuda(), fn, "options.device",
                    "expected the CPU for the Gloo backend (a CUDA device needs NCCL), got ",
                    opt.device.str());
    auto o = c10d::ProcessGroupGloo::Options::create(opt.timeout);
    o->devices.push_back(gloo_device(master_addr_));
    backend_name_ = "gloo";
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store_, rank_, world_size_, o);
  }

  // c10::Error's what() carries a C++ backtrace of LibTorch's frames: noise in a user's error.
  static std::string without_backtrace(const std::exception& e) {
    if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
    return e.what();
  }

  // GLOO_SOCKET_IFNAME picks an interface (as in torch.distributed); a loopback master means a
  // single machine, so bind to 127.0.0.1; otherwise bind to the address this host resolves to.
  static std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master) {
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
    if (master == "localhost" || master.starts_with("127."))
      return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
    return c10d::ProcessGroupGloo::createDefaultDevice();
  }

  int rank_ = 0, world_size_ = 1, local_rank_ = 0;
  int launch_rank_ = 0;  // RANK as torchrun set it: what errors name, in a split group too
  torch::Device device_{torch::kCPU};
  std::string backend_name_;
  std::chrono::milliseconds timeout_{0};
  std::string master_addr_;
  CommunicatorOptions options_;
  int splits_ = 0;  // split() calls so far: part of each new group's store prefix
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
};

}  // namespace hafrm::distributed
