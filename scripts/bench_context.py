#!/usr/bin/env python3
"""Speed and memory against context length: every KV cache, and llama.cpp in the same run.

For each prompt length and each cache, one process runs

    sparsekv bench speed --prompt-tokens L --gen-tokens G --repeats R --kv K --threads 2 --json

(a prompt of L tokens cut from cfi-ch4, then G decoded tokens; one uncounted warm-up run,
R counted runs, medians; then one profiled decode run). From it the script records prefill
tok/s and decode tok/s (medians of R), the cache's bytes after L + G tokens, the decode-step
profile, and the process's peak RSS (ru_maxrss from os.wait4, which covers the whole
process: weights, cache, scratch). When llama-cpp-python is importable, llama.cpp runs the
same lengths, each length in its own process (this script with --llama-cell), with f16 K and
V, flash attention, 2 threads, the same tokens and the same repeats, right after our caches
at that length; ours/llama.cpp ratios are taken within the run.

Context cap: SmolLM2's context is 8192 tokens, and the cache must hold the prompt and the
decoded tokens, so a length L runs with a prompt of min(L, 8192 - G) tokens (8192 - 32 =
8160 with the default G); the report records the prompt length actually used.

Output: reports/speed.json (everything, incl. every run and the decode-step profile of each
cell; the profile at 4096 is singled out), reports/speed.md (a table per length) and
reports/speed.svg (decode and prefill tok/s against context, one line per cache plus
llama.cpp). Progress goes to stderr.

  scripts/bench_context.py [--lengths 512 2048 4096 8192] [--kv fp32 fp16 ...] [--repeats 3]
                           [--rounds 1] [--gen-tokens 32] [--bin .build/release/sparsekv] [--out reports]

--rounds N runs each length's cells (our caches, then llama.cpp) N times in turn, each time a
fresh process with its warm-up, R counted runs and its profiled run, and reports per cell the
median of all N * R counted runs (the profile: the mean of its N profiled runs; peak RSS: the
largest). This VM's speed drifts by 10-25% over minutes; in turns, a slow phase falls on every
cell of a round instead of on whichever cells ran in it, so the comparisons within a length
(csr:8 against fp16, ours against llama.cpp) are fairer. `--rounds 3 --repeats 1` took 45
minutes on the 2-core Xeon where a `--repeats 3` run took 25 (each process also prefills for
its warm-up and its profile). A length or cache given twice counts once.

`make bench-context` runs the defaults. Measure on an idle machine: with other processes
competing for the 2 cores the figures mean little (the load average is recorded). The full
run takes on the order of an hour on a 2-core machine, most of it prefilling 8192 tokens
(R + 2 prefills per cache: warm-up, R counted, profiled).
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

from bench_bandwidth import machine  # CPU model and core count, as the other reports name it

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.environ.get("SPARSEKV_HOME", os.path.expanduser("~/.cache/sparsekv"))
MODEL = os.path.join(HOME, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DICT = os.path.join(ROOT, "dicts", "SmolLM2-135M-Instruct.Q4_1.csr.gguf")
TEXT = os.path.join(HOME, "texts", "cfi-ch4.txt")
CONTEXT = 8192  # llama.context_length of the model
THREADS = 2
LENGTHS = [512, 2048, 4096, 8192]
CACHES = ["fp32", "fp16", "kivi4", "csr:16,coef=i8", "csr:8,coef=i8"]
PROFILE_LENGTH = 4096


def log(msg):
    print(f"[bench-context {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_measured(cmd):
    """Runs cmd to completion (stderr passes through); returns (stdout, peak RSS in kB, seconds)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT)
    out = p.stdout.read()
    p.stdout.close()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {p.returncode}")
    return out.decode(), usage.ru_maxrss, time.perf_counter() - t  # ru_maxrss is in kB on Linux


def prompt_length(length, gen):
    return min(length, CONTEXT - gen)


