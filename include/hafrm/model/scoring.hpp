// hafrm/model/scoring.hpp: scoring with a trained reward model: sequences in (token ids of any
// lengths), one reward per sequence out, read exactly as in training (the same RewardReadout).
//
// example-begin score_sequences PairModel
//   std::vector<std::vector<int64_t>> seqs{{3, 1, 4, 1, 5}, {9, 2}, {6, 5, 3}};   // any lengths
//   torch::Tensor r = hafrm::score_sequences(model, seqs);   // [3] float32 on the CPU
//   hafrm::Ranking k = hafrm::rank_rewards(r);                // best first (best_of_n.hpp)
//   auto norm = hafrm::RewardNormalization::fit(r);           // fitted on a reference set
//   torch::Tensor z = hafrm::score_sequences(model, seqs, {.normalization = norm});
//   torch::Tensor b = hafrm::score_batch(model, ids_c, mask_c);   // one padded batch [B]
// example-end
//
// What a call does:
//  - the model runs with Heads::kReward (model_traits.hpp): a model that takes hafrm::Heads skips
//    its LM head, so no [B, T, V] logits are formed; one with only the two-argument haf_forward
//    runs whole and only its token_rewards are read;
//  - under torch::InferenceMode, with a torch::nn module (or ModuleHolder) or a TorchScript
//    module in eval mode for the call; every submodule's training flag is put back afterwards,
//    also when the call throws;
//  - score_sequences right-pads with pad_id (mask 0) and forms batches of at most
//    max_batch_sequences rows and max_batch_tokens = rows * longest row (a sequence longer than
//    that goes alone). With bucket_by_length, sequences are sorted by length first (stable), so
//    each batch holds similar lengths and little padding; the rewards come back in input order.
//    With RewardReadout::kLastNonPad (the default) a reward does not depend on the batch it was
//    in, for any model whose outputs at real positions do not depend on padding (a causal model
//    with right padding). With kLastPosition the reward is read at the padded batch's last
//    position, as in training, so a shorter sequence's reward depends on its batch.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "hafrm/model/best_of_n.hpp"
#include "hafrm/model/model_traits.hpp"
#include "hafrm/model/reward_normalization.hpp"
#include "hafrm/model/reward_readout.hpp"
#include "hafrm/torch/checks.hpp"

