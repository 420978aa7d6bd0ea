// emu_harness.hpp: runs hafrm's CUDA kernels through the CPU emulator and checks them against a
// float64 host reference and against the CPU kernel. Torch-free, so each test TU compiles in
// seconds and can be rebuilt with sanitizers.
#pragma once

#include <cuda_runtime.h>  // the emulator's stand-in (tests/cuda_emu/include), not the toolkit's

#include "hafrm/kernels/cpu/token_logprobs.hpp"
#include "hafrm/kernels/cuda/token_logprobs.cuh"

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace emu_test {

namespace core = hafrm::core;
namespace cu = hafrm::kernels::cuda;
namespace cpu = hafrm::kernels::cpu;

inline float to_f(float x) { return x; }
inline float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
inline float to_f(__half x) { return __half2float(x); }
template <class T>
T from_f(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(x);
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(x);
}
// The CPU kernel's element type with the same bits.
template <class T>
using cpu_t =
    std::conditional_t<std::is_same_v<T, float>, float,
                       std::conditional_t<std::is_same_v<T, __half>, Eigen::half, Eigen::bfloat16>>;
template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "f32";
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return "bf16";
  return "f16";
}

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Element storage addressed through a RowLayout; padding holds NaN so that a read outside any
// row poisons a result, and a write outside any row is seen by padding_intact().
template <class T>
struct Logits {
  core::RowLayout layout;
  std::vector<T> heap;
  T* base = nullptr;
  void* map = nullptr;
  size_t map_bytes = 0;

  static int64_t extent(const core::RowLayout& L) {
    if (L.rows() == 0) return 0;
    return (L.outer - 1) * L.stride_outer + (L.inner - 1) * L.stride_inner + L.vocab;
  }
  // misalign: offset of the base from a 16-byte boundary, in elements.
  Logits(const core::RowLayout& L, int64_t misalign) : layout(L) {
    heap.assign(static_cast<size_t>(extent(L) + misalign + 16), from_f<T>(kNaN));
    const auto addr = reinterpret_cast<uintptr_t>(heap.data());
    const int64_t skip = static_cast<int64_t>(((16 - addr % 16) % 16) / sizeof(T));
    base = heap.data() + skip + misalign;
  }
  // Sparse: reserve the whole extent without committing it; only touched pages cost memory
  // (rows 2^31 elements apart need 64-bit offsets).
  struct Sparse {};
  Logits(const core::RowLayout& L, Sparse) : layout(L) {
    map_bytes = static_cast<size_t>(extent(L)) * sizeof(T);
    map = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    REQUIRE(map != MAP_FAILED);
    base = static_cast<T*>(map);
  }
  // Revokes all access to row r (rows must start on pages: see page_stride) so that any read
  // of it faults.
  void protect_row(int64_t r) {
    const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const auto b = reinterpret_cast<uintptr_t>(row(r));
    const auto e = (reinterpret_cast<uintptr_t>(row(r) + layout.vocab) + page - 1) / page * page;
    REQUIRE(b % page == 0);
    REQUIRE(mprotect(reinterpret_cast<void*>(b), e - b, PROT_NONE) == 0);
  }
  // A row stride (in elements) that starts every row on a fresh page.
  static int64_t page_stride(int64_t V) {
    const int64_t page = sysconf(_SC_PAGESIZE), bytes = V * static_cast<int64_t>(sizeof(T));
    return (bytes + page - 1) / page * page / static_cast<int64_t>(sizeof(T));
  }
  ~Logits() {
    if (map) munmap(map, map_bytes);
  }
  Logits(const Logits&) = delete;
  Logits& operator=(const Logits&) = delete;
  T* row(int64_t r) const { return base + layout.offset(r); }
  bool padding_intact() const {
    if (map) return true;
    std::vector<char> in_row(heap.size(), 0);
    for (int64_t r = 0; r < layout.rows(); ++r)
      for (int64_t v = 0; v < layout.vocab; ++v)
        in_row[static_cast<size_t>(row(r) + v - heap.data())] = 1;
    for (size_t i = 0; i < heap.size(); ++i)
      if (!in_row[i] && !std::isnan(to_f(heap[i]))) return false;
    return true;
  }
};

