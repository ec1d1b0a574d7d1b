#!/usr/bin/env python3
"""Greedy tokens/s: smelt `generate` (KV cache, f32, CPU) vs transformers `generate` (CPU).

Both run the same random GPT-2 124M-shaped model (torch.manual_seed(0), transformers' init),
saved with save_pretrained next to a byte-level tokenizer without merges (256 byte tokens and
<|endoftext|>, so the 16-character prompt is 16 tokens; the model's vocabulary stays 50257).
Each generates 200 new tokens greedily, eos ignored. tokens/s = new tokens / generation time
(prefill included, model loading excluded); smelt's time comes from its --stats line.
Run via tools/bench_generate.sh.
"""
import argparse
import json
import os
import re
import subprocess
import tempfile
import time

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

transformers.logging.set_verbosity_error()

PROMPT = "The cat sat on a"  # 16 characters = 16 byte tokens
NEW = 200
EOT = "<|endoftext|>"


def byte_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=257, special_tokens=[EOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["x"], trainer=trainer)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True, help="smelt's generate binary")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "smelt-bench-gpt2-124m"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tok = byte_tokenizer()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT)
    cfg = GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257,
                     bos_token_id=tok.token_to_id(EOT), eos_token_id=tok.token_to_id(EOT))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).eval()
    model.generation_config.eos_token_id = None
    model.save_pretrained(args.dir)
    fast.save_pretrained(args.dir)
    ids = fast(PROMPT, return_tensors="pt")["input_ids"]
    assert ids.shape[1] == 16, ids.shape

    def hf_run(n):
        with torch.inference_mode():
            t = time.perf_counter()
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
            return time.perf_counter() - t, out[0, ids.shape[1]:].tolist()

    hf_run(5)  # warm-up
    hf_s, hf_ids = hf_run(NEW)

    cmd = [args.bin, "--model", args.dir, "--prompt", PROMPT, "--max-new-tokens", str(NEW),
           "--temperature", "0", "--ignore-eot", "--json", "--stats"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    subprocess.run(cmd, capture_output=True, check=True, env=env)  # warm-up (page cache)
    runs = []
    for _ in range(2):
        p = subprocess.run(cmd, capture_output=True, check=True, text=True, env=env)
        m = re.search(r"(\d+) new tokens in ([0-9.]+)s", p.stderr)
        runs.append((float(m.group(2)), int(m.group(1)), json.loads(p.stdout)["tokens"], p.stderr.strip()))
    ours_s, ours_n, ours_ids, stats = min(runs)
    agree = next((i for i, (a, b) in enumerate(zip(hf_ids, ours_ids)) if a != b), min(len(hf_ids), len(ours_ids)))

    print(f"model: random GPT-2 124M shape (12x768, 12 heads, vocab 50257), prompt 16 tokens, "
          f"{NEW} new greedy tokens, {args.threads} threads, torch {torch.__version__}, "
          f"transformers {transformers.__version__} ({model.config._attn_implementation} attention)")
    print(f"smelt generate (KV cache):     {ours_n / ours_s:8.1f} tokens/s  ({ours_n} tokens in {ours_s:.2f}s)")
    print(f"  {stats}")
    print(f"transformers generate (greedy): {len(hf_ids) / hf_s:8.1f} tokens/s  ({len(hf_ids)} tokens in {hf_s:.2f}s)")
    print(f"greedy ids agree for the first {agree} of {NEW} tokens")


if __name__ == "__main__":
    main()
