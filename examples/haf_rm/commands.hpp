// commands.hpp: the haf_rm commands besides train -- eval, score and export -- each a CLI11 parser
// bound to its options struct and a run function returning the process exit code (0 done, 1 error,
// 2 usage error). cli.hpp dispatches on the first argument; train stays the default.
//
//   namespace rm = hafrm::examples::rm;
//   int rc = rm::run_eval_cli({"--model", "runs/haf_rm/model", "--data", "eval.jsonl"});
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint.hpp"
#include "cli_common.hpp"
#include "model_eval.hpp"
#include "model_score.hpp"
#include "reward_model.hpp"
#include "safetensors.hpp"

namespace hafrm::examples::rm {

// The commands, in --help order.
struct CommandInfo {
  const char* name;
  const char* summary;
};
inline const std::vector<CommandInfo>& command_list() {
  static const std::vector<CommandInfo> c = {
      {"train", "train a reward model (the default: `haf_rm [train] [OPTIONS]`)"},
      {"eval", "the trainer's accuracies of a trained model on preference files, no training"},
      {"score", "rewards for JSONL rows of a prompt and one or N responses (best-of-N ranking)"},
      {"export", "a checkpoint's weights as safetensors + config.json, for scoring anywhere"},
  };
  return c;
}

namespace cli_detail {

inline std::unique_ptr<CLI::App> command_app(const std::string& name, const std::string& what) {
  auto app = std::make_unique<CLI::App>(what + "\nEvery option also accepts --name=value.",
                                        "haf_rm " + name);
  app->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app->get_formatter()->column_width(34);
  return app;
}

// Runs `body` and turns its exceptions into the exit code 1 with "haf_rm NAME: error: ...".
template <class F>
int run_reporting(const char* name, F&& body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "haf_rm %s: error: %s\n", name, e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "haf_rm %s: error: %s\n", name, e.what());
  }
  return 1;
}

// Parses `args` into `app`; returns -1 to go on, or the exit code (0 after --help, 2 on a usage
// error, printed).
inline int parse_command(const char* name, CLI::App& app, const std::vector<std::string>& args) {
  try {
    if (parse_app(app, args)) {
      std::fputs(app.help().c_str(), stdout);
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "haf_rm %s: %s\n", name, e.what());
    return 2;
  }
  return -1;
}

}  // namespace cli_detail

// ---- eval --------------------------------------------------------------------------------------

