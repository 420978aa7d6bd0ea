// Writes the unlabelled pre-training corpus of the "rules" task (rules_task.hpp): one JSONL line
// {"prompt":...,"response":...} per prompt, one response each from the pairs' varied-quality
// generator, no gold reward or label. The corpus (~3 MB) is not shipped; generate it:
//
//   hafrm_gen_rules_corpus                                   # runs/rules-corpus.jsonl, seed
//   20240706 hafrm_gen_rules_corpus --out /tmp/corpus.jsonl --seed 7 --count 1000
//
// Options: --out FILE (parent directories are created), --seed N, --count N (at least 1).
// Prompts: 5-14 source letters, n 2-8, none a prompt of the shipped splits. A bad argument is a
// message naming the option on stderr and exit status 2. Prints one line: the file, the record
// count, the seed and the bytes written.
#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>

#include "generator_cli.hpp"
#include "hafrm_examples/rules_task.hpp"

namespace {
namespace rt = hafrm::examples::rules;

constexpr std::string_view kProgram = "hafrm_gen_rules_corpus";
constexpr std::string_view kDefaultOut = "runs/rules-corpus.jsonl";

void usage(std::ostream& os) {
  const auto spec = rt::default_corpus_spec();
  os << "usage: " << kProgram << " [--out FILE] [--seed N] [--count N]\n"
     << "Writes the unlabelled rules corpus as JSONL (default FILE: " << kDefaultOut
     << ", seed: " << spec.seed << ", count: " << spec.count << ").\n";
}
}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path out{std::string(kDefaultOut)};
  auto spec = rt::default_corpus_spec();
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        usage(std::cout);
        return 0;
      }
      if (arg != "--out" && arg != "--seed" && arg != "--count") {
        throw std::invalid_argument("unknown argument " + std::string(arg));
      }
      if (i + 1 >= argc) throw std::invalid_argument(std::string(arg) + " needs a value");
      const std::string value = argv[++i];
      if (arg == "--out") {
        if (value.empty()) throw std::invalid_argument("--out: expected a file name, got ''");
        out = value;
      } else if (arg == "--seed") {
        spec.seed = hafrm::tools::parse_count(arg, value);
      } else {
        spec.count = hafrm::tools::parse_count(arg, value);
        if (spec.count == 0) throw std::invalid_argument("--count: expected at least 1, got 0");
      }
    }
    if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
    rt::write_corpus_jsonl(out, rt::generate_corpus(spec));
    std::cout << out.string() << ": " << spec.count << " records, seed " << spec.seed << ", source "
              << spec.min_source << "-" << spec.max_source << " letters, n " << spec.min_target
              << "-" << spec.max_target << ", " << std::filesystem::file_size(out) << " bytes\n";
  } catch (const std::exception& e) {
    std::cerr << kProgram << ": " << e.what() << "\n";
    usage(std::cerr);
    return 2;
  }
  return 0;
}
