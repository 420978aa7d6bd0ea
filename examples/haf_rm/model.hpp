// model.hpp: a small decoder-only transformer with the HaF-RM architecture.
//
// One shared backbone (token embedding + pre-LayerNorm blocks with causal self-attention and
// rotary or ALiBi positions, so nothing is tied to a maximum length), and two heads on it:
//   policy layer  final LayerNorm -> Linear(H, V) without bias (the LM head);
//   reward layer  Linear(H, 1) with bias on the PRE-norm hidden state, zero-initialised as in the
//                 HaF reference code, so early on only the policy term moves the backbone.
// The library sees the model only through haf_forward(): with `fused_lm_head` it returns the LM
// head's input and weight, so hafrm's fused linear -> log-prob path never stores the logits; with
// hafrm::Heads::kReward (scoring, reward-only training) it skips the LM head altogether.
// haf_forward_packed() takes packed (padding-free) rows, several sequences per row, with attention
// kept inside each sequence (hafrm::forward_pair_packed). With
// `checkpoint_activations` each block keeps only its input for the backward pass and runs again
// there (activation_checkpoint.hpp).
//
//   hafrm::examples::rm::ModelConfig cfg;                 // 2 layers, d 64, 4 heads, RoPE
//   hafrm::examples::rm::HafTransformer model(cfg);
//   auto f = hafrm::forward_pair(model, reference, batch);
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <hafrm/model/model_traits.hpp>
#include <hafrm/model/packed_pair.hpp>

#include "activation_checkpoint.hpp"

namespace hafrm::examples::rm {

struct ModelConfig {
  int64_t vocab_size = 257;  // set from the tokenizer
  int64_t d_model = 64;
  int64_t n_layers = 2;
  int64_t n_heads = 4;
  int64_t d_ff = 256;
  double dropout = 0.0;
  std::string positions = "rope";  // "rope" | "alibi"
  bool fused_lm_head = true;       // false: return full logits instead of (lm_hidden, weight)
  // Keep only each block's input for the backward pass and recompute the block there
  // (activation_checkpoint.hpp): less memory, one more forward of every block per step. Not in
  // to_json(): the parameters and the function computed are the same either way, so checkpoints
  // written with and without it are interchangeable.
  bool checkpoint_activations = false;

