// hafrm/torch/checks.hpp: argument checks that every public entry point uses, so that a bad
// input becomes a c10::Error naming the function, the argument and what was expected.
//
// example-begin checks Logits
//   hafrm::detail::check_floating(logits, "token_logprobs", "logits");
// example-end
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

// HAFRM_CHECK_ARG(cond, fn, arg, expected...) -> "hafrm::fn: argument 'arg' expected ..."
#define HAFRM_CHECK_ARG(cond, fn, arg, ...) \
  TORCH_CHECK((cond), "hafrm::", fn, ": argument '", arg, "' ", __VA_ARGS__)

namespace hafrm::detail {

// ---- checks on tensor contents -------------------------------------------------------------
// Every check that reads a tensor's values (counts > 0, labels in range, a margin >= 0) goes
// through values_hold(), so that no check stalls a GPU step: on the CPU the condition is read at
// once (there is no device to wait for); on any other device it is queued as a device-side assert
// (at::_assert_async) carrying the same message, which costs no device-to-host sync and keeps the
// step capturable by a CUDA graph. A failure there surfaces at the caller's next sync.

// How many content checks have been read on the host since the process started: on a GPU each
// would be one device-to-host sync. Tests count a training step's checks with it.
inline std::atomic<int64_t>& host_value_reads() {
  static std::atomic<int64_t> reads{0};
  return reads;
}

// True when `ok` (a bool tensor of any shape) holds everywhere. On a non-CPU device the check is
// queued with the message "hafrm::fn: argument 'arg' expected" and true is returned; on the CPU a
// false return lets the caller name the first offending value in its error.
inline bool values_hold(const torch::Tensor& ok, std::string_view fn, std::string_view arg,
                        std::string_view expected) {
  auto all = ok.all();
  if (!all.device().is_cpu()) {
    at::_assert_async(all, "hafrm::" + std::string(fn) + ": argument '" + std::string(arg) + "' " +
                               std::string(expected));
    return true;
  }
  host_value_reads().fetch_add(1, std::memory_order_relaxed);
  return all.item<bool>();
}

inline void check_defined(const torch::Tensor& t, std::string_view fn, std::string_view arg) {
  HAFRM_CHECK_ARG(t.defined(), fn, arg, "must be a defined tensor");
}

inline void check_floating(const torch::Tensor& t, std::string_view fn, std::string_view arg) {
  check_defined(t, fn, arg);
  HAFRM_CHECK_ARG(t.is_floating_point(), fn, arg,
                  "expected a floating-point tensor (float32, float64, bfloat16 or float16), got ",
                  t.scalar_type());
}

inline void check_dim(const torch::Tensor& t, int64_t dim, std::string_view fn,
                      std::string_view arg) {
  HAFRM_CHECK_ARG(t.dim() == dim, fn, arg, "expected ", dim, " dimension(s), got shape ",
                  t.sizes());
}

inline void check_nonempty(const torch::Tensor& t, std::string_view fn, std::string_view arg) {
  HAFRM_CHECK_ARG(t.numel() > 0, fn, arg, "must not be empty (an empty batch has no loss)");
}

inline void check_same_shape(const torch::Tensor& a, const torch::Tensor& b, std::string_view fn,
                             std::string_view arg_a, std::string_view arg_b) {
  HAFRM_CHECK_ARG(a.sizes() == b.sizes(), fn, arg_b, "expected the same shape as '", arg_a, "' ",
                  a.sizes(), ", got ", b.sizes());
}

inline void check_same_device(const torch::Tensor& a, const torch::Tensor& b, std::string_view fn,
                              std::string_view arg_a, std::string_view arg_b) {
  HAFRM_CHECK_ARG(a.device() == b.device(), fn, arg_b, "expected to be on the same device as '",
                  arg_a, "' (", a.device(), "), got ", b.device());
}

inline void check_integral(const torch::Tensor& t, std::string_view fn, std::string_view arg) {
  check_defined(t, fn, arg);
  HAFRM_CHECK_ARG(t.scalar_type() == torch::kLong || t.scalar_type() == torch::kInt, fn, arg,
                  "expected an int64 or int32 tensor of token ids, got ", t.scalar_type());
}

inline void check_nonnegative(double v, std::string_view fn, std::string_view arg) {
  HAFRM_CHECK_ARG(v >= 0.0 && std::isfinite(v), fn, arg, "expected a finite value >= 0, got ", v);
}

// The range every scale, weight and coefficient of the loss catalogue, the weightings and the
// logit temperature must lie in. Why: a finite double such as beta = 1e300 (or an IPO beta of
// 1e-300, whose 1/(2 beta) is 5e299) overflows float32 inside the loss and silently gives inf or
// NaN. Within [1e-6, 1e6] every parameter and every constant derived from them (1/(2 beta),
// gamma/beta) is finite in float32 with room to spare, and every catalogue loss stays finite at
// both ends for log-ratios up to 1e4 under the default score (tests/test_bad_inputs_losses.cpp).
// Practical values are far inside.
inline constexpr double kMinScale = 1e-6;
inline constexpr double kMaxScale = 1e6;

// A strictly positive scale (beta, tau, temperature): [kMinScale, kMaxScale].
inline void check_scale(double v, std::string_view fn, std::string_view arg) {
  HAFRM_CHECK_ARG(v >= kMinScale && v <= kMaxScale, fn, arg, "expected a finite value > 0 in [",
                  kMinScale, ", ", kMaxScale, "] (wider values overflow float32), got ", v);
}

// A non-negative weight or coefficient (0 switches its term off): 0 or [kMinScale, kMaxScale].
// Why the gap below kMinScale: a weight of 1e-300 is 0 in float32 but would not switch the term
// off, so it is an error rather than a silent zero.
inline void check_weight(double v, std::string_view fn, std::string_view arg) {
  HAFRM_CHECK_ARG(v == 0.0 || (v >= kMinScale && v <= kMaxScale), fn, arg,
                  "expected a finite value >= 0: 0 or in [", kMinScale, ", ", kMaxScale,
                  "] (wider values overflow float32), got ", v);
}

// A signed shape coefficient (AlphaPO's alpha, the alpha-divergence's a): 0 or |v| in
// [kMinScale, kMaxScale].
inline void check_coefficient(double v, std::string_view fn, std::string_view arg) {
  const double a = std::abs(v);
  HAFRM_CHECK_ARG(v == 0.0 || (a >= kMinScale && a <= kMaxScale), fn, arg,
                  "expected a finite value: 0 or |", arg, "| in [", kMinScale, ", ", kMaxScale,
                  "] (wider values overflow float32), got ", v);
}

// [lo, hi): label smoothing and robust-DPO epsilon live in [0, 0.5).
inline void check_half_open(double v, double lo, double hi, std::string_view fn,
                            std::string_view arg) {
  HAFRM_CHECK_ARG(v >= lo && v < hi, fn, arg, "expected a value in [", lo, ", ", hi, "), got ", v);
}

inline void check_closed(double v, double lo, double hi, std::string_view fn,
                         std::string_view arg) {
  HAFRM_CHECK_ARG(v >= lo && v <= hi, fn, arg, "expected a value in [", lo, ", ", hi, "], got ", v);
}

}  // namespace hafrm::detail
