// hafrm/model/model_traits.hpp: the one place that knows how to get LM logits (or the LM head's
// input and weight) and per-position rewards out of a user's model.
//
// Two ways to plug a model in:
//  1. give it a member haf_forward, found on the module itself or through a
//     torch::nn::ModuleHolder's operator-> (TORCH_MODULE(MyModule) then works as is), or
// example-begin model_member global
//   struct MyModuleImpl : torch::nn::Module {
//     hafrm::ModelOutputs haf_forward(const torch::Tensor& input_ids,
//                                     const torch::Tensor& attention_mask);
//   };
// example-end
//  2. specialise the trait, for a type you cannot change:
// example-begin model_trait global
//   template <> struct hafrm::model_traits<MyModel> {
//     static hafrm::ModelOutputs forward(MyModel& m, const torch::Tensor& ids,
//                                        const torch::Tensor& mask) {
//       return m.run(ids, mask);   // whatever MyModel's own call is
//     }
//   };
// example-end
// example-begin model_forward TraitModel
//   hafrm::ModelOutputs out = hafrm::model_forward(my_model, ids, mask);   // either way
// example-end
//
// Skipping the LM head. Scoring (model/scoring.hpp) and reward-only training (forward_pair with
// PairForwardOptions::heads = Heads::kReward) need only token_rewards. A model says it can skip
// its LM head by taking a third argument, hafrm::Heads, in either form above:
// example-begin model_heads global
//   struct MyRewardModelImpl : torch::nn::Module {
//     hafrm::ModelOutputs haf_forward(const torch::Tensor& input_ids,
//                                     const torch::Tensor& attention_mask, hafrm::Heads heads);
//   };   // or: static ModelOutputs forward(M&, ids, mask, hafrm::Heads) in a specialisation
// example-end
// With Heads::kReward it fills token_rewards and may leave logits, lm_hidden and lm_head_weight
// undefined, so no [B, T, V] product is formed. model_forward(model, ids, mask, heads) calls that
// form; a model with only the two-argument form is called without it (heads is then ignored and
// its LM head runs). The two-argument model_forward is Heads::kAll. A sequence classifier with no
// LM head at all needs neither: it returns token_rewards only, and trains through the reward-only
// path.
// TorchScript modules: include "hafrm/model/torchscript.hpp" for a ready specialisation.
#pragma once

#include <torch/torch.h>

#include <concepts>
#include <type_traits>

namespace hafrm {

// Which heads a forward pass must evaluate.
enum class Heads {
  kAll,     // the LM head (logits, or lm_hidden and lm_head_weight) and the reward head
  kReward,  // token_rewards only: the LM head may be skipped
};

struct ModelOutputs {
  torch::Tensor logits;          // [B, T, V] LM-head logits; may stay undefined when the two
  torch::Tensor lm_hidden;       //   fields below are given: [B, T, H] LM-head input (after its
  torch::Tensor lm_head_weight;  //   norm) and the head's weight [V, H] -> fused linear path
  torch::Tensor token_rewards;   // [B, T] (or [B, T, 1]) reward-head output at every position
};

namespace detail {
template <class M>
concept HasHafForward = requires(M& m, const torch::Tensor& t) {
  { m.haf_forward(t, t) } -> std::convertible_to<ModelOutputs>;
};
template <class M>
concept HolderHasHafForward = requires(M& m, const torch::Tensor& t) {
  { m->haf_forward(t, t) } -> std::convertible_to<ModelOutputs>;
};
template <class M>
concept HasHafForwardHeads = requires(M& m, const torch::Tensor& t, Heads h) {
  { m.haf_forward(t, t, h) } -> std::convertible_to<ModelOutputs>;
};
template <class M>
concept HolderHasHafForwardHeads = requires(M& m, const torch::Tensor& t, Heads h) {
  { m->haf_forward(t, t, h) } -> std::convertible_to<ModelOutputs>;
};
template <class>
inline constexpr bool kAlwaysFalse = false;
}  // namespace detail

// Primary template: the detection-based default.
template <class Model>
struct model_traits {
  static ModelOutputs forward(Model& model, const torch::Tensor& input_ids,
                              const torch::Tensor& attention_mask) {
    if constexpr (detail::HasHafForward<Model>) {
      return model.haf_forward(input_ids, attention_mask);
    } else if constexpr (detail::HolderHasHafForward<Model>) {
      return model->haf_forward(input_ids, attention_mask);
    } else if constexpr (detail::HasHafForwardHeads<Model> ||
                         detail::HolderHasHafForwardHeads<Model>) {
      return forward(model, input_ids, attention_mask, Heads::kAll);
    } else {
      static_assert(detail::kAlwaysFalse<Model>,
                    "hafrm: this model type is not usable yet. Either give it a member "
                    "`hafrm::ModelOutputs haf_forward(const torch::Tensor& input_ids, const "
                    "torch::Tensor& attention_mask)` (optionally with a third argument "
                    "`hafrm::Heads`), or specialise `template <> struct "
                    "hafrm::model_traits<YourModel> { static hafrm::ModelOutputs "
                    "forward(YourModel&, const torch::Tensor&, const torch::Tensor&); };` "
                    "(see hafrm/model/model_traits.hpp).");
      return {};
    }
  }
  // The heads-aware member when there is one; otherwise the two-argument form (heads ignored).
  static ModelOutputs forward(Model& model, const torch::Tensor& input_ids,
                              const torch::Tensor& attention_mask, Heads heads) {
    if constexpr (detail::HasHafForwardHeads<Model>) {
      return model.haf_forward(input_ids, attention_mask, heads);
    } else if constexpr (detail::HolderHasHafForwardHeads<Model>) {
      return model->haf_forward(input_ids, attention_mask, heads);
    } else {
      return forward(model, input_ids, attention_mask);
    }
  }
};

namespace detail {
template <class M>
concept TraitForwards = requires(M& m, const torch::Tensor& t) {
  { model_traits<M>::forward(m, t, t) } -> std::convertible_to<ModelOutputs>;
};
template <class M>
concept TraitForwardsHeads = requires(M& m, const torch::Tensor& t, Heads h) {
  { model_traits<M>::forward(m, t, t, h) } -> std::convertible_to<ModelOutputs>;
};
}  // namespace detail

// Every head (Heads::kAll).
template <class Model>
ModelOutputs model_forward(Model& model, const torch::Tensor& input_ids,
                           const torch::Tensor& attention_mask) {
  using M = std::remove_cv_t<Model>;
  if constexpr (detail::TraitForwards<M> || !detail::TraitForwardsHeads<M>) {
    return model_traits<M>::forward(model, input_ids, attention_mask);
  } else {
    return model_traits<M>::forward(model, input_ids, attention_mask, Heads::kAll);
  }
}

// The heads asked for, where the model or its trait takes them; otherwise every head.
template <class Model>
ModelOutputs model_forward(Model& model, const torch::Tensor& input_ids,
                           const torch::Tensor& attention_mask, Heads heads) {
  using M = std::remove_cv_t<Model>;
  if constexpr (detail::TraitForwardsHeads<M>) {
    return model_traits<M>::forward(model, input_ids, attention_mask, heads);
  } else {
    return model_traits<M>::forward(model, input_ids, attention_mask);
  }
}

}  // namespace hafrm
