// libFuzzer target: one JSONL line through the record parsers of the data layer: the preference
// parser (include/hafrm/data/preference_records.hpp) in each record format, and the score-row
// parser (include/hafrm/data/score_records.hpp).
//
// Expected outcomes: a record, or a RecordError (the documented bad-record error). Anything else
// (another exception, a crash, a sanitizer report, a stack overflow) is a finding. Run with
// -max_len=1048576 so that deeply nested lines are reachable; see README.md.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string_view>

#include <hafrm/data/preference_records.hpp>
#include <hafrm/data/score_records.hpp>

namespace hd = hafrm::data;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  hd::LoadOptions options;
  options.vocab_size = 257;  // ids are checked against a byte-level vocabulary
  for (const auto format :
       {hd::RecordFormat::kAuto, hd::RecordFormat::kText, hd::RecordFormat::kTokenIds}) {
    try {
      const auto record = hd::parse_preference_record(line, "fuzz.jsonl", 1, format, options);
      // A record is only returned with its documented invariants.
      if (const auto* t = std::get_if<hd::TextRecord>(&record)) {
        if (t->chosen.empty() || t->rejected.empty() || hd::first_invalid_utf8(t->prompt) ||
            hd::first_invalid_utf8(t->chosen) || hd::first_invalid_utf8(t->rejected))
          std::abort();
      } else {
        const auto& r = std::get<hd::TokenRecord>(record);
        if (r.prompt_ids.empty() || r.chosen_ids.empty() || r.rejected_ids.empty()) std::abort();
        for (const auto* ids : {&r.prompt_ids, &r.chosen_ids, &r.rejected_ids})
          for (const int64_t id : *ids)
            if (id < 0 || id >= options.vocab_size) std::abort();
      }
    } catch (const hd::RecordError& e) {
      if (e.line() != 1 || e.file() != "fuzz.jsonl") std::abort();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "unexpected exception: %s\n", e.what());
      std::abort();
    }
  }
  try {
    const auto row = hd::parse_score_record(line, "fuzz.jsonl", 1);
    // A row is only returned with its documented invariants: at least one response, none empty,
    // exactly one unless it is a group, all valid UTF-8.
    if (row.responses.empty() || (!row.group && row.responses.size() != 1) ||
        !row.row.is_object() || hd::first_invalid_utf8(row.prompt))
      std::abort();
    for (const auto& r : row.responses)
      if (r.empty() || hd::first_invalid_utf8(r)) std::abort();
  } catch (const hd::RecordError& e) {
    if (e.line() != 1 || e.file() != "fuzz.jsonl") std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unexpected exception in parse_score_record: %s\n", e.what());
    std::abort();
  }
  return 0;
}
