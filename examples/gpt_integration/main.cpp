// gpt_integration: hafrm added to an existing torch::nn GPT, as a user of another trainer would
// do it. Part 1 is a plain GPT (token + position embeddings, causal self-attention blocks, final
// LayerNorm, LM head), written the way LibTorch trainers write it, with no knowledge of hafrm.
// Part 2 is everything the integration adds: a reward head, a `haf_forward` member, a frozen
// reference copy and the training step with the HaF hybrid loss. Part 3 checks, at step 0, that
// the fused linear path (logits never stored) and the plain logits path give the same loss and
// gradients, then trains a few steps and checks the loss went down. With precision bf16 the
// training and evaluation forward passes run under LibTorch's autocast to bfloat16 (mixed
// precision: the weights, AdamW's state and the loss stay float32).
//
//   gpt_integration [steps=60] [batch=16] [lr=1e-2] [precision=fp32|bf16]
//
// Also compiled by the packaging test as an outside consumer (tests/package/), in every CMake
// order it supports.
#include <ATen/autocast_mode.h>
#include <hafrm/hafrm.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

// ============ Part 1: the existing model (as found in the trainer, unchanged) ============
struct GptConfig {
  int64_t vocab = 32, block = 16, embd = 32, heads = 2, layers = 2;
};

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const GptConfig& c) : heads(c.heads) {
    ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.embd})));
    qkv = register_module("qkv", torch::nn::Linear(c.embd, 3 * c.embd));
    proj = register_module("proj", torch::nn::Linear(c.embd, c.embd));
    ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.embd})));
    mlp = register_module(
        "mlp", torch::nn::Sequential(torch::nn::Linear(c.embd, 4 * c.embd), torch::nn::GELU(),
                                     torch::nn::Linear(4 * c.embd, c.embd)));
  }
  torch::Tensor forward(torch::Tensor x) {
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    auto split = qkv(ln1(x)).split(C, 2);
    auto heads_of = [&](const torch::Tensor& t) {
      return t.view({B, T, heads, C / heads}).transpose(1, 2);
    };
    auto y = at::scaled_dot_product_attention(heads_of(split[0]), heads_of(split[1]),
                                              heads_of(split[2]), {}, 0.0, /*is_causal=*/true);
    x = x + proj(y.transpose(1, 2).reshape({B, T, C}));
    return x + mlp->forward(ln2(x));
  }
  int64_t heads;
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(Block);

struct GptImpl : torch::nn::Module {
  explicit GptImpl(const GptConfig& c) {
    wte = register_module("wte", torch::nn::Embedding(c.vocab, c.embd));
    wpe = register_module("wpe", torch::nn::Embedding(c.block, c.embd));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.layers; ++i) blocks->push_back(Block(c));
    ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.embd})));
    lm_head = register_module(
        "lm_head", torch::nn::Linear(torch::nn::LinearOptions(c.embd, c.vocab).bias(false)));
  }
  // The transformer up to (and including) the final norm: the LM head's input.
  torch::Tensor features(const torch::Tensor& idx) {
    auto pos = torch::arange(idx.size(1), idx.options());
    auto x = wte(idx) + wpe(pos).unsqueeze(0);
    for (auto& b : *blocks) x = b->as<Block>()->forward(x);
    return ln_f(x);
  }
  torch::Tensor forward(const torch::Tensor& idx) { return lm_head(features(idx)); }
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
  torch::nn::Linear lm_head{nullptr};
};
TORCH_MODULE(Gpt);

