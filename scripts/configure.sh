#!/usr/bin/env bash
# Configures a build directory with the project's virtual environment (setup.sh makes it).
# Usage: scripts/configure.sh <preset> [extra cmake args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HAFRM_VENV:-$ROOT/.venv}"
PRESET="${1:-dev}"; shift || true
export PATH="$VENV/bin:/usr/local/cuda/bin:$PATH"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
cd "$ROOT"
cmake --preset "$PRESET" -DHAFRM_PYTHON="$VENV/bin/python" "$@" >/dev/null
