// Checkpoint files of the haf_rm trainer: a damaged file, a header out of form or another run's
// checkpoint is refused with a message that says what is wrong; the checksum's hex digits are read
// in either case; the temporaries a killed write leaves behind are removed and nothing else is.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "trainer.hpp"

namespace rm = hafrm::examples::rm;
using Catch::Matchers::Contains;
using rm::test::checkpoint_error;
using rm::test::TempDir;

TEST_CASE("a corrupt checkpoint is refused with a clear message", "[haf_rm][checkpoint]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  const auto good = dir / "good.pt";
  rm::Trainer(cfg).save_checkpoint(good);
  const std::string bytes = rm::test::read_file(good);
  // No temporary file is left behind by the atomic write.
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);

  auto load = [&](const std::string& content) {
    const auto p = dir / "bad.pt";
    rm::test::write_file(p, content);
    auto c = cfg;
    c.resume = p.string();
    return checkpoint_error([&] { rm::Trainer t(c); });
  };
  SECTION("truncated") {
    CHECK_THAT(load(bytes.substr(0, bytes.size() / 2)),
               Contains("corrupt") && Contains("truncated"));
  }
  SECTION("one flipped byte") {
    auto flipped = bytes;
    flipped[flipped.size() / 2] ^= 0x20;
    CHECK_THAT(load(flipped), Contains("corrupt") && Contains("checksum"));
  }
  SECTION("not a checkpoint") {
    CHECK_THAT(load("{\"prompt\": \"not a checkpoint\"}\n"),
               Contains("not a hafrm example checkpoint"));
  }
  SECTION("empty file") { CHECK_THAT(load(""), Contains("not a hafrm example checkpoint")); }
  SECTION("missing file") {
    auto c = cfg;
    c.resume = (dir / "nope.pt").string();
    CHECK_THAT(checkpoint_error([&] { rm::Trainer t(c); }), Contains("cannot open checkpoint"));
  }
  SECTION("header sizes that do not fit the file are corrupt, never an allocation") {
    // Each would be a std::length_error or std::bad_alloc if the reader trusted the header.
    const std::string payload = bytes.substr(bytes.find('\n') + 1);
    const std::string hash = rm::detail::hex64(rm::detail::fnv1a(payload.data(), payload.size()));
    for (const std::string size : {"-1", "1e15", "1000000000000000", "18446744073709551615",
                                   "99999999999999999999999", "0x10", "", "12 34"}) {
      CAPTURE(size);
      CHECK_THAT(
          load(std::string(rm::kCheckpointMagic) + " 1 " + size + " " + hash + "\n" + payload),
          Contains("is corrupt"));
    }
  }
  SECTION("a damaged header is corrupt") {
    const std::string payload = bytes.substr(bytes.find('\n') + 1);
    const std::string size = std::to_string(payload.size());
    const std::string magic = rm::kCheckpointMagic;
    CHECK_THAT(load(magic + " 1 " + size + " XYZ\n" + payload),
               Contains("corrupt") && Contains("hex"));
    CHECK_THAT(load(magic + " 1 " + size + "\n" + payload),
               Contains("corrupt") && Contains("fields"));
    CHECK_THAT(load(magic + " x " + size + " 0\n"), Contains("corrupt") && Contains("format"));
    CHECK_THAT(load(magic + " 1 " + std::string(200, '7')),
               Contains("corrupt") && Contains("header"));
    CHECK_THAT(load(magic + " 2 1 0000000000000000\nx"), Contains("has format 2"));
    CHECK_THAT(load(magic + "X 1 1 0000000000000000\nx"),
               Contains("not a hafrm example checkpoint"));
  }
  SECTION("the checksum's hex digits are read in either case; a non-hex digit is corrupt") {
    const std::string payload = bytes.substr(bytes.find('\n') + 1);
    const std::string size = std::to_string(payload.size());
    const std::string magic = rm::kCheckpointMagic;
    CHECK(rm::parse_checkpoint_header(magic + " 1 5 ABCDEF0123456789\n", "x").hash ==
          "abcdef0123456789");
    const std::string hash = rm::detail::hex64(rm::detail::fnv1a(payload.data(), payload.size()));
    std::string upper = hash;
    for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    std::string mixed = hash;
    for (std::size_t i = 0; i < mixed.size(); i += 2)
      mixed[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(mixed[i])));
    for (const auto& h : {upper, mixed}) {
      CAPTURE(h);
      CHECK(rm::parse_checkpoint_header(magic + " 1 " + size + " " + h + "\n", "x").hash == hash);
      const auto p = dir / "upper.pt";
      rm::test::write_file(p, magic + " 1 " + size + " " + h + "\n" + payload);
      auto c = cfg;
      c.resume = p.string();
      rm::Trainer t(c);  // loads
      CHECK(t.global_step() == 0);
      CHECK(t.resumed().has_value());
    }
    // 16 characters, one of them not a hex digit; and a valid-looking hash of the wrong payload.
    for (const char bad : {'g', 'G', 'x', '-', '+'}) {
      std::string h = upper;
      h[7] = bad;
      CAPTURE(h);
      CHECK_THAT(load(magic + " 1 " + size + " " + h + "\n" + payload),
                 Contains("corrupt") && Contains("not 16 hex digits"));
    }
    std::string wrong = upper;
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    CHECK_THAT(load(magic + " 1 " + size + " " + wrong + "\n" + payload),
               Contains("corrupt") && Contains("checksum mismatch"));
  }
  SECTION("valid header, payload that is not a torch archive") {
    const std::string payload = "definitely not a zip archive";
    const std::string header = std::string(rm::kCheckpointMagic) + " 1 " +
                               std::to_string(payload.size()) + " " +
                               rm::detail::hex64(rm::detail::fnv1a(payload.data(), payload.size()));
    CHECK_THAT(load(header + "\n" + payload), Contains("is corrupt"));
  }
}

