// Prompt/response assembly (EOS, label masking, truncation modes, templates) and padding.
#include <algorithm>
#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "hafrm/data/assemble.hpp"

namespace hd = hafrm::data;
using Catch::Matchers::Contains;
using Ids = std::vector<int64_t>;

namespace {

constexpr int64_t kEos = hd::ByteTokenizer::kEosId;
constexpr int64_t kIgnore = hd::kIgnoreIndex;

Ids bytes(const std::string& s) { return hd::ByteTokenizer().encode(s); }

Ids concat(Ids a, const Ids& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

/// Expected labels: ignore on the prompt, ids after it.
Ids masked(const Ids& ids, int64_t prompt_length) {
  Ids labels = ids;
  std::fill_n(labels.begin(), prompt_length, kIgnore);
  return labels;
}

hd::AssemblyOptions raw_options(int64_t max_length, int64_t max_prompt_length) {
  hd::AssemblyOptions o;
  o.prompt_template = hd::PromptTemplate::raw();
  o.max_length = max_length;
  o.max_prompt_length = max_prompt_length;
  return o;
}

}  // namespace

TEST_CASE("responses get EOS and the prompt is masked in the labels", "[assemble]") {
  const hd::ByteTokenizer tok;
  const auto p = hd::assemble_pair(tok, hd::TextRecord{"abc", "de", "xyz"}, raw_options(64, 16));
  CHECK(p.prompt_length == 3);
  CHECK(p.chosen_ids == Ids{'a', 'b', 'c', 'd', 'e', kEos});
  CHECK(p.chosen_labels == Ids{kIgnore, kIgnore, kIgnore, 'd', 'e', kEos});
  CHECK(p.rejected_ids == Ids{'a', 'b', 'c', 'x', 'y', 'z', kEos});
  CHECK(p.rejected_labels == masked(p.rejected_ids, 3));
}

TEST_CASE("templates wrap the prompt and the response separately", "[assemble]") {
  const hd::ByteTokenizer tok;
  hd::AssemblyOptions o;  // Phi: "Instruct: {x}\nOutput:" + " " + y
  const auto p = hd::assemble_pair(tok, hd::TextRecord{"2+2?", "4", "5"}, o);
  const Ids prompt = bytes("Instruct: 2+2?\nOutput:");
  CHECK(p.prompt_length == int64_t(prompt.size()));
  CHECK(p.chosen_ids == concat(concat(prompt, bytes(" 4")), {kEos}));
  CHECK(p.rejected_ids == concat(concat(prompt, bytes(" 5")), {kEos}));
  CHECK(p.chosen_labels == masked(p.chosen_ids, p.prompt_length));

  o.prompt_template = hd::PromptTemplate::mistral();
  const auto m = hd::assemble_pair(tok, hd::TextRecord{"hi", "yo", "no"}, o);
  CHECK(m.chosen_ids == concat(bytes("[INST] hi [/INST]yo"), {kEos}));

  SECTION("a template must hold its placeholder exactly once") {
    o.prompt_template = {"Q: {x}", "{response}"};
    CHECK_THROWS_WITH(hd::assemble_pair(tok, hd::TextRecord{"a", "b", "c"}, o),
                      Contains("{prompt}"));
    o.prompt_template = {"{prompt}", "{response}{response}"};
    CHECK_THROWS_AS(hd::assemble_pair(tok, hd::TextRecord{"a", "b", "c"}, o),
                    std::invalid_argument);
  }
}

TEST_CASE("kKeepEos keeps the prompt end and always ends responses with EOS", "[assemble]") {
  const auto p = hd::assemble_ids(bytes("0123456789"), bytes("abcdefgh"), bytes("xy"), kEos,
                                  raw_options(8, 4));
  CHECK(p.prompt_length == 4);
  CHECK(p.chosen_ids == concat(bytes("6789abc"), {kEos}));  // 8 - 4 - 1 = 3 response tokens
  CHECK(p.rejected_ids == concat(bytes("6789xy"), {kEos}));
  CHECK(p.chosen_labels == masked(p.chosen_ids, 4));
  CHECK(p.rejected_labels == masked(p.rejected_ids, 4));

  // A prompt shorter than max_prompt_length is left whole.
  const auto q =
      hd::assemble_ids(bytes("01"), bytes("abcdefgh"), bytes("x"), kEos, raw_options(8, 4));
  CHECK(q.chosen_ids == concat(bytes("01abcde"), {kEos}));
}

TEST_CASE("kReference truncates as TRL 0.7 does", "[assemble]") {
  auto o = raw_options(8, 4);
  o.truncation = hd::TruncationMode::kReference;
  // Too long: prompt cut to its end, then responses (with EOS) cut to 8 - 4 = 4, losing EOS.
  const auto p = hd::assemble_ids(bytes("0123456789"), bytes("abcdefgh"), bytes("xy"), kEos, o);
  CHECK(p.chosen_ids == bytes("6789abcd"));
  CHECK(p.rejected_ids == concat(bytes("6789xy"), {kEos}));
  // Fits: the prompt is NOT cut even though it is longer than max_prompt_length.
  o.max_prompt_length = 1;
  const auto q = hd::assemble_ids(bytes("01"), bytes("ab"), bytes("c"), kEos, o);
  CHECK(q.prompt_length == 2);
  CHECK(q.chosen_ids == concat(bytes("01ab"), {kEos}));
}

TEST_CASE("assembly invariants hold on random pairs", "[assemble]") {
  const uint64_t seed = GENERATE(1, 2, 3, 4, 5);
  std::mt19937_64 rng(seed);
  const auto draw = [&](int64_t n) { return int64_t(rng() % uint64_t(n)); };
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t max_prompt = 1 + draw(12);
    const auto o = raw_options(max_prompt + 1 + draw(20), max_prompt);
    const auto random_ids = [&](int64_t n) {
      Ids v(n);
      for (auto& x : v) x = draw(256);
      return v;
    };
    const Ids prompt = random_ids(1 + draw(30));
    const Ids chosen = random_ids(1 + draw(30)), rejected = random_ids(1 + draw(30));
    const auto p = hd::assemble_ids(prompt, chosen, rejected, kEos, o);
    INFO("seed " << seed << " trial " << trial);
    REQUIRE(p.prompt_length == std::min<int64_t>(int64_t(prompt.size()), max_prompt));
    for (const auto& [ids, labels, response] :
         {std::tie(p.chosen_ids, p.chosen_labels, chosen),
          std::tie(p.rejected_ids, p.rejected_labels, rejected)}) {
      REQUIRE(int64_t(ids.size()) <= o.max_length);
      REQUIRE(ids.back() == kEos);
      REQUIRE(labels == masked(ids, p.prompt_length));
      // The kept prompt is the END of the prompt; the kept response is its START.
      REQUIRE(
          std::equal(ids.begin(), ids.begin() + p.prompt_length, prompt.end() - p.prompt_length));
      const auto kept = ids.size() - std::size_t(p.prompt_length) - 1;
      REQUIRE(std::equal(ids.begin() + p.prompt_length, ids.end() - 1, response.begin()));
      REQUIRE(kept == std::min<std::size_t>(response.size(),
                                            std::size_t(o.max_length - p.prompt_length - 1)));
    }
  }
}

