#!/usr/bin/env bash
# One idempotent set-up step shared by the README's two commands: Debian packages, then a
# project-local virtual environment holding the pinned torch wheel (LibTorch) and a CMake new
# enough to build CUDA as C++20 with nvcc 13 (Debian's 3.25 cannot; see docs/building.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HAFRM_VENV:-$ROOT/.venv}"
TORCH_VERSION="${HAFRM_TORCH_VERSION:-2.15.0}"
CMAKE_VERSION_SPEC="${HAFRM_CMAKE_SPEC:-cmake>=4.0,<5}"

APT_PKGS=(build-essential libeigen3-dev catch2 libbenchmark-dev nlohmann-json3-dev
          libsentencepiece-dev sentencepiece ccache python3-venv
          libcli11-dev clang-16 libclang-rt-16-dev llvm-16 libgloo-dev)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] apt-get install ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY="${HAFRM_PYTHON:-python3}"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
# The stamp names the pip line's contents, so adding a package re-runs pip once (quick when the
# rest is installed). matplotlib draws the example trainers' curves (scripts/plot_compare.py);
# safetensors and sentencepiece let Python score an exported reward model
# (examples/haf_rm/python/hafrm_rm.py, checked against haf_rm score by a ctest). SentencePiece is
# pinned: 0.2.1 changed how the encoder breaks ties between equal-score segmentations, and 0.2.0
# encodes as Debian 12's libsentencepiece (0.1.97) that haf_rm links, id for id.
stamp="$VENV/.hafrm-stamp-torch-$TORCH_VERSION-cmake-numpy-matplotlib-safetensors-sentencepiece020"
if [[ ! -f "$stamp" ]]; then
  echo "[setup] pip install torch==$TORCH_VERSION cmake numpy matplotlib safetensors sentencepiece==0.2.0 (first time: ~2 min, ~4 GB)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION" "$CMAKE_VERSION_SPEC" \
    numpy matplotlib safetensors "sentencepiece==0.2.0"
  touch "$stamp"
fi
