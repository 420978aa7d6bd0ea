/// \file json_depth.hpp
/// The nesting-depth pre-scan of preference_records.hpp: a line nested deeper than
/// LoadOptions::max_depth is refused, naming where, before nlohmann's parser (which recurses once
/// per level) ever sees it.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "hafrm/data/utf8.hpp"

namespace hafrm::data::detail {

/// The deepest point of a line, when it exceeds the limit: its byte offset and the top-level key
/// it is under ("record" when it is not under a key of the top-level object).
struct TooDeep {
  std::size_t offset = 0;
  std::string field;
};

/// Finds the first '[' or '{' (outside strings) that goes deeper than `max_depth`, without
/// parsing: one pass, constant stack, so hostile nesting never reaches a recursive walk.
inline std::optional<TooDeep> find_too_deep(std::string_view text, std::size_t max_depth) {
  std::size_t depth = 0;
  bool in_string = false, escaped = false;
  std::size_t string_start = 0;
  std::string_view last_string;  // the most recent string closed at depth 1 (a key candidate)
  std::string_view key;          // the top-level key whose value is being scanned
  bool top_is_object = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
        if (depth == 1) last_string = text.substr(string_start, i - string_start);
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        string_start = i + 1;
        break;
      case ':':
        if (depth == 1) key = last_string;
        break;
      case ',':
        if (depth == 1) key = {};
        break;
      case '[':
      case '{':
        if (depth == 0) top_is_object = c == '{';
        if (++depth > max_depth) {
          // Name the key only when it is short, plain text; otherwise the line as a whole.
          const bool plain_key = top_is_object && !key.empty() && key.size() <= 64 &&
                                 key.find('\\') == std::string_view::npos &&
                                 !first_invalid_utf8(key).has_value();
          return TooDeep{i, plain_key ? std::string(key) : std::string("record")};
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return std::nullopt;
}

}  // namespace hafrm::data::detail
