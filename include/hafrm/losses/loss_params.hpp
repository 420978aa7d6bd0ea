// hafrm/losses/loss_params.hpp: how a spec's `key=value` reaches a loss's field. A registry entry
// binds each key to a field by member pointer, once; the same binding checks the value's type,
// sets the field, and describes the parameter (type, default, range, field) to the catalogue, so
// the keys a loss declares and the fields its builder sets cannot drift apart.
//
// example-begin loss_params_bind
//   namespace reg = hafrm::registry;
//   reg::Binding<hafrm::BradleyTerry> center = reg::bind(
//       "center", HAFRM_REGISTRY_FIELD(hafrm::BradleyTerry, center_coefficient),
//       reg::Range::weight());   // the catalogue shows the entry's prototype's value as default
// example-end
//
// The range is the one the functor's validate() enforces; tests/test_loss_catalogue_api.cpp
// checks the two agree at each bound.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "hafrm/losses/spec_parser.hpp"

// A member pointer and its name, for bind(): the catalogue shows which field a key sets.
#define HAFRM_REGISTRY_FIELD(Type, member) &Type::member, #member

namespace hafrm {

// One parameter of a catalogue entry (loss_catalogue()).
struct ParamInfo {
  std::string name{};           // the spec key
  std::string type{};           // number, integer, bool, or the choices as a/b/c
  std::string default_value{};  // as a spec would write it
  std::string range{};          // accepted values, e.g. [1e-06, 1e+06]; empty when any
  std::string field{};          // the struct field it sets, or what it applies (LD-DPO, WPO)
  bool shared = false;  // one of the DPO family's common parameters (f-divergence, modifiers)
};

// The vocabulary of registry entries: public, so that a loss of your own registers with the same
// parameter machinery as the catalogue (registry.hpp, register_policy_loss).
namespace registry {

using namespace ::hafrm::detail::registry;  // the spec syntax helpers (spec_parser.hpp)

enum class Kind { kNumber, kInteger, kBool, kChoice };

// An interval that a numeric parameter's functor accepts: [lo, hi] with open ends as flagged,
// optionally also exactly 0 (a weight that switches a term off), optionally on |v| (a signed
// coefficient).
struct Range {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false, or_zero = false, magnitude = false;

  static Range scale() { return {detail::kMinScale, detail::kMaxScale}; }
  static Range weight() { return {detail::kMinScale, detail::kMaxScale, false, false, true}; }
  static Range coefficient() {
    return {detail::kMinScale, detail::kMaxScale, false, false, true, true};
  }
  static Range smoothing() { return {0.0, 0.5, false, true}; }
  static Range closed(double lo, double hi) { return {lo, hi}; }
  static Range open(double lo, double hi) { return {lo, hi, true, true}; }
  static Range at_least(double lo) { return {lo}; }

  bool any() const { return std::isinf(lo) && std::isinf(hi) && !or_zero; }
  bool contains(double v) const {
    if (or_zero && v == 0.0) return true;
    const double x = magnitude ? std::abs(v) : v;
    return (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  }
  std::string text() const {
    if (any()) return "";
    std::ostringstream s;
    if (or_zero) s << "0 or ";
    if (magnitude) s << "±";
    if (std::isinf(hi)) {
      s << ">= " << lo;
    } else {
      s << (lo_open ? "(" : "[") << lo << ", " << hi << (hi_open ? ")" : "]");
    }
    return s.str();
  }
};

struct ParamDecl {
  std::string name{};
  Kind kind = Kind::kNumber;
  std::vector<std::string> choices{};
  ParamInfo info{};  // filled by bind() or by the entry's own declaration
  std::optional<Range> range{};
};

// The parameters of one item, checked against its loss's declarations: unknown keys and values of
// the wrong type are rejected up front, whether or not the builder reads them.
class Params {
 public:
  Params(std::string fn, const std::string& loss, std::string label,
         const std::vector<ParamDecl>& decls, const LossSpecItem& item)
      : fn_(std::move(fn)), loss_(loss), label_(std::move(label)) {
    std::vector<std::string> names;
    for (const auto& d : decls) names.push_back(d.name);
    for (const auto& [key, value] : item.params) {
      auto it = std::find_if(decls.begin(), decls.end(), [&](auto& d) { return d.name == key; });
      HAFRM_CHECK_ARG(it != decls.end(), fn_, arg(key), "is not a parameter of '", loss,
                      "'; valid parameters: ", names.empty() ? "(none)" : join(names));
      switch (it->kind) {
        case Kind::kNumber:
          HAFRM_CHECK_ARG(parse_number(value).has_value(), fn_, arg(key),
                          "expected a number, got '", value, "'");
          break;
        case Kind::kInteger:
          HAFRM_CHECK_ARG(parse_integer(value).has_value(), fn_, arg(key),
                          "expected an integer, got '", value, "'");
          break;
        case Kind::kBool:
          HAFRM_CHECK_ARG(parse_bool(value).has_value(), fn_, arg(key),
                          "expected true or false (or 1 / 0), got '", value, "'");
          break;
        case Kind::kChoice:
          HAFRM_CHECK_ARG(
              std::find(it->choices.begin(), it->choices.end(), value) != it->choices.end(), fn_,
              arg(key), "expected one of ", join(it->choices), ", got '", value, "'");
          break;
      }
      values_[key] = value;
    }
  }
  const std::string& fn() const { return fn_; }
  const std::string& loss() const { return loss_; }    // the name as the spec wrote it
  const std::string& label() const { return label_; }  // the built loss's name (metrics prefix)
  std::string arg(std::string_view key) const { return loss_ + ":" + std::string(key); }
  bool has(const std::string& key) const { return values_.count(key) > 0; }
  double number(const std::string& key, double fallback) const {
    return has(key) ? *parse_number(values_.at(key)) : fallback;
  }
  int64_t integer(const std::string& key, int64_t fallback) const {
    return has(key) ? *parse_integer(values_.at(key)) : fallback;
  }
  bool flag(const std::string& key, bool fallback) const {
    return has(key) ? *parse_bool(values_.at(key)) : fallback;
  }
  std::string choice(const std::string& key, std::string fallback) const {
    return has(key) ? values_.at(key) : fallback;
  }

