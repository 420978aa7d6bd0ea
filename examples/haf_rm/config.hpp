// config.hpp: what one haf_rm run is asked to do (TrainConfig), the ranges and checks of its
// settings, and the learning-rate schedule it implies. cli.hpp fills a TrainConfig from the command
// line; tests build one directly. run_config.hpp turns a checked TrainConfig into the run's
// read-only RunConfig.
//
//   hafrm::examples::rm::TrainConfig cfg;       // defaults: hybrid model on data/synthetic
//   cfg.objective = "bt";
//   hafrm::examples::rm::validate_config(cfg);  // std::invalid_argument naming the option
//   double lr = hafrm::examples::rm::learning_rate(cfg, /*step=*/10);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numbers>
#include <stdexcept>
#include <string>

#include <hafrm/data/assemble.hpp>

#include "model.hpp"

#ifndef HAFRM_EXAMPLES_DATA_DIR
#define HAFRM_EXAMPLES_DATA_DIR "data"
#endif

namespace hafrm::examples::rm {

struct TrainConfig {
  // Data and tokenization.
  std::string train_path = HAFRM_EXAMPLES_DATA_DIR "/synthetic/train.jsonl";
  std::string eval_path = HAFRM_EXAMPLES_DATA_DIR "/synthetic/eval.jsonl";
  std::string ood_path = HAFRM_EXAMPLES_DATA_DIR "/synthetic/ood.jsonl";  // "" = none
  std::string tokenizer = "byte";       // or a SentencePiece .model path
  std::string prompt_template = "phi";  // phi | mistral | raw
  int64_t max_length = 128;
  int64_t max_prompt_length = 64;
  bool skip_bad = false;
  // Model.
  ModelConfig model;
  std::string init_from;  // a checkpoint or export to start from (init_from.hpp); "" = random
  // Objective.
  std::string objective = "haf";                    // bt | haf | dpo | lm | sft
  std::string reward_loss, policy_loss, weighting;  // "" = the objective's default
  std::string readout = "last-token";               // last-token | last-position
  std::string logprob_backend = "fused";            // fused | reference (timing comparisons)
  std::string reference = "precompute";  // precompute (once, cached) | model (live forward)
  // Optimisation.
  int64_t steps = 2000;
  int64_t batch_size = 32;
  int64_t grad_accum = 1;
  // Padding-free micro-batches (packing.hpp): the pairs' sequences end to end in rows; with
  // pack_tokens > 0 the step's pairs are cut into micro-batches of at most that many tokens.
  bool packing = false;
  int64_t pack_tokens = 0;
  double lr = 2e-3;
  double weight_decay = 0.1;
  double adam_eps = 1e-5;  // the HaF reference code's value
  double clip = 1.0;       // <= 0: no clipping (the norm is still logged)
  int64_t warmup_steps = 50;
  std::string schedule = "cosine";  // cosine | constant
  double min_lr_ratio = 0.1;
  uint64_t seed = 0;
  int threads = 0;  // 0 = LibTorch's default
  // fp32 | bf16: bf16 runs the forward passes under autocast to bfloat16 with float32 weights,
  // AdamW state and loss reductions (precision.hpp).
  std::string precision = "fp32";
  std::string device = "cpu";
  // Output.
  std::string out_dir = "runs/haf_rm";
  std::string metrics_path;        // "" = <out_dir>/metrics.jsonl; ".csv" for CSV
  int64_t checkpoint_every = 500;  // 0 = only at the end and on SIGINT/SIGTERM
  int64_t log_every = 25;
  int64_t eval_every = 250;  // 0 = only at the end
  int64_t eval_batch = 256;
  std::string progress = "auto";  // auto | bar | plain | none
  std::string resume;             // checkpoint to continue from
  // Data parallel (under torchrun; see distributed.hpp). batch_size is per rank.
  int64_t bucket_kb = 25 << 10;     // gradient all-reduce bucket size, KiB
  int64_t dist_timeout_s = 300;     // c10d store and collective timeout
  bool vocab_parallel = false;      // split the LM head's vocabulary over groups of ranks
  int64_t vocab_parallel_size = 0;  // ranks per group (0: all); the groups split the batch
};

// The range of a real-valued option. Every bound is finite and no infinity or NaN is inside, so
// the range --help shows (cli.hpp) is exactly what the command line and validate_config accept.
struct RealRange {
  double lo = 0, hi = 0;
  bool open_lo = false, open_hi = false;

