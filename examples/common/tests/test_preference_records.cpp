// JSONL preference loading: accepted shapes, every bad-record path (file, line and field in the
// message), skip_bad accounting, and file-level errors.
#include <catch2/catch.hpp>
#include <string>
#include <variant>

#include "hafrm/data/preference_records.hpp"
#include "test_util.hpp"

namespace hx = hafrm::examples;
namespace hd = hafrm::data;
using Catch::Matchers::Contains;
using hx::test::TempDir;

namespace {

const hd::TextRecord& text_at(const hd::LoadedRecords& d, std::size_t i) {
  return std::get<hd::TextRecord>(d.records.at(i));
}

/// Loads `content` expecting a RecordError; returns it for inspection.
hd::RecordError expect_record_error(const TempDir& dir, const std::string& content,
                                    const hd::LoadOptions& options = {}) {
  const auto file = dir.write("bad.jsonl", content);
  try {
    hd::load_preference_records(file, options);
  } catch (const hd::RecordError& e) {
    CHECK(e.file() == file.string());
    CHECK_THAT(e.what(), Contains(file.string()));
    return e;
  }
  FAIL("no RecordError for:\n" << content);
  throw std::logic_error("unreachable");
}

/// A good record and a blank line first, so that `bad` sits on line 3: the error must name that
/// line and `field` and give `reason`; returned for the checks particular to the caller.
hd::RecordError expect_error_on_line_3(const std::string& good, const std::string& bad,
                                       const std::string& field, const std::string& reason,
                                       const hd::LoadOptions& options) {
  TempDir dir;
  auto e = expect_record_error(dir, good + "\n\n" + bad + "\n", options);
  INFO(e.what());
  CHECK(e.line() == 3);
  CHECK(e.field() == field);
  CHECK_THAT(e.what(), Contains(reason));
  return e;
}

}  // namespace

TEST_CASE("text records load with line numbers; blank lines, CRLF and BOM are tolerated",
          "[records]") {
  TempDir dir;
  const auto file =
      dir.write("ok.jsonl",
                "\xEF\xBB\xBF{\"prompt\":\"p1\",\"chosen\":\"c1\",\"rejected\":\"r1\"}\r\n"
                "\n"
                "   \n"
                "{\"prompt\":\"\",\"chosen\":\"caf\xC3\xA9\",\"rejected\":\"r2\","
                "\"extra\":[1,2]}\n");
  const auto d = hd::load_preference_records(file);
  CHECK(d.format == hd::RecordFormat::kText);
  REQUIRE(d.records.size() == 2);
  CHECK(text_at(d, 0).prompt == "p1");
  CHECK(text_at(d, 0).chosen == "c1");
  CHECK(text_at(d, 0).rejected == "r1");
  CHECK(text_at(d, 0).line == 1);
  CHECK(text_at(d, 1).prompt.empty());  // an empty prompt is allowed: the template may fill it
  CHECK(text_at(d, 1).chosen == "caf\xC3\xA9");
  CHECK(text_at(d, 1).line == 4);
  CHECK(d.report.lines == 4);
  CHECK(d.report.blank_lines == 2);
  CHECK(d.report.loaded == 2);
  CHECK(d.report.skipped == 0);
}

