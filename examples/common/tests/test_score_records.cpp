// JSONL rows to score: one response or a group, strings or message lists, the input row kept in
// field order, and every bad row's error (file, line, field).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "hafrm/data/score_records.hpp"
#include "test_util.hpp"

namespace hx = hafrm::examples;
namespace hd = hafrm::data;
using Catch::Matchers::Contains;
using hx::test::TempDir;
using Strings = std::vector<std::string>;

TEST_CASE("score rows: one response or a group, strings or message lists", "[score_records]") {
  TempDir dir;
  const std::string single = R"({"prompt":"2+2?","response":"4","id":"a7","meta":{"k":[1,2]}})";
  const std::string group = R"({"zeta":1,"prompt":"2+2?","responses":["4","5","four"]})";
  const std::string conv =
      R"({"prompt":[{"role":"system","content":"Be brief."},{"role":"user","content":"2+2?"}],)"
      R"("responses":[[{"role":"assistant","content":"4"}],"5",)"
      R"([{"role":"user","content":"ignored"},{"role":"assistant","content":"four"}]]})";
  const std::string conv_single = R"({"prompt":[{"role":"user","content":"2+2?"}],)"
                                  R"("response":[{"role":"assistant","content":"4"}]})";
  const auto file = dir.write("score.jsonl", "\xEF\xBB\xBF" + single + "\r\n\n" + group + "\n" +
                                                 conv + "\n   \n" + conv_single);
  const auto rows = hd::load_score_records(file);
  REQUIRE(rows.size() == 4);

  CHECK(rows[0].prompt == "2+2?");
  CHECK(rows[0].responses == Strings{"4"});
  CHECK_FALSE(rows[0].group);
  CHECK(rows[0].line == 1);
  CHECK(rows[0].row.dump() == single);  // every field kept, in input order

  CHECK(rows[1].responses == Strings{"4", "5", "four"});
  CHECK(rows[1].group);
  CHECK(rows[1].line == 3);
  CHECK(rows[1].row.dump() == group);  // "zeta" stays first

  CHECK(rows[2].prompt == "system: Be brief.\nuser: 2+2?");
  CHECK(rows[2].responses == Strings{"4", "5", "four"});
  CHECK(rows[2].group);
  CHECK(rows[2].line == 4);

  CHECK(rows[3].prompt == "2+2?");
  CHECK(rows[3].responses == Strings{"4"});
  CHECK_FALSE(rows[3].group);
  CHECK(rows[3].line == 6);

  SECTION("a group of one is still a group") {
    const auto r = hd::parse_score_record(R"({"prompt":"p","responses":["x"]})", "f.jsonl", 9);
    CHECK(r.group);
    CHECK(r.responses == Strings{"x"});
    CHECK(r.line == 9);
  }
  SECTION("an empty prompt string is allowed (the template may fill it)") {
    const auto r = hd::parse_score_record(R"({"prompt":"","response":"x"})", "f.jsonl", 1);
    CHECK(r.prompt.empty());
  }
}

TEST_CASE("a bad score row names file, line and field", "[score_records]") {
  struct Case {
    std::string line, field, reason;
  };
  const auto c = GENERATE(values<Case>({
      {R"({"prompt":"p","response":"r")", "record", "malformed JSON"},
      {R"(["p","r"])", "record", "expected a JSON object"},
      {R"({"response":"r"})", "prompt", "missing field"},
      {R"({"prompt":3,"response":"r"})", "prompt", "expected a string or a message list"},
      {R"({"prompt":[{"role":"bot","content":"p"}],"response":"r"})", "prompt[0].role",
       "is not one of"},
      {R"({"prompt":"p"})", "response", "missing field"},
      {R"({"prompt":"p","response":"r","responses":["r"]})", "responses", "not both"},
      {R"({"prompt":"p","response":""})", "response", "empty response"},
      {R"({"prompt":"p","response":5})", "response", "expected a string or a message list"},
      {R"({"prompt":"p","response":[{"role":"user","content":"r"}]})", "response[0].role",
       "expected role \"assistant\""},
      {R"({"prompt":"p","response":[{"role":"assistant","content":""}]})", "response[0].content",
       "empty response"},
      {R"({"prompt":"p","response":[]})", "response", "empty message list"},
      {R"({"prompt":"p","responses":[]})", "responses", "empty list"},
      {R"({"prompt":"p","responses":"r"})", "responses", "expected a list of responses"},
      {R"({"prompt":"p","responses":["a",""]})", "responses[1]", "empty response"},
      {R"({"prompt":"p","responses":["a",null]})", "responses[1]",
       "expected a string or a message list, got null"},
      {R"({"prompt":"p","responses":[{"role":"assistant","content":"a"}]})", "responses[0]",
       "expected a string or a message list, got object"},
      {R"({"prompt":"p","responses":["a",[{"role":"assistant","content":"b"},{"content":"c"}]]})",
       "responses[1][1].role", "missing field"},
      {"{\"prompt\":\"p\",\"responses\":[\"a\",\"b\xFF\"]}", "responses", "invalid UTF-8"},
      {R"({"prompt":"p","response":"r","x":[[[[[[[[1]]]]]]]]})", "x", "nested deeper than 8"},
      {R"({"prompt":"p","response":"r","n":1e999})", "record", "number overflow"},
  }));
  TempDir dir;
  const auto file = dir.write("rows.jsonl", R"({"prompt":"p","response":"r"})"
                                            "\n\n" +
                                                c.line + "\n");
  hd::ScoreLoadOptions o;
  o.max_depth = 8;
  try {
    hd::load_score_records(file, o);
    FAIL("no RecordError for " << c.line);
  } catch (const hd::RecordError& e) {
    INFO(e.what());
    CHECK(e.file() == file.string());
    CHECK(e.line() == 3);
    CHECK(e.field() == c.field);
    CHECK_THAT(e.reason(), Contains(c.reason));
    CHECK_THAT(e.what(), Contains(file.string() + ":3: "));
  }
}

TEST_CASE("score files without rows, missing files and bad options are errors", "[score_records]") {
  TempDir dir;
  CHECK_THROWS_WITH(hd::load_score_records(dir.write("e.jsonl", "")), Contains("no rows to score"));
  CHECK_THROWS_WITH(hd::load_score_records(dir.write("b.jsonl", "\n \r\n")),
                    Contains("no rows to score"));
  const auto missing = dir.path() / "missing.jsonl";
  CHECK_THROWS_WITH(hd::load_score_records(missing),
                    Contains("cannot open score input file") && Contains(missing.string()));
  hd::ScoreLoadOptions o;
  o.max_depth = 0;
  CHECK_THROWS_WITH(hd::parse_score_record(R"({"prompt":"p","response":"r"})", "f", 1, o),
                    Contains("ScoreLoadOptions::max_depth"));
}
