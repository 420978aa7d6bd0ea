#!/usr/bin/env bash
# The comparisons of examples/haf_rm/README.md: trains the plain reward model (bt), the HaF hybrid
# (haf, alpha 0.2) and its alpha sweep, and DPO's implicit reward (dpo) over several seeds on one
# shipped task (data/<TASK>/{train,eval,ood}.jsonl), then prints a table (mean and spread of eval
# and OOD preference accuracy against the labels and, where the data has one, against the hidden
# gold ordering; a paired comparison across seeds; time) and draws PNGs (scripts/plot_compare.py).
#
#   bash scripts/compare.sh                  # synthetic task: 5 seeds x {bt, haf, dpo}
#   bash scripts/compare.sh rules            # rules task: 5 seeds x {bt, dpo, haf alpha sweep}
#   bash scripts/compare.sh rules --seeds "0 1" --steps 200 --out runs/quick
#   bash scripts/compare.sh rules --pretrained          # from a pre-trained backbone, and from
#                                                       # scratch beside it (below)
#
# TASK (first argument, default synthetic): a folder of data/. Per-task defaults (the same for
# every objective; nothing is tuned on eval or OOD):
#   synthetic  objectives "bt haf dpo", trainer defaults (2000 steps x 32 pairs, d 64, 2 layers)
#   rules      objectives "bt haf-a0.05 haf-a0.1 haf haf-a0.5 haf-a1 dpo", --steps 600, other
#              trainer defaults
# Objectives: bt, haf, dpo (the trainer's --objective), or haf-aX = the hybrid with
# --weighting constant:reward=1,alpha=X (haf itself is alpha 0.2).
# Options: --seeds "LIST" (default "0 1 2 3 4"), --objectives "LIST", --steps N, --out DIR
# (default runs/compare-TASK; runs/compare for synthetic), --jobs N (runs at once, default: the
# number of cores), --threads N (LibTorch threads per run, default 1: fixed so a run's result does
# not depend on the machine), --reuse (keep runs that already have a summary.json).
#
# --pretrained (rules only): the same comparison from a pre-trained backbone. It generates the
# unlabelled corpus (hafrm_gen_rules_corpus, 60000 prompt/response rows, into OUT/corpus.jsonl),
# pre-trains the default model on it (--objective lm, --pretrain-steps, default 4000), fine-tunes it
# on the training split's chosen responses (--objective sft, --sft-steps, default 300), then trains
# every objective x seed twice: from that backbone (--init-from; the reference is the backbone)
# into OUT/pretrained/ and from random weights into OUT/scratch/. Objectives default to
# "bt haf-a0.05 haf haf-a1 dpo"; --steps 600 as for rules. With --large the same again for a
# larger model (d 128, 4 layers, MLP 512; objectives "bt haf dpo"; seeds --large-seeds "LIST",
# default those of --seeds) into OUT/*-large/. The
# backbone trains with --pretrain-threads LibTorch threads (default 1, so that it does not depend
# on the machine either), seed 0.
# Default OUT: runs/compare-rules-pretrained. Tables: OUT/table.md; charts: OUT/*/comparison.png,
# OUT/pretrained_vs_scratch.png (scripts/compare_init.py).
# Everything after "--" goes to every haf_rm run (do not repeat --steps or the data paths there).
# Each run gets a fresh output directory. To leave a shared machine's other work first, run it as
# `nice -n 19 bash scripts/compare.sh ...` (the runs inherit the niceness).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TASK=synthetic
if (($#)) && [[ "$1" != -* ]]; then
  TASK="$1"
  shift
fi
SEEDS="0 1 2 3 4"
OBJECTIVES=""
STEPS=""
OUT=""
JOBS="$(nproc)"
THREADS=1
REUSE=0
PRETRAINED=0
LARGE=0
PRETRAIN_STEPS=4000
SFT_STEPS=300
PRETRAIN_THREADS=1
LARGE_SEEDS=""
EXTRA=()
while (($#)); do
  case "$1" in
    --seeds) SEEDS="$2"; shift 2 ;;
    --objectives) OBJECTIVES="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --reuse) REUSE=1; shift ;;
    --pretrained) PRETRAINED=1; shift ;;
    --large) LARGE=1; shift ;;
    --pretrain-steps) PRETRAIN_STEPS="$2"; shift 2 ;;
    --sft-steps) SFT_STEPS="$2"; shift 2 ;;
    --pretrain-threads) PRETRAIN_THREADS="$2"; shift 2 ;;
    --large-seeds) LARGE_SEEDS="$2"; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,41p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

