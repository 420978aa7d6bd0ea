// The CUDA kernels (include/hafrm/kernels/cuda/token_logprobs.cuh), compiled unchanged as host
// C++ and run through launch_token_logprobs_{forward,backward} on the CPU emulator, against a
// float64 reference and the CPU kernel. Tags: [emu] everything, [quick] the subset the
// ThreadSanitizer build runs.
#include "emu_harness.hpp"

using namespace emu_test;

namespace {

struct EmuGridCap {  // caps gridDim.x for one scope so grid-stride loops take several turns
  explicit EmuGridCap(unsigned g) { hafrm_cuda_emu::max_grid = g; }
  ~EmuGridCap() { hafrm_cuda_emu::max_grid = 0; }
};

Options option_set(int k) {
  Options o;
  switch (k) {
    case 0:  // defaults: log-prob and LSE only
      break;
    case 1:  // every statistic, the entropy gradient, a non-default ignore_index, in place
      o.p.ignore_index = 0;
      o.all_stats = o.entropy_grad = o.inplace = true;
      break;
    default:  // the logit transform: scale, soft-cap, temperature
      o.p.ignore_index = -1;
      o.p.transform = {0.5f, 20.f, 1.f / 0.7f};
      o.all_stats = o.entropy_grad = true;
      break;
  }
  return o;
}

// Rows per case: enough for several rows per block and a partial last block.
int64_t rows_for(int64_t V) { return V <= 2048 ? 19 : V <= 4096 ? 5 : 3; }

template <class T>
void every_v_and_option(int64_t V, int k) {
  const Options o = option_set(k);
  const int64_t N = rows_for(V);
  Logits<T> X(core::RowLayout{1, N, 0, V, V}, 0);
  const uint32_t seed = static_cast<uint32_t>(V * 31 + k);
  auto labels = fill(X, o.p.ignore_index, 0.2, seed);
  check_case(X, labels, o, seed + 1);
}

}  // namespace

TEMPLATE_TEST_CASE("emulated CUDA kernels match float64 and the CPU kernel for every V and option",
                   "[emu]", float, __nv_bfloat16, __half) {
  for (int64_t V : {1, 7, 37, 513, 1001, 4097, 9001, 32001})
    for (int k = 0; k < 3; ++k) {
      INFO("V " << V << " option set " << k);
      every_v_and_option<TestType>(V, k);
    }
}

TEST_CASE("emulated CUDA kernels, quick subset", "[emu][quick]") {
  every_v_and_option<float>(37, 1);
  every_v_and_option<__nv_bfloat16>(1001, 2);
  every_v_and_option<__half>(4097, 0);
}

TEMPLATE_TEST_CASE("emulated CUDA kernels on misaligned bases and row strides that are not V",
                   "[emu]", float, __nv_bfloat16, __half) {
  for (int64_t V : {37, 1001, 4097, 9001})
    for (int64_t misalign : {0, 1, 3})
      for (int64_t pad : {0, 1, 8}) {
        if (misalign == 0 && pad == 0) continue;
        INFO("misalign " << misalign << " pad " << pad);
        const int64_t N = rows_for(V);
        Logits<TestType> X(core::RowLayout{1, N, 0, V + pad, V}, misalign);
        Options o = option_set(static_cast<int>((misalign + pad) % 3));
        o.inplace = false;
        const uint32_t seed = static_cast<uint32_t>(V + 7 * misalign + 13 * pad);
        auto labels = fill(X, o.p.ignore_index, 0.2, seed);
        check_case(X, labels, o, seed, /*grad_misalign=*/misalign);
      }
}

TEMPLATE_TEST_CASE("emulated CUDA kernels on sliced [:, :-1, :] views", "[emu]", float,
                   __nv_bfloat16) {
  for (int64_t V : {7, 1001, 32001}) {
    const int64_t B = 2, T = 5;
    // logits[:, :-1, :] of a contiguous [B, T, V]: rows (b, t < T - 1), outer stride T * V.
    Logits<TestType> X(core::RowLayout{B, T - 1, T * V, V, V}, 0);
    for (int k : {0, 1}) {
      Options o = option_set(k);
      auto labels = fill(X, o.p.ignore_index, 0.25, static_cast<uint32_t>(V + k));
      check_case(X, labels, o, static_cast<uint32_t>(V * 3 + k));
    }
  }
}

TEMPLATE_TEST_CASE("emulated CUDA kernels: several rows per block and grid-stride loops", "[emu]",
                   float, __half) {
  for (int64_t V : {7, 37, 513, 1001, 9001}) {
    const int64_t N = V <= 2048 ? 77 : 4;
    Logits<TestType> X(core::RowLayout{1, N, 0, V, V}, 0);
    Options o = option_set(V % 2 ? 2 : 1);
    auto labels = fill(X, o.p.ignore_index, 0.2, static_cast<uint32_t>(V));
    EmuGridCap cap(2);
    const int64_t before = hafrm_cuda_emu::launches;
    check_case(X, labels, o, static_cast<uint32_t>(V) + 5);
    CHECK(hafrm_cuda_emu::launches > before);
    CHECK(hafrm_cuda_emu::last_grid.x > 2u);  // the launcher asked for more blocks than ran
  }
}

