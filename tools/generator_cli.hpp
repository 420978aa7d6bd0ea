// tools/generator_cli.hpp: the command line shared by the data generators (gen_synthetic_data,
// gen_rules_data): --out DIR, --seed N, --train/--eval/--ood N, and a task's optional variant
// flag (gen_rules_data --skewed). A generator supplies its task's split specs, its generator, its
// writer and a one-line description of each written split.
#pragma once

#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace hafrm::tools {

// A non-negative decimal count; the flag's name is in the error.
inline uint64_t parse_count(std::string_view flag, const std::string& value) {
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

// A second set of splits chosen by a flag without a value; empty `flag` is none.
struct GeneratorVariant {
  std::string_view flag;              // "--skewed"
  std::string_view help;              // one usage line, after the flag
  std::filesystem::path default_out;  // used unless --out is given
  uint64_t default_seed = 0;          // used unless --seed is given
};

struct GeneratorInfo {
  std::string_view program;           // for messages: "hafrm_gen_rules_data"
  std::filesystem::path default_out;  // "data/rules"
  uint64_t default_seed = 0;
  GeneratorVariant variant = {};
};

// Parses the command line and writes DIR/<split>.jsonl for each split. Task supplies
//   specs(seed)          -> a range of split specs with `.name` and a writable `.count`,
//                           in the order train, eval, ood;
//   variant_specs(seed)  -> the same for info.variant's flag (needed only with a variant);
//   generate(specs)      -> a range of splits with `.spec` and `.pairs`;
//   write(file, pairs)   -> writes one split;
//   describe(split)      -> the rest of the line printed after "FILE: ".
// Returns main()'s exit status: 0, or 2 after a message on stderr.
template <class Task>
int run_generator(int argc, char** argv, const GeneratorInfo& info, const Task& task) {
  const GeneratorVariant& variant = info.variant;
  auto usage = [&](std::ostream& os) {
    os << "usage: " << info.program;
    if (!variant.flag.empty()) os << " [" << variant.flag << "]";
    os << " [--out DIR] [--seed N] [--train N] [--eval N] [--ood N]\n"
       << "Writes DIR/{train,eval,ood}.jsonl (default DIR: " << info.default_out.string()
       << ", seed: " << info.default_seed << ").\n";
    if (!variant.flag.empty()) {
      os << variant.flag << ": " << variant.help
         << " (default DIR: " << variant.default_out.string() << ", seed: " << variant.default_seed
         << ").\n";
    }
  };
  std::optional<std::filesystem::path> out_arg;
  std::optional<uint64_t> seed_arg;
  bool use_variant = false;
  std::optional<std::size_t> counts[3];  // --train/--eval/--ood overrides, in split order
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        usage(std::cout);
        return 0;
      }
      if (!variant.flag.empty() && arg == variant.flag) {
        use_variant = true;
        continue;
      }
      if (i + 1 >= argc) throw std::invalid_argument(std::string(arg) + " needs a value");
      const std::string value = argv[++i];
      if (arg == "--out") {
        out_arg = value;
      } else if (arg == "--seed") {
        seed_arg = parse_count(arg, value);
      } else if (arg == "--train" || arg == "--eval" || arg == "--ood") {
        const int k = arg == "--train" ? 0 : arg == "--eval" ? 1 : 2;
        counts[k] = parse_count(arg, value);
      } else {
        throw std::invalid_argument("unknown argument " + std::string(arg));
      }
    }
    const std::filesystem::path out_dir =
        out_arg.value_or(use_variant ? variant.default_out : info.default_out);
    const uint64_t seed = seed_arg.value_or(use_variant ? variant.default_seed : info.default_seed);
    auto specs = task.specs(seed);
    if constexpr (requires { task.variant_specs(seed); }) {
      if (use_variant) specs = task.variant_specs(seed);
    } else if (use_variant) {
      throw std::logic_error(std::string(variant.flag) + ": the task has no variant_specs");
    }
    for (int k = 0; k < 3; ++k) {
      if (counts[k]) specs[k].count = *counts[k];
    }
    std::filesystem::create_directories(out_dir);
    for (const auto& split : task.generate(specs)) {
      const auto file = out_dir / (split.spec.name + ".jsonl");
      task.write(file, split.pairs);
      std::cout << file.string() << ": " << task.describe(split) << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << info.program << ": " << e.what() << "\n";
    usage(std::cerr);
    return 2;
  }
  return 0;
}

}  // namespace hafrm::tools
