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
// TorchScript modules: include "hafrm/model/torchscript.hpp" for a ready specialisation.
#pragma once

#include <torch/torch.h>

#include <concepts>
#include <type_traits>

namespace hafrm {

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
    } else {
      static_assert(detail::kAlwaysFalse<Model>,
                    "hafrm: this model type is not usable yet. Either give it a member "
                    "`hafrm::ModelOutputs haf_forward(const torch::Tensor& input_ids, const "
                    "torch::Tensor& attention_mask)`, or specialise `template <> struct "
                    "hafrm::model_traits<YourModel> { static hafrm::ModelOutputs "
                    "forward(YourModel&, const torch::Tensor&, const torch::Tensor&); };` "
                    "(see hafrm/model/model_traits.hpp).");
      return {};
    }
  }
};

template <class Model>
ModelOutputs model_forward(Model& model, const torch::Tensor& input_ids,
                           const torch::Tensor& attention_mask) {
  return model_traits<std::remove_cv_t<Model>>::forward(model, input_ids, attention_mask);
}

}  // namespace hafrm
