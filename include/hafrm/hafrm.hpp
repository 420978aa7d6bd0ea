// hafrm/hafrm.hpp: everything a trainer needs, in one include.
//
//   #include <hafrm/hafrm.hpp>
// example-begin hafrm_step PairModel
//   auto f = hafrm::forward_pair(model, reference, batch);          // one forward, both heads
//   auto out = hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo>{}(f.rewards, f.policy, step);
//   out.loss.backward();
// example-end
//
// Layers (each includes only those before it):
//   core/     torch-free math, usable from CUDA device code
//   kernels/  cpu/ (Eigen over raw pointers) and cuda/ (.cuh over raw pointers and a stream)
//   torch/    checks, dtype dispatch, autograd Functions, token_logprobs, linear_token_logprobs
//   losses/   loss functors over tensors: reward.hpp (Bradley-Terry, hinge, Plackett-Luce),
//             dpo_family.hpp (DPO and every reference-based pairwise loss), reference_free.hpp
//             (SimPO, AlphaPO, sft, CPO, ORPO), unpaired.hpp (KTO), modifiers.hpp (LD-DPO, WPO),
//             hybrid.hpp, the registry that builds any of it from a string, and
//             policy_base.hpp, the extension API for a loss of your own
//   model/    the model trait, the concatenated chosen/rejected forward pass, TR-DPO's
//             reference sync, scoring (score_sequences, score_batch), best-of-N rankings and
//             reward normalisation
#pragma once

#include "hafrm/core/macros.hpp"
#include "hafrm/core/math.hpp"
#include "hafrm/losses/dpo_family.hpp"
#include "hafrm/losses/f_divergence.hpp"
#include "hafrm/losses/hybrid.hpp"
#include "hafrm/losses/modifiers.hpp"
#include "hafrm/losses/policy_base.hpp"
#include "hafrm/losses/reference_free.hpp"
#include "hafrm/losses/registry.hpp"
#include "hafrm/losses/reward.hpp"
#include "hafrm/losses/trainer_helpers.hpp"
#include "hafrm/losses/unpaired.hpp"
#include "hafrm/losses/weighting.hpp"
#include "hafrm/model/best_of_n.hpp"
#include "hafrm/model/model_traits.hpp"
#include "hafrm/model/packed_pair.hpp"
#include "hafrm/model/pair_forward.hpp"
#include "hafrm/model/reference_sync.hpp"
#include "hafrm/model/reward_normalization.hpp"
#include "hafrm/model/reward_readout.hpp"
#include "hafrm/model/scoring.hpp"
#include "hafrm/torch/linear_logprobs.hpp"
#include "hafrm/torch/packed_logprobs.hpp"
#include "hafrm/torch/token_logprobs.hpp"
