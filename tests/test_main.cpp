// Catch2's main; torch runs single-threaded per test unless a test asks otherwise, so results do
// not depend on the machine's core count.
//
// Every test case starts from a seed of its own (a hash of its name), so its random inputs do
// not depend on which other tests ran before it: a failure seen in the full run reproduces when
// the one test case is run alone (an unseeded draw once hid a test-formula overflow this way).
#define CATCH_CONFIG_MAIN
#include <ATen/Context.h>
#include <catch2/catch.hpp>

#include <cstdint>
#include <string_view>

namespace {

constexpr std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

struct SeedEachTestCase : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    at::manual_seed(fnv1a(info.name));
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(SeedEachTestCase)
