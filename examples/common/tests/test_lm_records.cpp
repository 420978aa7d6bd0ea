// JSONL rows for language-model training: text rows and prompt/response rows, the file's shape
// set by its first row, telling them from preference files, and every bad row's error.
#include <catch2/catch.hpp>
#include <string>

#include "hafrm/data/lm_records.hpp"
#include "test_util.hpp"

namespace hx = hafrm::examples;
namespace hd = hafrm::data;
using Catch::Matchers::Contains;
using hx::test::TempDir;

TEST_CASE("lm rows: text rows and prompt/response rows", "[lm_records]") {
  TempDir dir;
  SECTION("text rows, blank lines skipped, other fields ignored") {
    const auto file =
        dir.write("t.jsonl", "{\"text\":\"hello\",\"id\":1}\r\n\n{\"text\":\"w\\u00f6rld\"}\n");
    const auto got = hd::load_lm_records(file);
    REQUIRE(got.records.size() == 2);
    CHECK(got.records[0].text == "hello");
    CHECK_FALSE(got.records[0].has_prompt);
    CHECK(got.records[0].line == 1);
    CHECK(got.records[1].text == "w\xC3\xB6rld");
    CHECK(got.records[1].line == 3);
    CHECK(got.report.loaded == 2);
    CHECK(got.report.blank_lines == 1);
    CHECK(hd::sniff_record_shape(file) == hd::RecordShape::kText);
  }
  SECTION("prompt/response rows, the prompt a string or a message list") {
    const auto file = dir.write("pr.jsonl",
                                "\n{\"prompt\":\"2+2?\",\"response\":\"4\"}\n"
                                "{\"prompt\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                                "{\"role\":\"user\",\"content\":\"3+3?\"}],"
                                "\"response\":[{\"role\":\"assistant\",\"content\":\"6\"}]}\n");
    const auto got = hd::load_lm_records(file);
    REQUIRE(got.records.size() == 2);
    CHECK(got.records[0].has_prompt);
    CHECK(got.records[0].prompt == "2+2?");
    CHECK(got.records[0].text == "4");
    CHECK(got.records[1].prompt == "system: Be brief.\nuser: 3+3?");
    CHECK(got.records[1].text == "6");
    CHECK(hd::sniff_record_shape(file) == hd::RecordShape::kPromptResponse);
  }
  SECTION("preference files are told apart by their first row") {
    CHECK(hd::sniff_record_shape(
              dir.write("p.jsonl", "\n{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\"}\n")) ==
          hd::RecordShape::kPreference);
    CHECK(hd::sniff_record_shape(dir.write(
              "ids.jsonl", "{\"prompt_ids\":[1],\"chosen_ids\":[2],\"rejected_ids\":[3]}\n")) ==
          hd::RecordShape::kPreference);
  }
}

TEST_CASE("lm rows: bad rows name file, line and field", "[lm_records]") {
  TempDir dir;
  const auto error_of = [&](const std::string& body) {
    try {
      hd::load_lm_records(dir.write("bad.jsonl", body));
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(error_of("{\"text\":\"a\"}\n{\"text\":7}\n"),
             Contains("bad.jsonl:2: field 'text': expected a string, got number"));
  CHECK_THAT(error_of("{\"text\":\"\"}\n"), Contains("bad.jsonl:1: field 'text': empty text"));
  CHECK_THAT(error_of("{\"prompt\":\"p\",\"response\":\"\"}\n"),
             Contains("bad.jsonl:1: field 'response': empty response"));
  CHECK_THAT(error_of("{\"response\":\"r\"}\n"),
             Contains("bad.jsonl:1: field 'prompt': missing field"));
  CHECK_THAT(error_of("{\"text\":\"t\",\"prompt\":\"p\",\"response\":\"r\"}\n"),
             Contains("field 'text': a row holds \"text\", or \"prompt\" and \"response\""));
  CHECK_THAT(error_of("{\"title\":\"t\"}\n"), Contains("bad.jsonl:1: field 'text': missing field"));
  CHECK_THAT(error_of("{\"text\":\"a\"}\n{\"prompt\":\"p\",\"response\":\"r\"}\n"),
             Contains("bad.jsonl:2: field 'prompt': a prompt/response row in a file whose first "
                      "row is a text row"));
  CHECK_THAT(error_of("{\"text\":\"a\"}\n{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\"}\n"),
             Contains("bad.jsonl:2: field 'chosen': a preference pair in a file of single"));
  CHECK_THAT(error_of("{\"text\": \"a\"\n"), Contains("bad.jsonl:1: record: malformed JSON"));
  CHECK_THAT(error_of("[1]\n"), Contains("bad.jsonl:1: record: expected a JSON object"));
  CHECK_THAT(error_of("{\"text\":\"\xff\"}\n"), Contains("field 'text': invalid UTF-8"));
  CHECK_THAT(error_of("\n \n"), Contains("bad.jsonl: no rows (the file is empty or blank)"));
  CHECK_THAT(error_of("{\"text\":[\"a\"]}\n"),
             Contains("bad.jsonl:1: field 'text': expected a string, got array"));
  {
    hd::LmLoadOptions o;
    o.max_depth = 2;
    try {
      hd::load_lm_records(dir.write("deep.jsonl", "{\"text\":[[1]]}\n"), o);
      FAIL("no error");
    } catch (const hd::RecordError& e) {
      CHECK_THAT(e.what(), Contains("deep.jsonl:1: field 'text': nested deeper than 2"));
    }
  }
  CHECK_THROWS_WITH(hd::sniff_record_shape(dir.path() / "missing.jsonl"), Contains("cannot open"));
  CHECK_THROWS_WITH(hd::sniff_record_shape(dir.write("x.jsonl", "{\"title\":1}\n")),
                    Contains("x.jsonl:1: field 'text': missing field"));
}

TEST_CASE("lm rows: skip_bad skips and counts, never drops silently", "[lm_records]") {
  TempDir dir;
  hd::LmLoadOptions o;
  o.skip_bad = true;
  o.max_reported_errors = 1;
  const auto file =
      dir.write("mixed.jsonl", "{\"text\":\"a\"}\n{\"text\":1}\nnot json\n{\"text\":\"b\"}\n");
  const auto got = hd::load_lm_records(file, o);
  REQUIRE(got.records.size() == 2);
  CHECK(got.records[1].text == "b");
  CHECK(got.report.loaded == 2);
  CHECK(got.report.skipped == 2);
  REQUIRE(got.report.first_errors.size() == 1);
  CHECK_THAT(got.report.first_errors[0], Contains("mixed.jsonl:2: field 'text'"));
  CHECK_THROWS_WITH(hd::load_lm_records(dir.write("allbad.jsonl", "{\"text\":1}\n"), o),
                    Contains("no valid rows in"));
}
