#!/usr/bin/env bash
# The one GPU check: run ON the lent GPU machine from the repository root, with .deps/ carried
# (make it here with scripts/gpu_deps.sh). Builds the CUDA path against that machine's own
# PyTorch, runs the CUDA tests, runs the benchmarks on the GPU, and prints a short table.
#   run: carry [".deps"], command "bash scripts/gpu_check.sh", timeout ~540 s
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
TORCH_PREFIX="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
pip install -q "cmake>=3.28" 2>/dev/null || true
D="$ROOT/.deps"
BUILD="$ROOT/build/gpu"
# Minimal CMake package shims for the carried headers (the GPU machine has no Debian packages).
mkdir -p "$D/cmake"
cat > "$D/cmake/Eigen3Config.cmake" <<EOC
add_library(Eigen3::Eigen INTERFACE IMPORTED)
set_target_properties(Eigen3::Eigen PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "$D/include/eigen3")
set(Eigen3_FOUND TRUE)
EOC
cat > "$D/cmake/Catch2Config.cmake" <<EOC
add_library(Catch2::Catch2 INTERFACE IMPORTED)
set_target_properties(Catch2::Catch2 PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "$D/include")
set(Catch2_FOUND TRUE)
EOC
cat > "$D/cmake/benchmarkConfig.cmake" <<EOC
add_library(benchmark::benchmark SHARED IMPORTED)
set_target_properties(benchmark::benchmark PROPERTIES IMPORTED_LOCATION "$D/lib/libbenchmark.so"
  INTERFACE_INCLUDE_DIRECTORIES "$D/include" INTERFACE_LINK_LIBRARIES pthread)
set(benchmark_FOUND TRUE)
EOC
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$D/cmake" \
  -DEigen3_DIR="$D/cmake" -DCatch2_DIR="$D/cmake" -Dbenchmark_DIR="$D/cmake" \
  -DHAFRM_WITH_CUDA=ON -DTORCH_CUDA_ARCH_LIST=9.0 -DHAFRM_BUILD_EXAMPLES=OFF \
  -DHAFRM_NATIVE_ARCH=ON > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target hafrm_tests bench_token_logprobs bench_linear_logprobs \
  > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -40; exit 1; }
echo "== CUDA tests"
"$BUILD/tests/hafrm_tests" "[cuda]" | tee "$OUT/cuda_tests.txt" | tail -15
echo "== CPU tests (sanity)"
"$BUILD/tests/hafrm_tests" "[logprobs],[linear]" | tail -3
echo "== GPU benchmarks"
export HAFRM_BENCH_DEVICE=cuda LD_LIBRARY_PATH="$D/lib:${LD_LIBRARY_PATH:-}"
"$BUILD/bench/bench_token_logprobs" --benchmark_filter='DeviceCopy|Naive|Fused' \
  --benchmark_min_time=0.2 --benchmark_format=json --benchmark_out="$OUT/token_gpu.json" \
  --benchmark_out_format=json | grep -E "^BM_" || true
"$BUILD/bench/bench_linear_logprobs" --benchmark_filter='/chunk:0/' --benchmark_min_time=0.2 \
  --benchmark_out="$OUT/linear_gpu.json" --benchmark_out_format=json | grep -E "^BM_" || true
python3 bench/report.py "$OUT/token_gpu.json" "$OUT/linear_gpu.json" | tee "$OUT/gpu_bench.md"
