// trainer_checkpoint.hpp: what a haf_rm checkpoint holds and how a run is resumed from one.
//
// A checkpoint captures everything that decides the next step: weights, the frozen reference
// (none in a reward-only run), AdamW's state, the data order (permutation, cursor, epoch, shuffle
// generator), torch's CPU (and CUDA) generator states and the cached reference log-probs, so a
// resumed run takes exactly the step an uninterrupted one would. Beside that it stores the run's
// identity (model, tokenizer, objective, data, optimisation settings); a run whose identity differs
// is refused with every difference listed. The file format (header, checksum, atomic write) is
// checkpoint.hpp's, kept apart because the checkpoint fuzzer builds it without the trainer.
//
//   hafrm::examples::rm::save_trainer_checkpoint(state, "run/checkpoint.pt");
//   auto restored = hafrm::examples::rm::load_trainer_checkpoint(state, "run/checkpoint.pt");
//   // restored.step: where the run continues; throws CheckpointError for a file that does not fit
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint.hpp"
#include "train_state.hpp"

namespace hafrm::examples::rm {

// The value of meta["format"]: tells a trainer checkpoint from any other torch archive.
inline constexpr const char* kTrainerCheckpointFormat = "hafrm-examples-haf_rm";

// What load_trainer_checkpoint() restored, beyond the state itself.
struct RestoredCheckpoint {
  std::filesystem::path path;
  int64_t step = 0;               // optimizer steps done: where the run continues
  int64_t written_for_steps = 0;  // the --steps of the run that wrote it
};

// The note a resumed run prints after the run's description ("" when there is none): a --steps
// that differs from the writer's changes the learning-rate schedule from here on.
inline std::string resume_note(const RestoredCheckpoint& r, int64_t steps) {
  if (r.written_for_steps == steps) return {};
  return "note: --steps " + std::to_string(steps) + " differs from the " +
         std::to_string(r.written_for_steps) +
         " the checkpoint was written for; the learning-rate schedule follows the new value from "
         "here on";
}

namespace detail {

inline std::string file_fingerprint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return hex64(fnv1a(bytes.data(), bytes.size()));
}

// Lists every key whose value differs between two JSON objects, "section.key: a vs b".
inline void diff_section(const std::string& section, const nlohmann::ordered_json& stored,
                         const nlohmann::ordered_json& now, std::vector<std::string>& out) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : now.items()) keys.push_back(k);
  for (const auto& [k, v] : stored.items())
    if (!now.contains(k)) keys.push_back(k);
  for (const auto& k : keys) {
    const auto a = stored.contains(k) ? stored[k].dump() : std::string("(absent)");
    const auto b = now.contains(k) ? now[k].dump() : std::string("(absent)");
    if (a != b) out.push_back(section + "." + k + ": checkpoint " + a + ", this run " + b);
  }
}

// The default generator's lock is taken because the generator is global to the process.
inline torch::Tensor generator_state(const torch::Device& d) {
  auto gen = at::globalContext().defaultGenerator(d);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}
inline void set_generator_state(const torch::Device& d, const torch::Tensor& state) {
  auto gen = at::globalContext().defaultGenerator(d);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state.cpu());
}

}  // namespace detail

// Everything a checkpoint must agree on with the run that loads it, by section.
inline nlohmann::ordered_json checkpoint_identity(const TrainState& st) {
  const RunConfig& rc = st.config();
  const TrainConfig& cfg = rc.options();
  const ObjectiveSpec& spec = rc.objective();
  const hafrm::data::Tokenizer& tokenizer = *st.data().tokenizer;
  nlohmann::ordered_json id;
  id["model"] = st.model()->config.to_json();
  nlohmann::ordered_json tok = {{"kind", cfg.tokenizer == "byte" ? "byte" : "sentencepiece"},
                                {"vocab_size", tokenizer.vocab_size()},
                                {"eos_id", tokenizer.eos_id()}};
  if (cfg.tokenizer != "byte") tok["model_file_fnv1a"] = detail::file_fingerprint(cfg.tokenizer);
  id["tokenizer"] = tok;
  id["objective"] = {{"objective", spec.objective},     {"reward_loss", spec.reward_loss},
                     {"policy_loss", spec.policy_loss}, {"weighting", spec.weighting},
                     {"readout", cfg.readout},          {"reference", cfg.reference}};
  id["data"] = {{"template", cfg.prompt_template},
                {"max_length", cfg.max_length},
                {"max_prompt_length", cfg.max_prompt_length},
                {std::string("train_") + st.data().train.unit(), st.data().train.size()},
                {"train_fingerprint", detail::hex64(fingerprint(st.data().train))}};
  // The global batch: a checkpoint resumes with any number of processes that keeps it.
  id["optimisation"] = {{"batch_size", st.global_batch()},
                        {"grad_accum", cfg.grad_accum},
                        {"lr", cfg.lr},
                        {"weight_decay", cfg.weight_decay},
                        {"adam_eps", cfg.adam_eps},
                        {"clip", cfg.clip},
                        {"warmup_steps", cfg.warmup_steps},
                        {"schedule", cfg.schedule},
                        {"min_lr_ratio", cfg.min_lr_ratio},
                        {"seed", cfg.seed}};
  // bf16 changes the numbers every step computes; fp32 adds no key, so the identity of an fp32
  // run is what it is without --precision.
  if (cfg.precision != "fp32") id["optimisation"]["precision"] = cfg.precision;
  // The --init-from weights, by content (the file may move); absent for random weights.
  if (!st.init_fingerprint().empty()) id["init"] = {{"weights_fnv1a", st.init_fingerprint()}};
  return id;
}

