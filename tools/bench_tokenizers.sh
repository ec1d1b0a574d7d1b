#!/usr/bin/env bash
# Python `tokenizers` and `tiktoken` throughput on data/shakespeare, beside ours
# (`cargo bench --bench tokenize` prints the Rust side on the same text).
# Creates an ignored venv at tools/.venv-bench with pinned versions (PyPI only), writes our
# GPT-2 tokenizer.json and a 2048-token BPE trained on the corpus to target/ (ignored tests
# in tests/tokenizer.rs), and loads tiktoken's r50k_base from the copy tiktoken-rs ships in
# the cargo registry (nothing else is downloaded). Extra arguments go to the .py script,
# e.g. --repeat 4 (~20 MB) or --runs 3.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=tools/.venv-bench
PINS=(
  tokenizers==0.23.3
  tiktoken==0.14.0
)

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"

GPT2_JSON=target/gpt2-tokenizer.json
BPE_JSON=target/bpe2048-tokenizer.json
SMELT_GPT2_JSON="$PWD/$GPT2_JSON" SMELT_BPE_JSON="$PWD/$BPE_JSON" \
  cargo test --release --quiet --test tokenizer write_ -- --ignored --nocapture

# The r50k_base.tiktoken that the tiktoken-rs crate (a dependency) ships.
R50K=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tiktoken-rs-0.12*/assets/r50k_base.tiktoken 2>/dev/null | head -n 1 || true)
if [ -z "$R50K" ]; then
  echo "error: r50k_base.tiktoken not found under the cargo registry (tiktoken-rs 0.12)" >&2
  exit 1
fi

"$VENV/bin/python" tools/bench_tokenizers.py \
  --gpt2-json "$GPT2_JSON" --bpe-json "$BPE_JSON" --tiktoken-file "$R50K" "$@"
