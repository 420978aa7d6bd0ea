// Writes the "follow the instructions" preference splits (hidden gold reward, Bradley-Terry
// labels; see rules_task.hpp) as JSONL and prints each split's label noise. The shipped
// data/rules/*.jsonl are exactly this program's default output; --skewed writes the
// length-skewed variant instead (default_skewed_specs, generated, not shipped):
//
//   hafrm_gen_rules_data --out data/rules                  # seed 20240705
//   hafrm_gen_rules_data --out /tmp/rules --seed 7 --train 500
//   hafrm_gen_rules_data --skewed                          # runs/rules-skewed, seed 20240707
#include <cstdio>
#include <string>

#include "generator_cli.hpp"
#include "hafrm_examples/rules_task.hpp"

namespace {
namespace rt = hafrm::examples::rules;

struct RulesTask {
  static auto specs(uint64_t seed) { return rt::default_split_specs(seed); }
  static auto variant_specs(uint64_t seed) { return rt::default_skewed_specs(seed); }
  template <class Specs>
  static auto generate(const Specs& specs) {
    return rt::generate_splits(specs);
  }
  template <class Pairs>
  static void write(const std::filesystem::path& file, const Pairs& pairs) {
    rt::write_jsonl(file, pairs);
  }
  template <class Split>
  static std::string describe(const Split& split) {
    char noise[32];
    std::snprintf(noise, sizeof noise, "%.1f%%", 100.0 * rt::disagreement(split.pairs));
    const rt::LengthTail& t = split.spec.tail;
    std::string tail;
    if (t.enabled()) {
      tail = " (" + std::to_string(t.source_percent) + "% " + std::to_string(t.min_source) + "-" +
             std::to_string(t.max_source) + "), rambles of " + std::to_string(t.min_ramble) + "-" +
             std::to_string(t.max_ramble) + " letters";
    }
    return std::to_string(split.pairs.size()) + " pairs, source " +
           std::to_string(split.spec.min_source) + "-" + std::to_string(split.spec.max_source) +
           " letters" + tail + ", n " + std::to_string(split.spec.min_target) + "-" +
           std::to_string(split.spec.max_target) + ", labels disagreeing with gold " + noise;
  }
};
}  // namespace

int main(int argc, char** argv) {
  return hafrm::tools::run_generator(
      argc, argv,
      {"hafrm_gen_rules_data",
       "data/rules",
       rt::kDefaultSeed,
       {"--skewed", "write the length-skewed variant (default_skewed_specs) instead",
        "runs/rules-skewed", rt::kDefaultSkewedSeed}},
      RulesTask{});
}
