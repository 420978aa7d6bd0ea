// training_data.hpp: the read-only inputs of one haf_rm run (TrainingData): the tokenizer and the
// train / eval / OOD splits, loaded and assembled once from the resolved config. Nothing writes
// them afterwards. The training state caches reference log-probs by the splits' addresses, so the
// owner (trainer.hpp's Trainer) keeps a TrainingData in place for the run's lifetime.
//
//   const auto data = hafrm::examples::rm::load_training_data(cfg, /*data_world=*/1);
//   std::size_t n = data.train.pairs.size();
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <hafrm/data/tokenizer.hpp>

#include "data.hpp"
#include "run_config.hpp"
#include "sequence_data.hpp"

namespace hafrm::examples::rm {

struct TrainingData {
  std::unique_ptr<const hafrm::data::Tokenizer> tokenizer;
  Split train;
  std::optional<Split> eval, ood;  // absent when their path is ""
};

// Loads the splits of `cfg` with its tokenizer: preference pairs, or single sequences for
// --objective lm and sft (sequence_data.hpp). `data_world`: the processes that split each batch
// (1 for one process); the training split must hold at least one global batch.
inline TrainingData load_training_data(const RunConfig& cfg, int data_world) {
  const TrainConfig& o = cfg.options();
  TrainingData d;
  d.tokenizer = hafrm::data::make_tokenizer(o.tokenizer);
  const auto& ao = cfg.assembly();
  const std::string& objective = cfg.objective().objective;
  const auto load = [&](const char* name, const std::string& path) {
    if (!cfg.objective().sequence) return load_split(name, path, *d.tokenizer, ao, o.skip_bad);
    return load_sequence_split(
        name, path, *d.tokenizer, ao, o.skip_bad,
        objective == "sft" ? SequenceObjective::kSupervised : SequenceObjective::kLanguageModel);
  };
  d.train = load("train", o.train_path);
  if (static_cast<int64_t>(d.train.size()) < o.batch_size * data_world)
    throw std::invalid_argument(
        o.train_path + " has " + std::to_string(d.train.size()) + " " + d.train.unit() +
        ", fewer than --batch-size " + std::to_string(o.batch_size) +
        (data_world > 1 ? " x " + std::to_string(data_world) + " processes" : std::string()));
  if (!o.eval_path.empty()) d.eval = load("eval", o.eval_path);
  if (!o.ood_path.empty()) d.ood = load("ood", o.ood_path);
  return d;
}

}  // namespace hafrm::examples::rm
