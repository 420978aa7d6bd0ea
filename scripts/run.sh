#!/usr/bin/env bash
# The README's main job: installs what is missing, builds the example trainer examples/haf_rm in
# release mode (CPU) and trains the default HaF hybrid reward model on the shipped synthetic data
# (data/synthetic), printing its eval and OOD preference accuracy. Extra arguments go to the
# trainer (see `build/release/examples/haf_rm/haf_rm --help`), e.g. `--objective bt --seed 1`.
# Idempotent: a rerun rebuilds nothing that is up to date and trains afresh into runs/haf_rm/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
VENV="${HAFRM_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
JOBS="${HAFRM_JOBS:-$(nproc)}"
cd "$ROOT"
cmake --preset release -DHAFRM_PYTHON="$VENV/bin/python" > /dev/null
cmake --build --preset release -j"$JOBS" --target haf_rm
exec ./build/release/examples/haf_rm/haf_rm --out "$ROOT/runs/haf_rm" "$@"
