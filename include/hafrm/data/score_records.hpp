// Loading JSONL rows to score: one prompt with one response, or with N responses (best-of-N).
//
// Accepted row shapes (other fields are kept in ScoreRecord::row and otherwise ignored):
//   {"prompt": P, "response": R}             one response        -> group == false
//   {"prompt": P, "responses": [R, ...]}     N >= 1 responses    -> group == true
// P is a string (used as is) or a message list (rendered by render_messages, messages.hpp); R is
// a string or a message list whose LAST message, with role "assistant", holds the response.
// Exactly one of "response" / "responses" must be present.
//
// A bad row (malformed JSON, nesting deeper than ScoreLoadOptions::max_depth, invalid UTF-8, a
// missing "prompt", both or neither of "response"/"responses", an empty "responses", an empty
// response, a wrong type, a bad message) throws RecordError naming file, 1-based line and field
// ("responses[2]", "response[0].role"). There is no skipping: a scorer's output row matches each
// input row. Blank lines are not rows.
//
// #include <hafrm/data/score_records.hpp>
// example-begin score_records ScoreFile
//   namespace hd = hafrm::data;
//   hd::ByteTokenizer tok;
//   for (const hd::ScoreRecord& r : hd::load_score_records(path)) {  // e.g. "to_score.jsonl"
//     for (const std::string& response : r.responses) {
//       hd::TokenizedSequence s = hd::assemble_single(tok, r.prompt, response, {});
//     }
//     // output: r.row plus "score" (or "scores", "ranking", "best" when r.group)
//   }
// example-end
#pragma once

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "hafrm/data/jsonl.hpp"
#include "hafrm/data/messages.hpp"

namespace hafrm::data {

/// One row to score. `responses` holds one response when !group; `row` is the input object with
/// its field order kept, for writing it back with the scores added.
struct ScoreRecord {
  std::string prompt;
  std::vector<std::string> responses;
  bool group = false;    // the row had "responses" (a list), not "response"
  std::size_t line = 0;  // 1-based source line
  nlohmann::ordered_json row;
};

struct ScoreLoadOptions {
  /// Deepest nesting of arrays/objects a row may have (the row object is level 1; a list of
  /// message lists in "responses" reaches 4). Deeper lines are refused before parsing.
  std::size_t max_depth = 64;
};

/// Parses one JSONL line into a score record. Throws RecordError (naming `file` and `line`) for a
/// bad row.
inline ScoreRecord parse_score_record(std::string_view line_text, const std::string& file,
                                      std::size_t line, const ScoreLoadOptions& options = {}) {
  using Json = nlohmann::ordered_json;
  const detail::Fail fail{file, line};
  ScoreRecord r;
  r.line = line;
  r.row = detail::parse_record_object<Json>(line_text, fail, options.max_depth, "ScoreLoadOptions");
  const Json& obj = r.row;
  r.prompt = detail::get_prompt_value(detail::require(obj, "prompt", fail), "prompt", fail);
  const auto one = obj.find("response"), many = obj.find("responses");
  if (one != obj.end() && many != obj.end()) {
    fail("responses", "a row holds \"response\" (one) or \"responses\" (a list), not both");
  }
  if (one != obj.end()) {
    r.responses.push_back(detail::get_response_value(*one, "response", fail));
    return r;
  }
  if (many == obj.end()) {
    fail("response", "missing field (a row holds \"response\" or \"responses\")");
  }
  r.group = true;
  if (!many->is_array()) {
    fail("responses", std::string("expected a list of responses, got ") + many->type_name());
  }
  if (many->empty()) fail("responses", "empty list: expected at least one response");
  r.responses.reserve(many->size());
  for (std::size_t i = 0; i < many->size(); ++i) {
    r.responses.push_back(
        detail::get_response_value((*many)[i], detail::element_field("responses", i), fail));
  }
  return r;
}

/// Loads every row of a JSONL file. Throws std::runtime_error if the file cannot be read or holds
/// no row, RecordError on the first bad row.
inline std::vector<ScoreRecord> load_score_records(const std::filesystem::path& path,
                                                   const ScoreLoadOptions& options = {}) {
  const std::string file = path.string();
  std::vector<ScoreRecord> records;
  detail::for_each_jsonl_line(path, "score input file",
                              [&](std::string_view text, std::size_t line) {
                                records.push_back(parse_score_record(text, file, line, options));
                              });
  if (records.empty())
    throw std::runtime_error(file + ": no rows to score (the file is empty or blank)");
  return records;
}

}  // namespace hafrm::data
