// Loading JSONL preference data (one JSON object per line) in the shapes users already have.
//
// Accepted record shapes (extra fields such as "score_chosen" or "corruption" are ignored):
//   text    {"prompt": P, "chosen": R, "rejected": R}                   TRL standard / DPO style
//               P is a string or a message list (rendered by render_messages, messages.hpp);
//               R is a string or a message list whose LAST message, with role "assistant", holds
//               the response (TRL conversational, UltraFeedback-binarized with a prompt)
//           {"chosen": [msgs], "rejected": [msgs]}  (no "prompt")      TRL conversational with an
//               implicit prompt (trl-lib/ultrafeedback_binarized): the prompt is chosen[:-1],
//               which must equal rejected[:-1], rendered by render_messages
//           {"chosen": str, "rejected": str}   (no "prompt")                 HH-RLHF: the prompt is
//               `chosen` up to and including its last "\n\nAssistant:", and `rejected` must start
//               with that same prompt (as TRL's extract_anthropic_prompt does)
//   ids     {"prompt_ids": [int], "chosen_ids": [int], "rejected_ids": [int]}  pre-tokenized,
//               without EOS (assembly appends it); needs LoadOptions::vocab_size
// A file holds one form; by default the first good record decides which.
// Optional in either form: "gold_agrees": bool, whether the label agrees with a hidden gold
// ordering (data/rules); kept in the record so evaluation can also score against the gold.
//
// A bad record (malformed JSON, a number outside double's range, nesting deeper than
// LoadOptions::max_depth, missing field, wrong type, empty response, invalid UTF-8, a message
// without a string role/content or with another role, a last message not from the assistant,
// implicit prompts that differ, empty prompt_ids, an id outside [0, vocab_size)) throws
// RecordError naming file, 1-based line and field ("chosen[1].role" inside a message list). With
// LoadOptions::skip_bad it is skipped instead and counted in the LoadReport, together with the
// first few messages; nothing is dropped silently. Blank lines are not records.
//
//   #include <hafrm/data/preference_records.hpp>
//   namespace hx = hafrm::data;
//   hx::LoadedRecords data = hx::load_preference_records("data/synthetic/train.jsonl");
//   for (const hx::PreferenceRecord& r : data.records) { /* std::get<hx::TextRecord>(r) ... */ }
//   // Tolerant load: skip bad lines, then say how many went.
//   auto lenient = hx::load_preference_records(path, {.skip_bad = true});
//   std::cerr << lenient.report.summary() << "\n";
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "hafrm/data/json_depth.hpp"
#include "hafrm/data/jsonl.hpp"
#include "hafrm/data/messages.hpp"
#include "hafrm/data/utf8.hpp"

namespace hafrm::data {

/// Prompt and responses as text; `line` is the 1-based source line, kept for later diagnostics.
struct TextRecord {
  std::string prompt;
  std::string chosen;
  std::string rejected;
  std::size_t line = 0;
  std::optional<bool> gold_agrees;  // the record's "gold_agrees", if any
};

/// Pre-tokenized prompt and responses (no EOS; assembly appends it).
struct TokenRecord {
  std::vector<int64_t> prompt_ids;
  std::vector<int64_t> chosen_ids;
  std::vector<int64_t> rejected_ids;
  std::size_t line = 0;
  std::optional<bool> gold_agrees;  // the record's "gold_agrees", if any
};

using PreferenceRecord = std::variant<TextRecord, TokenRecord>;

enum class RecordFormat { kAuto, kText, kTokenIds };

struct LoadOptions {
  /// false: the first bad record throws RecordError. true: bad records are skipped and counted.
  bool skip_bad = false;
  /// How many skip messages LoadReport::first_errors keeps.
  std::size_t max_reported_errors = 5;
  /// kAuto: the first good record decides; a record of the other form is then a bad record.
  RecordFormat format = RecordFormat::kAuto;
  /// Vocabulary size that pre-tokenized ids must fit; required (> 0) for id records.
  int64_t vocab_size = 0;
  /// Accept HH-RLHF records (no "prompt", string responses; the prompt is split off "chosen").
  /// Conversational records without "prompt" (message lists) are accepted either way.
  bool accept_hh_rlhf = true;
  /// Deepest nesting of arrays/objects a record may have (the record object itself is level 1;
  /// an UltraFeedback message list reaches 3). Deeper lines are refused before parsing: the
  /// checks below walk values recursively, and 50k levels overflow the stack.
  std::size_t max_depth = 64;
};

struct LoadReport {
  std::string file;
  std::size_t lines = 0;        // physical lines read
  std::size_t blank_lines = 0;  // whitespace-only lines, not records
  std::size_t loaded = 0;
  std::size_t skipped = 0;
  std::vector<std::string> first_errors;  // the first LoadOptions::max_reported_errors skips

