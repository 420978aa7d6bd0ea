#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything (library tests,
# examples, benchmarks, the CUDA kernels when nvcc is present) and runs every test with ctest;
# then the ASan + UBSan build of the tests and a bounded libFuzzer run (see the block at the end).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
VENV="${HAFRM_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:/usr/local/cuda/bin:$PATH"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
JOBS="${HAFRM_JOBS:-$(nproc)}"
cd "$ROOT"
echo "[test] configure (preset dev)"
cmake --preset dev -DHAFRM_PYTHON="$VENV/bin/python" "$@" > build-configure.log 2>&1 \
  || { cat build-configure.log; exit 1; }
grep -E "hafrm:" build-configure.log || true
rm -f build-configure.log
echo "[test] build (-j$JOBS)"
cmake --build --preset dev -j"$JOBS"
echo "[test] ctest"
ctest --preset dev

# ---- sanitizers and fuzzing --------------------------------------------------------------------
# 1. The test suite built with ASan + UBSan (preset asan, build/asan) and run by ctest (the
#    packaging test excepted: it builds an outside consumer, no code of ours runs under it).
#    LibTorch is not instrumented: detect_leaks=0 in the preset because its global allocations
#    and thread pools are never freed, which LeakSanitizer would report as leaks of every test.
# 2. Each libFuzzer target (preset fuzz, clang, build/fuzz) for HAFRM_FUZZ_SECONDS (default 60)
#    from its seed corpus in fuzz/corpus/; new inputs go to build/fuzz/work/, which is emptied first
#    so every run does the same bounded work. A crash, sanitizer report or unexpected exception
#    fails the command and leaves the input in build/fuzz/artifacts/.
# HAFRM_SANITIZERS=0 skips both (for a quick local run); CI keeps the default.
if [[ "${HAFRM_SANITIZERS:-1}" != 0 ]]; then
  t0=$SECONDS
  echo "[test] asan: configure + build (preset asan)"
  cmake --preset asan -DHAFRM_PYTHON="$VENV/bin/python" > build-asan-configure.log 2>&1 \
    || { cat build-asan-configure.log; exit 1; }
  rm -f build-asan-configure.log
  # The test executables only (the example programs are not run by ctest). A new test
  # executable must be added here, or ctest --preset asan reports it as not built.
  cmake --build --preset asan -j"$JOBS" \
    --target hafrm_tests hafrm_examples_data_tests hafrm_example_trainer_tests
  echo "[test] asan: ctest"
  ctest --preset asan
  echo "[test] asan: done in $((SECONDS - t0)) s"

  t0=$SECONDS
  FUZZ_SECONDS="${HAFRM_FUZZ_SECONDS:-60}"
  # Leak checks symbolize stacks (llvm-16's symbolizer, from setup.sh) so that fuzz/lsan.supp can
  # name the two LibTorch allocation sites it suppresses; anything else that leaks is a finding.
  export ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-/usr/lib/llvm-16/bin/llvm-symbolizer}"
  export LSAN_OPTIONS="suppressions=$ROOT/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
  echo "[test] fuzz: configure + build (preset fuzz)"
  cmake --preset fuzz -DHAFRM_PYTHON="$VENV/bin/python" > build-fuzz-configure.log 2>&1 \
    || { cat build-fuzz-configure.log; exit 1; }
  rm -f build-fuzz-configure.log
  cmake --build --preset fuzz -j"$JOBS" --target hafrm_fuzzers
  for target in jsonl_record loss_spec checkpoint; do
    work="build/fuzz/work/$target" log="build/fuzz/$target.log"
    rm -rf "$work" && mkdir -p "$work" build/fuzz/artifacts
    dict=(); [[ -f "fuzz/$target.dict" ]] && dict=(-dict="fuzz/$target.dict")
    if ! "build/fuzz/fuzz/hafrm_fuzz_$target" -max_total_time="$FUZZ_SECONDS" -max_len=1048576 \
        -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="build/fuzz/artifacts/$target-" "$work" "fuzz/corpus/$target" \
        > "$log" 2>&1; then
      tail -n 60 "$log"
      echo "[test] fuzz $target: FINDING (input saved under build/fuzz/artifacts/)"
      exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "[test] fuzz $target: ${runs:-?} inputs executed in ${FUZZ_SECONDS} s, no finding"
  done
  echo "[test] fuzz: done in $((SECONDS - t0)) s"
fi
