#!/usr/bin/env bash
# Throughput and memory of `prepare` on this machine: the bundled corpus copied N times, with
# GPT-2's tokenizer (nothing to train) and with a BPE trained on the corpus (MB/s with and
# without the training). Every line of copy i ends in " i", so no piece of text repeats and
# de-duplication (by piece) keeps it all. Run at two sizes to show that peak memory does not
# grow with the corpus; with --single the copies are one document (one input.txt), to show
# that it does not grow with the size of a document either.
#
#   bash tools/bench_prepare.sh [--single] [COPIES...]   (default: 10 100, ~50 MB and ~500 MB)
#
# For the same text through Python `tokenizers` and `tiktoken`: tools/bench_tokenizers.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
single=false
if [[ "${1:-}" == "--single" ]]; then
  single=true
  shift
fi
cargo build --release --quiet --bin prepare
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-8s %-6s %9s %8s %10s %12s %10s\n' copies tok "text MB" seconds "MB/s" "MB/s w/o tok" "max RSS MB"
for copies in "${@:-10 100}"; do
  for n in $copies; do
    corpus="$work/corpus-$n"
    mkdir -p "$corpus"
    for i in $(seq 1 "$n"); do
      for f in data/shakespeare/*.txt; do
        if $single; then
          out="$corpus/input.txt"
        else
          out="$corpus/$(basename "$f" .txt)_$i.txt"
        fi
        awk -v copy="$i" 'NF { $0 = $0 " " copy } 1' "$f" >> "$out"
      done
    done
    for tok in gpt2 bpe; do
      json=$(/usr/bin/time -f '%M' -o "$work/rss" ./target/release/prepare "$corpus" --out "$work/out-$tok" \
        --tokenizer "$tok" --vocab-size 8192 --json 2>/dev/null)
      rss_kb=$(cat "$work/rss")
      python3 - "$json" "$n" "$tok" "$rss_kb" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
print(f"{sys.argv[2]:<8} {sys.argv[3]:<6} {s['text_mb']:9.1f} {s['seconds']:8.2f} {s['mb_per_second']:10.1f} "
      f"{s['mb_per_second_without_tokenizer']:12.1f} {int(sys.argv[4]) / 1024:10.0f}")
PY
      rm -rf "$work/out-$tok"
    done
    rm -rf "$corpus"
  done
done
