// Vocabulary-parallel log-probs on 2 and 3 processes over loopback (vocab_child.cpp holds each
// rank's checks against the unsplit computation), and the bad-input paths, each under a hard
// deadline (spawn.hpp) with a c10d timeout well inside it.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "spawn.hpp"

namespace ht = hafrm::distributed::test;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

TEST_CASE("vocab-parallel log-probs, extras, gradients and forward_pair equal the unsplit ones",
          "[vocab_parallel]") {
  const int world = GENERATE(2, 3);
  const auto run = ht::run_scenario("vocab_parallel", world, {.deadline = 150s, .timeout = 30s});
  INFO(run.report());
  CHECK(run.exit_codes() == std::vector<int>(world, 0));
}

TEST_CASE("vocab-parallel packed pair batches equal the unsplit packed path", "[vocab_parallel]") {
  const auto run = ht::run_scenario("vocab_packed", 2, {.deadline = 90s, .timeout = 20s});
  INFO(run.report());
  CHECK(run.exit_codes() == std::vector<int>(2, 0));
}

TEST_CASE("vocab-parallel bad inputs raise errors naming the argument on every rank",
          "[vocab_parallel]") {
  const int world = GENERATE(2, 3);
  const auto run = ht::run_scenario("vocab_bad_input", world, {.deadline = 90s, .timeout = 20s});
  INFO(run.report());
  CHECK(run.exit_codes() == std::vector<int>(world, 0));
  for (const auto& r : run.ranks)
    CHECK_THAT(r.output, Contains("expected error (overlapping ranges)"));
}

TEST_CASE("vocab-parallel log-probs over tensor-parallel subgroups (Communicator::split)",
          "[vocab_parallel]") {
  const int world = GENERATE(2, 3);
  const auto run = ht::run_scenario("vocab_subgroups", world, {.deadline = 150s, .timeout = 30s});
  INFO(run.report());
  CHECK(run.exit_codes() == std::vector<int>(world, 0));
  for (const auto& r : run.ranks) CHECK_THAT(r.output, Contains("expected error (negative color)"));
}
