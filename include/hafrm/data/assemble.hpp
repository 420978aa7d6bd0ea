// Prompt/response assembly and padding, as the HaF-RM reference code does it (TRL 0.7 DPO).
//
// Per pair: the prompt and each response are tokenised SEPARATELY (no BOS), EOS is appended to
// each response, the prompt is truncated keeping its END, the total is capped at max_length, and
// labels are the ids with the prompt positions set to -100. pad_pairs() then builds the single
// right-padded batch [chosen rows; rejected rows] that one forward pass consumes, with
// attention_mask 1 on real tokens / 0 on pads and labels -100 on pads. Labels are NOT shifted:
// the loss compares logits[:, :-1] with labels[:, 1:]. For scoring, assemble_single() assembles
// prompt + one response by the same rule: a scored sequence has exactly the ids its response had
// as the chosen side of a training pair.
//
// #include <hafrm/data/assemble.hpp>
// example-begin assemble
//   namespace hx = hafrm::data;
//   hx::ByteTokenizer tok;
//   hx::AssemblyOptions opt;                       // Phi template, max_length 512, max prompt 128
//   hx::TokenizedPair p = hx::assemble_pair(tok, hx::TextRecord{"2+2?", "4", "5"}, opt);
//   std::vector<hx::TokenizedPair> pairs = {p};
//   hx::PaddedBatch b = hx::pad_pairs(pairs, tok.pad_id());   // b.rows == 2
//   hx::TokenizedSequence s = hx::assemble_single(tok, "2+2?", "4", opt);  // s.ids == p.chosen_ids
//   // torch::from_blob(b.input_ids.data(), {b.rows, b.cols}, torch::kLong).clone()
// example-end
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "hafrm/data/preference_records.hpp"
#include "hafrm/data/tokenizer.hpp"

namespace hafrm::data {

/// Label value ignored by the log-prob sum (prompt and padding), as in PyTorch and TRL.
inline constexpr int64_t kIgnoreIndex = -100;

/// How a text record becomes prompt and response text. `prompt_format` must hold "{prompt}" and
/// `response_format` "{response}", each exactly once; everything else is literal.
struct PromptTemplate {
  std::string prompt_format = "{prompt}";
  std::string response_format = "{response}";

