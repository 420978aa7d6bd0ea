// The trained model's lifecycle after training: the subcommands (train stays the default), export
// (safetensors + config.json, weights equal after loading, normalisation), eval (the training
// run's own figures from the checkpoint and from the export), and every damaged or mismatched
// model directory or checkpoint refused with the file and the field named.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.hpp"
#include "commands.hpp"
#include "model_eval.hpp"
#include "reward_model.hpp"
#include "safetensors.hpp"
#include "test_util.hpp"
#include "trainer.hpp"

namespace fs = std::filesystem;
namespace rm = hafrm::examples::rm;
using Catch::Matchers::Contains;
using rm::test::TempDir;

namespace {

// A finished tiny training run in dir/run (checkpoint.pt, summary.json).
rm::TrainConfig trained_run(const TempDir& dir, const std::string& objective = "haf") {
  auto cfg = rm::test::tiny_config(dir);
  cfg.objective = objective;
  cfg.steps = 10;
  rm::Trainer t(cfg);
  REQUIRE(t.run() == 0);
  return cfg;
}

using rm::test::error_of;

nlohmann::json read_json(const fs::path& p) {
  return nlohmann::json::parse(rm::test::read_file(p));
}

void write_json(const fs::path& p, const nlohmann::json& j) { rm::test::write_file(p, j.dump(2)); }

// A safetensors file from a header and a data buffer, byte for byte.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  std::string out(reinterpret_cast<const char*>(&n), sizeof n);
  return out + header + data;
}

bool no_leftovers(const fs::path& dir, const std::string& stem) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().starts_with(stem + ".")) return false;
  return true;
}

}  // namespace

TEST_CASE("train is the default command and the other commands parse their own options",
          "[haf_rm][lifecycle][cli]") {
  TempDir dir;
  rm::test::write_tiny_splits(dir.path(), 12, 8);
  const std::vector<std::string> args = {"--train",      (dir / "train.jsonl").string(),
                                         "--eval",       (dir / "eval.jsonl").string(),
                                         "--ood",        "",
                                         "--d-model=16", "--layers=1",
                                         "--heads=2",    "--d-ff=32",
                                         "--batch-size", "4",
                                         "--steps",      "3",
                                         "--threads",    "1",
                                         "--progress",   "none",
                                         "--log-every",  "1"};
  auto plain = args, named = args;
  plain.insert(plain.end(), {"--out", (dir / "a").string()});
  named.insert(named.begin(), "train");
  named.insert(named.end(), {"--out", (dir / "b").string()});
  REQUIRE(rm::run_cli(plain) == 0);
  REQUIRE(rm::run_cli(named) == 0);
  // The same run either way: same losses, same final accuracy.
  CHECK(rm::test::train_losses(dir / "a" / "metrics.jsonl") ==
        rm::test::train_losses(dir / "b" / "metrics.jsonl"));
  CHECK(read_json(dir / "a" / "summary.json")["eval"] ==
        read_json(dir / "b" / "summary.json")["eval"]);

  const std::string usage = rm::usage();
  CHECK_THAT(usage, Contains("Commands") && Contains("eval") && Contains("export") &&
                        Contains("train is the default"));
  CHECK(rm::run_cli({"train", "--help"}) == 0);
  CHECK(rm::run_cli({"eval", "--help"}) == 0);
  CHECK(rm::run_cli({"export", "--help"}) == 0);
  CHECK(rm::run_cli({"frobnicate"}) == 2);                      // an unknown command
  CHECK(rm::run_cli({"eval", "--data", "x.jsonl"}) == 2);       // --model is required
  CHECK(rm::run_cli({"export", "--checkpoint", "c.pt"}) == 2);  // --out is required
  CHECK(rm::run_cli({"eval", "--model", "m", "--data", "x", "--steps", "3"}) == 2);  // train's
  CHECK(rm::run_cli({"eval", "--model", (dir / "none").string(), "--data", "x"}) == 1);

  rm::EvalOptions o;
  auto app = rm::make_eval_app(o);
  REQUIRE_FALSE(
      rm::cli_detail::parse_app(*app, {"--model", "m", "--data", "a/eval.jsonl", "ood=b/x.jsonl",
                                       "--data", "c/eval.jsonl", "--eval-batch=7"}));
  CHECK(o.data.size() == 3);
  CHECK(o.eval_batch == 7);
  const auto names = rm::eval_split_names(o.data);
  CHECK(names[0] == std::pair<std::string, std::string>{"eval", "a/eval.jsonl"});
  CHECK(names[1] == std::pair<std::string, std::string>{"ood", "b/x.jsonl"});
  CHECK(names[2].first == "eval-2");
  CHECK_THROWS_WITH(rm::eval_split_names({"model=x.jsonl"}), Contains("reserved"));
  CHECK(rm::eval_split_names({"model.jsonl"})[0].first == "model-2");
}

