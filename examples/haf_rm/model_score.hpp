// model_score.hpp: `haf_rm score` -- a trained model's reward for JSONL rows of one prompt with
// one response ({"prompt", "response"} -> the row plus "score") or several ({"prompt",
// "responses"} -> the row plus "scores", "ranking" (indices, best first) and "best"). Prompts and
// responses are strings or TRL message lists (hafrm/data/score_records.hpp).
//
// Each response is assembled as training assembles the chosen side of a pair
// (hafrm::data::assemble_single: the model's template, prompt cut to its last max_prompt_length
// tokens, the response cut so that response + EOS fits max_length), then scored by
// hafrm::score_sequences (reward head only, length-bucketed batches, the model's readout), then
// normalised when the model stores a normalisation (unless `raw`). So a pair's two scores order
// it exactly as the trainer's evaluation does. Ties in a ranking keep input order (the lower
// index ranks first and is "best"). The output is written to a temporary file and renamed, so a
// bad row, an empty response or a failure leaves no output (and an existing one untouched).
//
//   rm::ScoreFileOptions o;
//   o.model = "runs/haf_rm/model", o.input = "rows.jsonl", o.output = "scored.jsonl";
//   rm::ScoreFileResult r = rm::score_file(o);   // r.responses, r.truncated, r.seconds
#pragma once

#include <unistd.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <hafrm/data/assemble.hpp>
#include <hafrm/data/score_records.hpp>
#include <hafrm/model/best_of_n.hpp>
#include <hafrm/model/scoring.hpp>

#include "progress.hpp"
#include "reward_model.hpp"