TEST_CASE("HH-RLHF records split the prompt at the last Assistant tag", "[records]") {
  TempDir dir;
  const std::string prompt =
      "\\n\\nHuman: hi\\n\\nAssistant: hello\\n\\nHuman: 2+2?\\n\\nAssistant:";
  const auto file = dir.write(
      "hh.jsonl", "{\"chosen\":\"" + prompt + " 4\",\"rejected\":\"" + prompt + " 5\"}\n");
  const auto d = hd::load_preference_records(file);
  const auto& r = text_at(d, 0);
  CHECK(r.prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant:");
  CHECK(r.chosen == " 4");
  CHECK(r.rejected == " 5");

  SECTION("turned off, the missing prompt is an error") {
    hd::LoadOptions o;
    o.accept_hh_rlhf = false;
    CHECK_THROWS_WITH(hd::load_preference_records(file, o), Contains("field 'prompt'"));
  }
}

TEST_CASE("UltraFeedback-binarized message lists give the last assistant message", "[records]") {
  TempDir dir;
  const auto file = dir.write(
      "uf.jsonl",
      R"({"prompt":"q","chosen":[{"role":"user","content":"q"},{"role":"assistant","content":"good"}],)"
      R"("rejected":[{"role":"user","content":"q"},{"role":"assistant","content":"bad"}]})"
      "\n");
  const auto loaded = hd::load_preference_records(file);
  const auto& r = text_at(loaded, 0);
  CHECK(r.prompt == "q");
  CHECK(r.chosen == "good");
  CHECK(r.rejected == "bad");
}

TEST_CASE("render_messages: one user message as is, otherwise role-prefixed lines",
          "[records][messages]") {
  using M = std::vector<hd::Message>;
  CHECK(hd::render_messages(M{{"user", "2+2?"}}) == "2+2?");
  CHECK(hd::render_messages(M{{"user", ""}}).empty());
  CHECK(hd::render_messages(M{{"system", "Be brief."}}) == "system: Be brief.");
  CHECK(hd::render_messages(M{{"assistant", "hi"}}) == "assistant: hi");
  CHECK(hd::render_messages(M{{"system", "Be brief."}, {"user", "2+2?"}}) ==
        "system: Be brief.\nuser: 2+2?");
  CHECK(hd::render_messages(M{{"user", "a"}, {"assistant", "b\nc"}, {"user", "d"}}) ==
        "user: a\nassistant: b\nc\nuser: d");
  CHECK_THROWS_WITH(hd::render_messages(M{}), Contains("render_messages") &&
                                                  Contains("'messages'") &&
                                                  Contains("at least one message"));
  CHECK_THROWS_WITH(hd::render_messages(M{{"user", "a"}, {"tool", "b"}}),
                    Contains("\"tool\"") && Contains("index 1"));
  CHECK_THROWS_AS(hd::render_messages(M{{"User", "a"}}), std::invalid_argument);
}

TEST_CASE("conversational rows without a prompt take it from the shared messages",
          "[records][messages]") {
  TempDir dir;
  // trl-lib/ultrafeedback_binarized: full conversations, scores beside them, no "prompt".
  const std::string uf =
      R"({"chosen":[{"role":"user","content":"How far is the Moon?"},)"
      R"({"role":"assistant","content":"About 384,400 km."}],)"
      R"("rejected":[{"role":"user","content":"How far is the Moon?"},)"
      R"({"role":"assistant","content":"Very far."}],"score_chosen":8.5,"score_rejected":3.0})";
  // Multi-turn with a system message: rendered role by role.
  const std::string multi =
      R"({"chosen":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},)"
      R"({"role":"assistant","content":"hello"},{"role":"user","content":"2+2?"},)"
      R"({"role":"assistant","content":"4"}],)"
      R"("rejected":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},)"
      R"({"role":"assistant","content":"hello"},{"role":"user","content":"2+2?"},)"
      R"({"role":"assistant","content":"5","name":"extra keys are ignored"}]})";
  // The explicit-prompt form of the first row gives the same record.
  const std::string explicit_prompt =
      R"({"prompt":[{"role":"user","content":"How far is the Moon?"}],)"
      R"("chosen":[{"role":"assistant","content":"About 384,400 km."}],)"
      R"("rejected":"Very far."})";
  const auto file = dir.write("conv.jsonl", uf + "\n" + multi + "\n" + explicit_prompt + "\n");
  hd::LoadOptions o;
  const bool hh = GENERATE(true, false);  // HH-RLHF parsing does not decide this shape
  o.accept_hh_rlhf = hh;
  const auto d = hd::load_preference_records(file, o);
  REQUIRE(d.records.size() == 3);
  CHECK(text_at(d, 0).prompt == "How far is the Moon?");
  CHECK(text_at(d, 0).chosen == "About 384,400 km.");
  CHECK(text_at(d, 0).rejected == "Very far.");
  CHECK(text_at(d, 1).prompt == "system: Be brief.\nuser: hi\nassistant: hello\nuser: 2+2?");
  CHECK(text_at(d, 1).chosen == "4");
  CHECK(text_at(d, 1).rejected == "5");
  CHECK(text_at(d, 1).line == 2);
  CHECK(text_at(d, 2).prompt == text_at(d, 0).prompt);
  CHECK(text_at(d, 2).chosen == text_at(d, 0).chosen);
  CHECK(text_at(d, 2).rejected == text_at(d, 0).rejected);
}

TEST_CASE("message-list prompts are rendered; a string prompt is used as is",
          "[records][messages]") {
  TempDir dir;
  const auto file =
      dir.write("prompts.jsonl",
                R"({"prompt":[{"role":"system","content":"S"},{"role":"user","content":"Q"}],)"
                R"("chosen":"a","rejected":"b"})"
                "\n"
                R"({"prompt":"user: Q","chosen":[{"role":"user","content":"ignored"},)"
                R"({"role":"assistant","content":"a"}],"rejected":"b"})"
                "\n");
  const auto d = hd::load_preference_records(file);
  CHECK(text_at(d, 0).prompt == "system: S\nuser: Q");
  CHECK(text_at(d, 1).prompt == "user: Q");
  CHECK(text_at(d, 1).chosen == "a");
}

TEST_CASE("a malformed conversational row names file, line and the field in the list",
          "[records][messages]") {
  struct Case {
    std::string line, field, reason;
  };
  const std::string u = R"({"role":"user","content":"q"})";
  const auto a = [](const std::string& text) {
    return R"({"role":"assistant","content":")" + text + R"("})";
  };
  const auto row = [](const std::string& chosen, const std::string& rejected) {
    return R"({"chosen":[)" + chosen + R"(],"rejected":[)" + rejected + "]}";
  };
  const auto c = GENERATE_COPY(values<Case>({
      {row(R"({"content":"q"},)" + a("x"), u + "," + a("y")), "chosen[0].role", "missing field"},
      {row(u + R"(,{"role":"assistant"})", u + "," + a("y")), "chosen[1].content", "missing field"},
      {row(u + R"(,{"role":"assistant","content":null})", u + "," + a("y")), "chosen[1].content",
       "expected a string, got null"},
      {row(u + R"(,{"role":7,"content":"x"})", u + "," + a("y")), "chosen[1].role",
       "expected a string, got number"},
      {row(R"("q",)" + a("x"), u + "," + a("y")), "chosen[0]", "expected a message object"},
      {row(u + "," + a("x"), R"({"role":"tool","content":"q"},)" + a("y")), "rejected[0].role",
       "role \"tool\" is not one of"},
      {row(u + "," + a("x"), u + "," + u), "rejected[1].role", "expected role \"assistant\""},
      {row(u + "," + a(""), u + "," + a("y")), "chosen[1].content", "empty response"},
      {row(a("x"), a("y")), "prompt", "no message before its last"},
      {row(u + "," + a("x"), R"({"role":"user","content":"other"},)" + a("y")),
       "rejected[0].content", "differs from chosen[0].content"},
      {row(u + "," + a("x"), R"({"role":"system","content":"q"},)" + a("y")), "rejected[0].role",
       "differs from chosen[0].role"},
      {row(u + "," + a("x"), u + "," + u + "," + a("y")), "rejected",
       "has 2 messages before its last, \"chosen\" has 1"},
      {R"({"chosen":[)" + u + "," + a("x") + R"(],"rejected":"y"})", "rejected",
       "expected a message list like \"chosen\""},
      {R"({"chosen":[],"rejected":[]})", "chosen", "empty message list"},
      {R"({"prompt":[{"role":"human","content":"q"}],"chosen":"x","rejected":"y"})",
       "prompt[0].role", "is not one of"},
      {R"({"prompt":[],"chosen":"x","rejected":"y"})", "prompt", "empty message list"},
      {R"({"prompt":"q","chosen":{"role":"assistant","content":"x"},"rejected":"y"})", "chosen",
       "expected a string or a message list, got object"},
  }));
  const auto e = expect_error_on_line_3(row(u + "," + a("x"), u + "," + a("y")), c.line, c.field,
                                        c.reason, {});
  CHECK_THAT(e.what(), Contains(":3: field '" + c.field + "': "));
}

TEST_CASE("pre-tokenized records load and are checked against the vocabulary", "[records]") {
  TempDir dir;
  const auto file =
      dir.write("ids.jsonl", "{\"prompt_ids\":[1,2],\"chosen_ids\":[3],\"rejected_ids\":[0,9]}\n");
  hd::LoadOptions o;
  o.vocab_size = 10;
  const auto d = hd::load_preference_records(file, o);
  CHECK(d.format == hd::RecordFormat::kTokenIds);
  const auto& r = std::get<hd::TokenRecord>(d.records.at(0));
  CHECK(r.prompt_ids == std::vector<int64_t>{1, 2});
  CHECK(r.chosen_ids == std::vector<int64_t>{3});
  CHECK(r.rejected_ids == std::vector<int64_t>{0, 9});

  SECTION("without a vocabulary size the ids cannot be checked, so loading refuses") {
    CHECK_THROWS_AS(hd::load_preference_records(file), std::invalid_argument);
  }
}

TEST_CASE("a bad text record names file, line and field", "[records]") {
  struct Case {
    std::string line, field, reason;
  };
  const auto c = GENERATE(values<Case>({
      {R"({"prompt":"p","chosen":"c")", "record", "malformed JSON"},
      {R"([1,2,3])", "record", "expected a JSON object"},
      {R"({"prompt":"p","chosen":"c"})", "rejected", "missing field"},
      {R"({"chosen":"c","rejected":"r"})", "prompt", "missing field"},  // not HH-shaped
      {R"({"prompt":"p","chosen":5,"rejected":"r"})", "chosen", "expected a string"},
      {R"({"prompt":["p"],"chosen":"c","rejected":"r"})", "prompt[0]", "expected a message object"},
      {R"({"prompt":5,"chosen":"c","rejected":"r"})", "prompt",
       "expected a string or a message list"},
      {R"({"prompt":"p","chosen":"c","rejected":""})", "rejected", "empty response"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\xFF\",\"rejected\":\"r\"}", "chosen", "invalid UTF-8"},
      {"{\"prompt\":\"\xC0\xAF\",\"chosen\":\"c\",\"rejected\":\"r\"}", "prompt", "invalid UTF-8"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"\xED\xA0\x80\"}", "rejected",
       "invalid UTF-8"},  // an encoded surrogate
      {R"({"prompt":"p","chosen":[{"role":"user","content":"x"}],"rejected":"r"})",
       "chosen[0].role", "expected role \"assistant\""},
      {R"({"prompt":"p","chosen":"c","rejected":[]})", "rejected", "empty message list"},
      {R"({"chosen":"\n\nHuman: a\n\nAssistant: b","rejected":"\n\nHuman: z\n\nAssistant: b"})",
       "rejected", "HH-RLHF prompt"},
      {R"({"chosen":"\n\nHuman: a\n\nAssistant:","rejected":"\n\nHuman: a\n\nAssistant: b"})",
       "chosen", "empty response"},
      {R"({"prompt_ids":[1],"chosen_ids":[2],"rejected_ids":[3]})", "prompt_ids",
       "pre-tokenized record in a file of text records"},
      // Beyond double's range: nlohmann's out_of_range.406, reported with its line like the rest.
      {R"({"prompt":"p","chosen":"c","rejected":"r","score":1e999})", "record", "number overflow"},
      {R"({"prompt":"p","chosen":"c","rejected":"r","x":[[[[[[[[[[1]]]]]]]]]]})", "x",
       "nested deeper than"},  // with max_depth 8 below
  }));
  hd::LoadOptions o;
  o.max_depth = 8;
  const auto e = expect_error_on_line_3(R"({"prompt":"p","chosen":"c","rejected":"r"})", c.line,
                                        c.field, c.reason, o);
  INFO(e.what());
  CHECK_THAT(e.what(), Contains(":3: "));
  CHECK_THAT(e.what(), Contains(c.field));
}

TEST_CASE("a bad pre-tokenized record names file, line and field", "[records]") {
  struct Case {
    std::string line, field, reason;
  };
  const auto c = GENERATE(values<Case>({
      {R"({"prompt_ids":[1],"chosen_ids":[257],"rejected_ids":[3]})", "chosen_ids",
       "id 257 at index 0 outside [0, 257)"},
      {R"({"prompt_ids":[1,-1],"chosen_ids":[2],"rejected_ids":[3]})", "prompt_ids",
       "id -1 at index 1"},
      {R"({"prompt_ids":[1],"chosen_ids":[2],"rejected_ids":[18446744073709551615]})",
       "rejected_ids", "outside [0, 257)"},
      {R"({"prompt_ids":[1],"chosen_ids":[2],"rejected_ids":[1.5]})", "rejected_ids",
       "not an integer"},
      {R"({"prompt_ids":[1],"chosen_ids":"2","rejected_ids":[3]})", "chosen_ids",
       "expected an array"},
      {R"({"prompt_ids":[1],"chosen_ids":[],"rejected_ids":[3]})", "chosen_ids", "empty id list"},
      {R"({"prompt_ids":[],"chosen_ids":[2],"rejected_ids":[3]})", "prompt_ids", "empty id list"},
      {R"({"prompt_ids":[1],"chosen_ids":[2]})", "rejected_ids", "missing field"},
      {R"({"prompt":"p","chosen":"c","rejected":"r"})", "chosen_ids", "missing field"},
  }));
  hd::LoadOptions o;
  o.vocab_size = 257;
  const auto e = expect_error_on_line_3(R"({"prompt_ids":[1],"chosen_ids":[2],"rejected_ids":[3]})",
                                        c.line, c.field, c.reason, o);
  INFO(e.what());
  CHECK_THAT(e.what(), Contains(":3: field '" + c.field + "'"));
}

TEST_CASE("deep nesting is refused with file and line before anything recurses", "[records]") {
  // Hostile lines deep enough to overflow the stack (SIGSEGV) of any pass that recursed once per
  // level (the replacement-character pass, e.dump(), the parser): the depth check comes first.
  const auto nested = [](std::size_t n, const std::string& inner) {
    return std::string(n, '[') + inner + std::string(n, ']');
  };
  struct Case {
    std::string name, line, field;
    int64_t vocab;
  };
  const auto c = GENERATE_COPY(values<Case>({
      {"50k arrays in a field with invalid UTF-8",
       "{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\",\"extra\":" +
           nested(50000, "\"\xFF\"") + "}",
       "extra", 0},
      {"100k arrays in prompt_ids",
       "{\"prompt_ids\":" + nested(100000, "1") + ",\"chosen_ids\":[2],\"rejected_ids\":[3]}",
       "prompt_ids", 257},
      {"100k objects at the top level", std::string(100000, '{') + std::string(100000, '}'),
       "record", 0},
      {"deep and unterminated", "{\"prompt\":" + std::string(200000, '['), "prompt", 0},
  }));
  CAPTURE(c.name);
  TempDir dir;
  const std::string good = c.vocab > 0 ? R"({"prompt_ids":[1],"chosen_ids":[2],"rejected_ids":[3]})"
                                       : R"({"prompt":"p","chosen":"c","rejected":"r"})";
  hd::LoadOptions o;
  o.vocab_size = c.vocab;
  SECTION("without skip_bad: an error naming file, line and field") {
    const auto e = expect_record_error(dir, good + "\n" + c.line + "\n", o);
    CHECK(e.line() == 2);
    CHECK(e.field() == c.field);
    CHECK_THAT(e.what(), Contains(":2: ") && Contains("nested deeper than 64"));
  }
  SECTION("with skip_bad: skipped and counted") {
    o.skip_bad = true;
    const auto d = hd::load_preference_records(dir.write("deep.jsonl", good + "\n" + c.line), o);
    CHECK(d.report.loaded == 1);
    CHECK(d.report.skipped == 1);
    REQUIRE(d.report.first_errors.size() == 1);
    CHECK_THAT(d.report.first_errors[0], Contains(":2: ") && Contains("nested deeper"));
  }
}

TEST_CASE("nesting up to the limit loads; brackets inside strings do not count", "[records]") {
  TempDir dir;
  hd::LoadOptions o;
  o.max_depth = 4;
  // Depth 4 exactly (record, extra, two arrays), and 100 brackets inside a string with an
  // escaped quote before them.
  const auto file =
      dir.write("ok.jsonl", R"({"prompt":"\"[[[[","chosen":"c","rejected":"r","extra":[[[1]]]})"
                            "\n" +
                                std::string(R"({"prompt":")") + std::string(100, '[') +
                                R"(","chosen":"c","rejected":"r"})" + "\n");
  const auto d = hd::load_preference_records(file, o);
  CHECK(d.records.size() == 2);
  CHECK(text_at(d, 0).prompt == "\"[[[[");
  o.max_depth = 3;
  CHECK_THROWS_WITH(hd::load_preference_records(file, o),
                    Contains(":1: field 'extra'") && Contains("deeper than 3"));
  o.max_depth = 0;
  CHECK_THROWS_AS(hd::load_preference_records(file, o), std::invalid_argument);
}

