#!/usr/bin/env python3
"""Build the PyTorch/transformers reference fixture for smelt's GPT-2.

Writes ONE safetensors file holding a tiny GPT-2's initial parameters, a batch
(input_ids, targets), the reference logits / loss / gradients of that batch, and
the parameters after 3 AdamW steps (with grad-norm clipping) on the same batch.

All math runs in float64 on float32-representable inputs; every float tensor is
stored as float32. Run via tools/make_fixture.sh (which pins the versions).
"""
import argparse
import json
import math
import os
import struct

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

transformers.logging.set_verbosity_error()  # silence bos/eos (50256) >= vocab warnings

# ---- fixed fixture parameters -------------------------------------------------
N_LAYER, N_HEAD, N_EMBD, N_POSITIONS, VOCAB = 2, 4, 64, 64, 300
BATCH, SEQ_LEN = 3, 32
LN_EPS = 1e-5
LR, BETA1, BETA2, EPS, WEIGHT_DECAY, GRAD_CLIP = 1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0
N_STEPS = 3

SEED_MODEL = 1234  # torch.manual_seed before model creation (HF init)
SEED_PERTURB = 1235  # generator for the LayerNorm / bias perturbation
SEED_DATA = 1236  # generator for input_ids / targets


def build_model():
    cfg = GPT2Config(
        n_layer=N_LAYER,
        n_head=N_HEAD,
        n_embd=N_EMBD,
        n_positions=N_POSITIONS,
        vocab_size=VOCAB,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=LN_EPS,
        activation_function="gelu_new",
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    torch.manual_seed(SEED_MODEL)
    model = GPT2LMHeadModel(cfg)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    assert model.lm_head.weight is model.transformer.wte.weight, "lm_head not tied"

    # Perturb (float32) so LayerNorm affine params and Conv1D biases are non-trivial.
    g = torch.Generator().manual_seed(SEED_PERTURB)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 2)
            module_kind = leaf[-2]  # e.g. ln_1, c_attn, ...
            if module_kind in ("ln_1", "ln_2", "ln_f"):
                noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
                if name.endswith(".weight"):
                    p.copy_(1.0 + 0.1 * noise)
                else:
                    p.copy_(0.1 * noise)
            elif module_kind in ("c_attn", "c_proj", "c_fc") and name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g, dtype=torch.float32))
    model.eval()
    model.double()  # f32 values are exact in f64: reference = exact math on f32 inputs
    return model


def manual_forward(params, input_ids):
    """Independent plain-torch GPT-2 forward from the named parameters (self-check)."""
    B, T = input_ids.shape
    hd = N_EMBD // N_HEAD

    def ln(x, pre):
        return F.layer_norm(x, (N_EMBD,), params[pre + ".weight"], params[pre + ".bias"], LN_EPS)

    def gelu_new(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))

    x = params["transformer.wte.weight"][input_ids] + params["transformer.wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(N_LAYER):
        h = f"transformer.h.{i}."
        a = ln(x, h + "ln_1") @ params[h + "attn.c_attn.weight"] + params[h + "attn.c_attn.bias"]
        q, k, v = a.split(N_EMBD, dim=-1)
        q, k, v = (t.view(B, T, N_HEAD, hd).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, N_EMBD)
        x = x + y @ params[h + "attn.c_proj.weight"] + params[h + "attn.c_proj.bias"]
        m = gelu_new(ln(x, h + "ln_2") @ params[h + "mlp.c_fc.weight"] + params[h + "mlp.c_fc.bias"])
        x = x + m @ params[h + "mlp.c_proj.weight"] + params[h + "mlp.c_proj.bias"]
    x = ln(x, "transformer.ln_f")
    return x @ params["transformer.wte.weight"].T


def compute_loss(model, input_ids, targets):
    logits = model(input_ids).logits
    loss = F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))
    return logits, loss