// ============ Part 2: the integration (all that hafrm needs) ============
// The GPT plus a reward head, and `haf_forward`, the one member hafrm looks for. The reward head
// starts at zero (as in the HaF reference code), so every reward is 0 before training.
struct GptRewardModelImpl : torch::nn::Module {
  explicit GptRewardModelImpl(const GptConfig& c) {
    gpt = register_module("gpt", Gpt(c));
    score = register_module("score", torch::nn::Linear(c.embd, 1));
    torch::NoGradGuard ng;
    score->weight.zero_();
    score->bias.zero_();
  }
  // ids / mask: [B, T]. The GPT is causal and batches are right-padded, so padding never reaches
  // a scored position and the mask is not needed here; hafrm reads the reward at the last
  // non-padding position and scores only tokens whose label is not -100.
  //
  // Under autocast (mixed precision) the rewards come back float32, so the loss reduces in
  // float32, and the fused path gets its input and weight in the autocast dtype: hafrm's fused
  // linear path is an autograd Function whose backward recomputes the logits outside autocast,
  // so both passes then form the same bfloat16 tiles (the weight's gradient returns float32
  // through the cast). Without autocast both casts change nothing.
  hafrm::ModelOutputs haf_forward(const torch::Tensor& ids, const torch::Tensor& /*mask*/) {
    auto h = gpt->features(ids);
    hafrm::ModelOutputs out{.token_rewards = score(h).squeeze(-1).to(torch::kFloat)};
    if (fused_lm_head) {  // hafrm forms the logits tile by tile: [B, T, V] is never stored
      const auto device = h.device().type();
      const bool autocast = at::autocast::is_autocast_enabled(device);
      const auto dtype = autocast ? at::autocast::get_autocast_dtype(device) : h.scalar_type();
      out.lm_hidden = h.to(dtype);
      out.lm_head_weight = gpt->lm_head->weight.to(dtype);
    } else {
      out.logits = gpt->lm_head(h);
    }
    return out;
  }
  Gpt gpt{nullptr};
  torch::nn::Linear score{nullptr};
  bool fused_lm_head = true;
};
TORCH_MODULE(GptRewardModel);

// The frozen reference of DPO: a copy of the initial weights that is never trained.
void copy_frozen(GptRewardModel& from, GptRewardModel& to) {
  torch::NoGradGuard ng;
  auto src = from->parameters(), dst = to->parameters();
  for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  for (auto& p : dst) p.requires_grad_(false);
  to->eval();
}

// Mixed precision for a scope: autocast to bfloat16 on the CPU, the previous state restored on
// exit (as Python's torch.autocast). Does nothing when not enabled.
struct Bf16Autocast {
  explicit Bf16Autocast(bool enabled) : on(enabled) {
    if (!on) return;
    prev = at::autocast::is_autocast_enabled(at::kCPU);
    prev_dtype = at::autocast::get_autocast_dtype(at::kCPU);
    at::autocast::set_autocast_enabled(at::kCPU, true);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~Bf16Autocast() {
    if (!on) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCPU, prev);
    at::autocast::set_autocast_dtype(at::kCPU, prev_dtype);
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;
  bool on, prev = false;
  at::ScalarType prev_dtype = at::kBFloat16;
};

// Synthetic preference pairs: chosen = the prompt reversed, rejected = random tokens. Labels are
// aligned with input_ids: the token's own id where it is scored (the response), -100 on the
// prompt (and on padding); hafrm does the causal shift.
hafrm::PreferenceBatch make_batch(int64_t B, int64_t vocab, int64_t prompt_len) {
  auto prompt = torch::randint(1, vocab, {B, prompt_len}, torch::kLong);
  auto chosen = prompt.flip({1});
  auto rejected = torch::randint(1, vocab, {B, prompt_len}, torch::kLong);
  auto side = [&](const torch::Tensor& response, torch::Tensor& ids, torch::Tensor& mask,
                  torch::Tensor& labels) {
    ids = torch::cat({prompt, response}, 1);
    mask = torch::ones_like(ids);
    labels = ids.clone();
    labels.slice(1, 0, prompt_len).fill_(-100);
  };
  hafrm::PreferenceBatch b;
  side(chosen, b.chosen_ids, b.chosen_mask, b.chosen_labels);
  side(rejected, b.rejected_ids, b.rejected_mask, b.rejected_labels);
  return b;
}

// ============ Part 3: check the two LM-head paths, then train ============
namespace {
double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}
double scale_of(const torch::Tensor& t) {
  return std::max(1.0, t.to(torch::kDouble).abs().max().item<double>());
}
}  // namespace

