// Single-response assembly (scoring): the ids equal the chosen side of the training pair for the
// same prompt and response, over random texts, both tokenizers and both truncation modes; the
// truncation flags; bad input.
#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "hafrm/data/assemble.hpp"
#include "test_util.hpp"

namespace hx = hafrm::examples;
namespace hd = hafrm::data;
using Catch::Matchers::Contains;
using Ids = std::vector<int64_t>;

namespace {

constexpr int64_t kEos = hd::ByteTokenizer::kEosId;

Ids bytes(const std::string& s) { return hd::ByteTokenizer().encode(s); }

Ids concat(Ids a, const Ids& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

hd::AssemblyOptions options(hd::PromptTemplate t, int64_t max_length, int64_t max_prompt_length,
                            hd::TruncationMode mode) {
  hd::AssemblyOptions o;
  o.prompt_template = std::move(t);
  o.max_length = max_length;
  o.max_prompt_length = max_prompt_length;
  o.truncation = mode;
  return o;
}

/// A SentencePiece model trained once from the shipped corpus, kept for the whole test run.
const hd::Tokenizer& spm_tokenizer() {
  static const hx::test::TempDir dir;
  static const std::unique_ptr<hd::Tokenizer> tok = std::make_unique<hd::SentencePieceTokenizer>(
      hd::train_sentencepiece(hx::test::data_dir() / "text" / "corpus.txt", dir / "single", 200));
  return *tok;
}

std::vector<std::string> corpus_words() {
  std::ifstream in(hx::test::data_dir() / "text" / "corpus.txt");
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

}  // namespace

TEST_CASE("assemble_single gives the chosen side of the pair, with labels and no flags",
          "[assemble][single]") {
  const hd::ByteTokenizer tok;
  const hd::AssemblyOptions o;  // Phi template, 512 / 128, kKeepEos
  const auto s = hd::assemble_single(tok, "2+2?", "4", o);
  const auto p = hd::assemble_pair(tok, hd::TextRecord{"2+2?", "4", "5"}, o);
  const Ids prompt = bytes("Instruct: 2+2?\nOutput:");
  CHECK(s.ids == concat(concat(prompt, bytes(" 4")), {kEos}));
  CHECK(s.ids == p.chosen_ids);
  CHECK(s.labels == p.chosen_labels);
  CHECK(s.prompt_length == int64_t(prompt.size()));
  CHECK_FALSE(s.prompt_truncated);
  CHECK_FALSE(s.response_truncated);
}

TEST_CASE("assemble_single truncates by the pair rule and says what it cut", "[assemble][single]") {
  const hd::ByteTokenizer tok;
  const auto raw = hd::PromptTemplate::raw();
  SECTION("kKeepEos: prompt end kept, response cut before EOS") {
    const auto o = options(raw, 8, 4, hd::TruncationMode::kKeepEos);
    const auto s = hd::assemble_single(tok, "0123456789", "abcdefgh", o);
    CHECK(s.ids == concat(bytes("6789abc"), {kEos}));
    CHECK(s.prompt_length == 4);
    CHECK(s.prompt_truncated);
    CHECK(s.response_truncated);
    const auto fits = hd::assemble_single(tok, "0123", "abc", o);  // 4 + 3 + EOS == 8
    CHECK(fits.ids == concat(bytes("0123abc"), {kEos}));
    CHECK_FALSE(fits.prompt_truncated);
    CHECK_FALSE(fits.response_truncated);
    const auto long_prompt = hd::assemble_single(tok, "01234", "a", o);  // always cut to 4
    CHECK(long_prompt.ids == concat(bytes("1234a"), {kEos}));
    CHECK(long_prompt.prompt_truncated);
    CHECK_FALSE(long_prompt.response_truncated);
  }
  SECTION("kReference: TRL 0.7's rule, which may drop EOS") {
    const auto o = options(raw, 8, 4, hd::TruncationMode::kReference);
    const auto s = hd::assemble_single(tok, "0123456789", "abcdefgh", o);
    CHECK(s.ids == bytes("6789abcd"));
    CHECK(s.prompt_truncated);
    CHECK(s.response_truncated);
    const auto fits = hd::assemble_single(tok, "012345", "a", o);  // fits: prompt not cut
    CHECK(fits.ids == concat(bytes("012345a"), {kEos}));
    CHECK_FALSE(fits.prompt_truncated);
    CHECK_FALSE(fits.response_truncated);
    const auto prompt_only = hd::assemble_single(tok, "0123456", "ab", o);  // 7 + 3 > 8
    CHECK(prompt_only.ids == concat(bytes("3456ab"), {kEos}));
    CHECK(prompt_only.prompt_truncated);
    CHECK_FALSE(prompt_only.response_truncated);
  }
}

TEST_CASE("assemble_single equals the pair's chosen side over random prompts and responses",
          "[assemble][single]") {
  const bool use_spm = GENERATE(false, true);
  const auto mode = GENERATE(hd::TruncationMode::kKeepEos, hd::TruncationMode::kReference);
  const hd::ByteTokenizer byte_tok;
  const hd::Tokenizer& tok = use_spm ? spm_tokenizer() : byte_tok;
  const auto words = corpus_words();
  REQUIRE(words.size() > 100);
  std::mt19937_64 rng(use_spm ? 11 : 7);
  const auto draw = [&](std::size_t n) { return std::size_t(rng() % n); };
  const auto text = [&](std::size_t max_words) {
    std::string s;
    for (std::size_t i = 0, n = 1 + draw(max_words); i < n; ++i) {
      if (i > 0) s += draw(8) == 0 ? "\n" : " ";
      s += draw(10) == 0 ? std::string("caf\xC3\xA9 #") + std::to_string(draw(1000))
                         : words[draw(words.size())];
    }
    return s;
  };
  const std::vector<hd::PromptTemplate> templates = {
      hd::PromptTemplate::phi(), hd::PromptTemplate::mistral(), hd::PromptTemplate::raw()};
  int prompts_cut = 0, responses_cut = 0, uncut = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int64_t max_prompt = 2 + int64_t(draw(120));
    const auto o = options(templates[draw(templates.size())], max_prompt + 2 + int64_t(draw(160)),
                           max_prompt, mode);
    const std::string prompt = text(25), response = text(25), other = text(25);
    INFO("trial " << trial << " prompt [" << prompt << "] response [" << response << "]");
    const auto s = hd::assemble_single(tok, prompt, response, o);
    const auto same = hd::assemble_pair(tok, hd::TextRecord{prompt, response, response}, o);
    REQUIRE(s.ids == same.chosen_ids);
    REQUIRE(s.labels == same.chosen_labels);
    REQUIRE(s.prompt_length == same.prompt_length);

    // The parts as assembly sees them, for the rejected side's effect and the flags.
    const auto fill = [](std::string f, const std::string& key, const std::string& v) {
      return f.replace(f.find(key), key.size(), v);
    };
    const auto n_prompt =
        int64_t(tok.encode(fill(o.prompt_template.prompt_format, "{prompt}", prompt)).size());
    const auto response_size = [&](const std::string& r) {
      return int64_t(tok.encode(fill(o.prompt_template.response_format, "{response}", r)).size());
    };
    const int64_t n_response = response_size(response), n_other = response_size(other);
    const auto pair = hd::assemble_pair(tok, hd::TextRecord{prompt, response, other}, o);
    if (mode == hd::TruncationMode::kKeepEos) {
      // Under kKeepEos a side never depends on the other side.
      REQUIRE(s.ids == pair.chosen_ids);
      REQUIRE(s.ids.back() == tok.eos_id());
      const int64_t kept_prompt = std::min(n_prompt, max_prompt);
      REQUIRE(s.prompt_truncated == (n_prompt > max_prompt));
      REQUIRE(s.response_truncated == (kept_prompt + n_response + 1 > o.max_length));
    } else {
      // Under kReference the cut depends on the longer response: equal when the other is not
      // longer.
      if (n_other <= n_response) REQUIRE(s.ids == pair.chosen_ids);
      const bool over = n_prompt + n_response + 1 > o.max_length;
      REQUIRE(s.prompt_truncated == (over && n_prompt > max_prompt));
      const int64_t kept_prompt = s.prompt_truncated ? max_prompt : n_prompt;
      REQUIRE(s.response_truncated == (kept_prompt + n_response + 1 > o.max_length &&
                                       n_response + 1 > o.max_length - max_prompt));
    }
    REQUIRE(int64_t(s.ids.size()) <= o.max_length);
    prompts_cut += s.prompt_truncated;
    responses_cut += s.response_truncated;
    uncut += !s.prompt_truncated && !s.response_truncated;
  }
  // The random lengths reach every case: prompts cut, responses cut, and sequences that fit.
  CAPTURE(prompts_cut, responses_cut, uncut);
  CHECK(prompts_cut > 20);
  CHECK(responses_cut > 20);
  CHECK(uncut > 20);
}

TEST_CASE("assemble_single rejects an empty response, an empty prompt and bad options",
          "[assemble][single]") {
  const hd::ByteTokenizer tok;
  const auto raw = options(hd::PromptTemplate::raw(), 8, 4, hd::TruncationMode::kKeepEos);
  CHECK_THROWS_WITH(hd::assemble_single(tok, "p", "", raw),
                    Contains("assemble_single") && Contains("'response'"));
  // With a template the response is still empty: the template's text is not a response.
  CHECK_THROWS_WITH(hd::assemble_single(tok, "p", "", hd::AssemblyOptions{}),
                    Contains("'response'"));
  CHECK_THROWS_WITH(hd::assemble_single(tok, "", "r", raw),
                    Contains("assemble_single") && Contains("prompt has no tokens"));
  CHECK_THROWS_AS(
      hd::assemble_single(tok, "p", "r",
                          options(hd::PromptTemplate::raw(), 4, 4, hd::TruncationMode::kKeepEos)),
      std::invalid_argument);
  CHECK_THROWS_AS(hd::assemble_single_ids(bytes("p"), {}, kEos, raw), std::invalid_argument);
  CHECK(hd::assemble_single_ids(bytes("p"), bytes("r"), kEos, raw).ids == Ids{'p', 'r', kEos});
}
