// What every JSONL record loader of hafrm::data shares: RecordError (file, line, field), the checks
// one line goes through before any field is read (nesting depth, UTF-8, JSON syntax, an object at
// the top), and the line reader (blank lines, CRLF, a UTF-8 BOM).
//
//   #include <hafrm/data/jsonl.hpp>
//   try { ... } catch (const hafrm::data::RecordError& e) {
//     std::cerr << e.what() << "\n";  // "train.jsonl:7: field 'chosen[1].role': ..."
//   }
#pragma once

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "hafrm/data/json_depth.hpp"
#include "hafrm/data/utf8.hpp"

namespace hafrm::data {

/// A bad record. what() reads "<file>:<line>: field '<field>': <reason>"; field is "record" when
/// the problem is the line as a whole (malformed JSON, not an object). Inside message lists the
/// field is a path such as "chosen[1].role".
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

namespace detail {

/// Throws the RecordError for one line; [[noreturn]] lets the checks read straight-line.
struct Fail {
  const std::string& file;
  std::size_t line;
  [[noreturn]] void operator()(const std::string& field, const std::string& reason) const {
    throw RecordError(file, line, field, reason);
  }
};

/// A JSON value for an error message, cut to `max_chars` so a huge value cannot flood the log.
template <class Json>
std::string short_dump(const Json& v, std::size_t max_chars = 40) {
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

template <class Json>
const Json& require(const Json& obj, const std::string& field, const Fail& fail) {
  const auto it = obj.find(field);
  if (it == obj.end()) fail(field, "missing field");
  return *it;
}

/// Names the top-level field whose key or (nested) string value holds U+FFFD in a line whose
/// invalid bytes were replaced by U+FFFD; "record" if none does.
template <class Json>
std::string field_with_replacement_char(const Json& obj) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  const auto holds = [&](const Json& v, const auto& self) -> bool {
    if (v.is_string())
      return v.template get_ref<const std::string&>().find(kReplacement) != std::string::npos;
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

/// One line as a JSON object, or a RecordError: nested deeper than `max_depth` (checked first,
/// without recursion: everything after it recurses once per level), invalid UTF-8 (naming the
/// field that holds it), malformed JSON or a number beyond double's range, not an object.
/// `max_depth` 0 is a caller's mistake: std::invalid_argument naming `options_name`.
template <class Json>
Json parse_record_object(std::string_view text, const Fail& fail, std::size_t max_depth,
                         const char* options_name) {
  if (max_depth == 0) {
    throw std::invalid_argument(std::string(options_name) + "::max_depth must be >= 1");
  }
  if (const auto deep = find_too_deep(text, max_depth)) {
    fail(deep->field, "nested deeper than " + std::to_string(max_depth) + " arrays/objects (byte " +
                          std::to_string(deep->offset + 1) + " of the line)");
  }
  // The JSON parser rejects invalid UTF-8 without saying where; find the field by parsing a copy
  // whose bad bytes are U+FFFD.
  if (const auto bad = first_invalid_utf8(text)) {
    const std::string reason = "invalid UTF-8 (byte " + std::to_string(*bad + 1) + " of the line)";
    const Json repaired = Json::parse(replace_invalid_utf8(text), nullptr, false);
    if (repaired.is_discarded()) fail("record", "malformed JSON and " + reason);
    fail(field_with_replacement_char(repaired), reason);
  }
  Json obj;
  try {
    obj = Json::parse(text);
  } catch (const typename Json::exception& e) {
    // parse_error, and out_of_range.406 for a number beyond double's range such as 1e999.
    fail("record", std::string("malformed JSON: ") + e.what());
  }
  if (!obj.is_object()) {
    fail("record", std::string("expected a JSON object, got ") + obj.type_name());
  }
  return obj;
}

/// Counts of one pass over a JSONL file.
struct LineCounts {
  std::size_t lines = 0;        // physical lines read
  std::size_t blank_lines = 0;  // whitespace-only lines, not records
};

/// Calls on_record(text, line) for every non-blank line of `path` (1-based line numbers; CRLF
/// endings and a UTF-8 BOM on line 1 removed). `what` names the file's kind in the errors:
/// std::runtime_error if it cannot be opened or read.
template <class OnRecord>
LineCounts for_each_jsonl_line(const std::filesystem::path& path, const std::string& what,
                               OnRecord&& on_record) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + what + " " + path.string());
  LineCounts counts;
  std::string text;
  while (std::getline(in, text)) {
    const std::size_t line = ++counts.lines;
    if (!text.empty() && text.back() == '\r') text.pop_back();            // CRLF files
    if (line == 1 && text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);  // UTF-8 BOM
    if (text.find_first_not_of(" \t") == std::string::npos) {
      ++counts.blank_lines;
      continue;
    }
    // A callback that returns bool stops the pass by returning false (reading the first row).
    if constexpr (std::is_same_v<std::invoke_result_t<OnRecord&, std::string_view, std::size_t>,
                                 bool>) {
      if (!on_record(std::string_view(text), line)) break;
    } else {
      on_record(std::string_view(text), line);
    }
  }
  if (in.bad()) throw std::runtime_error("read error in " + what + " " + path.string());
  return counts;
}

}  // namespace detail

}  // namespace hafrm::data
