#!/usr/bin/env bash
# Per-step time of the example trainer (examples/haf_rm, byte tokenizer: a small-vocabulary model,
# V = 259), fused vs unfused log-probs, quiet and under a fixed synthetic load (two busy-loop
# processes, one per core of the 2-core development machine). Each configuration trains STEPS
# steps from the same seed; the per-step time is summary.json's train_seconds / STEPS (training
# only: no evaluation, no checkpoint). The four rows alternate inside each round, ROUNDS rounds,
# fastest and median reported, so rows are compared within one run.
# Usage: bench/run_train_step.sh [build-dir] [steps] [rounds]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build/dev}"
STEPS="${2:-100}"
ROUNDS="${3:-3}"
BIN="$BUILD/examples/haf_rm/haf_rm"
PY="$ROOT/.venv/bin/python"; [[ -x "$PY" ]] || PY=python3
WORK="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
declare -A MODES=(
  [fused_linear]=""
  [linear_reference]="--logprob-backend reference"
  [logits_fused]="--logits"
  [logits_reference]="--logits --logprob-backend reference"
)
ORDER=(fused_linear linear_reference logits_fused logits_reference)
run_all() {  # $1 = label
  for r in $(seq "$ROUNDS"); do
    for m in "${ORDER[@]}"; do
      # shellcheck disable=SC2086
      "$BIN" --steps "$STEPS" --eval= --ood= --checkpoint-every 0 --log-every 1000000 \
        --progress none --out "$WORK/$m" ${MODES[$m]} > "$WORK/$m.log" 2>&1 \
        || { cat "$WORK/$m.log"; exit 1; }
      "$PY" -c "import json,sys; s=json.load(open('$WORK/$m/summary.json')); \
print('$1', '$m', 1000 * s['train_seconds'] / $STEPS)" >> "$WORK/times.txt"
    done
  done
}
run_all quiet
for _ in 1 2; do (while :; do :; done) & pids+=($!); done
run_all busy2
kill "${pids[@]}" 2>/dev/null || true
"$PY" - "$WORK/times.txt" <<'PYEOF'
import sys, statistics, collections
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    load, mode, ms = line.split(); t[(load, mode)].append(float(ms))
print("| load | log-probs | ms per step, fastest (median) |")
print("|---|---|---|")
for (load, mode), v in t.items():
    print(f"| {load} | {mode} | {min(v):.1f} ({statistics.median(v):.1f}) |")
PYEOF
