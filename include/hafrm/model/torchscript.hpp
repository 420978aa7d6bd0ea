// hafrm/model/torchscript.hpp: model_traits for TorchScript modules loaded with torch::jit::load.
// The scripted forward(input_ids, attention_mask) must return either a tuple
// (logits [B, T, V], token_rewards [B, T]) or a dict with keys "logits" and "rewards" (and,
// optionally, "lm_hidden" and "lm_head_weight" for the fused linear path).
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
