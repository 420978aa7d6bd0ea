// reward_model.hpp: a trained haf_rm reward model outside training -- loaded from a checkpoint or
// from an export directory (for `haf_rm eval` and `haf_rm score`), and exported from a checkpoint
// (`haf_rm export`).
//
// An export directory holds the weights only, as one safetensors file, and a config.json with
// everything scoring needs; the SentencePiece model (if any) is copied beside them:
//   DIR/model.safetensors  every parameter of HafTransformer under its named_parameters() name,
//                          F32, "__metadata__": {"format": "pt"} (safetensors.hpp)
//   DIR/config.json        {"format": "hafrm-reward-model", "format_version": 1, "hafrm_version",
//                           "model", "tokenizer", "eos_id", "pad_id", "template", "assembly",
//                           "readout", "objective", "score": "reward_head", "normalization",
//                           "training"} (see ModelSpec and README.md)
//   DIR/tokenizer.model    the SentencePiece model (SentencePiece runs only)
// A model's score is the reward head at the readout position of prompt + response + EOS, then
// (r - mean) / std when "normalization" is set. The directory is written under a temporary name
// and renamed into place, so a failed export leaves nothing half-written.
//
//   rm::ExportOptions o{.checkpoint = "runs/haf_rm/checkpoint.pt", .out = "runs/haf_rm/model"};
//   rm::export_reward_model(o);
//   rm::RewardModel m = rm::load_reward_model("runs/haf_rm/model");  // or the checkpoint
//   auto f = hafrm::forward_pair(m.model, batch, m.forward_options());
#pragma once

#include <unistd.h>

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <hafrm/core/macros.hpp>
#include <hafrm/data/assemble.hpp>
#include <hafrm/data/tokenizer.hpp>
#include <hafrm/model/pair_forward.hpp>
#include <hafrm/model/reward_normalization.hpp>
#include <hafrm/model/reward_readout.hpp>
#include <hafrm/model/scoring.hpp>

#include "checkpoint.hpp"
#include "config.hpp"
#include "data.hpp"
#include "losses.hpp"
#include "model.hpp"
#include "safetensors.hpp"
#include "trainer_checkpoint.hpp"

namespace hafrm::examples::rm {

inline constexpr const char* kExportFormat = "hafrm-reward-model";
inline constexpr int kExportFormatVersion = 1;
inline constexpr const char* kExportWeights = "model.safetensors";
inline constexpr const char* kExportConfig = "config.json";
inline constexpr const char* kExportTokenizer = "tokenizer.model";

// A model directory or checkpoint that cannot be used: the message names the file and the field.
class ModelLoadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline std::string hafrm_version() {
  return std::to_string(HAFRM_VERSION_MAJOR) + "." + std::to_string(HAFRM_VERSION_MINOR) + "." +
         std::to_string(HAFRM_VERSION_PATCH);
}

// What scoring needs to know about a model: config.json's contents.
struct ModelSpec {
  ModelConfig model;
  std::string tokenizer_kind = "byte";   // "byte" | "sentencepiece"
  std::filesystem::path tokenizer_file;  // the SentencePiece model (sentencepiece only)
  int64_t eos_id = 0, pad_id = 0;
  std::string template_name = "phi";
  hafrm::data::AssemblyOptions assembly;
  hafrm::RewardReadout readout = hafrm::RewardReadout::kLastNonPad;
  std::string objective = "haf";  // bt | haf | dpo; lm | sft (checkpoints only)
  std::optional<hafrm::RewardNormalization> normalization;
  // Where the weights come from: "checkpoint", "step", "seed", "train_seconds" and the training
  // run's checkpoint identity (trainer_checkpoint.hpp).
  nlohmann::ordered_json training = nlohmann::ordered_json::object();

