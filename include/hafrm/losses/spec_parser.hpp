// hafrm/losses/spec_parser.hpp: the syntax of a loss spec string, apart from what the names mean
// (registry.hpp): `name[:key=value,key=value...][@weight]`, several items separated by commas (a
// comma-separated item without '=' or with ':' starts the next item). The weight may end any part
// of its item.
//
// example-begin parse_loss_spec
//   auto items = hafrm::parse_loss_spec("sigmoid:beta=0.1,ipo:beta=0.5@0.2");
//   // items[1].name "ipo", items[1].params[0] {"beta", "0.5"}, *items[1].weight 0.2
// example-end
//
// Syntax errors name the spec; unknown names and parameters are the registry's to reject.
#pragma once

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hafrm/torch/checks.hpp"

namespace hafrm {

// One `name:key=value,...@weight` item of a spec, values as written.
struct LossSpecItem {
  std::string name;
  std::vector<std::pair<std::string, std::string>> params;
  std::optional<double> weight;
};

namespace detail::registry {

inline std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

inline std::optional<double> parse_number(std::string_view s) {
  const std::string str(s);
  if (str.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(str.c_str(), &end);
  if (end != str.c_str() + str.size() || errno == ERANGE) return std::nullopt;
  return v;
}

inline std::optional<int64_t> parse_integer(std::string_view s) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

inline std::optional<bool> parse_bool(std::string_view s) {
  if (s == "true" || s == "1") return true;
  if (s == "false" || s == "0") return false;
  return std::nullopt;
}

// Splits a spec into items; `valid` (the names) only feeds error messages.
inline std::vector<LossSpecItem> parse_spec(std::string_view spec, std::string_view fn,
                                            const std::vector<std::string>& valid) {
  std::vector<LossSpecItem> items;
  HAFRM_CHECK_ARG(!trim(spec).empty(), fn, "spec", "must name a loss; valid names: ", join(valid));
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view token = trim(spec.substr(start, comma - start));
    start = comma + 1;
    HAFRM_CHECK_ARG(!token.empty(), fn, "spec", "has an empty item in '", spec, "'");
    std::optional<double> weight;
    if (auto at = token.rfind('@'); at != std::string_view::npos) {
      auto w = parse_number(trim(token.substr(at + 1)));
      HAFRM_CHECK_ARG(w.has_value(), fn, "spec", "expected a number after '@' in '", token, "'");
      weight = w;
      token = trim(token.substr(0, at));
    }
    std::string_view param;
    const size_t colon = token.find(':');
    if (colon != std::string_view::npos || token.find('=') == std::string_view::npos) {
      LossSpecItem item;
      item.name = std::string(trim(token.substr(0, colon)));
      HAFRM_CHECK_ARG(!item.name.empty(), fn, "spec", "expected a loss name before ':' in '", token,
                      "'; valid names: ", join(valid));
      items.push_back(std::move(item));
      if (colon != std::string_view::npos) {
        param = trim(token.substr(colon + 1));
        HAFRM_CHECK_ARG(!param.empty(), fn, "spec", "expected key=value after ':' in '", token,
                        "'");
      }
    } else {
      HAFRM_CHECK_ARG(!items.empty(), fn, "spec", "starts with a parameter ('", token,
                      "') instead of a name; valid names: ", join(valid));
      param = token;
    }
    LossSpecItem& cur = items.back();
    if (weight) {
      HAFRM_CHECK_ARG(!cur.weight, fn, cur.name, "has two weights ('@') in '", spec, "'");
      cur.weight = weight;
    }
    if (!param.empty()) {
      const size_t eq = param.find('=');
      HAFRM_CHECK_ARG(eq != std::string_view::npos, fn, cur.name, "expected key=value, got '",
                      param, "'");
      std::string key(trim(param.substr(0, eq)));
      std::string value(trim(param.substr(eq + 1)));
      HAFRM_CHECK_ARG(!key.empty() && !value.empty(), fn, cur.name, "expected key=value, got '",
                      param, "'");
      for (const auto& [k, v] : cur.params)
        HAFRM_CHECK_ARG(k != key, fn, cur.name + ":" + key, "is given twice");
      cur.params.emplace_back(std::move(key), std::move(value));
    }
    if (comma == spec.size()) break;
  }
  return items;
}

}  // namespace detail::registry

// The items of a spec, checked for syntax only.
inline std::vector<LossSpecItem> parse_loss_spec(std::string_view spec) {
  return detail::registry::parse_spec(spec, "parse_loss_spec", {"(see policy_loss_names())"});
}

}  // namespace hafrm
