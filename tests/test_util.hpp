// Shared helpers for hafrm's tests: seeded random inputs (never zeros) and tolerance checks.
#pragma once

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <random>
#include <string>

namespace hafrm_test {

// A fresh seed per call, printed on failure through Catch's INFO by the caller.
inline uint64_t fresh_seed() {
  static std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

inline torch::Tensor randn(std::vector<int64_t> shape, torch::Dtype dtype = torch::kDouble,
                           double scale = 1.0) {
  return (torch::randn(shape, torch::kDouble) * scale).to(dtype);
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// |a - b| <= atol + rtol * |b| elementwise.
inline bool close(const torch::Tensor& a, const torch::Tensor& b, double rtol, double atol) {
  auto ad = a.to(torch::kDouble), bd = b.to(torch::kDouble);
  return ((ad - bd).abs() <= atol + rtol * bd.abs()).all().item<bool>();
}

inline bool all_finite(const torch::Tensor& t) { return torch::isfinite(t).all().item<bool>(); }

// Central finite differences of a scalar function f(x) for a float64 x, element by element.
template <class F>
torch::Tensor finite_diff(F&& f, torch::Tensor x, double eps = 1e-6) {
  auto g = torch::zeros_like(x);
  auto xf = x.flatten();
  auto gf = g.flatten();
  for (int64_t i = 0; i < xf.numel(); ++i) {
    const double v = xf[i].item<double>();
    xf[i] = v + eps;
    const double fp = f(x).template item<double>();
    xf[i] = v - eps;
    const double fm = f(x).template item<double>();
    xf[i] = v;
    gf[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

// Checks that calling f throws a c10::Error whose message contains every given fragment.
template <class F>
void require_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    for (const auto& frag : fragments) {
      INFO("message: " << msg);
      CHECK(msg.find(frag) != std::string::npos);
    }
    return;
  }
  FAIL("expected a c10::Error mentioning " << *fragments.begin());
}

}  // namespace hafrm_test
