// The second shipped preference task ("follow the instructions"): the preference is a hidden
// gold reward over the whole response, judged with Bradley-Terry noise, the shape of human
// preference data (the first task, synthetic_task.hpp, is a property of the sequence likelihood).
//
// Prompt "<banned><n>:<source>", e.g. "k4:qwkerty": answer with n letters taken from the source
// letters, never the banned letter (which always occurs in the source, so copying is tempting),
// in ascending order, without the '!' style marker. Many responses are perfect ("eqrt", "eqry",
// "erty", ...); none is "the" answer.
//
// Gold reward, in integer points (so it is exact on every platform), over a response y:
//   +2 per letter of y that is in the source and not banned      (rule followed, partial credit)
//   -2 per letter of y that is not in the source                 (rule broken)
//   -4 per occurrence of the banned letter                       (forbidden token)
//   -3 per letter of distance between |y| and n                  (length preference)
//   +1 per adjacent pair of letters in strictly ascending order  (partial credit for the order)
//   -3 if y ends with the marker '!'                             (a disliked style marker)
// None of these is the probability of y under a simple model: they count and compare against
// numbers and letters stated in the prompt, and reward every one of many different good answers.
//
// Pairs. Two responses to the same prompt come from a generator of varied quality (each draws
// its own quality 0-100%, below); a pair whose responses are equal or have equal gold reward is
// redrawn, so every pair has a gold ordering. The label is sampled Bradley-Terry style:
// P(A preferred) = sigmoid((gold_A - gold_B) / kLabelTemperature); the preferred one is "chosen".
// About a quarter of the labels then disagree with the gold ordering (measured fractions in
// data/README.md); "gold_agrees" says which.
//
// Draws are reproducible on every platform: std::mt19937_64 with synthetic::uniform_below();
// the label compares a 53-bit integer draw with sigmoid * 2^53, so a last-bit difference in
// std::exp between C libraries flips a label only with probability ~2^-53 per pair.
//
//   namespace rt = hafrm::examples::rules;
//   auto splits = rt::generate_default_splits();        // train, eval, ood
//   const rt::Pair& p = splits[0].pairs[0];
//   int g = rt::gold_reward(p.prompt, p.chosen);        // == p.gold_chosen
//
// The length-skewed variant (default_skewed_specs, below): the same task with a long tail of
// long prompts and rambling responses, for measuring what padding wastes:
//   auto skewed = rt::generate_default_skewed_splits();
//
// The unlabelled corpus (pre-training, one response per prompt, no gold used):
//   auto corpus = rt::generate_corpus(rt::default_corpus_spec());
//   rt::write_corpus_jsonl("runs/rules-corpus.jsonl", corpus);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "hafrm_examples/split_files.hpp"
#include "hafrm_examples/synthetic_task.hpp"  // uniform_below

