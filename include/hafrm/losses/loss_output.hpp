// hafrm/losses/loss_output.hpp: what every loss functor returns, and the reduction it applies.
//
// example-begin loss_output Rewards
//   hafrm::LossOutput out = hafrm::BradleyTerry{}(rewards);
//   out.loss.backward();
//   double acc = out.metrics.at("accuracy").item<double>();
// example-end
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

#include "hafrm/torch/checks.hpp"

namespace hafrm {

enum class Reduction { kMean, kSum, kNone };

struct LossOutput {
  torch::Tensor loss;                            // scalar, or per pair for Reduction::kNone
  std::map<std::string, torch::Tensor> metrics;  // detached scalars for logging
};

namespace detail {

inline torch::Tensor reduce(const torch::Tensor& per_item, Reduction r) {
  switch (r) {
    case Reduction::kMean:
      return per_item.mean();
    case Reduction::kSum:
      return per_item.sum();
    case Reduction::kNone:
      return per_item;
  }
  return per_item.mean();
}

// Low-precision inputs are promoted: the loss math runs in float32 or float64.
inline torch::Tensor compute_dtype(const torch::Tensor& t) {
  if (t.scalar_type() == torch::kHalf || t.scalar_type() == torch::kBFloat16)
    return t.to(torch::kFloat);
  return t;
}

// A per-item input [B]: defined, floating, 1-D, non-empty, batch size B when given.
inline torch::Tensor check_batch_vector(const torch::Tensor& t, std::string_view fn,
                                        std::string_view arg, int64_t batch = -1) {
  check_floating(t, fn, arg);
  HAFRM_CHECK_ARG(t.dim() == 1, fn, arg, "expected a 1-D tensor [B], got shape ", t.sizes());
  HAFRM_CHECK_ARG(t.numel() > 0, fn, arg, "must not be empty (an empty batch has no loss)");
  if (batch >= 0)
    HAFRM_CHECK_ARG(t.size(0) == batch, fn, arg, "expected batch size ", batch, ", got ",
                    t.size(0));
  return compute_dtype(t);
}

}  // namespace detail
}  // namespace hafrm
