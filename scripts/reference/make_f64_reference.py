#!/usr/bin/env python3
"""An exact reference for SmolLM2: a float64 numpy forward over the GGUF's dequantized weights.

Usage (re-runnable; overwrites the fixture; 575 s wall, 140 s CPU, on 2 busy cores; ~1.4 GB RAM):

    python3 -m pip install gguf        # gguf-py, the GGUF reader of the llama.cpp project
    python3 scripts/reference/make_f64_reference.py
    python3 scripts/reference/make_f64_reference.py --prompts 4 --steps 48 --out /tmp/f64.json

The committed fixture was made with the first command (gguf 0.19.0, numpy 2.4.6).

What it computes. The weights are read with gguf-py's GGUFReader and dequantized with
gguf.quants.dequantize (Q4_1: d * q + m, Q8_0: d * q, in float32 exactly as the engine's
Dequantize does), then cast to float64. Everything after that is float64:
  * the llama architecture as Sources/SparseKVEngine/Model/LlamaModel.swift runs it:
    x = token_embd[ids]; per block: h = rmsnorm(x) * attn_norm; q, k, v = h Wq^T, h Wk^T, h Wv^T;
    RoPE on q and k; causal softmax(q k^T / sqrt(head_dim)) v with grouped-query attention
    (query head j reads KV head j // (heads / kv_heads)); x += att Wo^T;
    h = rmsnorm(x) * ffn_norm; x += (silu(h Wgate^T) * (h Wup^T)) Wdown^T;
    logits = (rmsnorm(x) * output_norm) E^T with the tied embeddings E (token_embd, Q8_0);
  * rmsnorm(x) = x / sqrt(mean(x^2) + eps), eps = llama.attention.layer_norm_rms_epsilon;
  * RoPE in llama.cpp's "normal" mode (Model/RoPE.swift): channel pairs (2i, 2i+1) of each head
    rotated by pos * base^(-2i / rope_dim), base = llama.rope.freq_base (100000);
  * GGUF matrices have shape [cols, rows] (ne0 = input length); dequantize returns
    (rows, cols) row-major, the engine's (out, in) layout.
The only roundings left are float64's, far below any logit gap that matters; this is the
reference an fp32 engine must reproduce wherever a choice is not a near-tie.

Prompts: the first --prompts (4) prompts of Tests/SparseKVEngineTests/Fixtures/smollm2-reference.json,
by their token ids (no tokenizer involved). Greedy decoding for --steps (48) tokens: the
argmax of the logits at every step, EOS does not stop generation. For each step the fixture
records the chosen id, the runner-up id, the top-1 logit and the top-1 minus top-2 gap.

Output: Tests/SparseKVEngineTests/Fixtures/smollm2-f64-reference.json (small; committed).
Runtime is recorded in it (settings.elapsed_seconds); it is a one-off generator, not run in CI.
"""
import argparse
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np

try:
    import gguf
    from gguf import GGUFReader
    from gguf.quants import dequantize
except ImportError:  # pragma: no cover
    sys.exit("error: the gguf package is not installed: python3 -m pip install gguf")

