// hafrm/core/math.hpp and hafrm/core/logprob_layout.hpp, directly: the scalar online
// log-sum-exp (push, merge of split states, the all -inf row), the logit transform and its
// derivative against float64, and the 2-level row grid against the tensor views it describes.
#include <cmath>
#include <limits>
#include <vector>

#include "hafrm/core/logprob_layout.hpp"
#include "hafrm/core/math.hpp"
#include "hafrm/torch/row_layout.hpp"
#include "test_util.hpp"

using namespace hafrm_test;
namespace core = hafrm::core;

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

// log(sum exp(x)) in float64, the plain way (max-shifted).
double lse64(const std::vector<double>& x, size_t begin, size_t end) {
  double m = -kInf;
  for (size_t i = begin; i < end; ++i) m = std::max(m, x[i]);
  if (m == -kInf) return -kInf;
  double s = 0;
  for (size_t i = begin; i < end; ++i) s += std::exp(x[i] - m);
  return m + std::log(s);
}

struct State {
  double m = -kInf, s = 0;
};
State push_all(const std::vector<double>& x, size_t begin, size_t end) {
  State st;
  for (size_t i = begin; i < end; ++i) core::online_lse_push(st.m, st.s, x[i]);
  return st;
}

std::vector<double> random_row(int64_t n, double scale) {
  auto t = randn({n}, torch::kDouble, scale);
  std::vector<double> x(t.data_ptr<double>(), t.data_ptr<double>() + n);
  return x;
}
}  // namespace

TEST_CASE("online log-sum-exp: pushed one by one equals the plain float64 formula", "[core]") {
  const double scale = GENERATE(1.0, 30.0, 300.0);  // 300: exp(x) alone overflows double
  auto x = random_row(41, scale);
  x[5] = -kInf;  // a -inf entry has no mass and changes nothing
  const State st = push_all(x, 0, x.size());
  CAPTURE(scale);
  CHECK(core::online_lse_value(st.m, st.s) == Approx(lse64(x, 0, x.size())).epsilon(1e-13));
  // In float too (the kernels' type), within float rounding of the float64 value.
  float mf = -INFINITY, sf = 0.f;
  for (double v : x) core::online_lse_push(mf, sf, static_cast<float>(v));
  CHECK(core::online_lse_value(mf, sf) ==
        Approx(lse64(x, 0, x.size())).epsilon(1e-6).margin(1e-6 * scale));
}

TEST_CASE("online log-sum-exp: merging split states equals the whole row, in either order",
          "[core]") {
  auto x = random_row(23, 10.0);
  const double whole = lse64(x, 0, x.size());
  for (size_t cut = 0; cut <= x.size(); ++cut) {
    CAPTURE(cut);
    const State a = push_all(x, 0, cut), b = push_all(x, cut, x.size());
    State ab = a, ba = b;
    core::online_lse_merge(ab.m, ab.s, b.m, b.s);
    core::online_lse_merge(ba.m, ba.s, a.m, a.s);
    CHECK(core::online_lse_value(ab.m, ab.s) == Approx(whole).epsilon(1e-13));
    CHECK(core::online_lse_value(ba.m, ba.s) == Approx(whole).epsilon(1e-13));
  }
  // The empty state (-inf, 0) is the identity on both sides, exactly.
  const State full = push_all(x, 0, x.size());
  State left = full, right;
  core::online_lse_merge(left.m, left.s, -kInf, 0.0);
  core::online_lse_merge(right.m, right.s, full.m, full.s);
  CHECK((left.m == full.m && left.s == full.s));
  CHECK((right.m == full.m && right.s == full.s));
}

TEST_CASE("online log-sum-exp: a row of only -inf has LSE -inf, not NaN", "[core]") {
  std::vector<double> x(4, -kInf);
  const State st = push_all(x, 0, x.size());
  CHECK(core::online_lse_value(st.m, st.s) == -kInf);
  CHECK(core::online_lse_value(-INFINITY, 0.f) == -INFINITY);
}

TEST_CASE("logit transform: scale, soft-cap, temperature and dz/dx against float64", "[core]") {
  CHECK(core::LogitTransform{}.identity());
  CHECK(!core::LogitTransform{.scale = 2.f}.identity());
  CHECK(!core::LogitTransform{.softcap = 30.f}.identity());
  CHECK(!core::LogitTransform{.inv_temperature = 0.5f}.identity());
  const float scale = GENERATE(1.f, 0.7f), softcap = GENERATE(0.f, 5.f),
              inv_t = GENERATE(1.f, 1.6f);
  const core::LogitTransform tf{scale, softcap, inv_t};
  CAPTURE(scale, softcap, inv_t);
  for (double x : random_row(17, 8.0)) {
    const float xf = static_cast<float>(x);
    double z = scale * static_cast<double>(xf), dz = static_cast<double>(scale) * inv_t;
    if (softcap > 0) {
      const double t = std::tanh(z / softcap);
      z = softcap * t;
      dz *= 1 - t * t;
    }
    z *= inv_t;
    CHECK(tf.apply(xf) == Approx(z).epsilon(1e-6).margin(1e-6));
    CHECK(tf.derivative(xf) == Approx(dz).epsilon(1e-5).margin(1e-7));
    // The derivative is the slope of apply (central differences in float64 of the formula).
    const double h = 1e-4;
    auto zf = [&](double v) {
      double w = scale * v;
      if (softcap > 0) w = softcap * std::tanh(w / softcap);
      return w * inv_t;
    };
    CHECK(tf.derivative(xf) == Approx((zf(xf + h) - zf(xf - h)) / (2 * h)).epsilon(1e-4));
  }
}

TEST_CASE("row layout: rows and offsets address the tensor views they describe", "[core]") {
  const int64_t B = 3, T = 5, V = 7;
  auto logits = torch::randn({B, T, V});
  auto elem_offset = [&](const torch::Tensor& row) {
    return (static_cast<const float*>(row.data_ptr()) - logits.data_ptr<float>());
  };
  // The causal view logits[:, :-1, :], as the kernels address it without a copy.
  const core::RowLayout L{B, T - 1, T * V, V, V};
  CHECK(L.rows() == B * (T - 1));
  auto view = logits.slice(1, 0, T - 1);
  for (int64_t r = 0; r < L.rows(); ++r) {
    CAPTURE(r);
    CHECK(L.offset(r) == elem_offset(view[r / (T - 1)][r % (T - 1)]));
  }
  // The torch adapter maps that view onto the same grid without copying it.
  auto [t, mapped] = hafrm::detail::row_layout(view);
  CHECK(t.data_ptr() == logits.data_ptr());
  CHECK(mapped.rows() == L.rows());
  for (int64_t r = 0; r < L.rows(); ++r) CHECK(mapped.offset(r) == L.offset(r));
  // Defaults: one row of nothing, -100 ignored, the identity transform, no outputs.
  CHECK(core::RowLayout{}.rows() == 1);
  CHECK(core::LogProbParams{}.ignore_index == -100);
  CHECK(core::LogProbParams{}.transform.identity());
  const core::ForwardOutputs none{};
  CHECK((none.logprob == nullptr && none.lse == nullptr && none.is_argmax == nullptr));
}
