#!/usr/bin/env bash
# Regenerate tests/fixtures/metrics.json: reference text-generation metric values from the
# Python packages that src/metrics mirrors (sacreBLEU corpus/sentence BLEU, Google's
# rouge-score with use_stemmer=True, the official SQuAD v1.1 F1/EM functions, nltk's
# PorterStemmer). Creates an ignored venv at tools/.venv-metrics with pinned versions.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=tools/.venv-metrics
PINS=(
  sacrebleu==2.6.0
  rouge-score==0.1.2
  nltk==3.10.4
)

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"

"$VENV/bin/python" tools/make_metrics_fixture.py --out tests/fixtures/metrics.json "$@"