def ours(args, length, kv):
    cmd = [args.bin, "bench", "speed", "--prompt-tokens", str(prompt_length(length, args.gen_tokens)),
           "--gen-tokens", str(args.gen_tokens), "--repeats", str(args.repeats), "--kv", kv,
           "--threads", str(THREADS), "--json"]
    if kv.lower().startswith("csr") and os.path.exists(DICT):
        cmd += ["--dict", DICT]
    out, rss, seconds = run_measured(cmd)
    r = json.loads(out)
    return {"engine": "sparsekv", "length": length, "kv": kv, "promptTokens": r["promptTokens"],
            "genTokens": r["genTokens"], "repeats": r["repeats"],
            "prefillTokensPerSecond": r["prefillTokensPerSecond"], "decodeTokensPerSecond": r["decodeTokensPerSecond"],
            "prefillRuns": r["prefillRuns"], "decodeRuns": r["decodeRuns"],
            "kvCacheBytes": r.get("kvCacheBytes"), "kvCache": r.get("kvCache", kv),
            "peakRSSkB": rss, "decodeProfile": r["decodeProfile"],
            "decodeStepMilliseconds": r["decodeStepMilliseconds"], "threads": r["threads"],
            "blasCore": r["blasCore"], "seconds": round(seconds, 1)}


def merged(rounds):
    """One cell from its rounds (the same command run len(rounds) times): every counted run
    pooled for the medians, the profile averaged, the largest peak RSS."""
    if len(rounds) == 1:
        return rounds[0]
    r = dict(rounds[0])
    for key in ("prefillRuns", "decodeRuns"):
        r[key] = [x for one in rounds for x in one[key]]
    r["prefillTokensPerSecond"] = statistics.median(r["prefillRuns"])
    r["decodeTokensPerSecond"] = statistics.median(r["decodeRuns"])
    r["repeats"] = len(r["decodeRuns"])
    r["rounds"] = len(rounds)
    r["peakRSSkB"] = max(one["peakRSSkB"] for one in rounds)
    r["seconds"] = round(sum(one["seconds"] for one in rounds), 1)
    if "decodeProfile" in r:
        r["decodeStepMillisecondsRounds"] = [one["decodeStepMilliseconds"] for one in rounds]
        r["decodeStepMilliseconds"] = statistics.mean(r["decodeStepMillisecondsRounds"])
        parts = {p for one in rounds for p in one["decodeProfile"]}
        r["decodeProfile"] = {p: statistics.mean(one["decodeProfile"].get(p, 0) for one in rounds) for p in parts}
    return r


def llama_available():
    try:
        import llama_cpp  # noqa: F401
        return True
    except ImportError:
        return False


def llama(args, length):
    cmd = [sys.executable, os.path.abspath(__file__), "--llama-cell", str(length), "--gen-tokens", str(args.gen_tokens),
           "--repeats", str(args.repeats)]
    out, rss, seconds = run_measured(cmd)
    r = json.loads(out)
    r.update({"engine": "llama.cpp", "length": length, "kv": "llama.cpp f16", "peakRSSkB": rss,
              "seconds": round(seconds, 1)})
    return r


def llama_cell(length, gen, repeats):
    """One llama.cpp cell, in this (fresh) process: prints its JSON on stdout."""
    sys.path.insert(0, os.path.join(ROOT, "scripts", "reference"))
    import llama_cpp
    import make_reference as ref  # its make_llama: f16 K/V, flash attention, 2 threads, n_ubatch 512

    text = open(TEXT, "rb").read().decode("utf-8")
    tok = llama_cpp.Llama(model_path=MODEL, vocab_only=True, verbose=False)
    ids = tok.tokenize(text.encode(), add_bos=False, special=False)
    del tok
    n = prompt_length(length, gen)
    prompt, feed = ids[:n], ids[n:n + gen]  # decode feeds fixed tokens; their values do not matter
    n_ctx = n + gen
    llm = ref.make_llama(MODEL, n_ctx, logits_all=False, flash_attn=True, n_batch=n)
    ctx = llm._ctx.ctx

    def run():
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        llama_cpp.llama_synchronize(ctx)
        t1 = time.perf_counter()
        for tk in feed:
            llm.eval([tk])
            llama_cpp.llama_synchronize(ctx)
        return n / (t1 - t), gen / (time.perf_counter() - t1)

    run()  # warm-up: page in the weights, size the compute buffers
    runs = [run() for _ in range(repeats)]
    md = llm.metadata
    layers = int(md.get("llama.block_count", 30))
    heads, kv_heads = int(md.get("llama.attention.head_count", 9)), int(md.get("llama.attention.head_count_kv", 3))
    kv_dim = int(md.get("llama.embedding_length", 576)) // heads * kv_heads
    llm.close()
    print(json.dumps({
        "promptTokens": n, "genTokens": gen, "repeats": repeats,
        "prefillTokensPerSecond": statistics.median(r[0] for r in runs),
        "decodeTokensPerSecond": statistics.median(r[1] for r in runs),
        "prefillRuns": [r[0] for r in runs], "decodeRuns": [r[1] for r in runs],
        # K and V in f16 for every layer, as allocated for n_ctx (llama.cpp may pad n_ctx up).
        "kvCacheBytes": layers * n_ctx * kv_dim * 2 * 2, "kvCacheBytesNote": "f16 K and V allocated for n_ctx",
        "nCtx": n_ctx, "threads": ref.N_THREADS, "llamaCppPython": llama_cpp.__version__,
    }))


