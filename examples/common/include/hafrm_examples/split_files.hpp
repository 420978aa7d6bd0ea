/// \file split_files.hpp
/// What the generated tasks (synthetic_task.hpp, rules_task.hpp) share: splits generated in order
/// with no prompt repeated across them, and one JSONL line per pair.
#pragma once

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

namespace hafrm::examples {

/// Each spec's split from `generate_split(spec, used)`; `used` is shared, so a prompt in train
/// never appears in eval or ood.
template <class Spec, class GenerateSplit>
auto generate_splits_in_order(const std::vector<Spec>& specs, GenerateSplit&& generate_split) {
  std::unordered_set<std::string> used;
  std::vector<decltype(generate_split(specs.front(), used))> splits;
  for (const auto& spec : specs) splits.push_back(generate_split(spec, used));
  return splits;
}

/// One `to_line(pair)` per line; a file that cannot be written fully is an error naming it.
template <class Pair, class ToLine>
void write_jsonl_lines(const std::filesystem::path& file, const std::vector<Pair>& pairs,
                       ToLine&& to_line) {
  std::ofstream out(file, std::ios::binary);
  if (!out) throw std::runtime_error("cannot write " + file.string());
  for (const auto& p : pairs) out << to_line(p) << '\n';
  if (!out.flush()) throw std::runtime_error("write failed: " + file.string());
}

}  // namespace hafrm::examples