struct Options {
  core::LogProbParams p{};
  bool all_stats = false;     // entropy, log sum p^2, mean logit, is-argmax besides lp and lse
  bool entropy_grad = false;  // upstream gradient into the entropy too
  bool inplace = false;       // backward overwrites the logits
  double zero_grad_frac = 0.1;
  bool compare_cpu = true;  // also check parity with the CPU kernel
  bool backward = true;
  std::vector<int64_t> zero_grad_rows;    // rows forced to zero upstream gradients
  std::function<void()> before_backward;  // e.g. revoke access to rows backward must not read
};

struct RefRow {
  bool ignored = true;
  double lp = 0, lse = 0, H = 0, lsp2 = 0, mean = 0;
  double argmax_margin = 0;  // z_y - max_{v != y} z_v (is-argmax checked only when clear-cut)
  bool finite = true;
  std::vector<double> grad;
};

inline double ref_z(double x, const core::LogitTransform& tf) {
  double z = double(tf.scale) * x;
  if (tf.softcap > 0.f) z = double(tf.softcap) * std::tanh(z / double(tf.softcap));
  return z * double(tf.inv_temperature);
}
inline double ref_dz(double x, const core::LogitTransform& tf) {
  double d = double(tf.scale) * double(tf.inv_temperature);
  if (tf.softcap > 0.f) {
    const double t = std::tanh(double(tf.scale) * x / double(tf.softcap));
    d *= 1 - t * t;
  }
  return d;
}

// float64 reference of one row: forward statistics and the gradient for upstream (g, gh).
template <class T>
RefRow reference_row(const T* row, int64_t V, int64_t y, const core::LogProbParams& p, double g,
                     double gh) {
  RefRow R;
  R.grad.assign(static_cast<size_t>(V), 0.0);
  if (y == p.ignore_index) return R;
  R.ignored = false;
  std::vector<double> x(V), z(V);
  double m = -INFINITY, zsum = 0;
  for (int64_t v = 0; v < V; ++v) {
    x[v] = to_f(row[v]);
    z[v] = ref_z(x[v], p.transform);
    zsum += z[v];
    m = std::max(m, z[v]);
    if (!std::isfinite(x[v])) R.finite = false;
  }
  double s = 0, sz = 0, s2 = 0;
  for (int64_t v = 0; v < V; ++v) {
    const double e = std::exp(z[v] - m);
    s += e, sz += e * z[v], s2 += e * e;
  }
  R.lse = m + std::log(s);
  R.lp = z[y] - R.lse;
  R.H = R.lse - sz / s;
  R.lsp2 = std::log(s2) - 2 * std::log(s);
  R.mean = zsum / double(V);
  double other = -INFINITY;
  for (int64_t v = 0; v < V; ++v)
    if (v != y) other = std::max(other, z[v]);
  R.argmax_margin = z[y] - other;
  for (int64_t v = 0; v < V; ++v) {
    const double pv = std::exp(z[v] - R.lse);
    double d = -g * pv;
    if (pv > 0) d -= gh * pv * (z[v] - R.lse + R.H);
    if (v == y) d += g;
    R.grad[v] = d * ref_dz(x[v], p.transform);
  }
  return R;
}

inline bool near(double a, double b, double rtol, double atol) {
  if (std::isnan(b)) return std::isnan(a);
  if (std::isinf(b)) return a == b;
  return std::abs(a - b) <= atol + rtol * std::abs(b);
}

inline auto serial_for() {
  return [](int64_t b, int64_t e, int64_t, auto&& f) { f(b, e); };
}

struct Outputs {
  std::vector<float> lp, lse, H, lsp2, mean;
  std::vector<char> argmax;  // bool storage without vector<bool>'s packing
  explicit Outputs(int64_t n)
      : lp(n, kNaN), lse(n, kNaN), H(n, kNaN), lsp2(n, kNaN), mean(n, kNaN), argmax(n, 2) {}
  core::ForwardOutputs ptrs(bool all) {
    core::ForwardOutputs o;
    o.logprob = lp.data();
    o.lse = lse.data();
    if (all) {
      o.entropy = H.data(), o.log_sum_p2 = lsp2.data(), o.mean_logit = mean.data();
      o.is_argmax = reinterpret_cast<bool*>(argmax.data());
    }
    return o;
  }
};

