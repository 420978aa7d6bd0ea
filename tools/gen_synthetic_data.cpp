// Writes the synthetic "sort the letters" preference splits (see synthetic_task.hpp for the
// rule) as JSONL. The shipped data/synthetic/*.jsonl are exactly this program's default output:
//
//   hafrm_gen_synthetic_data --out data/synthetic            # seed 20240704
//   hafrm_gen_synthetic_data --out /tmp/syn --seed 7 --train 500
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "hafrm_examples/synthetic_task.hpp"

namespace {

void usage(std::ostream& os) {
  os << "usage: hafrm_gen_synthetic_data [--out DIR] [--seed N] [--train N] [--eval N] "
        "[--ood N]\n"
        "Writes DIR/{train,eval,ood}.jsonl (default DIR: data/synthetic, seed: "
     << hafrm::examples::synthetic::kDefaultSeed << ").\n";
}

uint64_t parse_count(std::string_view flag, const std::string& value) {
  std::size_t used = 0;
  const unsigned long long v = std::stoull(value, &used);
  if (used != value.size()) throw std::invalid_argument(std::string(flag) + ": not a number");
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  namespace syn = hafrm::examples::synthetic;
  std::filesystem::path out_dir = "data/synthetic";
  uint64_t seed = syn::kDefaultSeed;
  std::optional<std::size_t> counts[3];  // --train/--eval/--ood overrides, in split order
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        usage(std::cout);
        return 0;
      }
      if (i + 1 >= argc) throw std::invalid_argument(std::string(arg) + " needs a value");
      const std::string value = argv[++i];
      if (arg == "--out") {
        out_dir = value;
      } else if (arg == "--seed") {
        seed = parse_count(arg, value);
      } else if (arg == "--train" || arg == "--eval" || arg == "--ood") {
        const int k = arg == "--train" ? 0 : arg == "--eval" ? 1 : 2;
        counts[k] = parse_count(arg, value);
      } else {
        throw std::invalid_argument("unknown argument " + std::string(arg));
      }
    }
    auto specs = syn::default_split_specs(seed);
    for (int k = 0; k < 3; ++k) {
      if (counts[k]) specs[k].count = *counts[k];
    }
    std::filesystem::create_directories(out_dir);
    for (const auto& split : syn::generate_splits(specs)) {
      const auto file = out_dir / (split.spec.name + ".jsonl");
      syn::write_jsonl(file, split.pairs);
      std::cout << file.string() << ": " << split.pairs.size() << " pairs, prompt length "
                << split.spec.min_length << "-" << split.spec.max_length << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "hafrm_gen_synthetic_data: " << e.what() << "\n";
    usage(std::cerr);
    return 2;
  }
  return 0;
}
