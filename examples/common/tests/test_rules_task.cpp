// The "follow the instructions" task (hidden gold reward, Bradley-Terry labels): the gold reward
// on hand-computed cases, determinism, the shipped files being exactly the generator's output,
// every shipped record's gold values and label noise, the loader keeping "gold_agrees", the
// unlabelled corpus (pinned bytes, determinism, well-formed disjoint prompts, mixed quality), and
// the length-skewed variant (the task's invariants, no truncation, the padding it wastes).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_set>

#include "hafrm/data/assemble.hpp"
#include "hafrm/data/preference_records.hpp"
#include "hafrm/data/tokenizer.hpp"
#include "hafrm_examples/rules_task.hpp"
#include "test_util.hpp"

namespace hx = hafrm::examples;
namespace hd = hafrm::data;
namespace rt = hafrm::examples::rules;

namespace {

std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

template <class Record>
std::string as_jsonl(const std::vector<Record>& records) {
  std::string out;
  for (const auto& r : records) out += rt::to_json_line(r) + "\n";
  return out;
}

// 64-bit FNV-1a.
uint64_t fnv1a(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

const std::vector<rt::CorpusRecord>& default_corpus() {
  static const auto corpus = rt::generate_corpus(rt::default_corpus_spec());
  return corpus;
}

const std::vector<rt::Split>& skewed_splits() {
  static const auto splits = rt::generate_default_skewed_splits();
  return splits;
}

// The trainer's defaults: byte tokenizer, Phi template, --max-length 128, --max-prompt-length 64.
hd::AssemblyOptions trainer_options() {
  hd::AssemblyOptions o;
  o.prompt_template = hd::PromptTemplate::phi();
  o.max_length = 128;
  o.max_prompt_length = 64;
  return o;
}

// Token lengths of each pair's two sequences as the trainer assembles them.
std::vector<std::pair<std::size_t, std::size_t>> sequence_lengths(
    const std::vector<rt::Pair>& pairs) {
  const hd::ByteTokenizer tok;
  const auto options = trainer_options();
  std::vector<std::pair<std::size_t, std::size_t>> lengths;
  for (const auto& p : pairs) {
    const auto t = hd::assemble_pair(tok, hd::TextRecord{p.prompt, p.chosen, p.rejected}, options);
    lengths.emplace_back(t.chosen_ids.size(), t.rejected_ids.size());
  }
  return lengths;
}

// The fraction of token positions that are padding when the pairs are shuffled into batches of
// `batch` pairs (a partial last batch dropped) and each batch's 2 * batch sequences are padded
// to its longest: 1 - real tokens / padded positions, over `epochs` shuffles.
double padding_waste(const std::vector<std::pair<std::size_t, std::size_t>>& lengths,
                     std::size_t batch, int epochs) {
  std::mt19937_64 rng(7);
  std::vector<std::size_t> order(lengths.size());
  std::size_t real = 0, padded = 0;
  for (int e = 0; e < epochs; ++e) {
    std::iota(order.begin(), order.end(), std::size_t{0});
    for (std::size_t i = order.size(); i > 1; --i)
      std::swap(order[i - 1], order[rt::uniform_below(rng, i)]);
    for (std::size_t start = 0; start + batch <= order.size(); start += batch) {
      std::size_t longest = 0;
      for (std::size_t k = start; k < start + batch; ++k) {
        const auto [c, r] = lengths[order[k]];
        real += c + r;
        longest = std::max({longest, c, r});
      }
      padded += 2 * batch * longest;
    }
  }
  return padded == 0 ? 0.0 : 1.0 - double(real) / double(padded);
}

// The labels that disagree with the gold ordering, against what Bradley-Terry noise predicts:
// a pair's label disagrees with probability sigmoid(-|gold_c - gold_r| / kLabelTemperature).
struct LabelNoise {
  std::size_t disagree = 0;
  double expected = 0, variance = 0;
  void add(int gold_chosen, int gold_rejected) {
    disagree += gold_chosen < gold_rejected;
    const double p =
        1.0 / (1.0 + std::exp(std::abs(gold_chosen - gold_rejected) / rt::kLabelTemperature));
    expected += p;
    variance += p * (1 - p);
  }
  // The observed count within 4 sd of the model's expectation.
  bool fits_model() const {
    return std::abs(double(disagree) - expected) < 4 * std::sqrt(variance);
  }
  double fraction(std::size_t pairs) const { return double(disagree) / double(pairs); }
};
}  // namespace

TEST_CASE("the gold reward scores each feature as documented", "[rules]") {
  // Prompt: banned 'k', n = 4, source letters c l b k x h.
  const std::string prompt = "k4:clbkxh";
  SECTION("a perfect answer: 4 allowed letters, ascending, no marker") {
    const auto g = rt::gold_parts(prompt, "bchl");
    CHECK(g.letters == 8);
    CHECK(g.banned == 0);
    CHECK(g.length == 0);
    CHECK(g.order == 3);
    CHECK(g.marker == 0);
    CHECK(g.total() == 11);
    CHECK(rt::gold_reward(prompt, "chlx") == 11);  // another perfect answer, as good
  }
  SECTION("each defect costs its points") {
    CHECK(rt::gold_reward(prompt, "bchl!") == 11 - 3);       // style marker
    CHECK(rt::gold_reward(prompt, "bchk") == 6 - 4 + 3);     // banned letter
    CHECK(rt::gold_reward(prompt, "bchz") == 6 - 2 + 3);     // letter not in the source
    CHECK(rt::gold_reward(prompt, "lhcb") == 8 + 0);         // descending: no order credit
    CHECK(rt::gold_reward(prompt, "bc") == 4 - 6 + 1);       // two letters short
    CHECK(rt::gold_reward(prompt, "bchlxx") == 12 - 6 + 4);  // two too long, x repeated
    CHECK(rt::gold_reward(prompt, "!") == -3 - 12);          // empty body and a marker
  }
  CHECK_THROWS_AS(rt::parse_prompt("k0:abc"), std::invalid_argument);
  CHECK_THROWS_AS(rt::parse_prompt("K4:abc"), std::invalid_argument);
  CHECK_THROWS_AS(rt::parse_prompt("k4abc"), std::invalid_argument);
  const auto ins = rt::parse_prompt(prompt);
  CHECK(ins.banned == 'k');
  CHECK(ins.target == 4);
  CHECK(ins.source == "clbkxh");
}

TEST_CASE("rules generation is deterministic in the seed", "[rules]") {
  auto specs = rt::default_split_specs(42);
  for (auto& s : specs) s.count = 200;
  const auto a = rt::generate_splits(specs), b = rt::generate_splits(specs);
  for (auto& s : specs) s.seed += 1;
  const auto c = rt::generate_splits(specs);
  REQUIRE(a.size() == 3);
  for (std::size_t k = 0; k < a.size(); ++k) {
    CHECK(as_jsonl(a[k].pairs) == as_jsonl(b[k].pairs));
    CHECK(as_jsonl(a[k].pairs) != as_jsonl(c[k].pairs));
  }
}

TEST_CASE("the shipped rules data is exactly the generator's default output", "[rules][data]") {
  // Fails if the generator changes without regenerating data/rules (see data/README.md).
  for (const auto& split : rt::generate_default_splits()) {
    const auto file = hx::test::data_dir() / "rules" / (split.spec.name + ".jsonl");
    INFO(file.string());
    CHECK(slurp(file) == as_jsonl(split.pairs));
  }
}

TEST_CASE("every shipped rules record carries its gold reward and a Bradley-Terry label",
          "[rules][data]") {
  std::unordered_set<std::string> prompts;
  std::size_t train_max_source = 0, ood_min_source = 100;
  for (const auto& spec : rt::default_split_specs()) {
    const auto file = hx::test::data_dir() / "rules" / (spec.name + ".jsonl");
    INFO(file.string());
    const auto loaded = hd::load_preference_records(file);  // the trainers' own loader
    REQUIRE(loaded.records.size() == spec.count);
    std::ifstream raw(file);
    LabelNoise noise;
    for (const auto& rec : loaded.records) {
      const auto& r = std::get<hd::TextRecord>(rec);
      std::string line;
      std::getline(raw, line);
      INFO("line " << r.line << ": " << line);
      const auto j = nlohmann::json::parse(line);
      const int gc = j.at("gold_chosen").get<int>(), gr = j.at("gold_rejected").get<int>();
      REQUIRE(gc == rt::gold_reward(r.prompt, r.chosen));
      REQUIRE(gr == rt::gold_reward(r.prompt, r.rejected));
      REQUIRE(gc != gr);  // every pair has a gold ordering
      REQUIRE(r.gold_agrees.has_value());
      REQUIRE(*r.gold_agrees == (gc > gr));
      REQUIRE(j.at("gold_agrees").get<bool>() == (gc > gr));
      const auto ins = rt::parse_prompt(r.prompt);
      REQUIRE(ins.source.find(ins.banned) != std::string::npos);
      REQUIRE(ins.source.size() >= spec.min_source);
      REQUIRE(ins.source.size() <= spec.max_source);
      REQUIRE(ins.target >= spec.min_target);
      REQUIRE(ins.target <= spec.max_target);
      REQUIRE(prompts.insert(r.prompt).second);  // unique within and across splits
      if (spec.name == "train") train_max_source = std::max(train_max_source, ins.source.size());
      if (spec.name == "ood") ood_min_source = std::min(ood_min_source, ins.source.size());
      noise.add(gc, gr);
    }
    // The observed count of disagreeing labels is within 4 sd of what the noise model predicts,
    // and the training set's fraction is in the 20-30% range of human preference sets.
    CHECK(noise.fits_model());
    if (spec.name == "train") {
      CHECK(noise.fraction(spec.count) > 0.20);
      CHECK(noise.fraction(spec.count) < 0.30);
    }
  }
  CHECK(ood_min_source > train_max_source);  // OOD prompts are longer than any in train
}

TEST_CASE("the loader keeps an optional gold_agrees and checks its type", "[rules][records]") {
  hx::test::TempDir dir;
  const auto file =
      dir.write("gold.jsonl", R"({"prompt":"p","chosen":"a","rejected":"b","gold_agrees":true})"
                              "\n"
                              R"({"prompt":"p","chosen":"a","rejected":"b","gold_agrees":false})"
                              "\n"
                              R"({"prompt":"p","chosen":"a","rejected":"b"})"
                              "\n");
  const auto loaded = hd::load_preference_records(file);
  REQUIRE(loaded.records.size() == 3);
  CHECK(std::get<hd::TextRecord>(loaded.records[0]).gold_agrees == std::optional<bool>(true));
  CHECK(std::get<hd::TextRecord>(loaded.records[1]).gold_agrees == std::optional<bool>(false));
  CHECK_FALSE(std::get<hd::TextRecord>(loaded.records[2]).gold_agrees.has_value());

  const auto ids = dir.write(
      "ids.jsonl", R"({"prompt_ids":[1],"chosen_ids":[2],"rejected_ids":[3],"gold_agrees":false})"
                   "\n");
  const auto loaded_ids = hd::load_preference_records(ids, {.vocab_size = 10});
  CHECK(std::get<hd::TokenRecord>(loaded_ids.records[0]).gold_agrees == std::optional<bool>(false));

  const auto bad =
      dir.write("bad.jsonl", R"({"prompt":"p","chosen":"a","rejected":"b","gold_agrees":1})"
                             "\n");
  try {
    hd::load_preference_records(bad);
    FAIL("a non-boolean gold_agrees was accepted");
  } catch (const hd::RecordError& e) {
    CHECK(e.field() == "gold_agrees");
    CHECK(e.line() == 1);
    CHECK(std::string(e.what()).find("expected a boolean, got number") != std::string::npos);
  }
}

TEST_CASE("the default rules corpus is pinned byte for byte", "[rules][corpus]") {
  // Fails on any change to the prompt or response generator, the corpus spec or the writer.
  hx::test::TempDir dir;
  const auto file = dir / "corpus.jsonl";
  rt::write_corpus_jsonl(file, default_corpus());
  CHECK_FALSE(std::filesystem::exists(dir / "corpus.jsonl.tmp"));  // renamed onto the file
  const std::string bytes = slurp(file);
  CHECK(bytes.size() == 2761428);
  CHECK(fnv1a(bytes) == 0x9085d63c0a28cdefull);
  CHECK(bytes == as_jsonl(default_corpus()));
  REQUIRE(default_corpus().size() == 60000);
  CHECK(default_corpus()[0].prompt == "v6:hvvojlawepyui");
  CHECK(default_corpus()[0].response == "iwpxldapy!");
  CHECK(bytes.substr(0, bytes.find('\n')) ==
        R"({"prompt":"v6:hvvojlawepyui","response":"iwpxldapy!"})");
}

TEST_CASE("rules corpus generation is deterministic in the seed", "[rules][corpus]") {
  auto spec = rt::default_corpus_spec(42);
  spec.count = 2000;
  const auto a = rt::generate_corpus(spec), b = rt::generate_corpus(spec);
  spec.seed += 1;
  const auto c = rt::generate_corpus(spec);
  REQUIRE(a.size() == 2000);
  REQUIRE(c.size() == 2000);
  CHECK(as_jsonl(a) == as_jsonl(b));
  CHECK(as_jsonl(a) != as_jsonl(c));
  spec.count = 0;
  CHECK(rt::generate_corpus(spec).empty());
  spec.count = 10;
  spec.max_target = 10;  // n is one digit
  CHECK_THROWS_AS(rt::generate_corpus(spec), std::invalid_argument);
}

TEST_CASE("corpus records are well formed, unique and disjoint from the splits",
          "[rules][corpus]") {
  const auto spec = rt::default_corpus_spec();
  std::unordered_set<std::string> split_prompts;
  for (const auto& split : rt::generate_default_splits())
    for (const auto& p : split.pairs) split_prompts.insert(p.prompt);
  REQUIRE(split_prompts.size() == 4000);
  std::unordered_set<std::string> prompts;
  std::size_t min_source = 100, max_source = 0, min_target = 100, max_target = 0;
  for (const auto& r : default_corpus()) {
    INFO(r.prompt << " -> " << r.response);
    const auto ins = rt::parse_prompt(r.prompt);
    REQUIRE(ins.source.find(ins.banned) != std::string::npos);
    for (char c : ins.source) REQUIRE((c >= 'a' && c <= 'z'));
    min_source = std::min(min_source, ins.source.size());
    max_source = std::max(max_source, ins.source.size());
    min_target = std::min(min_target, ins.target);
    max_target = std::max(max_target, ins.target);
    REQUIRE(prompts.insert(r.prompt).second);
    REQUIRE(split_prompts.count(r.prompt) == 0);
    // The response: letters, then at most one marker; n - 2 .. n + 3 letters, at least 1.
    std::string_view body = r.response;
    if (!body.empty() && body.back() == rt::kMarker) body.remove_suffix(1);
    for (char c : body) REQUIRE((c >= 'a' && c <= 'z'));
    REQUIRE(body.size() >= (ins.target >= 3 ? ins.target - 2 : 1));
    REQUIRE(body.size() <= ins.target + 3);
  }
  // The corpus spans the whole spec: the train range and the longer OOD range.
  CHECK(min_source == spec.min_source);
  CHECK(max_source == spec.max_source);
  CHECK(min_target == spec.min_target);
  CHECK(max_target == spec.max_target);
}

TEST_CASE("the corpus mixes good and bad responses", "[rules][corpus]") {
  // The gold reward only measures the corpus here; the generator never sees it.
  std::size_t exact_length = 0, perfect = 0, negative = 0;
  int lowest = 0, highest = 0;
  for (const auto& r : default_corpus()) {
    const auto ins = rt::parse_prompt(r.prompt);
    const int g = rt::gold_reward(r.prompt, r.response);
    lowest = std::min(lowest, g);
    highest = std::max(highest, g);
    const bool marker = !r.response.empty() && r.response.back() == rt::kMarker;
    exact_length += r.response.size() - (marker ? 1 : 0) == ins.target;
    // 3n - 1 is the most a response can score: n allowed letters, ascending, no marker.
    perfect += g == 3 * int(ins.target) - 1;
    negative += g < 0;
  }
  const double n = double(default_corpus().size());
  CHECK(highest == 3 * 8 - 1);  // a perfect answer to an n = 8 prompt
  CHECK(lowest < -20);
  CHECK(double(exact_length) / n > 0.20);
  CHECK(double(exact_length) / n < 0.90);
  CHECK(double(perfect) / n > 0.02);
  CHECK(double(negative) / n > 0.10);
  CHECK(double(perfect + negative) / n < 0.90);  // most are neither perfect nor worthless
}

TEST_CASE("write_corpus_jsonl names a file it cannot write", "[rules][corpus]") {
  hx::test::TempDir dir;
  const auto file = dir / "missing" / "corpus.jsonl";
  try {
    rt::write_corpus_jsonl(file, {{"a2:abc", "ab"}});
    FAIL("a file in a missing directory was written");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("rules::write_corpus_jsonl") != std::string::npos);
    CHECK(std::string(e.what()).find("corpus.jsonl") != std::string::npos);
  }
  // Escaping as the pair lines: the line parses back to the record.
  const auto ok = dir / "one.jsonl";
  rt::write_corpus_jsonl(ok, {{"a2:abc", "a\"b"}});
  const auto j = nlohmann::json::parse(slurp(ok));
  CHECK(j.at("prompt") == "a2:abc");
  CHECK(j.at("response") == "a\"b");
}