TEST_CASE("a checkpoint of another model, tokenizer, objective or data is refused",
          "[haf_rm][checkpoint]") {
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  const auto ckpt = dir / "ckpt.pt";
  {
    rm::Trainer t(cfg);
    t.step();
    t.save_checkpoint(ckpt);
  }
  cfg.resume = ckpt.string();
  auto refused = [&](rm::TrainConfig c) { return checkpoint_error([&] { rm::Trainer t(c); }); };

  SECTION("model config") {
    auto c = cfg;
    c.model.d_model = 32;
    const auto msg = refused(c);
    CHECK_THAT(msg, Contains("does not match this run") &&
                        Contains("model.d_model: checkpoint 16, this run 32"));
  }
  SECTION("objective") {
    auto c = cfg;
    c.objective = "bt";
    const auto msg = refused(c);
    CHECK_THAT(msg, Contains("objective.objective: checkpoint \"haf\", this run \"bt\""));
    CHECK_THAT(msg, Contains("objective.weighting"));
  }
  SECTION("policy loss") {
    auto c = cfg;
    c.policy_loss = "sigmoid:beta=0.5";
    CHECK_THAT(refused(c), Contains("objective.policy_loss"));
  }
  SECTION("tokenizer") {
    const auto model = hafrm::data::train_sentencepiece(
        std::filesystem::path(HAFRM_EXAMPLES_DATA_DIR) / "text" / "corpus.txt", dir / "sp", 120);
    auto c = cfg;
    c.tokenizer = model.string();
    const auto msg = refused(c);
    CHECK_THAT(msg, Contains("tokenizer.kind: checkpoint \"byte\", this run \"sentencepiece\""));
    CHECK_THAT(msg, Contains("tokenizer.vocab_size"));
  }
  SECTION("training data") {
    auto c = cfg;
    rm::test::write_file(dir / "other.jsonl",
                         "{\"prompt\":\"cab\",\"chosen\":\"abc\",\"rejected\":\"acb\"}\n"
                         "{\"prompt\":\"fed\",\"chosen\":\"def\",\"rejected\":\"dfe\"}\n"
                         "{\"prompt\":\"hgi\",\"chosen\":\"ghi\",\"rejected\":\"gih\"}\n"
                         "{\"prompt\":\"kjl\",\"chosen\":\"jkl\",\"rejected\":\"jll\"}\n");
    c.train_path = (dir / "other.jsonl").string();
    const auto msg = refused(c);
    CHECK_THAT(msg, Contains("data.train_pairs") && Contains("data.train_fingerprint"));
  }
  SECTION("optimiser settings") {
    auto c = cfg;
    c.lr = 1e-4;
    CHECK_THAT(refused(c), Contains("optimisation.lr"));
  }
  SECTION("the same settings load") {
    rm::Trainer t(cfg);
    CHECK(t.global_step() == 1);
  }
}

TEST_CASE("stale checkpoint temporaries of dead writers are removed at start, nothing else",
          "[haf_rm][checkpoint]") {
  namespace fs = std::filesystem;
  TempDir dir;
  auto cfg = rm::test::tiny_config(dir);
  const fs::path run = cfg.out_dir;
  fs::create_directories(run);
  // Pids that are certainly dead: children we started and reaped.
  const auto dead_pid = [] {
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    REQUIRE(child > 0);
    ::waitpid(child, nullptr, 0);
    return std::to_string(child);
  };
  const std::string dead = dead_pid(), dead_dir = dead_pid();
  const std::string live = std::to_string(::getppid()), own = std::to_string(::getpid());
  const std::string tmp = "checkpoint.pt.tmp-";
  // Only the first is a stale temporary of this run's checkpoint.
  // (The run's own pid is kept by the function; a training run then writes through that name.)
  const std::vector<std::string> kept = {
      tmp + live, tmp + dead + ".bak",    tmp + "x" + dead,
      tmp,        "other.pt.tmp-" + dead, tmp + "99999999999"};  // too long to be a pid
  rm::test::write_file(run / (tmp + dead), "partial");
  for (const auto& name : kept) rm::test::write_file(run / name, "partial");
  fs::create_directory(run / (tmp + dead_dir));  // a directory, not a file we wrote: kept
  const auto expect_kept = [&] {
    for (const auto& name : kept) {
      CAPTURE(name);
      CHECK(fs::exists(run / name));
    }
    CHECK(fs::is_directory(run / (tmp + dead_dir)));
  };
  SECTION("the function") {
    const auto removed = rm::remove_stale_checkpoint_temporaries(run / "checkpoint.pt");
    REQUIRE(removed.size() == 1);
    CHECK(removed[0].filename() == "checkpoint.pt.tmp-" + dead);
    CHECK_FALSE(fs::exists(run / ("checkpoint.pt.tmp-" + dead)));
    expect_kept();
    rm::test::write_file(run / (tmp + own), "partial");
    CHECK(rm::remove_stale_checkpoint_temporaries(run / "checkpoint.pt").empty());
    CHECK(fs::exists(run / (tmp + own)));
  }
  SECTION("a training run") {
    REQUIRE(rm::Trainer(cfg).run() == 0);
    CHECK_FALSE(fs::exists(run / ("checkpoint.pt.tmp-" + dead)));
    expect_kept();
  }
  SECTION("no directory yet") {
    CHECK(rm::remove_stale_checkpoint_temporaries(dir / "absent" / "checkpoint.pt").empty());
  }
}