  void validate() const {
    auto fail = [](const std::string& m) { throw std::invalid_argument("model config: " + m); };
    if (vocab_size < 2) fail("vocab_size must be >= 2");
    if (d_model < 1 || n_layers < 1 || n_heads < 1 || d_ff < 1)
      fail("d_model, n_layers, n_heads and d_ff must be >= 1");
    if (d_model % n_heads != 0)
      fail("d_model (" + std::to_string(d_model) + ") must be divisible by n_heads (" +
           std::to_string(n_heads) + ")");
    if (positions == "rope" && (d_model / n_heads) % 2 != 0)
      fail("rotary positions need an even head dimension, got " +
           std::to_string(d_model / n_heads));
    if (positions != "rope" && positions != "alibi")
      fail("positions must be \"rope\" or \"alibi\", got \"" + positions + "\"");
    if (!(dropout >= 0.0 && dropout < 1.0)) fail("dropout must be in [0, 1)");
  }
  // Everything that changes the parameter shapes or the function computed: a checkpoint written
  // under another value is refused.
  nlohmann::ordered_json to_json() const {
    return {{"vocab_size", vocab_size},
            {"d_model", d_model},
            {"n_layers", n_layers},
            {"n_heads", n_heads},
            {"d_ff", d_ff},
            {"dropout", dropout},
            {"positions", positions},
            {"fused_lm_head", fused_lm_head}};
  }
};

namespace detail {

// GPT-NeoX-style rotary embedding on [B, h, T, d]: the two halves of each head are rotated.
inline torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                                const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

// ALiBi slopes 2^(-8 h / H), h = 1..H (Press et al.), for any head count.
inline torch::Tensor alibi_slopes(int64_t heads, const torch::TensorOptions& o) {
  auto h = torch::arange(1, heads + 1, o);
  return torch::pow(2.0, -8.0 * h / static_cast<double>(heads));
}

}  // namespace detail

struct CausalSelfAttentionImpl : torch::nn::Module {
  explicit CausalSelfAttentionImpl(const ModelConfig& c)
      : heads(c.n_heads), head_dim(c.d_model / c.n_heads), dropout(c.dropout) {
    qkv = register_module(
        "qkv", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, 3 * c.d_model).bias(false)));
    proj = register_module(
        "proj", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.d_model).bias(false)));
  }

  // x [B, T, D]; bias [B or 1, h or 1, T, T] additive (causal + padding (+ ALiBi));
  // cos/sin [T, d/2] for rotary positions, undefined otherwise.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias, const torch::Tensor& cos,
                        const torch::Tensor& sin) {
    const int64_t B = x.size(0), T = x.size(1);
    auto parts = qkv(x).view({B, T, 3, heads, head_dim}).permute({2, 0, 3, 1, 4});
    auto q = parts[0], k = parts[1], v = parts[2];
    if (cos.defined()) q = detail::apply_rope(q, cos, sin), k = detail::apply_rope(k, cos, sin);
    auto y = torch::scaled_dot_product_attention(q, k, v, bias, is_training() ? dropout : 0.0);
    return proj(y.transpose(1, 2).reshape({B, T, heads * head_dim}));
  }

  int64_t heads, head_dim;
  double dropout;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(CausalSelfAttention);

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const ModelConfig& c) {
    ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})));
    attn = register_module("attn", CausalSelfAttention(c));
    ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})));
    fc = register_module("fc", torch::nn::Linear(c.d_model, c.d_ff));
    out = register_module("out", torch::nn::Linear(c.d_ff, c.d_model));
    drop = register_module("drop", torch::nn::Dropout(c.dropout));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& bias, const torch::Tensor& cos,
                        const torch::Tensor& sin) {
    x = x + drop(attn(ln1(x), bias, cos, sin));
    return x + drop(out(torch::gelu(fc(ln2(x)))));
  }
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  CausalSelfAttention attn{nullptr};
  torch::nn::Linear fc{nullptr}, out{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(Block);

struct HafTransformerImpl : torch::nn::Module {
  explicit HafTransformerImpl(ModelConfig c) : config(std::move(c)) {
    config.validate();
    embed = register_module("embed", torch::nn::Embedding(config.vocab_size, config.d_model));
    drop = register_module("drop", torch::nn::Dropout(config.dropout));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < config.n_layers; ++i) blocks->push_back(Block(config));
    final_norm = register_module(
        "final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.d_model})));
    lm_head = register_module(
        "lm_head",
        torch::nn::Linear(torch::nn::LinearOptions(config.d_model, config.vocab_size).bias(false)));
    score = register_module("score", torch::nn::Linear(config.d_model, 1));
    reset_parameters();
  }

  // GPT-2 initialisation (normal 0.02; residual projections scaled by 1/sqrt(2 L)), except the
  // token embedding, which keeps torch's N(0, 1): the reward head reads the pre-norm residual
  // stream, and at std 0.02 its scale would make the zero-initialised head learn very slowly
  // (large models' residual streams are far from that small). The reward head starts at exactly
  // zero (weight and bias).
  void reset_parameters() {
    torch::NoGradGuard ng;
    const double resid = 0.02 / std::sqrt(2.0 * static_cast<double>(config.n_layers));
    for (auto& p : named_parameters()) {
      const auto& name = p.key();
      auto& t = p.value();
      if (name.starts_with("score.")) {
        t.zero_();
      } else if (name == "embed.weight") {
        t.normal_(0.0, 1.0);
      } else if (t.dim() == 1) {
        // LayerNorm weights are 1, every bias 0.
        name.ends_with(".weight") ? t.fill_(1.0) : t.zero_();
      } else {
        const bool residual = name.ends_with("attn.proj.weight") || name.ends_with(".out.weight");
        t.normal_(0.0, residual ? resid : 0.02);
      }
    }
  }

  // Every head: the reward head's token_rewards and the LM head (lm_hidden + lm_head_weight, or
  // logits with fused_lm_head off).
  hafrm::ModelOutputs haf_forward(const torch::Tensor& input_ids,
                                  const torch::Tensor& attention_mask) {
    return haf_forward(input_ids, attention_mask, hafrm::Heads::kAll);
  }

  // hafrm::Heads::kReward: token_rewards only; the final norm and the LM head are not run (the
  // reward head reads the hidden state before them), so scoring and reward-only training do no
  // [B, T, V] work.
  hafrm::ModelOutputs haf_forward(const torch::Tensor& input_ids,
                                  const torch::Tensor& attention_mask, hafrm::Heads heads) {
    const int64_t T = input_ids.size(1);
    auto h = drop(embed(input_ids));
    auto fopt = h.options();
    // Causal mask plus key padding (right padding: a pad never precedes a real token, so every
    // query row keeps position 0 and no softmax row is empty).
    auto causal = torch::ones({T, T}, fopt.dtype(torch::kBool)).tril();
    auto keep = causal.unsqueeze(0) & (attention_mask != 0).view({-1, 1, T});  // [B, T, T]
    const auto pos = torch::arange(T, fopt);
    return run(h, keep, pos.view({1, T}), heads);
  }

  // hafrm::PackedInputs (hafrm/model/packed_pair.hpp): several sequences end to end in each row.
  // Attention is block-diagonal causal -- token i sees token j iff j <= i in the same segment --
  // through the same additive mask as the padded path, now [R, 1, L, L] from the segment ids, and
  // positions (rotary angles, ALiBi distances) restart in each segment. Within a segment every
  // masked entry adds -inf, i.e. exactly zero weight, so a segment's outputs are those of the
  // sequence on its own row, up to the round-off of other matmul shapes. The attention still
  // costs L^2 per row: rows of about the longest sequence's length keep that near the padded
  // path's per-sequence T^2, and the feed-forward layers, the LM head and the log-probs run only
  // over the rows' tokens. A padding position attends to itself only (no empty softmax row); its
  // outputs are never read.
  hafrm::ModelOutputs haf_forward_packed(const hafrm::PackedInputs& in, hafrm::Heads heads) {
    const int64_t L = in.input_ids.size(1);
    auto h = drop(embed(in.input_ids));
    auto fopt = h.options();
    const auto& seg = in.segment_ids;
    auto causal = torch::ones({L, L}, fopt.dtype(torch::kBool)).tril().unsqueeze(0);
    auto same = seg.unsqueeze(2) == seg.unsqueeze(1);  // [R, L, L]
    auto self = torch::eye(L, fopt.dtype(torch::kBool)).unsqueeze(0);
    auto keep = (causal & same & (seg >= 0).unsqueeze(1)) | self;
    return run(h, keep, in.position_ids.to(fopt.dtype()), heads);
  }

  // The blocks and heads over embedded tokens h [B, T, D], with keep [B, T, T] (query i may see
  // key j) and positions [B or 1, T] (the rotary angle or ALiBi distance of each token).
  hafrm::ModelOutputs run(torch::Tensor h, const torch::Tensor& keep, const torch::Tensor& pos,
                          hafrm::Heads heads) {
    auto fopt = h.options();
    auto bias = torch::zeros(keep.sizes(), fopt)
                    .masked_fill(keep.logical_not(), -std::numeric_limits<float>::infinity())
                    .unsqueeze(1);  // [B, 1, T, T]
    torch::Tensor cos, sin;
    if (config.positions == "rope") {
      const int64_t d = config.d_model / config.n_heads;
      auto inv = torch::pow(10000.0, -torch::arange(0, d, 2, fopt) / static_cast<double>(d));
      auto ang = (pos.unsqueeze(-1) * inv).unsqueeze(1);  // [B or 1, 1, T, d/2]
      cos = ang.cos(), sin = ang.sin();
    } else {
      auto dist = (pos.unsqueeze(2) - pos.unsqueeze(1)).clamp_min(0);  // i - j for j <= i
      auto slopes = detail::alibi_slopes(config.n_heads, fopt);
      bias = bias - slopes.view({1, -1, 1, 1}) * dist.unsqueeze(1);  // [B, h, T, T]
    }
    for (const auto& m : *blocks) {
      auto block = std::static_pointer_cast<BlockImpl>(m);
      auto params = block->parameters();
      if (checkpoints(h, params)) {
        auto recompute = [block, bias, cos, sin](const torch::Tensor& x) {
          return block->forward(x, bias, cos, sin);
        };
        h = checkpoint_activations(recompute, h, std::move(params),
                                   block->is_training() && config.dropout > 0.0);
      } else {
        h = block->forward(h, bias, cos, sin);
      }
    }
    hafrm::ModelOutputs out;
    {
      // The reward head in float32 even under autocast (--precision bf16): a bfloat16 reward
      // keeps 8 significant bits, so close pairs would tie (a tie ranks neither side) and the
      // ranking loss would see coarse margins. One [tokens, H] x [H] product: cheap either way.
      c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
      out.token_rewards = score(h.to(torch::kFloat)).squeeze(-1);  // pre-norm hidden state
    }
    if (heads == hafrm::Heads::kReward) return out;
    auto normed = final_norm(h);
    const bool whole = head_rows.first == 0 && head_rows.second == config.vocab_size;
    auto weight =
        whole ? lm_head->weight
              : lm_head->weight.narrow(0, head_rows.first, head_rows.second - head_rows.first);
    if (config.fused_lm_head) {
      out.lm_hidden = normed;
      out.lm_head_weight = weight;
    } else {
      out.logits = torch::nn::functional::linear(head_input ? head_input(normed) : normed, weight);
    }
    return out;
  }

  // Whether a block with input x and parameters `params` runs checkpointed: only with
  // checkpoint_activations, grad mode on, and x or a parameter requiring grad, i.e. when there is
  // a graph to keep small. Inference and the frozen reference run the blocks as they are.
  bool checkpoints(const torch::Tensor& x, const std::vector<torch::Tensor>& params) const {
    if (!config.checkpoint_activations || !torch::GradMode::is_enabled()) return false;
    if (x.requires_grad()) return true;
    for (const auto& p : params)
      if (p.requires_grad()) return true;
    return false;
  }

  // Vocab parallel (distributed.hpp): haf_forward returns rows [first, last) of the LM head
  // only: those weight rows on the fused path, that slice of the logits otherwise, where
  // `input_hook` (a gradient all-reduce over the ranks) is applied to the head's input first.
  // Not part of the config: the parameters and the function computed over all ranks are the same.
  void shard_lm_head(int64_t first, int64_t last,
                     std::function<torch::Tensor(const torch::Tensor&)> input_hook = {}) {
    if (!(0 <= first && first < last && last <= config.vocab_size))
      throw std::invalid_argument("shard_lm_head: rows [" + std::to_string(first) + ", " +
                                  std::to_string(last) + ") are not a non-empty range of [0, " +
                                  std::to_string(config.vocab_size) + ")");
    head_rows = {first, last};
    head_input = std::move(input_hook);
  }

  ModelConfig config;
  torch::nn::Embedding embed{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm final_norm{nullptr};
  torch::nn::Linear lm_head{nullptr}, score{nullptr};
  std::pair<int64_t, int64_t> head_rows{0, config.vocab_size};
  std::function<torch::Tensor(const torch::Tensor&)> head_input;
};
TORCH_MODULE(HafTransformer);

// A frozen copy of `model` (the HaF reference): same weights, no gradients, eval mode.
inline HafTransformer frozen_copy(const HafTransformer& model) {
  HafTransformer ref(model->config);
  torch::NoGradGuard ng;
  auto src = model->named_parameters();
  for (auto& p : ref->named_parameters()) p.value().copy_(src[p.key()]);
  for (auto& p : ref->parameters()) p.requires_grad_(false);
  ref->to(model->parameters().front().device());
  ref->eval();
  ref->head_rows = model->head_rows, ref->head_input = model->head_input;
  return ref;
}

}  // namespace hafrm::examples::rm
