#!/usr/bin/env bash
# Regenerate tests/fixtures/hf_tiny/ (a tiny GPT2LMHeadModel saved with save_pretrained, its
# byte-level BPE tokenizer, and transformers' greedy generate output in greedy.json).
# Uses the same ignored venv and pinned versions as tools/make_fixture.sh (tools/.venv-fixture;
# CPU is enough).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=tools/.venv-fixture
PINS=(
  torch==2.15.0
  transformers==5.24.0
  safetensors==0.8.0
  numpy==2.4.6
  tokenizers==0.23.3
)

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"

"$VENV/bin/python" tools/make_generate_fixture.py --out tests/fixtures/hf_tiny "$@"
