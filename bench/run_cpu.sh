#!/usr/bin/env bash
# Runs the CPU benchmark suites and writes JSON, a markdown table and a chart to bench/results/.
# Usage: bench/run_cpu.sh [build-dir] [extra benchmark args...]
#   THP_MEM_ALLOC_ENABLE=1 bench/run_cpu.sh   # LibTorch's huge-page allocations, see README
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build/dev}"; shift || true
OUT="$ROOT/bench/results"
mkdir -p "$OUT"
REPS="${HAFRM_BENCH_REPS:-5}"
"$BUILD/bench/bench_token_logprobs" --benchmark_min_time=0.3 --benchmark_repetitions="$REPS" \
  --benchmark_format=json \
  --benchmark_out="$OUT/token.json" --benchmark_out_format=json "$@" >/dev/null
"$BUILD/bench/bench_linear_logprobs" --benchmark_min_time=0.3 --benchmark_repetitions="$REPS" \
  --benchmark_format=json \
  --benchmark_out="$OUT/linear.json" --benchmark_out_format=json "$@" >/dev/null
PY="$ROOT/.venv/bin/python"; [[ -x "$PY" ]] || PY=python3
"$PY" "$ROOT/bench/report.py" "$OUT/token.json" "$OUT/linear.json" --png "$OUT/bench.png" \
  | tee "$OUT/bench.md"
