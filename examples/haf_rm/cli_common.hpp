// cli_common.hpp: what every haf_rm subcommand's parser shares: number validators of our own
// and the parse itself (cli.hpp declares the train options, commands.hpp the other commands').
//
// Numbers go through validators of our own before CLI11 converts them: CLI11 2.1's conversion
// reads "-1" as 2^64-1 for unsigned options, "010" as octal and saturates on overflow, so the
// validators accept plain decimal only, check the range and hand CLI11 the canonical digits.
//
//   CLI::App app("...");
//   app.add_option("--steps", n)->transform(cli_detail::integer_in<int64_t>(0, 100));
//   bool help = cli_detail::parse_app(app, {"--steps", "5"});   // std::invalid_argument if bad
#pragma once

#include <CLI/CLI.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "config.hpp"

namespace hafrm::examples::rm {

namespace cli_detail {

inline constexpr int64_t kMaxI64 = std::numeric_limits<int64_t>::max();

// A decimal integer in [lo, hi]; rewrites the value to its canonical digits for CLI11.
template <class Int>
CLI::Validator integer_in(Int lo, Int hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi, range](std::string& s) -> std::string {
        Int v{};
        const char* end = s.data() + s.size();
        const auto [ptr, ec] = std::from_chars(s.data(), end, v);
        // A negative number for an unsigned option is out of range, not malformed.
        const bool negative = std::is_unsigned_v<Int> && s.size() > 1 && s[0] == '-' &&
                              s.find_first_not_of("0123456789", 1) == std::string::npos;
        if (!negative && (s.empty() || ptr != end ||
                          (ec != std::errc() && ec != std::errc::result_out_of_range)))
          return "expected an integer, got \"" + s + "\"";
        if (negative || ec == std::errc::result_out_of_range || v < lo || v > hi)
          return "must be in " + range + ", got " + s;
        s = std::to_string(v);
        return {};
      },
      range);
}

// A decimal number in `r` (config.hpp: finite bounds, so no infinity or NaN is accepted). The
// range is the validator's description, which --help shows.
inline CLI::Validator real_in(const RealRange& r) {
  const std::string range = r.str();
  return CLI::Validator(
      [r, range](std::string& s) -> std::string {
        double v = 0;
        const char* end = s.data() + s.size();
        const auto [ptr, ec] = std::from_chars(s.data(), end, v);
        if (s.empty() || ptr != end || (ec != std::errc() && ec != std::errc::result_out_of_range))
          return "expected a number, got \"" + s + "\"";
        if (ec == std::errc::result_out_of_range || !std::isfinite(v))
          return "must be a finite number in " + range + ", got " + s;
        if (!r.contains(v)) return "must be in " + range + ", got " + s;
        return {};
      },
      range);
}

// CLI11 2.1 drops an empty argument ("--ood ''") and lets "--ood=" take the NEXT argument as its
// value, but an empty path is meaningful here ("" = no such split). Empty values travel through
// CLI11 as this placeholder and are turned back into "" afterwards (and in error messages).
inline constexpr std::string_view kEmptyValue = "\x1e(empty)";

inline std::string restore_empty(const std::string& s) {
  std::string out;
  std::size_t from = 0;
  for (auto at = s.find(kEmptyValue); at != std::string::npos; at = s.find(kEmptyValue, from)) {
    out.append(s, from, at - from).append("\"\"");
    from = at + kEmptyValue.size();
  }
  return out.append(s, from);
}

// Parses `args` (without the program name) into `app`'s bound variables; true when --help was
// asked for. A usage error becomes std::invalid_argument naming the option, with " (see --help)".
// Empty values ("--x ''", "--x=") reach the variables as kEmptyValue: call restore_empty_value
// on every string option afterwards.
inline bool parse_app(CLI::App& app, const std::vector<std::string>& args) {
  std::vector<std::string> prepared;
  for (const auto& a : args) {
    if (a.empty()) {
      prepared.emplace_back(kEmptyValue);
    } else if (a.starts_with("--") && a.find('=') == a.size() - 1) {  // "--name="
      prepared.push_back(a.substr(0, a.size() - 1));
      prepared.emplace_back(kEmptyValue);
    } else {
      prepared.push_back(a);
    }
  }
  std::vector<std::string> reversed(prepared.rbegin(), prepared.rend());  // CLI11 pops the back
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    return true;
  } catch (const CLI::ParseError& e) {
    throw std::invalid_argument(restore_empty(e.what()) + " (see --help)");
  }
  return false;
}

inline void restore_empty_value(std::string& s) {
  if (s == kEmptyValue) s.clear();
}

}  // namespace cli_detail

}  // namespace hafrm::examples::rm
