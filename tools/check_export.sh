#!/usr/bin/env bash
# Proves that a checkpoint written by `train` loads in Hugging Face transformers as it is (no
# conversion, no trust_remote_code) and computes what ours computes: trains a tiny model for a
# few steps on the CPU into a temporary run directory, then runs tools/check_export.py on its
# checkpoint/ (tokenizer ids, greedy generation ids, mean loss; see that file).
#
#   bash tools/check_export.sh            # train a tiny model, check its export
#   bash tools/check_export.sh DIR        # check an existing checkpoint directory instead
#   KEEP=1 bash tools/check_export.sh     # keep the temporary directory (printed)
#
# Uses the same ignored venv and pinned versions as tools/make_fixture.sh (tools/.venv-fixture;
# CPU is enough). Exit status 0 only if everything matches.
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

cargo build --release --bins --quiet

TMP=$(mktemp -d "${TMPDIR:-/tmp}/smelt-check-export.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
  echo "temporary directory kept: $TMP"
else
  trap 'rm -rf "$TMP"' EXIT
fi

if [ $# -ge 1 ]; then
  CKPT=$1
else
  cat >"$TMP/tiny.toml" <<EOF
[model]
n_layer = 2
n_head = 2
n_embd = 64
block_size = 64
vocab_size = 512

[data]
corpus = "data/shakespeare"
cache = "$TMP/cache"

[train]
device = "cpu"
batch_size = 4
seq_len = 64
eval_every = 30
eval_batches = 1
sample_tokens = 5
EOF
  echo "training a tiny model (300 steps, CPU, a few seconds) into $TMP/run ..."
  target/release/train --config "$TMP/tiny.toml" --max-steps 300 --out "$TMP/run" --no-progress \
    >"$TMP/train.log" 2>&1 || {
    cat "$TMP/train.log"
    echo "error: train failed" >&2
    exit 1
  }
  CKPT=$TMP/run/checkpoint
fi

"$VENV/bin/python" tools/check_export.py --checkpoint "$CKPT" --bin target/release --tmp "$TMP"
