// hafrm/kernels/cpu/token_logprobs.hpp: fused per-token log-prob kernels for the CPU, over raw
// pointers and Eigen arrays; no torch, no [tokens, vocab] temporaries.
//
// Forward streams each row once in L1-sized blocks: block max, exp-sum (Eigen's vectorised exp,
// AVX2/AVX-512/NEON as the compiler allows) and an online merge of the partial log-sum-exps;
// only the per-row LSE (and the asked-for statistics) leave the kernel. Backward recomputes
// p = exp(z - lse) block by block and writes g * (onehot(y) - p) [+ the entropy term] in one pass.
//
//   hafrm::kernels::cpu::RowLayout rows{n, 1, v, 0, v};        // n contiguous rows of v logits
//   hafrm::kernels::cpu::ForwardOutputs out{.logprob = lp.data()};
//   hafrm::kernels::cpu::token_logprobs_forward(logits, rows, labels, {-100, {}}, out, serial);
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "hafrm/core/logprob_layout.hpp"
#include "hafrm/core/math.hpp"

namespace hafrm::kernels::cpu {

using core::BackwardInputs;
using core::ForwardOutputs;
using core::RowLayout;
using Params = core::LogProbParams;

// Block size: 2048 floats (8 KiB) keeps a block and its exp in L1 between the max and exp sweeps.
struct KernelPolicy {
  static constexpr int64_t kBlock = 2048;
};

namespace detail {

using ArrayF = Eigen::Array<float, Eigen::Dynamic, 1>;
using MapF = Eigen::Map<ArrayF>;
using CMapF = Eigen::Map<const ArrayF>;

// bfloat16 <-> float32 by bit shifts: plain integer loops the compiler vectorises, where
// Eigen's scalar bfloat16 conversions are not (bf16 rows would otherwise run at ~1/5 speed).
HAFRM_INLINE void widen(const Eigen::bfloat16* src, int64_t n, float* dst) {
  const auto* s = reinterpret_cast<const uint16_t*>(src);
  auto* d = reinterpret_cast<uint32_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<uint32_t>(s[i]) << 16;
}
HAFRM_INLINE void narrow(const float* src, int64_t n, Eigen::bfloat16* dst) {
  const auto* s = reinterpret_cast<const uint32_t*>(src);
  auto* d = reinterpret_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = s[i];
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;  // round to nearest even
    const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
    d[i] = static_cast<uint16_t>(nan ? (u >> 16) | 0x40u : rounded);
  }
}
template <class T>
HAFRM_INLINE void widen(const T* src, int64_t n, float* dst) {
  MapF(dst, n) =
      Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(src, n).template cast<float>();
}
template <class T>
HAFRM_INLINE void narrow(const float* src, int64_t n, T* dst) {
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(dst, n) = CMapF(src, n).template cast<T>();
}

// Loads logits [src, src + n) as transformed float32 z into buf (or returns src itself when no
// conversion is needed).
template <class T>
HAFRM_INLINE const float* load_block(const T* src, int64_t n, float* buf,
                                     const core::LogitTransform& tf, bool identity) {
  if constexpr (std::is_same_v<T, float>) {
    if (identity) return src;
    MapF(buf, n) = CMapF(src, n);
  } else {
    widen(src, n, buf);
  }
  if (!identity) {
    MapF b(buf, n);
    if (tf.scale != 1.f) b *= tf.scale;
    if (tf.softcap > 0.f) b = tf.softcap * (b * (1.f / tf.softcap)).tanh();
    if (tf.inv_temperature != 1.f) b *= tf.inv_temperature;
  }
  return buf;
}

template <class T>
HAFRM_INLINE float load_one(const T* src, const core::LogitTransform& tf) {
  return tf.apply(static_cast<float>(*src));
}

struct RowStats {
  float m = -std::numeric_limits<float>::infinity();
  float s = 0.f;   // sum exp(z - m)
  float sz = 0.f;  // sum exp(z - m) * (z - m), centred so entropy = log s - sz / s keeps
                   // its precision when the logits are large
  float s2 = 0.f;  // sum exp(2 (z - m))   (log sum p^2)
  float zsum = 0.f;
};

HAFRM_INLINE void merge(RowStats& a, float bm, float bs, float bsz, float bs2) {
  if (bm == -std::numeric_limits<float>::infinity()) return;
  if (a.m == -std::numeric_limits<float>::infinity()) {
    a.m = bm, a.s = bs, a.sz = bsz, a.s2 = bs2;
  } else if (bm > a.m) {
    const float f = std::exp(a.m - bm);
    a.sz = f * (a.sz + (a.m - bm) * a.s) + bsz;  // re-centre sum e (z - m) on the new max
    a.s = a.s * f + bs, a.s2 = a.s2 * f * f + bs2, a.m = bm;
  } else {
    const float f = std::exp(bm - a.m);
    a.sz += f * (bsz + (bm - a.m) * bs);
    a.s += bs * f, a.s2 += bs2 * f * f;
  }
}

template <class T>
void forward_row(const T* row, int64_t V, const Params& p, bool want_entropy, bool want_p2,
                 bool want_mean, RowStats& st) {
  alignas(64) float buf[KernelPolicy::kBlock];
  alignas(64) float ebuf[KernelPolicy::kBlock];
  const bool identity = p.transform.identity();
  for (int64_t off = 0; off < V; off += KernelPolicy::kBlock) {
    const int64_t n = std::min<int64_t>(KernelPolicy::kBlock, V - off);
    const float* z = load_block(row + off, n, buf, p.transform, identity);
    CMapF zb(z, n);
    const float bm = zb.maxCoeff();
    if (want_mean) st.zsum += zb.sum();
    if (bm == -std::numeric_limits<float>::infinity()) continue;
    if (!want_entropy && !want_p2) {
      merge(st, bm, (zb - bm).exp().sum(), 0.f, 0.f);
      continue;
    }
    MapF e(ebuf, n);
    e = (zb - bm).exp();
    // e == 0 where z == -inf: select keeps 0 * -inf from turning into NaN.
    const float bsz = want_entropy ? (e > 0.f).select(e * (zb - bm), 0.f).sum() : 0.f;
    const float bs2 = want_p2 ? e.square().sum() : 0.f;
    merge(st, bm, e.sum(), bsz, bs2);
  }
}

}  // namespace detail

