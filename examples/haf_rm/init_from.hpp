// init_from.hpp: --init-from, a run that starts from a trained model instead of random weights.
//
// The file is a haf_rm checkpoint (checkpoint.pt of any objective: lm or sft for a pre-trained
// backbone, bt / haf / dpo for a reward model) or an export directory (haf_rm export). Its
// backbone and LM head are loaded; the reward head starts at zero, as in a fresh model, so the
// reward is learned on top of the pre-trained representation; the frozen reference of a hybrid or
// dpo run is the loaded model (the training state copies it after loading these weights). The
// model must have been trained with this run's tokenizer and have this run's shapes; anything else
// is refused with every difference named. The weights file's fingerprint joins the checkpoint
// identity, so a resumed run must start from the same weights.
//
//   auto init = hafrm::examples::rm::load_initial_weights(cfg, *tokenizer);  // nullopt: random
//   hafrm::examples::rm::TrainState st(cfg, data, /*dp=*/nullptr, init);
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <hafrm/data/tokenizer.hpp>

#include "initial_weights.hpp"
#include "model.hpp"
#include "reward_model.hpp"
#include "run_config.hpp"

namespace hafrm::examples::rm {

// Loads cfg's --init-from (nullopt when it is ""), checked against this run's model config and
// tokenizer. Throws std::invalid_argument starting with "--init-from FILE" for a missing, damaged
// or unfitting file.
inline std::optional<InitialWeights> load_initial_weights(const RunConfig& cfg,
                                                          const hafrm::data::Tokenizer& tokenizer) {
  const TrainConfig& o = cfg.options();
  if (o.init_from.empty()) return std::nullopt;
  const std::string head = "--init-from " + o.init_from;
  const std::string kind = o.tokenizer == "byte" ? "byte" : "sentencepiece";
  InitialWeights w;
  w.source = o.init_from;
  RewardModel m;
  try {
    LoadOptions lo;
    if (kind == "sentencepiece") lo.tokenizer = o.tokenizer;  // checked against its fingerprint
    m = load_reward_model(o.init_from, lo);
  } catch (const std::exception& e) {
    throw std::invalid_argument(head + ": " + e.what());
  }
  std::vector<std::string> diffs;
  if (m.spec.tokenizer_kind != kind)
    diffs.push_back("tokenizer: " + m.spec.tokenizer_kind + " there, " + kind + " (" + o.tokenizer +
                    ") in this run");
  if (m.tokenizer->vocab_size() != tokenizer.vocab_size() ||
      m.tokenizer->eos_id() != tokenizer.eos_id())
    diffs.push_back("tokenizer: vocabulary " + std::to_string(m.tokenizer->vocab_size()) +
                    " (EOS " + std::to_string(m.tokenizer->eos_id()) + ") there, " +
                    std::to_string(tokenizer.vocab_size()) + " (EOS " +
                    std::to_string(tokenizer.eos_id()) + ") in this run");
  const ModelConfig& a = m.spec.model;
  const ModelConfig& b = o.model;
  const struct {
    const char* option;
    int64_t there, here;
  } shapes[] = {{"--layers", a.n_layers, b.n_layers},
                {"--d-model", a.d_model, b.d_model},
                {"--heads", a.n_heads, b.n_heads},
                {"--d-ff", a.d_ff, b.d_ff}};
  for (const auto& s : shapes)
    if (s.there != s.here)
      diffs.push_back(std::string(s.option) + ": " + std::to_string(s.there) + " there, " +
                      std::to_string(s.here) + " in this run");
  if (a.positions != b.positions)
    diffs.push_back("--positions: " + a.positions + " there, " + b.positions + " in this run");
  if (!diffs.empty()) {
    std::string msg = head + " does not fit this run:";
    for (const auto& d : diffs) msg += "\n  " + d;
    throw std::invalid_argument(msg +
                                "\ngive this run the model's settings, or start from "
                                "random weights");
  }
  const std::filesystem::path path(o.init_from);
  w.fingerprint = detail::file_fingerprint(
      (std::filesystem::is_directory(path) ? path / kExportWeights : path).string());
  w.objective = m.spec.objective;
  w.template_name = m.spec.template_name;
  if (m.spec.training.contains("step") && m.spec.training["step"].is_number_integer())
    w.step = m.spec.training["step"].get<int64_t>();
  w.model = m.model;
  return w;
}

}  // namespace hafrm::examples::rm