  /// Phi-2, the reference default: "Instruct: {x}\nOutput:" then " " + y.
  static PromptTemplate phi() { return {"Instruct: {prompt}\nOutput:", " {response}"}; }
  /// Mistral: "[INST] {x} [/INST]" then y.
  static PromptTemplate mistral() { return {"[INST] {prompt} [/INST]", "{response}"}; }
  /// Text used as is (HH-RLHF records already hold "\n\nHuman: ... \n\nAssistant:").
  static PromptTemplate raw() { return {}; }
};

/// Where truncation cuts when a pair does not fit.
enum class TruncationMode {
  /// Default. The prompt is always cut to its last max_prompt_length tokens; a response is then
  /// cut so that response + EOS fits max_length, so every sequence still ends with EOS (the
  /// "last non-pad token" read-out and the summed log-prob then always see it).
  kKeepEos,
  /// TRL 0.7 exactly: EOS is appended first; only if prompt + longer response exceeds
  /// max_length is the prompt cut to max_prompt_length (keeping its end), and then responses
  /// to max_length - max_prompt_length tokens, which may drop the EOS.
  kReference,
};

struct AssemblyOptions {
  PromptTemplate prompt_template = PromptTemplate::phi();
  int64_t max_length = 512;         // prompt + response + EOS, per sequence
  int64_t max_prompt_length = 128;  // must be < max_length
  TruncationMode truncation = TruncationMode::kKeepEos;
};

/// One preference pair ready for padding. ids/labels of each side have equal length; labels are
/// kIgnoreIndex on the first prompt_length positions and equal to the ids after that.
struct TokenizedPair {
  std::vector<int64_t> chosen_ids;
  std::vector<int64_t> chosen_labels;
  std::vector<int64_t> rejected_ids;
  std::vector<int64_t> rejected_labels;
  int64_t prompt_length = 0;  // after truncation, shared by both sides
};

/// Prompt + one response + EOS, for scoring (assemble_single). labels as in TokenizedPair; the
/// flags say whether truncation cut the prompt (its start) or the response (its end; under
/// kReference possibly its EOS too).
struct TokenizedSequence {
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;
  int64_t prompt_length = 0;
  bool prompt_truncated = false;
  bool response_truncated = false;
};

/// A right-padded batch; every vector is row-major [rows, cols].
struct PaddedBatch {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<int64_t> input_ids;
  std::vector<int64_t> attention_mask;  // 1 real token, 0 pad
  std::vector<int64_t> labels;          // kIgnoreIndex on pads
  std::vector<int64_t> lengths;         // real tokens per row; the last one is at lengths[r] - 1
};

namespace detail {

inline std::string fill_placeholder(const std::string& format, std::string_view placeholder,
                                    std::string_view value) {
  const auto at = format.find(placeholder);
  if (at == std::string::npos || format.find(placeholder, at + 1) != std::string::npos) {
    throw std::invalid_argument("prompt template \"" + format + "\" must contain " +
                                std::string(placeholder) + " exactly once");
  }
  std::string out = format;
  out.replace(at, placeholder.size(), value);
  return out;
}

inline void check_options(const AssemblyOptions& o) {
  if (o.max_prompt_length < 1 || o.max_length <= o.max_prompt_length) {
    throw std::invalid_argument("assembly needs 1 <= max_prompt_length < max_length, got " +
                                std::to_string(o.max_prompt_length) + " and " +
                                std::to_string(o.max_length));
  }
}

inline std::vector<int64_t> tail(const std::vector<int64_t>& v, int64_t n) {
  return n >= int64_t(v.size()) ? v : std::vector<int64_t>(v.end() - n, v.end());
}

inline void build_side(const std::vector<int64_t>& prompt, const std::vector<int64_t>& response,
                       std::vector<int64_t>& ids, std::vector<int64_t>& labels) {
  ids = prompt;
  ids.insert(ids.end(), response.begin(), response.end());
  labels.assign(prompt.size(), kIgnoreIndex);
  labels.insert(labels.end(), response.begin(), response.end());
}

}  // namespace detail

namespace detail {

/// What truncation did to one assembly.
struct Truncation {
  bool prompt = false;     // the prompt lost tokens from its start
  bool responses = false;  // some response lost tokens (kReference: possibly its EOS)
};

/// Appends EOS to every response and cuts prompt and responses by the options' rule (see
/// TruncationMode). One rule for pairs and single responses: a single response is assembled as
/// the pair rule applied to the responses given, so its ids are those the pair's chosen side gets.
inline Truncation fit(std::vector<int64_t>& prompt,
                      std::span<std::vector<int64_t>* const> responses, int64_t eos_id,
                      const AssemblyOptions& options) {
  const int64_t max_len = options.max_length, max_prompt = options.max_prompt_length;
  const std::size_t prompt_size = prompt.size();
  bool cut_response = false;
  if (options.truncation == TruncationMode::kKeepEos) {
    prompt = tail(prompt, max_prompt);
    const int64_t budget = max_len - int64_t(prompt.size()) - 1;  // >= 0 as prompt < max_length
    for (auto* r : responses) {
      if (int64_t(r->size()) > budget) r->resize(budget), cut_response = true;
      r->push_back(eos_id);
    }
  } else {
    int64_t longer = 0;
    for (auto* r : responses) {
      r->push_back(eos_id);
      longer = std::max(longer, int64_t(r->size()));
    }
    if (int64_t(prompt.size()) + longer > max_len) prompt = tail(prompt, max_prompt);
    if (int64_t(prompt.size()) + longer > max_len) {
      for (auto* r : responses) {
        if (int64_t(r->size()) > max_len - max_prompt)
          r->resize(max_len - max_prompt), cut_response = true;
      }
    }
  }
  return {prompt.size() < prompt_size, cut_response};
}

inline void check_parts(const std::vector<int64_t>& prompt, bool empty_response) {
  // With no BOS, an empty prompt would leave the first response token nothing to be predicted
  // from, so it could never count in the log-prob sum.
  if (prompt.empty()) throw std::invalid_argument("assembly: the prompt has no tokens");
  if (empty_response) throw std::invalid_argument("assembly: a response has no tokens");
}

}  // namespace detail

/// Assembles one pair from already-tokenised parts (responses WITHOUT EOS).
inline TokenizedPair assemble_ids(std::vector<int64_t> prompt, std::vector<int64_t> chosen,
                                  std::vector<int64_t> rejected, int64_t eos_id,
                                  const AssemblyOptions& options) {
  detail::check_options(options);
  detail::check_parts(prompt, chosen.empty() || rejected.empty());
  const std::array<std::vector<int64_t>*, 2> responses = {&chosen, &rejected};
  detail::fit(prompt, responses, eos_id, options);
  TokenizedPair pair;
  pair.prompt_length = int64_t(prompt.size());
  detail::build_side(prompt, chosen, pair.chosen_ids, pair.chosen_labels);
  detail::build_side(prompt, rejected, pair.rejected_ids, pair.rejected_labels);
  return pair;
}

/// Assembles prompt + one response (WITHOUT EOS) + EOS, for scoring. Under kKeepEos the ids are
/// exactly the chosen side of assemble_ids(prompt, response, any rejected); under kReference the
/// pair rule applies with the response as both sides (there the pair's cut depends on its
/// longer response).
inline TokenizedSequence assemble_single_ids(std::vector<int64_t> prompt,
                                             std::vector<int64_t> response, int64_t eos_id,
                                             const AssemblyOptions& options) {
  detail::check_options(options);
  detail::check_parts(prompt, response.empty());
  const std::array<std::vector<int64_t>*, 1> responses = {&response};
  const detail::Truncation cut = detail::fit(prompt, responses, eos_id, options);
  TokenizedSequence s;
  s.prompt_length = int64_t(prompt.size());
  s.prompt_truncated = cut.prompt;
  s.response_truncated = cut.responses;
  detail::build_side(prompt, response, s.ids, s.labels);
  return s;
}

/// Applies the template, tokenises prompt and responses separately, then assemble_ids().
inline TokenizedPair assemble_pair(const Tokenizer& tokenizer, const TextRecord& record,
                                   const AssemblyOptions& options) {
  detail::check_options(options);  // before the try: a bad option is not the record's fault
  const PromptTemplate& t = options.prompt_template;
  const auto response = [&](const std::string& text) {
    return tokenizer.encode(detail::fill_placeholder(t.response_format, "{response}", text));
  };
  auto prompt =
      tokenizer.encode(detail::fill_placeholder(t.prompt_format, "{prompt}", record.prompt));
  try {
    return assemble_ids(std::move(prompt), response(record.chosen), response(record.rejected),
                        tokenizer.eos_id(), options);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("record at line " + std::to_string(record.line) + ": " + e.what());
  }
}

/// Prompt + one response, for scoring: the template applied and the two parts tokenised
/// separately exactly as assemble_pair does, then assemble_single_ids. The ids equal the chosen
/// side of assemble_pair for the same prompt and response (kKeepEos; see assemble_single_ids for
/// kReference). Throws std::invalid_argument for an empty response, a part that has no tokens, or
/// bad options.
inline TokenizedSequence assemble_single(const Tokenizer& tokenizer, std::string_view prompt,
                                         std::string_view response,
                                         const AssemblyOptions& options) {
  detail::check_options(options);
  if (response.empty()) {
    throw std::invalid_argument(
        "hafrm::data::assemble_single: argument 'response' expected a non-empty response");
  }
  const PromptTemplate& t = options.prompt_template;
  auto prompt_ids = tokenizer.encode(detail::fill_placeholder(t.prompt_format, "{prompt}", prompt));
  auto response_ids =
      tokenizer.encode(detail::fill_placeholder(t.response_format, "{response}", response));
  try {
    return assemble_single_ids(std::move(prompt_ids), std::move(response_ids), tokenizer.eos_id(),
                               options);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("hafrm::data::assemble_single: ") + e.what());
  }
}