TEST_CASE("safetensors: written tensors read back equal; a damaged file names what is wrong",
          "[haf_rm][lifecycle][safetensors]") {
  TempDir dir;
  const auto path = dir / "t.safetensors";
  torch::manual_seed(1);
  const auto a = torch::randn({3, 5}), b = torch::randn({7}), c = torch::randn({0, 2});
  rm::write_safetensors(path, {{"a", a}, {"b", b.to(torch::kDouble)}, {"c", c}},
                        {{"format", "pt"}});
  const std::string bytes = rm::test::read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);  // the header is padded to a multiple of 8
  const auto f = rm::read_safetensors(path);
  CHECK(f.metadata.at("format") == "pt");
  REQUIRE(f.tensors.size() == 3);
  CHECK(torch::equal(f.at("a"), a));
  CHECK(torch::equal(f.at("b"), b));  // stored as F32
  CHECK(f.at("c").sizes() == c.sizes());

  const auto refused = [&](const std::string& content) {
    rm::test::write_file(path, content);
    return error_of([&] { rm::read_safetensors(path); });
  };
  const std::string data8(8, '\0');
  SECTION("truncated") {
    const auto msg = refused(bytes.substr(0, bytes.size() - 5));
    CHECK_THAT(msg, Contains(path.string()) && Contains("tensor") && Contains("truncated"));
    CHECK_THAT(refused(bytes.substr(0, 20)), Contains("header size") && Contains("exceeds"));
    CHECK_THAT(refused(bytes.substr(0, 5)), Contains("fewer than the 8-byte header size"));
  }
  SECTION("header not JSON, or not an object") {
    CHECK_THAT(refused(safetensors_bytes("{\"a\": ", data8)), Contains("not valid JSON"));
    CHECK_THAT(refused(safetensors_bytes("[1, 2]  ", data8)), Contains("not a JSON object"));
  }
  SECTION("a dtype other than F32") {
    CHECK_THAT(refused(safetensors_bytes(
                   R"({"w":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", data8)),
               Contains("tensor 'w' has dtype F16"));
  }
  SECTION("a shape that does not match its offsets") {
    CHECK_THAT(refused(safetensors_bytes(
                   R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8)),
               Contains("tensor 'w'") && Contains("needs 3 x 4"));
    CHECK_THAT(refused(safetensors_bytes(
                   R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8)),
               Contains("tensor 'w'") && Contains("'shape'"));
  }
  SECTION("overlapping, holed or short offsets") {
    CHECK_THAT(refused(safetensors_bytes(R"({"v":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                         R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                         data8)),
               Contains("overlaps"));
    CHECK_THAT(refused(safetensors_bytes(
                   R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data8)),
               Contains("belong to no tensor"));
    CHECK_THAT(refused(safetensors_bytes(
                   R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data8)),
               Contains("tensors cover 4"));
    CHECK_THAT(refused(safetensors_bytes(
                   R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", data8)),
               Contains("reversed"));
  }
}

TEST_CASE("export writes the weights and config.json; loading gives back the same weights",
          "[haf_rm][lifecycle][export]") {
  TempDir dir;
  const auto cfg = trained_run(dir);
  const auto ckpt = dir / "run" / "checkpoint.pt";
  const auto out = dir / "model";
  REQUIRE(rm::run_cli({"export", "--checkpoint", ckpt.string(), "--out", out.string()}) == 0);
  CHECK(no_leftovers(dir.path(), "model"));
  CHECK(fs::exists(out / "model.safetensors"));
  CHECK_FALSE(fs::exists(out / "tokenizer.model"));  // byte tokenizer: no file

  const auto j = read_json(out / "config.json");
  CHECK(j["format"] == "hafrm-reward-model");
  CHECK(j["format_version"] == 1);
  CHECK(j["hafrm_version"] == rm::hafrm_version());
  CHECK(j["model"]["d_model"] == cfg.model.d_model);
  CHECK(j["model"]["vocab_size"] == 257);
  CHECK(j["tokenizer"] == nlohmann::json{{"kind", "byte"}});
  CHECK(j["eos_id"] == 256);
  CHECK(j["pad_id"] == 256);
  CHECK(j["template"]["name"] == "phi");
  CHECK(j["template"]["prompt_format"] == "Instruct: {prompt}\nOutput:");
  CHECK(j["assembly"] == nlohmann::json{{"max_length", cfg.max_length},
                                        {"max_prompt_length", cfg.max_prompt_length},
                                        {"truncation", "keep_eos"}});
  CHECK(j["readout"] == "last_non_pad");
  CHECK(j["objective"] == "haf");
  CHECK(j["score"] == "reward_head");
  CHECK(j["normalization"].is_null());
  CHECK(j["training"]["step"] == cfg.steps);

  // Exactly the model's parameters, under LibTorch's names, in F32.
  const auto st = rm::read_safetensors(out / "model.safetensors");
  CHECK(st.metadata.at("format") == "pt");
  auto from_ckpt = rm::load_reward_model(ckpt);
  const auto params = from_ckpt.model->named_parameters();
  REQUIRE(st.tensors.size() == params.size());
  for (const auto& t : st.tensors) {
    CAPTURE(t.name);
    REQUIRE(params.contains(t.name));
    CHECK(torch::equal(t.tensor, params[t.name]));
  }
  auto from_export = rm::load_reward_model(out);
  CHECK(from_export.from_export);
  CHECK_FALSE(from_export.reference);  // weights only
  CHECK(rm::test::same_parameters(from_export.model, from_ckpt.model));
  CHECK(from_ckpt.reference);  // a haf checkpoint keeps its reference

  SECTION("a second export replaces the first; anything else at --out is refused") {
    REQUIRE(rm::run_cli({"export", "--checkpoint", ckpt.string(), "--out", out.string()}) == 0);
    CHECK(no_leftovers(dir.path(), "model"));
    fs::create_directories(dir / "busy");
    rm::test::write_file(dir / "busy" / "notes.txt", "keep me");
    rm::ExportOptions o;
    o.checkpoint = ckpt, o.out = dir / "busy";
    CHECK_THAT(error_of([&] { rm::export_reward_model(o); }),
               Contains("not a haf_rm export directory"));
    CHECK(rm::test::read_file(dir / "busy" / "notes.txt") == "keep me");
    CHECK(no_leftovers(dir.path(), "busy"));
  }
  SECTION("a failed export leaves nothing behind") {
    rm::ExportOptions o;
    o.checkpoint = ckpt, o.out = dir / "failed", o.normalize = (dir / "missing.jsonl").string();
    CHECK_THROWS(rm::export_reward_model(o));
    CHECK_FALSE(fs::exists(dir / "failed"));
    CHECK(no_leftovers(dir.path(), "failed"));
  }
}

TEST_CASE("export --normalize stores the reward's mean and std over every response of a file",
          "[haf_rm][lifecycle][export]") {
  TempDir dir;
  trained_run(dir);
  const auto ckpt = dir / "run" / "checkpoint.pt";
  REQUIRE(rm::run_cli({"export", "--checkpoint", ckpt.string(), "--out", (dir / "m").string(),
                       "--normalize", (dir / "eval.jsonl").string()}) == 0);
  const auto n = read_json(dir / "m" / "config.json")["normalization"];

  // The same statistics from the trainer's own pair forward: chosen and rejected rewards.
  auto m = rm::load_reward_model(ckpt);
  const auto split =
      rm::load_split("eval", (dir / "eval.jsonl").string(), *m.tokenizer, m.spec.assembly, false);
  std::vector<int64_t> all(split.pairs.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  torch::NoGradGuard ng;
  auto f = hafrm::forward_pair(m.model, rm::make_batch(split, all, m.spec.pad_id, torch::kCPU),
                               m.forward_options());
  const auto r = torch::cat({f.rewards.chosen, f.rewards.rejected}).to(torch::kDouble);
  REQUIRE(n["count"] == 2 * split.pairs.size());
  CHECK(n["mean"].get<double>() == Approx(r.mean().item<double>()).epsilon(1e-5));
  CHECK(n["std"].get<double>() == Approx(r.std(false).item<double>()).epsilon(1e-3));
  CHECK(rm::load_reward_model(dir / "m").spec.normalization->count == n["count"]);
}

TEST_CASE("eval of the checkpoint and of its export gives the training run's final figures",
          "[haf_rm][lifecycle][eval]") {
  TempDir dir;
  trained_run(dir);
  const auto ckpt = dir / "run" / "checkpoint.pt";
  REQUIRE(rm::run_cli({"export", "--checkpoint", ckpt.string(), "--out", (dir / "m").string()}) ==
          0);
  const auto trained = read_json(dir / "run" / "summary.json");
  const std::vector<std::string> data = {(dir / "eval.jsonl").string(),
                                         (dir / "ood.jsonl").string()};
  std::vector<std::string> args = {
      "eval",      "--model", ckpt.string(), "--data",
      data[0],     data[1],   "--out",       (dir / "ev_ckpt").string(),
      "--threads", "1"};
  REQUIRE(rm::run_cli(args) == 0);
  args[2] = (dir / "m").string(), args[7] = (dir / "ev_export").string();
  REQUIRE(rm::run_cli(args) == 0);
  const auto from_ckpt = read_json(dir / "ev_ckpt" / "summary.json");
  const auto from_export = read_json(dir / "ev_export" / "summary.json");
  for (const char* key : {"objective", "score", "seed", "steps", "identity"}) {
    CAPTURE(key);
    CHECK(from_ckpt[key] == trained[key]);
    CHECK(from_export[key] == trained[key]);
  }
  for (const char* split : {"eval", "ood"}) {
    CAPTURE(split);
    // The checkpoint holds the reference too: every figure, the implicit reward's included.
    CHECK(from_ckpt[split] == trained[split]);
    // The export holds the weights only: the reward head's figures, no implicit reward.
    auto expected = trained[split];
    expected.erase("implicit_acc");
    for (auto& [k, v] : expected["by_kind"].items()) v.erase("implicit_acc");
    CHECK(from_export[split] == expected);
    CHECK_FALSE(from_export[split].contains("implicit_acc"));
  }
}

TEST_CASE("a model directory or checkpoint that does not fit is refused naming file and field",
          "[haf_rm][lifecycle][export]") {
  TempDir dir;
  trained_run(dir);
  const auto ckpt = dir / "run" / "checkpoint.pt";
  const auto good = dir / "good";
  rm::ExportOptions eo;
  eo.checkpoint = ckpt, eo.out = good;
  rm::export_reward_model(eo);
  const auto bad = dir / "bad";
  fs::copy(good, bad);
  const auto config = bad / "config.json", weights = bad / "model.safetensors";
  const auto cfg = read_json(good / "config.json");
  const auto load = [&] { return error_of([&] { rm::load_reward_model(bad); }); };

  SECTION("truncated weights") {
    const auto bytes = rm::test::read_file(good / "model.safetensors");
    rm::test::write_file(weights, bytes.substr(0, bytes.size() - 100));
    CHECK_THAT(load(), Contains(weights.string()) && Contains("truncated"));
  }
  SECTION("config.json not JSON") {
    rm::test::write_file(config, "{\"format\": ");
    CHECK_THAT(load(), Contains(config.string()) && Contains("not valid JSON"));
  }
  SECTION("config.json missing") {
    fs::remove(config);
    CHECK_THAT(load(), Contains(config.string()) && Contains("not a haf_rm export"));
  }
  SECTION("unknown format_version") {
    auto c = cfg;
    c["format_version"] = 2;
    write_json(config, c);
    CHECK_THAT(load(), Contains(config.string()) && Contains("'format_version' is 2") &&
                           Contains("reads format_version 1"));
  }
  SECTION("another format") {
    auto c = cfg;
    c["format"] = "something-else";
    write_json(config, c);
    CHECK_THAT(load(), Contains("field 'format'"));
  }
  SECTION("a field of the wrong type or value") {
    auto c = cfg;
    c["model"]["d_model"] = "16";
    write_json(config, c);
    CHECK_THAT(load(), Contains("field 'model.d_model'") && Contains("expected an integer"));
    c = cfg;
    c["readout"] = "first_token";
    write_json(config, c);
    CHECK_THAT(load(), Contains("field 'readout'") && Contains("last_non_pad"));
    c = cfg;
    c["template"]["prompt_format"] = "no placeholder";
    write_json(config, c);
    CHECK_THAT(load(), Contains("field 'template.prompt_format'") && Contains("{prompt}"));
    c = cfg;
    c.erase("normalization");
    write_json(config, c);
    CHECK_THAT(load(), Contains("field 'normalization' is missing"));
    c = cfg;
    c["normalization"] = {{"mean", 0.0}, {"std", 0.0}, {"count", 10}};
    write_json(config, c);
    CHECK_THAT(load(), Contains("field 'normalization.std'"));
  }
  SECTION("weights of another config (a wider model)") {
    auto c = cfg;
    c["model"]["d_ff"] = c["model"]["d_ff"].get<int64_t>() * 2;
    write_json(config, c);
    CHECK_THAT(load(), Contains(weights.string()) && Contains("has shape") && Contains("expects"));
  }
  SECTION("a vocabulary the tokenizer does not have") {
    auto c = cfg;
    c["model"]["vocab_size"] = 300;
    write_json(config, c);
    CHECK_THAT(load(), Contains("'model.vocab_size'") && Contains("257"));
  }
  SECTION("a missing or an extra tensor") {
    auto st = rm::read_safetensors(good / "model.safetensors");
    auto missing = st.tensors;
    missing.pop_back();  // in offset order: the last is score.bias
    rm::write_safetensors(weights, missing, st.metadata);
    CHECK_THAT(load(), Contains(weights.string()) && Contains("tensor 'score.bias' is missing"));
    auto extra = st.tensors;
    extra.push_back({"value_head.weight", torch::zeros({2})});
    rm::write_safetensors(weights, extra, st.metadata);
    CHECK_THAT(load(), Contains("tensor 'value_head.weight' is not a parameter"));
  }
  SECTION("a damaged or foreign checkpoint") {
    auto bytes = rm::test::read_file(ckpt);
    bytes[bytes.size() / 2] ^= 0x20;
    rm::test::write_file(dir / "flipped.pt", bytes);
    CHECK_THAT(error_of([&] { rm::load_reward_model(dir / "flipped.pt"); }),
               Contains("flipped.pt") && Contains("checksum"));
    rm::test::write_file(dir / "text.pt", "not a checkpoint");
    CHECK_THAT(error_of([&] { rm::load_reward_model(dir / "text.pt"); }), Contains("text.pt"));
    CHECK_THAT(error_of([&] { rm::load_reward_model(dir / "nothing"); }),
               Contains("no such model directory or checkpoint"));
  }
  SECTION("a dpo checkpoint is not exported: its score is not the reward head") {
    TempDir d2;
    trained_run(d2, "dpo");
    rm::ExportOptions o;
    o.checkpoint = d2 / "run" / "checkpoint.pt", o.out = d2 / "m";
    CHECK_THAT(error_of([&] { rm::export_reward_model(o); }), Contains("--objective dpo"));
    CHECK_FALSE(fs::exists(d2 / "m"));
  }
}

TEST_CASE("a SentencePiece model is copied into the export and checked against the checkpoint",
          "[haf_rm][lifecycle][export]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  const auto spm = hafrm::data::train_sentencepiece(
      fs::path(HAFRM_EXAMPLES_DATA_DIR) / "text" / "corpus.txt", dir / "sp", 120);
  cfg.tokenizer = spm.string();
  cfg.steps = 2;
  REQUIRE(rm::Trainer(cfg).run() == 0);
  const auto ckpt = dir / "run" / "checkpoint.pt";
  rm::ExportOptions o;
  o.checkpoint = ckpt, o.out = dir / "m";
  rm::export_reward_model(o);
  CHECK(rm::test::read_file(dir / "m" / "tokenizer.model") == rm::test::read_file(spm));
  CHECK(read_json(dir / "m" / "config.json")["tokenizer"] ==
        nlohmann::json{{"kind", "sentencepiece"}, {"file", "tokenizer.model"}});
  auto m = rm::load_reward_model(dir / "m");
  CHECK(m.tokenizer->vocab_size() == m.spec.model.vocab_size);

  // The checkpoint names its SentencePiece model; another file is refused by its fingerprint.
  const auto other = hafrm::data::train_sentencepiece(
      fs::path(HAFRM_EXAMPLES_DATA_DIR) / "text" / "corpus.txt", dir / "sp2", 100);
  rm::LoadOptions lo;
  lo.tokenizer = other.string();
  CHECK_THAT(error_of([&] { rm::load_reward_model(ckpt, lo); }),
             Contains("model_file_fnv1a") && Contains("not the one it was trained with"));
  fs::rename(spm, dir / "moved.model");
  CHECK_THAT(error_of([&] { rm::load_reward_model(ckpt); }), Contains("pass --tokenizer"));
  lo.tokenizer = (dir / "moved.model").string();
  CHECK(rm::load_reward_model(ckpt, lo).tokenizer->vocab_size() == m.spec.model.vocab_size);
}