TEST_CASE("the skewed rules splits keep the task's invariants", "[rules][skewed]") {
  for (const auto& spec : rt::default_split_specs()) CHECK_FALSE(spec.tail.enabled());
  const auto specs = rt::default_skewed_specs();
  REQUIRE(skewed_splits().size() == 3);
  std::unordered_set<std::string> prompts;
  for (std::size_t k = 0; k < specs.size(); ++k) {
    const auto& spec = specs[k];
    const auto& pairs = skewed_splits()[k].pairs;
    INFO(spec.name);
    REQUIRE(pairs.size() == spec.count);
    std::size_t tail_prompts = 0, rambles = 0, max_source = 0;
    LabelNoise noise;
    for (const auto& p : pairs) {
      INFO(p.prompt << " " << p.chosen << " " << p.rejected);
      REQUIRE(p.gold_chosen == rt::gold_reward(p.prompt, p.chosen));
      REQUIRE(p.gold_rejected == rt::gold_reward(p.prompt, p.rejected));
      REQUIRE(p.gold_chosen != p.gold_rejected);  // a strict gold ordering
      REQUIRE(p.chosen != p.rejected);
      const auto ins = rt::parse_prompt(p.prompt);
      REQUIRE(ins.source.find(ins.banned) != std::string::npos);
      const std::size_t n = ins.source.size();
      const bool tail = n >= spec.tail.min_source && n <= spec.tail.max_source;
      REQUIRE((tail || (n >= spec.min_source && n <= spec.max_source)));
      REQUIRE(ins.target >= spec.min_target);
      REQUIRE(ins.target <= spec.max_target);
      REQUIRE(prompts.insert(p.prompt).second);  // unique within and across splits
      tail_prompts += tail;
      max_source = std::max(max_source, n);
      for (const std::string* y : {&p.chosen, &p.rejected}) {
        std::string_view body = *y;
        if (!body.empty() && body.back() == rt::kMarker) body.remove_suffix(1);
        REQUIRE(body.size() <= ins.target + 3 + spec.tail.max_ramble);
        rambles += body.size() > ins.target + 3;  // only a ramble is longer than n + 3
      }
      noise.add(p.gold_chosen, p.gold_rejected);
    }
    // Bradley-Terry labels: the disagreeing count is within 4 sd of the noise model's
    // expectation, and about a quarter of train.
    CHECK(noise.fits_model());
    if (spec.name == "train") {
      CHECK(noise.fraction(spec.count) > 0.20);
      CHECK(noise.fraction(spec.count) < 0.30);
      // The tail: 5% of the prompts (150 expected, sd ~12) and about 4% of the responses
      // ramble (some rambles end within n + 3 and are not counted).
      CHECK(tail_prompts > 100);
      CHECK(tail_prompts < 200);
      CHECK(rambles > 100);
      CHECK(rambles < 400);
      CHECK(max_source > 35);
    }
  }
}

