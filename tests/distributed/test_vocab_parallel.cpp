// Vocabulary-parallel log-probs on 2 and 3 processes over loopback (vocab_child.cpp holds each
// rank's checks against the unsplit computation), and the bad-input paths, each under a hard
// deadline (spawn.hpp) with a c10d timeout well inside it.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <string>

#include "spawn.hpp"

namespace ht = hafrm::distributed::test;
using namespace std::chrono_literals;

namespace {
std::filesystem::path scratch(const std::string& name) { return ht::scratch("vocab", name); }
using ht::all_output;
}  // namespace

TEST_CASE("vocab-parallel log-probs, extras, gradients and forward_pair equal the unsplit ones",
          "[vocab_parallel]") {
  const int world = GENERATE(2, 3);
  const auto dir = scratch("ok" + std::to_string(world));
  const auto res = ht::run_ranks({ht::self_exe().string(), "--child", "vocab_parallel"}, world,
                                 ht::free_port(), dir, 150s, {"HAFRM_TEST_TIMEOUT_MS=30000"});
  INFO(all_output(res));
  for (const auto& r : res) CHECK(r.exit_code == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("vocab-parallel bad inputs raise errors naming the argument on every rank",
          "[vocab_parallel]") {
  const int world = GENERATE(2, 3);
  const auto dir = scratch("bad" + std::to_string(world));
  const auto res = ht::run_ranks({ht::self_exe().string(), "--child", "vocab_bad_input"}, world,
                                 ht::free_port(), dir, 90s, {"HAFRM_TEST_TIMEOUT_MS=20000"});
  INFO(all_output(res));
  for (const auto& r : res) {
    CHECK(r.exit_code == 0);
    CHECK(r.output.find("expected error (overlapping ranges)") != std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("vocab-parallel log-probs over tensor-parallel subgroups (Communicator::split)",
          "[vocab_parallel]") {
  const int world = GENERATE(2, 3);
  const auto dir = scratch("groups" + std::to_string(world));
  const auto res = ht::run_ranks({ht::self_exe().string(), "--child", "vocab_subgroups"}, world,
                                 ht::free_port(), dir, 150s, {"HAFRM_TEST_TIMEOUT_MS=30000"});
  INFO(all_output(res));
  for (const auto& r : res) {
    CHECK(r.exit_code == 0);
    CHECK(r.output.find("expected error (negative color)") != std::string::npos);
  }
  std::filesystem::remove_all(dir);
}
