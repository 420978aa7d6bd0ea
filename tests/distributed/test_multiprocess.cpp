// Multi-process c10d tests on loopback: each scenario (child.cpp) runs as separate processes with
// the variables torchrun sets, under a hard deadline (spawn.hpp); the ranks' own c10d timeout is
// a few seconds, so a fault must surface as an error long before the deadline.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "spawn.hpp"

namespace ht = hafrm::distributed::test;
using namespace std::chrono_literals;

TEST_CASE("collectives and bucketed gradient mean agree with a local reference", "[distributed]") {
  const int world = GENERATE(2, 3);
  const auto run = ht::run_scenario("collectives", world, {.deadline = 120s, .timeout = 30s});
  INFO(run.report());
  CHECK(run.exit_codes() == std::vector<int>(world, 0));
}

TEST_CASE("bucket all-reduces overlapped with the backward give the mean gradient",
          "[distributed]") {
  const int world = GENERATE(2, 3);
  const auto run = ht::run_scenario("overlap", world, {.deadline = 120s, .timeout = 30s});
  INFO(run.report());
  CHECK(run.exit_codes() == std::vector<int>(world, 0));
}

TEST_CASE("a rank that dies ends the others with an error, not a hang", "[distributed]") {
  const auto run = ht::run_scenario("peer_dies", 2, {.deadline = 90s, .timeout = 5s});
  INFO(run.report());
  // Rank 1 exits on its own (3); rank 0 raised hafrm's error (4), it was not killed.
  CHECK(run.exit_codes() == std::vector<int>{4, 3});
  CHECK_THAT(run.ranks[0].output,
             Catch::Matchers::Contains(
                 "expected error: hafrm::distributed::Communicator::wait: rank 0: a gloo "
                 "collective"));
}

TEST_CASE("a store that cannot be reached ends the rank with an error", "[distributed]") {
  const auto run = ht::run_scenario("no_store", 2, {.deadline = 90s, .timeout = 3s});
  INFO(run.report());
  CHECK(run.exit_codes() == std::vector<int>{0, 4});
  CHECK_THAT(run.ranks[1].output,
             Catch::Matchers::Contains("expected error: hafrm::distributed::Communicator::create: "
                                       "rank 1: cannot reach the c10d store at 127.0.0.1:"));
}