TEST_CASE("assembly rejects bad inputs", "[assemble]") {
  const hd::ByteTokenizer tok;
  CHECK_THROWS_AS(hd::assemble_ids(bytes("p"), bytes("c"), bytes("r"), kEos, raw_options(4, 4)),
                  std::invalid_argument);
  CHECK_THROWS_AS(hd::assemble_ids(bytes("p"), bytes("c"), bytes("r"), kEos, raw_options(4, 0)),
                  std::invalid_argument);
  hd::TextRecord empty_prompt{"", "c", "r", 17};
  CHECK_THROWS_WITH(hd::assemble_pair(tok, empty_prompt, raw_options(8, 4)),
                    Contains("line 17") && Contains("prompt has no tokens"));
  const hd::TokenRecord out_of_vocab{{1}, {2}, {300}, 9};
  CHECK_THROWS_WITH(hd::assemble_pair(tok, out_of_vocab, raw_options(8, 4)),
                    Contains("line 9") && Contains("300"));
}

TEST_CASE("pre-tokenized records skip the template and get EOS", "[assemble]") {
  const hd::ByteTokenizer tok;
  const hd::PreferenceRecord r = hd::TokenRecord{{7, 8}, {9}, {10, 11}, 1};
  const auto p = hd::assemble_pair(tok, r, hd::AssemblyOptions{});
  CHECK(p.chosen_ids == Ids{7, 8, 9, kEos});
  CHECK(p.rejected_labels == Ids{kIgnore, kIgnore, 10, 11, kEos});
}

