// Outside consumer of hafrm::distributed (tests/package): a one-process Gloo group over a TCPStore
// on an ephemeral loopback port, one bucketed gradient mean and one all-reduce through the
// installed headers. Prints "distributed OK" when every check holds.
#include <hafrm/distributed/gradient_buckets.hpp>
#include <hafrm/distributed/process_group.hpp>

#include <cstdio>
#include <exception>

int main() try {
  namespace hd = hafrm::distributed;
  hd::LaunchEnv env;  // rank 0 of 1; port 0: the store's server picks a free port
  env.master_port = 0;
  auto comm = hd::Communicator::create(env, {.timeout = std::chrono::seconds(30)});
  auto w = torch::ones({3, 4}, torch::requires_grad());
  (w * 2).sum().backward();
  hd::GradientBuckets buckets({w}, 1 << 10);
  buckets.allreduce_mean(*comm);  // world size 1: the mean is the gradient itself
  const double total = comm->allreduce(w.grad().sum().item<double>());
  if (comm->backend_name() != "gloo" || total != 24.0) {
    std::fprintf(stderr, "unexpected: backend %s, sum %g (expected gloo, 24)\n",
                 comm->backend_name().c_str(), total);
    return 1;
  }
  std::printf("distributed OK (backend %s, world size %d)\n", comm->backend_name().c_str(),
              comm->world_size());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "consumer failed: %s\n", e.what());
  return 1;
}
