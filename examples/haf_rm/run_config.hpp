// run_config.hpp: the resolved configuration of one haf_rm run (RunConfig): a TrainConfig that
// passed every check, with what it implies worked out once -- the device, the objective's loss
// specs, the prompt assembly, the forward pass's read-out and log-prob backend. It is made
// once, by RunConfig::resolve, and has only const accessors: everything that trains, evaluates,
// checkpoints or reports reads this object and nothing writes it.
//
//   hafrm::examples::rm::TrainConfig options;  // defaults: hybrid model on data/synthetic
//   const auto cfg = hafrm::examples::rm::RunConfig::resolve(options);  // std::invalid_argument
//   torch::Device d = cfg.device();
//   double lr = cfg.options().lr;
#pragma once

#include <torch/torch.h>

#include <stdexcept>
#include <string>
#include <utility>

#include <hafrm/data/assemble.hpp>
#include <hafrm/model/pair_forward.hpp>

#include "config.hpp"
#include "losses.hpp"

namespace hafrm::examples::rm {

class RunConfig {
 public:
  // Checks `options` (validate_config, the loss specs, the template) and resolves it for
  // `device`, the device this process trains on: options.device itself, or the one
  // DataParallel::from_environment chose for this rank. Throws std::invalid_argument naming the
  // option, or std::runtime_error for a CUDA device without CUDA.
  static RunConfig resolve(TrainConfig options, std::string device) {
    options.device = std::move(device);
    validate_config(options);
    if (options.device.starts_with("cuda") && !torch::cuda::is_available())
      throw std::runtime_error("--device " + options.device +
                               ": CUDA is not available (no GPU, or a CPU-only LibTorch)");
    RunConfig c;
    c.device_ = torch::Device(options.device);
    c.objective_ = resolve_objective(options.objective, options.reward_loss, options.policy_loss,
                                     options.weighting);
    // The registry refuses a bad loss or weighting spec here.
    const bool reward_only = !c.objective_.sequence && !make_objective(c.objective_).needs_policy();
    if (reward_only && options.vocab_parallel)
      throw std::invalid_argument(
          "--vocab-parallel splits the LM head over the processes, but --objective " +
          options.objective + " (weighting " + c.objective_.weighting +
          ") never gives the policy term a weight, so the LM head does not run; drop "
          "--vocab-parallel (plain data parallel splits the batch)");
    c.assembly_.prompt_template = template_by_name(options.prompt_template);
    c.assembly_.max_length = options.max_length;
    c.assembly_.max_prompt_length = options.max_prompt_length;
    if (options.readout == "last-position")
      c.forward_options_.readout = hafrm::RewardReadout::kLastPosition;
    if (options.logprob_backend == "reference")
      c.forward_options_.logprobs.backend = hafrm::LogProbBackend::kReference;
    c.options_ = std::move(options);
    return c;
  }
  static RunConfig resolve(TrainConfig options) {
    std::string device = options.device;
    return resolve(std::move(options), std::move(device));
  }

  // The settings as checked; options().device names device().
  const TrainConfig& options() const { return options_; }
  const torch::Device& device() const { return device_; }
  // The objective's loss and weighting specs, its defaults filled in.
  const ObjectiveSpec& objective() const { return objective_; }
  // How records become token pairs: template and lengths.
  const hafrm::data::AssemblyOptions& assembly() const { return assembly_; }
  // The forward pass's reward read-out and log-prob backend; the training state adds the
  // tokenizer's pad id and, under --vocab-parallel, the sharded log-prob path.
  const hafrm::PairForwardOptions& forward_options() const { return forward_options_; }
  // --reference precompute: the reference log-probs are computed once and cached.
  bool precompute_reference() const { return options_.reference == "precompute"; }

 private:
  RunConfig() = default;

  TrainConfig options_;
  torch::Device device_{torch::kCPU};
  ObjectiveSpec objective_;
  hafrm::data::AssemblyOptions assembly_;
  hafrm::PairForwardOptions forward_options_;
};

}  // namespace hafrm::examples::rm
