// Strict UTF-8 validation, used by the record loader to say WHICH field holds a bad byte
// (the JSON parser only says that the line is bad).
//
//   #include <hafrm/data/utf8.hpp>
//   if (auto at = hafrm::data::first_invalid_utf8(text)) { /* byte *at is bad */ }
//   std::string shown = hafrm::data::replace_invalid_utf8(text);  // bad bytes -> U+FFFD
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace hafrm::data {

namespace detail {

/// Length of the valid UTF-8 sequence starting at text[i], or 0 if it is invalid. Strict per
/// RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF (what JSON parsers accept).
inline std::size_t utf8_sequence_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

}  // namespace detail

/// Byte offset of the first invalid UTF-8 byte in `text`, or nullopt if it is all valid.
inline std::optional<std::size_t> first_invalid_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = detail::utf8_sequence_length(text, i);
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

/// Copy of `text` with each invalid byte replaced by U+FFFD.
inline std::string replace_invalid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = detail::utf8_sequence_length(text, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

}  // namespace hafrm::data
