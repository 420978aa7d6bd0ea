/// \file split_files.hpp
/// What the generated tasks (synthetic_task.hpp, rules_task.hpp) share: splits generated in order
/// with no prompt repeated across them, the loader's text record fields, and one JSONL line per
/// pair. Each task brings generate_splits and write_jsonl into its namespace with a
/// using-declaration; the calls below find the task's own generate_split and to_json_line beside
/// its Spec and Pair types (argument-dependent lookup).
#pragma once

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace hafrm::examples {

/// A split of spec.count pairs from `draw(rng)`, rng seeded with spec.seed. `draw` returns no
/// pair when its prompt is already used (a clash, redrawn); more than 100 * count + 1000 draws
/// means the spec has too few distinct prompts, an error naming `fn` and the split.
template <class Split, class Spec, class Draw>
Split draw_split(const Spec& spec, std::string_view fn, Draw&& draw) {
  std::mt19937_64 rng(spec.seed);
  Split split{spec, {}};
  split.pairs.reserve(spec.count);
  std::size_t attempts = 0;
  while (split.pairs.size() < spec.count) {
    if (++attempts > 100 * spec.count + 1000) {
      throw std::runtime_error(std::string(fn) + " " + spec.name + ": too few distinct prompts");
    }
    if (auto p = draw(rng)) split.pairs.push_back(std::move(*p));
  }
  return split;
}

/// Each spec's split from its task's `generate_split(spec, used)`; `used` is shared, so a prompt
/// in train never appears in eval or ood.
template <class Spec>
auto generate_splits(const std::vector<Spec>& specs) {
  std::unordered_set<std::string> used;
  std::vector<decltype(generate_split(specs.front(), used))> splits;
  for (const auto& spec : specs) splits.push_back(generate_split(spec, used));
  return splits;
}

/// The fields of the text record form the loader reads (preference_records.hpp); a task adds
/// its own information fields after them.
template <class Pair>
nlohmann::ordered_json text_record(const Pair& p) {
  nlohmann::ordered_json j;
  j["prompt"] = p.prompt;
  j["chosen"] = p.chosen;
  j["rejected"] = p.rejected;
  return j;
}

/// One `to_json_line(pair)` per line; a file that cannot be written fully is an error naming it.
template <class Pair>
void write_jsonl(const std::filesystem::path& file, const std::vector<Pair>& pairs) {
  std::ofstream out(file, std::ios::binary);
  if (!out) throw std::runtime_error("cannot write " + file.string());
  for (const auto& p : pairs) out << to_json_line(p) << '\n';
  if (!out.flush()) throw std::runtime_error("write failed: " + file.string());
}

}  // namespace hafrm::examples
