#!/usr/bin/env python3
"""Per-layer sparsity for CSR keys, allocated by each layer's measured effect on KL (issue 11).

For every layer L, `sparsekv eval` runs the base cache with layer L's keys at fewer pairs
(`k@L=LOW`) and at more (`k@L=HIGH`), token by token (`--decode-batch 1`), on a calibration
text (never an evaluation text), and records the mean KL against fp32:

    harm(L) = KL(base, k@L=LOW) - KL(base)      what taking pairs from layer L costs
    gain(L) = KL(base) - KL(base, k@L=HIGH)     what giving pairs to layer L buys

The allocation keeps the total number of key pairs (so the bits): greedily, the layer with
the largest gain goes to HIGH while the layers with the smallest harms that pay for it go to
LOW, as long as the gain exceeds the summed harms (the effects are taken as additive, which
the evaluation of the allocated cache then checks).

Output: OUT/layer-sensitivity.json (every row) and OUT/layer-sensitivity.md (the table and the
allocated `--kv` spec). Progress on stderr.

  scripts/layer_sensitivity.py [--base csr:8,coef=i6,alg=omp,recent=32,sink=4] [--low 4] [--high 16]
                               [--text calibration/plrabn12] [--ctx 1024] [--windows 1] [--processes 2]
                               [--bin .build/release/sparsekv] [--dict ...] [--out reports]

With the defaults: 61 caches of one window each, about 20-30 s each on one thread, so about
15 minutes on two cores.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

from bench_frontier import dict_json  # `sparsekv dict info --json`

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.environ.get("SPARSEKV_HOME", os.path.expanduser("~/.cache/sparsekv"))
DICT = os.path.join(ROOT, "dicts", "SmolLM2-135M-Instruct.Q4_1.csr.gguf")
EVAL_TEXTS = ["cfi-ch4", "alice29", "lcet10"]


def log(msg):
    print(f"[layer-sensitivity {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def key_pairs(spec):
    """The base spec's key pairs: csr:S (preset) or k=S."""
    items = spec.split(":", 1)[1].split(",")
    pairs = None
    for it in items:
        if it.isdigit():
            pairs = int(it)
        elif it.startswith("k="):
            pairs = int(it[2:])
    if pairs is None:
        sys.exit(f"error: {spec} names no key sparsity (csr:S or k=S)")
    return pairs


def layer_count(binary, dictionary):
    info = dict_json(binary, dictionary)
    return info["model"]["layerCount"], info


def run_eval(args, caches, results, index):
    text = os.path.join(HOME, "texts", args.text + ".txt")
    cmd = [args.bin, "eval", "--file", text, "--kv", *caches, "--ctx", str(args.ctx), "--chunks", str(args.windows),
           "--decode-batch", "1", "--json", "--threads", "1", "--dict", args.dict]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        results[index] = RuntimeError(f"{' '.join(cmd[:4])} ... exited with {p.returncode}:\n{p.stderr[-2000:]}")
        return
    rows = json.loads(p.stdout)[0]["results"]
    for spec, r in zip(caches, rows):
        r["spec"] = spec
    results[index] = (rows, round(time.time() - t0, 1), " ".join(cmd).replace(HOME, "~/.cache/sparsekv").replace(ROOT + "/", ""))


def allocate(layers, base, low, high, harm, gain):
    """Greedy exchange keeping the total key pairs: one layer up to `high` paid by layers
    down to `low`, while the gain exceeds the harms (see the module documentation)."""
    up, down = high - base, base - low
    if up % down != 0:
        sys.exit(f"error: {high} - {base} must be a multiple of {base} - {low}")
    per = up // down
    pairs = {L: base for L in range(layers)}
    gains = sorted(range(layers), key=lambda L: -gain[L])
    harms = sorted(range(layers), key=lambda L: harm[L])
    moves = []
    while gains and len(harms) >= per:
        g = gains[0]
        payers = [L for L in harms if L != g][:per]
        if len(payers) < per or gain[g] <= sum(harm[L] for L in payers):
            break
        pairs[g] = high
        for L in payers:
            pairs[L] = low
        moves.append((g, payers, gain[g], sum(harm[L] for L in payers)))
        gains = [L for L in gains if L != g and L not in payers]
        harms = [L for L in harms if L != g and L not in payers]
    return pairs, moves


