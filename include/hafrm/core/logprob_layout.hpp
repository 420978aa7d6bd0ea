// hafrm/core/logprob_layout.hpp: the raw-pointer contract shared by the CPU and CUDA per-token
// log-prob kernels: how rows are addressed, which options apply, where outputs go.
// Torch-free and usable from device code.
#pragma once

#include <cstdint>

#include "hafrm/core/macros.hpp"
#include "hafrm/core/math.hpp"

namespace hafrm::core {

// Rows addressed as a 2-level grid so that views such as logits[:, :-1, :] need no copy:
// row r lives at (r / inner) * stride_outer + (r % inner) * stride_inner (in elements); the
// vocabulary dimension is contiguous.
struct RowLayout {
  int64_t outer = 1, inner = 1;
  int64_t stride_outer = 0, stride_inner = 0;
  int64_t vocab = 0;
  HAFRM_HOST_DEVICE int64_t rows() const { return outer * inner; }
  HAFRM_HOST_DEVICE int64_t offset(int64_t r) const {
    return (r / inner) * stride_outer + (r % inner) * stride_inner;
  }
};

struct LogProbParams {
  int64_t ignore_index = -100;
  LogitTransform transform{};
};

// Each pointer is [rows] contiguous, or nullptr when that output is not wanted.
struct ForwardOutputs {
  float* logprob = nullptr;
  float* lse = nullptr;
  float* entropy = nullptr;
  float* log_sum_p2 = nullptr;
  float* mean_logit = nullptr;
  bool* is_argmax = nullptr;
};

// What backward needs per row: upstream gradients and the saved forward statistics.
struct BackwardInputs {
  const float* grad_logprob = nullptr;  // [rows], nullptr means 0
  const float* grad_entropy = nullptr;  // [rows], nullptr means 0
  const float* lse = nullptr;           // [rows], saved by forward
  const float* entropy = nullptr;       // [rows], required when grad_entropy is given
};

}  // namespace hafrm::core
