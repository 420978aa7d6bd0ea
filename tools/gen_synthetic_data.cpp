// Writes the synthetic "sort the letters" preference splits (see synthetic_task.hpp for the
// rule) as JSONL. The shipped data/synthetic/*.jsonl are exactly this program's default output:
//
//   hafrm_gen_synthetic_data --out data/synthetic            # seed 20240704
//   hafrm_gen_synthetic_data --out /tmp/syn --seed 7 --train 500
#include <string>

#include "generator_cli.hpp"
#include "hafrm_examples/synthetic_task.hpp"

namespace {
namespace syn = hafrm::examples::synthetic;

struct SyntheticTask {
  static auto specs(uint64_t seed) { return syn::default_split_specs(seed); }
  template <class Specs>
  static auto generate(const Specs& specs) {
    return syn::generate_splits(specs);
  }
  template <class Pairs>
  static void write(const std::filesystem::path& file, const Pairs& pairs) {
    syn::write_jsonl(file, pairs);
  }
  template <class Split>
  static std::string describe(const Split& split) {
    return std::to_string(split.pairs.size()) + " pairs, prompt length " +
           std::to_string(split.spec.min_length) + "-" + std::to_string(split.spec.max_length);
  }
};
}  // namespace

int main(int argc, char** argv) {
  return hafrm::tools::run_generator(
      argc, argv, {"hafrm_gen_synthetic_data", "data/synthetic", syn::kDefaultSeed},
      SyntheticTask{});
}
