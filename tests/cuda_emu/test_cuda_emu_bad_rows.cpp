// The bad-row contract of include/hafrm/kernels/cuda/token_logprobs.cuh (NaN / +inf / all -inf
// rows, out-of-range labels), run on the CPU emulator and held against the CPU kernel output by
// output and element by element; the forward's record of an out-of-range label (LabelError);
// is-argmax at ties under soft-cap and other transforms, on both devices.
#include "emu_harness.hpp"

using namespace emu_test;

namespace {

enum Kind {
  kFine,
  kNaNEarly,        // NaN in the first vector
  kNaNLate,         // NaN in the scalar tail / last element
  kPosInf,          // one +inf
  kPosInfAtLabel,   // one +inf, at the label: still not the argmax of a bad row
  kNaNLabelTop,     // NaN elsewhere, the label the largest finite logit
  kAllNegInf,       // no probability mass
  kSomeNegInf,      // -inf entries, the label among them: lp -inf, everything else finite
  kLabelHigh,       // label 2^40 with checks off: a read would fault
  kLabelLow,        // label -5, not ignore_index: a read would see the previous row
  kNaNIgnored,      // NaN row, ignored
  kNaNZeroGrad,     // NaN row with both upstream gradients 0
  kNaNEntropyOnly,  // NaN row, upstream gradient only into the entropy
  kKinds
};

// Same value, NaN for NaN and inf for inf of the same sign; finite values within tolerance.
bool same(double a, double b, double rtol, double atol) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::abs(a - b) <= atol + rtol * std::abs(b);
}

// The CPU kernel on the same rows: every output and every gradient element the same, NaN where
// the emulated CUDA kernel gives NaN and nowhere else.
template <class T>
void compare_with_cpu(const Logits<T>& X, const std::vector<int64_t>& labels,
                      const core::LogProbParams& p, Outputs& cuda_out,
                      const core::BackwardInputs& in, const std::vector<T>& cuda_grad) {
  const int64_t N = X.layout.rows(), V = X.layout.vocab;
  Outputs c(N);
  cpu::token_logprobs_forward(reinterpret_cast<const cpu_t<T>*>(X.base), X.layout, labels.data(), p,
                              c.ptrs(true), serial_for());
  for (int64_t r = 0; r < N; ++r) {
    INFO("CPU vs CUDA, row kind " << r << " label " << labels[r]);
    CHECK(same(c.lp[r], cuda_out.lp[r], 2e-5, 1e-4));
    CHECK(same(c.lse[r], cuda_out.lse[r], 2e-5, 1e-4));
    CHECK(same(c.H[r], cuda_out.H[r], 1e-4, 2e-4));
    CHECK(same(c.lsp2[r], cuda_out.lsp2[r], 1e-4, 2e-4));
    CHECK(same(c.mean[r], cuda_out.mean[r], 1e-5, 1e-4));
    CHECK(int(c.argmax[r]) == int(cuda_out.argmax[r]));
  }
  // The backward from the CUDA forward's statistics (in), as in the parity suite.
  std::vector<T> cg(static_cast<size_t>(N * V), from_f<T>(12345.f));
  cpu::token_logprobs_backward(reinterpret_cast<const cpu_t<T>*>(X.base),
                               reinterpret_cast<cpu_t<T>*>(cg.data()), X.layout,
                               core::RowLayout{1, N, 0, V, V}, labels.data(), p, in, serial_for());
  const double grt = std::is_same_v<T, float> ? 2e-4 : std::is_same_v<T, __half> ? 4e-3 : 2e-2;
  for (int64_t r = 0; r < N; ++r) {
    int64_t diff = 0;
    for (int64_t v = 0; v < V; ++v)
      if (!same(to_f(cg[r * V + v]), to_f(cuda_grad[r * V + v]), grt, 1e-5) && diff++ < 2)
        FAIL_CHECK("CPU vs CUDA gradient, row kind " << r << " v " << v << ": "
                                                     << to_f(cg[r * V + v]) << " vs "
                                                     << to_f(cuda_grad[r * V + v]));
    CHECK(diff == 0);
  }
}