# MARK: - Reports

def ratio(a, b):
    return a / b if a and b else None


def add_ratios(rows):
    base = {r["length"]: r for r in rows if r["engine"] == "llama.cpp"}
    for r in rows:
        b = base.get(r["length"])
        if r["engine"] == "sparsekv" and b:
            r["prefillRatio"] = ratio(r["prefillTokensPerSecond"], b["prefillTokensPerSecond"])
            r["decodeRatio"] = ratio(r["decodeTokensPerSecond"], b["decodeTokensPerSecond"])


def markdown(report):
    rows = report["rows"]
    have_llama = any(r["engine"] == "llama.cpp" for r in rows)
    lines = ["# Speed and memory against context length", "",
             f"Measured on {report['machine']} with `scripts/bench_context.py` ({THREADS} threads; "
             f"{report['genTokens']} decoded tokens after the prompt; "
             + (f"medians of {report['repeats']} runs after a warm-up; " if report.get("rounds", 1) == 1 else
                f"{report['rounds']} rounds, each running every cell of a length in turn (a process with a warm-up, "
                f"{report['repeats']} counted run(s) and a profiled run): medians of the {report['rounds'] * report['repeats']} "
                "counted runs, profiles averaged over the rounds; ")
             + f"load average before/after {report['loadavgBefore']} / {report['loadavgAfter']}). Each cell is its own process; "
             "peak RSS is its ru_maxrss; llama.cpp runs right after our caches at each length"
             + (" (in each round)" if report.get("rounds", 1) > 1 else "") + ". KV bytes: the cache after prompt + decoded tokens"
             + ("; llama.cpp's are its f16 K/V allocated for n_ctx = prompt + decoded tokens, and its peak RSS "
                "includes the Python interpreter (llama-cpp-python)." if have_llama else
                ". llama-cpp-python was not installed: no llama.cpp baseline in this run."), ""]
    for length in report["lengths"]:
        rs = [r for r in rows if r["length"] == length]
        if not rs:
            continue
        lines += [f"## {length} tokens" + (f" (prompt {rs[0]['promptTokens']}, capped to fit the {CONTEXT}-token context)"
                                          if rs[0]["promptTokens"] != length else ""), "",
                  "| KV cache | prefill tok/s | decode tok/s | KV bytes | peak RSS |"
                  + (" prefill vs llama.cpp | decode vs llama.cpp |" if have_llama else ""),
                  "|---|---:|---:|---:|---:|" + ("---:|---:|" if have_llama else "")]
        for r in rs:
            kvb = f"{r['kvCacheBytes'] / 1e6:,.1f} MB" if r.get("kvCacheBytes") is not None else "—"
            cells = [r["kv"], f"{r['prefillTokensPerSecond']:,.1f}", f"{r['decodeTokensPerSecond']:,.1f}", kvb,
                     f"{r['peakRSSkB'] / 1024:,.0f} MB"]
            if have_llama:
                cells += [f"{r['prefillRatio']:.2f}x" if r.get("prefillRatio") else "—",
                          f"{r['decodeRatio']:.2f}x" if r.get("decodeRatio") else "—"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    prof = report.get("decodeProfileAt")
    if prof:
        lines += [f"## Decode-step profile at {prof['length']} tokens", "",
                  "| KV cache | ms/step | " + " | ".join(prof["parts"]) + " |",
                  "|---|---:|" + "---:|" * len(prof["parts"])]
        for kv, p in prof["caches"].items():
            lines.append(f"| {kv} | {p['decodeStepMilliseconds']:.2f} | "
                         + " | ".join(f"{100 * p['shares'].get(part, 0):.1f}%" for part in prof["parts"]) + " |")
        lines.append("")
    return "\n".join(lines)


def svg(report):
    """Two panels against context length (log2 axis): decode tok/s and prefill tok/s."""
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    rows = report["rows"]
    names = list(dict.fromkeys(r["kv"] for r in rows))
    lengths = sorted({r["length"] for r in rows})
    W, H, m, gap = 1000, 420, 70, 70
    pw, ph = (W - 2 * m - gap) / 2, H - 2 * m

    def sx(x0, c):
        span = math.log2(lengths[-1]) - math.log2(lengths[0])
        return x0 + (pw / 2 if span == 0 else (math.log2(c) - math.log2(lengths[0])) / span * pw)

    def panel(x0, title, field):
        peak = max((r[field] for r in rows), default=1) or 1
        step = next(f * 10 ** e for e in range(math.floor(math.log10(peak / 5)), 9) for f in (1, 2, 5)
                    if f * 10 ** e >= peak / 5)  # a round tick step, at most 5 steps to the top
        top = step * math.ceil(peak / step)
        sy = lambda v: m + ph - v / top * ph  # noqa: E731
        out = [f'<text x="{x0 + pw / 2:.1f}" y="{m - 25}" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>',
               f'<rect x="{x0:.1f}" y="{m}" width="{pw:.1f}" height="{ph}" fill="none" stroke="#999"/>']
        for i in range(round(top / step) + 1):
            v = step * i
            out.append(f'<line x1="{x0:.1f}" x2="{x0 + pw:.1f}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{x0 - 6:.1f}" y="{sy(v) + 4:.1f}" text-anchor="end" font-size="11">{v:,g}</text>')
        for c in lengths:
            out.append(f'<text x="{sx(x0, c):.1f}" y="{m + ph + 18}" text-anchor="middle" font-size="11">{c}</text>')
        out.append(f'<text x="{x0 + pw / 2:.1f}" y="{m + ph + 38}" text-anchor="middle" font-size="12">context (prompt tokens)</text>')
        out.append(f'<text x="{x0 - 50:.1f}" y="{m + ph / 2:.1f}" text-anchor="middle" font-size="12" '
                   f'transform="rotate(-90 {x0 - 50:.1f} {m + ph / 2:.1f})">tokens/s</text>')
        for i, name in enumerate(names):
            pts = sorted((r["length"], r[field]) for r in rows if r["kv"] == name)
            color = "#000" if name.startswith("llama.cpp") else colors[i % len(colors)]
            dash = ' stroke-dasharray="6,4"' if name.startswith("llama.cpp") else ""
            d = " ".join(f"{'M' if j == 0 else 'L'}{sx(x0, c):.1f},{sy(v):.1f}" for j, (c, v) in enumerate(pts))
            out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            out += [f'<circle cx="{sx(x0, c):.1f}" cy="{sy(v):.1f}" r="3" fill="{color}"/>' for c, v in pts]
        return out

    legend_rows = (len(names) + 3) // 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 20 + 18 * legend_rows}" font-family="sans-serif">',
             '<rect width="100%" height="100%" fill="white"/>']
    parts += panel(m, "Decode tok/s against context", "decodeTokensPerSecond")
    parts += panel(m + pw + gap, "Prefill tok/s against context", "prefillTokensPerSecond")
    for i, name in enumerate(names):
        x, y = m + (i % 4) * 220, H + 10 + 18 * (i // 4)
        color = "#000" if name.startswith("llama.cpp") else colors[i % len(colors)]
        parts.append(f'<rect x="{x}" y="{y - 9}" width="14" height="4" fill="{color}"/>')
        parts.append(f'<text x="{x + 20}" y="{y - 3}" font-size="12">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def profile_at(rows, length):
    cells = {r["kv"]: r for r in rows if r["engine"] == "sparsekv" and r["length"] == length}
    if not cells:
        return None
    parts = sorted({p for r in cells.values() for p in r["decodeProfile"]},
                   key=lambda p: -max(r["decodeProfile"].get(p, 0) for r in cells.values()))
    return {"length": length, "parts": parts,
            "caches": {kv: {"decodeStepMilliseconds": r["decodeStepMilliseconds"], "shares": r["decodeProfile"]}
                       for kv, r in cells.items()}}


def main():
    ap = argparse.ArgumentParser(description="Prefill/decode tok/s, KV bytes and peak RSS against context length, "
                                             "every KV cache and llama.cpp (reports/speed.{json,md,svg}).")
    ap.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    ap.add_argument("--kv", nargs="+", default=CACHES)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="run each length's cells in turn this many times, fresh processes each time, and pool the "
                         "counted runs (default 1)")
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "sparsekv"))
    ap.add_argument("--out", default=os.path.join(ROOT, "reports"))
    ap.add_argument("--no-llama", action="store_true", help="skip llama.cpp even when llama-cpp-python is installed")
    ap.add_argument("--llama-cell", type=int, help=argparse.SUPPRESS)  # internal: one llama.cpp cell
    args = ap.parse_args()
    if args.repeats < 1 or args.rounds < 1 or args.gen_tokens < 1 or args.gen_tokens >= CONTEXT or any(n < 1 for n in args.lengths):
        ap.error("--repeats, --rounds, --gen-tokens and --lengths must be >= 1 (and --gen-tokens < the context)")
    if args.llama_cell is not None:
        llama_cell(args.llama_cell, args.gen_tokens, args.repeats)
        return
    # A cell's rounds are pooled by (length, cache): a repeated one would be pooled as more rounds.
    args.lengths, args.kv = list(dict.fromkeys(args.lengths)), list(dict.fromkeys(args.kv))
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"error: {args.bin} not found; build it first (swift build -c release, or make build)")

    with_llama = not args.no_llama and llama_available()
    if not with_llama:
        log("llama.cpp: " + ("skipped (--no-llama)" if args.no_llama else "llama-cpp-python not installed; no baseline in this run"))
    t0, load_before = time.time(), os.getloadavg()
    # llama.cpp's cell right after ours at each length: this VM's speed drifts by 10-25% within
    # the hour a run takes, and a ratio should compare cells measured minutes apart, not 40.
    # With --rounds, each length's cells run in turn, round after round.
    kvs = list(args.kv) + ([None] if with_llama else [])
    cells = [(L, rnd, kv) for L in args.lengths for rnd in range(args.rounds) for kv in kvs]
    done = {}
    for i, (length, rnd, kv) in enumerate(cells):
        name = kv or "llama.cpp"
        turn = f", round {rnd + 1}/{args.rounds}" if args.rounds > 1 else ""
        log(f"[{i + 1}/{len(cells)}] {length} tokens, {name}{turn} ...")
        r = ours(args, length, kv) if kv else llama(args, length)
        done.setdefault((length, name), []).append(r)
        log(f"[{i + 1}/{len(cells)}] {length} tokens, {name}{turn}: prefill {r['prefillTokensPerSecond']:.1f} tok/s, "
            f"decode {r['decodeTokensPerSecond']:.1f} tok/s, KV {(r.get('kvCacheBytes') or 0) / 1e6:.1f} MB, "
            f"peak RSS {r['peakRSSkB'] / 1024:.0f} MB ({r['seconds']:.0f} s)")
    rows = [merged(rounds) for rounds in done.values()]
    order = {L: i for i, L in enumerate(args.lengths)}
    rows.sort(key=lambda r: (order[r["length"]], r["engine"] != "sparsekv"))
    add_ratios(rows)
    report = {
        "machine": machine(), "threads": THREADS, "lengths": args.lengths, "caches": args.kv,
        "genTokens": args.gen_tokens, "repeats": args.repeats, "rounds": args.rounds, "context": CONTEXT,
        "loadavgBefore": [round(x, 2) for x in load_before], "loadavgAfter": [round(x, 2) for x in os.getloadavg()],
        "llamaCpp": with_llama, "rows": rows,
        "decodeProfileAt": profile_at(rows, PROFILE_LENGTH if PROFILE_LENGTH in args.lengths else args.lengths[-1]),
        "measuredUTC": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(time.time() - t0, 1),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "speed.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "speed.md"), "w") as f:
        f.write(markdown(report) + "\n")
    with open(os.path.join(args.out, "speed.svg"), "w") as f:
        f.write(svg(report))
    log(f"wrote {args.out}/speed.json, .md and .svg in {report['seconds']} s")
    print(markdown(report))


if __name__ == "__main__":
    main()
