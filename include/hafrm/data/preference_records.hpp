// Loading JSONL preference data (one JSON object per line) in the shapes users already have.
//
// Accepted record shapes (extra fields such as "score_chosen" or "corruption" are ignored):
//   text    {"prompt": str, "chosen": str, "rejected": str}                 TRL / DPO style
//           {"prompt": str, "chosen": [msgs], "rejected": [msgs]} UltraFeedback-binarized:
//               the response is the "content" of the LAST message, whose "role" must be "assistant"
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
// LoadOptions::max_depth, missing field, wrong type, empty response, invalid UTF-8, empty
// prompt_ids, an id outside [0, vocab_size)) throws RecordError naming file, 1-based line and
// field. With LoadOptions::skip_bad it is skipped instead and counted in the LoadReport, together
// with the first few messages; nothing is dropped silently. Blank lines are not records.
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
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "hafrm/data/json_depth.hpp"
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

/// A bad record. what() reads "<file>:<line>: field '<field>': <reason>"; field is "record" when
/// the problem is the line as a whole (malformed JSON, not an object).
class RecordError : public std::runtime_error {
 public:
  RecordError(std::string file, std::size_t line, std::string field, std::string reason)
      : std::runtime_error(file + ":" + std::to_string(line) + ": " +
                           (field == "record" ? std::string("record") : "field '" + field + "'") +
                           ": " + reason),
        file_(std::move(file)),
        line_(line),
        field_(std::move(field)),
        reason_(std::move(reason)) {}

