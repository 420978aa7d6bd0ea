#!/usr/bin/env bash
# Grain-size sweep, quiet and under a fixed synthetic load (two busy-loop processes, one per core
# of the 2-core development machine). Usage: bench/run_grain.sh [build-dir] [repetitions]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build/dev}"
REPS="${2:-15}"
echo "## quiet"
"$BUILD/bench/bench_grain" "$REPS"
echo
echo "## under load: two busy loops"
pids=()
for _ in 1 2; do (while :; do :; done) & pids+=($!); done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$BUILD/bench/bench_grain" "$REPS"
