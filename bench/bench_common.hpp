// Shared helpers of hafrm's benchmark binaries: peak-memory measurement and input makers.
#pragma once

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <c10/core/CPUAllocator.h>
#include <torch/cuda.h>
#if defined(HAFRM_WITH_CUDA) && HAFRM_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace hafrm_bench {

// Peak resident memory of this process in bytes (VmHWM). Writing "5" to clear_refs resets the
// high-water mark to the current RSS (Linux >= 4.0), so peak - rss_before is the extra memory a
// benchmark body needed at its worst moment. glibc serves large tensors with mmap and returns
// them on free, so RSS tracks live tensor memory closely.
inline long read_status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::char_traits<char>::length(key);
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0) return std::stol(line.substr(n + 1));
  return -1;
}
inline bool reset_peak() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  return static_cast<bool>(f);
}

struct PeakMemory {
  long before_kb = 0;
  bool ok = false;
  void start() {
    ok = reset_peak();
    before_kb = read_status_kb("VmRSS:");
  }
  double extra_bytes() const {
    return ok ? static_cast<double>(read_status_kb("VmHWM:") - before_kb) * 1024.0 : -1.0;
  }
};

// Exact tensor memory: a CPU allocator wrapper that counts live and peak bytes of every tensor
// LibTorch allocates (BLAS-internal scratch is not included; RSS covers that). Its DataPtrs keep
// the data pointer as their context, and it has a raw deleter, so LibTorch's raw_allocate (oneDNN
// scratch of bfloat16 matmuls) works through it; the sizes live in a side table.
class TrackingAllocator final : public c10::Allocator {
 public:
  static TrackingAllocator& install() {
    static TrackingAllocator* a = [] {
      auto* t = new TrackingAllocator(c10::GetCPUAllocator());
      instance() = t;
      c10::SetCPUAllocator(t, /*priority=*/100);
      return t;
    }();
    return *a;
  }
  c10::DataPtr allocate(size_t n) override {
    void* data = base_->raw_allocate(n);
    {
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[data] = n;
    }
    const int64_t now = live_ += static_cast<int64_t>(n);
    int64_t p = peak_.load();
    while (now > p && !peak_.compare_exchange_weak(p, now)) {
    }
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dst, const void* src, size_t n) const override {
    default_copy_data(dst, src, n);
  }
  void reset_peak() { peak_ = live_.load(); }
  int64_t live() const { return live_; }
  int64_t peak() const { return peak_; }

 private:
  static TrackingAllocator*& instance() {
    static TrackingAllocator* a = nullptr;
    return a;
  }
  static void release(void* p) {
    if (!p) return;
    TrackingAllocator* a = instance();
    size_t n = 0;
    {
      std::lock_guard<std::mutex> lock(a->mu_);
      auto it = a->sizes_.find(p);
      if (it != a->sizes_.end()) n = it->second, a->sizes_.erase(it);
    }
    a->live_ -= static_cast<int64_t>(n);
    a->base_->raw_deallocate(p);
  }
  explicit TrackingAllocator(c10::Allocator* base) : base_(base) {}
  c10::Allocator* base_;
  std::mutex mu_;
  std::unordered_map<void*, size_t> sizes_;
  std::atomic<int64_t> live_{0}, peak_{0};
};

// Peak tensor bytes allocated above the live bytes at start().
struct PeakTensorMemory {
  int64_t before = 0;
  void start() {
    auto& a = TrackingAllocator::install();
    a.reset_peak();
    before = a.live();
  }
  double extra_bytes() const {
    return static_cast<double>(TrackingAllocator::install().peak() - before);
  }
};

// HAFRM_BENCH_DEVICE=cuda runs the same benchmarks on the GPU (scripts/gpu_check.sh).
inline torch::Device bench_device() {
  const char* d = std::getenv("HAFRM_BENCH_DEVICE");
  return d && std::string(d) == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}
inline void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// Peak extra memory on either device: the tracking allocator on the CPU, the caching
// allocator's peak statistics on a GPU.
struct PeakDeviceMemory {
  torch::Device device;
  PeakTensorMemory cpu;
  int64_t before = 0;
  explicit PeakDeviceMemory(torch::Device d) : device(d) {}
  void start() {
#if defined(HAFRM_WITH_CUDA) && HAFRM_WITH_CUDA
    if (device.is_cuda()) {
      c10::cuda::CUDACachingAllocator::resetPeakStats(0);
      before = c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].current;
      return;
    }
#endif
    cpu.start();
  }
  double extra_bytes() const {
#if defined(HAFRM_WITH_CUDA) && HAFRM_WITH_CUDA
    if (device.is_cuda())
      return static_cast<double>(
          c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak - before);
#endif
    return cpu.extra_bytes();
  }
};

// Noise on a shared VM is one-sided (other processes, first-touch page faults of fresh memory
// returned to the host): the fastest repetition estimates what the code can do; the median is
// reported beside it.
inline void add_min_statistic(benchmark::internal::Benchmark* b) {
  b->ComputeStatistics(
      "min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
}

// Logits that look like a trained LM's: a few large entries over a spread of small ones.
inline torch::Tensor make_logits(int64_t N, int64_t V, torch::Dtype dt) {
  return (torch::randn({N, V}) * 3.0).to(dt);
}
inline torch::Tensor make_labels(int64_t N, int64_t V) {
  return torch::randint(0, V, {N}, torch::kLong);
}

}  // namespace hafrm_bench
