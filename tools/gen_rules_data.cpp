// Writes the "follow the instructions" preference splits (hidden gold reward, Bradley-Terry
// labels; see rules_task.hpp) as JSONL and prints each split's label noise. The shipped
// data/rules/*.jsonl are exactly this program's default output:
//
//   hafrm_gen_rules_data --out data/rules                  # seed 20240705
//   hafrm_gen_rules_data --out /tmp/rules --seed 7 --train 500
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "hafrm_examples/rules_task.hpp"

namespace {

void usage(std::ostream& os) {
  os << "usage: hafrm_gen_rules_data [--out DIR] [--seed N] [--train N] [--eval N] [--ood N]\n"
        "Writes DIR/{train,eval,ood}.jsonl (default DIR: data/rules, seed: "
     << hafrm::examples::rules::kDefaultSeed << ").\n";
}

uint64_t parse_count(std::string_view flag, const std::string& value) {
  std::size_t used = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || value[0] == '-') {
    throw std::invalid_argument(std::string(flag) + ": '" + value + "' is not a number");
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  namespace rt = hafrm::examples::rules;
  std::filesystem::path out_dir = "data/rules";
  uint64_t seed = rt::kDefaultSeed;
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
    auto specs = rt::default_split_specs(seed);
    for (int k = 0; k < 3; ++k) {
      if (counts[k]) specs[k].count = *counts[k];
    }
    std::filesystem::create_directories(out_dir);
    for (const auto& split : rt::generate_splits(specs)) {
      const auto file = out_dir / (split.spec.name + ".jsonl");
      rt::write_jsonl(file, split.pairs);
      char noise[32];
      std::snprintf(noise, sizeof noise, "%.1f%%", 100.0 * rt::disagreement(split.pairs));
      std::cout << file.string() << ": " << split.pairs.size() << " pairs, source "
                << split.spec.min_source << "-" << split.spec.max_source << " letters, n "
                << split.spec.min_target << "-" << split.spec.max_target
                << ", labels disagreeing with gold " << noise << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "hafrm_gen_rules_data: " << e.what() << "\n";
    usage(std::cerr);
    return 2;
  }
  return 0;
}
