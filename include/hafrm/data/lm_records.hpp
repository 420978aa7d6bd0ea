// Loading JSONL rows for language-model training (pre-training and supervised fine-tuning): one
// sequence per row, with or without a prompt.
//
// Accepted row shapes (other fields are ignored):
//   {"text": T}                      a whole text                        -> has_prompt false
//   {"prompt": P, "response": R}     a response to a prompt              -> has_prompt true
// P is a string or a message list (rendered by render_messages, messages.hpp); R is a string or a
// message list whose last message, with role "assistant", holds the response. The first row
// decides the file's shape; a row of the other shape is a bad row, as a row with both "text" and
// "prompt", neither, or an empty text or response is.
//
// A bad row (malformed JSON, nesting deeper than LmLoadOptions::max_depth, invalid UTF-8, a wrong
// type) throws RecordError naming file, 1-based line and field, unless options.skip_bad: it is
// then skipped and counted in the report, never dropped silently.
//
// sniff_record_shape() tells these files from preference files by their first row, so one option
// can take any of them.
//
// #include <hafrm/data/lm_records.hpp>
// example-begin lm_records LmFile
//   namespace hd = hafrm::data;
//   hd::ByteTokenizer tok;
//   for (const hd::LmRecord& r : hd::load_lm_records(path).records) {  // e.g. "corpus.jsonl"
//     std::vector<int64_t> ids = r.has_prompt ? hd::assemble_single(tok, r.prompt, r.text, {}).ids
//                                             : tok.encode(r.text);
//   }
// example-end
#pragma once

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hafrm/data/jsonl.hpp"
#include "hafrm/data/messages.hpp"
#include "hafrm/data/preference_records.hpp"

namespace hafrm::data {

/// One row: `text` is the whole text ({"text"}) or the response ({"prompt", "response"}).
struct LmRecord {
  std::string prompt;
  std::string text;
  bool has_prompt = false;
  std::size_t line = 0;  // 1-based source line
};

struct LmLoadOptions {
  /// false: the first bad row throws RecordError. true: bad rows are skipped and counted.
  bool skip_bad = false;
  /// How many skip messages LoadReport::first_errors keeps.
  std::size_t max_reported_errors = 5;
  /// Deepest nesting of arrays/objects a row may have (the row object is level 1).
  std::size_t max_depth = 64;
};

struct LoadedLmRecords {
  std::vector<LmRecord> records;
  LoadReport report;
};

/// What a JSONL file's first row holds.
enum class RecordShape {
  kText,            // {"text": ...}
  kPromptResponse,  // {"prompt": ..., "response": ...}
  kPreference,      // {"chosen", "rejected", ...} or {"chosen_ids", ...}: preference_records.hpp
};

inline const char* shape_name(RecordShape s) {
  switch (s) {
    case RecordShape::kText:
      return "text rows {\"text\"}";
    case RecordShape::kPromptResponse:
      return "prompt/response rows {\"prompt\", \"response\"}";
    case RecordShape::kPreference:
      return "preference rows {\"chosen\", \"rejected\"}";
  }
  return "?";
}

namespace detail {

template <class Json>
RecordShape shape_of(const Json& obj, const Fail& fail) {
  const bool text = obj.contains("text"), prompt = obj.contains("prompt"),
             response = obj.contains("response");
  if (obj.contains("chosen") || obj.contains("chosen_ids")) return RecordShape::kPreference;
  if (text && (prompt || response))
    fail("text", "a row holds \"text\", or \"prompt\" and \"response\", not both");
  if (text) return RecordShape::kText;
  if (response) return RecordShape::kPromptResponse;
  fail("text",
       "missing field (a row holds \"text\", \"prompt\" and \"response\", or a preference "
       "pair's \"chosen\" and \"rejected\")");
  return RecordShape::kText;  // not reached: fail throws
}

}  // namespace detail

/// The shape of the first row of a JSONL file. Throws std::runtime_error if the file cannot be
/// read or has no row, RecordError if its first row is not an object of a known shape.
inline RecordShape sniff_record_shape(const std::filesystem::path& path,
                                      std::size_t max_depth = 64) {
  const std::string file = path.string();
  std::optional<RecordShape> shape;
  detail::for_each_jsonl_line(path, "data file", [&](std::string_view text, std::size_t line) {
    const detail::Fail fail{file, line};
    shape = detail::shape_of(
        detail::parse_record_object<nlohmann::json>(text, fail, max_depth, "sniff_record_shape"),
        fail);
    return false;  // the first row decides
  });
  if (shape) return *shape;
  throw std::runtime_error(file + ": no rows (the file is empty or blank)");
}

/// Parses one JSONL line into an LM record. Throws RecordError (naming `file` and `line`).
inline LmRecord parse_lm_record(std::string_view line_text, const std::string& file,
                                std::size_t line, const LmLoadOptions& options = {}) {
  using Json = nlohmann::json;
  const detail::Fail fail{file, line};
  const Json obj =
      detail::parse_record_object<Json>(line_text, fail, options.max_depth, "LmLoadOptions");
  LmRecord r;
  r.line = line;
  switch (detail::shape_of(obj, fail)) {
    case RecordShape::kPreference:
      fail("chosen", "a preference pair in a file of single sequences");
      break;
    case RecordShape::kText: {
      const Json& t = obj.at("text");
      if (!t.is_string()) fail("text", std::string("expected a string, got ") + t.type_name());
      r.text = t.get<std::string>();
      if (r.text.empty()) fail("text", "empty text");
      break;
    }
    case RecordShape::kPromptResponse:
      r.has_prompt = true;
      r.prompt = detail::get_prompt_value(detail::require(obj, "prompt", fail), "prompt", fail);
      r.text = detail::get_response_value(obj.at("response"), "response", fail);
      if (r.text.empty()) fail("response", "empty response");
      break;
  }
  return r;
}

/// Loads every row of a JSONL file of single sequences. Throws std::runtime_error if the file
/// cannot be read or holds no good row; RecordError on the first bad row unless skip_bad.
inline LoadedLmRecords load_lm_records(const std::filesystem::path& path,
                                       const LmLoadOptions& options = {}) {
  const std::string file = path.string();
  LoadedLmRecords out;
  out.report.file = file;
  int shape = -1;  // 1: has_prompt, 0: text; set by the first good row
  const auto counts =
      detail::for_each_jsonl_line(path, "text file", [&](std::string_view text, std::size_t line) {
        try {
          LmRecord r = parse_lm_record(text, file, line, options);
          if (shape < 0) shape = r.has_prompt;
          if (int(r.has_prompt) != shape)
            throw RecordError(file, line, r.has_prompt ? "prompt" : "text",
                              std::string("a ") + (r.has_prompt ? "prompt/response" : "text") +
                                  " row in a file whose first row is a " +
                                  (shape ? "prompt/response" : "text") + " row");
          out.records.push_back(std::move(r));
          ++out.report.loaded;
        } catch (const RecordError& e) {
          if (!options.skip_bad) throw;
          ++out.report.skipped;
          if (out.report.first_errors.size() < options.max_reported_errors)
            out.report.first_errors.push_back(e.what());
        }
      });
  out.report.lines = counts.lines;
  out.report.blank_lines = counts.blank_lines;
  if (out.records.empty()) {
    if (out.report.skipped == 0)
      throw std::runtime_error(file + ": no rows (the file is empty or blank)");
    throw std::runtime_error("no valid rows in " + out.report.summary());
  }
  return out;
}

}  // namespace hafrm::data
