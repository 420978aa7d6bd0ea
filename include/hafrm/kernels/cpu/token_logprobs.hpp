// hafrm/kernels/cpu/token_logprobs.hpp: fused per-token log-prob kernels for the CPU, over raw
// pointers and Eigen arrays; no torch, no [tokens, vocab] temporaries.
//
// Forward streams each row once in L1-sized blocks, one sweep of Eigen packets per block (SSE /
// AVX2 / AVX-512 / NEON as the compiler allows): exps against the running max, the block max
// beside them, and a re-centring when the max grows (online log-sum-exp); only the per-row LSE
// (and the asked-for statistics) leave the kernel. Backward recomputes p = exp(z - lse) block by
// block and writes g * (onehot(y) - p) [+ the entropy term] in one pass. exp.hpp has the exp.
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
#include "hafrm/kernels/cpu/exp.hpp"

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

  // Moves the sums' centre from m up to a larger max bm.
  HAFRM_INLINE void recentre(float bm) {
    const float f = std::exp(m - bm);
    sz = f * (sz + (m - bm) * s);
    s *= f, s2 *= f * f, m = bm;
  }
};

// Sums over one block, centred on `shift`: s = sum e, sz = sum e (z - shift), s2 = sum e^2 with
// e = exp(z - shift), plus the block max and sum z. One sweep of Eigen packets (so the block is
// read once, which is what keeps the forward at memory speed), then a scalar tail.
template <bool kEntropy, bool kP2, bool kMean>
HAFRM_INLINE void block_sums(const float* z, int64_t n, float shift, float& bm, float& s, float& sz,
                             float& s2, float& zsum) {
  namespace ei = Eigen::internal;
  const PacketF c = ei::pset1<PacketF>(shift), zero = ei::pset1<PacketF>(0.f);
  const PacketF lo = ei::pset1<PacketF>(-87.f);
  PacketF mx = ei::pset1<PacketF>(-std::numeric_limits<float>::infinity());
  PacketF ps = zero, psz = zero, ps2 = zero, pzs = zero;
  int64_t i = 0;
  for (; i + kPacketSize <= n; i += kPacketSize) {
    const PacketF x = ei::ploadu<PacketF>(z + i);
    const PacketF d = ei::psub(x, c);
    const PacketF e = exp_nonpositive(d);
    mx = ei::pmax(mx, x);
    ps = ei::padd(ps, e);
    // e == 0 where d < -87 (z == -inf included): the select keeps 0 * -inf from being NaN.
    if constexpr (kEntropy)
      psz = ei::padd(psz, ei::pselect(ei::pcmp_lt(d, lo), zero, ei::pmul(e, d)));
    if constexpr (kP2) ps2 = ei::pmadd(e, e, ps2);
    if constexpr (kMean) pzs = ei::padd(pzs, x);
  }
  bm = ei::predux_max(mx), s = ei::predux(ps);
  sz = kEntropy ? ei::predux(psz) : 0.f;
  s2 = kP2 ? ei::predux(ps2) : 0.f;
  zsum = kMean ? ei::predux(pzs) : 0.f;
  for (; i < n; ++i) {
    const float d = z[i] - shift;
    const float e = exp_nonpositive(d);
    bm = std::max(bm, z[i]);
    s += e;
    if (kEntropy && e > 0.f) sz += e * d;
    if (kP2) s2 += e * e;
    if (kMean) zsum += z[i];
  }
  if (bm != bm || s != s) bm = s = std::numeric_limits<float>::quiet_NaN();  // NaN logits
}

// Folds one block into the row's stats. The block's exps are taken against the running max m
// (z - m may be positive): one sweep. A row's first block is swept twice (max, then sums), and so
// is a block whose max tops m by more than kMaxJump: e^2 sums could overflow past ~44, and each
// unit of jump costs the later re-centring a little precision, so a big jump is redone from L1
// against the block's own max (rare: one extra L1 sweep).
template <bool kEntropy, bool kP2, bool kMean>
HAFRM_INLINE void fold_block(const float* z, int64_t n, RowStats& st) {
  constexpr float kMaxJump = 8.f;
  float bm, s, sz, s2, zsum;
  const bool have_max = st.m != -std::numeric_limits<float>::infinity();
  if (have_max) block_sums<kEntropy, kP2, kMean>(z, n, st.m, bm, s, sz, s2, zsum);
  const bool redo = !have_max || bm > st.m + kMaxJump;
  if (redo) {  // sums against the block's own max, so the row's state moves there first
    if (!have_max) bm = CMapF(z, n).maxCoeff();
    if (bm == -std::numeric_limits<float>::infinity()) {  // all -inf: no mass
      if (kMean) st.zsum += -std::numeric_limits<float>::infinity();
      return;
    }
    float bm2;
    block_sums<kEntropy, kP2, kMean>(z, n, bm, bm2, s, sz, s2, zsum);
    if (have_max)
      st.recentre(bm);
    else
      st.m = bm;
  }
  st.s += s, st.sz += sz, st.s2 += s2;
  if (kMean) st.zsum += zsum;
  if (!redo && bm > st.m) st.recentre(bm);  // sums were against the old max: move after adding
}

template <bool kEntropy, bool kP2, bool kMean, class T>
void forward_row_impl(const T* row, int64_t V, const Params& p, RowStats& st) {
  alignas(64) float buf[KernelPolicy::kBlock];
  const bool identity = p.transform.identity();
  for (int64_t off = 0; off < V; off += KernelPolicy::kBlock) {
    const int64_t n = std::min<int64_t>(KernelPolicy::kBlock, V - off);
    fold_block<kEntropy, kP2, kMean>(load_block(row + off, n, buf, p.transform, identity), n, st);
  }
}

template <class T>
void forward_row(const T* row, int64_t V, const Params& p, bool want_entropy, bool want_p2,
                 bool want_mean, RowStats& st) {
  // The common cases get their own instantiation; the rest share the all-on one.
  if (!want_entropy && !want_p2 && !want_mean)
    return forward_row_impl<false, false, false>(row, V, p, st);
  if (want_entropy && !want_p2 && !want_mean)
    return forward_row_impl<true, false, false>(row, V, p, st);
  forward_row_impl<true, true, true>(row, V, p, st);
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
          detail::scaled_exp_shifted(z, n, lse, -g, gbuf);
        } else {
          detail::scaled_exp_shifted(z, n, lse, 1.f, gbuf);  // p, exactly 0 where z = -inf
          gb = (gb > 0.f).select(-g * gb - gh * gb * (zb + hshift), 0.f);
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