  /// One line for a log: counts, then the first skip reasons if any.
  std::string summary() const {
    std::string s = file + ": " + std::to_string(loaded) + " records loaded, " +
                    std::to_string(skipped) + " bad records skipped";
    for (const auto& e : first_errors) s += "\n  skipped " + e;
    if (skipped > first_errors.size()) {
      s += "\n  ... and " + std::to_string(skipped - first_errors.size()) + " more";
    }
    return s;
  }
};

struct LoadedRecords {
  RecordFormat format = RecordFormat::kAuto;  // kText or kTokenIds after loading
  std::vector<PreferenceRecord> records;
  LoadReport report;
};

namespace detail {

using nlohmann::json;

inline constexpr std::string_view kHhAssistantTag = "\n\nAssistant:";

inline bool is_id_record(const json& obj) {
  return obj.contains("prompt_ids") || obj.contains("chosen_ids") || obj.contains("rejected_ids");
}

inline std::string get_string(const json& obj, const std::string& field, const Fail& fail) {
  const json& v = require(obj, field, fail);
  if (!v.is_string()) fail(field, std::string("expected a string, got ") + v.type_name());
  return v.get<std::string>();
}

/// A response field: a string, or a message list whose last (assistant) message is the response.
inline std::string get_response(const json& obj, const std::string& field, const Fail& fail) {
  return get_response_value(require(obj, field, fail), field, fail);
}

inline std::vector<int64_t> get_ids(const json& obj, const std::string& field, int64_t vocab_size,
                                    bool allow_empty, const Fail& fail) {
  const json& v = require(obj, field, fail);
  if (!v.is_array())
    fail(field, std::string("expected an array of integers, got ") + v.type_name());
  if (v.empty() && !allow_empty) fail(field, "empty id list");
  std::vector<int64_t> ids;
  ids.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const json& e = v[i];
    if (!e.is_number_integer()) {
      fail(field, "element " + std::to_string(i) + " is not an integer (" + short_dump(e) + ")");
    }
    // Unsigned values above int64 max are out of any vocabulary; compare before converting.
    const bool too_big = e.is_number_unsigned() && e.get<uint64_t>() >= uint64_t(vocab_size);
    const int64_t id = too_big ? vocab_size : e.get<int64_t>();
    if (too_big || id < 0 || id >= vocab_size) {
      fail(field, "id " + short_dump(e) + " at index " + std::to_string(i) + " outside [0, " +
                      std::to_string(vocab_size) + ")");
    }
    ids.push_back(id);
  }
  return ids;
}

inline std::optional<bool> get_gold_agrees(const json& obj, const Fail& fail) {
  const auto it = obj.find("gold_agrees");
  if (it == obj.end()) return std::nullopt;
  if (!it->is_boolean())
    fail("gold_agrees", std::string("expected a boolean, got ") + it->type_name());
  return it->get<bool>();
}

/// TRL conversational without "prompt": chosen and rejected are full conversations; the prompt
/// is chosen[:-1], which must equal rejected[:-1] message for message.
inline void split_implicit_prompt(const json& obj, TextRecord& r, const Fail& fail) {
  const json& rejected = require(obj, "rejected", fail);
  if (!rejected.is_array()) {
    fail("rejected", std::string("expected a message list like \"chosen\" (without \"prompt\", "
                                 "the prompt is the messages before the last), got ") +
                         rejected.type_name());
  }
  const std::vector<Message> c = get_messages(obj.at("chosen"), "chosen", fail);
  const std::vector<Message> x = get_messages(rejected, "rejected", fail);
  r.chosen = response_of(c, "chosen", fail);
  r.rejected = response_of(x, "rejected", fail);
  if (c.size() == 1) {
    fail("prompt",
         "missing field (and \"chosen\" holds no message before its last to take the prompt "
         "from)");
  }
  if (x.size() != c.size()) {
    fail("rejected", "has " + std::to_string(x.size() - 1) +
                         " messages before its last, \"chosen\" has " +
                         std::to_string(c.size() - 1) +
                         ": without \"prompt\", chosen[:-1] is the prompt and must equal "
                         "rejected[:-1]");
  }
  for (std::size_t i = 0; i + 1 < c.size(); ++i) {
    for (const bool role : {true, false}) {
      const std::string& a = role ? c[i].role : c[i].content;
      const std::string& b = role ? x[i].role : x[i].content;
      if (a != b) {
        const std::string key = role ? ".role" : ".content";
        fail(element_field("rejected", i) + key,
             "differs from " + element_field("chosen", i) + key +
                 ": without \"prompt\", chosen[:-1] is the prompt and must equal rejected[:-1]");
      }
    }
  }
  r.prompt = render_messages(std::span<const Message>(c.data(), c.size() - 1));
}

/// HH-RLHF: split the shared conversation prefix (up to the last "\n\nAssistant:") off both texts.
inline void split_hh_rlhf_prompt(const json& obj, TextRecord& r, const Fail& fail) {
  const std::string chosen = get_string(obj, "chosen", fail);
  const std::string rejected = get_string(obj, "rejected", fail);
  const auto tag = chosen.rfind(kHhAssistantTag);
  if (tag == std::string::npos) {
    fail("prompt",
         "missing field (and \"chosen\" has no \"\\n\\nAssistant:\" to split an "
         "HH-RLHF prompt from)");
  }
  r.prompt = chosen.substr(0, tag + kHhAssistantTag.size());
  if (rejected.compare(0, r.prompt.size(), r.prompt) != 0) {
    fail("rejected", "does not start with the HH-RLHF prompt taken from \"chosen\"");
  }
  r.chosen = chosen.substr(r.prompt.size());
  r.rejected = rejected.substr(r.prompt.size());
  if (r.chosen.empty()) fail("chosen", "empty response");
  if (r.rejected.empty()) fail("rejected", "empty response");
}

}  // namespace detail