TEST_CASE("an explicit format rejects records of the other form", "[records]") {
  TempDir dir;
  hd::LoadOptions o;
  o.format = hd::RecordFormat::kTokenIds;
  o.vocab_size = 5;
  const auto e = expect_record_error(dir, R"({"prompt":"p","chosen":"c","rejected":"r"})", o);
  CHECK(e.line() == 1);
  CHECK(e.field() == "chosen_ids");
}

TEST_CASE("skip_bad skips and counts bad records and keeps the first reasons", "[records]") {
  TempDir dir;
  const std::string good = R"({"prompt":"p","chosen":"c","rejected":"r"})";
  const auto file =
      dir.write("mixed.jsonl", good + "\n" +                                                // 1
                                   R"({"prompt":"p"})" + "\n" +                             // 2 bad
                                   good + "\n" +                                            // 3
                                   "not json\n" +                                           // 4 bad
                                   R"({"prompt":"p","chosen":"","rejected":"r"})" + "\n" +  // 5 bad
                                   good + "\n");                                            // 6
  hd::LoadOptions o;
  o.skip_bad = true;
  o.max_reported_errors = 2;
  const auto d = hd::load_preference_records(file, o);
  CHECK(d.records.size() == 3);
  CHECK(d.report.loaded == 3);
  CHECK(d.report.skipped == 3);
  REQUIRE(d.report.first_errors.size() == 2);
  CHECK_THAT(d.report.first_errors[0], Contains(":2: field 'chosen'"));
  CHECK_THAT(d.report.first_errors[1], Contains(":4: record"));
  CHECK_THAT(d.report.summary(), Contains("3 records loaded, 3 bad records skipped"));
  CHECK_THAT(d.report.summary(), Contains("and 1 more"));
  CHECK(text_at(d, 2).line == 6);

  SECTION("without skip_bad the first bad record throws") {
    CHECK_THROWS_WITH(hd::load_preference_records(file), Contains(":2: field 'chosen'"));
  }
}

