// What the CUDA kernel header's examples (// example-begin <name> <Fixture> in
// include/hafrm/kernels/cuda/*.cuh) take as given, run on the emulator: "device" pointers are host
// memory here. The generated TU (tests/header_examples/extract.py) makes every example a
// TEST_CASE_METHOD over its fixture; the fixture checks afterwards that the launch succeeded.
#pragma once

#include <cuda_runtime.h>  // the emulator's stand-in (tests/cuda_emu/include), not the toolkit's

#include "hafrm/kernels/cuda/token_logprobs.cuh"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace hafrm_examples {

// n rows of v float logits in "device" memory, their labels, and room for two outputs.
struct DeviceRows {
  int64_t n = 6, v = 37;
  std::vector<float> logits_storage = make_logits();
  std::vector<int64_t> labels_storage{0, 36, -100, 5, 17, 2};
  std::vector<float> lp_storage = std::vector<float>(n, NAN), lse_storage = lp_storage;
  const float* d_logits = logits_storage.data();
  const int64_t* d_labels = labels_storage.data();
  float* d_lp = lp_storage.data();
  float* d_lse = lse_storage.data();
  cudaStream_t stream = nullptr;
  std::vector<float> make_logits() const {
    std::vector<float> x(static_cast<size_t>(n * v));
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 4.f;
    return x;
  }
  // Every row was written: finite values, 0 on the ignored row.
  ~DeviceRows() {
    for (int64_t r = 0; r < n; ++r) {
      CHECK(std::isfinite(lp_storage[r]));
      if (labels_storage[r] == -100) CHECK(lp_storage[r] == 0.f);
    }
  }
};

}  // namespace hafrm_examples