TEST_CASE("skewed rules generation is deterministic and leaves the default draws alone",
          "[rules][skewed]") {
  const auto again = rt::generate_default_skewed_splits();
  REQUIRE(again.size() == skewed_splits().size());
  for (std::size_t k = 0; k < again.size(); ++k)
    CHECK(as_jsonl(again[k].pairs) == as_jsonl(skewed_splits()[k].pairs));
  // The skewed specs are the default specs plus the tail: without it they draw the default
  // splits, and with it other pairs.
  auto specs = rt::default_skewed_specs(42), plain_specs = rt::default_split_specs(42);
  for (auto& s : specs) s.count = 200;
  for (auto& s : plain_specs) s.count = 200;
  const auto a = rt::generate_splits(specs);
  for (auto& s : specs) s.tail = {};
  const auto b = rt::generate_splits(specs), plain = rt::generate_splits(plain_specs);
  for (std::size_t k = 0; k < a.size(); ++k) {
    CHECK(as_jsonl(a[k].pairs) != as_jsonl(b[k].pairs));
    CHECK(as_jsonl(b[k].pairs) == as_jsonl(plain[k].pairs));
  }
  // A tail outside its ranges is an error naming the argument.
  for (const rt::LengthTail bad :
       {rt::LengthTail{101, 15, 40, 0, 0, 0}, rt::LengthTail{5, 1, 40, 0, 0, 0},
        rt::LengthTail{5, 40, 15, 0, 0, 0}, rt::LengthTail{0, 0, 0, 8, 52, 5}}) {
    auto spec = specs[0];
    spec.tail = bad;
    std::unordered_set<std::string> used;
    CHECK_THROWS_WITH(rt::generate_split(spec, used),
                      Catch::Contains("rules::generate_split: argument 'spec.tail'"));
  }
}