HOME = os.environ.get("SPARSEKV_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "sparsekv")
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(REPO, "Tests", "SparseKVEngineTests", "Fixtures")
DEFAULT_OUT = os.path.join(FIXTURES, "smollm2-f64-reference.json")
PROMPT_SOURCE = os.path.join(FIXTURES, "smollm2-reference.json")
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        raise KeyError(f"{key} missing from the GGUF metadata")
    return f.contents()


class Model:
    """The GGUF's weights dequantized to float64, and its hyperparameters."""

    def __init__(self, path):
        r = GGUFReader(path)
        arch = field(r, "general.architecture")
        if arch != "llama":
            raise ValueError(f"{path}: architecture {arch!r}, expected 'llama'")
        self.layers = int(field(r, "llama.block_count"))
        self.dim = int(field(r, "llama.embedding_length"))
        self.heads = int(field(r, "llama.attention.head_count"))
        self.kv_heads = int(field(r, "llama.attention.head_count_kv"))
        self.ffn = int(field(r, "llama.feed_forward_length"))
        self.head_dim = self.dim // self.heads
        self.rope_dim = int(r.fields["llama.rope.dimension_count"].contents()) \
            if "llama.rope.dimension_count" in r.fields else self.head_dim
        self.rope_base = float(field(r, "llama.rope.freq_base"))
        self.eps = float(field(r, "llama.attention.layer_norm_rms_epsilon"))
        tensors = {t.name: t for t in r.tensors}
        self.types = {}

        def w(name, shape):
            t = tensors[name]
            a = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64)
            a = a.reshape(shape)
            self.types[name] = t.tensor_type.name
            return a

        d, kv = self.dim, self.kv_heads * self.head_dim
        self.embedding = w("token_embd.weight", (-1, d))
        self.vocab = self.embedding.shape[0]
        self.output_norm = w("output_norm.weight", (d,))
        self.head = w("output.weight", (-1, d)) if "output.weight" in tensors else self.embedding
        self.blocks = []
        for l in range(self.layers):
            p = f"blk.{l}."
            self.blocks.append({
                "attn_norm": w(p + "attn_norm.weight", (d,)),
                "wq": w(p + "attn_q.weight", (self.heads * self.head_dim, d)),
                "wk": w(p + "attn_k.weight", (kv, d)),
                "wv": w(p + "attn_v.weight", (kv, d)),
                "wo": w(p + "attn_output.weight", (d, self.heads * self.head_dim)),
                "ffn_norm": w(p + "ffn_norm.weight", (d,)),
                "wgate": w(p + "ffn_gate.weight", (self.ffn, d)),
                "wup": w(p + "ffn_up.weight", (self.ffn, d)),
                "wdown": w(p + "ffn_down.weight", (d, self.ffn)),
            })
        half = self.rope_dim // 2
        self.inv_freq = self.rope_base ** (-2.0 * np.arange(half, dtype=np.float64) / self.rope_dim)

    def rmsnorm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope(self, x, heads, start):
        """x (n, heads * head_dim); rotates pairs (2i, 2i+1), i < rope_dim / 2, of each head."""
        n = x.shape[0]
        theta = np.arange(start, start + n, dtype=np.float64)[:, None] * self.inv_freq[None, :]  # (n, half)
        c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        v = x.reshape(n, heads, self.head_dim).copy()
        a = v[:, :, 0:self.rope_dim:2].copy()
        b = v[:, :, 1:self.rope_dim:2].copy()
        v[:, :, 0:self.rope_dim:2] = a * c - b * s
        v[:, :, 1:self.rope_dim:2] = a * s + b * c
        return v.reshape(n, heads * self.head_dim)

    def new_cache(self):
        return [{"k": np.zeros((0, self.kv_heads, self.head_dim)), "v": np.zeros((0, self.kv_heads, self.head_dim))}
                for _ in range(self.layers)]

    def forward(self, ids, cache):
        """Runs ids after the positions the cache holds; returns logits (len(ids), vocab)."""
        n, hd, group = len(ids), self.head_dim, self.heads // self.kv_heads
        x = self.embedding[np.asarray(ids)]
        for blk, kv in zip(self.blocks, cache):
            start = kv["k"].shape[0]
            h = self.rmsnorm(x, blk["attn_norm"])
            q = self.rope(h @ blk["wq"].T, self.heads, start).reshape(n, self.heads, hd)
            k = self.rope(h @ blk["wk"].T, self.kv_heads, start).reshape(n, self.kv_heads, hd)
            v = (h @ blk["wv"].T).reshape(n, self.kv_heads, hd)
            kv["k"] = np.concatenate([kv["k"], k])
            kv["v"] = np.concatenate([kv["v"], v])
            total = start + n
            keys = np.repeat(kv["k"], group, axis=1)      # (total, heads, hd): query head j uses KV head j // group
            values = np.repeat(kv["v"], group, axis=1)
            scores = np.einsum("nhd,thd->hnt", q, keys) / np.sqrt(hd)  # (heads, n, total)
            visible = np.arange(total)[None, :] <= (start + np.arange(n))[:, None]  # (n, total)
            scores = np.where(visible[None], scores, -np.inf)
            scores -= scores.max(axis=-1, keepdims=True)
            p = np.exp(scores)
            p /= p.sum(axis=-1, keepdims=True)
            att = np.einsum("hnt,thd->nhd", p, values).reshape(n, self.heads * hd)
            x = x + att @ blk["wo"].T
            h = self.rmsnorm(x, blk["ffn_norm"])
            g, u = h @ blk["wgate"].T, h @ blk["wup"].T
            x = x + (g / (1.0 + np.exp(-g)) * u) @ blk["wdown"].T
        return self.rmsnorm(x, self.output_norm) @ self.head.T


