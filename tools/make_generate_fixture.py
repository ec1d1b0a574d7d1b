#!/usr/bin/env python3
"""Build tests/fixtures/hf_tiny/: a tiny GPT-2 as transformers saves it, and its greedy output.

- tokenizer: a byte-level BPE (GPT-2's pre-tokenizer and decoder, <|endoftext|> special)
  trained with `tokenizers` on the fixed text below, 384 tokens;
- model: GPT2LMHeadModel(n_layer=3, n_head=3, n_embd=48, n_positions=64, vocab 384,
  gelu_new, tied lm_head, eager attention), torch.manual_seed(4321), then every weight
  redrawn N(0, 0.1) and LayerNorm/bias perturbed (generator seed 4322) so logits are decisive;
- `model.save_pretrained(out)` (model.safetensors, config.json, generation_config.json) and
  `PreTrainedTokenizerFast.save_pretrained(out)` (tokenizer.json, tokenizer_config.json);
- greedy.json: for 3 prompts, the prompt ids and `model.generate(do_sample=False,
  max_new_tokens=20)` new ids (eos disabled, so always 20), plus the smallest top-1/top-2
  logit margin seen, which the script requires to be large enough for f32 ties not to matter.

Run via tools/make_generate_fixture.sh (which pins the versions).
"""
import argparse
import json
import os

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

transformers.logging.set_verbosity_error()

EOT = "<|endoftext|>"
VOCAB = 384
N_LAYER, N_HEAD, N_EMBD, N_POSITIONS = 3, 3, 48, 64
NEW_TOKENS = 20
PROMPTS = [
    "The quick brown fox",
    "Once upon a time, there was",
    "To be, or not to be: that is the question.",
]
TEXT = """
Once upon a time, there was a quick brown fox that jumped over the lazy dog.
To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer
the slings and arrows of outrageous fortune, or to take arms against a sea of troubles.
The quick brown fox jumps over the lazy dog; the dog sleeps, the fox runs away.
It was the best of times, it was the worst of times, it was the age of wisdom,
it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.
All happy families are alike; each unhappy family is unhappy in its own way.
In the beginning the Universe was created. This has made a lot of people very angry.
"""


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        show_progress=False,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = [l for l in TEXT.strip().split("\n")] * 4
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def build_model(vocab, eot_id):
    cfg = GPT2Config(
        n_layer=N_LAYER,
        n_head=N_HEAD,
        n_embd=N_EMBD,
        n_positions=N_POSITIONS,
        vocab_size=vocab,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        activation_function="gelu_new",
        tie_word_embeddings=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        attn_implementation="eager",
    )
    torch.manual_seed(4321)
    model = GPT2LMHeadModel(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight, "lm_head not tied"
    g = torch.Generator().manual_seed(4322)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if ".ln_" in name:
                p.copy_(1.0 + 0.1 * noise if name.endswith(".weight") else 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.05 * noise)
            else:
                p.copy_(0.1 * noise)
    model.eval()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    tok = build_tokenizer()
    vocab = tok.get_vocab_size()
    eot_id = tok.token_to_id(EOT)
    assert vocab == VOCAB, vocab
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT)
    model = build_model(vocab, eot_id)
    model.generation_config.eos_token_id = None  # always NEW_TOKENS tokens
    model.generation_config.pad_token_id = eot_id
    model.save_pretrained(args.out)
    fast.save_pretrained(args.out)

    records = []
    min_margin = float("inf")
    for prompt in PROMPTS:
        ids = fast(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                pad_token_id=eot_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        new = out.sequences[0, ids.shape[1]:].tolist()
        assert len(new) == NEW_TOKENS, new
        for s in out.scores:
            top = torch.topk(s[0].double(), 2).values
            min_margin = min(min_margin, (top[0] - top[1]).item())
        # The same greedy continuation in float64, so f32 rounding cannot flip a choice.
        with torch.no_grad():
            seq = ids.clone()
            m64 = model.double()
            for _ in range(NEW_TOKENS):
                nxt = m64(seq).logits[0, -1].argmax()
                seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
            model.float()
        assert seq[0, ids.shape[1]:].tolist() == new, "f64 greedy disagrees with f32 greedy"
        records.append({
            "prompt": prompt,
            "prompt_ids": ids[0].tolist(),
            "new_ids": new,
            "text": fast.decode(new),
        })
    assert min_margin > 1e-3, f"greedy margins too small for a robust fixture: {min_margin}"

    result = {
        "description": "transformers GPT2LMHeadModel.generate(do_sample=False, max_new_tokens=20) "
                       "on the model of this folder; made by tools/make_generate_fixture.sh",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "max_new_tokens": NEW_TOKENS,
        "min_top2_margin": min_margin,
        "prompts": records,
    }
    with open(os.path.join(args.out, "greedy.json"), "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    assert total < 1024 * 1024, total
    with open(os.path.join(args.out, "config.json")) as fh:
        cfg = json.load(fh)
    print(f"torch {torch.__version__}  transformers {transformers.__version__}")
    print("files:", sorted(os.listdir(args.out)), f"{total} bytes")
    print("config keys:", sorted(cfg))
    print(f"min top-2 margin {min_margin:.4f}")
    for r in records:
        print(r["prompt_ids"], "->", r["new_ids"], repr(r["text"]))


if __name__ == "__main__":
    main()
