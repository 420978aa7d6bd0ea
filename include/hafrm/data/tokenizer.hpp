// Tokenizers for the example trainers: a file-free byte-level tokenizer and a SentencePiece one.
//
// Both map text to int64 ids (the dtype torch::kLong wants) and share one interface, so a trainer
// takes `--tokenizer byte` or `--tokenizer path/to/m.model` and never cares which it got.
// Following the HaF-RM reference code, no BOS is ever added and the pad id is the EOS id.
//
//   #include <hafrm/data/tokenizer.hpp>
//   auto tok = hafrm::data::make_tokenizer("byte");          // or a .model path
//   std::vector<int64_t> ids = tok->encode("héllo");              // 6 byte ids, no EOS
//   ids.push_back(tok->eos_id());
//   std::string text = tok->decode(ids);                          // "héllo" (EOS dropped)
//
//   // Tests and small experiments train their own SentencePiece model from shipped text:
//   hafrm::data::train_sentencepiece("data/text/corpus.txt", "/tmp/m", 200);
//   hafrm::data::SentencePieceTokenizer sp("/tmp/m.model");
#pragma once

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace hafrm::data {

/// Text <-> id mapping used to build preference batches.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Encodes text without any special token (no BOS, no EOS): assembly appends EOS itself.
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  /// Decodes ids back to text, dropping special ids (EOS/PAD); throws std::out_of_range on an
  /// id outside [0, vocab_size()).
  virtual std::string decode(std::span<const int64_t> ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t eos_id() const = 0;
  /// Pad id; equal to eos_id() as in the reference code. Padding is masked out by labels and the
  /// attention mask, so its value never reaches a loss.
  virtual int64_t pad_id() const { return eos_id(); }
  /// Short identity ("byte", "sentencepiece:<path>") a checkpoint can store to refuse a mismatch.
  virtual std::string name() const = 0;
};

/// Bytes 0..255 are ids 0..255, id 256 is EOS (and PAD). Needs no file and round-trips any byte
/// string exactly, UTF-8 or not, at the cost of longer sequences than a subword vocabulary.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int64_t kEosId = 256;
  static constexpr int64_t kVocabSize = 257;

  std::vector<int64_t> encode(std::string_view text) const override {
    std::vector<int64_t> ids;
    ids.reserve(text.size());
    for (char c : text) ids.push_back(static_cast<unsigned char>(c));
    return ids;
  }

  std::string decode(std::span<const int64_t> ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (int64_t id : ids) {
      if (id < 0 || id >= kVocabSize) {
        throw std::out_of_range("ByteTokenizer::decode: id " + std::to_string(id) +
                                " outside [0, " + std::to_string(kVocabSize) + ")");
      }
      if (id != kEosId) text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    }
    return text;
  }

  int64_t vocab_size() const override { return kVocabSize; }
  int64_t eos_id() const override { return kEosId; }
  std::string name() const override { return "byte"; }
};

/// A SentencePiece model (.model file written by spm_train or train_sentencepiece). EOS is the
/// model's own eos id; a model trained with `--eos_id=-1` is refused because responses must end
/// with EOS. Normalisation is whatever the model was trained with (see TrainSentencePieceOptions).
class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::filesystem::path model_file)
      : path_(std::move(model_file)),
        processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
    // Check existence ourselves: sentencepiece's own message does not always say which path.
    if (!std::filesystem::is_regular_file(path_)) {
      throw std::runtime_error("SentencePiece model file not found: " + path_.string());
    }
    const auto status = processor_->Load(path_.string());
    if (!status.ok()) {
      throw std::runtime_error("cannot load SentencePiece model " + path_.string() + ": " +
                               status.ToString());
    }
    if (processor_->eos_id() < 0) {
      throw std::runtime_error("SentencePiece model " + path_.string() +
                               " has no EOS piece (trained with --eos_id=-1); responses need one");
    }
  }

  std::vector<int64_t> encode(std::string_view text) const override {
    std::vector<int> raw;
    const auto status = processor_->Encode(text, &raw);
    if (!status.ok()) throw std::runtime_error("SentencePiece encode failed: " + status.ToString());
    return {raw.begin(), raw.end()};
  }

  std::string decode(std::span<const int64_t> ids) const override {
    std::vector<int> raw;
    raw.reserve(ids.size());
    for (int64_t id : ids) {
      if (id < 0 || id >= vocab_size()) {
        throw std::out_of_range("SentencePieceTokenizer::decode: id " + std::to_string(id) +
                                " outside [0, " + std::to_string(vocab_size()) + ")");
      }
      raw.push_back(static_cast<int>(id));
    }
    std::string text;
    const auto status = processor_->Decode(raw, &text);  // control pieces (EOS, BOS) decode to ""
    if (!status.ok()) throw std::runtime_error("SentencePiece decode failed: " + status.ToString());
    return text;
  }

  int64_t vocab_size() const override { return processor_->GetPieceSize(); }
  int64_t eos_id() const override { return processor_->eos_id(); }
  std::string name() const override { return "sentencepiece:" + path_.string(); }

  const sentencepiece::SentencePieceProcessor& processor() const { return *processor_; }

 private:
  std::filesystem::path path_;
  // Behind a pointer so the tokenizer stays movable (the processor is not).
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