template <class T>
void bad_rows(int64_t V) {
  const int64_t N = kKinds;
  Logits<T> X(core::RowLayout{1, N, 0, V, V}, 0);
  Options o;
  o.all_stats = true;
  auto labels = fill(X, o.p.ignore_index, 0.0, static_cast<uint32_t>(V));
  std::vector<float> g(N, 1.5f), gh(N, 0.7f);
  auto set = [&](int64_t r, int64_t v, float x) { X.row(r)[v] = from_f<T>(x); };
  set(kNaNEarly, 0, kNaN);
  set(kNaNLate, V - 1, kNaN);
  set(kPosInf, V / 2, kInf);
  set(kPosInfAtLabel, labels[kPosInfAtLabel], kInf);
  labels[kNaNLabelTop] = V / 2;
  set(kNaNLabelTop, V / 2, 50.f);
  if (V > 1) set(kNaNLabelTop, (V / 2 + 1) % V, kNaN);
  for (int64_t v = 0; v < V; ++v) set(kAllNegInf, v, -kInf);
  for (int64_t v = 0; v < V; v += 3) set(kSomeNegInf, v, -kInf);
  labels[kSomeNegInf] = 0;
  if (V == 1) set(kSomeNegInf, 0, 1.f);  // a one-logit row can not hold a -inf and mass
  labels[kLabelHigh] = int64_t{1} << 40;
  labels[kLabelLow] = -5;
  set(kNaNIgnored, V / 3, kNaN);
  labels[kNaNIgnored] = o.p.ignore_index;
  set(kNaNZeroGrad, V / 3, kNaN);
  g[kNaNZeroGrad] = gh[kNaNZeroGrad] = 0.f;
  set(kNaNEntropyOnly, V / 3, kNaN);
  g[kNaNEntropyOnly] = 0.f;

  Outputs out(N);
  REQUIRE(cu::launch_token_logprobs_forward(X.base, X.layout, labels.data(), o.p, out.ptrs(true),
                                            cudaStream_t{}) == cudaSuccess);
  core::BackwardInputs in{g.data(), gh.data(), out.lse.data(), out.H.data()};
  std::vector<T> grad(static_cast<size_t>(N * V), from_f<T>(12345.f));
  REQUIRE(cu::launch_token_logprobs_backward(X.base, grad.data(), X.layout,
                                             core::RowLayout{1, N, 0, V, V}, labels.data(), o.p, in,
                                             cudaStream_t{}) == cudaSuccess);
  compare_with_cpu(X, labels, o.p, out, in, grad);
  auto grads = [&](int64_t r, auto pred) {
    for (int64_t v = 0; v < V; ++v)
      if (!pred(to_f(grad[r * V + v]), v)) return false;
    return true;
  };
  auto all_nan = [](float x, int64_t) { return std::isnan(x); };
  auto all_zero = [](float x, int64_t) { return x == 0.f; };
  auto all_finite = [](float x, int64_t) { return std::isfinite(x); };
  INFO(type_name<T>() << " V " << V);
  for (int64_t r = 0; r < N; ++r) {
    INFO("row kind " << r << ": lp " << out.lp[r] << " lse " << out.lse[r] << " H " << out.H[r]
                     << " lsp2 " << out.lsp2[r] << " mean " << out.mean[r] << " argmax "
                     << int(out.argmax[r]));
    switch (r) {
      case kFine:
        CHECK(std::isfinite(out.lp[r]));
        CHECK(grads(r, all_finite));
        break;
      case kNaNEarly:
      case kNaNLate:
      case kPosInf:
      case kPosInfAtLabel:
      case kNaNEntropyOnly:
        CHECK(std::isnan(out.lp[r]));
        CHECK(std::isnan(out.lse[r]));
        CHECK(std::isnan(out.H[r]));
        CHECK(std::isnan(out.lsp2[r]));
        CHECK(
            (r == kPosInf || r == kPosInfAtLabel ? out.mean[r] == kInf : std::isnan(out.mean[r])));
        CHECK(out.argmax[r] == 0);
        CHECK(grads(r, all_nan));
        break;
      case kAllNegInf:
        CHECK(out.lse[r] == -kInf);
        CHECK(std::isnan(out.lp[r]));
        CHECK(std::isnan(out.H[r]));
        CHECK(std::isnan(out.lsp2[r]));
        CHECK(out.mean[r] == -kInf);
        CHECK(out.argmax[r] == 0);
        CHECK(grads(r, all_nan));
        break;
      case kSomeNegInf:
        if (V > 1) {
          CHECK(out.lp[r] == -kInf);
          CHECK(std::isfinite(out.lse[r]));
          CHECK(std::isfinite(out.H[r]));
          CHECK(std::isfinite(out.lsp2[r]));
          CHECK(out.mean[r] == -kInf);
          CHECK(out.argmax[r] == 0);
          // p = 0 at the -inf logits, so there the gradient is g * 1[v = y] exactly.
          CHECK(grads(r, [&](float x, int64_t v) {
            return std::isfinite(x) && (v % 3 != 0 || x == (v == 0 ? g[r] : 0.f));
          }));
        }
        break;
      case kLabelHigh:
      case kLabelLow:  // every output NaN, as on the CPU
        CHECK(std::isnan(out.lp[r]));
        CHECK(std::isnan(out.lse[r]));
        CHECK(std::isnan(out.H[r]));
        CHECK(std::isnan(out.lsp2[r]));
        CHECK(std::isnan(out.mean[r]));
        CHECK(out.argmax[r] == 0);
        CHECK(grads(r, all_nan));
        break;
      case kNaNLabelTop:
        if (V > 1) {
          CHECK(std::isnan(out.lp[r]));
          CHECK(std::isnan(out.lse[r]));
          CHECK(out.argmax[r] == 0);
          CHECK(grads(r, all_nan));
        }
        break;
      case kNaNIgnored:
        CHECK((out.lp[r] == 0.f && out.lse[r] == 0.f && out.H[r] == 0.f && out.argmax[r] == 0));
        CHECK(grads(r, all_zero));
        break;
      case kNaNZeroGrad:
        CHECK(std::isnan(out.lp[r]));
        CHECK(grads(r, all_zero));
        break;
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated CUDA kernels keep the bad-row contract (NaN in, NaN out)",
                   "[emu][quick]", float, __nv_bfloat16, __half) {
  for (int64_t V : {1, 7, 1001, 9001}) bad_rows<TestType>(V);
}

// ---- the forward's record of an out-of-range label (what the torch adapter reports) ----------

namespace {

cu::LabelError poisoned_word() {
  cu::LabelError e{};
  e.state = cu::LabelError::kEmpty;
  e.position = e.value = e.vocab = e.ignore_index = -777;
  return e;
}

// Runs the forward over N rows of V with the given labels and returns the word it left.
template <class T>
cu::LabelError run_recording(int64_t N, int64_t V, std::vector<int64_t> bad_rows, int64_t bad_value,
                             int64_t ignore_index, cu::LabelError start) {
  Logits<T> X(core::RowLayout{1, N, 0, V, V}, 1);
  auto labels = fill(X, ignore_index, 0.3, static_cast<uint32_t>(N + V));
  for (int64_t r : bad_rows) labels[r] = bad_value;
  core::LogProbParams p;
  p.ignore_index = ignore_index;
  Outputs out(N);
  cu::LabelError word = start;
  REQUIRE(cu::launch_token_logprobs_forward(X.base, X.layout, labels.data(), p, out.ptrs(true),
                                            cudaStream_t{}, &word) == cudaSuccess);
  for (int64_t r : bad_rows) CHECK(std::isnan(out.lp[r]));
  return word;
}

}  // namespace

TEMPLATE_TEST_CASE("the emulated CUDA forward records one out-of-range label for the host",
                   "[emu][quick]", float, __nv_bfloat16) {
  // 32 threads per row (V 37), one block per row (V 4097), and the split path's merge kernel
  // (V 16411, few rows), each with several bad rows that race for the word.
  for (int64_t V : {37, 4097, 16411}) {
    const int64_t N = V > 8192 ? 3 : 41;
    for (int64_t bad : {V, int64_t{1} << 40, int64_t{-5}}) {
      INFO("V " << V << " bad label " << bad);
      const std::vector<int64_t> rows =
          N > 3 ? std::vector<int64_t>{2, 17, 40} : std::vector<int64_t>{0, 2};
      const cu::LabelError w = run_recording<TestType>(N, V, rows, bad, 0, poisoned_word());
      CHECK(w.state == cu::LabelError::kReady);
      CHECK(std::find(rows.begin(), rows.end(), w.position) != rows.end());
      CHECK(w.value == bad);
      CHECK(w.vocab == V);
      CHECK(w.ignore_index == 0);
    }
  }
}

TEST_CASE("the emulated CUDA forward leaves the label word alone for good labels", "[emu][quick]") {
  // ignore_index outside [0, V) (the default -100, and V itself) is not a bad label.
  for (int64_t ignore : {int64_t{-100}, int64_t{1001}, int64_t{0}}) {
    INFO("ignore_index " << ignore);
    const cu::LabelError w = run_recording<float>(29, 1001, {}, 0, ignore, poisoned_word());
    CHECK(w.state == cu::LabelError::kEmpty);
    CHECK(w.position == -777);
    CHECK(w.value == -777);
  }
}

TEST_CASE("the emulated CUDA forward keeps a label word that already holds an error",
          "[emu][quick]") {
  cu::LabelError start = poisoned_word();
  start.state = cu::LabelError::kReady;
  start.position = 5, start.value = 99999, start.vocab = 7, start.ignore_index = -100;
  const cu::LabelError w = run_recording<float>(19, 37, {3, 4}, 37, -100, start);
  CHECK(w.state == cu::LabelError::kReady);
  CHECK(w.position == 5);
  CHECK(w.value == 99999);
  CHECK(w.vocab == 7);
}

// ---- extreme labels: INT64_MIN and INT64_MAX, with the label checks off ----------------------

namespace {

// The labels of every row kind below, for a vocabulary of V: the extremes of int64, the values
// next to [0, V), and one good label (row 0) that keeps each block's other rows honest.
std::vector<int64_t> extreme_labels(int64_t V) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  return {V / 2, kMin, kMax, kMin + 1, kMax - 1, V, -1, int64_t{-1} << 62};
}

// Forward then backward over rows with extreme labels (the backward's label offset in a split
// chunk and its one-hot index are unsigned, so no label overflows: the UBSan build runs this).
// misalign 0 takes the backward's vector path (logits and gradient rows aligned alike), 1 its
// scalar one.
template <class T>
void extreme_label_rows(int64_t V, int64_t misalign) {
  const auto labels = extreme_labels(V);
  const int64_t N = static_cast<int64_t>(labels.size());
  Logits<T> X(core::RowLayout{1, N, 0, V, V}, misalign);
  (void)fill(X, -100, 0.0, static_cast<uint32_t>(V) + 21);
  core::LogProbParams p;
  Outputs out(N);
  cu::LabelError word{};
  REQUIRE(cu::launch_token_logprobs_forward(X.base, X.layout, labels.data(), p, out.ptrs(true),
                                            cudaStream_t{}, &word) == cudaSuccess);
  const bool split = hafrm_cuda_emu::last_grid.y > 1u;
  INFO(type_name<T>() << " V " << V << " misalign " << misalign << " split " << split);
  CHECK(word.state == cu::LabelError::kReady);
  CHECK(word.position >= 1);
  CHECK(word.value == labels[static_cast<size_t>(word.position)]);
  CHECK(std::isfinite(out.lp[0]));
  for (int64_t r = 1; r < N; ++r) {
    INFO("label " << labels[r]);
    CHECK(std::isnan(out.lp[r]));
    CHECK(std::isnan(out.lse[r]));
    CHECK(std::isnan(out.H[r]));
    CHECK(out.argmax[r] == 0);
  }
  // The public path: backward from the forward's own statistics; bad rows NaN, as on the CPU.
  std::vector<float> g(N, 0.9f), gh(N, -0.4f);
  core::BackwardInputs in{g.data(), gh.data(), out.lse.data(), out.H.data()};
  std::vector<T> grad(static_cast<size_t>(N * V), from_f<T>(12345.f));
  const core::RowLayout GL{1, N, 0, V, V};
  REQUIRE(cu::launch_token_logprobs_backward(X.base, grad.data(), X.layout, GL, labels.data(), p,
                                             in, cudaStream_t{}) == cudaSuccess);
  compare_with_cpu(X, labels, p, out, in, grad);
  for (int64_t r = 1; r < N; ++r)
    for (int64_t v = 0; v < V; ++v)
      if (!std::isnan(to_f(grad[r * V + v]))) {
        FAIL_CHECK("row " << r << " label " << labels[r] << " v " << v << ": "
                          << to_f(grad[r * V + v]) << ", expected NaN");
        break;
      }

  // A vocabulary tile of the linear path: the row's label lies in another tile (outside [0, V)
  // here) and its LSE is finite (the whole row's). The backward adds no one-hot term, reads
  // nothing outside the row, and gives -g p - gh p (z - lse + H), as the CPU kernel does.
  std::vector<float> lse(N, out.lse[0]), H(N, out.H[0]);
  for (int64_t r = 1; r < N; ++r)
    for (int64_t v = 0; v < V; ++v) X.row(r)[v] = X.row(0)[v];
  core::BackwardInputs tile{g.data(), gh.data(), lse.data(), H.data()};
  std::fill(grad.begin(), grad.end(), from_f<T>(12345.f));
  REQUIRE(cu::launch_token_logprobs_backward(X.base, grad.data(), X.layout, GL, labels.data(), p,
                                             tile, cudaStream_t{}) == cudaSuccess);
  compare_with_cpu(X, labels, p, out, tile, grad);
  const RefRow R = reference_row(X.row(0), V, labels[0], p, g[0], gh[0]);
  const double grt = std::is_same_v<T, float> ? 1e-4 : std::is_same_v<T, __half> ? 2e-3 : 8e-3;
  for (int64_t r = 1; r < N; ++r) {
    int64_t diff = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double want = R.grad[v] - (v == labels[0] ? g[0] : 0.0);  // no one-hot term
      if (!near(to_f(grad[r * V + v]), want, grt, 1e-5) && diff++ < 2)
        FAIL_CHECK("tile row " << r << " label " << labels[r] << " v " << v << ": "
                               << to_f(grad[r * V + v]) << " vs " << want);
    }
    CHECK(diff == 0);
  }
  CHECK(X.padding_intact());
}

}  // namespace