def spec_with(base_spec, pairs, base):
    """The base spec plus k@ overrides for runs of layers with the same pairs."""
    items, L, n = [], 0, len(pairs)
    while L < n:
        M = L
        while M + 1 < n and pairs[M + 1] == pairs[L]:
            M += 1
        if pairs[L] != base:
            items.append(f"k@{L}={pairs[L]}" if L == M else f"k@{L}-{M}={pairs[L]}")
        L = M + 1
    return ",".join([base_spec] + items)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="csr:8,coef=i6,alg=omp,recent=32,sink=4")
    ap.add_argument("--low", type=int, default=4)
    ap.add_argument("--high", type=int, default=16)
    ap.add_argument("--text", default="calibration/plrabn12", help="under $SPARSEKV_HOME/texts, without .txt")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--windows", type=int, default=1)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "sparsekv"))
    ap.add_argument("--dict", default=DICT)
    ap.add_argument("--out", default=os.path.join(ROOT, "reports"))
    args = ap.parse_args()
    if os.path.basename(args.text) in EVAL_TEXTS:
        sys.exit(f"error: {args.text} is an evaluation text; measure the allocation on a calibration text")
    if not os.path.exists(args.bin):
        sys.exit(f"error: no {args.bin}; build it first (swift build -c release)")
    base = key_pairs(args.base)
    if not args.low < base < args.high:
        sys.exit(f"error: --low {args.low} < base {base} < --high {args.high} expected")
    layers, info = layer_count(args.bin, args.dict)
    caches = [args.base] + [f"{args.base},k@{L}={p}" for L in range(layers) for p in (args.low, args.high)]
    parts = [caches[i::args.processes] for i in range(args.processes)]
    log(f"{len(caches)} caches on {args.text} ({args.windows} window(s) of {args.ctx}, token by token) in {len(parts)} processes ...")
    results = [None] * len(parts)
    threads = [threading.Thread(target=run_eval, args=(args, part, results, i)) for i, part in enumerate(parts)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, Exception):
            sys.exit(f"error: {r}")
    rows = {r["spec"]: r for part in results for r in part[0]}
    kl = lambda s: rows[s]["meanKL"]
    k0 = kl(args.base)
    harm = [kl(f"{args.base},k@{L}={args.low}") - k0 for L in range(layers)]
    gain = [k0 - kl(f"{args.base},k@{L}={args.high}") for L in range(layers)]
    pairs, moves = allocate(layers, base, args.low, args.high, harm, gain)
    spec = spec_with(args.base, [pairs[L] for L in range(layers)], base)
    report = {"base": args.base, "low": args.low, "high": args.high, "text": args.text, "ctx": args.ctx,
              "windows": args.windows, "dictionary": {"path": os.path.relpath(args.dict, ROOT), "contentHash": info["contentHash"]},
              "baseKL": k0, "layers": [{"layer": L, "harm": harm[L], "gain": gain[L], "pairs": pairs[L]} for L in range(layers)],
              "moves": [{"up": g, "down": d, "gain": a, "harm": b} for g, d, a, b in moves], "allocated": spec,
              "rows": list(rows.values()), "commands": [r[2] for r in results], "seconds": round(time.time() - t0, 1),
              "finishedUTC": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "layer-sensitivity.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    lines = [f"# Key sparsity per layer: each layer's effect on KL ({args.base})", "",
             f"`scripts/layer_sensitivity.py --base {args.base} --low {args.low} --high {args.high} --text {args.text}`: "
             f"{args.windows} window(s) of {args.ctx} tokens of {args.text} (a calibration text of the dictionary "
             f"`{info['contentHash'][:8]}…`, no evaluation text), the scored half token by token, one thread per process, "
             f"{report['seconds']:.0f} s. Mean KL against fp32 of the base cache: {k0:.5f}.", "",
             f"harm = KL with layer L's keys at {args.low} pairs minus the base's; gain = the base's minus KL at {args.high} pairs.", "",
             "| layer | harm | gain | allocated pairs |", "|---:|---:|---:|---:|"]
    for L in range(layers):
        lines.append(f"| {L} | {harm[L]:+.5f} | {gain[L]:+.5f} | {pairs[L]} |")
    lines += ["", f"Allocated (the same total of key pairs): `{spec}`", ""]
    for g, d, a, b in moves:
        lines.append(f"- layer {g} to {args.high} pairs (gain {a:.5f}), layers {', '.join(map(str, d))} to {args.low} (harm {b:.5f})")
    with open(os.path.join(args.out, "layer-sensitivity.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    log(f"allocated: {spec}")
    print(spec)


if __name__ == "__main__":
    main()