TEST_CASE("pad_pairs builds the [chosen; rejected] right-padded batch", "[assemble][pad]") {
  const hd::ByteTokenizer tok;
  const auto o = raw_options(64, 16);
  const std::vector<hd::TokenizedPair> pairs = {
      hd::assemble_pair(tok, hd::TextRecord{"ab", "c", "defg"}, o),
      hd::assemble_pair(tok, hd::TextRecord{"hij", "klmno", "p"}, o)};
  const int64_t pad = 999;  // distinct from every real id, so pads are recognisable
  const auto b = hd::pad_pairs(pairs, pad);
  REQUIRE(b.rows == 4);
  REQUIRE(b.cols == 9);  // "hij" + "klmno" + EOS
  const std::vector<const Ids*> rows = {&pairs[0].chosen_ids, &pairs[1].chosen_ids,
                                        &pairs[0].rejected_ids, &pairs[1].rejected_ids};
  const std::vector<const Ids*> labels = {&pairs[0].chosen_labels, &pairs[1].chosen_labels,
                                          &pairs[0].rejected_labels, &pairs[1].rejected_labels};
  REQUIRE(b.input_ids.size() == 36);
  for (int64_t r = 0; r < b.rows; ++r) {
    const auto n = int64_t(rows[r]->size());
    CHECK(b.lengths[r] == n);
    for (int64_t c = 0; c < b.cols; ++c) {
      const auto k = std::size_t(r * b.cols + c);
      INFO("row " << r << " col " << c);
      CHECK(b.input_ids[k] == (c < n ? (*rows[r])[c] : pad));
      CHECK(b.attention_mask[k] == (c < n ? 1 : 0));
      CHECK(b.labels[k] == (c < n ? (*labels[r])[c] : kIgnore));
    }
    CHECK(b.input_ids[std::size_t(r * b.cols + n - 1)] == kEos);  // last real token
  }

  SECTION("pad_to_multiple_of rounds the width up") {
    CHECK(hd::pad_pairs(pairs, pad, 8).cols == 16);
    CHECK(hd::pad_pairs(pairs, pad, 9).cols == 9);
  }
}

TEST_CASE("pad_batch rejects inconsistent input", "[assemble][pad]") {
  CHECK_THROWS_AS(hd::pad_batch(std::vector<Ids>{}, std::vector<Ids>{}, 0), std::invalid_argument);
  CHECK_THROWS_AS(hd::pad_batch(std::vector<Ids>{{1}}, std::vector<Ids>{}, 0),
                  std::invalid_argument);
  CHECK_THROWS_AS(hd::pad_batch(std::vector<Ids>{{1, 2}}, std::vector<Ids>{{1}}, 0),
                  std::invalid_argument);
  CHECK_THROWS_AS(hd::pad_batch(std::vector<Ids>{{}}, std::vector<Ids>{{}}, 0),
                  std::invalid_argument);
  const auto b =
      hd::pad_batch(std::vector<Ids>{{5}, {6, 7}}, std::vector<Ids>{{kIgnore}, {6, 7}}, 0);
  CHECK(b.input_ids == Ids{5, 0, 6, 7});
  CHECK(b.attention_mask == Ids{1, 0, 1, 1});
  CHECK(b.labels == Ids{kIgnore, kIgnore, 6, 7});
}