  bool score_is_implicit() const { return objective == "dpo"; }
  // lm and sft train the LM head alone: such a checkpoint starts a reward-model run
  // (--init-from) but has no reward to score with.
  bool has_reward() const { return !is_sequence_objective(objective); }
};

// Refuses a model without a reward (an lm or sft checkpoint) for `command`, naming `file`.
inline void require_reward(const ModelSpec& s, const std::string& command,
                           const std::string& file) {
  if (!s.has_reward())
    throw std::invalid_argument(command + ": " + file + " was trained with --objective " +
                                s.objective +
                                " (the LM head alone), so its reward head is untrained; train a "
                                "reward model from it with `haf_rm --init-from " +
                                file + "`");
}

inline std::string readout_name(hafrm::RewardReadout r) {
  return r == hafrm::RewardReadout::kLastPosition ? "last_position" : "last_non_pad";
}
inline std::string truncation_name(hafrm::data::TruncationMode t) {
  return t == hafrm::data::TruncationMode::kReference ? "reference" : "keep_eos";
}

// config.json of an export.
inline nlohmann::ordered_json model_spec_json(const ModelSpec& s) {
  nlohmann::ordered_json tok = {{"kind", s.tokenizer_kind}};
  if (s.tokenizer_kind == "sentencepiece") tok["file"] = kExportTokenizer;
  nlohmann::ordered_json norm = nullptr;
  if (s.normalization)
    norm = {{"mean", s.normalization->mean},
            {"std", s.normalization->std},
            {"count", s.normalization->count}};
  return {{"format", kExportFormat},
          {"format_version", kExportFormatVersion},
          {"hafrm_version", hafrm_version()},
          {"model", s.model.to_json()},
          {"tokenizer", tok},
          {"eos_id", s.eos_id},
          {"pad_id", s.pad_id},
          {"template",
           {{"name", s.template_name},
            {"prompt_format", s.assembly.prompt_template.prompt_format},
            {"response_format", s.assembly.prompt_template.response_format}}},
          {"assembly",
           {{"max_length", s.assembly.max_length},
            {"max_prompt_length", s.assembly.max_prompt_length},
            {"truncation", truncation_name(s.assembly.truncation)}}},
          {"readout", readout_name(s.readout)},
          {"objective", s.objective},
          {"score", "reward_head"},
          {"normalization", norm},
          {"training", s.training}};
}

namespace detail {

// Typed access to the fields of one JSON object; every error names the file and the field path.
class Fields {
 public:
  using Json = nlohmann::ordered_json;
  Fields(const Json& j, std::string file, std::string prefix)
      : j_(j), file_(std::move(file)), prefix_(std::move(prefix)) {
    if (!j_.is_object()) throw error("", "expected an object, got " + shown(j_));
  }
  ModelLoadError error(const std::string& key, const std::string& what) const {
    const std::string path = prefix_ + key;
    return ModelLoadError(file_ + ": " +
                          (path.empty() ? std::string("the document") : "field '" + path + "'") +
                          " " + what);
  }
  const Json& get(const std::string& key) const {
    if (!j_.contains(key)) throw error(key, "is missing");
    return j_.at(key);
  }
  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  int64_t integer(const std::string& key, int64_t lo = std::numeric_limits<int64_t>::min(),
                  int64_t hi = std::numeric_limits<int64_t>::max()) const {
    const auto& v = get(key);
    if (!v.is_number_integer()) throw error(key, "expected an integer, got " + shown(v));
    const auto x = v.get<int64_t>();
    if (x < lo || x > hi)
      throw error(key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                           std::to_string(x));
    return x;
  }
  double number(const std::string& key) const {
    const auto& v = get(key);
    if (!v.is_number()) throw error(key, "expected a number, got " + shown(v));
    return v.get<double>();
  }
  std::string string(const std::string& key) const {
    const auto& v = get(key);
    if (!v.is_string()) throw error(key, "expected a string, got " + shown(v));
    return v.get<std::string>();
  }
  std::string choice(const std::string& key, std::initializer_list<const char*> names) const {
    const auto s = string(key);
    std::string all;
    for (const char* n : names) {
      if (s == n) return s;
      all += (all.empty() ? "" : ", ") + std::string("\"") + n + "\"";
    }
    throw error(key, "must be one of " + all + ", got \"" + s + "\"");
  }
  bool boolean(const std::string& key) const {
    const auto& v = get(key);
    if (!v.is_boolean()) throw error(key, "expected true or false, got " + shown(v));
    return v.get<bool>();
  }
  Fields object(const std::string& key) const {
    return Fields(get(key), file_, prefix_ + key + ".");
  }
  const std::string& file() const { return file_; }

