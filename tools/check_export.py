"""Checks that a smelt checkpoint directory is a Hugging Face GPT-2 model as it is.

Run by tools/check_export.sh (which makes the venv, builds the binaries and trains a tiny
model). Given a checkpoint directory (model.safetensors, config.json, generation_config.json,
tokenizer.json written by `train`), it

1. loads it with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`
   exactly as they are (no conversion, no trust_remote_code), and checks that loading reported
   no missing, unexpected or mismatched weights, that lm_head is tied to wte, and that every
   weight transformers holds equals the file's;
2. tokenizer: encodes a set of texts (hand-picked edge cases and a few Shakespeare plays)
   with the transformers tokenizer and with ours (`prepare --tokenizer DIR/tokenizer.json`,
   reading the shard back: every document is <|endoftext|> + its ids), and requires the same
   ids;
3. greedy generation: `model.generate(do_sample=False, max_new_tokens=N)` against our
   `generate --temperature 0 --max-new-tokens N --json`, token ids identical;
4. loss: our `evaluate --task loss --device cpu` on that prepared data set against the same
   windows (consecutive seq_len + 1 token windows from the start of each shard, whole batches
   only, as src/data/loader.rs sequential_batches) through transformers in float32; the mean
   losses must agree to 1e-4 relative.

Prints a short report; exits 1 on any mismatch.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import unicodedata

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

SHARD_MAGIC = 20240520

# Edge cases for the byte-level BPE: contractions, whitespace runs, digits, punctuation,
# accents (already NFC, as `prepare` would make them), non-Latin scripts, emoji, tabs, and the
# special token written out.
TEXTS = [
    "Hello world",
    "ROMEO:\nBut, soft! what light through yonder window breaks?\n",
    "I'm sure you've seen it; they'll say we'd done it, isn't it?",
    "   leading spaces, trailing spaces   ",
    "tabs\tand\t\ttabs, and\n\n\nblank lines\n",
    "Numbers: 0 1 12 123 1234 12345 3.14159 -42 1e-9 2024-05-20",
    "Punctuation!!! ??? ... --- ;;; ((())) [x] {y} <z> @#$%^&*_+=|\\/~`",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe \u0141\u00f3d\u017a",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u4f60\u597d\uff0c\u4e16\u754c\u3002 \u3053\u3093\u306b\u3061\u306f",
    "Emoji \U0001f600\U0001f680 and \u2764\ufe0f and \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "x",
    "before <|endoftext|> after",  # both map the literal special token to its id
    "a" * 300,
    "The quick brown fox jumps over the lazy dog. " * 5,
]

PROMPTS = [
    "ROMEO:",
    "First Citizen:\nBefore we proceed any further,",
    "To be, or not to be",
    "KING HENRY V:\nOnce more unto the breach,",
    "Caf\u00e9 \U0001f600 123",
]

PLAYS = ["hamlet.txt", "macbeth.txt", "tempest.txt"]


def clean(text):
    """What `prepare` does to a document (src/data/clean.rs normalize): \\r\\n and lone \\r to
    \\n, control characters (category Cc) other than \\n and \\t and U+FEFF removed, NFC."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(
        c
        for c in text
        if not ((unicodedata.category(c) == "Cc" and c not in "\n\t") or c == "\ufeff")
    )
    return unicodedata.normalize("NFC", text)


def read_shard(path):
    """Token ids of one shard (llm.c layout: 256 int32 header, then uint16 or uint32 ids)."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1024), dtype="<i4")
        data = f.read()
    if header[0] != SHARD_MAGIC:
        raise SystemExit(f"{path}: bad magic {header[0]}")
    if header[1] == 1:
        ids = np.frombuffer(data, dtype="<u2")
        count = int(header[2])
    elif header[1] == 2:
        ids = np.frombuffer(data, dtype="<u4")
        count = int(header[2] & 0xFFFFFFFF) | (int(header[3]) << 32)
    else:
        raise SystemExit(f"{path}: unknown shard version {header[1]}")
    if len(ids) != count:
        raise SystemExit(f"{path}: header says {count} tokens, file holds {len(ids)}")
    return ids.astype(np.int64)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def check_load(ckpt):
    """Loads the model as it is; returns (model, problems)."""
    problems = []
    model, info = AutoModelForCausalLM.from_pretrained(ckpt, output_loading_info=True)
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(k):
            problems.append(f"from_pretrained reported {k}: {sorted(info[k])}")
    model.eval()
    if model.dtype != torch.float32:
        problems.append(f"model dtype is {model.dtype}, expected float32")
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        problems.append("lm_head.weight is not tied to transformer.wte.weight")
    file = load_file(os.path.join(ckpt, "model.safetensors"))
    state = model.state_dict()
    for name, value in file.items():
        if name not in state:
            problems.append(f"file tensor {name} is not a model parameter")
        elif tuple(state[name].shape) != value.shape or not np.array_equal(
            state[name].numpy(), value
        ):
            problems.append(f"{name}: transformers holds different values or shape")
    persistent = {
        n for n in state if not n.startswith("lm_head.")
    }  # lm_head is tied, not stored
    missing = sorted(persistent - set(file))
    if missing:
        problems.append(f"parameters transformers has that the file lacks: {missing}")
    return model, problems


def check_tokenizer(tok, docs, shard_ids, eot):
    """Our ids (the shard: <eot> doc <eot> doc ...) against transformers' per document."""
    pos = 0
    mismatches = []
    total = 0
    for i, text in enumerate(docs):
        theirs = tok(text, add_special_tokens=True)["input_ids"]
        total += len(theirs)
        expected = [eot] + list(theirs)
        ours = shard_ids[pos : pos + len(expected)].tolist()
        if ours != expected:
            # Our document i ends at the next <eot> (documents without one inside).
            end = pos + 1
            while end < len(shard_ids) and shard_ids[end] != eot:
                end += 1
            ours_doc = shard_ids[pos + 1 : end].tolist()
            k = next(
                (j for j, (a, b) in enumerate(zip(ours_doc, theirs)) if a != b),
                min(len(ours_doc), len(theirs)),
            )
            mismatches.append(
                f"document {i} ({text[:40]!r}...): first difference at token {k}: "
                f"ours {ours_doc[max(0, k - 3) : k + 5]} vs transformers "
                f"{theirs[max(0, k - 3) : k + 5]} "
                f"(lengths {len(ours_doc)} vs {len(theirs)})"
            )
            return mismatches, total
        pos += len(expected)
    if pos != len(shard_ids):
        mismatches.append(f"our shard has {len(shard_ids) - pos} tokens after the last document")
    return mismatches, total