namespace hafrm::examples::rm {

struct ScoreFileOptions {
  std::string model;   // export directory or checkpoint file
  std::string input;   // JSONL rows
  std::string output;  // JSONL rows with the scores added
  bool raw = false;    // skip the model's stored normalisation
  int64_t batch_tokens = hafrm::ScoreOptions{}.max_batch_tokens;        // rows * longest row
  int64_t batch_sequences = hafrm::ScoreOptions{}.max_batch_sequences;  // rows per forward
  bool bucket_by_length = true;  // false: input order, padded (for throughput comparisons)
  std::string tokenizer;         // see LoadOptions::tokenizer
  std::string device = "cpu";
  int threads = 0;                // 0 = LibTorch's default
  std::string progress = "auto";  // auto (a bar on a terminal) | bar | none
};

struct ScoreFileResult {
  int64_t rows = 0, groups = 0, responses = 0;
  int64_t truncated = 0;          // responses cut to fit max_length (then EOS)
  int64_t prompts_truncated = 0;  // responses whose prompt was cut to max_prompt_length
  double seconds = 0;             // reading, assembling, scoring and writing
  double score_seconds = 0;       // score_sequences alone
  bool normalized = false;
  std::vector<nlohmann::ordered_json> out_rows;  // what was written, in input order
};

// Scores o.input into o.output (see the top of the file); `log` receives the lines to print.
template <class Log>
ScoreFileResult score_file(const ScoreFileOptions& o, Log&& log) {
  namespace fs = std::filesystem;
  if (o.output.empty()) throw std::invalid_argument("score: --output is required");
  if (o.threads > 0) torch::set_num_threads(o.threads);
  LoadOptions lo;
  lo.device = torch::Device(o.device);
  lo.tokenizer = o.tokenizer;
  RewardModel m = load_reward_model(o.model, lo);
  require_reward(m.spec, "score", o.model);
  if (m.spec.score_is_implicit())
    throw std::invalid_argument(
        o.model +
        " was trained with --objective dpo, which ranks by the implicit reward (policy "
        "against reference log-probs); score reads the reward head, which dpo leaves "
        "untrained");
  const auto t0 = std::chrono::steady_clock::now();
  const auto records = hafrm::data::load_score_records(o.input);  // RecordError: file:line: field

  ScoreFileResult res;
  std::vector<std::vector<int64_t>> seqs;
  std::vector<int64_t> sizes;
  for (const auto& r : records) {
    for (std::size_t k = 0; k < r.responses.size(); ++k) {
      hafrm::data::TokenizedSequence s;
      try {
        s = hafrm::data::assemble_single(*m.tokenizer, r.prompt, r.responses[k], m.spec.assembly);
      } catch (const std::exception& e) {
        const std::string field =
            r.group ? "responses[" + std::to_string(k) + "]" : std::string("response");
        throw hafrm::data::RecordError(o.input, r.line, field, e.what());
      }
      res.truncated += s.response_truncated;
      res.prompts_truncated += s.prompt_truncated;
      seqs.push_back(std::move(s.ids));
    }
    sizes.push_back(static_cast<int64_t>(r.responses.size()));
    res.groups += r.group;
  }
  res.rows = static_cast<int64_t>(records.size());
  res.responses = static_cast<int64_t>(seqs.size());

  hafrm::ScoreOptions so = m.score_options();
  so.max_batch_sequences = o.batch_sequences;
  so.max_batch_tokens = o.batch_tokens;
  so.bucket_by_length = o.bucket_by_length;
  if (m.spec.normalization && !o.raw) so.normalization = m.spec.normalization;
  res.normalized = so.normalization.has_value();
  // A bar on a terminal only (or when asked for); plain output gets the summary line alone.
  const bool show = o.progress == "bar" ||
                    (o.progress == "auto" && Progress::resolve("auto") == Progress::Mode::kBar);
  Progress bar(show ? Progress::Mode::kBar : Progress::Mode::kNone, res.responses, 0);
  so.progress = [&bar](int64_t done, int64_t) { bar.update(done, "responses"); };
  const auto s0 = std::chrono::steady_clock::now();
  const torch::Tensor scores = hafrm::score_sequences(m.model, seqs, so);
  res.score_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
  bar.finish();
  const auto rankings = hafrm::rank_groups(scores, sizes);

  const auto sc = scores.contiguous();
  const float* p = sc.data_ptr<float>();
  int64_t at = 0;
  res.out_rows.reserve(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    nlohmann::ordered_json row = r.row;
    if (r.group) {
      std::vector<double> s(p + at, p + at + sizes[i]);
      row["scores"] = s;
      row["ranking"] = rankings[i].order;
      row["best"] = rankings[i].best;
    } else {
      row["score"] = static_cast<double>(p[at]);
    }
    at += sizes[i];
    res.out_rows.push_back(std::move(row));
  }

  const fs::path out(o.output);
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  const fs::path tmp = out.string() + ".tmp-" + std::to_string(::getpid());
  try {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot create " + tmp.string());
    for (const auto& row : res.out_rows) f << row.dump() << '\n';
    f.flush();
    if (!f) throw std::runtime_error("write error on " + tmp.string());
    f.close();
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto rate = [&](double s) {
    return detail::fmt("%.1f", s > 0 ? static_cast<double>(res.responses) / s : 0.0);
  };
  log("scored " + std::to_string(res.responses) + " responses (" + std::to_string(res.rows) +
      " rows, " + std::to_string(res.groups) + " best-of-N) in " +
      detail::fmt("%.2f", res.seconds) + " s: " + rate(res.seconds) +
      " responses/s (the model alone " + rate(res.score_seconds) + "/s)" +
      (res.normalized ? ", normalised"
       : o.raw        ? ", raw"
                      : "") +
      " -> " + o.output);
  if (res.truncated > 0 || res.prompts_truncated > 0)
    log(std::to_string(res.truncated) + " responses truncated (cut to fit --max-length " +
        std::to_string(m.spec.assembly.max_length) + " with their EOS), " +
        std::to_string(res.prompts_truncated) + " prompts cut to their last " +
        std::to_string(m.spec.assembly.max_prompt_length) + " tokens");
  return res;
}

inline ScoreFileResult score_file(const ScoreFileOptions& o) {
  return score_file(o, [](const std::string&) {});
}

}  // namespace hafrm::examples::rm
