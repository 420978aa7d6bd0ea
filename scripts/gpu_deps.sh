#!/usr/bin/env bash
# Prepares .deps/ (git-ignored) with the dependencies the lent GPU machine lacks: Eigen and
# Catch2 (header-only) and Google Benchmark (headers + Debian's shared library), copied from
# this machine's Debian packages. scripts/gpu_check.sh uses them there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="$ROOT/.deps"
rm -rf "$D" && mkdir -p "$D/include" "$D/lib"
cp -r /usr/include/eigen3 "$D/include/"
cp -r /usr/include/catch2 "$D/include/"
cp -r /usr/include/benchmark "$D/include/"
cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so "$D/lib/libbenchmark.so"
cp /usr/lib/x86_64-linux-gnu/libbenchmark_main.a "$D/lib/" 2>/dev/null || true
du -sh "$D"
