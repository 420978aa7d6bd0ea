#!/usr/bin/env bash
# Training throughput of the example trainer (examples/haf_rm) padded vs --packing on the
# length-skewed rules task (hafrm_gen_rules_data --skewed: 3000 pairs, one in eight with a long
# side), where padding each batch to its longest sequence wastes about half the positions.
# Both runs train on the same pairs from the same seed; tokens/s = the tokens of the pairs trained
# on (metrics.jsonl's "tokens" per step x STEPS) / summary.json's train_seconds (training only: no
# evaluation, no checkpoint). The rows alternate inside each round, ROUNDS rounds, fastest and
# median reported, so padded and packed are compared within one run.
# Usage: bench/run_packing.sh [build-dir] [steps] [rounds] [extra haf_rm options...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build/dev}"
STEPS="${2:-60}"
ROUNDS="${3:-3}"
shift $(( $# < 3 ? $# : 3 ))
EXTRA=("$@")
BIN="$BUILD/examples/haf_rm/haf_rm"
GEN="$BUILD/examples/common/hafrm_gen_rules_data"
PY="$ROOT/.venv/bin/python"; [[ -x "$PY" ]] || PY=python3
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$GEN" --skewed --out "$WORK/data" > /dev/null
declare -A MODES=([padded]="" [packed]="--packing")
ORDER=(padded packed)
for r in $(seq "$ROUNDS"); do
  for m in "${ORDER[@]}"; do
    # shellcheck disable=SC2086
    "$BIN" --train "$WORK/data/train.jsonl" --eval= --ood= --steps "$STEPS" --checkpoint-every 0 \
      --log-every "$STEPS" --progress none --out "$WORK/$m" ${MODES[$m]} "${EXTRA[@]}" \
      > "$WORK/$m.log" 2>&1 || { cat "$WORK/$m.log"; exit 1; }
    "$PY" - "$WORK/$m" "$m" "$STEPS" >> "$WORK/rates.txt" <<'PYEOF'
import json, sys
run, mode, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
rec = [json.loads(l) for l in open(f"{run}/metrics.jsonl") if '"train"' in l][-1]
s = json.load(open(f"{run}/summary.json"))
print(mode, rec["tokens"] * steps / s["train_seconds"], rec["padding"])
PYEOF
  done
done
"$PY" - "$WORK/rates.txt" <<'PYEOF'
import sys, statistics, collections
t, pad = collections.defaultdict(list), {}
for line in open(sys.argv[1]):
    mode, rate, p = line.split(); t[mode].append(float(rate)); pad[mode] = float(p)
print("| batches | padding (share of positions) | tokens/s, fastest (median) | vs padded (fastest) |")
print("|---|---|---|---|")
for mode, v in t.items():
    print(f"| {mode} | {100 * pad[mode]:.1f}% | {max(v):.0f} ({statistics.median(v):.0f}) | "
          f"{max(v) / max(t['padded']):.2f}x |")
PYEOF
