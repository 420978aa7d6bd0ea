// sequence_data.hpp: the splits of the language-model objectives, as single sequences, and the
// tensors of one batch of them.
//
//   --objective lm   next-token loss over every token of each sequence (pre-training);
//   --objective sft  loss over the response tokens (and EOS) given the prompt (fine-tuning).
// A split may be any of three files (hafrm/data/lm_records.hpp tells them apart by the first row):
//   {"text": T}                   T + EOS                                   (lm only: no prompt)
//   {"prompt": P, "response": R}  the template's prompt + response + EOS, as scoring assembles it
//   a preference file             lm: both sides of every pair; sft: the chosen side
// Sequences longer than --max-length are cut (texts keep their start; prompt/response rows follow
// the assembly's rules) and counted in Split::truncated, which the run's description reports.
//
//   namespace rm = hafrm::examples::rm;
//   rm::Split corpus = rm::load_sequence_split("train", path, *tok, assembly, false,
//                                              rm::SequenceObjective::kLanguageModel);
//   rm::SequenceBatch b = rm::make_sequence_batch(corpus, rows, tok->pad_id(), device);
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <hafrm/data/assemble.hpp>
#include <hafrm/data/lm_records.hpp>
#include <hafrm/data/tokenizer.hpp>

#include "data.hpp"

namespace hafrm::examples::rm {

enum class SequenceObjective { kLanguageModel, kSupervised };

// One batch of sequences, right-padded: ids and mask [B, T], labels [B, T] (-100 where unscored).
struct SequenceBatch {
  torch::Tensor ids, mask, labels;
};

namespace detail {

// Text + EOS, cut to max_length tokens (the start kept); every token is a label.
inline hafrm::data::TokenizedSequence text_sequence(const hafrm::data::Tokenizer& tok,
                                                    const std::string& text, int64_t max_length) {
  hafrm::data::TokenizedSequence s;
  s.ids = tok.encode(text);
  if (static_cast<int64_t>(s.ids.size()) > max_length - 1) {
    s.ids.resize(static_cast<std::size_t>(max_length - 1));
    s.response_truncated = true;
  }
  s.ids.push_back(tok.eos_id());
  s.labels = s.ids;
  return s;
}

}  // namespace detail

// Loads one split for a language-model objective (see the top). With skip_bad, bad rows are
// skipped and counted in `report`; without it the first one throws, naming file, line and field.
inline Split load_sequence_split(const std::string& name, const std::string& path,
                                 const hafrm::data::Tokenizer& tokenizer,
                                 const hafrm::data::AssemblyOptions& assembly, bool skip_bad,
                                 SequenceObjective objective) {
  const bool lm = objective == SequenceObjective::kLanguageModel;
  const auto shape = hafrm::data::sniff_record_shape(path);
  Split s;
  s.name = name;
  s.path = path;
  auto add = [&](hafrm::data::TokenizedSequence q) {
    if (q.prompt_truncated || q.response_truncated) ++s.truncated;
    if (lm) q.labels = q.ids;  // every token, the prompt's too
    s.sequences.push_back(std::move(q));
  };
  if (shape == hafrm::data::RecordShape::kPreference) {
    Split pairs = load_split(name, path, tokenizer, assembly, skip_bad);
    s.report = pairs.report;
    s.skipped_in_assembly = pairs.skipped_in_assembly;
    for (auto& p : pairs.pairs) {
      add({std::move(p.chosen_ids), std::move(p.chosen_labels), p.prompt_length});
      if (lm) add({std::move(p.rejected_ids), std::move(p.rejected_labels), p.prompt_length});
    }
    return s;
  }
  if (!lm && shape == hafrm::data::RecordShape::kText)
    throw std::invalid_argument(
        path +
        ": --objective sft scores responses given their prompts, but this file holds text "
        "rows {\"text\"}, which have no prompt; give it prompt/response or preference rows, or "
        "train with --objective lm");
  hafrm::data::LmLoadOptions lo;
  lo.skip_bad = skip_bad;
  auto loaded = hafrm::data::load_lm_records(path, lo);
  s.report = loaded.report;
  for (const auto& r : loaded.records) {
    try {
      add(r.has_prompt ? hafrm::data::assemble_single(tokenizer, r.prompt, r.text, assembly)
                       : detail::text_sequence(tokenizer, r.text, assembly.max_length));
    } catch (const std::exception& e) {
      const std::string what = path + ":" + std::to_string(r.line) + ": " + e.what();
      if (!skip_bad) throw std::runtime_error(what);
      ++s.skipped_in_assembly;
      ++s.report.skipped;
      if (s.report.first_errors.size() < lo.max_reported_errors)
        s.report.first_errors.push_back(what);
    }
  }
  if (s.sequences.empty()) throw std::runtime_error(path + ": no usable sequences");
  return s;
}

// The tokens the next-token loss scores in sequences `indices`: labelled positions after the
// first (a sequence's first token has nothing before it to predict it from).
inline int64_t scored_tokens(const Split& split, std::span<const int64_t> indices) {
  int64_t n = 0;
  for (auto i : indices) {
    const auto& labels = split.sequences.at(static_cast<std::size_t>(i)).labels;
    for (std::size_t t = 1; t < labels.size(); ++t) n += labels[t] != hafrm::data::kIgnoreIndex;
  }
  return n;
}

// The sequences at `indices` as one right-padded batch on `device`.
inline SequenceBatch make_sequence_batch(const Split& split, std::span<const int64_t> indices,
                                         int64_t pad_id, const torch::Device& device) {
  std::vector<std::span<const int64_t>> ids, labels;
  ids.reserve(indices.size());
  labels.reserve(indices.size());
  for (auto i : indices) {
    const auto& q = split.sequences.at(static_cast<std::size_t>(i));
    ids.emplace_back(q.ids);
    labels.emplace_back(q.labels);
  }
  hafrm::data::PaddedBatch pb = hafrm::data::pad_batch(ids, labels, pad_id);
  auto as_tensor = [&](std::vector<int64_t>& v) {
    return torch::from_blob(v.data(), {pb.rows, pb.cols}, torch::kLong).clone().to(device);
  };
  return {as_tensor(pb.input_ids), as_tensor(pb.attention_mask), as_tensor(pb.labels)};
}

}  // namespace hafrm::examples::rm
