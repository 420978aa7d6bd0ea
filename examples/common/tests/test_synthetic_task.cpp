// The synthetic task: portable draws, determinism, the shipped files being exactly the
// generator's output, and every shipped record obeying the documented rule.
#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <unordered_set>

#include "hafrm/data/preference_records.hpp"
#include "hafrm_examples/synthetic_task.hpp"
#include "test_util.hpp"

namespace hx = hafrm::examples;
namespace hd = hafrm::data;
namespace syn = hafrm::examples::synthetic;

namespace {

std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string as_jsonl(const std::vector<syn::Pair>& pairs) {
  std::string out;
  for (const auto& p : pairs) out += syn::to_json_line(p) + "\n";
  return out;
}

bool is_sorted(const std::string& s) { return std::is_sorted(s.begin(), s.end()); }

}  // namespace

TEST_CASE("uniform_below stays in range and is close to uniform", "[synthetic]") {
  std::mt19937_64 rng(123);
  CHECK(syn::uniform_below(rng, 1) == 0);
  CHECK_THROWS_AS(syn::uniform_below(rng, 0), std::invalid_argument);
  const uint64_t n = 7;
  std::vector<int> counts(n, 0);
  const int draws = 70000;
  for (int i = 0; i < draws; ++i) {
    const auto v = syn::uniform_below(rng, n);
    REQUIRE(v < n);
    ++counts[v];
  }
  for (int c : counts) CHECK(std::abs(c - draws / int(n)) < draws / int(n) / 20);  // within 5%
}

TEST_CASE("mt19937_64 gives the values the C++ standard fixes", "[synthetic]") {
  // [rand.predef]: the 10000th draw of a default-constructed mt19937_64. If this ever failed,
  // the shipped data would not be reproducible on this platform.
  std::mt19937_64 rng;
  rng.discard(9999);
  CHECK(rng() == 9981545732273789042ull);
}

TEST_CASE("corruptions break the rule in the documented way", "[synthetic]") {
  std::mt19937_64 rng(7);
  CHECK(syn::corrupt("aaaa", syn::Corruption::kSwap, rng).empty());  // no two different letters
  for (int i = 0; i < 500; ++i) {
    const auto p = syn::generate_pair(rng, 1, 6);
    INFO(p.prompt << " -> " << p.rejected);
    REQUIRE(syn::follows_rule(p.prompt, p.chosen));
    REQUIRE_FALSE(syn::follows_rule(p.prompt, p.rejected));
    REQUIRE(p.rejected.size() == p.chosen.size());
  }
}

TEST_CASE("generation is deterministic in the seed", "[synthetic]") {
  const auto a = syn::generate_default_splits(42);
  const auto b = syn::generate_default_splits(42);
  const auto c = syn::generate_default_splits(43);
  REQUIRE(a.size() == 3);
  for (std::size_t k = 0; k < a.size(); ++k) {
    CHECK(as_jsonl(a[k].pairs) == as_jsonl(b[k].pairs));
    CHECK(as_jsonl(a[k].pairs) != as_jsonl(c[k].pairs));
  }
}

TEST_CASE("the shipped data is exactly the generator's default output", "[synthetic][data]") {
  // Fails if the generator changes without regenerating data/synthetic (see data/README.md).
  for (const auto& split : syn::generate_default_splits()) {
    const auto file = hx::test::data_dir() / "synthetic" / (split.spec.name + ".jsonl");
    INFO(file.string());
    CHECK(read_file(file) == as_jsonl(split.pairs));
  }
}

TEST_CASE("every shipped record follows the rule", "[synthetic][data]") {
  std::unordered_set<std::string> all_prompts;
  std::map<std::string, std::pair<std::size_t, std::size_t>> lengths;  // split -> [min, max]
  for (const auto& spec : syn::default_split_specs()) {
    const auto file = hx::test::data_dir() / "synthetic" / (spec.name + ".jsonl");
    INFO(file.string());
    const auto loaded = hd::load_preference_records(file);  // the trainers' own loader
    REQUIRE(loaded.records.size() == spec.count);
    std::ifstream raw(file);
    std::size_t swaps = 0, min_len = SIZE_MAX, max_len = 0;
    for (const auto& rec : loaded.records) {
      const auto& r = std::get<hd::TextRecord>(rec);
      std::string line;
      std::getline(raw, line);
      const auto kind = nlohmann::json::parse(line).at("corruption").get<std::string>();
      INFO("line " << r.line << ": " << line);
      REQUIRE(syn::follows_rule(r.prompt, r.chosen));
      REQUIRE_FALSE(syn::follows_rule(r.prompt, r.rejected));
      REQUIRE(r.rejected.size() == r.prompt.size());
      REQUIRE(std::all_of(r.prompt.begin(), r.prompt.end(),
                          [](char ch) { return ch >= 'a' && ch <= 'z'; }));
      if (kind == "swap") {
        // Same letters, wrong order.
        ++swaps;
        REQUIRE(syn::apply_rule(r.rejected) == r.chosen);
        REQUIRE_FALSE(is_sorted(r.rejected));
      } else {
        // Right order, exactly one letter different.
        REQUIRE(kind == "substitute");
        REQUIRE(is_sorted(r.rejected));
        std::size_t diffs = 0;
        for (std::size_t i = 0; i < r.chosen.size(); ++i) diffs += r.chosen[i] != r.rejected[i];
        REQUIRE(diffs == 1);
      }
      REQUIRE(all_prompts.insert(r.prompt).second);  // unique within and across splits
      min_len = std::min(min_len, r.prompt.size());
      max_len = std::max(max_len, r.prompt.size());
    }
    CHECK(min_len == spec.min_length);
    CHECK(max_len == spec.max_length);
    // The two corruption kinds are drawn with equal probability.
    CHECK(swaps > spec.count * 2 / 5);
    CHECK(swaps < spec.count * 3 / 5);
    lengths[spec.name] = {min_len, max_len};
  }
  CHECK(lengths["ood"].first > lengths["train"].second);  // ood prompts are longer than train's
}