DATA="$ROOT/data/$TASK"
for split in train eval ood; do
  [[ -f "$DATA/$split.jsonl" ]] || {
    tasks=$(cd "$ROOT/data" && for d in */; do
      if [[ -f "$d/train.jsonl" ]]; then printf '%s ' "${d%/}"; fi
    done)
    echo "compare.sh: task '$TASK' has no $DATA/$split.jsonl (tasks: $tasks)" >&2
    exit 2
  }
done
if ((LARGE && !PRETRAINED)); then
  echo "compare.sh: --large belongs to --pretrained" >&2
  exit 2
fi
if ((PRETRAINED)) && [[ "$TASK" != rules ]]; then
  echo "compare.sh: --pretrained needs the rules task (its generator writes the corpus)" >&2
  exit 2
fi
case "$TASK" in
  synthetic) DEFAULT_OBJECTIVES="bt haf dpo"; DEFAULT_STEPS="" ;;
  rules) DEFAULT_OBJECTIVES="bt haf-a0.05 haf-a0.1 haf haf-a0.5 haf-a1 dpo"; DEFAULT_STEPS=600 ;;
  *) DEFAULT_OBJECTIVES="bt haf dpo"; DEFAULT_STEPS="" ;;
esac
((PRETRAINED)) && DEFAULT_OBJECTIVES="bt haf-a0.05 haf haf-a1 dpo"
OBJECTIVES="${OBJECTIVES:-$DEFAULT_OBJECTIVES}"
STEPS="${STEPS:-$DEFAULT_STEPS}"
if [[ -z "$OUT" ]]; then
  if [[ "$TASK" == synthetic ]]; then OUT="$ROOT/runs/compare"
  elif ((PRETRAINED)); then OUT="$ROOT/runs/compare-$TASK-pretrained"
  else OUT="$ROOT/runs/compare-$TASK"; fi
fi

# objective name -> trainer arguments
objective_args() {
  case "$1" in
    bt|haf|dpo) echo "--objective $1" ;;
    haf-a*)
      local alpha="${1#haf-a}"
      [[ "$alpha" =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "compare.sh: bad objective $1" >&2; return 2; }
      echo "--objective haf --weighting constant:reward=1,alpha=$alpha" ;;
    *) echo "compare.sh: unknown objective $1 (bt, haf, dpo or haf-aX)" >&2; return 2 ;;
  esac
}
for obj in $OBJECTIVES; do objective_args "$obj" > /dev/null; done

bash "$ROOT/scripts/setup.sh"
VENV="${HAFRM_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
cmake --preset release -DHAFRM_PYTHON="$VENV/bin/python" > /dev/null
cmake --build --preset release -j"$(nproc)" --target haf_rm hafrm_gen_rules_corpus
TRAINER="$ROOT/build/release/examples/haf_rm/haf_rm"

TASK_ARGS=(--train "$DATA/train.jsonl" --eval "$DATA/eval.jsonl" --ood "$DATA/ood.jsonl")
[[ -n "$STEPS" ]] && TASK_ARGS+=(--steps "$STEPS")
mkdir -p "$OUT"
echo "[compare] task $TASK; objectives: $OBJECTIVES; seeds: $SEEDS; $JOBS run(s) at once," \
  "$THREADS thread(s) each; per run: ${TASK_ARGS[*]} ${EXTRA[*]+${EXTRA[*]}}"
t0=$(date +%s)

# run_grid DIR "OBJECTIVES" "SEEDS" ARGS...: every objective x seed into DIR/<objective>-s<seed>,
# ARGS added to each run. Seed-major order: if the comparison is stopped early, every objective
# has the same seeds done, so the paired comparison over those seeds is still valid.
run_grid() {
  local grid="$1" objectives="$2" seeds="$3"
  shift 3
  local running=0 seed obj dir
  mkdir -p "$grid"
  for seed in $seeds; do
    for obj in $objectives; do
      read -r -a OBJ_ARGS <<< "$(objective_args "$obj")"
      dir="$grid/$obj-s$seed"
      if ((REUSE)) && [[ -f "$dir/summary.json" ]]; then
        echo "[compare] $obj seed $seed: reusing $dir"
        continue
      fi
      rm -rf "$dir"
      mkdir -p "$dir"
      echo "[compare] $obj seed $seed -> $dir"
      "$TRAINER" "${OBJ_ARGS[@]}" --seed "$seed" --threads "$THREADS" --out "$dir" \
        --progress plain "${TASK_ARGS[@]}" "$@" ${EXTRA[@]+"${EXTRA[@]}"} > "$dir/log.txt" 2>&1 &
      running=$((running + 1))
      if ((running >= JOBS)); then
        wait -n || { echo "[compare] a run failed; see $grid/*/log.txt" >&2; exit 1; }
        running=$((running - 1))
      fi
    done
  done
  while ((running > 0)); do
    wait -n || { echo "[compare] a run failed; see $grid/*/log.txt" >&2; exit 1; }
    running=$((running - 1))
  done
}