TEMPLATE_TEST_CASE("emulated CUDA kernels on INT64_MIN / INT64_MAX labels: NaN rows, no overflow",
                   "[emu][quick]", float, __nv_bfloat16) {
  // 32 threads per row, one block per row, and the split path (its chunks' label offset).
  for (int64_t V : {37, 4097, 16411})
    for (int64_t misalign : {0, 1}) extreme_label_rows<TestType>(V, misalign);
}

// ---- is-argmax at ties under a transform: decided on raw logits, the same on both devices -----

TEMPLATE_TEST_CASE("emulated CUDA and CPU agree on is-argmax at ties under soft-cap and scale",
                   "[emu][quick]", float, __nv_bfloat16) {
  // A soft-cap of 1 saturates tanh for these logits, so float z ties where the raw logits do
  // not; near-ties one ulp apart; exact raw ties; a negative scale (argmax = the smallest x).
  const std::vector<core::LogitTransform> transforms = {{1.f, 1.f, 1.f},
                                                        {0.5f, 30.f, 1.f / 0.7f},
                                                        {-1.f, 20.f, 1.f},
                                                        {0.5f, 0.f, 1.f},
                                                        {-2.f, 0.f, 1.f}};
  for (int64_t V : {7, 1001, 4097}) {
    const int64_t N = 12;
    Logits<TestType> X(core::RowLayout{1, N, 0, V, V}, 0);
    auto labels = fill(X, -100, 0.0, static_cast<uint32_t>(V), 1.f);
    for (int64_t r = 0; r < N; ++r) {
      TestType* row = X.row(r);
      const int64_t y = labels[r], w = (y + 1 + r) % V;
      const float big = 9.f + static_cast<float>(r % 3);
      switch (r % 6) {
        case 0:  // the label a clear max
          row[y] = from_f<TestType>(big);
          break;
        case 1:  // an exact raw tie: both count
          row[y] = row[w] = from_f<TestType>(big);
          break;
        case 2:  // the label one ulp below another saturated logit: not the max
          row[w] = from_f<TestType>(big);
          row[y] = from_f<TestType>(std::nextafter(to_f(row[w]), 0.f));
          if (to_f(row[y]) == to_f(row[w])) row[y] = from_f<TestType>(big - 0.0625f);
          break;
        case 3:  // the label the smallest (the argmax under a negative scale)
          row[y] = from_f<TestType>(-big);
          break;
        case 4:  // the label one ulp above another: the max
          row[w] = from_f<TestType>(big - 0.0625f);
          row[y] = from_f<TestType>(big);
          break;
        default:  // the label an ordinary logit
          break;
      }
    }
    for (const auto& tf : transforms) {
      INFO("V " << V << " transform scale " << tf.scale << " softcap " << tf.softcap << " inv_temp "
                << tf.inv_temperature);
      core::LogProbParams p;
      p.transform = tf;
      Outputs g(N), c(N);
      REQUIRE(cu::launch_token_logprobs_forward(X.base, X.layout, labels.data(), p, g.ptrs(true),
                                                cudaStream_t{}) == cudaSuccess);
      cpu::token_logprobs_forward(reinterpret_cast<const cpu_t<TestType>*>(X.base), X.layout,
                                  labels.data(), p, c.ptrs(true), serial_for());
      const float sgn = (tf.scale > 0.f) == (tf.inv_temperature > 0.f) ? 1.f : -1.f;
      for (int64_t r = 0; r < N; ++r) {
        const TestType* row = X.row(r);
        bool expect = true;  // sign * x_y is the max of sign * x
        for (int64_t v = 0; v < V; ++v)
          if (sgn * to_f(row[v]) > sgn * to_f(row[labels[r]])) expect = false;
        INFO("row " << r << " case " << r % 6 << " expect " << expect);
        CHECK(int(g.argmax[r]) == int(expect));
        CHECK(int(c.argmax[r]) == int(expect));
      }
    }
  }
}
