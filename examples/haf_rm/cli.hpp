// cli.hpp: the haf_rm command line (main.cpp is one call to run_cli; tests call it too).
//
//   std::vector<std::string> args = {"--objective", "bt", "--steps", "100"};
//   int rc = hafrm::examples::rm::run_cli(args);
#pragma once

#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer.hpp"

namespace hafrm::examples::rm {

inline const char* usage() {
  return R"(haf_rm: train a reward model the HaF-RM way (shared backbone, reward head + LM head).

usage: haf_rm [options]          (every option also accepts --name=value)

objective
  --objective bt|haf|dpo      bt: reward loss only (alpha 0); haf: hybrid, w_R 1, alpha 0.2,
                              beta 0.1 (default); dpo: policy loss only, scored by the implicit
                              reward beta * (logp - logp_ref)
  --reward-loss SPEC          default "bt"              (e.g. "bt:center=0.01", "hinge:margin=1")
  --policy-loss SPEC          default "sigmoid:beta=0.1" (e.g. "ipo:beta=0.5", "simpo", "nll")
  --weighting SPEC            default from --objective  (e.g. "constant:reward=1,alpha=0.2",
                              "alternate:period=10", "warmup:steps=200")
  --readout last-token|last-position   reward read-out (default last-token; last-position is
                              what the HaF reference code reads)
  --reference precompute|model   reference log-probs computed once from the frozen initial
                              weights (default) or by a frozen model on every step
data
  --train PATH --eval PATH --ood PATH   JSONL preference files, text {"prompt","chosen",
                              "rejected"} or pre-tokenized {"prompt_ids","chosen_ids",
                              "rejected_ids"} (defaults: data/synthetic/*.jsonl; "" = no split)
  --skip-bad                  skip (and count) bad records instead of stopping at the first
  --tokenizer byte|FILE.model byte-level (default) or a SentencePiece model
  --template phi|mistral|raw  prompt template (default phi: "Instruct: {x}\nOutput:" + " {y}")
  --max-length N              prompt + response + EOS tokens (default 128)
  --max-prompt-length N       prompt tokens kept, from its end (default 64)
model
  --layers N --d-model N --heads N --d-ff N --dropout P   (defaults 2, 64, 4, 256, 0)
  --positions rope|alibi      (default rope)
  --logits                    return full logits (default: LM-head input + weight, so the
                              library's fused linear -> log-prob path never stores the logits)
optimisation
  --steps N                   optimizer steps (default 2000)
  --batch-size N              pairs per micro-batch (default 32)
  --grad-accum N              micro-batches per step (default 1)
  --lr X --weight-decay X --adam-eps X   AdamW (defaults 2e-3, 0.1, 1e-5)
  --clip X                    gradient-norm clip, <= 0 off (default 1)
  --warmup-steps N --schedule cosine|constant --min-lr-ratio X   (defaults 50, cosine, 0.1)
  --seed N                    initial weights, data order, dropout (default 0)
  --threads N                 LibTorch CPU threads (default: LibTorch's choice)
  --device cpu|cuda[:N]       (default cpu)
output
  --out DIR                   checkpoint.pt, metrics.jsonl, summary.json (default runs/haf_rm)
  --metrics FILE              metrics file; a .csv name writes CSV (default DIR/metrics.jsonl)
  --checkpoint-every K        also checkpoint every K steps, 0 = only at the end (default 500);
                              SIGINT/SIGTERM always checkpoint before exiting
  --resume FILE               continue from a checkpoint (refused if the model, tokenizer,
                              objective, data or optimiser settings differ)
  --eval-every N              evaluate eval/OOD every N steps, 0 = only at the end (default 250)
  --eval-batch N              pairs per evaluation batch (default 256)
  --log-every N               metrics/plain-log interval in steps (default 25)
  --progress auto|bar|plain|none   bar on a terminal, plain lines otherwise (default auto)
  -h, --help
)";
}

// Parses the command line into a TrainConfig; throws std::invalid_argument naming the option.
inline TrainConfig parse_args(const std::vector<std::string>& args, bool* help = nullptr) {
  TrainConfig c;
  using Setter = std::function<void(const std::string&)>;
  auto str = [](std::string& f) -> Setter { return [&f](const std::string& v) { f = v; }; };
  auto i64 = [](int64_t& f) -> Setter { return [&f](const std::string& v) { f = std::stoll(v); }; };
  auto u64 = [](uint64_t& f) -> Setter {
    return [&f](const std::string& v) { f = std::stoull(v); };
  };
  auto dbl = [](double& f) -> Setter { return [&f](const std::string& v) { f = std::stod(v); }; };
  auto int_ = [](int& f) -> Setter { return [&f](const std::string& v) { f = std::stoi(v); }; };
  const std::map<std::string, Setter> valued = {{"objective", str(c.objective)},
                                                {"reward-loss", str(c.reward_loss)},
                                                {"policy-loss", str(c.policy_loss)},
                                                {"weighting", str(c.weighting)},
                                                {"readout", str(c.readout)},
                                                {"reference", str(c.reference)},
                                                {"train", str(c.train_path)},
                                                {"eval", str(c.eval_path)},
                                                {"ood", str(c.ood_path)},
                                                {"tokenizer", str(c.tokenizer)},
                                                {"template", str(c.prompt_template)},
                                                {"max-length", i64(c.max_length)},
                                                {"max-prompt-length", i64(c.max_prompt_length)},
                                                {"layers", i64(c.model.n_layers)},
                                                {"d-model", i64(c.model.d_model)},
                                                {"heads", i64(c.model.n_heads)},
                                                {"d-ff", i64(c.model.d_ff)},
                                                {"dropout", dbl(c.model.dropout)},
                                                {"positions", str(c.model.positions)},
                                                {"steps", i64(c.steps)},
                                                {"batch-size", i64(c.batch_size)},
                                                {"grad-accum", i64(c.grad_accum)},
                                                {"lr", dbl(c.lr)},
                                                {"weight-decay", dbl(c.weight_decay)},
                                                {"adam-eps", dbl(c.adam_eps)},
                                                {"clip", dbl(c.clip)},
                                                {"warmup-steps", i64(c.warmup_steps)},
                                                {"schedule", str(c.schedule)},
                                                {"min-lr-ratio", dbl(c.min_lr_ratio)},
                                                {"seed", u64(c.seed)},
                                                {"threads", int_(c.threads)},
                                                {"device", str(c.device)},
                                                {"out", str(c.out_dir)},
                                                {"metrics", str(c.metrics_path)},
                                                {"checkpoint-every", i64(c.checkpoint_every)},
                                                {"resume", str(c.resume)},
                                                {"eval-every", i64(c.eval_every)},
                                                {"eval-batch", i64(c.eval_batch)},
                                                {"log-every", i64(c.log_every)},
                                                {"progress", str(c.progress)}};
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      if (help) *help = true;
      return c;
    }
    if (!a.starts_with("--")) throw std::invalid_argument("unexpected argument \"" + a + "\"");
    std::string name = a.substr(2), value;
    const auto eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) value = name.substr(eq + 1), name = name.substr(0, eq);
    if (name == "skip-bad" || name == "logits") {
      if (inline_value) throw std::invalid_argument("--" + name + " takes no value");
      if (name == "skip-bad")
        c.skip_bad = true;
      else
        c.model.fused_lm_head = false;
      continue;
    }
    const auto it = valued.find(name);
    if (it == valued.end())
      throw std::invalid_argument("unknown option --" + name + " (see --help)");
    if (!inline_value) {
      if (i + 1 >= args.size()) throw std::invalid_argument("--" + name + " needs a value");
      value = args[++i];
    }
    try {
      it->second(value);
    } catch (const std::logic_error&) {  // std::stoll & co: invalid_argument / out_of_range
      throw std::invalid_argument("--" + name + ": cannot read \"" + value + "\" as a number");
    }
  }
  return c;
}

// The whole program: parse, train, evaluate. Returns the process exit code (0 done, 1 error,
// 2 usage error, 128 + signal when interrupted after writing a checkpoint).
inline int run_cli(const std::vector<std::string>& args) {
  TrainConfig cfg;
  try {
    bool help = false;
    cfg = parse_args(args, &help);
    if (help) {
      std::fputs(usage(), stdout);
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "haf_rm: %s\n", e.what());
    return 2;
  }
  try {
    Trainer trainer(cfg);
    return trainer.run();
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "haf_rm: error: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "haf_rm: error: %s\n", e.what());
  }
  return 1;
}

inline int run_cli(int argc, char** argv) {
  return run_cli(std::vector<std::string>(argv + 1, argv + argc));
}

}  // namespace hafrm::examples::rm
