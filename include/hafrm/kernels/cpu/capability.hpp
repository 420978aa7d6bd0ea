// hafrm/kernels/cpu/capability.hpp: which instruction set the CPU log-prob kernels run with.
//
// The kernels are compiled once per level (AVX-512, AVX2+FMA, baseline = the consumer's own
// compile flags) inside every consumer's build, whatever flags it uses; the level is chosen once
// at run time from what the CPU (and OS) supports. HAFRM_CPU_CAPABILITY=avx2|baseline forces a
// lower level (for testing, or to compare); asking for more than the CPU has gives what it has.
//
// example-begin cpu_capability CpuLevel
//   namespace kc = hafrm::kernels::cpu;
//   kc::CpuCapability c = kc::cpu_capability();        // the level the kernels run at
//   kc::set_cpu_capability(kc::CpuCapability::kBaseline);  // tests: one level
// example-end
#pragma once

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__CUDACC__) && !defined(__HIPCC__)
#define HAFRM_CPU_X86_DISPATCH 1
#include <cpuid.h>
#else
#define HAFRM_CPU_X86_DISPATCH 0
#endif

namespace hafrm::kernels::cpu {

enum class CpuCapability : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

inline const char* capability_name(CpuCapability c) {
  switch (c) {
    case CpuCapability::kAvx512:
      return "avx512";
    case CpuCapability::kAvx2:
      return "avx2";
    case CpuCapability::kBaseline:
      break;
  }
  return "baseline";
}

// The widest level this CPU and OS can run. __builtin_cpu_supports checks the OS saves the
// wider registers (XGETBV), not just the CPUID bits.
inline CpuCapability detect_cpu_capability() {
#if HAFRM_CPU_X86_DISPATCH
  __builtin_cpu_init();
  unsigned a = 0, b = 0, c = 0, d = 0;
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return CpuCapability::kAvx512;
  if (avx2) return CpuCapability::kAvx2;
#endif
  return CpuCapability::kBaseline;
}

// Parses HAFRM_CPU_CAPABILITY's value; a typo is an error rather than a silent default.
inline CpuCapability parse_cpu_capability(std::string_view s) {
  if (s == "avx512") return CpuCapability::kAvx512;
  if (s == "avx2") return CpuCapability::kAvx2;
  if (s == "baseline" || s == "default") return CpuCapability::kBaseline;
  throw std::invalid_argument(
      "hafrm: HAFRM_CPU_CAPABILITY: expected avx512, avx2 or baseline, got '" + std::string(s) +
      "'");
}

namespace detail {
inline std::atomic<int>& capability_slot() {
  static std::atomic<int> slot{-1};  // -1: not chosen yet
  return slot;
}
inline CpuCapability clamp_capability(CpuCapability want) {
  static const CpuCapability have = detect_cpu_capability();
  return static_cast<int>(want) < static_cast<int>(have) ? want : have;
}
}  // namespace detail

// The level the kernels run with: chosen on first use (CPU, then HAFRM_CPU_CAPABILITY).
inline CpuCapability cpu_capability() {
  auto& slot = detail::capability_slot();
  int c = slot.load(std::memory_order_relaxed);
  if (c < 0) {
    CpuCapability want = CpuCapability::kAvx512;
    if (const char* env = std::getenv("HAFRM_CPU_CAPABILITY"); env && *env)
      want = parse_cpu_capability(env);
    c = static_cast<int>(detail::clamp_capability(want));
    slot.store(c, std::memory_order_relaxed);
  }
  return static_cast<CpuCapability>(c);
}

// Forces a level (clamped to what the CPU has) for later calls; returns the level in effect.
// Meant for tests and benchmarks that compare levels in one process; not for use while kernels
// run on other threads.
inline CpuCapability set_cpu_capability(CpuCapability want) {
  const CpuCapability c = detail::clamp_capability(want);
  detail::capability_slot().store(static_cast<int>(c), std::memory_order_relaxed);
  return c;
}

}  // namespace hafrm::kernels::cpu
