// hafrm/kernels/cpu/exp.hpp: the vectorised exp behind the CPU log-prob kernels.
//
// Every exp those kernels take is exp(z - shift) with shift >= max z (the block max, or the row's
// LSE), so the argument is <= 0 up to rounding. That lets us drop what a general exp pays for:
// Eigen 3.4's pexp<float> clamps both ends and rebuilds 2^m with a four-multiply ldexp that is
// safe for any exponent (about half its instructions); here m comes straight out of a
// round-to-nearest "magic number" add and 2^m is one integer add and shift.
// Same Cephes polynomial as Eigen (~1-2 ulp). Arguments below -87 (exp < 1.7e-38, including
// -inf) give exactly 0; NaN gives NaN. Valid for arguments up to +88.
//
// Written against Eigen's packet primitives, so it is SSE/AVX2/AVX-512/NEON as the compiler
// allows; nothing here names an instruction set.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <cstdint>

#include "hafrm/core/macros.hpp"

namespace hafrm::kernels::cpu::detail {

using PacketF = Eigen::internal::packet_traits<float>::type;
inline constexpr int kPacketSize = Eigen::internal::packet_traits<float>::size;

template <class Packet>
HAFRM_INLINE Packet exp_nonpositive(const Packet& x) {
  namespace ei = Eigen::internal;
  using PacketI = typename ei::unpacket_traits<Packet>::integer_packet;
  // 1.5 * 2^23: adding it rounds x*log2(e) to an integer held in the low mantissa bits.
  const Packet magic = ei::pset1<Packet>(12582912.f);
  const Packet m_plus = ei::pmadd(x, ei::pset1<Packet>(1.44269504088896341f), magic);
  const Packet m = ei::psub(m_plus, magic);
  // r = x - m ln 2 in two parts (Cody-Waite), |r| <= ln 2 / 2.
  Packet r = ei::pmadd(m, ei::pset1<Packet>(-0.693359375f), x);
  r = ei::pmadd(m, ei::pset1<Packet>(2.12194440e-4f), r);
  const Packet r2 = ei::pmul(r, r);
  const Packet r3 = ei::pmul(r2, r);
  Packet y = ei::pmadd(ei::pset1<Packet>(1.9875691500e-4f), r, ei::pset1<Packet>(1.3981999507e-3f));
  Packet y1 =
      ei::pmadd(ei::pset1<Packet>(4.1665795894e-2f), r, ei::pset1<Packet>(1.6666665459e-1f));
  const Packet y2 = ei::padd(r, ei::pset1<Packet>(1.f));
  y = ei::pmadd(y, r, ei::pset1<Packet>(8.3334519073e-3f));
  y1 = ei::pmadd(y1, r, ei::pset1<Packet>(5.0000001201e-1f));
  y = ei::pmadd(y, r3, y1);
  y = ei::pmadd(y, r2, y2);
  // 2^m from m's integer bits: (m + 127) << 23. m >= -126 for x >= -87, so 2^m is normal.
  const PacketI mi = ei::psub(ei::preinterpret<PacketI>(m_plus), ei::preinterpret<PacketI>(magic));
  const Packet two_m =
      ei::preinterpret<Packet>(ei::plogical_shift_left<23>(ei::padd(mi, ei::pset1<PacketI>(127))));
  // NaN x makes y NaN, and NaN * anything stays NaN; x < -87 (and -inf) flushes to 0.
  return ei::pselect(ei::pcmp_lt(x, ei::pset1<Packet>(-87.f)), ei::pzero(x), ei::pmul(y, two_m));
}

// One float, the same contract through std::exp: the packet loops' tails, and the whole loop
// where there is no SIMD (EIGEN_DONT_VECTORIZE, or a target Eigen has no packets for).
HAFRM_INLINE float exp_nonpositive(float x) { return x < -87.f ? 0.f : std::exp(x); }

// out[i] = scale * exp(z[i] - shift); out may alias z.
HAFRM_INLINE void scaled_exp_shifted(const float* z, int64_t n, float shift, float scale,
                                     float* out) {
  namespace ei = Eigen::internal;
  const PacketF sh = ei::pset1<PacketF>(shift), sc = ei::pset1<PacketF>(scale);
  int64_t i = 0;
  for (; i + kPacketSize <= n; i += kPacketSize)
    ei::pstoreu(out + i, ei::pmul(sc, exp_nonpositive(ei::psub(ei::ploadu<PacketF>(z + i), sh))));
  for (; i < n; ++i) out[i] = scale * exp_nonpositive(z[i] - shift);
}

}  // namespace hafrm::kernels::cpu::detail