namespace hafrm::examples::rules {

// generate_splits(specs) and write_jsonl(file, pairs) for this task's SplitSpec and Pair:
// split_files.hpp.
using examples::generate_splits;
using examples::write_jsonl;

using synthetic::uniform_below;

inline constexpr uint64_t kDefaultSeed = 20240705;
inline constexpr char kMarker = '!';
// Bradley-Terry temperature in gold points: sets the label noise (about 25% disagree).
inline constexpr double kLabelTemperature = 6.0;

struct Pair {
  std::string prompt;
  std::string chosen;
  std::string rejected;
  int gold_chosen = 0;
  int gold_rejected = 0;
  bool gold_agrees() const { return gold_chosen > gold_rejected; }
};

/// A long tail of sequence lengths (the skewed variant, default_skewed_specs): source_percent %
/// of the prompts draw their source length uniformly from [min_source, max_source] instead of
/// the split's range, and a response of quality q (generate_response) rambles with probability
/// ramble_percent * (100 - q) / 100 %: it repeats its own letters cyclically for a length drawn
/// uniformly from [min_ramble, max_ramble] before any marker. All zero (the default) is no tail
/// and no extra draw, so a split without a tail is the same as without the field.
struct LengthTail {
  uint64_t source_percent = 0;
  std::size_t min_source = 0, max_source = 0;
  uint64_t ramble_percent = 0;
  std::size_t min_ramble = 0, max_ramble = 0;
  bool enabled() const { return source_percent > 0 || ramble_percent > 0; }
};

/// One split: prompts with source lengths in [min_source, max_source] and target lengths n in
/// [min_target, max_target]; `tail` adds longer sources and rambling responses (off by default).
struct SplitSpec {
  std::string name;
  std::size_t count = 0;
  std::size_t min_source = 0, max_source = 0;
  std::size_t min_target = 0, max_target = 0;
  uint64_t seed = 0;
  LengthTail tail = {};
};

struct Split {
  SplitSpec spec;
  std::vector<Pair> pairs;
};

/// The parts of a prompt "<banned><n>:<source>".
struct Instruction {
  char banned = 0;
  std::size_t target = 0;
  std::string source;
};

inline Instruction parse_prompt(std::string_view prompt) {
  if (prompt.size() < 4 || prompt[2] != ':' || prompt[0] < 'a' || prompt[0] > 'z' ||
      prompt[1] < '1' || prompt[1] > '9') {
    throw std::invalid_argument("rules::parse_prompt: prompt '" + std::string(prompt) +
                                "' is not \"<banned letter><digit 1-9>:<letters>\"");
  }
  return {prompt[0], std::size_t(prompt[1] - '0'), std::string(prompt.substr(3))};
}

/// Component scores of the gold reward (see the header comment); gold_reward() is their sum.
struct GoldParts {
  int letters = 0;  // +2 per allowed source letter, -2 per letter not in the source
  int banned = 0;   // -4 per banned letter
  int length = 0;   // -3 per letter of distance to the target length
  int order = 0;    // +1 per ascending adjacent pair
  int marker = 0;   // -3 for a trailing '!'
  int total() const { return letters + banned + length + order + marker; }
};

inline GoldParts gold_parts(std::string_view prompt, std::string_view response) {
  const Instruction ins = parse_prompt(prompt);
  GoldParts g;
  std::string_view body = response;
  if (!body.empty() && body.back() == kMarker) {
    g.marker = -3;
    body.remove_suffix(1);
  }
  for (char c : body) {
    if (c == ins.banned) {
      g.banned -= 4;
    } else {
      g.letters += ins.source.find(c) != std::string::npos ? 2 : -2;
    }
  }
  const auto len = static_cast<long>(body.size()), target = static_cast<long>(ins.target);
  g.length = -3 * static_cast<int>(len > target ? len - target : target - len);
  for (std::size_t i = 1; i < body.size(); ++i) g.order += body[i - 1] < body[i] ? 1 : 0;
  return g;
}

inline int gold_reward(std::string_view prompt, std::string_view response) {
  return gold_parts(prompt, response).total();
}

namespace detail {

inline bool percent(std::mt19937_64& rng, uint64_t p) { return uniform_below(rng, 100) < p; }

inline char letter(std::mt19937_64& rng) { return char('a' + uniform_below(rng, 26)); }

}  // namespace detail

/// A prompt: n, the source letters (uniform, repeats allowed), the banned letter (one of the
/// source letters, uniform over positions). Draw order: source length, n, letters, banned.
/// `spec` is any spec with min_source, max_source, min_target, max_target (SplitSpec,
/// CorpusSpec): the pair splits and the corpus draw their prompts alike.
template <class Spec>
std::string generate_prompt(std::mt19937_64& rng, const Spec& spec) {
  if (spec.min_source < 2 || spec.max_source < spec.min_source || spec.min_target < 1 ||
      spec.max_target > 9 || spec.max_target < spec.min_target) {
    throw std::invalid_argument(
        "rules::generate_prompt: need 2 <= min_source <= max_source and "
        "1 <= min_target <= max_target <= 9");
  }
  const std::size_t length =
      spec.min_source + uniform_below(rng, spec.max_source - spec.min_source + 1);
  const std::size_t target =
      spec.min_target + uniform_below(rng, spec.max_target - spec.min_target + 1);
  std::string source;
  for (std::size_t i = 0; i < length; ++i) source.push_back(detail::letter(rng));
  const char banned = source[uniform_below(rng, source.size())];
  return std::string{banned, char('0' + target), ':'} + source;
}

/// One response from a generator of varied quality: it draws its quality q in 0-100 (%), then
/// with probability q the right length (else n + one of -2, -1, +1, +2, +3, at least 1); each
/// letter from the source with probability (50 + q/2)% (else any letter); with probability q
/// the banned letters replaced by allowed source letters; with probability q sorted; only with
/// a tail's ramble_percent > 0, a ramble (LengthTail); with probability (100 - q)/2 % the marker
/// '!' appended. Draw order as written.
inline std::string generate_response(std::mt19937_64& rng, std::string_view prompt,
                                     const LengthTail& tail = {}) {
  const Instruction ins = parse_prompt(prompt);
  const uint64_t q = uniform_below(rng, 101);
  std::size_t length = ins.target;
  if (!detail::percent(rng, q)) {
    static constexpr int kOffsets[] = {-2, -1, 1, 2, 3};
    const int off = kOffsets[uniform_below(rng, 5)];
    length = static_cast<std::size_t>(std::max<long>(1, static_cast<long>(length) + off));
  }
  std::string y;
  for (std::size_t i = 0; i < length; ++i) {
    y.push_back(detail::percent(rng, 50 + q / 2) ? ins.source[uniform_below(rng, ins.source.size())]
                                                 : detail::letter(rng));
  }
  if (detail::percent(rng, q)) {
    std::string allowed;
    for (char c : ins.source)
      if (c != ins.banned) allowed.push_back(c);
    for (char& c : y)
      if (c == ins.banned && !allowed.empty()) c = allowed[uniform_below(rng, allowed.size())];
  }
  if (detail::percent(rng, q)) std::sort(y.begin(), y.end());
  if (tail.ramble_percent > 0 && uniform_below(rng, 10000) < tail.ramble_percent * (100 - q)) {
    const std::size_t extra =
        tail.min_ramble + uniform_below(rng, tail.max_ramble - tail.min_ramble + 1);
    const std::size_t body = y.size();  // >= 1
    for (std::size_t i = 0; i < extra; ++i) y.push_back(y[i % body]);
  }
  if (detail::percent(rng, (100 - q) / 2)) y.push_back(kMarker);
  return y;
}

/// P(first preferred) under Bradley-Terry with the task's temperature.
inline double preference_probability(int gold_first, int gold_second) {
  return 1.0 / (1.0 + std::exp(-double(gold_first - gold_second) / kLabelTemperature));
}

/// Two responses with different gold rewards (redrawn until they differ), then the noisy label.
/// `tail` (its ramble fields) goes to generate_response.
inline Pair generate_pair(std::mt19937_64& rng, std::string prompt, const LengthTail& tail = {}) {
  for (int attempt = 0;; ++attempt) {
    if (attempt > 1000)
      throw std::runtime_error("rules::generate_pair: no distinct pair for " + prompt);
    std::string a = generate_response(rng, prompt, tail), b = generate_response(rng, prompt, tail);
    const int ga = gold_reward(prompt, a), gb = gold_reward(prompt, b);
    if (a == b || ga == gb) continue;
    // 53-bit uniform in [0, 1) scaled by 2^53: exact integer comparison with p * 2^53.
    const uint64_t u = rng() >> 11;
    const bool a_wins = double(u) < std::ldexp(preference_probability(ga, gb), 53);
    Pair p;
    p.prompt = std::move(prompt);
    if (a_wins) {
      p.chosen = std::move(a), p.rejected = std::move(b), p.gold_chosen = ga, p.gold_rejected = gb;
    } else {
      p.chosen = std::move(b), p.rejected = std::move(a), p.gold_chosen = gb, p.gold_rejected = ga;
    }
    return p;
  }
}

/// A prompt of a split: with a tail's source_percent > 0, first whether it is a tail prompt
/// (source_percent %), then generate_prompt with the tail's source lengths or the split's.
inline std::string generate_split_prompt(std::mt19937_64& rng, const SplitSpec& spec) {
  if (spec.tail.source_percent > 0 && detail::percent(rng, spec.tail.source_percent)) {
    SplitSpec tail_spec = spec;
    tail_spec.min_source = spec.tail.min_source;
    tail_spec.max_source = spec.tail.max_source;
    return generate_prompt(rng, tail_spec);
  }
  return generate_prompt(rng, spec);
}

/// A split with prompts unique and absent from `used_prompts` (updated, so passing one set
/// through all splits keeps them disjoint). A clash is redrawn; the pair is drawn only for a new
/// prompt. A tail (spec.tail) needs percents <= 100, 2 <= tail.min_source <= tail.max_source
/// when source_percent > 0, and min_ramble <= max_ramble when ramble_percent > 0.
inline Split generate_split(const SplitSpec& spec, std::unordered_set<std::string>& used_prompts) {
  const LengthTail& t = spec.tail;
  if (t.source_percent > 100 || t.ramble_percent > 100 ||
      (t.source_percent > 0 && (t.min_source < 2 || t.max_source < t.min_source)) ||
      (t.ramble_percent > 0 && t.max_ramble < t.min_ramble)) {
    throw std::invalid_argument(
        "rules::generate_split: argument 'spec.tail' expected percents <= 100, "
        "2 <= min_source <= max_source and min_ramble <= max_ramble (split " +
        spec.name + ")");
  }
  return draw_split<Split>(spec, "rules::generate_split",
                           [&](std::mt19937_64& rng) -> std::optional<Pair> {
                             std::string prompt = generate_split_prompt(rng, spec);
                             if (!used_prompts.insert(prompt).second) return std::nullopt;
                             return generate_pair(rng, std::move(prompt), spec.tail);
                           });
}

/// The shipped splits: train 3000 and eval 500 with 5-9 source letters and n 2-5; ood 500 with
/// 10-14 source letters and n 6-8 (longer prompts and longer good answers than any in train).
/// Split k is seeded with seed + k * 0x9E3779B97F4A7C15, as in the synthetic task.
inline std::vector<SplitSpec> default_split_specs(uint64_t seed = kDefaultSeed) {
  constexpr uint64_t kStride = 0x9E3779B97F4A7C15ull;
  return {{"train", 3000, 5, 9, 2, 5, seed},
          {"eval", 500, 5, 9, 2, 5, seed + kStride},
          {"ood", 500, 10, 14, 6, 8, seed + 2 * kStride}};
}

inline std::vector<Split> generate_default_splits(uint64_t seed = kDefaultSeed) {
  return generate_splits(default_split_specs(seed));
}

// ---------------------------------------------------------------------------------------------
// The length-skewed variant, for benchmarking padding-free (packed) training. Real preference
// data is long-tailed in length: most pairs are short, a few are long, so a batch padded to its
// longest sequence is mostly padding. Here the default splits' prompts, n and gold reward are
// kept and a tail is added to both sides of a sequence:
//   - 5 % of the prompts have 15-40 source letters (uniform) instead of the split's 5-9 or
//     10-14. The tail starts above every split's range, so OOD's 10-14 letters stay out of train;
//   - a response of quality q rambles with probability 8 * (100 - q) / 100 % (about 4 % of the
//     responses, the worse ones): it repeats its letters for 5-52 more letters. A ramble costs
//     gold (-3 per letter of length distance), so ramblers mostly lose their pairs, as verbose
//     off-topic answers do; labels stay Bradley-Terry.
// With the Phi template and the byte tokenizer a sequence is (3 + source) + 18 prompt tokens and
// 1 + response + 1 (EOS) response tokens, at most 3 + 40 + 18 = 61 prompt tokens and
// 61 + 1 + (8 + 3 + 52 + 1) + 1 = 127 in all (OOD, n = 8): under the trainer's defaults
// (--max-prompt-length 64, --max-length 128) nothing is ever truncated. Most sequences stay at
// the default's 30-40 tokens (median 34 in train) while about one pair in eight holds a tail
// sequence of up to ~100 tokens, so nearly every batch of 32 pairs is padded to a long one and
// a padded trainer wastes about half of its token positions (measured in data/README.md).

inline constexpr uint64_t kDefaultSkewedSeed = 20240707;

/// The skewed variant's tail (see above).
inline constexpr LengthTail kSkewedTail = {5, 15, 40, 8, 5, 52};

/// default_split_specs' splits (train 3000, eval 500, ood 500, same ranges, same seed stride)
/// with kSkewedTail, seeded with kDefaultSkewedSeed by default.
inline std::vector<SplitSpec> default_skewed_specs(uint64_t seed = kDefaultSkewedSeed) {
  auto specs = default_split_specs(seed);
  for (auto& s : specs) s.tail = kSkewedTail;
  return specs;
}

inline std::vector<Split> generate_default_skewed_splits(uint64_t seed = kDefaultSkewedSeed) {
  return generate_splits(default_skewed_specs(seed));
}

/// One JSONL line in the loader's text form; "gold_agrees" is read by the loader (accuracy
/// against the gold ordering), the two gold rewards are information only.
inline std::string to_json_line(const Pair& p) {
  auto j = text_record(p);
  j["gold_chosen"] = p.gold_chosen;
  j["gold_rejected"] = p.gold_rejected;
  j["gold_agrees"] = p.gold_agrees();
  return j.dump();
}

// ---------------------------------------------------------------------------------------------
// The unlabelled corpus: prompts with one response each, for pre-training a backbone on the
// task's language before reward training. Each response comes from generate_response, the
// varied-quality generator of the pairs (its own quality 0-100%), so the corpus holds good and
// bad answers alike; no gold reward selects or labels anything.

inline constexpr uint64_t kDefaultCorpusSeed = 20240706;

/// count prompts with source lengths in [min_source, max_source] and n in
/// [min_target, max_target], one response each, drawn from std::mt19937_64 seeded with `seed`.
struct CorpusSpec {
  uint64_t seed = kDefaultCorpusSeed;
  std::size_t count = 0;
  std::size_t min_source = 0, max_source = 0;
  std::size_t min_target = 0, max_target = 0;
};

struct CorpusRecord {
  std::string prompt;
  std::string response;
};

/// 60000 records, 5-14 source letters and n 2-8. A pre-training corpus is broad: it spans both
/// the train/eval range (5-9 letters, n 2-5) and the longer OOD range (10-14, n 6-8), and the
/// combinations in between, while the reward data keeps OOD lengths out of train. Prompts never
/// repeat a prompt of the shipped splits (generate_corpus).
inline CorpusSpec default_corpus_spec(uint64_t seed = kDefaultCorpusSeed) {
  return {seed, 60000, 5, 14, 2, 8};
}

/// spec.count records. Each draw is a prompt (generate_prompt) then, for a prompt that is new
/// and not a prompt of the default splits (generate_default_splits()), its response
/// (generate_response); a repeated prompt is redrawn. More than 100 * count + 1000 prompt draws
/// means the spec has too few distinct prompts: an error.
inline std::vector<CorpusRecord> generate_corpus(const CorpusSpec& spec) {
  std::unordered_set<std::string> used;
  for (const auto& split : generate_default_splits())
    for (const auto& p : split.pairs) used.insert(p.prompt);
  std::mt19937_64 rng(spec.seed);
  std::vector<CorpusRecord> records;
  records.reserve(spec.count);
  std::size_t attempts = 0;
  while (records.size() < spec.count) {
    if (++attempts > 100 * spec.count + 1000) {
      throw std::runtime_error("rules::generate_corpus: too few distinct prompts");
    }
    std::string prompt = generate_prompt(rng, spec);
    if (!used.insert(prompt).second) continue;
    std::string response = generate_response(rng, prompt);
    records.push_back({std::move(prompt), std::move(response)});
  }
  return records;
}

/// One JSONL line {"prompt":...,"response":...}, escaped as the pair lines are.
inline std::string to_json_line(const CorpusRecord& r) {
  nlohmann::ordered_json j;
  j["prompt"] = r.prompt;
  j["response"] = r.response;
  return j.dump();
}

/// One to_json_line(record) per line. Written to FILE.tmp and renamed onto `file`, so `file` is
/// either the whole corpus or untouched; a failed write is an error naming the file.
inline void write_corpus_jsonl(const std::filesystem::path& file,
                               const std::vector<CorpusRecord>& records) {
  std::filesystem::path tmp = file;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw std::runtime_error("rules::write_corpus_jsonl: cannot write " + tmp.string());
    for (const auto& r : records) out << to_json_line(r) << '\n';
    if (!out.flush()) {
      out.close();
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      throw std::runtime_error("rules::write_corpus_jsonl: write failed: " + tmp.string());
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw std::runtime_error("rules::write_corpus_jsonl: cannot rename " + tmp.string() + " to " +
                             file.string() + ": " + ec.message());
  }
}

/// Fraction of pairs whose label disagrees with the gold ordering.
inline double disagreement(const std::vector<Pair>& pairs) {
  std::size_t n = 0;
  for (const auto& p : pairs) n += p.gold_agrees() ? 0 : 1;
  return pairs.empty() ? 0.0 : double(n) / double(pairs.size());
}

}  // namespace hafrm::examples::rules