def greedy(model, prompt_ids, steps):
    cache = model.new_cache()
    logits = model.forward(prompt_ids, cache)[-1]
    out = {"generated_ids": [], "runner_up_ids": [], "top1_logit": [], "top1_top2_gap": []}
    for step in range(steps):
        order = np.argsort(logits)[::-1]
        top1, top2 = int(order[0]), int(order[1])
        out["generated_ids"].append(top1)
        out["runner_up_ids"].append(top2)
        out["top1_logit"].append(round(float(logits[top1]), 6))
        out["top1_top2_gap"].append(round(float(logits[top1] - logits[top2]), 6))
        if step + 1 < steps:
            logits = model.forward([top1], cache)[-1]
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(HOME, "models", MODEL_NAME))
    ap.add_argument("--prompts", type=int, default=4, help="first N prompts of smollm2-reference.json")
    ap.add_argument("--steps", type=int, default=48, help="greedy tokens per prompt")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    if not os.path.exists(args.model):
        sys.exit(f"error: {args.model} not found; run scripts/setup.sh (or set SPARSEKV_HOME)")

    t0 = time.perf_counter()
    source = json.load(open(PROMPT_SOURCE))
    prompts = source["greedy"]["prompts"][:args.prompts]
    log(f"loading {args.model} (dequantizing to float64)")
    model = Model(args.model)
    t_load = time.perf_counter() - t0
    log(f"loaded in {t_load:.1f} s: {model.layers} layers, dim {model.dim}, {model.heads}/{model.kv_heads} heads, "
        f"ffn {model.ffn}, vocab {model.vocab}, rope base {model.rope_base:g}, eps {model.eps:g}")
    results = []
    for p in prompts:
        t = time.perf_counter()
        g = greedy(model, [int(i) for i in p["prompt_ids"]], args.steps)
        log(f"{p['name']}: {len(p['prompt_ids'])} prompt tokens, {args.steps} steps in {time.perf_counter() - t:.1f} s, "
            f"smallest gap {min(g['top1_top2_gap']):.5f} at step {int(np.argmin(g['top1_top2_gap']))}")
        results.append({"name": p["name"], "prompt_ids": [int(i) for i in p["prompt_ids"]], **g})
    elapsed = time.perf_counter() - t0

    doc = {
        "description": "Exact reference: greedy decoding of a float64 numpy forward over the GGUF's dequantized "
                       "weights (scripts/reference/make_f64_reference.py). top1_top2_gap[k] is the float64 "
                       "logit gap behind generated_ids[k]; runner_up_ids[k] the second-best id.",
        "model": {"file": os.path.basename(args.model), "size": os.path.getsize(args.model),
                  "sha256": sha256(args.model), "n_vocab": model.vocab,
                  "tensor_types": sorted(set(model.types.values()))},
        "greedy": {"steps": args.steps, "prompts": results},
        "settings": {
            "script": "scripts/reference/make_f64_reference.py",
            "command": "python3 scripts/reference/make_f64_reference.py" +
                       ("" if (args.prompts, args.steps) == (4, 48) else f" --prompts {args.prompts} --steps {args.steps}"),
            "prompt_source": "Tests/SparseKVEngineTests/Fixtures/smollm2-reference.json greedy.prompts[:%d]" % args.prompts,
            "dtype": "float64 (weights dequantized by gguf.quants.dequantize in float32, then cast)",
            "rope": f"normal (adjacent pairs), base {model.rope_base:g}, dim {model.rope_dim}",
            "rms_eps": model.eps,
            "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "elapsed_seconds": round(elapsed, 1),
            "load_seconds": round(t_load, 1),
            "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(dumps(doc) + "\n")
    log(f"wrote {args.out} in {elapsed:.1f} s")


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # pragma: no cover
        return None


def dumps(doc):
    """JSON with one line per prompt field, so the fixture stays small and diffable."""
    lines = ["{"]
    keys = list(doc)
    for i, k in enumerate(keys):
        comma = "," if i + 1 < len(keys) else ""
        if k == "greedy":
            lines.append(f'  "greedy": {{"steps": {doc[k]["steps"]}, "prompts": [')
            ps = doc[k]["prompts"]
            for j, p in enumerate(ps):
                lines.append("    {")
                fields = list(p)
                for m, f in enumerate(fields):
                    lines.append(f"      {json.dumps(f)}: {json.dumps(p[f])}" + ("," if m + 1 < len(fields) else ""))
                lines.append("    }" + ("," if j + 1 < len(ps) else ""))
            lines.append("  ]}" + comma)
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(doc[k])}{comma}")
    lines.append("}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
