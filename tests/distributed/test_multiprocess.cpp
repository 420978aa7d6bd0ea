// Multi-process c10d tests on loopback: each scenario runs as separate processes with the
// variables torchrun sets, under a hard deadline (spawn.hpp); the ranks' own c10d timeout is a
// few seconds, so a fault must surface as an error long before the deadline.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <string>

#include "spawn.hpp"

namespace ht = hafrm::distributed::test;
using namespace std::chrono_literals;

namespace {
std::filesystem::path scratch(const std::string& name) { return ht::scratch("dist", name); }
using ht::all_output;
}  // namespace

TEST_CASE("collectives and bucketed gradient mean agree with a local reference", "[distributed]") {
  const int world = GENERATE(2, 3);
  const auto dir = scratch("coll" + std::to_string(world));
  const auto res = ht::run_ranks({ht::self_exe().string(), "--child", "collectives"}, world,
                                 ht::free_port(), dir, 120s, {"HAFRM_TEST_TIMEOUT_MS=30000"});
  INFO(all_output(res));
  for (const auto& r : res) CHECK(r.exit_code == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("bucket all-reduces overlapped with the backward give the mean gradient",
          "[distributed]") {
  const int world = GENERATE(2, 3);
  const auto dir = scratch("overlap" + std::to_string(world));
  const auto res = ht::run_ranks({ht::self_exe().string(), "--child", "overlap"}, world,
                                 ht::free_port(), dir, 120s, {"HAFRM_TEST_TIMEOUT_MS=30000"});
  INFO(all_output(res));
  for (const auto& r : res) CHECK(r.exit_code == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a rank that dies ends the others with an error, not a hang", "[distributed]") {
  const auto dir = scratch("dies");
  const auto t0 = std::chrono::steady_clock::now();
  const auto res = ht::run_ranks({ht::self_exe().string(), "--child", "peer_dies"}, 2,
                                 ht::free_port(), dir, 90s, {"HAFRM_TEST_TIMEOUT_MS=5000"});
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(all_output(res) << "\nwall " << secs << " s");
  CHECK(res[1].exit_code == 3);
  CHECK(res[0].exit_code == 4);  // the survivor raised c10d's error (not killed at the deadline)
  CHECK(res[0].output.find("expected error") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a store that cannot be reached ends the rank with an error", "[distributed]") {
  const auto dir = scratch("nostore");
  const auto res = ht::run_ranks({ht::self_exe().string(), "--child", "no_store"}, 2,
                                 ht::free_port(), dir, 90s, {"HAFRM_TEST_TIMEOUT_MS=3000"});
  INFO(all_output(res));
  CHECK(res[0].exit_code == 0);
  CHECK(res[1].exit_code == 4);
  CHECK(res[1].output.find("cannot reach the c10d store") != std::string::npos);
  std::filesystem::remove_all(dir);
}