  const std::string& file() const { return file_; }
  std::size_t line() const { return line_; }
  const std::string& field() const { return field_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string file_;
  std::size_t line_;
  std::string field_;
  std::string reason_;
};

struct LoadOptions {
  /// false: the first bad record throws RecordError. true: bad records are skipped and counted.
  bool skip_bad = false;
  /// How many skip messages LoadReport::first_errors keeps.
  std::size_t max_reported_errors = 5;
  /// kAuto: the first good record decides; a record of the other form is then a bad record.
  RecordFormat format = RecordFormat::kAuto;
  /// Vocabulary size that pre-tokenized ids must fit; required (> 0) for id records.
  int64_t vocab_size = 0;
  /// Accept HH-RLHF records (no "prompt"; the prompt is split off "chosen").
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

/// Throws the RecordError for one line; [[noreturn]] lets the checks below read straight-line.
struct Fail {
  const std::string& file;
  std::size_t line;
  [[noreturn]] void operator()(const std::string& field, const std::string& reason) const {
    throw RecordError(file, line, field, reason);
  }
};

/// A JSON value for an error message, cut to `max_chars` so a huge value cannot flood the log.
inline std::string short_dump(const json& v, std::size_t max_chars = 40) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

inline bool is_id_record(const json& obj) {
  return obj.contains("prompt_ids") || obj.contains("chosen_ids") || obj.contains("rejected_ids");
}

inline const json& require(const json& obj, const std::string& field, const Fail& fail) {
  const auto it = obj.find(field);
  if (it == obj.end()) fail(field, "missing field");
  return *it;
}

inline std::string get_string(const json& obj, const std::string& field, const Fail& fail) {
  const json& v = require(obj, field, fail);
  if (!v.is_string()) fail(field, std::string("expected a string, got ") + v.type_name());
  return v.get<std::string>();
}

/// A response given as a string or as a chat message list (UltraFeedback-binarized).
inline std::string get_response(const json& obj, const std::string& field, const Fail& fail) {
  const json& v = require(obj, field, fail);
  std::string text;
  if (v.is_string()) {
    text = v.get<std::string>();
  } else if (v.is_array()) {
    if (v.empty()) fail(field, "empty message list");
    const json& last = v.back();
    if (!last.is_object() || !last.contains("role") || !last.contains("content") ||
        !last["role"].is_string() || !last["content"].is_string()) {
      fail(field, "last message must be an object with string \"role\" and \"content\"");
    }
    if (last["role"].get<std::string>() != "assistant") {
      fail(field, "last message has role \"" + last["role"].get<std::string>() +
                      "\", expected \"assistant\"");
    }
    text = last["content"].get<std::string>();
  } else {
    fail(field, std::string("expected a string or a message list, got ") + v.type_name());
  }
  if (text.empty()) fail(field, "empty response");
  return text;
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

/// Names the top-level field whose key or (nested) string value holds U+FFFD in a line whose
/// invalid bytes were replaced by U+FFFD; "record" if none does.
inline std::string field_with_replacement_char(const json& obj) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  const auto holds = [&](const json& v, const auto& self) -> bool {
    if (v.is_string())
      return v.get_ref<const std::string&>().find(kReplacement) != std::string::npos;
    if (v.is_structured()) {
      for (const auto& [k, child] : v.items()) {
        if (k.find(kReplacement) != std::string::npos || self(child, self)) return true;
      }
    }
    return false;
  };
  if (obj.is_object()) {
    for (const auto& [key, value] : obj.items()) {
      if (key.find(kReplacement) != std::string::npos || holds(value, holds)) return key;
    }
  }
  return "record";
}

inline std::optional<bool> get_gold_agrees(const json& obj, const Fail& fail) {
  const auto it = obj.find("gold_agrees");
  if (it == obj.end()) return std::nullopt;
  if (!it->is_boolean())
    fail("gold_agrees", std::string("expected a boolean, got ") + it->type_name());
  return it->get<bool>();
}

}  // namespace detail

/// Parses one JSONL line into a record. `format` must be kText or kTokenIds, or kAuto to decide
/// from the line itself. Throws RecordError (naming `file` and `line`) for a bad record.
inline PreferenceRecord parse_preference_record(std::string_view text, const std::string& file,
                                                std::size_t line, RecordFormat format,
                                                const LoadOptions& options = {}) {
  using detail::json;
  const detail::Fail fail{file, line};

  // Before anything walks the value (the UTF-8 pass below, dump(), the destructor of older
  // nlohmann versions): every one of those recurses once per level.
  if (options.max_depth == 0) throw std::invalid_argument("LoadOptions::max_depth must be >= 1");
  if (const auto deep = detail::find_too_deep(text, options.max_depth)) {
    fail(deep->field, "nested deeper than " + std::to_string(options.max_depth) +
                          " arrays/objects (byte " + std::to_string(deep->offset + 1) +
                          " of the line)");
  }

  // The JSON parser rejects invalid UTF-8 without saying where; find the field ourselves by
  // parsing a copy whose bad bytes are U+FFFD.
  if (const auto bad = first_invalid_utf8(text)) {
    const std::string reason = "invalid UTF-8 (byte " + std::to_string(*bad + 1) + " of the line)";
    const json repaired = json::parse(replace_invalid_utf8(text), nullptr, false);
    if (repaired.is_discarded()) fail("record", "malformed JSON and " + reason);
    fail(detail::field_with_replacement_char(repaired), reason);
  }

  json obj;
  try {
    obj = json::parse(text);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range.406 for a number beyond double's range such as 1e999.
    fail("record", std::string("malformed JSON: ") + e.what());
  }
  if (!obj.is_object()) {
    fail("record", std::string("expected a JSON object, got ") + obj.type_name());
  }

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
  if (obj.contains("prompt") || !options.accept_hh_rlhf) {
    r.prompt = detail::get_string(obj, "prompt", fail);
    r.chosen = detail::get_response(obj, "chosen", fail);
    r.rejected = detail::get_response(obj, "rejected", fail);
    return r;
  }
  // HH-RLHF: split the shared conversation prefix off both full texts.
  const std::string chosen = detail::get_string(obj, "chosen", fail);
  const std::string rejected = detail::get_string(obj, "rejected", fail);
  const auto tag = chosen.rfind(detail::kHhAssistantTag);
  if (tag == std::string::npos) {
    fail("prompt",
         "missing field (and \"chosen\" has no \"\\n\\nAssistant:\" to split an "
         "HH-RLHF prompt from)");
  }
  r.prompt = chosen.substr(0, tag + detail::kHhAssistantTag.size());
  if (rejected.compare(0, r.prompt.size(), r.prompt) != 0) {
    fail("rejected", "does not start with the HH-RLHF prompt taken from \"chosen\"");
  }
  r.chosen = chosen.substr(r.prompt.size());
  r.rejected = rejected.substr(r.prompt.size());
  if (r.chosen.empty()) fail("chosen", "empty response");
  if (r.rejected.empty()) fail("rejected", "empty response");
  return r;
}

/// Loads every record of a JSONL file. Throws std::runtime_error if the file cannot be read or
/// holds no good record, RecordError on the first bad record unless options.skip_bad.
inline LoadedRecords load_preference_records(const std::filesystem::path& path,
                                             const LoadOptions& options = {}) {
  const std::string file = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open preference file " + file);

  LoadedRecords out;
  out.format = options.format;
  out.report.file = file;
  std::string text;
  while (std::getline(in, text)) {
    const std::size_t line = ++out.report.lines;
    if (!text.empty() && text.back() == '\r') text.pop_back();            // CRLF files
    if (line == 1 && text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);  // UTF-8 BOM
    if (text.find_first_not_of(" \t") == std::string::npos) {
      ++out.report.blank_lines;
      continue;
    }
    try {
      PreferenceRecord r = parse_preference_record(text, file, line, out.format, options);
      if (out.format == RecordFormat::kAuto) {
        out.format =
            std::holds_alternative<TokenRecord>(r) ? RecordFormat::kTokenIds : RecordFormat::kText;
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
  }
  if (in.bad()) throw std::runtime_error("read error in preference file " + file);
  if (out.records.empty()) {
    if (out.report.skipped == 0) {
      throw std::runtime_error(file + ": no preference records (the file is empty or blank)");
    }
    throw std::runtime_error("no valid preference records in " + out.report.summary());
  }
  return out;
}

}  // namespace hafrm::data
