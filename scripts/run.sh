#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds the example trainer in release
# mode (CPU) and runs it on the shipped default data. Extra arguments go to the trainer.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
VENV="${HAFRM_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
JOBS="${HAFRM_JOBS:-$(nproc)}"
cd "$ROOT"
cmake --preset release -DHAFRM_PYTHON="$VENV/bin/python" > /dev/null
cmake --build --preset release -j"$JOBS" --target haf_tiny
exec ./build/release/examples/haf_tiny/haf_tiny "$@"