namespace hafrm {

struct ScoreOptions {
  RewardReadout readout = RewardReadout::kLastNonPad;
  int64_t max_batch_sequences = 64;  // rows per forward
  int64_t max_batch_tokens = 16384;  // rows * longest row per forward
  bool bucket_by_length = true;      // false: input order, padded to each batch's longest
  int64_t pad_id = 0;
  std::optional<torch::Device> device;  // default: the model's parameters' device (CPU if none)
  std::optional<RewardNormalization> normalization;           // applied to the returned rewards
  std::function<void(int64_t done, int64_t total)> progress;  // optional, after every batch
};

namespace detail {

// A torch::nn::ModuleHolder (TORCH_MODULE) or a std::shared_ptr to a module.
template <class M>
concept NnModuleHandle = requires(M& m) {
  { m.get() } -> std::convertible_to<torch::nn::Module*>;
};

// The torch::nn::Module behind a model, or nullptr when it is not one.
template <class M>
torch::nn::Module* as_nn_module(M& model) {
  if constexpr (std::is_base_of_v<torch::nn::Module, M>) {
    return &model;
  } else if constexpr (NnModuleHandle<M>) {
    return model.get();
  } else {
    return nullptr;
  }
}

// Puts a model in eval mode and, on destruction, every (sub)module's training flag back.
// Flags are restored in pre-order (a module before its children): train(on) sets a whole subtree,
// so each child's own flag is applied after its parent's.
template <class M>
class EvalModeGuard {
 public:
  explicit EvalModeGuard(M& model) {
    if constexpr (std::is_same_v<M, torch::jit::Module>) {
      // Each scripted (sub)module's own "training" attribute, where it has one.
      for (torch::jit::Module sub : model.modules()) {
        if (!sub.hasattr("training")) continue;
        saved_.emplace_back(sub, sub.attr("training").toBool());
        sub.setattr("training", false);
      }
    } else if (torch::nn::Module* m = as_nn_module(model)) {
      root_ = m;
      root_training_ = m->is_training();
      for (auto& sub : m->modules(/*include_self=*/false))
        children_.emplace_back(sub, sub->is_training());
      m->train(false);
    }
  }
  ~EvalModeGuard() {
    try {
      if (root_ != nullptr) root_->train(root_training_);
      for (auto& [sub, on] : children_) sub->train(on);
      for (auto& [sub, on] : saved_) sub.setattr("training", on);
    } catch (...) {  // a destructor must not throw; the flags are then left as they are
    }
  }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  torch::nn::Module* root_ = nullptr;
  bool root_training_ = false;
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> children_;
  std::vector<std::pair<torch::jit::Module, bool>> saved_;
};

// The device of the model's first parameter; the CPU when it has none or is not a module.
template <class M>
torch::Device model_device(M& model) {
  if constexpr (std::is_same_v<M, torch::jit::Module>) {
    for (const at::Tensor& p : model.parameters()) return p.device();
  } else if (torch::nn::Module* m = as_nn_module(model)) {
    for (const auto& p : m->parameters()) return p.device();
  }
  return torch::kCPU;
}

// The model's rewards [B] (float32) for one batch, under the caller's guards.
template <class M>
torch::Tensor reward_batch(M& model, const torch::Tensor& ids, const torch::Tensor& mask,
                           RewardReadout readout, const char* fn) {
  ModelOutputs out = model_forward(model, ids, mask, Heads::kReward);
  HAFRM_CHECK_ARG(out.token_rewards.defined(), fn, "model outputs",
                  "must hold token_rewards (the reward head's output)");
  return read_rewards(out.token_rewards, mask, readout).to(torch::kFloat);
}

}  // namespace detail

// One reward per sequence (every token of a sequence is real), float32 on the CPU, in input order;
// eval mode, inference mode, Heads::kReward (see above). An empty list gives an empty tensor.
template <class M>
torch::Tensor score_sequences(M& model, const std::vector<std::vector<int64_t>>& seqs,
                              const ScoreOptions& o = {}) {
  constexpr const char* fn = "score_sequences";
  HAFRM_CHECK_ARG(o.max_batch_sequences >= 1, fn, "options.max_batch_sequences",
                  "expected >= 1, got ", o.max_batch_sequences);
  HAFRM_CHECK_ARG(o.max_batch_tokens >= 1, fn, "options.max_batch_tokens", "expected >= 1, got ",
                  o.max_batch_tokens);
  HAFRM_CHECK_ARG(o.pad_id >= 0, fn, "options.pad_id", "expected a token id >= 0, got ", o.pad_id);
  if (o.normalization) o.normalization->validate();
  const auto n = static_cast<int64_t>(seqs.size());
  for (int64_t i = 0; i < n; ++i) {
    const auto& s = seqs[static_cast<size_t>(i)];
    HAFRM_CHECK_ARG(!s.empty(), fn, "seqs",
                    "expected every sequence to hold at least one token; sequence ", i,
                    " is empty");
    for (size_t j = 0; j < s.size(); ++j)
      HAFRM_CHECK_ARG(s[j] >= 0, fn, "seqs", "expected token ids >= 0; sequence ", i, " has ", s[j],
                      " at position ", j);
  }
  if (n == 0) return torch::empty({0}, torch::kFloat);

  const auto len = [&](int64_t i) {
    return static_cast<int64_t>(seqs[static_cast<size_t>(i)].size());
  };
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (o.bucket_by_length)
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return len(a) < len(b); });
  // Greedy cut: a batch grows while its rows and rows * longest stay within the limits.
  std::vector<std::pair<size_t, size_t>> batches;  // [begin, end) into order
  size_t begin = 0;
  int64_t longest = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const int64_t l = std::max(longest, len(order[k]));
    const auto rows = static_cast<int64_t>(k - begin + 1);
    if (rows > 1 && (rows > o.max_batch_sequences || rows * l > o.max_batch_tokens)) {
      batches.emplace_back(begin, k);
      begin = k;
      longest = len(order[k]);
    } else {
      longest = l;
    }
  }
  batches.emplace_back(begin, order.size());

  const torch::Device device = o.device.value_or(detail::model_device(model));
  std::vector<float> result(static_cast<size_t>(n));
  {
    detail::EvalModeGuard<M> eval(model);
    torch::InferenceMode inference;
    int64_t done = 0;
    for (const auto& [b0, b1] : batches) {
      const auto rows = static_cast<int64_t>(b1 - b0);
      int64_t T = 0;
      for (size_t k = b0; k < b1; ++k) T = std::max(T, len(order[k]));
      auto ids = torch::full({rows, T}, o.pad_id, torch::kLong);
      auto mask = torch::zeros({rows, T}, torch::kLong);
      int64_t* pi = ids.data_ptr<int64_t>();
      int64_t* pm = mask.data_ptr<int64_t>();
      for (size_t k = b0; k < b1; ++k) {
        const auto& s = seqs[static_cast<size_t>(order[k])];
        const int64_t row = static_cast<int64_t>(k - b0) * T;
        std::copy(s.begin(), s.end(), pi + row);
        std::fill(pm + row, pm + row + static_cast<int64_t>(s.size()), int64_t{1});
      }
      const torch::Tensor r =
          detail::reward_batch(model, ids.to(device), mask.to(device), o.readout, fn)
              .to(torch::kCPU)
              .contiguous();
      const float* pr = r.data_ptr<float>();
      for (size_t k = b0; k < b1; ++k) result[static_cast<size_t>(order[k])] = pr[k - b0];
      done += rows;
      if (o.progress) o.progress(done, n);
    }
  }
  // Built outside inference mode: a normal tensor the caller may use anywhere.
  auto rewards = torch::from_blob(result.data(), {n}, torch::kFloat).clone();
  return o.normalization ? o.normalization->apply(rewards) : rewards;
}

// One padded batch: ids [B, T] (int64 or int32), mask [B, T] (1 real, 0 padding; every row needs
// a real token for kLastNonPad) -> rewards [B], float32 on the model's output device. Eval mode,
// inference mode, Heads::kReward, as score_sequences; ids and mask are used where they are.
template <class M>
torch::Tensor score_batch(M& model, const torch::Tensor& ids, const torch::Tensor& mask,
                          RewardReadout readout = RewardReadout::kLastNonPad) {
  constexpr const char* fn = "score_batch";
  detail::check_integral(ids, fn, "ids");
  detail::check_dim(ids, 2, fn, "ids");
  HAFRM_CHECK_ARG(ids.size(0) >= 1 && ids.size(1) >= 1, fn, "ids",
                  "expected at least one sequence of at least one token, got shape ", ids.sizes());
  detail::check_defined(mask, fn, "mask");
  detail::check_same_shape(ids, mask, fn, "ids", "mask");
  torch::Tensor r;
  {
    detail::EvalModeGuard<M> eval(model);
    torch::InferenceMode inference;
    r = detail::reward_batch(model, ids, mask, readout, fn);
  }
  return r.clone();  // a normal tensor (not an inference one) for the caller
}

}  // namespace hafrm
