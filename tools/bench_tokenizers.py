"""Python `tokenizers` and `tiktoken` encoding throughput on data/shakespeare, the text
benches/tokenize.rs encodes, for a side-by-side with smelt's own numbers.

Run through tools/bench_tokenizers.sh, which makes the venv, writes our tokenizer.json files
from the Rust side and finds the r50k_base.tiktoken that tiktoken-rs ships (nothing is
downloaded). Measures, with each library's default threading:

- `tokenizers.Tokenizer.from_file(<our gpt2 tokenizer.json>).encode_batch(docs)` (and
  `encode_batch_fast`, no offsets), likewise for our 2048-token BPE when given;
- `tiktoken.Encoding(r50k_base from the local file).encode_ordinary_batch(docs)`;

and checks that `tokenizers` on our GPT-2 json gives tiktoken's ids on every document.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import tiktoken
import tokenizers
from tiktoken.load import load_tiktoken_bpe

ROOT = Path(__file__).resolve().parent.parent

# tiktoken's own r50k_base pattern (tiktoken_ext/openai_public.py), equivalent to GPT-2's.
R50K_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
TIKTOKEN_THREADS = 8  # encode_ordinary_batch's default num_threads


def plays() -> list[str]:
    paths = sorted((ROOT / "data" / "shakespeare").glob("*.txt"))
    if not paths:
        sys.exit("error: no data/shakespeare/*.txt")
    return [p.read_text(encoding="utf-8") for p in paths]


def median_seconds(fn, runs: int) -> float:
    fn()  # warm-up (caches, thread pools)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpt2-json", required=True, help="our GPT-2 tokenizer.json")
    ap.add_argument("--bpe-json", help="our 2048-token BPE tokenizer.json (optional)")
    ap.add_argument("--tiktoken-file", required=True, help="a local r50k_base.tiktoken")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the corpus (4: ~20 MB)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per encoder (median)")
    args = ap.parse_args()

    docs = plays() * args.repeat
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    cpus = os.cpu_count()
    rayon = os.environ.get("RAYON_NUM_THREADS", f"unset -> {cpus}")
    par = os.environ.get("TOKENIZERS_PARALLELISM", "unset -> on")
    print(
        f"corpus: {len(docs)} documents, {mb:.2f} MB (data/shakespeare x{args.repeat}); "
        f"{cpus} CPUs"
    )
    print(
        f"tokenizers {tokenizers.__version__}: rayon pool, RAYON_NUM_THREADS={rayon}, "
        f"TOKENIZERS_PARALLELISM={par}"
    )
    print(
        f"tiktoken {tiktoken.__version__}: encode_ordinary_batch, "
        f"ThreadPoolExecutor({TIKTOKEN_THREADS}) threads (its default)"
    )

    gpt2 = tokenizers.Tokenizer.from_file(args.gpt2_json)
    enc = tiktoken.Encoding(
        name="r50k_base",
        pat_str=R50K_PAT,
        mergeable_ranks=load_tiktoken_bpe(args.tiktoken_file, expected_hash=R50K_SHA256),
        special_tokens={"<|endoftext|>": 50256},
        explicit_n_vocab=50257,
    )

    # Same ids: tokenizers on our json vs tiktoken, every document.
    ours = [e.ids for e in gpt2.encode_batch(docs, add_special_tokens=False)]
    theirs = enc.encode_ordinary_batch(docs)
    bad = sum(a != b for a, b in zip(ours, theirs))
    if bad:
        sys.exit(f"error: {bad} documents differ between tokenizers (our json) and tiktoken")
    n_gpt2 = sum(len(x) for x in ours)
    print(f"ids: tokenizers on our gpt2 json == tiktoken r50k_base on all documents ({n_gpt2} tokens)")
    for text, ids in [("Hello world", [15496, 995]), (" Hello world", [18435, 995])]:
        got = gpt2.encode(text, add_special_tokens=False).ids
        if got != ids:
            sys.exit(f"error: {text!r} -> {got}, expected {ids}")

    rows = [
        (
            "python tokenizers encode_batch (gpt2)",
            lambda: gpt2.encode_batch(docs, add_special_tokens=False),
            n_gpt2,
        ),
        (
            "python tokenizers encode_batch_fast (gpt2)",
            lambda: gpt2.encode_batch_fast(docs, add_special_tokens=False),
            n_gpt2,
        ),
        (
            "python tiktoken encode_ordinary_batch",
            lambda: enc.encode_ordinary_batch(docs),
            n_gpt2,
        ),
    ]
    if args.bpe_json:
        bpe = tokenizers.Tokenizer.from_file(args.bpe_json)
        n_bpe = sum(len(e.ids) for e in bpe.encode_batch(docs, add_special_tokens=False))
        rows += [
            (
                "python tokenizers encode_batch (bpe2048)",
                lambda: bpe.encode_batch(docs, add_special_tokens=False),
                n_bpe,
            ),
            (
                "python tokenizers encode_batch_fast (bpe2048)",
                lambda: bpe.encode_batch_fast(docs, add_special_tokens=False),
                n_bpe,
            ),
        ]

    print(f"\n{'encoder':<46} {'MB/s':>8} {'Mtok/s':>8}   (median of {args.runs})")
    for name, fn, n in rows:
        s = median_seconds(fn, args.runs)
        print(f"{name:<46} {mb / s:>8.1f} {n / s / 1e6:>8.2f}")


if __name__ == "__main__":
    main()