// Runs forward and backward on the emulator, checks them against the float64 reference (and the
// CPU kernel), and returns the number of rows checked.
template <class T>
int64_t check_case(Logits<T>& X, const std::vector<int64_t>& labels, const Options& o,
                   uint32_t seed, int64_t grad_misalign = 0) {
  const core::RowLayout L = X.layout;
  const int64_t N = L.rows(), V = L.vocab;
  INFO(type_name<T>() << " V " << V << " N " << N << " layout {" << L.outer << ", " << L.inner
                      << ", " << L.stride_outer << ", " << L.stride_inner << "} base%16 "
                      << reinterpret_cast<uintptr_t>(X.base) % 16 << " ignore " << o.p.ignore_index
                      << " scale " << o.p.transform.scale << " softcap " << o.p.transform.softcap
                      << " inv_temp " << o.p.transform.inv_temperature << " all " << o.all_stats
                      << " Hgrad " << o.entropy_grad << " inplace " << o.inplace << " seed "
                      << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  std::vector<float> g(N), gh(N);
  for (int64_t r = 0; r < N; ++r) {
    const bool zero = ud(rng) < o.zero_grad_frac;
    g[r] = zero ? 0.f : nd(rng);
    gh[r] = zero || !o.entropy_grad ? 0.f : nd(rng);
  }
  for (int64_t r : o.zero_grad_rows) g[r] = gh[r] = 0.f;
  std::vector<RefRow> ref(N);
  for (int64_t r = 0; r < N; ++r) ref[r] = reference_row(X.row(r), V, labels[r], o.p, g[r], gh[r]);

  Outputs out(N);
  REQUIRE(cu::launch_token_logprobs_forward(X.base, L, labels.data(), o.p, out.ptrs(o.all_stats),
                                            cudaStream_t{}) == cudaSuccess);
  const double rt = 2e-5, at = 1e-4;
  int64_t bad = 0;
  for (int64_t r = 0; r < N && bad < 5; ++r) {
    const RefRow& R = ref[r];
    INFO("row " << r << " label " << labels[r]);
    bool ok = near(out.lp[r], R.lp, rt, at) && near(out.lse[r], R.lse, rt, at);
    if (o.all_stats) {
      ok = ok && near(out.H[r], R.H, 1e-4, 2e-4) && near(out.lsp2[r], R.lsp2, 1e-4, 2e-4) &&
           near(out.mean[r], R.mean, 1e-5, 1e-4);
      if (R.ignored)
        ok = ok && out.argmax[r] == 0;
      else if (std::abs(R.argmax_margin) > 1e-3)
        ok = ok && out.argmax[r] == (R.argmax_margin > 0);
      else
        ok = ok && out.argmax[r] <= 1;
    }
    if (!ok) {
      ++bad;
      FAIL_CHECK("forward: lp " << out.lp[r] << " vs " << R.lp << ", lse " << out.lse[r] << " vs "
                                << R.lse << ", H " << out.H[r] << " vs " << R.H << ", lsp2 "
                                << out.lsp2[r] << " vs " << R.lsp2 << ", mean " << out.mean[r]
                                << " vs " << R.mean << ", argmax " << int(out.argmax[r])
                                << " margin " << R.argmax_margin);
    }
  }
  CHECK(bad == 0);

  if (o.compare_cpu) {
    Outputs c(N);
    cpu::token_logprobs_forward(reinterpret_cast<const cpu_t<T>*>(X.base), L, labels.data(), o.p,
                                c.ptrs(o.all_stats), serial_for());
    // is-argmax is decided on raw logits under a transform on both devices, so it must match
    // exactly, ties included (test_cuda_emu_bad_rows.cpp holds the tie cases).
    int64_t diff = 0;
    for (int64_t r = 0; r < N; ++r) {
      if (!ref[r].finite) continue;  // non-finite rows: the contract is checked separately
      const bool ok =
          near(out.lp[r], c.lp[r], rt, at) && near(out.lse[r], c.lse[r], rt, at) &&
          (!o.all_stats ||
           (near(out.H[r], c.H[r], 1e-4, 2e-4) && near(out.lsp2[r], c.lsp2[r], 1e-4, 2e-4) &&
            near(out.mean[r], c.mean[r], 1e-5, 1e-4) && out.argmax[r] == c.argmax[r]));
      if (!ok && diff++ < 3)
        FAIL_CHECK("CPU vs CUDA forward differ at row "
                   << r << ": lp " << out.lp[r] << " vs " << c.lp[r] << ", lse " << out.lse[r]
                   << " vs " << c.lse[r] << ", H " << out.H[r] << " vs " << c.H[r] << ", lsp2 "
                   << out.lsp2[r] << " vs " << c.lsp2[r] << ", mean " << out.mean[r] << " vs "
                   << c.mean[r] << ", argmax " << int(out.argmax[r]) << " vs " << int(c.argmax[r])
                   << " (float64: lp " << ref[r].lp << " H " << ref[r].H << " margin "
                   << ref[r].argmax_margin << ")");
    }
    CHECK(diff == 0);
  }
  if (!o.backward) return N;

  // Backward from the emulated forward's saved statistics, as the torch adapter does.
  core::BackwardInputs in;
  in.grad_logprob = g.data();
  in.grad_entropy = o.entropy_grad ? gh.data() : nullptr;
  in.lse = out.lse.data();
  in.entropy = o.all_stats ? out.H.data() : nullptr;
  if (o.entropy_grad) REQUIRE(o.all_stats);
  std::vector<T> cpu_copy;  // the logits before an in-place backward overwrites them
  const int64_t ext = Logits<T>::extent(L);
  if (o.compare_cpu && !X.map) cpu_copy.assign(X.base, X.base + ext);
  core::RowLayout GL{1, N, 0, V, V};
  Logits<T> G(o.inplace ? core::RowLayout{} : GL, grad_misalign);
  T* gbase = o.inplace ? X.base : G.base;
  if (o.inplace) GL = L;
  if (o.before_backward) o.before_backward();
  REQUIRE(cu::launch_token_logprobs_backward(X.base, gbase, L, GL, labels.data(), o.p, in,
                                             cudaStream_t{}) == cudaSuccess);
  const double grt = std::is_same_v<T, float> ? 1e-4 : std::is_same_v<T, __half> ? 2e-3 : 8e-3;
  bad = 0;
  for (int64_t r = 0; r < N && bad < 5; ++r) {
    const T* gr = gbase + GL.offset(r);
    const double gat = 2e-5 * (std::abs(g[r]) + std::abs(gh[r]) * (1 + std::abs(ref[r].lse)));
    for (int64_t v = 0; v < V; ++v) {
      if (!near(to_f(gr[v]), ref[r].grad[v], grt, gat)) {
        ++bad;
        FAIL_CHECK("backward row " << r << " label " << labels[r] << " v " << v << ": "
                                   << to_f(gr[v]) << " vs " << ref[r].grad[v] << " (g " << g[r]
                                   << ", gh " << gh[r] << ")");
        break;
      }
    }
  }
  CHECK(bad == 0);
  if (!o.inplace) CHECK(G.padding_intact());
  CHECK(X.padding_intact());

  if (o.compare_cpu && !X.map) {
    std::vector<T> cg(static_cast<size_t>(N * V), from_f<T>(kNaN));
    cpu::token_logprobs_backward(
        reinterpret_cast<const cpu_t<T>*>(cpu_copy.data()), reinterpret_cast<cpu_t<T>*>(cg.data()),
        L, core::RowLayout{1, N, 0, V, V}, labels.data(), o.p, in, serial_for());
    int64_t diff = 0;
    for (int64_t r = 0; r < N; ++r) {
      if (!ref[r].finite) continue;
      const T* gr = gbase + GL.offset(r);
      const double gat = 2e-5 * (std::abs(g[r]) + std::abs(gh[r]) * (1 + std::abs(ref[r].lse)));
      for (int64_t v = 0; v < V; ++v)
        if (!near(to_f(gr[v]), to_f(cg[r * V + v]), 2 * grt, 2 * gat) && diff++ < 3)
          FAIL_CHECK("CPU vs CUDA backward differ at row " << r << " v " << v << ": " << to_f(gr[v])
                                                           << " vs " << to_f(cg[r * V + v]));
    }
    CHECK(diff == 0);
  }
  return N;
}

// Fills every row with N(0, sigma) logits (one row in eight peaked at its label) and returns
// labels with about ignore_frac of them set to p.ignore_index.
template <class T>
std::vector<int64_t> fill(Logits<T>& X, int64_t ignore_index, double ignore_frac, uint32_t seed,
                          float sigma = 3.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, sigma);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  const int64_t N = X.layout.rows(), V = X.layout.vocab;
  std::vector<int64_t> labels(N);
  for (int64_t r = 0; r < N; ++r) {
    T* row = X.row(r);
    for (int64_t v = 0; v < V; ++v) row[v] = from_f<T>(nd(rng));
    labels[r] = std::uniform_int_distribution<int64_t>(0, V - 1)(rng);
    if (r % 8 == 3) row[labels[r]] = from_f<T>(to_f(row[labels[r]]) + 4 * sigma);
    if (ud(rng) < ignore_frac) labels[r] = ignore_index;
  }
  return labels;
}

}  // namespace emu_test