def corpus_prompts(tok, shard_ids, eot, count, length, limit):
    """`count` prompts of `length` tokens cut from the prepared corpus at evenly spaced places
    (decoded to text; kept when they re-encode to at most `limit` tokens), so that greedy
    generation starts from varied, in-distribution contexts."""
    prompts = []
    for start in np.linspace(0, len(shard_ids) - length - 1, count * 2).astype(int):
        ids = shard_ids[start : start + length].tolist()
        if eot in ids:
            continue
        text = tok.decode(ids)
        if "\ufffd" in text or not text.strip() or len(tok(text)["input_ids"]) > limit:
            continue
        prompts.append(text)
        if len(prompts) == count:
            break
    return prompts


def check_greedy(model, tok, ckpt, bin_dir, prompts, new_tokens, eot):
    """Our greedy continuation ids against transformers' for each prompt; for a difference,
    also the gap between transformers' two best logits where the two diverge (a near tie
    would point at rounding, a wide gap at a real difference)."""
    results = []
    for prompt in prompts:
        ours = json.loads(
            run(
                [
                    os.path.join(bin_dir, "generate"),
                    "--model",
                    ckpt,
                    "--prompt",
                    prompt,
                    "--temperature",
                    "0",
                    "--max-new-tokens",
                    str(new_tokens),
                    "--json",
                ]
            )
        )["tokens"]
        ids = torch.tensor([tok(prompt)["input_ids"]])
        # (generation_config.json's max_length is the context; max_new_tokens takes
        # precedence, which transformers warns about on every call.)
        transformers.logging.set_verbosity_error()
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=new_tokens,
                pad_token_id=eot,
            )
        theirs = out[0, ids.shape[1] :].tolist()
        if eot in theirs:  # ours stops at <|endoftext|> and leaves it out
            theirs = theirs[: theirs.index(eot)]
        gap = None
        if ours != theirs:
            k = next((j for j, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
            if k is not None:
                with torch.no_grad():
                    ctx = torch.cat([ids[0], torch.tensor(theirs[:k], dtype=ids.dtype)])
                    last = model(input_ids=ctx[None]).logits[0, -1]
                top = torch.topk(last, 2).values
                gap = (k, float(top[0] - top[1]), float(last[ours[k]] - top[0]))
        results.append((prompt, ours, theirs, gap))
    return results


def hf_loss(model, data_dir, split, batch, seq_len):
    """Mean loss over whole batches of consecutive (seq_len + 1)-token windows, as ours
    (src/data/loader.rs sequential_batches, src/evaluate.rs split_loss): window w of a shard is
    tokens [w * seq_len, w * seq_len + seq_len + 1), windows never cross shards, and the
    windows that do not fill a last batch are left out."""
    manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
    windows = []
    for shard in manifest["splits"][split]["shards"]:
        ids = read_shard(os.path.join(data_dir, shard["file"]))
        n = max(len(ids) - 1, 0) // seq_len
        for w in range(n):
            windows.append(ids[w * seq_len : w * seq_len + seq_len + 1])
    # Every batch is a mean over the same number of tokens, so the mean of the batch means is
    # the mean over all tokens of the windows kept; computed in larger chunks (faster).
    used = len(windows) // batch * batch
    total, chunk = 0.0, 256
    with torch.no_grad():
        for c in range(0, used, chunk):
            x = torch.from_numpy(np.stack(windows[c : min(c + chunk, used)]))
            logits = model(input_ids=x[:, :-1]).logits.float()
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"
            ).double().item()
    tokens = used * seq_len
    return total / tokens, tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--tmp", required=True, help="scratch directory")
    ap.add_argument("--corpus", default="data/shakespeare")
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--corpus-prompts", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rtol", type=float, default=1e-4)
    args = ap.parse_args()
    ckpt = args.checkpoint
    torch.manual_seed(0)
    ok = True

    model, problems = check_load(ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    cfg = model.config
    print(
        f"loaded {ckpt}: {type(model).__name__} (n_layer {cfg.n_layer}, n_head {cfg.n_head}, "
        f"n_embd {cfg.n_embd}, n_positions {cfg.n_positions}, vocab {cfg.vocab_size}, "
        f"attention {cfg._attn_implementation}), {type(tok).__name__} ({len(tok)} tokens)"
    )
    print(f"weights as in the file, lm_head tied: {'yes' if not problems else 'no'}")
    for p in problems:
        print(f"  {p}")
    ok &= not problems
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    if eot != cfg.eos_token_id or tok.eos_token_id != eot:
        print(f"  <|endoftext|> is {eot}, config eos {cfg.eos_token_id}, tokenizer eos {tok.eos_token_id}")
        ok = False

    # Tokenizer: our ids through `prepare` with the checkpoint's tokenizer.json.
    docs = [clean(t) for t in TEXTS]
    for name in PLAYS:
        with open(os.path.join(args.corpus, name), encoding="utf-8") as f:
            docs.append(clean(f.read()))
    docs_path = os.path.join(args.tmp, "docs.jsonl")
    with open(docs_path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    data_dir = os.path.join(args.tmp, "prepared")
    prep = json.loads(
        run(
            [
                os.path.join(args.bin, "prepare"),
                docs_path,
                "--out",
                data_dir,
                "--tokenizer",
                os.path.join(ckpt, "tokenizer.json"),
                "--val-fraction",
                "0",
                "--test-fraction",
                "0",
                "--min-chars",
                "1",
                "--no-dedup",
                "--no-progress",
                "--json",
            ]
        )
    )
    manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
    shard_ids = np.concatenate(
        [read_shard(os.path.join(data_dir, s["file"])) for s in manifest["splits"]["train"]["shards"]]
    )
    kept = manifest["splits"]["train"]["documents"]
    if kept != len(docs):
        print(f"tokenizer ids equal: no (prepare kept {kept} of {len(docs)} documents: {prep})")
        ok = False
    else:
        mismatches, total = check_tokenizer(tok, docs, shard_ids, eot)
        print(
            f"tokenizer ids equal: {'yes' if not mismatches else 'no'} "
            f"({len(docs)} texts, {total} tokens)"
        )
        for m in mismatches:
            print(f"  {m}")
        ok &= not mismatches

    # Greedy generation: the fixed prompts and prompts cut from the corpus.
    limit = cfg.n_positions - args.new_tokens
    prompts = PROMPTS + corpus_prompts(tok, shard_ids, eot, args.corpus_prompts, 24, limit)
    results = check_greedy(model, tok, ckpt, args.bin, prompts, args.new_tokens, eot)
    same = all(o == t for _, o, t, _ in results)
    distinct = len({tuple(o) for _, o, _, _ in results})
    print(
        f"greedy ids equal: {'yes' if same else 'no'} "
        f"({len(results)} prompts, up to {args.new_tokens} new tokens each, "
        f"{sum(len(o) for _, o, _, _ in results)} tokens in all, "
        f"{distinct} distinct continuations)"
    )
    for prompt, o, t, gap in results:
        if o != t:
            print(f"  {prompt!r}: ours {o} vs transformers {t}")
            if gap:
                print(
                    f"    first difference at new token {gap[0]}: transformers' best two logits "
                    f"differ by {gap[1]:.3g}, our pick is {-gap[2]:.3g} below its best"
                )
    ok &= same

    # Loss over the same windows.
    seq_len = cfg.n_positions
    ours = json.loads(
        run(
            [
                os.path.join(args.bin, "evaluate"),
                "--task",
                "loss",
                "--model",
                ckpt,
                "--data",
                data_dir,
                "--split",
                "train",
                "--batch-size",
                str(args.batch_size),
                "--seq-len",
                str(seq_len),
                "--device",
                "cpu",
                "--json",
            ]
        )
    )
    theirs, tokens = hf_loss(model, data_dir, "train", args.batch_size, seq_len)
    rel = abs(ours["loss"] - theirs) / abs(theirs)
    print(
        f"loss: ours {ours['loss']:.6f} vs transformers {theirs:.6f}, relative difference "
        f"{rel:.2e} ({tokens} tokens, batch {args.batch_size} x {seq_len}; tolerance {args.rtol:g})"
    )
    if ours["tokens"] != tokens:
        print(f"  token counts differ: ours {ours['tokens']} vs {tokens}")
        ok = False
    ok &= rel <= args.rtol and math.isfinite(rel)

    print("OK: the checkpoint loads in transformers as it is and matches" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
