#!/usr/bin/env bash
# Installs the CUDA compiler from PyPI wheels into tools/.venv-cuda (ignored by git), all pinned
# to one release that matches the GPU machines' driver (CUDA 13.0). Unpinned installs mix in
# 13.x parts whose PTX a 13.0 driver cannot load. build.rs finds nvcc there by itself.
#
#   bash tools/setup_cuda.sh          # compiler only (what CI needs)
#   bash tools/setup_cuda.sh --tools  # also cuobjdump/nvdisasm (13.2: they read 13.0 code)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=tools/.venv-cuda
PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)
if [ "${1:-}" = "--tools" ]; then
  PINS+=(nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.78)
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
nvcc=$(find "$VENV" -path '*/bin/nvcc' -type f | head -n 1)
if [ -z "$nvcc" ]; then
  echo "error: nvcc not found in $VENV after install" >&2
  exit 1
fi
echo "nvcc: $nvcc"
"$nvcc" --version | tail -n 2