// Forward: per-row log-prob of the label and the asked-for statistics. parallel_for(begin, end,
// grain, fn) splits rows over threads (the torch adapter passes at::parallel_for).
template <class T, class ParallelFor>
void token_logprobs_forward(const T* logits, const RowLayout& layout, const int64_t* labels,
                            const Params& p, const ForwardOutputs& out,
                            ParallelFor&& parallel_for) {
  const int64_t V = layout.vocab;
  const bool want_entropy = out.entropy != nullptr;
  const bool want_p2 = out.log_sum_p2 != nullptr;
  const bool want_mean = out.mean_logit != nullptr;
  parallel_for(int64_t{0}, layout.rows(), int64_t{1}, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t y = labels[r];
      if (y == p.ignore_index) {  // ignored rows: outputs 0, no exp work
        if (out.logprob) out.logprob[r] = 0.f;
        if (out.lse) out.lse[r] = 0.f;
        if (out.entropy) out.entropy[r] = 0.f;
        if (out.log_sum_p2) out.log_sum_p2[r] = 0.f;
        if (out.mean_logit) out.mean_logit[r] = 0.f;
        if (out.is_argmax) out.is_argmax[r] = false;
        continue;
      }
      const T* row = logits + layout.offset(r);
      detail::RowStats st;
      detail::forward_row(row, V, p, want_entropy, want_p2, want_mean, st);
      const float lse = core::online_lse_value(st.m, st.s);
      const float zt = detail::load_one(row + y, p.transform);
      if (out.logprob) out.logprob[r] = zt - lse;
      if (out.lse) out.lse[r] = lse;
      if (out.entropy) out.entropy[r] = std::log(st.s) - st.sz / st.s;
      if (out.log_sum_p2) out.log_sum_p2[r] = std::log(st.s2) - 2.f * std::log(st.s);
      if (out.mean_logit) out.mean_logit[r] = st.zsum / static_cast<float>(V);
      if (out.is_argmax) out.is_argmax[r] = zt >= st.m;
    }
  });
}

// Backward: grad[r, v] = (g_lp (1[v = y] - p_v) - g_H p_v (z_v - lse + H)) * dz/dx_v.
// grad_logits uses the logits' layout and type; it may alias logits (in-place mode): each block
// is read completely before it is written.
template <class T, class ParallelFor>
void token_logprobs_backward(const T* logits, T* grad_logits, const RowLayout& layout,
                             const RowLayout& grad_layout, const int64_t* labels, const Params& p,
                             const BackwardInputs& in, ParallelFor&& parallel_for) {
  using detail::CMapF;
  using detail::MapF;
  const int64_t V = layout.vocab;
  const auto& tf = p.transform;
  const bool identity = tf.identity();
  parallel_for(int64_t{0}, layout.rows(), int64_t{1}, [&](int64_t begin, int64_t end) {
    alignas(64) float buf[KernelPolicy::kBlock];
    alignas(64) float gbuf[KernelPolicy::kBlock];
    for (int64_t r = begin; r < end; ++r) {
      const T* row = logits + layout.offset(r);
      T* grow = grad_logits + grad_layout.offset(r);
      const int64_t y = labels[r];
      const float g = in.grad_logprob ? in.grad_logprob[r] : 0.f;
      const float gh = in.grad_entropy ? in.grad_entropy[r] : 0.f;
      if (y == p.ignore_index || (g == 0.f && gh == 0.f)) {
        std::fill(grow, grow + V, T(0.f));
        continue;
      }
      const float lse = in.lse[r];
      const float hshift = gh != 0.f ? in.entropy[r] - lse : 0.f;
      for (int64_t off = 0; off < V; off += KernelPolicy::kBlock) {
        const int64_t n = std::min<int64_t>(KernelPolicy::kBlock, V - off);
        const float* z = detail::load_block(row + off, n, buf, tf, identity);
        CMapF zb(z, n);
        MapF gb(gbuf, n);
        if (gh == 0.f) {
          gb = (-g) * (zb - lse).exp();
        } else {
          auto pz = (zb - lse).exp();
          gb = (pz > 0.f).select(-g * pz - gh * pz * (zb + hshift), 0.f);
        }
        if (y >= off && y < off + n) gbuf[y - off] += g;
        if (!identity) {
          // Chain through z(x): reload the raw logits (buf may hold z) for dz/dx.
          if constexpr (std::is_same_v<T, float>) {
            MapF(buf, n) = CMapF(row + off, n);
          } else {
            detail::widen(row + off, n, buf);
          }
          MapF x(buf, n);
          float d = tf.scale * tf.inv_temperature;
          if (tf.softcap > 0.f) {
            gb *= d * (1.f - (x * (tf.scale / tf.softcap)).tanh().square());
          } else {
            gb *= d;
          }
        }
        if constexpr (std::is_same_v<T, float>) {
          MapF(grow + off, n) = gb;
        } else {
          detail::narrow(gbuf, n, grow + off);
        }
      }
    }
  });
}

}  // namespace hafrm::kernels::cpu
