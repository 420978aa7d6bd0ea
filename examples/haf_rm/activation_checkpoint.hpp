// activation_checkpoint.hpp: activation checkpointing for one module call (LibTorch's C++ API
// has no torch.utils.checkpoint).
//
// checkpoint_activations(fn, x, params, replay_rng) returns fn(x), but the autograd graph keeps
// only x (and references to `params`): fn runs without a graph, and in the backward pass it runs
// again with gradients on, from x, and that recomputed graph is differentiated and dropped. So
// the activations inside fn live only during fn's own backward step, at the price of one more
// forward of fn per backward.
//
//   h = checkpoint_activations([&](const torch::Tensor& x) { return block->forward(x, bias); },
//                              h, block->parameters(), /*replay_rng=*/training && dropout > 0);
//
// fn must depend differentiably only on x and `params`: anything else it reads (masks, position
// tables) gets no gradient, and it must not be modified in place before the backward pass.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace hafrm::examples::rm {

namespace detail {

// The state of the default CPU generator and, for a CUDA tensor, of its device's generator:
// what a recompute restores to draw the same dropout masks as the forward. Each get/set holds
// the generator's mutex, as torch.get_rng_state does.
struct RngState {
  torch::Tensor cpu, device;
  std::optional<at::Generator> device_gen;

  static RngState capture(const c10::Device& d) {
    RngState s;
    s.cpu = get(at::detail::getDefaultCPUGenerator());
    if (!d.is_cpu()) {
      s.device_gen = at::globalContext().defaultGenerator(d);
      s.device = get(*s.device_gen);
    }
    return s;
  }
  void restore() const {
    set(at::detail::getDefaultCPUGenerator(), cpu);
    if (device_gen) set(*device_gen, device);
  }

 private:
  static torch::Tensor get(at::Generator gen) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state();
  }
  static void set(at::Generator gen, const torch::Tensor& state) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  }
};

// Runs with the generators at `saved` and afterwards puts back the states they had before, so
// the random stream after a recompute is the one it would be without it.
class ForkedRng {
 public:
  ForkedRng(const RngState& saved, const c10::Device& d) : stash_(RngState::capture(d)) {
    saved.restore();
  }
  ~ForkedRng() { stash_.restore(); }
  ForkedRng(const ForkedRng&) = delete;
  ForkedRng& operator=(const ForkedRng&) = delete;

 private:
  RngState stash_;
};

// What the backward pass needs besides the saved input: the function, the parameters it reads
// (the live leaf tensors) and, when it draws random numbers, the generators' state before it.
struct CheckpointState : torch::CustomClassHolder {
  std::function<torch::Tensor(const torch::Tensor&)> fn;
  std::vector<torch::Tensor> params;
  std::optional<RngState> rng;
};

// The parameters are inputs of the Function and backward returns their gradients, so the
// autograd engine accumulates them as for any other node: into .grad through their
// AccumulateGrad, with hooks registered on them, gradient accumulation over several backward
// passes and torch::autograd::grad(loss, {param}) all working; a frozen parameter
// (requires_grad false) has no edge and gets an undefined gradient.
struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               torch::TensorList params,
                               const c10::intrusive_ptr<CheckpointState>& state) {
    // Saving the parameters keeps no memory (they are alive anyway) and makes the backward pass
    // refuse parameters changed in place since the forward (an optimizer step in between), as
    // the graph without checkpointing does.
    std::vector<torch::Tensor> saved{x};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(std::move(saved));
    // saved_data holds IValues; a capsule is the one that carries an arbitrary C++ object.
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    torch::NoGradGuard no_grad;  // Function::apply already turns grad mode off; stated here
    return state->fn(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();  // x, then the parameters
    const auto holder = ctx->saved_data["state"].toCapsule();
    const auto* state = static_cast<const CheckpointState*>(holder.get());
    const size_t n = state->params.size();

    auto input = saved[0].detach();
    input.requires_grad_(ctx->needs_input_grad(0));
    torch::Tensor out;
    {
      torch::AutoGradMode grad_on(true);
      std::optional<ForkedRng> fork;
      if (state->rng) fork.emplace(*state->rng, input.device());
      out = state->fn(input);
    }

    // Differentiate only with respect to what the outer graph needs: x when it requires grad,
    // the parameters that are not frozen.
    std::vector<torch::Tensor> wrt;
    std::vector<size_t> slot;
    if (input.requires_grad()) wrt.push_back(input), slot.push_back(0);
    for (size_t i = 0; i < n; ++i)
      if (ctx->needs_input_grad(1 + i)) wrt.push_back(state->params[i]), slot.push_back(1 + i);
    // One gradient per forward input: x, each parameter, and none for the state.
    torch::autograd::variable_list grads(n + 2);
    if (wrt.empty() || !out.requires_grad()) return grads;
    auto g = torch::autograd::grad({out}, wrt, {grad_out[0]}, /*retain_graph=*/false,
                                   /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t k = 0; k < wrt.size(); ++k) grads[slot[k]] = std::move(g[k]);
    return grads;
  }
};

}  // namespace detail

// fn(x) with activation checkpointing; `params` are every parameter fn reads (frozen ones
// included); `replay_rng`: fn draws random numbers (dropout in training), so the recompute must
// see the same ones (skip it otherwise: saving and restoring generator states costs a copy each).
inline torch::Tensor checkpoint_activations(std::function<torch::Tensor(const torch::Tensor&)> fn,
                                            const torch::Tensor& x,
                                            std::vector<torch::Tensor> params, bool replay_rng) {
  auto state = c10::make_intrusive<detail::CheckpointState>();
  state->fn = std::move(fn);
  state->params = std::move(params);
  if (replay_rng) state->rng = detail::RngState::capture(x.device());
  return detail::CheckpointFunction::apply(x, torch::TensorList(state->params), state);
}

}  // namespace hafrm::examples::rm
