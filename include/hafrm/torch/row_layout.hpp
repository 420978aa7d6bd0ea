// hafrm/torch/row_layout.hpp: maps a logits tensor [..., V] onto the kernels' 2-level row grid
// without copying when its strides allow (contiguous tensors and slices such as
// logits[:, :-1, :]), and copies otherwise.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "hafrm/core/logprob_layout.hpp"

namespace hafrm::detail {

// Returns (tensor, layout) where tensor is logits itself or a contiguous copy.
inline std::pair<torch::Tensor, core::RowLayout> row_layout(const torch::Tensor& logits) {
  core::RowLayout L;
  L.vocab = logits.size(-1);
  std::vector<int64_t> sizes, strides;  // leading dims, size-1 dims dropped, then coalesced
  for (int64_t d = 0; d + 1 < logits.dim(); ++d) {
    if (logits.size(d) == 1) continue;
    if (!sizes.empty() && strides.back() == logits.stride(d) * logits.size(d)) {
      sizes.back() *= logits.size(d);
      strides.back() = logits.stride(d);
    } else {
      sizes.push_back(logits.size(d));
      strides.push_back(logits.stride(d));
    }
  }
  const bool last_contiguous = logits.stride(-1) == 1 || logits.size(-1) == 1;
  if (logits.numel() == 0 || !last_contiguous || sizes.size() > 2) {
    auto c = logits.contiguous();
    L.outer = 1;
    L.inner = c.numel() / std::max<int64_t>(L.vocab, 1);
    L.stride_outer = 0;
    L.stride_inner = L.vocab;
    return {c, L};
  }
  if (sizes.empty()) {
    L.outer = 1, L.inner = 1, L.stride_outer = 0, L.stride_inner = L.vocab;
  } else if (sizes.size() == 1) {
    L.outer = 1, L.inner = sizes[0], L.stride_outer = 0, L.stride_inner = strides[0];
  } else {
    L.outer = sizes[0], L.inner = sizes[1], L.stride_outer = strides[0],
    L.stride_inner = strides[1];
  }
  return {logits, L};
}

// True when no two rows share memory, so a gradient may be written over the logits in place
// (expanded or as_strided logits can alias rows; those fall back to a fresh buffer).
inline bool rows_disjoint(const core::RowLayout& L) {
  return (L.inner <= 1 || L.stride_inner >= L.vocab) &&
         (L.outer <= 1 || L.stride_outer >= (L.inner - 1) * L.stride_inner + L.vocab);
}

}  // namespace hafrm::detail
