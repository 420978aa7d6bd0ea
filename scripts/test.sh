#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything (library tests,
# examples, benchmarks, the CUDA kernels when nvcc is present) and runs every test with ctest.
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