/// Pre-tokenized records skip the template; their ids must fit the tokenizer's vocabulary.
inline TokenizedPair assemble_pair(const Tokenizer& tokenizer, const TokenRecord& record,
                                   const AssemblyOptions& options) {
  for (const auto* ids : {&record.prompt_ids, &record.chosen_ids, &record.rejected_ids}) {
    for (int64_t id : *ids) {
      if (id < 0 || id >= tokenizer.vocab_size()) {
        throw std::out_of_range("record at line " + std::to_string(record.line) + ": id " +
                                std::to_string(id) + " outside the " + tokenizer.name() +
                                " vocabulary of " + std::to_string(tokenizer.vocab_size()));
      }
    }
  }
  return assemble_ids(record.prompt_ids, record.chosen_ids, record.rejected_ids, tokenizer.eos_id(),
                      options);
}

inline TokenizedPair assemble_pair(const Tokenizer& tokenizer, const PreferenceRecord& record,
                                   const AssemblyOptions& options) {
  return std::visit([&](const auto& r) { return assemble_pair(tokenizer, r, options); }, record);
}

inline std::vector<TokenizedPair> assemble_all(const Tokenizer& tokenizer,
                                               std::span<const PreferenceRecord> records,
                                               const AssemblyOptions& options) {
  std::vector<TokenizedPair> pairs;
  pairs.reserve(records.size());
  for (const auto& r : records) pairs.push_back(assemble_pair(tokenizer, r, options));
  return pairs;
}

