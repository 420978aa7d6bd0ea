// One rank of the multi-process scenarios that test_multiprocess.cpp launches (spawn.hpp). Exit
// codes: 0 passed, 1 wrong result or an unexpected error, 4 the expected error was raised as a
// c10::Error (its message on stderr), 5 an expected error did not come.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <hafrm/distributed/gradient_buckets.hpp>
#include <hafrm/distributed/process_group.hpp>

namespace hd = hafrm::distributed;

// vocab_child.cpp: the vocabulary-parallel scenarios ("vocab_*").
int run_vocab_child(const std::string& scenario, const std::shared_ptr<hd::Communicator>& comm);

namespace {

std::chrono::milliseconds timeout_from_env() {
  const char* t = std::getenv("HAFRM_TEST_TIMEOUT_MS");
  return std::chrono::milliseconds(t ? std::atoi(t) : 20000);
}

bool close(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::allclose(a.to(torch::kDouble), b.to(torch::kDouble), 1e-6, 1e-6);
}

// The gradient rank r would hold for parameter i: seeded by (r, i), so every rank can rebuild
// every other rank's and so the expected mean.
torch::Tensor grad_of(int r, int i, const torch::Tensor& p) {
  auto g = torch::make_generator<at::CPUGeneratorImpl>(1000 * r + i + 7);
  return torch::randn(p.sizes(), g, p.options());
}

int collectives(hd::Communicator& comm) {
  const int W = comm.world_size(), r = comm.rank();
  auto t = torch::full({5}, static_cast<double>(r + 1), torch::kDouble);
  comm.allreduce_(t);
  if (!close(t, torch::full({5}, W * (W + 1) / 2.0, torch::kDouble))) {
    std::fprintf(stderr, "allreduce_ sum wrong\n");
    return 1;
  }
  if (comm.allreduce(static_cast<double>(r), c10d::ReduceOp::MAX) != W - 1 ||
      !comm.any(r == W - 1) || comm.any(false)) {
    std::fprintf(stderr, "allreduce max / any wrong\n");
    return 1;
  }
  // Parameters of mixed sizes and dtypes; parameter 2 has no gradient on rank 0.
  for (const int64_t bucket_bytes : {int64_t{64}, int64_t{1} << 20}) {
    std::vector<torch::Tensor> params = {torch::zeros({3, 5}).set_requires_grad(true),
                                         torch::zeros({17}).set_requires_grad(true),
                                         torch::zeros({4, 4}).set_requires_grad(true),
                                         torch::zeros({6}, torch::kDouble).set_requires_grad(true)};
    for (int i = 0; i < static_cast<int>(params.size()); ++i)
      if (!(i == 2 && r == 0))
        params[static_cast<std::size_t>(i)].mutable_grad() =
            grad_of(r, i, params[static_cast<std::size_t>(i)]);
    hd::GradientBuckets buckets(params, bucket_bytes);
    if (bucket_bytes == 64 && buckets.num_buckets() < 3) {
      std::fprintf(stderr, "expected several buckets at 64 bytes, got %lld\n",
                   static_cast<long long>(buckets.num_buckets()));
      return 1;
    }
    buckets.allreduce_mean(comm);
    for (int i = 0; i < static_cast<int>(params.size()); ++i) {
      const auto& p = params[static_cast<std::size_t>(i)];
      auto want = torch::zeros_like(p);
      for (int q = 0; q < W; ++q)
        if (!(i == 2 && q == 0)) want += grad_of(q, i, p);
      want /= W;
      if (!close(p.grad(), want)) {
        std::fprintf(stderr, "bucketed mean wrong for parameter %d (bucket_bytes %lld)\n", i,
                     static_cast<long long>(bucket_bytes));
        return 1;
      }
    }
  }
  comm.barrier();
  return 0;
}

// Overlapped bucket all-reduce (attach / prepare_for_backward / backward / finish) over two
// steps of two accumulated micro-batches each, with a parameter the graph never uses: every
// gradient must equal the mean over the ranks of the locally accumulated gradients, which each
// rank can compute for every other rank (the inputs are seeded by rank, step and micro-batch).
int overlap(hd::Communicator& comm) {
  const int W = comm.world_size(), r = comm.rank();
  torch::manual_seed(11);
  auto l1 = torch::nn::Linear(6, 8), l2 = torch::nn::Linear(8, 5), l3 = torch::nn::Linear(5, 1);
  auto unused = torch::zeros({3}).set_requires_grad(true);
  // The unused parameter first, so it lands in the last bucket (buckets are formed from the last
  // parameter back and launched in order: an unused one holds back its bucket and the later ones).
  std::vector<torch::Tensor> params{unused};
  for (auto* m : {&l1, &l2, &l3})
    for (auto& p : (*m)->parameters()) params.push_back(p);
  const auto loss_of = [&](int rank, int step, int micro) {
    auto g = torch::make_generator<at::CPUGeneratorImpl>(100 * rank + 10 * step + micro);
    auto x = torch::randn({4, 6}, g);
    return l3->forward(torch::tanh(l2->forward(torch::relu(l1->forward(x))))).pow(2).mean();
  };
  hd::GradientBuckets buckets(params, 96);  // small buckets: several launched mid-backward
  buckets.attach(comm);
  for (int step = 0; step < 2; ++step) {
    // Expected: the mean over ranks q of q's accumulated gradient (at the current weights).
    std::vector<torch::Tensor> want;
    for (auto& p : params) want.push_back(torch::zeros_like(p));
    for (int q = 0; q < W; ++q) {
      for (auto& p : params) p.mutable_grad() = torch::Tensor();
      for (int m = 0; m < 2; ++m) (loss_of(q, step, m) * 0.5).backward();
      for (std::size_t i = 0; i < params.size(); ++i)
        if (params[i].grad().defined()) want[i] += params[i].grad() / W;
    }
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    for (int m = 0; m < 2; ++m) {
      buckets.prepare_for_backward(m == 1);
      (loss_of(r, step, m) * 0.5).backward();
    }
    // Every bucket but the last (which holds the unused parameter) must have started inside the
    // backward.
    if (buckets.launched_during_backward() != buckets.num_buckets() - 1) {
      std::fprintf(stderr, "expected %lld of %lld buckets launched during the backward, got %lld\n",
                   static_cast<long long>(buckets.num_buckets() - 1),
                   static_cast<long long>(buckets.num_buckets()),
                   static_cast<long long>(buckets.launched_during_backward()));
      return 1;
    }
    buckets.finish();
    for (std::size_t i = 0; i < params.size(); ++i)
      if (!close(params[i].grad(), want[i])) {
        std::fprintf(stderr, "overlapped mean wrong for parameter %zu at step %d\n", i, step);
        return 1;
      }
    torch::NoGradGuard ng;  // move the weights so the second step's graph differs
    for (auto& p : params) p.sub_(0.1 * p.grad());
  }
  comm.barrier();
  return 0;
}

// The last rank dies after the group is up; the others must get an error, not hang.
int peer_dies(hd::Communicator& comm) {
  if (comm.rank() == comm.world_size() - 1) std::_Exit(3);
  try {
    for (int i = 0; i < 1000; ++i) (void)comm.allreduce(1.0);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "rank %d: expected error: %s\n", comm.rank(), e.what_without_backtrace());
    return 4;
  }
  return 5;
}

}  // namespace

int run_child(const char* scenario) {
  const std::string s(scenario);
  try {
    const auto env = hd::LaunchEnv::from_environment();
    if (!env) {
      std::fprintf(stderr, "child: WORLD_SIZE is not set\n");
      return 1;
    }
    hd::CommunicatorOptions opt;
    opt.timeout = timeout_from_env();
    if (s == "no_store") {  // rank 0 never starts the store: the others must give up in time
      if (env->rank == 0) return 0;
      try {
        hd::Communicator::create(*env, opt);
      } catch (const c10::Error& e) {
        std::fprintf(stderr, "rank %d: expected error: %s\n", env->rank,
                     e.what_without_backtrace());
        return 4;
      }
      return 5;
    }
    auto comm = hd::Communicator::create(*env, opt);
    if (s == "overlap") return overlap(*comm);
    if (s == "collectives") return collectives(*comm);
    if (s == "peer_dies") return peer_dies(*comm);
    if (s.starts_with("vocab_")) return run_vocab_child(s, comm);
    std::fprintf(stderr, "child: unknown scenario %s\n", scenario);
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "child: unexpected error: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: unexpected error: %s\n", e.what());
  }
  return 1;
}