def canonicalize_header(path):
    """safetensors writes __metadata__ in hash order; rewrite the JSON header with
    sorted keys so reruns are byte-identical. Tensor data is left untouched."""
    with open(path, "rb") as fh:
        blob = fh.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    new = json.dumps(header, separators=(",", ":")).encode()
    assert len(new) <= n, (len(new), n)
    new += b" " * (n - len(new))  # same length keeps data offsets/alignment
    with open(path, "wb") as fh:
        fh.write(blob[:8] + new + blob[8 + n :])


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = build_model()
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names

    g = torch.Generator().manual_seed(SEED_DATA)
    input_ids = torch.randint(0, VOCAB, (BATCH, SEQ_LEN), generator=g, dtype=torch.int64)
    targets = torch.randint(0, VOCAB, (BATCH, SEQ_LEN), generator=g, dtype=torch.int64)

    out = {}
    for n, p in model.named_parameters():
        out[n] = f32(p)
    out["input_ids"] = input_ids.clone()
    out["targets"] = targets.clone()

    # ---- forward / backward at the initial params ------------------------------
    model.zero_grad(set_to_none=True)
    logits, loss = compute_loss(model, input_ids, targets)
    loss.backward()
    out["logits"] = f32(logits)
    out["loss"] = f32(loss.reshape(1))
    for n, p in model.named_parameters():
        out["grad." + n] = f32(p.grad)

    # Self-check: independent forward must match HF to ~f64 precision.
    with torch.no_grad():
        ref = manual_forward(dict(model.named_parameters()), input_ids)
        diff = (ref - logits).abs().max().item()
    assert diff < 1e-10, f"manual forward disagrees with HF: {diff}"

    # ---- 3 AdamW steps on the same batch, from the initial params --------------
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=LR,
        betas=(BETA1, BETA2),
        eps=EPS,
        foreach=False,
    )
    losses, norms = [], []
    for _ in range(N_STEPS):
        opt.zero_grad(set_to_none=True)
        _, l = compute_loss(model, input_ids, targets)
        l.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        losses.append(l.item())
        norms.append(float(norm))
    with torch.no_grad():
        _, l = compute_loss(model, input_ids, targets)
    losses.append(l.item())
    out["adamw.losses"] = torch.tensor(losses, dtype=torch.float32)
    out["adamw.grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, p in model.named_parameters():
        out["after." + n] = f32(p)

    metadata = {
        "n_layer": str(N_LAYER),
        "n_head": str(N_HEAD),
        "n_embd": str(N_EMBD),
        "n_positions": str(N_POSITIONS),
        "vocab_size": str(VOCAB),
        "batch": str(BATCH),
        "seq_len": str(SEQ_LEN),
        "lr": repr(LR),
        "beta1": repr(BETA1),
        "beta2": repr(BETA2),
        "eps": repr(EPS),
        "weight_decay": repr(WEIGHT_DECAY),
        "grad_clip": repr(GRAD_CLIP),
        "layer_norm_epsilon": repr(LN_EPS),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "description": (
            "Tiny GPT-2 (transformers GPT2LMHeadModel, eager attn, gelu_new, tied lm_head) reference: "
            "initial params, input_ids/targets, logits, loss=mean CE(logits, targets) (no shift), "
            "grad.<name>, adamw.losses/grad_norms for 3 AdamW steps (wd 0.1 on dim>=2 only, "
            "clip_grad_norm_ 1.0), after.<name>. Computed in float64, stored as float32. "
            "Conv1D weights are (in, out). Made by tools/make_fixture.sh."
        ),
    }

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(out, args.out, metadata=metadata)
    canonicalize_header(args.out)

    # ---- reload and summarise ---------------------------------------------------
    back = load_file(args.out)
    assert set(back) == set(out)
    assert not any(k.endswith("attn.bias") and back[k].dim() == 4 for k in back)
    assert "lm_head.weight" not in back
    size = os.path.getsize(args.out)
    assert size < 5 * 1024 * 1024, size
    print(f"torch {torch.__version__}  transformers {transformers.__version__}")
    print(f"manual-vs-HF max |dlogits| = {diff:.3e}")
    print(f"initial loss = {losses[0]:.6f}  (ln({VOCAB}) = {math.log(VOCAB):.6f})")
    print("adamw.losses     =", [f"{x:.6f}" for x in losses])
    print("adamw.grad_norms =", [f"{x:.6f}" for x in norms])
    print(f"wrote {args.out}: {len(back)} tensors, {size} bytes")


if __name__ == "__main__":
    main()
