// hafrm/torch/grad_buffer_pool.hpp: reuse of the large CPU buffer that takes the logits' gradient.
//
// Why: the fused backward must create one [N, V] buffer per step, and a fresh buffer of that size
// comes straight from mmap, so its first touch costs a page fault per 4 KiB page; on a 1 GB
// gradient that costs more than the kernel itself (bench/README.md measures both). A training loop
// asks for the same size every step, and by the next step the previous gradient is dead (autograd
// passed it on to the LM head's matmul backward and dropped it). So the pool keeps the storage of
// the last large gradients and hands one out again when, and only when, nothing else refers to it
// any more (the pool's handle is its only reference: `use_count() == 1`). A gradient that is still
// alive anywhere (a leaf's `.grad`, a tensor the user kept) is therefore never written over.
//
// Cost: between steps the pool holds at most kSlots buffers (the size of the step's own peak, as
// PyTorch's CUDA caching allocator does on a GPU). `set_gradient_buffer_reuse(false)` or the
// environment variable HAFRM_GRAD_BUFFER_REUSE=0 turns it off; `release_gradient_buffers()` gives
// the memory back. Buffers under kMinBytes use the normal allocator (they are cheap to fault in and
// malloc keeps them anyway).
#pragma once

#include <torch/torch.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace hafrm {

struct GradientBufferStats {
  int64_t reused = 0;      // buffers handed out again
  int64_t allocated = 0;   // large buffers allocated fresh
  int64_t bytes_held = 0;  // bytes the pool keeps alive right now
};

namespace detail {

class GradBufferPool {
 public:
  static constexpr int64_t kMinBytes = int64_t{32} << 20;
  static constexpr size_t kSlots = 2;

  static GradBufferPool& instance() {
    static GradBufferPool pool;
    return pool;
  }

  // A contiguous tensor of `sizes` on the CPU, uninitialised: the caller writes every element.
  torch::Tensor acquire(c10::IntArrayRef sizes, const torch::TensorOptions& opts) {
    const int64_t bytes =
        c10::multiply_integers(sizes) * static_cast<int64_t>(opts.dtype().itemsize());
    if (bytes < kMinBytes || !enabled_.load(std::memory_order_relaxed))
      return fresh(sizes, opts, false);
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& s : slots_) {
      // Only this handle refers to the storage: every tensor that used it is gone. At most twice
      // the size asked for, so a small request does not pin a much larger buffer in use.
      if (s && s.use_count() == 1 && static_cast<int64_t>(s.nbytes()) >= bytes &&
          static_cast<int64_t>(s.nbytes()) <= 2 * bytes) {
        ++stats_.reused;
        auto t = torch::empty({0}, opts);
        t.set_(s, 0, sizes, c10::contiguous_strides(sizes));
        return t;
      }
    }
    auto t = fresh(sizes, opts, true);
    ++stats_.allocated;
    // Keep it in an empty slot, else in place of a free one; if every slot is in use, do not keep.
    for (auto& s : slots_) {
      if (!s || s.use_count() == 1) {
        s = t.storage();
        break;
      }
    }
    return t;
  }

  void set_enabled(bool on) {
    enabled_.store(on, std::memory_order_relaxed);
    if (!on) release();
  }
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }

  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& s : slots_) s = c10::Storage();
  }

  GradientBufferStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    GradientBufferStats r = stats_;
    r.bytes_held = 0;
    for (auto& s : slots_)
      if (s) r.bytes_held += static_cast<int64_t>(s.nbytes());
    return r;
  }

 private:
  GradBufferPool() {
    const char* env = std::getenv("HAFRM_GRAD_BUFFER_REUSE");
    enabled_ = !(env && std::strcmp(env, "0") == 0);
  }

  // A fresh buffer; large ones ask for transparent huge pages (2 MiB), which cuts the page faults
  // of its first touch 512-fold where the kernel has huge pages to give (THP "madvise" mode, the
  // Debian default, gives them only on request). Large buffers come from mmap, untouched, so the
  // advice takes effect on first touch; only the 2 MiB-aligned interior can become huge pages.
  static torch::Tensor fresh(c10::IntArrayRef sizes, const torch::TensorOptions& opts, bool large) {
    auto t = torch::empty(sizes, opts);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (large) {
      constexpr uintptr_t kHuge = uintptr_t{2} << 20;
      const auto p = reinterpret_cast<uintptr_t>(t.data_ptr());
      const uintptr_t n = static_cast<uintptr_t>(t.nbytes());
      const uintptr_t begin = (p + kHuge - 1) / kHuge * kHuge, end = (p + n) / kHuge * kHuge;
      if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
    }
#else
    (void)large;
#endif
    return t;
  }

  std::mutex mutex_;
  std::array<c10::Storage, kSlots> slots_{};
  GradientBufferStats stats_{};
  std::atomic<bool> enabled_{true};
};

}  // namespace detail

// Turn reuse of large CPU gradient buffers on or off for this process (default on, unless the
// environment variable HAFRM_GRAD_BUFFER_REUSE=0); turning it off also releases what is held.
inline void set_gradient_buffer_reuse(bool on) {
  detail::GradBufferPool::instance().set_enabled(on);
}
inline bool gradient_buffer_reuse() { return detail::GradBufferPool::instance().enabled(); }
// Give back the buffers the pool holds (a buffer still in use stays with its user).
inline void release_gradient_buffers() { detail::GradBufferPool::instance().release(); }
inline GradientBufferStats gradient_buffer_stats() {
  return detail::GradBufferPool::instance().stats();
}

}  // namespace hafrm