TEST_CASE("the skewed train split makes a padded batch of 32 pairs mostly padding",
          "[rules][skewed]") {
  // Under the trainer's defaults nothing is truncated: each sequence is the prompt, the Phi
  // template's 18 + 1 characters, the response and EOS, one byte token each.
  const hd::ByteTokenizer tok;
  for (const auto& split : skewed_splits()) {
    for (const auto& p : split.pairs) {
      INFO(p.prompt << " " << p.chosen << " " << p.rejected);
      const auto t =
          hd::assemble_pair(tok, hd::TextRecord{p.prompt, p.chosen, p.rejected}, trainer_options());
      REQUIRE(t.prompt_length == int64_t(p.prompt.size() + 18));
      REQUIRE(t.chosen_ids.size() == p.prompt.size() + 18 + 1 + p.chosen.size() + 1);
      REQUIRE(t.rejected_ids.size() == p.prompt.size() + 18 + 1 + p.rejected.size() + 1);
      REQUIRE(t.prompt_length <= 64);
      REQUIRE(t.chosen_ids.size() <= 128);
      REQUIRE(t.rejected_ids.size() <= 128);
    }
  }
  const auto skewed = sequence_lengths(skewed_splits()[0].pairs);
  const auto plain = sequence_lengths(rt::generate_default_splits()[0].pairs);
  const double skewed_waste = padding_waste(skewed, 32, 20);
  const double plain_waste = padding_waste(plain, 32, 20);
  CAPTURE(skewed_waste, plain_waste);
  CHECK(skewed_waste >= 0.40);
  CHECK(skewed_waste <= 0.65);
  CHECK(plain_waste < 0.20);
  CHECK(plain_waste < skewed_waste);
  // Long-tailed: the median sequence is as short as the default's, the longest three times it.
  std::vector<std::size_t> all;
  for (const auto& [c, r] : skewed) all.push_back(c), all.push_back(r);
  std::sort(all.begin(), all.end());
  const std::size_t median = all[all.size() / 2];
  CAPTURE(median, all.back());
  CHECK(median < 40);
  CHECK(all.back() > 3 * median);
}
