// data.hpp: preference splits as assembled token pairs, and the tensors of one batch. Loading
// a JSONL split (`path`, e.g. data/synthetic/train.jsonl) and batching three of its pairs:
//
// example-begin haf_rm_data TrainSplit
//   namespace rm = hafrm::examples::rm;
//   auto tok = hafrm::data::make_tokenizer("byte");
//   rm::Split train = rm::load_split("train", path, *tok, assembly, /*skip_bad=*/false);
//   std::vector<int64_t> rows{0, 1, 2};
//   hafrm::PreferenceBatch b = rm::make_batch(train, rows, tok->pad_id(), dev);
// example-end
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <hafrm/data/assemble.hpp>
#include <hafrm/data/preference_records.hpp>
#include <hafrm/data/tokenizer.hpp>
#include <hafrm/model/pair_forward.hpp>

namespace hafrm::examples::rm {

struct Split {
  std::string name;  // "train", "eval", "ood"
  std::string path;
  std::vector<hafrm::data::TokenizedPair> pairs;
  // Optional per-pair category from the record's "corruption" field (the synthetic task's
  // "swap" / "substitute"), for accuracy broken down by kind; empty strings when absent.
  std::vector<std::string> kinds;
  // Per pair, the record's optional "gold_agrees" (data/rules): 1 the label agrees with the
  // hidden gold ordering, 0 it does not, -1 unknown. Evaluation scores against the gold too.
  std::vector<int8_t> gold;
  hafrm::data::LoadReport report;
  std::size_t skipped_in_assembly = 0;  // records the loader accepted but assembly could not use
  // The language-model objectives' single sequences (sequence_data.hpp: --objective lm and sft),
  // in place of pairs: prompt + response + EOS or text + EOS, labels on the tokens the loss
  // scores. Empty for a preference split.
  std::vector<hafrm::data::TokenizedSequence> sequences;
  std::size_t truncated = 0;  // sequences cut to --max-length

  bool of_sequences() const { return !sequences.empty(); }
  // What a batch draws from: its sequences or its pairs.
  std::size_t size() const { return of_sequences() ? sequences.size() : pairs.size(); }
  const char* unit() const { return of_sequences() ? "sequences" : "pairs"; }
};

namespace detail {

// line -> "corruption" value, for files that carry one. The loader ignores unknown fields, so
// this reads them separately; a line that is not JSON here was already rejected by the loader.
inline std::unordered_map<std::size_t, std::string> read_kinds(const std::string& path) {
  std::unordered_map<std::size_t, std::string> kinds;
  std::ifstream in(path, std::ios::binary);
  std::string line;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    if (line.find("\"corruption\"") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("corruption") && j["corruption"].is_string())
      kinds[n] = j["corruption"].get<std::string>();
  }
  return kinds;
}

inline std::size_t record_line(const hafrm::data::PreferenceRecord& r) {
  return std::visit([](const auto& x) { return x.line; }, r);
}

}  // namespace detail

// Loads and assembles one JSONL split (text or pre-tokenized records). With skip_bad, records
// the loader or the assembly rejects are skipped and counted (reported in `report`), never
// dropped silently; without it the first bad record throws an error naming file, line, field.
inline Split load_split(const std::string& name, const std::string& path,
                        const hafrm::data::Tokenizer& tokenizer,
                        const hafrm::data::AssemblyOptions& assembly, bool skip_bad) {
  hafrm::data::LoadOptions lo;
  lo.skip_bad = skip_bad;
  lo.vocab_size = tokenizer.vocab_size();
  auto loaded = hafrm::data::load_preference_records(path, lo);
  const auto kinds = detail::read_kinds(path);
  Split s;
  s.name = name;
  s.path = path;
  s.report = loaded.report;
  s.pairs.reserve(loaded.records.size());
  for (const auto& r : loaded.records) {
    try {
      s.pairs.push_back(hafrm::data::assemble_pair(tokenizer, r, assembly));
    } catch (const std::exception& e) {
      if (!skip_bad) throw std::runtime_error(path + ": " + e.what());
      ++s.skipped_in_assembly;
      ++s.report.skipped;
      if (s.report.first_errors.size() < lo.max_reported_errors)
        s.report.first_errors.push_back(path + ": " + e.what());
      continue;
    }
    const auto it = kinds.find(detail::record_line(r));
    s.kinds.push_back(it == kinds.end() ? std::string() : it->second);
    const auto gold = std::visit([](const auto& x) { return x.gold_agrees; }, r);
    s.gold.push_back(gold ? int8_t(*gold) : int8_t(-1));
  }
  if (s.pairs.empty()) throw std::runtime_error(path + ": no usable preference pairs");
  return s;
}

// A 64-bit FNV-1a over the assembled ids (and a sequence split's labels): a checkpoint stores it to
// refuse resuming on other training data (or another tokenizer / template / max length, which
// change the ids too).
inline uint64_t fingerprint(const Split& s) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](int64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= static_cast<uint64_t>(v >> (8 * i)) & 0xffu;
      h *= 1099511628211ull;
    }
  };
  for (const auto& p : s.pairs) {
    mix(p.prompt_length);
    for (const auto* v : {&p.chosen_ids, &p.rejected_ids}) {
      mix(static_cast<int64_t>(v->size()));
      for (auto x : *v) mix(x);
    }
  }
  for (const auto& q : s.sequences)  // the labels too: lm and sft score different tokens
    for (const auto* v : {&q.ids, &q.labels}) {
      mix(static_cast<int64_t>(v->size()));
      for (auto x : *v) mix(x);
    }
  return h;
}

// The pairs at `indices` as a hafrm::PreferenceBatch: chosen and rejected padded together to one
// length (the library concatenates them into a single [2B, T] forward pass).
inline hafrm::PreferenceBatch make_batch(const Split& split, std::span<const int64_t> indices,
                                         int64_t pad_id, const torch::Device& device) {
  std::vector<hafrm::data::TokenizedPair> picked;
  picked.reserve(indices.size());
  for (auto i : indices) picked.push_back(split.pairs.at(static_cast<std::size_t>(i)));
  hafrm::data::PaddedBatch pb = hafrm::data::pad_pairs(picked, pad_id);
  auto as_tensor = [&](std::vector<int64_t>& v) {
    return torch::from_blob(v.data(), {pb.rows, pb.cols}, torch::kLong).clone().to(device);
  };
  auto ids = as_tensor(pb.input_ids), mask = as_tensor(pb.attention_mask),
       labels = as_tensor(pb.labels);
  const int64_t B = static_cast<int64_t>(indices.size());
  hafrm::PreferenceBatch b;
  b.chosen_ids = ids.slice(0, 0, B), b.rejected_ids = ids.slice(0, B);
  b.chosen_mask = mask.slice(0, 0, B), b.rejected_mask = mask.slice(0, B);
  b.chosen_labels = labels.slice(0, 0, B), b.rejected_labels = labels.slice(0, B);
  return b;
}

}  // namespace hafrm::examples::rm