NOTE="$JOBS run(s) at once on $(nproc) cores, $THREADS LibTorch thread(s) each"
if ((!PRETRAINED)); then
  run_grid "$OUT" "$OBJECTIVES" "$SEEDS"
  echo "[compare] all runs done in $(( $(date +%s) - t0 )) s"
  "$VENV/bin/python" "$ROOT/scripts/plot_compare.py" "$OUT" --table "$OUT/table.md" \
    --task "$TASK" --note "$NOTE"
  exit 0
fi

# train_once DIR ARGS...: one haf_rm run into DIR (kept under --reuse once it has a summary).
train_once() {
  local dir="$1"
  shift
  if ((REUSE)) && [[ -f "$dir/summary.json" ]]; then
    echo "[compare] reusing $dir"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "[compare] $dir: $*"
  local t=$(date +%s)
  "$TRAINER" --out "$dir" --progress plain --seed 0 --threads "$PRETRAIN_THREADS" "$@" \
    > "$dir/log.txt" 2>&1 || { echo "[compare] failed; see $dir/log.txt" >&2; exit 1; }
  echo "[compare] $dir done in $(( $(date +%s) - t )) s: $(tail -n 1 "$dir/log.txt")"
}

CORPUS="$OUT/corpus.jsonl"
if ! ((REUSE)) || [[ ! -f "$CORPUS" ]]; then
  "$ROOT/build/release/examples/common/hafrm_gen_rules_corpus" --out "$CORPUS"
fi
SIZES=(small)
((LARGE)) && SIZES+=(large)
for size in "${SIZES[@]}"; do
  suffix="" MODEL=() objectives="$OBJECTIVES" seeds="$SEEDS"
  if [[ "$size" == large ]]; then
    suffix="-large" MODEL=(--d-model 128 --layers 4 --d-ff 512) objectives="bt haf dpo"
    seeds="${LARGE_SEEDS:-$SEEDS}"
  fi
  backbone="$OUT/backbone$suffix"
  # Pre-training reports the next-token NLL of the eval and OOD responses (never used to choose
  # anything); fine-tuning reads the training split's chosen responses.
  train_once "$backbone/lm" --objective lm --train "$CORPUS" --eval "$DATA/eval.jsonl" \
    --ood "$DATA/ood.jsonl" --steps "$PRETRAIN_STEPS" ${MODEL[@]+"${MODEL[@]}"}
  train_once "$backbone/sft" --objective sft --init-from "$backbone/lm/checkpoint.pt" \
    --train "$DATA/train.jsonl" --eval "$DATA/eval.jsonl" --ood "$DATA/ood.jsonl" \
    --steps "$SFT_STEPS" ${MODEL[@]+"${MODEL[@]}"}
  run_grid "$OUT/scratch$suffix" "$objectives" "$seeds" ${MODEL[@]+"${MODEL[@]}"}
  run_grid "$OUT/pretrained$suffix" "$objectives" "$seeds" ${MODEL[@]+"${MODEL[@]}"} \
    --init-from "$backbone/sft/checkpoint.pt"
done
echo "[compare] all runs done in $(( $(date +%s) - t0 )) s"
: > "$OUT/table.md"
for size in "${SIZES[@]}"; do
  suffix=""
  [[ "$size" == large ]] && suffix="-large"
  for init in scratch pretrained; do
    grid="$OUT/$init$suffix"
    { echo "### $init$suffix"; echo; } >> "$OUT/table.md"
    "$VENV/bin/python" "$ROOT/scripts/plot_compare.py" "$grid" --table "$grid/table.md" \
      --task "$TASK" --note "$NOTE" > /dev/null
    cat "$grid/table.md" >> "$OUT/table.md"
    echo >> "$OUT/table.md"
  done
done
"$VENV/bin/python" "$ROOT/scripts/compare_init.py" "$OUT" | tee -a "$OUT/table.md"