int main(int argc, char** argv) {
  const int64_t steps = argc > 1 ? std::atol(argv[1]) : 60;
  const int64_t batch = argc > 2 ? std::atol(argv[2]) : 16;
  const double lr = argc > 3 ? std::atof(argv[3]) : 1e-2;
  const std::string precision = argc > 4 ? argv[4] : "fp32";
  if (steps < 10 || batch < 2 || !(lr > 0) || (precision != "fp32" && precision != "bf16")) {
    std::fprintf(stderr,
                 "usage: gpt_integration [steps >= 10] [batch >= 2] [lr > 0] "
                 "[precision fp32|bf16]\n");
    return 2;
  }
  const bool bf16 = precision == "bf16";
  torch::manual_seed(0);
  const GptConfig cfg;
  const int64_t prompt_len = cfg.block / 2 - 2;
  GptRewardModel model(cfg), reference(cfg);
  copy_frozen(model, reference);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(lr).eps(1e-5));
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::Dpo> haf;  // w_R 1, alpha 0.2, beta 0.1

  // Step 0: the logits path and the fused linear path on the same batch must agree (float32
  // rounding of the matmul apart), in the loss and in every parameter's gradient.
  {
    auto b = make_batch(batch, cfg.vocab, prompt_len);
    std::vector<torch::Tensor> loss, grads;
    for (bool fused : {false, true}) {
      model->fused_lm_head = reference->fused_lm_head = fused;
      auto f = hafrm::forward_pair(model, reference, b);
      auto out = haf(f.rewards, f.policy, /*step=*/0);
      opt.zero_grad();
      out.loss.backward();
      std::vector<torch::Tensor> g;
      for (auto& p : model->parameters()) g.push_back(p.grad().flatten());
      loss.push_back(
          torch::stack({out.loss, f.policy.policy_chosen.sum(), f.policy.policy_rejected.sum()}));
      grads.push_back(torch::cat(g));
    }
    const double dl = max_abs(loss[0], loss[1]), dg = max_abs(grads[0], grads[1]);
    std::printf(
        "step 0: logits path loss %.8f, fused linear path loss %.8f; max |diff| of "
        "loss/log-probs %.3g, of gradients %.3g\n",
        loss[0][0].item<double>(), loss[1][0].item<double>(), dl, dg);
    if (!(dl <= 1e-5 * scale_of(loss[0])) || !(dg <= 1e-5 * scale_of(grads[0]))) {
      std::fprintf(stderr, "FAILED: the fused linear path and the logits path disagree\n");
      return 1;
    }
  }

  // Training: one step = pair forward (policy and frozen reference), hybrid loss, AdamW. With
  // bf16 the forward passes (training and evaluation) run under autocast; the loss and the
  // backward run outside it, as autocast is meant to be used.
  model->fused_lm_head = reference->fused_lm_head = true;
  auto eval_batch = make_batch(256, cfg.vocab, prompt_len);
  auto accuracy = [&] {
    torch::NoGradGuard ng;
    Bf16Autocast autocast(bf16);
    auto f = hafrm::forward_pair(model, eval_batch);
    return (f.rewards.chosen > f.rewards.rejected).to(torch::kDouble).mean().item<double>();
  };
  const double acc0 = accuracy();
  std::vector<double> losses;
  for (int64_t step = 0; step < steps; ++step) {
    model->train();
    const auto b = make_batch(batch, cfg.vocab, prompt_len);
    hafrm::PairForward f;
    {
      Bf16Autocast autocast(bf16);
      f = hafrm::forward_pair(model, reference, b);
    }
    auto out = haf(f.rewards, f.policy, step);
    opt.zero_grad();
    out.loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    opt.step();
    losses.push_back(out.loss.item<double>());
    if (step % 10 == 0 || step == steps - 1)
      std::printf("step %3lld  loss %.4f  reward_loss %.4f  policy_loss %.4f  acc %.3f\n",
                  static_cast<long long>(step), losses.back(), out.reward_loss.item<double>(),
                  out.policy_loss.item<double>(), out.metrics.at("reward/accuracy").item<double>());
  }
  const double acc1 = accuracy();
  auto mean = [](auto first, auto last) {
    double s = 0;
    for (auto it = first; it != last; ++it) s += *it;
    return s / static_cast<double>(last - first);
  };
  const double head = mean(losses.begin(), losses.begin() + 5);
  const double tail = mean(losses.end() - 5, losses.end());
  bool finite = true;
  for (double l : losses) finite = finite && std::isfinite(l);
  std::printf(
      "%s: held-out preference accuracy (256 pairs): %.3f -> %.3f; mean loss of the first / "
      "last 5 steps: %.4f -> %.4f\n",
      precision.c_str(), acc0, acc1, head, tail);
  if (!finite || !(tail < head) || !(acc1 > acc0)) {
    std::fprintf(stderr,
                 "FAILED: the loss is not finite or did not decrease, or the accuracy "
                 "did not move\n");
    return 1;
  }
  std::printf("gpt_integration OK\n");
  return 0;
}
