// The shipped synthetic preference task ("sort the letters"), with a rule that makes preference
// accuracy exactly measurable.
//
// Rule. A prompt is a string of lowercase letters a-z. The correct response is the prompt's
// letters sorted ascending (byte order). `chosen` is always the correct response. `rejected` is
// `chosen` with exactly ONE corruption, of one of two kinds, drawn with equal probability:
//   swap        two adjacent, different letters are exchanged: the letters are right, the order
//               is not (detectable from the response alone);
//   substitute  one letter is replaced by a different one that keeps the response sorted: the
//               order is right, the letters are not (detectable only by comparing with the
//               prompt).
// Chosen and rejected always have the prompt's length, so length gives nothing away. A swap is
// impossible when all letters are equal; that pair is a substitute instead.
//
// Draws are reproducible on every platform: std::mt19937_64 is fully specified and bounded
// draws use uniform_below() (the std:: distributions are implementation-defined).
//
//   #include <hafrm_examples/synthetic_task.hpp>
//   namespace syn = hafrm::examples::synthetic;
//   auto splits = syn::generate_default_splits(syn::kDefaultSeed);   // train, eval, ood
//   const syn::Pair& p = splits[0].pairs[0];
//   assert(syn::follows_rule(p.prompt, p.chosen) && !syn::follows_rule(p.prompt, p.rejected));
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "hafrm_examples/split_files.hpp"

namespace hafrm::examples::synthetic {

// generate_splits(specs) and write_jsonl(file, pairs) for this task's SplitSpec and Pair:
// split_files.hpp.
using examples::generate_splits;
using examples::write_jsonl;

inline constexpr uint64_t kDefaultSeed = 20240704;
inline constexpr char kFirstLetter = 'a';
inline constexpr char kLastLetter = 'z';

enum class Corruption { kSwap, kSubstitute };

inline const char* to_string(Corruption c) {
  return c == Corruption::kSwap ? "swap" : "substitute";
}

struct Pair {
  std::string prompt;
  std::string chosen;
  std::string rejected;
  Corruption corruption = Corruption::kSwap;
};

/// One split: `count` pairs with prompt lengths uniform in [min_length, max_length].
struct SplitSpec {
  std::string name;
  std::size_t count = 0;
  std::size_t min_length = 0;
  std::size_t max_length = 0;
  uint64_t seed = 0;
};

struct Split {
  SplitSpec spec;
  std::vector<Pair> pairs;
};

/// Uniform integer in [0, n) by rejection: 2^64 mod n low values are redrawn so every residue is
/// equally likely. Portable, unlike std::uniform_int_distribution.
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  if (n == 0) throw std::invalid_argument("uniform_below: n must be positive");
  const uint64_t threshold = (0 - n) % n;  // == 2^64 mod n
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % n;
  }
}

/// The correct response: the prompt's letters sorted ascending.
inline std::string apply_rule(std::string_view prompt) {
  std::string s(prompt);
  std::sort(s.begin(), s.end());
  return s;
}

inline bool follows_rule(std::string_view prompt, std::string_view response) {
  return response == apply_rule(prompt);
}

/// `chosen` with one corruption of the given kind, or "" if that kind is impossible. The position
/// is uniform over the positions that allow the corruption, then (substitute) the new letter is
/// uniform over the letters that keep the string sorted; drawing the position first keeps
/// substitutions from piling up at the ends, where the allowed range is widest.
inline std::string corrupt(const std::string& chosen, Corruption kind, std::mt19937_64& rng) {
  const auto range = [&](std::size_t i) {  // letters allowed at i that keep the string sorted
    return std::pair<char, char>{i == 0 ? kFirstLetter : chosen[i - 1],
                                 i + 1 == chosen.size() ? kLastLetter : chosen[i + 1]};
  };
  std::vector<std::size_t> positions;
  for (std::size_t i = 0; i < chosen.size(); ++i) {
    if (kind == Corruption::kSwap) {
      if (i + 1 < chosen.size() && chosen[i] != chosen[i + 1]) positions.push_back(i);
    } else if (range(i).first < range(i).second) {  // some letter other than chosen[i] fits
      positions.push_back(i);
    }
  }
  if (positions.empty()) return {};
  const std::size_t i = positions[uniform_below(rng, positions.size())];
  std::string out = chosen;
  if (kind == Corruption::kSwap) {
    std::swap(out[i], out[i + 1]);
    return out;
  }
  std::string letters;
  for (char c = range(i).first; c <= range(i).second; ++c) {
    if (c != chosen[i]) letters.push_back(c);
  }
  out[i] = letters[uniform_below(rng, letters.size())];
  return out;
}

/// Draw order (fixed, so files are reproducible): length, letters, corruption kind, option.
inline Pair generate_pair(std::mt19937_64& rng, std::size_t min_length, std::size_t max_length) {
  if (min_length < 1 || max_length < min_length) {
    throw std::invalid_argument("generate_pair: need 1 <= min_length <= max_length");
  }
  Pair p;
  const std::size_t length = min_length + uniform_below(rng, max_length - min_length + 1);
  for (std::size_t i = 0; i < length; ++i) {
    p.prompt.push_back(char(kFirstLetter + uniform_below(rng, kLastLetter - kFirstLetter + 1)));
  }
  p.chosen = apply_rule(p.prompt);
  p.corruption = uniform_below(rng, 2) == 0 ? Corruption::kSwap : Corruption::kSubstitute;
  p.rejected = corrupt(p.chosen, p.corruption, rng);
  if (p.rejected.empty()) {  // only a swap can be impossible (all letters equal)
    p.corruption = Corruption::kSubstitute;
    p.rejected = corrupt(p.chosen, p.corruption, rng);
  }
  return p;
}

/// Generates a split whose prompts are unique and absent from `used_prompts`, which is updated,
/// so passing one set through all splits keeps them disjoint. A clash is simply redrawn; the
/// whole pair is drawn before its prompt is checked.
inline Split generate_split(const SplitSpec& spec, std::unordered_set<std::string>& used_prompts) {
  return draw_split<Split>(spec, "generate_split",
                           [&](std::mt19937_64& rng) -> std::optional<Pair> {
                             Pair p = generate_pair(rng, spec.min_length, spec.max_length);
                             if (!used_prompts.insert(p.prompt).second) return std::nullopt;
                             return p;
                           });
}

/// The shipped splits: train 3000 and eval 300 with prompt lengths 4-10, ood 300 with lengths
/// 11-16 (longer than anything in train). Split k is seeded with seed + k * 0x9E3779B97F4A7C15.
inline std::vector<SplitSpec> default_split_specs(uint64_t seed = kDefaultSeed) {
  constexpr uint64_t kStride = 0x9E3779B97F4A7C15ull;  // spreads nearby seeds apart
  return {{"train", 3000, 4, 10, seed},
          {"eval", 300, 4, 10, seed + kStride},
          {"ood", 300, 11, 16, seed + 2 * kStride}};
}

inline std::vector<Split> generate_default_splits(uint64_t seed = kDefaultSeed) {
  return generate_splits(default_split_specs(seed));
}

/// One JSONL line in the text record form the loader reads; "corruption" is extra information
/// (ignored by the loader) for accuracy broken down by kind.
inline std::string to_json_line(const Pair& p) {
  auto j = text_record(p);
  j["corruption"] = to_string(p.corruption);
  return j.dump();
}

}  // namespace hafrm::examples::synthetic
