// cli.hpp: the haf_rm command line (main.cpp is one call to run_cli; tests call it too).
//
// `haf_rm [COMMAND] [OPTIONS]`: the first argument picks the command (commands.hpp: eval,
// export, ...); without one, or with `train`, the options below train, so every training
// command line reads as it always has. Every training option is declared once, in make_app(),
// with its type, range or choices and help text; CLI11 parses (both "--name value" and
// "--name=value") and generates --help from the same declarations, numbers through the
// validators of cli_common.hpp. Just over 400 lines because every option is declared here, once.
//
//   std::vector<std::string> args = {"--objective", "bt", "--steps", "100"};
//   int rc = hafrm::examples::rm::run_cli(args);          // same as {"train", "--objective", ...}
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cli_common.hpp"
#include "commands.hpp"
#include "trainer.hpp"

namespace hafrm::examples::rm {

namespace cli_detail {

// Thrown by --list-losses, so that run_cli prints the catalogue instead of training.
struct ListLosses {};

// The --help footer: every command.
inline std::string commands_footer() {
  std::string s = "\nCommands (the first argument; train is the default):\n";
  for (const auto& c : command_list()) {
    std::string name = c.name;
    name.resize(8, ' ');
    s += "  " + name + c.summary + "\n";
  }
  return s + "`haf_rm COMMAND --help` lists a command's options.";
}

}  // namespace cli_detail

// The training command line, bound to `c`: parsing writes straight into it.
inline std::unique_ptr<CLI::App> make_app(TrainConfig& c) {
  using cli_detail::integer_in;
  using cli_detail::kMaxI64;
  using cli_detail::real_in;
  auto app = std::make_unique<CLI::App>(
      "haf_rm [train]: train a reward model the HaF-RM way (shared backbone, reward head + LM "
      "head).\nEvery option also accepts --name=value.",
      "haf_rm");
  app->footer(cli_detail::commands_footer());
  // Later occurrences win (a script may append an override).
  app->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app->get_formatter()->column_width(36);
  const auto choice = [](std::vector<std::string> names) { return CLI::IsMember(names); };

  app->add_option("--objective", c.objective,
                  "bt: reward loss only (alpha 0); haf: hybrid, w_R 1, alpha 0.2, beta 0.1; "
                  "dpo: policy loss only, scored by the implicit reward beta*(logp - logp_ref); "
                  "lm: pre-training, next-token loss over every token of text, prompt/response "
                  "or preference rows (both sides); sft: next-token loss over the responses "
                  "given their prompts (the chosen side of preference rows)")
      ->check(choice({"bt", "haf", "dpo", "lm", "sft"}))
      ->capture_default_str()
      ->group("objective");
  app->add_flag_callback(
         "--list-losses", [] { throw cli_detail::ListLosses{}; },
         "print every loss and weighting a SPEC may name, with parameters, defaults, ranges and "
         "formulas, then exit")
      ->group("objective");
  app->add_option("--reward-loss", c.reward_loss,
                  "SPEC, default \"bt\" (e.g. \"bt:center=0.01\", \"hinge:margin=1\")")
      ->group("objective");
  app->add_option("--policy-loss", c.policy_loss,
                  "SPEC, default \"sigmoid:beta=0.1\" (e.g. \"ipo:beta=0.5\", \"simpo\", \"nll\")")
      ->group("objective");
  app->add_option("--weighting", c.weighting,
                  "SPEC, default from --objective (e.g. \"constant:reward=1,alpha=0.2\", "
                  "\"alternate:period=10\", \"warmup:steps=200\")")
      ->group("objective");
  app->add_option("--readout", c.readout,
                  "reward read-out; last-position is what the HaF reference code reads")
      ->check(choice({"last-token", "last-position"}))
      ->capture_default_str()
      ->group("objective");
  app->add_option("--reference", c.reference,
                  "reference log-probs computed once from the frozen initial weights "
                  "(precompute) or by a frozen model on every step (model)")
      ->check(choice({"precompute", "model"}))
      ->capture_default_str()
      ->group("objective");

  const char* split_help =
      "JSONL preference file: text {\"prompt\",\"chosen\",\"rejected\"} or pre-tokenized "
      "{\"prompt_ids\",\"chosen_ids\",\"rejected_ids\"}; \"\" = no such split";
  app->add_option("--train", c.train_path, split_help)->capture_default_str()->group("data");
  app->add_option("--eval", c.eval_path, split_help)->capture_default_str()->group("data");
  app->add_option("--ood", c.ood_path, split_help)->capture_default_str()->group("data");
  app->add_flag("--skip-bad", c.skip_bad,
                "skip (and count) bad records instead of stopping at the first")
      ->group("data");
  app->add_option("--tokenizer", c.tokenizer, "byte (byte-level) or a SentencePiece FILE.model")
      ->capture_default_str()
      ->group("data");
  app->add_option("--template", c.prompt_template,
                  "prompt template; phi: \"Instruct: {x}\\nOutput:\" + \" {y}\"")
      ->check(choice({"phi", "mistral", "raw"}))
      ->capture_default_str()
      ->group("data");
  app->add_option("--max-length", c.max_length, "prompt + response + EOS tokens")
      ->transform(integer_in<int64_t>(2, 1 << 20))
      ->capture_default_str()
      ->group("data");
  app->add_option("--max-prompt-length", c.max_prompt_length,
                  "prompt tokens kept, from its end (< --max-length)")
      ->transform(integer_in<int64_t>(1, 1 << 20))
      ->capture_default_str()
      ->group("data");

  app->add_option("--layers", c.model.n_layers, "transformer blocks")
      ->transform(integer_in<int64_t>(1, 1024))
      ->capture_default_str()
      ->group("model");
  app->add_option("--d-model", c.model.d_model, "width (divisible by --heads)")
      ->transform(integer_in<int64_t>(1, 1 << 16))
      ->capture_default_str()
      ->group("model");
  app->add_option("--heads", c.model.n_heads, "attention heads")
      ->transform(integer_in<int64_t>(1, 1024))
      ->capture_default_str()
      ->group("model");
  app->add_option("--d-ff", c.model.d_ff, "feed-forward width")
      ->transform(integer_in<int64_t>(1, 1 << 20))
      ->capture_default_str()
      ->group("model");
  app->add_option("--dropout", c.model.dropout, "dropout probability")
      ->transform(real_in(kDropoutRange))
      ->capture_default_str()
      ->group("model");
  app->add_option("--positions", c.model.positions, "position encoding")
      ->check(choice({"rope", "alibi"}))
      ->capture_default_str()
      ->group("model");
  app->add_option("--logprob-backend", c.logprob_backend,
                  "fused kernels, or the unfused LibTorch reference (log_softmax + gather), for "
                  "timing comparisons; both give the same numbers")
      ->check(choice({"fused", "reference"}))
      ->capture_default_str()
      ->group("model");
  app->add_option("--init-from", c.init_from,
                  "start from a trained model's backbone and LM head (a checkpoint.pt, e.g. of "
                  "--objective lm, or an export directory) with a fresh zero reward head; the "
                  "frozen reference is the loaded model. Its tokenizer and shapes must be this "
                  "run's")
      ->group("model");
  app->add_flag("--checkpoint-activations", c.model.checkpoint_activations,
                "recompute each transformer block in the backward instead of storing its "
                "activations: less memory, one more forward of every block per step; the same "
                "gradients (dropout masks are replayed)")
      ->group("model");
  // --logits turns the fused LM head off.
  app->add_flag_callback(
         "--logits", [&c] { c.model.fused_lm_head = false; },
         "return full logits (default: LM-head input + weight, so the library's fused linear -> "
         "log-prob path never stores the logits)")
      ->group("model");

  app->add_option("--steps", c.steps, "optimizer steps")
      ->transform(integer_in<int64_t>(0, kMaxI64))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--batch-size", c.batch_size, "pairs per micro-batch")
      ->transform(integer_in<int64_t>(1, 1 << 24))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--grad-accum", c.grad_accum, "micro-batches per step")
      ->transform(integer_in<int64_t>(1, 1 << 24))
      ->capture_default_str()
      ->group("optimisation");
  app->add_flag("--packing", c.packing,
                "padding-free micro-batches: the pairs' sequences end to end in rows of the "
                "training split's longest sequence, attention kept inside each sequence; the "
                "same training as padded batches, to float round-off")
      ->group("optimisation");
  app->add_option("--pack-tokens", c.pack_tokens,
                  "with --packing, a token budget per micro-batch: the step's --batch-size x "
                  "--grad-accum pairs are cut into micro-batches of at most this many tokens "
                  "(0: each --batch-size micro-batch as it is)")
      ->transform(integer_in<int64_t>(0, 1 << 30))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--lr", c.lr, "AdamW learning rate")
      ->transform(real_in(kLrRange))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--weight-decay", c.weight_decay, "AdamW weight decay")
      ->transform(real_in(kWeightDecayRange))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--adam-eps", c.adam_eps, "AdamW epsilon")
      ->transform(real_in(kAdamEpsRange))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--clip", c.clip, "gradient-norm clip, <= 0 off")
      ->transform(real_in(kClipRange))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--warmup-steps", c.warmup_steps, "linear learning-rate warm-up")
      ->transform(integer_in<int64_t>(0, kMaxI64))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--schedule", c.schedule, "learning-rate schedule after warm-up")
      ->check(choice({"cosine", "constant"}))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--min-lr-ratio", c.min_lr_ratio, "cosine floor, as a fraction of --lr")
      ->transform(real_in(kMinLrRatioRange))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--seed", c.seed, "initial weights, data order, dropout")
      ->transform(integer_in<uint64_t>(0, std::numeric_limits<uint64_t>::max()))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--threads", c.threads, "LibTorch CPU threads (default: LibTorch's choice)")
      ->transform(integer_in<int>(1, 4096))
      ->group("optimisation");
  app->add_option("--precision", c.precision,
                  "bf16: mixed precision, the forward passes under autocast to bfloat16 "
                  "(weights, AdamW state and losses stay float32); evaluation and the reference "
                  "log-probs follow it")
      ->check(choice({"fp32", "bf16"}))
      ->capture_default_str()
      ->group("optimisation");
  app->add_option("--device", c.device, "cpu or cuda[:N]")
      ->capture_default_str()
      ->group("optimisation");

  app->add_option("--out", c.out_dir, "directory for checkpoint.pt, metrics.jsonl, summary.json")
      ->capture_default_str()
      ->group("output");
  app->add_option("--metrics", c.metrics_path,
                  "metrics file; a .csv name writes CSV (default DIR/metrics.jsonl)")
      ->group("output");
  app->add_option("--checkpoint-every", c.checkpoint_every,
                  "also checkpoint every K steps, 0 = only at the end; SIGINT/SIGTERM always "
                  "checkpoint before exiting")
      ->transform(integer_in<int64_t>(0, kMaxI64))
      ->capture_default_str()
      ->group("output");
  app->add_option("--resume", c.resume,
                  "continue from a checkpoint (refused if the model, tokenizer, objective, data "
                  "or optimiser settings differ)")
      ->group("output");
  app->add_option("--eval-every", c.eval_every, "evaluate eval/OOD every N steps, 0 = at the end")
      ->transform(integer_in<int64_t>(0, kMaxI64))
      ->capture_default_str()
      ->group("output");
  app->add_option("--eval-batch", c.eval_batch, "pairs per evaluation batch")
      ->transform(integer_in<int64_t>(1, 1 << 24))
      ->capture_default_str()
      ->group("output");
  app->add_option("--log-every", c.log_every, "metrics/plain-log interval in steps")
      ->transform(integer_in<int64_t>(1, kMaxI64))
      ->capture_default_str()
      ->group("output");
  app->add_option("--bucket-kb", c.bucket_kb,
                  "data parallel (under torchrun): gradient all-reduce bucket size in KiB")
      ->transform(integer_in<int64_t>(1, 1 << 30))
      ->capture_default_str()
      ->group("distributed");
  app->add_flag("--vocab-parallel", c.vocab_parallel,
                "under torchrun: split the LM head's vocabulary over the processes (or over each "
                "group of --vocab-parallel-size) instead of the batch; --batch-size is per group. "
                "No effect in one process")
      ->group("distributed");
  app->add_option("--vocab-parallel-size", c.vocab_parallel_size,
                  "with --vocab-parallel: processes per LM-head group (consecutive ranks; must "
                  "divide the number of processes); the groups split the batch. 0: all of them")
      ->transform(integer_in<int64_t>(0, 1 << 20))
      ->capture_default_str()
      ->group("distributed");
  app->add_option("--dist-timeout", c.dist_timeout_s,
                  "data parallel: seconds before a store connection or collective fails (a "
                  "dead or stuck rank ends the others with an error)")
      ->transform(integer_in<int64_t>(1, 1 << 24))
      ->capture_default_str()
      ->group("distributed");
  app->add_option("--progress", c.progress, "bar on a terminal, plain lines otherwise (auto)")
      ->check(choice({"auto", "bar", "plain", "none"}))
      ->capture_default_str()
      ->group("output");
  return app;
}

// The --help text, generated from make_app()'s declarations.
inline std::string usage() {
  TrainConfig defaults;
  return make_app(defaults)->help();
}

// Parses the training command line into a TrainConfig; throws std::invalid_argument naming the
// option.
inline TrainConfig parse_args(const std::vector<std::string>& args, bool* help = nullptr) {
  TrainConfig c;
  auto app = make_app(c);
  if (cli_detail::parse_app(*app, args)) {
    if (help) *help = true;
    return TrainConfig{};
  }
  for (std::string* f : {&c.objective, &c.reward_loss, &c.policy_loss, &c.weighting, &c.readout,
                         &c.reference, &c.train_path, &c.eval_path, &c.ood_path, &c.tokenizer,
                         &c.prompt_template, &c.model.positions, &c.device, &c.out_dir,
                         &c.metrics_path, &c.resume, &c.progress, &c.init_from, &c.precision})
    cli_detail::restore_empty_value(*f);
  return c;
}

// `haf_rm train`: parse, train, evaluate. Returns the process exit code (0 done, 1 error,
// 2 usage error, 128 + signal when interrupted after writing a checkpoint).
inline int run_train_cli(const std::vector<std::string>& args) {
  TrainConfig cfg;
  try {
    bool help = false;
    cfg = parse_args(args, &help);
    if (help) {
      std::fputs(usage().c_str(), stdout);
      return 0;
    }
  } catch (const cli_detail::ListLosses&) {
    std::fputs(hafrm::loss_catalogue_markdown().c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "haf_rm: %s\n", e.what());
    return 2;
  }
  try {
    validate_config(cfg);  // before any process group is set up
    // torchrun's variables make this process one rank of a data-parallel job (distributed.hpp),
    // which may pick this rank's device.
    DataParallelOptions dpo;
    dpo.timeout = std::chrono::seconds(cfg.dist_timeout_s);
    dpo.bucket_bytes = cfg.bucket_kb << 10;
    dpo.vocab_parallel = cfg.vocab_parallel;
    dpo.vocab_parallel_size = cfg.vocab_parallel_size;
    auto launch = DataParallel::from_environment(cfg.device, dpo);
    Trainer trainer(RunConfig::resolve(std::move(cfg), std::move(launch.device)),
                    std::move(launch.data_parallel));
    return trainer.run();
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "haf_rm: error: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "haf_rm: error: %s\n", e.what());
  }
  return 1;
}

// The whole program: the command named by the first argument, train by default.
inline int run_cli(const std::vector<std::string>& args) {
  if (!args.empty()) {
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    const std::string& first = args.front();
    if (first == "train") return run_train_cli(rest);
    if (first == "eval") return run_eval_cli(rest);
    if (first == "score") return run_score_cli(rest);
    if (first == "export") return run_export_cli(rest);
    if (!first.empty() && first[0] != '-') {
      std::string names;
      for (const auto& c : command_list())
        names += (names.empty() ? "" : ", ") + std::string(c.name);
      std::fprintf(stderr, "haf_rm: unknown command \"%s\" (commands: %s; see --help)\n",
                   first.c_str(), names.c_str());
      return 2;
    }
  }
  return run_train_cli(args);
}

inline int run_cli(int argc, char** argv) {
  return run_cli(std::vector<std::string>(argv + 1, argv + argc));
}

}  // namespace hafrm::examples::rm
