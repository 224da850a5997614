#!/usr/bin/env python3
"""llama.cpp's own KV cache quantization on issue 11's protocol: the q8_0 and q4_0 points of the frontier.

For each text, llama.cpp (through llama-cpp-python, flash attention, one thread) scores the
same windows as `sparsekv eval --ctx 1024 --decode-batch 1`: the text's tokens as
`sparsekv tokenize` gives them (llama.cpp's own tokenization), non-overlapping windows of
ctx tokens from an empty cache (BOS in front when the model adds one), the first half
prefilled at once, the second half fed token by token, and the logits at positions
ctx/2 ... ctx-2 scored against the next token. Each K/V type (f16, q8_0, q4_0) is its own
context; the change in perplexity is against llama.cpp's f16 cache on the same windows,
as our caches' are against our fp32 cache. Bits per channel: q8_0 stores 32 values in 34
bytes (8.5 bits), q4_0 in 18 (4.5 bits), f16 16.

Writes OUT/frontier-runs/llama-<text>-ctx<ctx>.json (resumable: the types already there
for the same windows are skipped); `scripts/bench_frontier.py --report-only` then puts the
points into reports/frontier.{md,svg,json}. Progress goes to stderr.

  scripts/llama_frontier.py [--texts cfi-ch4 alice29 lcet10] [--windows N] [--types f16 q8_0 q4_0]

--windows defaults to the windows of the text's CSR row set in OUT/frontier-runs (so the
points share its windows), else 6. Needs llama-cpp-python (README, "Checked against llama.cpp").
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.environ.get("SPARSEKV_HOME", os.path.expanduser("~/.cache/sparsekv"))
MODEL = os.path.join(HOME, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
TYPES = {"f16": (1, 16.0), "q8_0": (8, 8.5), "q4_0": (2, 4.5)}  # ggml type id, bits per channel


def log(msg):
    print(f"[llama-frontier {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tokens(binary, text):
    out = subprocess.run([binary, "tokenize", "--file", os.path.join(HOME, "texts", f"{text}.txt")],
                         capture_output=True, text=True, check=True).stdout
    return [int(t) for t in out.split()]


def score(llama_cpp, type_name, windows, ctx):
    """Mean NLL of every window's scored tokens with one K/V type; (nll per window, seconds)."""
    type_id = TYPES[type_name][0]
    llm = llama_cpp.Llama(model_path=MODEL, n_ctx=ctx, n_batch=ctx // 2, n_ubatch=ctx // 2, n_threads=1,
                          n_threads_batch=1, logits_all=False, flash_attn=True, type_k=type_id, type_v=type_id,
                          n_gpu_layers=0, verbose=False)
    first, per_window, t0, vocab = ctx // 2, [], time.perf_counter(), llm.n_vocab()
    for i, w in enumerate(windows):
        llm.reset()
        llm.eval(w[:first])
        nll = 0.0
        for j in range(first, ctx - 1):
            llm.eval([w[j]])
            # Without logits_all, eval keeps no scores: the context's buffer holds the last token's logits.
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).astype(np.float64)
            top = logits.max()
            nll += top + math.log(np.exp(logits - top).sum()) - logits[w[j + 1]]
        per_window.append(nll / (ctx - 1 - first))
        log(f"  {type_name}: window {i + 1}/{len(windows)}, running ppl {math.exp(sum(per_window) / len(per_window)):.4f}")
    seconds = time.perf_counter() - t0
    llm.close()
    return per_window, seconds


def main():
    ap = argparse.ArgumentParser(description="llama.cpp's f16/q8_0/q4_0 KV caches on the frontier protocol "
                                             "(reports/frontier-runs/llama-*.json).")
    ap.add_argument("--texts", nargs="+", default=["cfi-ch4", "alice29", "lcet10"])
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--windows", type=int, default=0, help="windows per text (0: those of the text's CSR row set, else 6)")
    ap.add_argument("--types", nargs="+", default=list(TYPES), choices=list(TYPES))
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "sparsekv"))
    ap.add_argument("--out", default=os.path.join(ROOT, "reports"))
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        sys.exit("error: llama-cpp-python is not installed (README, 'Checked against llama.cpp')")
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"error: {args.bin} not found; build it first (make build)")
    if "f16" not in args.types:
        args.types = ["f16"] + args.types  # the baseline every change is measured against
    vocab = llama_cpp.Llama(model_path=MODEL, vocab_only=True, verbose=False)
    bos = vocab.token_bos() if vocab.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true" else None
    del vocab
    for text in args.texts:
        path = os.path.join(args.out, "frontier-runs", f"llama-{text}-ctx{args.ctx}.json")
        windows_n = args.windows
        if not windows_n:
            ours = os.path.join(args.out, "frontier-runs", f"{text}-ctx{args.ctx}.json")
            windows_n = json.load(open(ours))["windows"] if os.path.exists(ours) else 6
        ids = tokens(args.bin, text)
        n = min(windows_n, len(ids) // args.ctx)
        if n < 1:
            sys.exit(f"error: {text} has {len(ids)} tokens, fewer than one window of {args.ctx}")
        windows = []
        for c in range(n):
            w = ids[c * args.ctx:(c + 1) * args.ctx]
            if bos is not None:
                w[0] = bos
            windows.append(w)
        run = json.load(open(path)) if os.path.exists(path) else None
        if not run or run["windows"] != n or run["tokens"] != len(ids):
            run = {"text": text, "ctx": args.ctx, "windows": n, "tokens": len(ids), "bos": bos,
                   "tokensScored": n * (args.ctx - 1 - args.ctx // 2), "threads": 1, "flashAttention": True,
                   "llamaCppPython": llama_cpp.__version__, "rows": {}}
        for t in args.types:
            if t in run["rows"]:
                log(f"{text}: {t} already measured, skipped")
                continue
            log(f"{text}: {t}, {n} windows of {args.ctx}")
            per_window, seconds = score(llama_cpp, t, windows, args.ctx)
            run["rows"][t] = {"type": t, "bitsPerChannel": TYPES[t][1], "windowNLL": per_window,
                              "perplexity": math.exp(sum(per_window) / n), "seconds": round(seconds, 1),
                              "measuredUTC": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            base = run["rows"].get("f16")
            if base:
                for r in run["rows"].values():
                    r["relativeChange"] = r["perplexity"] / base["perplexity"] - 1
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(run, f, indent=1)
                f.write("\n")
        log(f"{text}: " + ", ".join(f"{t} {r['perplexity']:.4f} ({100 * r.get('relativeChange', 0):+.2f}%)"
                                    for t, r in run["rows"].items()))


if __name__ == "__main__":
    main()