 private:
  static std::string shown(const Json& v) {
    auto s = v.dump();
    return s.size() > 40 ? s.substr(0, 40) + "..." : s;
  }
  const Json& j_;
  std::string file_, prefix_;
};

inline ModelConfig model_config_from(const Fields& f) {
  ModelConfig c;
  c.vocab_size = f.integer("vocab_size", 2, int64_t{1} << 31);
  c.d_model = f.integer("d_model", 1, 1 << 16);
  c.n_layers = f.integer("n_layers", 1, 1024);
  c.n_heads = f.integer("n_heads", 1, 1024);
  c.d_ff = f.integer("d_ff", 1, 1 << 20);
  c.dropout = f.number("dropout");
  c.positions = f.choice("positions", {"rope", "alibi"});
  c.fused_lm_head = f.boolean("fused_lm_head");
  try {
    c.validate();
  } catch (const std::exception& e) {
    throw f.error("", e.what());
  }
  return c;
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw ModelLoadError("cannot open " + p.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void check_template_format(const Fields& f, const std::string& key, const std::string& s,
                                  const std::string& placeholder) {
  const auto at = s.find(placeholder);
  if (at == std::string::npos || s.find(placeholder, at + 1) != std::string::npos)
    throw f.error(key, "must contain " + placeholder + " exactly once");
}

}  // namespace detail

// Reads config.json of an export directory (ModelLoadError naming the file and field).
inline ModelSpec read_model_spec(const std::filesystem::path& dir) {
  const auto path = dir / kExportConfig;
  const std::string file = path.string();
  if (!std::filesystem::exists(path))
    throw ModelLoadError(file + " is missing: " + dir.string() +
                         " is not a haf_rm export directory (haf_rm export writes one)");
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(detail::read_text(path));
  } catch (const nlohmann::json::exception& e) {
    throw ModelLoadError(file + ": not valid JSON: " + e.what());
  }
  detail::Fields f(j, file, "");
  if (f.string("format") != kExportFormat)
    throw f.error("format", "must be \"" + std::string(kExportFormat) + "\", got \"" +
                                f.string("format") + "\"");
  const auto version = f.integer("format_version");
  if (version != kExportFormatVersion)
    throw f.error("format_version", "is " + std::to_string(version) + "; this haf_rm (hafrm " +
                                        hafrm_version() + ") reads format_version " +
                                        std::to_string(kExportFormatVersion) + " only");
  ModelSpec s;
  s.model = detail::model_config_from(f.object("model"));
  const auto tok = f.object("tokenizer");
  s.tokenizer_kind = tok.choice("kind", {"byte", "sentencepiece"});
  if (s.tokenizer_kind == "sentencepiece") {
    const std::filesystem::path name = tok.string("file");
    if (name.empty() || name.has_parent_path() || name.is_absolute())
      throw tok.error("file",
                      "must be a file name inside the directory, got \"" + name.string() + "\"");
    s.tokenizer_file = dir / name;
  }
  s.eos_id = f.integer("eos_id", 0, s.model.vocab_size - 1);
  s.pad_id = f.integer("pad_id", 0, s.model.vocab_size - 1);
  const auto tmpl = f.object("template");
  s.template_name = tmpl.string("name");
  s.assembly.prompt_template.prompt_format = tmpl.string("prompt_format");
  s.assembly.prompt_template.response_format = tmpl.string("response_format");
  detail::check_template_format(tmpl, "prompt_format", s.assembly.prompt_template.prompt_format,
                                "{prompt}");
  detail::check_template_format(tmpl, "response_format", s.assembly.prompt_template.response_format,
                                "{response}");
  const auto asm_ = f.object("assembly");
  s.assembly.max_length = asm_.integer("max_length", 2, int64_t{1} << 20);
  s.assembly.max_prompt_length = asm_.integer("max_prompt_length", 1, s.assembly.max_length - 1);
  s.assembly.truncation = asm_.choice("truncation", {"keep_eos", "reference"}) == "reference"
                              ? hafrm::data::TruncationMode::kReference
                              : hafrm::data::TruncationMode::kKeepEos;
  s.readout = f.choice("readout", {"last_non_pad", "last_position"}) == "last_position"
                  ? hafrm::RewardReadout::kLastPosition
                  : hafrm::RewardReadout::kLastNonPad;
  s.objective = f.choice("objective", {"bt", "haf", "dpo"});
  f.choice("score", {"reward_head"});
  if (f.has("normalization")) {
    const auto n = f.object("normalization");
    hafrm::RewardNormalization norm{
        .mean = n.number("mean"), .std = n.number("std"), .count = n.integer("count", 2)};
    if (!std::isfinite(norm.mean)) throw n.error("mean", "must be finite");
    if (!(std::isfinite(norm.std) && norm.std > 0.0))
      throw n.error("std", "must be finite and > 0");
    s.normalization = norm;
  } else {
    f.get("normalization");  // present (null), so a dropped field is noticed
  }
  if (j.contains("training") && j["training"].is_object()) s.training = j["training"];
  return s;
}

// The loaded model and what it needs to run. `reference`: the frozen initial weights, from
// checkpoints of runs that have a policy term (null for exports and reward-only runs).
struct RewardModel {
  std::filesystem::path source;
  bool from_export = false;
  ModelSpec spec;
  std::unique_ptr<const hafrm::data::Tokenizer> tokenizer;
  HafTransformer model{nullptr};
  HafTransformer reference{nullptr};
  torch::Device device{torch::kCPU};