 private:
  std::string fn_, loss_, label_;
  std::map<std::string, std::string> values_;
};

inline std::string number_text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// A spec key bound to a field of L: its declaration, how a given value sets the field, and how
// the default shown in the catalogue is read from the entry's prototype.
template <class L>
struct Binding {
  ParamDecl decl;
  std::function<void(L&, const Params&)> set;
  std::function<std::string(const L&)> default_of;
};

// A number, integer or flag field.
template <class L, class T>
Binding<L> bind(std::string key, T L::*member, const char* field,
                std::optional<Range> range = std::nullopt) {
  Binding<L> b;
  b.decl.name = key;
  b.decl.range = range;
  b.decl.info = {.name = key, .range = range ? range->text() : "", .field = field};
  if constexpr (std::is_same_v<T, bool>) {
    b.decl.kind = Kind::kBool;
    b.decl.info.type = "bool";
    b.default_of = [member](const L& l) { return std::string(l.*member ? "true" : "false"); };
    b.set = [key, member](L& l, const Params& p) { l.*member = p.flag(key, l.*member); };
  } else if constexpr (std::is_integral_v<T>) {
    b.decl.kind = Kind::kInteger;
    b.decl.info.type = "integer";
    b.default_of = [member](const L& l) { return std::to_string(l.*member); };
    b.set = [key, member](L& l, const Params& p) { l.*member = p.integer(key, l.*member); };
  } else {
    static_assert(std::is_same_v<T, double>, "bind: a field is double, an integer or bool");
    b.decl.kind = Kind::kNumber;
    b.decl.info.type = "number";
    b.default_of = [member](const L& l) { return number_text(l.*member); };
    b.set = [key, member](L& l, const Params& p) { l.*member = p.number(key, l.*member); };
  }
  return b;
}

// An enum field chosen by name.
template <class L, class E>
Binding<L> bind_choice(std::string key, E L::*member, const char* field,
                       std::vector<std::pair<std::string, E>> names) {
  Binding<L> b;
  b.decl.name = key;
  b.decl.kind = Kind::kChoice;
  std::string shown;
  for (const auto& [n, v] : names) {
    b.decl.choices.push_back(n);
    shown += (shown.empty() ? "" : "/") + n;
  }
  b.decl.info = {.name = key, .type = shown, .field = field};
  b.default_of = [member, names](const L& l) {
    for (const auto& [n, v] : names)
      if (v == l.*member) return n;
    return std::string();
  };
  b.set = [key, member, names](L& l, const Params& p) {
    if (!p.has(key)) return;
    const auto chosen = p.choice(key, "");
    for (const auto& [n, v] : names)
      if (n == chosen) l.*member = v;
  };
  return b;
}

// The declarations of `fields` with their defaults read from `proto`.
template <class L>
std::vector<ParamDecl> decls_of(const std::vector<Binding<L>>& fields, const L& proto) {
  std::vector<ParamDecl> d;
  for (const auto& b : fields) {
    d.push_back(b.decl);
    d.back().info.default_value = b.default_of(proto);
  }
  return d;
}

// A parameter that is not one field (an f-divergence, a modifier): declared with its description;
// the entry's builder reads it.
inline ParamDecl declare(std::string key, Kind kind, std::string default_value, std::string field,
                         std::vector<std::string> choices = {},
                         std::optional<Range> range = std::nullopt) {
  ParamDecl d{.name = key, .kind = kind, .choices = choices, .range = range};
  std::string type = kind == Kind::kNumber    ? "number"
                     : kind == Kind::kInteger ? "integer"
                     : kind == Kind::kBool    ? "bool"
                                              : "";
  for (const auto& c : choices) type += (type.empty() ? "" : "/") + c;
  d.info = {.name = key,
            .type = type,
            .default_value = std::move(default_value),
            .range = range ? range->text() : "",
            .field = std::move(field)};
  return d;
}

}  // namespace registry
}  // namespace hafrm