/// Parses one JSONL line into a record. `format` must be kText or kTokenIds, or kAuto to decide
/// from the line itself. Throws RecordError (naming `file` and `line`) for a bad record.
inline PreferenceRecord parse_preference_record(std::string_view text, const std::string& file,
                                                std::size_t line, RecordFormat format,
                                                const LoadOptions& options = {}) {
  using detail::json;
  const detail::Fail fail{file, line};
  const json obj = detail::parse_record_object<json>(text, fail, options.max_depth, "LoadOptions");

  const bool ids = detail::is_id_record(obj);
  if (format == RecordFormat::kText && ids) {
    for (const char* key : {"prompt_ids", "chosen_ids", "rejected_ids"}) {
      if (obj.contains(key)) fail(key, "pre-tokenized record in a file of text records");
    }
  }
  if (format == RecordFormat::kTokenIds && !ids) {
    fail("chosen_ids", "missing field (text record in a file of pre-tokenized records)");
  }

  if (ids) {
    if (options.vocab_size <= 0) {
      throw std::invalid_argument(file +
                                  ": pre-tokenized records need LoadOptions::vocab_size > 0"
                                  " to check their ids");
    }
    TokenRecord r;
    r.prompt_ids = detail::get_ids(obj, "prompt_ids", options.vocab_size, false, fail);
    r.chosen_ids = detail::get_ids(obj, "chosen_ids", options.vocab_size, false, fail);
    r.rejected_ids = detail::get_ids(obj, "rejected_ids", options.vocab_size, false, fail);
    r.line = line;
    r.gold_agrees = detail::get_gold_agrees(obj, fail);
    return r;
  }

  TextRecord r;
  r.line = line;
  r.gold_agrees = detail::get_gold_agrees(obj, fail);
  if (obj.contains("prompt")) {
    r.prompt = detail::get_prompt_value(obj.at("prompt"), "prompt", fail);
    r.chosen = detail::get_response(obj, "chosen", fail);
    r.rejected = detail::get_response(obj, "rejected", fail);
  } else if (obj.contains("chosen") && obj.at("chosen").is_array()) {
    detail::split_implicit_prompt(obj, r, fail);
  } else if (options.accept_hh_rlhf) {
    detail::split_hh_rlhf_prompt(obj, r, fail);
  } else {
    fail("prompt", "missing field");
  }
  return r;
}

/// Loads every record of a JSONL file. Throws std::runtime_error if the file cannot be read or
/// holds no good record, RecordError on the first bad record unless options.skip_bad.
inline LoadedRecords load_preference_records(const std::filesystem::path& path,
                                             const LoadOptions& options = {}) {
  const std::string file = path.string();
  LoadedRecords out;
  out.format = options.format;
  out.report.file = file;
  const auto counts = detail::for_each_jsonl_line(
      path, "preference file", [&](std::string_view text, std::size_t line) {
        try {
          PreferenceRecord r = parse_preference_record(text, file, line, out.format, options);
          if (out.format == RecordFormat::kAuto) {
            out.format = std::holds_alternative<TokenRecord>(r) ? RecordFormat::kTokenIds
                                                                : RecordFormat::kText;
          }
          out.records.push_back(std::move(r));
          ++out.report.loaded;
        } catch (const RecordError& e) {
          if (!options.skip_bad) throw;
          ++out.report.skipped;
          if (out.report.first_errors.size() < options.max_reported_errors) {
            out.report.first_errors.push_back(e.what());
          }
        }
      });
  out.report.lines = counts.lines;
  out.report.blank_lines = counts.blank_lines;
  if (out.records.empty()) {
    if (out.report.skipped == 0) {
      throw std::runtime_error(file + ": no preference records (the file is empty or blank)");
    }
    throw std::runtime_error("no valid preference records in " + out.report.summary());
  }
  return out;
}

}  // namespace hafrm::data