/// Right-pads sequences (with their labels) to the longest one, rounded up to a multiple of
/// `pad_to_multiple_of`. Pads get `pad_id`, mask 0 and label kIgnoreIndex.
inline PaddedBatch pad_batch(std::span<const std::span<const int64_t>> ids,
                             std::span<const std::span<const int64_t>> labels, int64_t pad_id,
                             int64_t pad_to_multiple_of = 1) {
  if (ids.empty()) throw std::invalid_argument("pad_batch: no sequences");
  if (ids.size() != labels.size()) {
    throw std::invalid_argument("pad_batch: " + std::to_string(ids.size()) + " id rows but " +
                                std::to_string(labels.size()) + " label rows");
  }
  if (pad_to_multiple_of < 1) throw std::invalid_argument("pad_batch: pad_to_multiple_of < 1");
  PaddedBatch b;
  b.rows = int64_t(ids.size());
  for (std::size_t r = 0; r < ids.size(); ++r) {
    if (ids[r].empty() || ids[r].size() != labels[r].size()) {
      throw std::invalid_argument("pad_batch: row " + std::to_string(r) +
                                  " is empty or its labels differ in length");
    }
    b.cols = std::max(b.cols, int64_t(ids[r].size()));
  }
  b.cols = (b.cols + pad_to_multiple_of - 1) / pad_to_multiple_of * pad_to_multiple_of;
  const auto n = std::size_t(b.rows * b.cols);
  b.input_ids.assign(n, pad_id);
  b.attention_mask.assign(n, 0);
  b.labels.assign(n, kIgnoreIndex);
  b.lengths.resize(ids.size());
  for (std::size_t r = 0; r < ids.size(); ++r) {
    const std::size_t row = r * std::size_t(b.cols);
    std::copy(ids[r].begin(), ids[r].end(), b.input_ids.begin() + row);
    std::copy(labels[r].begin(), labels[r].end(), b.labels.begin() + row);
    std::fill_n(b.attention_mask.begin() + row, ids[r].size(), 1);
    b.lengths[r] = int64_t(ids[r].size());
  }
  return b;
}

/// Convenience overload for owning rows.
inline PaddedBatch pad_batch(const std::vector<std::vector<int64_t>>& ids,
                             const std::vector<std::vector<int64_t>>& labels, int64_t pad_id,
                             int64_t pad_to_multiple_of = 1) {
  const std::vector<std::span<const int64_t>> i(ids.begin(), ids.end());
  const std::vector<std::span<const int64_t>> l(labels.begin(), labels.end());
  return pad_batch(i, l, pad_id, pad_to_multiple_of);
}

/// The reference's concatenated batch: rows [0, B) are the chosen sides, rows [B, 2B) the
/// rejected sides of the same pairs, padded together so one forward pass serves both.
inline PaddedBatch pad_pairs(std::span<const TokenizedPair> pairs, int64_t pad_id,
                             int64_t pad_to_multiple_of = 1) {
  std::vector<std::span<const int64_t>> ids, labels;
  ids.reserve(2 * pairs.size());
  labels.reserve(2 * pairs.size());
  for (const auto& p : pairs) ids.emplace_back(p.chosen_ids), labels.emplace_back(p.chosen_labels);
  for (const auto& p : pairs) {
    ids.emplace_back(p.rejected_ids), labels.emplace_back(p.rejected_labels);
  }
  return pad_batch(ids, labels, pad_id, pad_to_multiple_of);
}

}  // namespace hafrm::data