TEMPLATE_TEST_CASE("emulated CUDA kernels address rows 2^31 elements apart (64-bit offsets)",
                   "[emu]", float, __nv_bfloat16) {
  const int64_t far = (int64_t{1} << 31) + 64;
  for (int64_t V : {37, 4097}) {
    // Three rows through the inner stride, then three through the outer stride.
    for (core::RowLayout L : {core::RowLayout{1, 3, 0, far, V}, core::RowLayout{3, 1, far, 0, V},
                              core::RowLayout{2, 2, 2 * far, far, V}}) {
      Logits<TestType> X(L, typename Logits<TestType>::Sparse{});
      Options o = option_set(1);
      auto labels = fill(X, o.p.ignore_index, 0.0, static_cast<uint32_t>(V));
      labels[0] = 1;  // never ignored: the first row is the one a 32-bit offset would alias
      check_case(X, labels, o, static_cast<uint32_t>(V) + 9);
    }
  }
}

TEMPLATE_TEST_CASE("emulated CUDA kernels on all-ignored rows write zeros", "[emu]", float,
                   __nv_bfloat16) {
  for (int64_t V : {7, 1001, 9001}) {
    const int64_t N = rows_for(V);
    Logits<TestType> X(core::RowLayout{1, N, 0, V, V}, 0);
    Options o = option_set(1);
    auto labels = fill(X, o.p.ignore_index, 1.0, static_cast<uint32_t>(V));
    check_case(X, labels, o, 3);
  }
}

TEMPLATE_TEST_CASE("emulated CUDA kernels: the split-vocabulary path for few rows and a long V",
                   "[emu]", float, __nv_bfloat16) {
  for (int64_t V : {16411, 32001})
    for (int64_t misalign : {0, 1})
      for (int k : {0, 1, 2}) {
        const int64_t N = 3;
        Logits<TestType> X(core::RowLayout{1, N, 0, V + misalign, V}, misalign);
        Options o = option_set(k);
        auto labels = fill(X, o.p.ignore_index, 0.2, static_cast<uint32_t>(V + k));
        labels[0] = V - 1;  // the label in the last chunk
        check_case(X, labels, o, static_cast<uint32_t>(V) + 11);
        CHECK(hafrm_cuda_emu::last_grid.y > 1u);  // the backward split too
        CHECK(hafrm_cuda_emu::live_allocations == 0);
      }
}

TEST_CASE("emulated CUDA kernels: split path, quick", "[emu][quick]") {
  Logits<float> X(core::RowLayout{1, 2, 0, 16411, 16411}, 1);
  Options o = option_set(1);
  o.inplace = false;
  auto labels = fill(X, o.p.ignore_index, 0.0, 5);
  check_case(X, labels, o, 6);
  CHECK(hafrm_cuda_emu::last_grid.y > 1u);
}

TEMPLATE_TEST_CASE(
    "emulated CUDA kernels never read ignored rows, nor in backward rows with zero "
    "upstream gradients (the fused causal shift)",
    "[emu][quick]", float, __nv_bfloat16, __half) {
  // The torch adapter does the causal shift on the labels: full [B, T, V] logits, label[b, t] =
  // input[b, t + 1] and ignore_index at t = T - 1. Each row sits on its own pages and the rows
  // that must not be read lose all access, so a read faults.
  for (int64_t V : {37, 4097, 16411}) {
    const int64_t B = 2, T = 5;
    const int64_t stride = Logits<TestType>::page_stride(V);
    Logits<TestType> X(core::RowLayout{B, T, T * stride, stride, V},
                       typename Logits<TestType>::Sparse{});
    for (int k : {0, 2}) {
      Options o = option_set(k);
      auto labels = fill(X, o.p.ignore_index, 0.0, static_cast<uint32_t>(V + k));
      for (int64_t b = 0; b < B; ++b) labels[b * T + T - 1] = o.p.ignore_index;
      labels[2] = o.p.ignore_index;
      o.zero_grad_rows = {1, 6};
      for (int64_t r = 0; r < B * T; ++r)
        if (labels[r] == o.p.ignore_index) X.protect_row(r);
      o.before_backward = [&] {
        for (int64_t r : o.zero_grad_rows) X.protect_row(r);
      };
      check_case(X, labels, o, static_cast<uint32_t>(V) + 13);
      for (int64_t r = 0; r < B * T; ++r)  // restore for the next option set
        REQUIRE(mprotect(X.row(r), V * sizeof(TestType), PROT_READ | PROT_WRITE) == 0);
    }
  }
}
