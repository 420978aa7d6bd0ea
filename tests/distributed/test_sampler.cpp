// The distributed sampler and the launch variables: single process, no process group.
// LibTorch before Catch2: c10's logging header defines a CHECK macro that Catch2's must replace.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <hafrm/distributed/launch_env.hpp>
#include <hafrm/distributed/sampler.hpp>

namespace hd = hafrm::distributed;

namespace {
// The c10::Error message of f() (without LibTorch's backtrace); fails the test when f() throws
// nothing or something else.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  FAIL("expected a c10::Error");
  return {};
}
}  // namespace

TEST_CASE("sampler: ranks never overlap, and together cover each global batch", "[sampler]") {
  const int64_t n = GENERATE(97, 128, 1000);
  const int world = GENERATE(1, 2, 3, 4);
  const int64_t b = GENERATE(1, 5, 8);
  if (n < b * world) return;
  std::vector<hd::DistributedSampler> ranks;
  for (int r = 0; r < world; ++r) ranks.emplace_back(n, b, r, world, /*seed=*/42);
  const auto order = ranks[0].epoch_order(3);
  std::set<int64_t> seen;
  for (int64_t k = 0; k < ranks[0].batches_per_epoch(); ++k) {
    std::vector<int64_t> global;
    for (int r = 0; r < world; ++r) {
      CHECK(ranks[static_cast<std::size_t>(r)].epoch_order(3) == order);  // same on every rank
      const auto mine = ranks[static_cast<std::size_t>(r)].rank_batch(order, k);
      REQUIRE(static_cast<int64_t>(mine.size()) == b);
      for (auto i : mine) CHECK(seen.insert(i).second);  // no example twice in an epoch
      global.insert(global.end(), mine.begin(), mine.end());
    }
    // The ranks' slices, in rank order, are exactly the global batch of the epoch's order.
    CHECK(std::equal(global.begin(), global.end(), order.begin() + k * b * world));
  }
  // Only the last partial global batch is left out.
  CHECK(static_cast<int64_t>(seen.size()) == (n / (b * world)) * b * world);
  CHECK(n - static_cast<int64_t>(seen.size()) < b * world);
}

TEST_CASE("sampler: an epoch's order depends on seed and epoch, not on the world size",
          "[sampler]") {
  const hd::DistributedSampler one(500, 8, 0, 1, 7), four(500, 2, 3, 4, 7), other(500, 8, 0, 1, 8);
  const auto e0 = one.epoch_order(0);
  CHECK(four.epoch_order(0) == e0);
  CHECK(one.epoch_order(1) != e0);
  CHECK(other.epoch_order(0) != e0);
  auto sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 500; ++i) CHECK(sorted[static_cast<std::size_t>(i)] == i);
  // A global batch is the same examples whatever the world size: 1 x 8 == 4 ranks x 2.
  for (int64_t k = 0; k < one.batches_per_epoch(); ++k) {
    auto whole = one.rank_batch(e0, k);
    std::vector<int64_t> joined;
    for (int r = 0; r < 4; ++r) {
      const auto part = hd::DistributedSampler(500, 2, r, 4, 7).rank_batch(e0, k);
      joined.insert(joined.end(), part.begin(), part.end());
    }
    CHECK(joined == whole);
  }
}