TEST_CASE("files without records are errors", "[records]") {
  TempDir dir;
  SECTION("empty") {
    CHECK_THROWS_WITH(hd::load_preference_records(dir.write("e.jsonl", "")),
                      Contains("no preference records"));
  }
  SECTION("blank lines only") {
    CHECK_THROWS_WITH(hd::load_preference_records(dir.write("b.jsonl", "\n  \n\r\n")),
                      Contains("no preference records"));
  }
  SECTION("every record bad, even when skipping") {
    hd::LoadOptions o;
    o.skip_bad = true;
    CHECK_THROWS_WITH(hd::load_preference_records(dir.write("x.jsonl", "{}\n[]\n"), o),
                      Contains("no valid preference records") && Contains("2 bad records skipped"));
  }
  SECTION("missing file") {
    const auto missing = dir.path() / "missing.jsonl";
    CHECK_THROWS_WITH(hd::load_preference_records(missing),
                      Contains("cannot open") && Contains(missing.string()));
  }
}

TEST_CASE("UTF-8 validation is strict", "[records][utf8]") {
  CHECK_FALSE(hd::first_invalid_utf8("plain ascii").has_value());
  CHECK_FALSE(hd::first_invalid_utf8("caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x99\x82").has_value());
  CHECK(hd::first_invalid_utf8("ab\x80") == 2u);            // stray continuation byte
  CHECK(hd::first_invalid_utf8("\xC3") == 0u);              // truncated sequence
  CHECK(hd::first_invalid_utf8("x\xE0\x80\xAF") == 1u);     // overlong
  CHECK(hd::first_invalid_utf8("\xED\xB0\x80") == 0u);      // surrogate
  CHECK(hd::first_invalid_utf8("\xF4\x90\x80\x80") == 0u);  // above U+10FFFF
  CHECK(hd::replace_invalid_utf8("a\xFF"
                                 "b") ==
        "a\xEF\xBF\xBD"
        "b");
}
