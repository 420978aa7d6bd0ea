// hafrm/core/row_outputs.hpp: the per-row outputs of a log-prob forward from the row's merged
// statistics: one definition that the CPU kernel (kernels/cpu/row_kernels.inc) and the CUDA
// kernel (kernels/cuda/token_logprobs.cuh) both call, so the two agree on every formula and on
// every bad row by construction. Torch-free; HAFRM_HOST_DEVICE so device code can call it.
#pragma once

#include <cmath>
#include <cstdint>

#include "hafrm/core/logprob_layout.hpp"
#include "hafrm/core/macros.hpp"
#include "hafrm/core/math.hpp"

namespace hafrm::core {

// Every output of row r set to v (is_argmax false): 0 for an ignored row, NaN for a label
// outside [0, V), whose row is never read.
HAFRM_HOST_DEVICE HAFRM_INLINE void fill_row_outputs(const ForwardOutputs& out, int64_t r,
                                                     float v) {
  if (out.logprob) out.logprob[r] = v;
  if (out.lse) out.lse[r] = v;
  if (out.entropy) out.entropy[r] = v;
  if (out.log_sum_p2) out.log_sum_p2[r] = v;
  if (out.mean_logit) out.mean_logit[r] = v;
  if (out.is_argmax) out.is_argmax[r] = false;
}

// The outputs of row r (label in range, not ignored) from its statistics in u units, z = a u
// (a = 1 and u = z on the CPU; see LseState for the sums), zsum = sum u over the V logits.
// label_u() gives u at the label, is_top(u_label) whether the label's logit is the row's max,
// asked only for a row with a finite LSE (on the CPU it can be a pass over the row). label_u is
// a callable so that each kernel reads the label's logit from its own storage, after the LSE.
// s = 0 only for a row of only -inf (no mass): LSE -inf and the rest NaN. A NaN or +inf logit
// reaches s as NaN: every output NaN (mean_logit is the plain sum, NaN or +inf). Such rows are
// never the argmax.
HAFRM_EXEC_CHECK_DISABLE
template <class LabelU, class IsTop>
HAFRM_HOST_DEVICE HAFRM_INLINE void write_row_outputs(const ForwardOutputs& out, int64_t r,
                                                      const LseState<float>& st, float zsum,
                                                      float a, int64_t V, LabelU&& label_u,
                                                      IsTop&& is_top) {
  const float nan = NAN;
  const bool mass = st.s > 0.f || st.s != st.s;
  const float ls = logf(st.s);
  const float lse = mass ? a * st.m + ls : kNegInf<float>;
  const float uy = label_u();
  if (out.logprob) out.logprob[r] = mass ? a * uy - lse : nan;
  if (out.lse) out.lse[r] = lse;
  // fast_div: 1 <= s <= V here, far from its limit.
  if (out.entropy) out.entropy[r] = mass ? ls - a * fast_div(st.sz, st.s) : nan;
  if (out.log_sum_p2) out.log_sum_p2[r] = mass ? logf(st.s2) - 2.f * ls : nan;
  if (out.mean_logit) out.mean_logit[r] = a * fast_div(zsum, static_cast<float>(V));
  if (out.is_argmax) out.is_argmax[r] = mass && lse == lse && is_top(uy);
}

}  // namespace hafrm::core