inline std::unique_ptr<CLI::App> make_eval_app(EvalOptions& o) {
  using cli_detail::integer_in;
  auto app = cli_detail::command_app(
      "eval",
      "haf_rm eval: the trainer's preference accuracies (reward head; implicit reward where the "
      "model has a reference, i.e. a checkpoint of a run with a policy term; by kind; against the "
      "gold ordering where the records carry one) of a trained model, without training. The pairs "
      "are assembled with the model's own tokenizer, template and lengths.");
  app->add_option("--model", o.model, "export directory (haf_rm export) or checkpoint file")
      ->required();
  app->add_option("--data", o.data,
                  "preference files (JSONL, as --eval takes them), each FILE or NAME=FILE; a "
                  "split is named by NAME or the file's stem (eval.jsonl -> \"eval\")")
      ->required()
      ->expected(1, -1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--out", o.out, "write DIR/summary.json (the training run's format)");
  app->add_option("--eval-batch", o.eval_batch, "pairs per forward")
      ->transform(integer_in<int64_t>(1, 1 << 24))
      ->capture_default_str();
  app->add_flag("--skip-bad", o.skip_bad, "skip (and count) bad records instead of stopping");
  app->add_option(
      "--tokenizer", o.tokenizer,
      "a checkpoint of a SentencePiece run: its .model file, if it moved since training");
  app->add_option("--device", o.device, "cpu or cuda[:N]")->capture_default_str();
  app->add_option("--threads", o.threads, "LibTorch CPU threads (default: LibTorch's choice)")
      ->transform(integer_in<int>(1, 4096));
  return app;
}

inline int run_eval_cli(const std::vector<std::string>& args) {
  EvalOptions o;
  auto app = make_eval_app(o);
  if (const int rc = cli_detail::parse_command("eval", *app, args); rc >= 0) return rc;
  for (std::string* s : {&o.model, &o.out, &o.tokenizer, &o.device})
    cli_detail::restore_empty_value(*s);
  return cli_detail::run_reporting("eval", [&] {
    evaluate_files(o, [](const std::string& line) { std::printf("%s\n", line.c_str()); });
    return 0;
  });
}

// ---- score -------------------------------------------------------------------------------------

inline std::unique_ptr<CLI::App> make_score_app(ScoreFileOptions& o) {
  using cli_detail::integer_in;
  auto app = cli_detail::command_app(
      "score",
      "haf_rm score: the reward of each response, for JSONL rows {\"prompt\": P, \"response\": R} "
      "(written back with \"score\") or {\"prompt\": P, \"responses\": [R, ...]} (written back "
      "with \"scores\", \"ranking\": indices best first, and \"best\": ranking[0]); P and R are "
      "strings or TRL message lists (a response's last message has role assistant). Every input "
      "field is kept. A response is assembled as training assembles a pair's chosen side: the "
      "prompt keeps its last max_prompt_length tokens, the response is cut so that response + EOS "
      "fits max_length (the truncated responses are counted and reported). Ties: equal scores "
      "keep input order (the lower index ranks first and is best). Scores are (r - mean) / std "
      "when the model stores a normalisation (export --normalize), raw rewards with --raw. The "
      "output is written to a temporary file and renamed: a bad row (reported with file, line and "
      "field) leaves no output.");
  app->add_option("--model", o.model, "export directory (haf_rm export) or checkpoint file")
      ->required();
  app->add_option("--input", o.input, "JSONL rows to score")->required();
  app->add_option("--output", o.output, "JSONL out: each input row plus its scores")->required();
  app->add_flag("--raw", o.raw, "the reward head's raw output, without the stored normalisation");
  app->add_option("--batch-tokens", o.batch_tokens,
                  "at most this many tokens (rows x longest row) per forward")
      ->transform(integer_in<int64_t>(1, int64_t{1} << 40))
      ->capture_default_str();
  app->add_option("--batch-sequences", o.batch_sequences, "at most this many rows per forward")
      ->transform(integer_in<int64_t>(1, 1 << 24))
      ->capture_default_str();
  // For throughput comparisons only (bench/README.md): batches in input order, padded.
  app->add_flag_callback("--no-bucket", [&o] { o.bucket_by_length = false; })->group("");
  app->add_option(
      "--tokenizer", o.tokenizer,
      "a checkpoint of a SentencePiece run: its .model file, if it moved since training");
  app->add_option("--device", o.device, "cpu or cuda[:N]")->capture_default_str();
  app->add_option("--threads", o.threads, "LibTorch CPU threads (default: LibTorch's choice)")
      ->transform(integer_in<int>(1, 4096));
  app->add_option("--progress", o.progress, "a progress bar on a terminal (auto), always, never")
      ->check(CLI::IsMember({"auto", "bar", "none"}))
      ->capture_default_str();
  return app;
}

inline int run_score_cli(const std::vector<std::string>& args) {
  ScoreFileOptions o;
  auto app = make_score_app(o);
  if (const int rc = cli_detail::parse_command("score", *app, args); rc >= 0) return rc;
  for (std::string* s : {&o.model, &o.input, &o.output, &o.tokenizer, &o.device, &o.progress})
    cli_detail::restore_empty_value(*s);
  return cli_detail::run_reporting("score", [&] {
    score_file(o, [](const std::string& line) { std::printf("%s\n", line.c_str()); });
    return 0;
  });
}

// ---- export ------------------------------------------------------------------------------------

struct ExportCli {
  std::string checkpoint, out, normalize, tokenizer;
  int threads = 0;
};

inline std::unique_ptr<CLI::App> make_export_app(ExportCli& o) {
  using cli_detail::integer_in;
  auto app = cli_detail::command_app(
      "export",
      "haf_rm export: a checkpoint's weights (no optimizer state) as DIR/model.safetensors, with "
      "DIR/config.json holding what scoring needs (model shape, tokenizer, template, lengths, "
      "readout, normalisation) and the SentencePiece model copied to DIR/tokenizer.model. DIR is "
      "written under a temporary name and renamed into place.");
  app->add_option("--checkpoint", o.checkpoint, "checkpoint file of a haf_rm run")->required();
  app->add_option("--out", o.out,
                  "export directory (created; an existing export there is replaced, anything "
                  "else is refused)")
      ->required();
  app->add_option("--normalize", o.normalize,
                  "preference FILE: store the mean and std of the reward over every response in "
                  "it (chosen and rejected); scores are then (r - mean) / std (score --raw skips "
                  "it)");
  app->add_option("--tokenizer", o.tokenizer,
                  "a SentencePiece run: its .model file, if it moved since training");
  app->add_option("--threads", o.threads, "LibTorch CPU threads (default: LibTorch's choice)")
      ->transform(integer_in<int>(1, 4096));
  return app;
}

inline int run_export_cli(const std::vector<std::string>& args) {
  ExportCli c;
  auto app = make_export_app(c);
  if (const int rc = cli_detail::parse_command("export", *app, args); rc >= 0) return rc;
  for (std::string* s : {&c.checkpoint, &c.out, &c.normalize, &c.tokenizer})
    cli_detail::restore_empty_value(*s);
  return cli_detail::run_reporting("export", [&] {
    if (c.threads > 0) torch::set_num_threads(c.threads);
    ExportOptions o;
    o.checkpoint = c.checkpoint, o.out = c.out, o.normalize = c.normalize;
    o.tokenizer = c.tokenizer;
    const ModelSpec s = export_reward_model(o);
    const std::string step = s.training.contains("step") ? s.training.at("step").dump() : "?";
    std::printf("exported %s (objective %s, step %s) to %s", c.checkpoint.c_str(),
                s.objective.c_str(), step.c_str(), c.out.c_str());
    if (s.normalization)
      std::printf("; normalisation mean %.6g std %.6g over %lld responses", s.normalization->mean,
                  s.normalization->std, static_cast<long long>(s.normalization->count));
    std::printf("\n");
    return 0;
  });
}

}  // namespace hafrm::examples::rm