/// Settings for train_sentencepiece. The defaults favour exact round trips over compression:
/// identity normalisation, whitespace kept as is, no dummy prefix (so a response tokenised alone
/// and the template's " " separator stay byte-faithful), full character coverage.
struct TrainSentencePieceOptions {
  std::string model_type = "unigram";  // "unigram", "bpe", "char" or "word"
  std::string normalization_rule_name = "identity";
  bool add_dummy_prefix = false;
  bool remove_extra_whitespaces = false;
  double character_coverage = 1.0;
  bool byte_fallback = false;  // true: unseen characters become byte pieces (needs vocab > 256)
  // A few KB of text cannot fill a large vocabulary; a soft limit lets training succeed anyway.
  bool hard_vocab_limit = false;
  int num_threads = 1;
  int min_log_level = 2;  // sentencepiece logs every training step at level 0
  /// Extra trainer flags (name -> value) passed through verbatim, overriding the fields above.
  std::unordered_map<std::string, std::string> extra;
};

/// Trains a SentencePiece model on a plain-text file (one sentence per line) with the library's
/// own trainer and returns the path of the written `<model_prefix>.model` (a `.vocab` file is
/// written beside it). Throws std::runtime_error naming the input file if training fails.
inline std::filesystem::path train_sentencepiece(const std::filesystem::path& input_text_file,
                                                 const std::filesystem::path& model_prefix,
                                                 int vocab_size,
                                                 const TrainSentencePieceOptions& options = {}) {
  if (!std::filesystem::is_regular_file(input_text_file)) {
    throw std::runtime_error("SentencePiece training text not found: " + input_text_file.string());
  }
  const auto flag = [](bool b) { return std::string(b ? "true" : "false"); };
  std::unordered_map<std::string, std::string> args = {
      {"input", input_text_file.string()},
      {"model_prefix", model_prefix.string()},
      {"vocab_size", std::to_string(vocab_size)},
      {"model_type", options.model_type},
      {"normalization_rule_name", options.normalization_rule_name},
      {"add_dummy_prefix", flag(options.add_dummy_prefix)},
      {"remove_extra_whitespaces", flag(options.remove_extra_whitespaces)},
      {"character_coverage", std::to_string(options.character_coverage)},
      {"byte_fallback", flag(options.byte_fallback)},
      {"hard_vocab_limit", flag(options.hard_vocab_limit)},
      {"num_threads", std::to_string(options.num_threads)},
      {"minloglevel", std::to_string(options.min_log_level)},
  };
  for (const auto& [key, value] : options.extra) args[key] = value;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) {
    throw std::runtime_error("SentencePiece training on " + input_text_file.string() +
                             " failed: " + status.ToString());
  }
  return std::filesystem::path(model_prefix.string() + ".model");
}

/// "byte" gives a ByteTokenizer; anything else is read as a SentencePiece .model path.
inline std::unique_ptr<Tokenizer> make_tokenizer(std::string_view spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  return std::make_unique<SentencePieceTokenizer>(std::filesystem::path(spec));
}

}  // namespace hafrm::data
