#!/usr/bin/env bash
# Regenerate tests/fixtures/gpt2_tiny.safetensors (PyTorch/transformers reference).
# Creates an ignored venv at tools/.venv-fixture with pinned versions (CPU is enough;
# PyPI's torch wheel pulls its nvidia-* deps, ~5.6 GB installed, ~1.5 min here).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=tools/.venv-fixture
PINS=(
  torch==2.15.0
  transformers==5.24.0
  safetensors==0.8.0
  numpy==2.4.6
)

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"

"$VENV/bin/python" tools/make_fixture.py --out tests/fixtures/gpt2_tiny.safetensors "$@"
