#!/usr/bin/env bash
# The comparison of examples/haf_rm/README.md: trains the plain reward model (bt), the HaF hybrid
# (haf) and DPO's implicit reward (dpo) over several seeds on the shipped synthetic data, then
# prints a table (mean and spread of eval and OOD preference accuracy, and time) and draws the
# training curves and the comparison as PNG (scripts/plot_compare.py).
#
#   bash scripts/compare.sh                        # 5 seeds x {bt, haf, dpo}, runs/compare/
#   bash scripts/compare.sh --seeds "0 1 2" --out runs/quick -- --steps 1000
#
# Options: --seeds "LIST" (default "0 1 2 3 4"), --objectives "LIST" (default "bt haf dpo"),
# --out DIR (default runs/compare), --jobs N (runs at once, default: the number of cores, each
# with cores/jobs LibTorch threads), --reuse (keep runs that already have a summary.json).
# Everything after "--" goes to every haf_rm run. Each run gets a fresh output directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SEEDS="0 1 2 3 4"
OBJECTIVES="bt haf dpo"
OUT="$ROOT/runs/compare"
JOBS="$(nproc)"
REUSE=0
EXTRA=()
while (($#)); do
  case "$1" in
    --seeds) SEEDS="$2"; shift 2 ;;
    --objectives) OBJECTIVES="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --reuse) REUSE=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

bash "$ROOT/scripts/setup.sh"
VENV="${HAFRM_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
cmake --preset release -DHAFRM_PYTHON="$VENV/bin/python" > /dev/null
cmake --build --preset release -j"$(nproc)" --target haf_rm
TRAINER="$ROOT/build/release/examples/haf_rm/haf_rm"

THREADS=$(( $(nproc) / JOBS )); ((THREADS >= 1)) || THREADS=1
mkdir -p "$OUT"
echo "[compare] objectives: $OBJECTIVES; seeds: $SEEDS; $JOBS run(s) at once, $THREADS thread(s) each"
t0=$(date +%s)
running=0
for obj in $OBJECTIVES; do
  for seed in $SEEDS; do
    dir="$OUT/$obj-s$seed"
    if ((REUSE)) && [[ -f "$dir/summary.json" ]]; then
      echo "[compare] $obj seed $seed: reusing $dir"
      continue
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "[compare] $obj seed $seed -> $dir"
    "$TRAINER" --objective "$obj" --seed "$seed" --threads "$THREADS" --out "$dir" \
      --progress plain ${EXTRA[@]+"${EXTRA[@]}"} > "$dir/log.txt" 2>&1 &
    running=$((running + 1))
    if ((running >= JOBS)); then
      wait -n || { echo "[compare] a run failed; see $OUT/*/log.txt" >&2; exit 1; }
      running=$((running - 1))
    fi
  done
done
while ((running > 0)); do
  wait -n || { echo "[compare] a run failed; see $OUT/*/log.txt" >&2; exit 1; }
  running=$((running - 1))
done
echo "[compare] all runs done in $(( $(date +%s) - t0 )) s"
"$VENV/bin/python" "$ROOT/scripts/plot_compare.py" "$OUT" --table "$OUT/table.md" \
  --note "$JOBS run(s) at once on $(nproc) cores, $THREADS LibTorch thread(s) each"