// Rank 0 writes; every rank waits for the file (so none exits while it is being written).
inline void save_trainer_checkpoint(const TrainState& st, const std::filesystem::path& path) {
  DataParallel* dp = st.data_parallel();
  if (dp && dp->rank() != 0) return dp->barrier();
  const BatchOrder& order = st.batch_order();
  nlohmann::ordered_json meta;
  meta["format"] = kTrainerCheckpointFormat;
  meta["identity"] = checkpoint_identity(st);
  // Where the SentencePiece model was read (not part of the identity: a run may move it), so
  // haf_rm eval / score / export find it without being told.
  if (const auto& tok = st.config().options().tokenizer; tok != "byte")
    meta["tokenizer_file"] = std::filesystem::absolute(tok).string();
  std::ostringstream rng;
  rng << order.rng;
  meta["state"] = {{"step", st.step()},        {"steps", st.config().options().steps},
                   {"epoch", order.epoch},     {"cursor", order.cursor},
                   {"shuffle_rng", rng.str()}, {"train_seconds", st.train_seconds()}};
  torch::serialize::OutputArchive a;
  a.write("meta", c10::IValue(meta.dump()));
  torch::serialize::OutputArchive m, r, o;
  st.model()->save(m);
  st.optimizer().save(o);
  a.write("model", m);
  if (st.reference()) {  // none in a reward-only run
    st.reference()->save(r);
    a.write("reference", r);
  }
  a.write("optimizer", o);
  a.write("order", torch::tensor(order.order, torch::kLong));
  a.write("rng_cpu", detail::generator_state(torch::kCPU));
  const torch::Device& device = st.config().device();
  if (device.is_cuda()) a.write("rng_cuda", detail::generator_state(device));
  if (st.train_refs().first.defined()) {
    a.write("ref_chosen", st.train_refs().first.cpu());
    a.write("ref_rejected", st.train_refs().second.cpu());
  }
  write_checkpoint(path, a);
  if (dp) dp->barrier();
}

