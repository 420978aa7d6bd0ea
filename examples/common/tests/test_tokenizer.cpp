// Tokenizers: byte-level round trips, and a SentencePiece model trained here from the shipped
// corpus (nothing downloaded).
#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <vector>

#include "hafrm/data/tokenizer.hpp"
#include "test_util.hpp"

namespace hx = hafrm::examples;
namespace hd = hafrm::data;
using Catch::Matchers::Contains;
using hx::test::TempDir;

namespace {

std::vector<std::string> corpus_lines() {
  std::ifstream in(hx::test::data_dir() / "text" / "corpus.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

}  // namespace

TEST_CASE("byte tokenizer maps bytes to ids and round-trips any byte string", "[tokenizer]") {
  const hd::ByteTokenizer tok;
  CHECK(tok.vocab_size() == 257);
  CHECK(tok.eos_id() == 256);
  CHECK(tok.pad_id() == tok.eos_id());
  CHECK(tok.name() == "byte");

  const auto ids = tok.encode("h\xC3\xA9!");  // "hé!": é is two bytes
  CHECK(ids == std::vector<int64_t>{'h', 0xC3, 0xA9, '!'});

  const std::string text =
      GENERATE(as<std::string>{}, "", "plain", "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC",
               "\xF0\x9F\x99\x82 emoji", std::string("nul\0byte", 8), "not utf8 \xFF\xFE");
  const auto encoded = tok.encode(text);
  CHECK(encoded.size() == text.size());
  for (int64_t id : encoded) CHECK((id >= 0 && id < 256));
  CHECK(tok.decode(encoded) == text);
}

TEST_CASE("byte tokenizer decode drops EOS and rejects unknown ids", "[tokenizer]") {
  const hd::ByteTokenizer tok;
  std::vector<int64_t> ids = tok.encode("ok");
  ids.push_back(tok.eos_id());
  CHECK(tok.decode(ids) == "ok");
  CHECK_THROWS_AS(tok.decode(std::vector<int64_t>{257}), std::out_of_range);
  CHECK_THROWS_AS(tok.decode(std::vector<int64_t>{-1}), std::out_of_range);
}

TEST_CASE("SentencePiece trained from the shipped corpus round-trips it", "[tokenizer][spm]") {
  TempDir dir;
  const auto corpus = hx::test::data_dir() / "text" / "corpus.txt";
  const auto lines = corpus_lines();
  REQUIRE(lines.size() > 20);
  const auto model = hd::train_sentencepiece(corpus, dir.path() / "tiny", 200);
  REQUIRE(std::filesystem::is_regular_file(model));

  const hd::SentencePieceTokenizer tok(model);
  CHECK(tok.vocab_size() > 100);
  CHECK(tok.vocab_size() <= 200);
  CHECK(tok.eos_id() >= 0);
  CHECK(tok.pad_id() == tok.eos_id());
  CHECK(tok.processor().IsControl(int(tok.eos_id())));
  CHECK_THAT(tok.name(), Contains(model.string()));

  std::size_t characters = 0, pieces = 0;
  for (const auto& line : lines) {
    const auto ids = tok.encode(line);
    for (int64_t id : ids) REQUIRE((id >= 0 && id < tok.vocab_size()));
    INFO(line);
    CHECK(tok.decode(ids) == line);  // identity normalisation: exact round trip
    for (unsigned char c : line) characters += (c & 0xC0) != 0x80;  // UTF-8 lead bytes
    pieces += ids.size();
  }
  // A subword vocabulary must compress its own training text well below one piece per character.
  CHECK(3 * pieces < 2 * characters);

  std::vector<int64_t> with_eos = tok.encode("The reward model");
  with_eos.push_back(tok.eos_id());
  CHECK(tok.decode(with_eos) == "The reward model");
  CHECK_THROWS_AS(tok.decode(std::vector<int64_t>{tok.vocab_size()}), std::out_of_range);

  SECTION("make_tokenizer picks SentencePiece for a path and byte for \"byte\"") {
    CHECK(hd::make_tokenizer(model.string())->vocab_size() == tok.vocab_size());
    CHECK(hd::make_tokenizer("byte")->vocab_size() == 257);
  }
}

TEST_CASE("SentencePiece errors name the file", "[tokenizer][spm]") {
  TempDir dir;
  SECTION("missing model file") {
    const auto missing = dir.path() / "nope.model";
    CHECK_THROWS_WITH(hd::SentencePieceTokenizer(missing),
                      Contains("not found") && Contains(missing.string()));
    CHECK_THROWS_WITH(hd::make_tokenizer(missing.string()), Contains(missing.string()));
  }
  SECTION("a file that is not a model") {
    const auto junk = dir.write("junk.model", "this is not a protobuf");
    CHECK_THROWS_WITH(hd::SentencePieceTokenizer(junk),
                      Contains("cannot load SentencePiece model") && Contains(junk.string()));
  }
  SECTION("missing training text") {
    const auto missing = dir.path() / "no_corpus.txt";
    CHECK_THROWS_WITH(hd::train_sentencepiece(missing, dir.path() / "m", 100),
                      Contains(missing.string()));
  }
  SECTION("a model without EOS is refused") {
    hd::TrainSentencePieceOptions o;
    o.extra["eos_id"] = "-1";
    const auto model = hd::train_sentencepiece(hx::test::data_dir() / "text" / "corpus.txt",
                                               dir.path() / "m", 100, o);
    CHECK_THROWS_WITH(hd::SentencePieceTokenizer(model),
                      Contains("no EOS") && Contains(model.string()));
  }
}
