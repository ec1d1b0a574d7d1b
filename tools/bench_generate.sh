#!/usr/bin/env bash
# Greedy generation speed on the CPU: smelt's `generate` (KV cache) against transformers'
# greedy `generate` on the same random 124M-shaped GPT-2 (12 layers, 768 wide, 12 heads,
# vocab 50257), prompt 16 tokens, 200 new tokens. The Python side saves the model with
# save_pretrained (into --dir, default a temp folder) and runs both; prints both tokens/s.
# Uses the venv of tools/make_fixture.sh (tools/.venv-fixture, same pinned versions).
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
cargo build --release --quiet --bin generate

"$VENV/bin/python" tools/bench_generate.py --bin target/release/generate "$@"