TEST_CASE("sampler and rank_slice reject bad arguments by name", "[sampler]") {
  using Catch::Matchers::Contains;
  using Catch::Matchers::StartsWith;
  const std::string ctor = "hafrm::distributed::DistributedSampler: argument ";
  CHECK_THAT(error_of([] { hd::DistributedSampler(10, 4, 0, 3, 0); }),
             StartsWith(ctor + "'dataset_size' expected at least one global batch") &&
                 Contains("= 12 examples), got 10"));
  CHECK_THAT(error_of([] { hd::DistributedSampler(10, 1, 2, 2, 0); }),
             StartsWith(ctor + "'rank' expected in [0, 2)") && Contains("got 2"));
  CHECK_THAT(error_of([] { hd::DistributedSampler(10, 1, 0, 0, 0); }),
             StartsWith(ctor + "'world_size' expected >= 1, got 0"));
  CHECK_THAT(error_of([] { hd::DistributedSampler(10, 0, 0, 1, 0); }),
             StartsWith(ctor + "'per_rank_batch' expected >= 1, got 0"));
  const hd::DistributedSampler s(10, 2, 0, 2, 0);  // 2 global batches of 4
  const auto order = s.epoch_order(0);
  CHECK_THAT(error_of([&] { s.rank_batch(order, 2); }),
             StartsWith("hafrm::distributed::DistributedSampler::rank_batch: argument 'index' "
                        "expected in [0, 2)"));
  CHECK_THAT(error_of([&] { s.rank_batch(std::vector<int64_t>(9), 0); }),
             StartsWith("hafrm::distributed::DistributedSampler::rank_batch: argument 'order'") &&
                 Contains("10 entries, got 9"));
  const std::vector<int64_t> g = {1, 2, 3, 4, 5};
  CHECK_THAT(error_of([&] { hd::rank_slice(g, 0, 2); }),
             StartsWith("hafrm::distributed::rank_slice: argument 'global_batch' expected a "
                        "number of entries divisible by world_size 2, got 5"));
  CHECK_THAT(error_of([&] { hd::rank_slice(g, -1, 5); }),
             StartsWith("hafrm::distributed::rank_slice: argument 'rank' expected in [0, 5)"));
  CHECK(hd::rank_slice(std::vector<int64_t>{1, 2, 3, 4, 5, 6}, 1, 3) == std::vector<int64_t>{3, 4});
}

namespace {
struct EnvGuard {  // sets variables for one test and restores the previous state
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  void set(const char* k, const char* v) {
    const char* old = std::getenv(k);
    saved.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
    if (v)
      ::setenv(k, v, 1);
    else
      ::unsetenv(k);
  }
  ~EnvGuard() {
    for (auto it = saved.rbegin(); it != saved.rend(); ++it)
      if (it->second)
        ::setenv(it->first.c_str(), it->second->c_str(), 1);
      else
        ::unsetenv(it->first.c_str());
  }
};
}  // namespace

TEST_CASE("launch variables: absent, valid, and malformed ones named", "[sampler]") {
  using Catch::Matchers::StartsWith;
  const std::string fn = "hafrm::distributed::LaunchEnv::from_environment: environment variable ";
  const auto from_env = [] { (void)hd::LaunchEnv::from_environment(); };
  EnvGuard g;
  for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                        "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT"})
    g.set(k, nullptr);
  CHECK_FALSE(hd::LaunchEnv::from_environment().has_value());
  g.set("WORLD_SIZE", "0");
  CHECK_THAT(error_of(from_env),
             StartsWith(fn + "'WORLD_SIZE' expected an integer in [1, 1048576], got \"0\""));
  g.set("WORLD_SIZE", "2");
  CHECK_THAT(error_of(from_env), StartsWith(fn + "'RANK' expected to be set, as WORLD_SIZE is"));
  g.set("RANK", "2");
  CHECK_THAT(error_of(from_env),
             StartsWith(fn + "'RANK' expected an integer in [0, 1], got \"2\""));
  g.set("RANK", "1");
  CHECK_THAT(error_of(from_env), StartsWith(fn + "'MASTER_ADDR' expected to be set"));
  g.set("MASTER_ADDR", "10.0.0.1");
  g.set("MASTER_PORT", "http");
  CHECK_THAT(error_of(from_env),
             StartsWith(fn + "'MASTER_PORT' expected an integer in [1, 65535], got \"http\""));
  g.set("MASTER_PORT", "29501");
  g.set("TORCHELASTIC_USE_AGENT_STORE", "True");
  const auto e = hd::LaunchEnv::from_environment();
  REQUIRE(e.has_value());
  CHECK(e->rank == 1);
  CHECK(e->world_size == 2);
  CHECK(e->local_rank == 1);  // defaults to RANK
  CHECK(e->master_addr == "10.0.0.1");
  CHECK(e->master_port == 29501);
  CHECK(e->agent_store);
}