  bool contains(double v) const {
    return std::isfinite(v) && (open_lo ? v > lo : v >= lo) && (open_hi ? v < hi : v <= hi);
  }
  // "(0, 1]", "[-1e+06, 1e+06]".
  std::string str() const {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%c%g, %g%c", open_lo ? '(' : '[', lo, hi, open_hi ? ')' : ']');
    return buf;
  }
};

// The real-valued options' ranges, shared by cli.hpp and validate_config.
// An AdamW step moves a weight by about lr, so a rate above 1 only diverges; with lr <= 1 and
// weight decay <= 1 the decay factor 1 - lr * wd of a step stays in [0, 1].
inline constexpr RealRange kLrRange{0.0, 1.0, true, false};
inline constexpr RealRange kWeightDecayRange{0.0, 1.0};
inline constexpr RealRange kAdamEpsRange{0.0, 1.0, true, false};
// <= 0: no clipping; a gradient norm beyond 1e6 is divergence whatever the clip.
inline constexpr RealRange kClipRange{-1e6, 1e6};
inline constexpr RealRange kMinLrRatioRange{0.0, 1.0};
inline constexpr RealRange kDropoutRange{0.0, 1.0, false, true};

namespace detail {

// "--lr must be in (0, 1], got 2" (or "must be a finite number in ..." for inf and NaN).
inline std::string out_of_range(const std::string& option, const RealRange& r, double v) {
  char got[32];
  std::snprintf(got, sizeof got, "%g", v);
  return option + (std::isfinite(v) ? " must be in " : " must be a finite number in ") + r.str() +
         ", got " + got;
}

}  // namespace detail

// Checks a TrainConfig built in code (tests, other programs); the command line's validators
// refuse the same values while parsing, naming the same options.
inline void validate_config(const TrainConfig& c) {
  auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
  if (c.steps < 0) fail("--steps must be >= 0");
  if (c.batch_size < 1 || c.grad_accum < 1 || c.eval_batch < 1)
    fail("--batch-size, --grad-accum and --eval-batch must be >= 1");
  const struct {
    const char* option;
    double value;
    RealRange range;
  } reals[] = {{"--lr", c.lr, kLrRange},
               {"--weight-decay", c.weight_decay, kWeightDecayRange},
               {"--adam-eps", c.adam_eps, kAdamEpsRange},
               {"--clip", c.clip, kClipRange},
               {"--min-lr-ratio", c.min_lr_ratio, kMinLrRatioRange},
               {"--dropout", c.model.dropout, kDropoutRange}};
  for (const auto& r : reals)
    if (!r.range.contains(r.value)) fail(detail::out_of_range(r.option, r.range, r.value));
  if (c.warmup_steps < 0) fail("--warmup-steps must be >= 0");
  if (c.schedule != "cosine" && c.schedule != "constant")
    fail("--schedule must be cosine or constant, got \"" + c.schedule + "\"");
  if (c.readout != "last-token" && c.readout != "last-position")
    fail("--readout must be last-token or last-position, got \"" + c.readout + "\"");
  if (c.reference != "precompute" && c.reference != "model")
    fail("--reference must be precompute or model, got \"" + c.reference + "\"");
  if (c.logprob_backend != "fused" && c.logprob_backend != "reference")
    fail("--logprob-backend must be fused or reference, got \"" + c.logprob_backend + "\"");
  if (c.precision != "fp32" && c.precision != "bf16")
    fail("--precision must be fp32 or bf16, got \"" + c.precision + "\"");
  // The recompute of a checkpointed block runs in the backward, outside autocast: it would not
  // reproduce the bfloat16 forward (activation_checkpoint.hpp replays no autocast state).
  if (c.precision == "bf16" && c.model.checkpoint_activations)
    fail("--precision bf16 cannot be combined with --checkpoint-activations");
  if (c.pack_tokens < 0) fail("--pack-tokens must be >= 0");
  if (c.pack_tokens > 0 && !c.packing)
    fail("--pack-tokens " + std::to_string(c.pack_tokens) + " needs --packing");
  if (c.packing && (c.objective == "lm" || c.objective == "sft"))
    fail("--packing packs preference pairs; it cannot be combined with --objective " + c.objective);
  // A packed segment has no padding to read a reward at (the segment's last token is read).
  if (c.packing && c.readout != "last-token")
    fail(
        "--packing reads each reward at its sequence's last token; it cannot be combined with "
        "--readout " +
        c.readout);
  if (c.device != "cpu" && !c.device.starts_with("cuda"))
    fail("--device must be cpu or cuda[:N], got \"" + c.device + "\"");
  if (c.log_every < 1) fail("--log-every must be >= 1");
  if (c.checkpoint_every < 0 || c.eval_every < 0)
    fail("--checkpoint-every and --eval-every must be >= 0");
  if (c.vocab_parallel_size < 0) fail("--vocab-parallel-size must be >= 0");
  if (c.vocab_parallel_size > 0 && !c.vocab_parallel)
    fail("--vocab-parallel-size " + std::to_string(c.vocab_parallel_size) +
         " needs --vocab-parallel");
  if (c.vocab_parallel && c.logprob_backend != "fused")
    fail(
        "--vocab-parallel computes log-probs with the fused kernels; it cannot be combined with "
        "--logprob-backend " +
        c.logprob_backend);
}

inline hafrm::data::PromptTemplate template_by_name(const std::string& name) {
  if (name == "phi") return hafrm::data::PromptTemplate::phi();
  if (name == "mistral") return hafrm::data::PromptTemplate::mistral();
  if (name == "raw") return hafrm::data::PromptTemplate::raw();
  throw std::invalid_argument("--template must be phi, mistral or raw, got \"" + name + "\"");
}

// The learning rate of optimizer step `step` (0-based): linear warm-up to cfg.lr, then cosine
// decay to min_lr_ratio * lr over the remaining steps (or constant). It depends on cfg.steps,
// so a resumed run with another --steps follows the new schedule from where it resumes.
inline double learning_rate(const TrainConfig& cfg, int64_t step) {
  double f = 1.0;
  if (cfg.warmup_steps > 0 && step < cfg.warmup_steps)
    f = static_cast<double>(step + 1) / static_cast<double>(cfg.warmup_steps);
  if (cfg.schedule == "cosine") {
    const double span = static_cast<double>(std::max<int64_t>(1, cfg.steps - cfg.warmup_steps));
    const double t = std::clamp(static_cast<double>(step - cfg.warmup_steps) / span, 0.0, 1.0);
    f *= cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + std::cos(std::numbers::pi * t));
  }
  return cfg.lr * f;
}

}  // namespace hafrm::examples::rm
