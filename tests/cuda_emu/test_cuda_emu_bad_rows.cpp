// The bad-row contract of include/hafrm/kernels/cuda/token_logprobs.cuh (NaN / +inf / all -inf
// rows, out-of-range labels with check_labels = false), run on the CPU emulator.
#include "emu_harness.hpp"

using namespace emu_test;

namespace {

enum Kind {
  kFine,
  kNaNEarly,        // NaN in the first vector
  kNaNLate,         // NaN in the scalar tail / last element
  kPosInf,          // one +inf
  kAllNegInf,       // no probability mass
  kSomeNegInf,      // -inf entries, the label among them: lp -inf, everything else finite
  kLabelHigh,       // label 2^40 with checks off: a read would fault
  kLabelLow,        // label -5, not ignore_index: a read would see the previous row
  kNaNIgnored,      // NaN row, ignored
  kNaNZeroGrad,     // NaN row with both upstream gradients 0
  kNaNEntropyOnly,  // NaN row, upstream gradient only into the entropy
  kKinds
};

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
      case kNaNEntropyOnly:
        CHECK(std::isnan(out.lp[r]));
        CHECK(std::isnan(out.lse[r]));
        CHECK(std::isnan(out.H[r]));
        CHECK(std::isnan(out.lsp2[r]));
        CHECK((r == kPosInf ? out.mean[r] == kInf : std::isnan(out.mean[r])));
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
      case kLabelLow:
        CHECK(std::isnan(out.lp[r]));
        CHECK(std::isfinite(out.lse[r]));
        CHECK(std::isfinite(out.H[r]));
        CHECK(out.argmax[r] == 0);
        CHECK(grads(r, all_nan));
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