// Restores `st` (built from the same settings) to the checkpoint's state and returns where it
// continues. Throws CheckpointError for a damaged file, another run's checkpoint (listing the
// differences) or a state out of range; every check comes before the state is touched, except
// LibTorch's own while it loads the weights and AdamW's state.
inline RestoredCheckpoint load_trainer_checkpoint(TrainState& st,
                                                  const std::filesystem::path& path) {
  const torch::Device& device = st.config().device();
  // A reward-only run has no reference and no reference log-probs to restore.
  const bool has_reference = static_cast<bool>(st.reference());
  const bool precompute = st.config().precompute_reference() && has_reference;
  auto a = read_checkpoint(path, device);
  nlohmann::ordered_json meta;
  try {
    c10::IValue v;
    a.read("meta", v);
    meta = nlohmann::ordered_json::parse(v.toStringRef());
    if (meta.value("format", "") != kTrainerCheckpointFormat) throw std::runtime_error("format");
  } catch (const std::exception&) {
    throw CheckpointError("checkpoint " + path.string() +
                          " holds no haf_rm trainer metadata; refusing to load it");
  }
  std::vector<std::string> diffs;
  const auto now = checkpoint_identity(st);
  const auto stored = meta.value("identity", nlohmann::ordered_json::object());
  for (const auto& [section, values] : now.items())
    detail::diff_section(section, stored.value(section, nlohmann::ordered_json::object()), values,
                         diffs);
  for (const auto& [section, values] : stored.items())  // a section this run does not have
    if (!now.contains(section))
      detail::diff_section(section, values, nlohmann::ordered_json::object(), diffs);
  if (!diffs.empty()) {
    std::string msg = "checkpoint " + path.string() + " does not match this run:";
    for (const auto& d : diffs) msg += "\n  " + d;
    msg +=
        "\nresume with the settings it was written with, or train from scratch in another "
        "--out directory";
    throw CheckpointError(msg);
  }
  const auto damaged = [&](const c10::Error& e) {
    return CheckpointError("checkpoint " + path.string() +
                           " is incomplete or damaged: " + e.what_without_backtrace());
  };
  torch::serialize::InputArchive model_archive, reference_archive, optimizer_archive;
  torch::Tensor rng_cpu, rng_cuda, ref_chosen, ref_rejected;
  BatchOrder order;
  try {
    a.read("model", model_archive);
    if (has_reference) a.read("reference", reference_archive);
    a.read("optimizer", optimizer_archive);
    torch::Tensor stored_order;
    a.read("order", stored_order);
    a.read("rng_cpu", rng_cpu);
    if (device.is_cuda()) a.read("rng_cuda", rng_cuda);
    if (precompute) {
      a.read("ref_chosen", ref_chosen);
      a.read("ref_rejected", ref_rejected);
    }
    const auto o = stored_order.cpu().contiguous();
    order.order.assign(o.data_ptr<int64_t>(), o.data_ptr<int64_t>() + o.numel());
  } catch (const c10::Error& e) {
    throw damaged(e);
  }

  // The archive's checksum only proves the bytes are the ones written; a crafted file can still
  // carry any state, so every field is range-checked before it can index or size anything.
  const auto corrupt = [&](const std::string& why) {
    return CheckpointError("checkpoint " + path.string() + " is corrupt: " + why);
  };
  RestoredCheckpoint restored{path, 0, st.config().options().steps};
  double train_seconds = 0.0;
  try {
    const auto& state = meta.at("state");
    restored.step = state.at("step").get<int64_t>();
    order.epoch = state.at("epoch").get<int64_t>();
    order.cursor = state.at("cursor").get<int64_t>();
    train_seconds = state.value("train_seconds", 0.0);
    std::istringstream rng(state.at("shuffle_rng").get<std::string>());
    rng >> order.rng;
    if (rng.fail()) throw corrupt("state 'shuffle_rng' is not a generator state");
    restored.written_for_steps = state.value("steps", restored.written_for_steps);
  } catch (const nlohmann::json::exception& e) {
    throw corrupt(std::string("state: ") + e.what());
  }
  const auto n = static_cast<int64_t>(order.order.size());
  const auto pairs = st.data().train.size();
  if (restored.step < 0)
    throw corrupt("state 'step' is negative (" + std::to_string(restored.step) + ")");
  if (order.epoch < 0)
    throw corrupt("state 'epoch' is negative (" + std::to_string(order.epoch) + ")");
  if (order.cursor < 0 || order.cursor > n)
    throw corrupt("state 'cursor' " + std::to_string(order.cursor) + " is outside [0, " +
                  std::to_string(n) + "]");
  if (n != 0 && n != static_cast<int64_t>(pairs))
    throw corrupt("the stored data order has " + std::to_string(n) + " entries for " +
                  std::to_string(pairs) + " training " + st.data().train.unit());
  std::vector<char> seen(order.order.size(), 0);
  for (const auto i : order.order) {
    if (i < 0 || i >= n || seen[static_cast<std::size_t>(i)])
      throw corrupt(std::string("the stored data order is not a permutation of the training ") +
                    st.data().train.unit());
    seen[static_cast<std::size_t>(i)] = 1;
  }

  try {
    st.model_->load(model_archive);
    if (has_reference) st.reference_->load(reference_archive);
    st.optimizer_->load(optimizer_archive);
    detail::set_generator_state(torch::kCPU, rng_cpu);
    if (device.is_cuda()) detail::set_generator_state(device, rng_cuda);
  } catch (const c10::Error& e) {
    throw damaged(e);
  }
  if (precompute) st.train_refs_ = {ref_chosen.to(device), ref_rejected.to(device)};
  st.batches_ = std::move(order);
  st.step_ = restored.step;
  st.train_seconds_ = train_seconds;
  return restored;
}

}  // namespace hafrm::examples::rm
