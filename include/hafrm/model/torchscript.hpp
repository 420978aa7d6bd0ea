// hafrm/model/torchscript.hpp: model_traits for TorchScript modules loaded with torch::jit::load.
// The scripted forward(input_ids, attention_mask) must return either a tuple
// (logits [B, T, V], token_rewards [B, T]) or a dict with keys "logits" and "rewards" (and,
// optionally, "lm_hidden" and "lm_head_weight" for the fused linear path).
//
// Skipping the LM head (Heads::kReward: scoring, reward-only training): when the scripted module
// has a method haf_forward_reward(input_ids, attention_mask) returning the token rewards [B, T]
// (or [B, T, 1]) as one tensor, model_forward(m, ids, mask, hafrm::Heads::kReward) calls it;
// without that method it runs forward as above (the LM head included).
//
//   #include <hafrm/model/torchscript.hpp>
// example-begin torchscript ScriptedModel
//   torch::jit::Module m = torch::jit::load(path);   // e.g. "model.pt", scripted in Python
//   auto out = hafrm::model_forward(m, ids, mask);
// example-end
#pragma once

#include <torch/script.h>

#include "hafrm/model/model_traits.hpp"

namespace hafrm {

template <>
struct model_traits<torch::jit::Module> {
  static ModelOutputs forward(torch::jit::Module& m, const torch::Tensor& input_ids,
                              const torch::Tensor& attention_mask, Heads heads) {
    if (heads == Heads::kReward) {
      if (auto method = m.find_method("haf_forward_reward")) {
        auto ret = (*method)({input_ids, attention_mask});
        TORCH_CHECK(ret.isTensor(),
                    "hafrm::model_traits<torch::jit::Module>: haf_forward_reward must return the "
                    "token rewards as one tensor, got ",
                    ret.tagKind());
        ModelOutputs out;
        out.token_rewards = ret.toTensor();
        return out;
      }
    }
    return forward(m, input_ids, attention_mask);
  }
  static ModelOutputs forward(torch::jit::Module& m, const torch::Tensor& input_ids,
                              const torch::Tensor& attention_mask) {
    auto ret = m.forward({input_ids, attention_mask});
    ModelOutputs out;
    if (ret.isTuple()) {
      auto elems = ret.toTupleRef().elements();
      TORCH_CHECK(elems.size() >= 2 && elems[0].isTensor() && elems[1].isTensor(),
                  "hafrm::model_traits<torch::jit::Module>: forward must return (logits, "
                  "token_rewards) tensors, got a tuple of ",
                  elems.size());
      out.logits = elems[0].toTensor();
      out.token_rewards = elems[1].toTensor();
    } else if (ret.isGenericDict()) {
      auto d = ret.toGenericDict();
      auto get = [&](const char* k) {
        return d.contains(k) ? d.at(k).toTensor() : torch::Tensor();
      };
      out.logits = get("logits");
      out.lm_hidden = get("lm_hidden");
      out.lm_head_weight = get("lm_head_weight");
      out.token_rewards = get("rewards");
    } else {
      TORCH_CHECK(false,
                  "hafrm::model_traits<torch::jit::Module>: forward must return a tuple "
                  "(logits, token_rewards) or a dict, got ",
                  ret.tagKind());
    }
    TORCH_CHECK(out.token_rewards.defined(),
                "hafrm::model_traits<torch::jit::Module>: forward returned no rewards");
    return out;
  }
};

}  // namespace hafrm