  // The pair forward's options: the model's readout, the tokenizer's pad id; rewards only
  // (Heads::kReward) when there is no reference to compare log-probs with.
  hafrm::PairForwardOptions forward_options() const {
    hafrm::PairForwardOptions o;
    o.readout = spec.readout;
    o.pad_id = spec.pad_id;
    if (!reference) o.heads = hafrm::Heads::kReward;
    return o;
  }
  // hafrm::score_sequences' options for this model (raw scores: no normalisation).
  hafrm::ScoreOptions score_options() const {
    hafrm::ScoreOptions o;
    o.readout = spec.readout;
    o.pad_id = spec.pad_id;
    o.device = device;
    return o;
  }
};

struct LoadOptions {
  torch::Device device{torch::kCPU};
  // A checkpoint of a SentencePiece run: the model file, when it is no longer where training
  // read it (checked against the fingerprint the checkpoint stores).
  std::string tokenizer;
};

// The parameters of `m` as safetensors tensors, named as named_parameters() names them.
inline std::vector<NamedTensor> model_tensors(const HafTransformer& m) {
  std::vector<NamedTensor> v;
  for (const auto& p : m->named_parameters()) v.push_back({p.key(), p.value()});
  return v;
}

// Copies the tensors of `f` into `m`: exactly the model's parameter names, with its shapes.
inline void load_model_tensors(HafTransformer& m, const SafetensorsFile& f,
                               const std::string& file) {
  torch::NoGradGuard ng;
  std::size_t matched = 0;
  for (auto& p : m->named_parameters()) {
    const torch::Tensor* t = f.find(p.key());
    if (!t)
      throw ModelLoadError(file + ": tensor '" + p.key() + "' is missing (config.json's model " +
                           m->config.to_json().dump() + " has it)");
    if (t->sizes() != p.value().sizes())
      throw ModelLoadError(file + ": tensor '" + p.key() + "' has shape " + c10::str(t->sizes()) +
                           ", config.json's model expects " + c10::str(p.value().sizes()));
    p.value().copy_(*t);
    ++matched;
  }
  if (matched != f.tensors.size())
    for (const auto& t : f.tensors)
      if (!m->named_parameters().contains(t.name))
        throw ModelLoadError(file + ": tensor '" + t.name +
                             "' is not a parameter of the model config.json describes");
}

namespace detail {

inline ModelSpec checkpoint_spec(const nlohmann::ordered_json& meta, const std::string& file,
                                 const LoadOptions& o) {
  Fields f(meta, file, "meta.");
  const auto id = f.object("identity");
  ModelSpec s;
  s.model = model_config_from(id.object("model"));
  const auto tok = id.object("tokenizer");
  s.tokenizer_kind = tok.choice("kind", {"byte", "sentencepiece"});
  s.eos_id = tok.integer("eos_id", 0, s.model.vocab_size - 1);
  if (s.tokenizer_kind == "sentencepiece") {
    std::string path = o.tokenizer;
    if (path.empty() && meta.contains("tokenizer_file") && meta["tokenizer_file"].is_string())
      path = meta["tokenizer_file"].get<std::string>();
    if (path.empty())
      throw ModelLoadError(file +
                           " was trained with a SentencePiece tokenizer whose file it "
                           "does not name; pass --tokenizer FILE.model");
    const auto want = tok.string("model_file_fnv1a");
    if (!std::filesystem::is_regular_file(path))
      throw ModelLoadError(file + ": its SentencePiece model " + path +
                           " is not there; pass --tokenizer FILE.model");
    if (const auto got = file_fingerprint(path); got != want)
      throw ModelLoadError(file + ": SentencePiece model " + path + " (fnv1a " + got +
                           ") is not the one it was trained with (field "
                           "'meta.identity.tokenizer.model_file_fnv1a' " +
                           want + ")");
    s.tokenizer_file = std::filesystem::absolute(path);
  }
  const auto obj = id.object("objective");
  s.objective = obj.choice("objective", {"bt", "haf", "dpo", "lm", "sft"});
  s.readout = obj.choice("readout", {"last-token", "last-position"}) == "last-position"
                  ? hafrm::RewardReadout::kLastPosition
                  : hafrm::RewardReadout::kLastNonPad;
  const auto data = id.object("data");
  s.template_name = data.choice("template", {"phi", "mistral", "raw"});
  s.assembly.prompt_template = template_by_name(s.template_name);
  s.assembly.max_length = data.integer("max_length", 2, int64_t{1} << 20);
  s.assembly.max_prompt_length = data.integer("max_prompt_length", 1, s.assembly.max_length - 1);
  s.assembly.truncation = hafrm::data::TruncationMode::kKeepEos;  // the trainer's
  const auto state = f.object("state");
  s.training = {{"checkpoint", std::filesystem::absolute(file).string()},
                {"step", state.integer("step", 0)},
                {"seed", id.object("optimisation").get("seed")},
                {"train_seconds", meta["state"].value("train_seconds", 0.0)},
                {"identity", meta["identity"]}};
  return s;
}

inline std::unique_ptr<const hafrm::data::Tokenizer> spec_tokenizer(ModelSpec& s,
                                                                    const std::string& file) {
  std::unique_ptr<const hafrm::data::Tokenizer> t;
  try {
    t = hafrm::data::make_tokenizer(s.tokenizer_kind == "byte" ? std::string("byte")
                                                               : s.tokenizer_file.string());
  } catch (const std::exception& e) {
    throw ModelLoadError(file + ": tokenizer: " + e.what());
  }
  if (t->vocab_size() != s.model.vocab_size)
    throw ModelLoadError(file + ": field 'model.vocab_size' is " +
                         std::to_string(s.model.vocab_size) + " but the tokenizer (" + t->name() +
                         ") has " + std::to_string(t->vocab_size()) + " pieces");
  if (t->eos_id() != s.eos_id)
    throw ModelLoadError(file + ": field 'eos_id' is " + std::to_string(s.eos_id) +
                         " but the tokenizer's EOS is " + std::to_string(t->eos_id()));
  return t;
}

}  // namespace detail

namespace detail {

// The model's initialisation draws from torch's CPU generator; loading weights over it must not
// move a training run's random stream, so the generator's state is put back afterwards.
class KeepCpuGenerator {
 public:
  KeepCpuGenerator() : state_(generator_state(torch::kCPU)) {}
  ~KeepCpuGenerator() {
    try {
      set_generator_state(torch::kCPU, state_);
    } catch (...) {  // a destructor must not throw
    }
  }
  KeepCpuGenerator(const KeepCpuGenerator&) = delete;
  KeepCpuGenerator& operator=(const KeepCpuGenerator&) = delete;

