#!/usr/bin/env python3
"""ref_forward.py — the mean next-token cross-entropy of a Hugging Face GPT-2 or Llama checkpoint
on the first rows of an llm.c token shard, computed with numpy alone (in float64) following
Hugging Face's modeling code, and compared with the val_loss that dhxrun reported.

    ref_forward.py gpt2|llama MODEL.safetensors SHARD --seq S --rows R --heads H
                   [--kv-heads G] [--eps E] [--rope-theta T] [--metrics M.jsonl] [--rtol X]

Row r is tokens[r*S : r*S + S] predicting tokens[r*S + 1 : r*S + S + 1], as dhxrun's evaluation
reads the validation shard. The conventions are Hugging Face's, not DHX's:
  GPT-2   Conv1D weights [in, out] (x @ W + b), c_attn fused q|k|v, LayerNorm, GELU with the tanh
          approximation ("gelu_new"), lm_head [vocab, hidden] (tied to wte when absent)
  Llama   nn.Linear weights [out, in] (x @ W.T), RMSNorm, rotary embeddings with rotate_half
          over the two halves of each head, inv_freq = 1 / theta^(2i/head), grouped-query
          attention by repeat_kv, SwiGLU down(silu(gate(x)) * up(x))
"""
import argparse
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    tensors = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        begin, end = e["data_offsets"]
        raw = body[begin:end]
        if e["dtype"] == "BF16":
            x = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            x = np.frombuffer(raw, dtype=np.dtype(DTYPES[e["dtype"]]).newbyteorder("<"))
        tensors[name] = x.reshape(e["shape"]).astype(np.float64)
    return tensors


def read_shard(path):
    header = np.fromfile(path, dtype="<i4", count=256)
    magic, ntok = int(header[0]), int(header[2])
    dtype = "<u2" if magic == 20240520 else "<u4"
    return np.fromfile(path, dtype=dtype, offset=1024, count=ntok).astype(np.int64)


def softmax_causal(scores):
    s = scores.shape[-1]
    mask = np.triu(np.ones((s, s), dtype=bool), k=1)
    scores = np.where(mask, -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=-1, keepdims=True)


def attention(q, k, v):
    """q [H, S, hs], k and v [H, S, hs] -> [S, H*hs]."""
    hs = q.shape[-1]
    p = softmax_causal(q @ k.transpose(0, 2, 1) / np.sqrt(hs))
    o = p @ v
    return o.transpose(1, 0, 2).reshape(q.shape[1], -1)


def heads_first(x, heads):
    s, d = x.shape
    return x.reshape(s, heads, d // heads).transpose(1, 0, 2)


def cross_entropy(logits, targets):
    m = logits.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[:, 0]
    return lse - logits[np.arange(len(targets)), targets]


# ---- GPT-2 (transformers/models/gpt2/modeling_gpt2.py) ----------------------------------------

def layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def gpt2_logits(t, ids, heads, eps):
    p = "transformer."
    h = t[p + "wte.weight"][ids] + t[p + "wpe.weight"][np.arange(len(ids))]
    layer = 0
    while f"{p}h.{layer}.ln_1.weight" in t:
        L = f"{p}h.{layer}."
        a = layer_norm(h, t[L + "ln_1.weight"], t[L + "ln_1.bias"], eps)
        qkv = a @ t[L + "attn.c_attn.weight"] + t[L + "attn.c_attn.bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        o = attention(heads_first(q, heads), heads_first(k, heads), heads_first(v, heads))
        h = h + o @ t[L + "attn.c_proj.weight"] + t[L + "attn.c_proj.bias"]
        m = layer_norm(h, t[L + "ln_2.weight"], t[L + "ln_2.bias"], eps)
        m = gelu_new(m @ t[L + "mlp.c_fc.weight"] + t[L + "mlp.c_fc.bias"])
        h = h + m @ t[L + "mlp.c_proj.weight"] + t[L + "mlp.c_proj.bias"]
        layer += 1
    h = layer_norm(h, t[p + "ln_f.weight"], t[p + "ln_f.bias"], eps)
    head = t.get("lm_head.weight", t[p + "wte.weight"])
    return h @ head.T, layer


# ---- Llama (transformers/models/llama/modeling_llama.py) --------------------------------------

def rms_norm(x, w, eps):
    return x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope(x, theta):
    """x [heads, S, hs]: HF's apply_rotary_pos_emb with position ids 0..S-1."""
    hs = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, hs, 2, dtype=np.float64) / hs)
    freqs = np.arange(x.shape[1], dtype=np.float64)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return x * np.cos(emb) + rotate_half(x) * np.sin(emb)


def silu(x):
    return x / (1.0 + np.exp(-x))


def llama_logits(t, ids, heads, kv_heads, eps, theta):
    h = t["model.embed_tokens.weight"][ids]
    layer = 0
    while f"model.layers.{layer}.input_layernorm.weight" in t:
        L = f"model.layers.{layer}."
        a = rms_norm(h, t[L + "input_layernorm.weight"], eps)
        q = rope(heads_first(a @ t[L + "self_attn.q_proj.weight"].T, heads), theta)
        k = rope(heads_first(a @ t[L + "self_attn.k_proj.weight"].T, kv_heads), theta)
        v = heads_first(a @ t[L + "self_attn.v_proj.weight"].T, kv_heads)
        k, v = np.repeat(k, heads // kv_heads, axis=0), np.repeat(v, heads // kv_heads, axis=0)
        h = h + attention(q, k, v) @ t[L + "self_attn.o_proj.weight"].T
        m = rms_norm(h, t[L + "post_attention_layernorm.weight"], eps)
        m = silu(m @ t[L + "mlp.gate_proj.weight"].T) * (m @ t[L + "mlp.up_proj.weight"].T)
        h = h + m @ t[L + "mlp.down_proj.weight"].T
        layer += 1
    h = rms_norm(h, t["model.norm.weight"], eps)
    head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    return h @ head.T, layer


def last_val_loss(path):
    loss = None
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if "val_loss" in record and "step" in record:
                loss = record["val_loss"]
    if loss is None:
        sys.exit(f"{path}: no val_loss record")
    return loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch", choices=["gpt2", "llama"])
    ap.add_argument("model")
    ap.add_argument("shard")
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--metrics")
    ap.add_argument("--rtol", type=float, default=1e-4)
    args = ap.parse_args()

    t = read_safetensors(args.model)
    tokens = read_shard(args.shard)
    losses = []
    for r in range(args.rows):
        row = tokens[r * args.seq:r * args.seq + args.seq + 1]
        if args.arch == "gpt2":
            logits, layers = gpt2_logits(t, row[:-1], args.heads, args.eps)
        else:
            logits, layers = llama_logits(t, row[:-1], args.heads, args.kv_heads or args.heads,
                                          args.eps, args.rope_theta)
        losses.append(cross_entropy(logits, row[1:]))
    loss = float(np.mean(np.concatenate(losses)))
    print(f"numpy {args.arch} forward ({layers} layers, {args.rows} rows of {args.seq}): "
          f"mean loss {loss:.8f}")
    if args.metrics:
        want = last_val_loss(args.metrics)
        rel = abs(loss - want) / abs(want)
        print(f"dhxrun val_loss {want:.8f}: relative difference {rel:.2e} (tolerance {args.rtol:g})")
        if not rel <= args.rtol:
            sys.exit(1)


if __name__ == "__main__":
    main()