 private:
  torch::Tensor state_;
};

}  // namespace detail

// Loads a model from an export directory or a checkpoint file, in eval mode on o.device. Leaves
// torch's CPU random state as it found it.
inline RewardModel load_reward_model(const std::filesystem::path& path, const LoadOptions& o = {}) {
  namespace fs = std::filesystem;
  detail::KeepCpuGenerator keep_rng;
  RewardModel m;
  m.source = path;
  m.device = o.device;
  if (!fs::exists(path))
    throw ModelLoadError(path.string() + ": no such model directory or checkpoint");
  if (fs::is_directory(path)) {
    m.from_export = true;
    m.spec = read_model_spec(path);
    const std::string config = (path / kExportConfig).string();
    m.tokenizer = detail::spec_tokenizer(m.spec, config);
    if (m.spec.pad_id != m.tokenizer->pad_id())
      throw ModelLoadError(config + ": field 'pad_id' is " + std::to_string(m.spec.pad_id) +
                           " but the tokenizer pads with " + std::to_string(m.tokenizer->pad_id()));
    const auto weights = path / kExportWeights;
    if (!fs::exists(weights)) throw ModelLoadError(weights.string() + " is missing");
    const auto file = read_safetensors(weights);
    m.model = HafTransformer(m.spec.model);
    load_model_tensors(m.model, file, weights.string());
  } else {
    const std::string file = path.string();
    auto a = read_checkpoint(path, torch::kCPU);  // CheckpointError for a damaged file
    nlohmann::ordered_json meta;
    try {
      c10::IValue v;
      a.read("meta", v);
      meta = nlohmann::ordered_json::parse(v.toStringRef());
    } catch (const std::exception&) {
      throw ModelLoadError(file + " holds no haf_rm trainer metadata (field 'meta')");
    }
    if (!meta.is_object() || meta.value("format", "") != kTrainerCheckpointFormat)
      throw ModelLoadError(file + ": field 'meta.format' is not \"" +
                           std::string(kTrainerCheckpointFormat) + "\"; not a haf_rm checkpoint");
    m.spec = detail::checkpoint_spec(meta, file, o);
    m.tokenizer = detail::spec_tokenizer(m.spec, file);
    m.spec.pad_id = m.tokenizer->pad_id();
    m.model = HafTransformer(m.spec.model);
    torch::serialize::InputArchive model_archive, reference_archive;
    try {
      a.read("model", model_archive);
      m.model->load(model_archive);
      if (a.try_read("reference", reference_archive)) {
        m.reference = HafTransformer(m.spec.model);
        m.reference->load(reference_archive);
        for (auto& p : m.reference->parameters()) p.requires_grad_(false);
      }
    } catch (const c10::Error& e) {
      throw ModelLoadError(file + " is incomplete or damaged: " + e.what_without_backtrace());
    }
  }
  m.model->to(o.device);
  m.model->eval();
  if (m.reference) {
    m.reference->to(o.device);
    m.reference->eval();
  }
  return m;
}

// The normalisation over every response of a preference file (chosen and rejected alike, as
// assemble_single assembles them), fitted on the raw scores `haf_rm score` gives them.
inline hafrm::RewardNormalization fit_normalization(RewardModel& m,
                                                    const std::string& preference_file) {
  const Split s = load_split("normalize", preference_file, *m.tokenizer, m.spec.assembly, false);
  std::vector<std::vector<int64_t>> seqs;
  for (const auto& p : s.pairs) seqs.push_back(p.chosen_ids), seqs.push_back(p.rejected_ids);
  try {
    return hafrm::RewardNormalization::fit(
        hafrm::score_sequences(m.model, seqs, m.score_options()));
  } catch (const c10::Error& e) {
    throw std::invalid_argument("--normalize " + preference_file + ": " +
                                e.what_without_backtrace());
  }
}

struct ExportOptions {
  std::filesystem::path checkpoint;
  std::filesystem::path out;
  std::string normalize;  // a preference file to fit the normalisation on ("" = none)
  std::string tokenizer;  // see LoadOptions::tokenizer
};

namespace detail {

// Moves the finished `tmp` directory to `dir`. An existing `dir` is replaced only when it is
// empty or an export (config.json of this format), so nothing else is ever overwritten.
inline void install_directory(const std::filesystem::path& tmp, const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  if (!fs::exists(dir)) {
    fs::rename(tmp, dir);
    return;
  }
  bool ours = fs::is_directory(dir) && fs::is_empty(dir);
  if (!ours && fs::is_regular_file(dir / kExportConfig)) {
    const auto j = nlohmann::json::parse(read_text(dir / kExportConfig), nullptr, false);
    ours = j.is_object() && j.value("format", "") == kExportFormat;
  }
  if (!ours)
    throw std::runtime_error(
        "--out " + dir.string() +
        " exists and is not a haf_rm export directory; refusing to replace it");
  const fs::path old = dir.string() + ".old-" + std::to_string(::getpid());
  fs::remove_all(old);
  fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
}

}  // namespace detail

// Writes the export directory of a checkpoint (see the top of this file); returns its spec.
inline ModelSpec export_reward_model(const ExportOptions& o) {
  namespace fs = std::filesystem;
  if (o.out.empty()) throw std::invalid_argument("export: --out is required");
  if (fs::is_directory(o.checkpoint))
    throw std::invalid_argument("export: --checkpoint " + o.checkpoint.string() +
                                " is a directory; export reads a checkpoint file (checkpoint.pt)");
  LoadOptions lo;
  lo.tokenizer = o.tokenizer;
  RewardModel m = load_reward_model(o.checkpoint, lo);
  require_reward(m.spec, "export", o.checkpoint.string());
  if (m.spec.score_is_implicit())
    throw std::invalid_argument(
        "export: " + o.checkpoint.string() +
        " was trained with --objective dpo, which ranks by the implicit reward (policy against "
        "reference log-probs); an export scores with the reward head, which dpo leaves untrained");

  fs::path dir = o.out.lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // "out/" -> "out"
  if (dir.has_parent_path()) fs::create_directories(dir.parent_path());
  const fs::path tmp = dir.string() + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp);
  try {
    fs::create_directory(tmp);
    if (!o.normalize.empty()) m.spec.normalization = fit_normalization(m, o.normalize);
    write_safetensors(tmp / kExportWeights, model_tensors(m.model), {{"format", "pt"}});
    if (m.spec.tokenizer_kind == "sentencepiece")
      fs::copy_file(m.spec.tokenizer_file, tmp / kExportTokenizer);
    {
      std::ofstream cfg(tmp / kExportConfig, std::ios::trunc);
      cfg << model_spec_json(m.spec).dump(2) << "\n";
      cfg.flush();
      if (!cfg) throw std::runtime_error("write error on " + (tmp / kExportConfig).string());
    }
    for (const auto& e : fs::directory_iterator(tmp)) detail::fsync_path(e.path(), O_RDONLY);
    detail::fsync_path(tmp, O_RDONLY);
    detail::install_directory(tmp, dir);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw;
  }
  if (dir.has_parent_path()) detail::fsync_path(dir.parent_path(), O_RDONLY);
  return m.spec;
}

}  // namespace hafrm::examples::rm
