#!/usr/bin/env python3
"""The quality frontier of issue 11: perplexity increase against bits per channel, every KV cache.

Protocol (the issue's): for each text, one process runs

    sparsekv eval --file TEXT --kv K1 K2 ... --ctx 1024 --chunks 6 --decode-batch 1 --json --threads 1 --dict DICT

llama-perplexity windows (non-overlapping, each from an empty cache), the first half of each
window prefilled at once, the scored half fed token by token (--decode-batch 1), every cache
against the fp32 cache on the same windows. Texts: cfi-ch4 (chapter 4 of cfi-en), alice29
and lcet10 (Canterbury corpus, from the brotli sdist), none of them seen by the dictionary,
whose calibration texts (its training metadata, printed in the report) are none of them. Plus one row set at ctx 4096 on
cfi-ch4 (--long-windows windows).

Resumable: every finished eval process is merged at once into OUT/frontier-runs/<text>-ctx<N>.json
(the caches already there for the same windows and dictionary are skipped on the next start),
so an interrupted run loses only the process under way. --group N splits a text's caches
into processes of N caches (each process re-runs the fp32 reference: more work, less to lose).
Each run's fp32 perplexity is recovered from its rows and checked to agree across processes.

Output: OUT/frontier.json (everything), OUT/frontier.md (a table per text and context, the
commands, where each CSR point stands against the issue's targets) and OUT/frontier.svg
(perplexity increase against bits/channel, one panel per text and context). Progress goes
to stderr.

  scripts/bench_frontier.py [--texts cfi-ch4 alice29 lcet10] [--kv fp16 kivi8 ...] [--windows 6]
                            [--long-windows 1] [--long-kv ...] [--no-long] [--group N]
                            [--report-only] [--bin .build/release/sparsekv] [--out reports]

`make bench-frontier` runs the defaults: on one thread, about 20-45 s per window per cache at
ctx 1024, so roughly 35 minutes per text, plus the ctx 4096 rows.
llama.cpp's q8_0/q4_0 KV points come from scripts/llama_frontier.py (same windows, its own
f16 cache as their reference); the reports include them when its files are there.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

from bench_bandwidth import machine  # CPU model and core count, as the other reports name it
from bench_bandwidth import ALLOC8 as KEYS8, ALLOC16 as KEYS16, ALLOC20 as KEYS20, ALLOC9 as KEYS9, ALLOC9S as KEYS9S, ALLOC6S as KEYS6S, ALLOC7S as KEYS7S, ALLOC5S as KEYS5S  # the per-layer key pairs, one copy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.environ.get("SPARSEKV_HOME", os.path.expanduser("~/.cache/sparsekv"))
DICT = os.path.join(ROOT, "dicts", "SmolLM2-135M-Instruct.Q4_1.csr.gguf")
TEXTS = ["cfi-ch4", "alice29", "lcet10"]
# The coding that reaches ~5 bits token by token (OMP, 6-bit coefficients, the 32 latest and
# 4 first tokens in fp16) at 16, 8 and 4 key pairs, and the larger buffers that still fit
# under 5 and 3 bits (48 tokens at 16 pairs, 40 at 8; buffered tokens are not coded); plain
# int8 MP at 16 and 8 pairs as the baseline it improves on; one error-targeted point; the
# KIVI baselines and fp16.
# Key pairs allocated per layer by scripts/layer_sensitivity.py (reports/layer-sensitivity.md,
# measured at CSR-8 on a calibration text): the same total of pairs as CSR-8, and that
# ranking carried over to CSR-16 (the six layers raised to 24 pairs, the twelve lowered to 12).
ALLOC8 = "csr:8,coef=i6,alg=omp,recent=32,sink=4," + KEYS8
ALLOC16 = "csr:16,coef=i6,alg=omp,recent=48,sink=4," + KEYS16
# Indices stored as Rice-coded gaps of sorted rows (ec=gaps: 0.5 bits/ch less at 16 pairs),
# alone, and with the bits it frees spent on 4 more key pairs per layer on average.
GAPS16 = "csr:16,coef=i6,alg=omp,recent=56,sink=4,ec=gaps"
GAPS20 = "csr:k=20,v=8,coef=i6,alg=omp,recent=56,sink=4,ec=gaps," + KEYS20
GAPS10 = "csr:k=10,v=4,coef=i6,alg=omp,recent=40,sink=4,ec=gaps"
# The buffer's rows as int8 with a scale per head vector (buffer=i8: 8.25 bits/ch instead of 16):
# GAPS20 with the bits that saves; under 3 bits a buffer 2.4x as long, or 2x as long with one key
# pair moved to the values (5 per 32-channel chunk); about 2 bits, 6 and 2 pairs.
GAPS20I8 = GAPS20 + ",buffer=i8"
GAPS10I8 = "csr:k=10,v=4,coef=i6,alg=omp,recent=96,buffer=i8,sink=4,ec=gaps"
GAPS9I8 = "csr:k=9,v=5,coef=i6,alg=omp,recent=80,buffer=i8,sink=4,ec=gaps"
GAPS6I8 = "csr:k=6,v=2,coef=i6,alg=omp,recent=48,buffer=i8,sink=4,ec=gaps"
# GAPS9I8 with its key pairs allocated per layer (the same total), gently and steeply; the steep
# one with 2 sink tokens instead of 4 and the bits that frees and the rest up to 3 bits spent on
# the buffer (91 and 93 tokens).
GAPS9I8K = GAPS9I8 + "," + KEYS9
GAPS9I8KS = GAPS9I8 + "," + KEYS9S
GAPS9I8KS91 = "csr:k=9,v=5,coef=i6,alg=omp,recent=91,buffer=i8,sink=2,ec=gaps," + KEYS9S
GAPS9I8KS93 = "csr:k=9,v=5,coef=i6,alg=omp,recent=93,buffer=i8,sink=2,ec=gaps," + KEYS9S
# GAPS6I8 (about 2 bits) with its key pairs allocated as GAPS9I8KS, scaled; then 2 sink tokens
# and a 64-token buffer (1.97 bits).
GAPS6I8KS = GAPS6I8 + "," + KEYS6S
GAPS6I8KS64 = "csr:k=6,v=2,coef=i6,alg=omp,recent=64,buffer=i8,sink=2,ec=gaps," + KEYS6S
# One key pair on average traded for about 13 buffer tokens, either way.
GAPS7I8KS32 = "csr:k=7,v=2,coef=i6,alg=omp,recent=32,buffer=i8,sink=2,ec=gaps," + KEYS7S
GAPS5I8KS77 = "csr:k=5,v=2,coef=i6,alg=omp,recent=77,buffer=i8,sink=2,ec=gaps," + KEYS5S
# The coefficients and their scales Huffman-coded too (ec=gaps+coef: the same perplexity in fewer
# bits): GAPS20I8 and GAPS9I8KS91 as they are; under 3 bits the bits it frees spent on a sixth value
# pair per chunk and a 110-token buffer; about 2 bits, 5 key pairs (KEYS5S) and 4 value pairs.
COEF20I8 = GAPS20I8.replace("ec=gaps", "ec=gaps+coef")
COEF9I8KS91 = GAPS9I8KS91.replace("ec=gaps", "ec=gaps+coef")
COEF9V6 = "csr:k=9,v=6,coef=i6,alg=omp,recent=110,buffer=i8,sink=2,ec=gaps+coef," + KEYS9S
COEF5V4 = "csr:k=5,v=4,coef=i6,alg=omp,recent=56,buffer=i8,sink=2,ec=gaps+coef," + KEYS5S
CACHES = ["fp16", "kivi8", "kivi4", "kivi2",
          "csr:16,coef=i8", "csr:8,coef=i8",
          "csr:16,coef=i6,alg=omp,recent=32,sink=4", "csr:8,coef=i6,alg=omp,recent=32,sink=4",
          "csr:4,coef=i6,alg=omp,recent=32,sink=4",
          "csr:16,coef=i6,alg=omp,recent=48,sink=4", "csr:8,coef=i6,alg=omp,recent=40,sink=4",
          ALLOC16, ALLOC8,
          "csr:err=0.04,coef=i8,guard=0",
          "csr:16,coef=i6,alg=omp,recent=56,sink=4", "csr:16,coef=i6,alg=omp,recent=56,sink=4," + KEYS16,
          GAPS16, GAPS20, GAPS10, GAPS20I8, GAPS10I8, GAPS9I8, GAPS6I8, GAPS9I8K, GAPS9I8KS, GAPS9I8KS91, GAPS9I8KS93,
          GAPS6I8KS, GAPS6I8KS64, GAPS7I8KS32, GAPS5I8KS77, COEF20I8, COEF9I8KS91, COEF9V6, COEF5V4]
LONG_TEXT, LONG_CTX = "cfi-ch4", 4096
LONG_CACHES = ["fp16", "kivi4", "kivi2", "csr:8,coef=i8",
               "csr:16,coef=i6,alg=omp,recent=32,sink=4", "csr:8,coef=i6,alg=omp,recent=32,sink=4",
               "csr:16,coef=i6,alg=omp,recent=48,sink=4", ALLOC16, ALLOC8, GAPS20, GAPS20I8, COEF9V6, COEF5V4]
THREADS = 1
PROTOCOL_CTX, PROTOCOL_WINDOWS = 1024, 6
# The targets: at most this many bits/channel, at most this perplexity increase.
TARGETS = [(2.0, 0.10), (3.0, 0.03), (5.0, 0.01)]


def log(msg):
    print(f"[bench-frontier {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def family(cache):
    """Series of a cache on the chart: fp16, KIVI, CSR fixed sparsity, CSR err= (error-targeted)."""
    c = cache.lower()
    if c.startswith("kivi"):
        return "KIVI"
    if c.startswith("csr"):
        return "CSR err=" if "err=" in c else "CSR"
    if c.startswith("llama.cpp"):
        return "llama.cpp"
    return c


def short(cache):
    """A point's label on the chart: csr:k=16,v=4,coef=i8 -> CSR k16 v4, csr:err=0.04,coef=i8,guard=0 -> err=0.04."""
    c = cache.lower()
    if not c.startswith("csr:"):
        return c
    parts = [p for p in c[4:].split(",") if p not in ("coef=i8", "guard=0")]
    layered = any(p.startswith(("k@", "v@")) for p in parts)
    parts = [p.replace("alg=", "").replace("k=", "k").replace("v=", "v") for p in parts if not p.startswith(("k@", "v@"))]
    parts += ["per layer"] if layered else []
    return ("" if parts[0].startswith("err=") else "CSR-" if parts[0].isdigit() else "CSR ") + " ".join(parts)


def windows(n):
    return f"{n} window" + ("" if n == 1 else "s")


def target_for(bits):
    """(bound in bits, allowed increase) of the tightest target a point at `bits` falls under, or None."""
    return next(((b, t) for b, t in TARGETS if bits <= b), None)


# MARK: - Runs

def run_path(out, text, ctx):
    return os.path.join(out, "frontier-runs", f"{text}-ctx{ctx}.json")


def load_run(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def dict_json(binary, dictionary):
    """`sparsekv dict info --json` of a dictionary file."""
    r = subprocess.run([binary, "dict", "info", dictionary, "--json"], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"error: sparsekv dict info {dictionary} failed:\n{r.stderr.strip()}")
    return json.loads(r.stdout)


def dict_info(binary, dictionary):
    info = dict_json(binary, dictionary)
    return {"path": os.path.relpath(dictionary, ROOT), "contentHash": info["contentHash"],
            "keyMetric": info.get("keyMetric", {}).get("kind"), "training": info.get("training", {})}


def calibration(info):
    """The dictionary's calibration texts from its training metadata; refuses one that
    names an evaluation text."""
    corpus = info["training"].get("corpus", "")
    names = [os.path.splitext(n)[0] for n in corpus.split(",") if n]
    if any(n in TEXTS for n in names):
        sys.exit(f"error: the dictionary was calibrated on {corpus}, which holds an evaluation text")
    return (f"{corpus} ({info['training'].get('tokens', '?')} tokens)" if corpus else "unknown text (no training metadata)")


def eval_command(args, text, ctx, windows, caches):
    return [args.bin, "eval", "--file", os.path.join(HOME, "texts", f"{text}.txt"), "--kv", *caches,
            "--ctx", str(ctx), "--chunks", str(windows), "--decode-batch", "1", "--json",
            "--threads", str(THREADS), "--dict", args.dict]


def shown(cmd):
    """A command as a reader would type it: home and repository paths shortened, specs quoted when needed."""
    out = []
    for a in cmd:
        a = a.replace(HOME, "~/.cache/sparsekv").replace(ROOT + "/", "")
        out.append(a)
    return " ".join(out)


def run_unit(args, info, text, ctx, windows, caches):
    """Runs the caches of one text and context not yet in its run file, merging each process's rows."""
    path = run_path(args.out, text, ctx)
    run = load_run(path)
    if run and (run["windowsRequested"] != windows or run["dictionary"]["contentHash"] != info["contentHash"]):
        log(f"{text} ctx {ctx}: {path} holds another window count or dictionary; starting it afresh")
        run = None
    if run is None:
        run = {"text": text, "ctx": ctx, "windowsRequested": windows, "dictionary": info, "processes": [], "rows": []}
    done = {r["spec"] for r in run["rows"]}
    todo = [c for c in caches if c not in done]
    if not todo:
        log(f"{text} ctx {ctx}: all {len(caches)} caches already measured ({path})")
        return run
    groups = [todo[i:i + args.group] for i in range(0, len(todo), args.group)] if args.group else [todo]
    for g in groups:
        cmd = eval_command(args, text, ctx, windows, g)
        log(f"{text} ctx {ctx}, {windows} windows: {', '.join(g)} ...")
        t0, load = time.time(), os.getloadavg()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, text=True)  # stderr (progress) passes through
        out = p.stdout.read()
        if p.wait() != 0:
            sys.exit(f"error: {shown(cmd)} exited with {p.returncode}")
        result = json.loads(out)[0]
        rows = result["results"]
        for spec, r in zip(g, rows):  # rows come in --kv order; eval prints canonical names (csr:16 = csr:k=16,v=8)
            r["spec"] = spec
        # fp32 perplexity of the windows, recovered from each row: ppl = ppl32 * (1 + change).
        ref = [r["perplexity"] / (1 + r["relativeChange"]) for r in rows]
        fp32 = sum(ref) / len(ref)
        if run.get("fp32Perplexity") is not None and abs(fp32 - run["fp32Perplexity"]) > 1e-6 * fp32:
            log(f"warning: fp32 perplexity {fp32:.6f} differs from the earlier process's {run['fp32Perplexity']:.6f}")
        run["fp32Perplexity"] = fp32
        run.update({"file": result["file"], "tokens": result["tokens"], "windows": rows[0]["windows"],
                    "tokensScored": rows[0]["tokensScored"]})
        seconds = time.time() - t0
        run["processes"].append({"command": shown(cmd), "caches": g, "seconds": round(seconds, 1), "machine": machine(),
                                 "script": shown(["scripts/bench_frontier.py"] + sys.argv[1:]),
                                 "loadavgBefore": [round(x, 2) for x in load],
                                 "loadavgAfter": [round(x, 2) for x in os.getloadavg()],
                                 "startedUTC": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
                                 "finishedUTC": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        run["rows"] += rows
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".part", "w") as f:
            json.dump(run, f, indent=1)
            f.write("\n")
        os.replace(path + ".part", path)
        for r in rows:
            log(f"  {text} ctx {ctx} {r['spec']}: {r['bitsPerChannel']:.3f} bits/ch, ppl {r['perplexity']:.4f} "
                f"({100 * r['relativeChange']:+.2f}%), KL {r['meanKL']:.5f}, {r['seconds']:.0f} s")
        log(f"{text} ctx {ctx}: process done in {seconds:.0f} s, merged into {path}")
    return run


# MARK: - Reports

def ordered_rows(run, caches):
    order = {c: i for i, c in enumerate(caches)}
    return sorted(run["rows"], key=lambda r: (order.get(r["spec"], len(order)), r["bitsPerChannel"]))


def verdict(r):
    t = target_for(r["bitsPerChannel"])
    if t is None:
        return "no target (> 5 bits)"
    bound, allowed = t
    change = r["relativeChange"]
    if change <= allowed:
        return f"**meets** ≤ {100 * allowed:g}% (≤ {bound:g} bits)"
    return f"misses ≤ {100 * allowed:g}% (≤ {bound:g} bits) by {100 * (change - allowed):.1f} points"


def summary(runs, csr):
    """Plain sentences: which CSR points meet their target where, and the gap of the others."""
    met, gaps = [], []
    for c in csr:
        rows = [(run, r) for run in runs for r in run["rows"] if r["spec"] == c]
        judged = [(run, r, target_for(r["bitsPerChannel"])) for run, r in rows]
        judged = [(run, r, t) for run, r, t in judged if t]
        if not judged:
            continue
        ok = [f"{run['text']} ctx {run['ctx']}" for run, r, t in judged if r["relativeChange"] <= t[1]]
        if ok:
            met.append(f"`{c}` on {', '.join(ok)}")
        miss = [(100 * r["relativeChange"], 100 * t[1]) for run, r, t in judged if r["relativeChange"] > t[1]]
        if miss:
            lo, hi = min(miss), max(miss)
            bits = sorted({f"{r['bitsPerChannel']:.2f}" for run, r, t in judged}, key=float)
            gaps.append(f"`{c}` ({' to '.join([bits[0], bits[-1]] if len(bits) > 1 else bits)} bits/ch, target {lo[1]:g}%) is at "
                        + (f"{lo[0]:+.1f}%" if lo == hi else f"{lo[0]:+.1f}% to {hi[0]:+.1f}%")
                        + f": {lo[0] / lo[1]:.1f}" + ("" if lo == hi else f" to {hi[0] / hi[1]:.1f}")
                        + " times the allowed increase")
    out = ["**Where CSR stands:** " + ("no CSR point meets its target on any row set." if not met else
                                       "meets its target: " + "; ".join(met) + ".")]
    if gaps:
        out += ["Misses: " + "; ".join(gaps) + "."]
    return out + [""]


def measured_on(report):
    """The machines the eval processes recorded (processes from before they did so count as the report's)."""
    seen = {}
    for run in report["runs"]:
        for p in run["processes"]:
            m = p.get("machine", report.get("previousMachine") or report["machine"])
            seen[m] = seen.get(m, 0) + 1
    if len(seen) == 1:
        return next(iter(seen))
    return " and ".join(f"{m} ({n} eval processes)" for m, n in sorted(seen.items()))


def markdown(report):
    runs, caches = report["runs"], report["caches"]
    info = report["dictionary"]
    lines = ["# CSR on the quality frontier (issue 11): perplexity against bits per channel", "",
             f"Measured on {measured_on(report)}, eval processes of `--threads {THREADS}` (at most one per core), with "
             f"`scripts/bench_frontier.py` ({report['measuredUTC']}). Model SmolLM2-135M-Instruct Q4_1; dictionary "
             f"`{info['path']}`, content hash `{info['contentHash']}`, key metric {info['keyMetric']}, calibrated on "
             f"**{report['calibration']}**: no evaluation text overlaps it.", "",
             "**Protocol (the issue's):** llama-perplexity windows, each from an empty cache; the first half of each "
             "window prefilled at once, the scored half fed **token by token** (`--decode-batch 1`). Perplexity change and "
             "mean KL are against the fp32 cache on the same windows. Bits per channel count every byte the cache holds "
             "after the window (codes, pair counts, scales, online atoms, guard, the rows of `recent=` (fp16, or int8 with `buffer=i8`) and `sink=` (fp16)), "
             "averaged over windows; the shared "
             "dictionary is not in them (it is "
             f"{report.get('dictionaryBytes', 0) / 1e6:.2f} MB per node, the file). With `err=`, bits are the stored/"
             "transferred form (only the pairs each row uses and a count byte per row); memory keeps each row's cap. "
             "With `ec=gaps` too, bits are the stored/transferred form (each row's indices as Rice-coded gaps of its "
             "sorted atoms); memory keeps fixed-width indices, 0.5 bits/ch more at CSR-16. With `ec=gaps+coef`, the "
             "coefficients and each row's scale are Huffman-coded as well, with code tables made for and stored with "
             "each section (counted); memory keeps int8 coefficients and fp16 scales, the same codes, so the perplexity "
             "is that of `ec=gaps` with the same build. "
             "Rows measured with builds before 42912ba (prefill summation order changed there) can differ from the "
             "same setting now by a few tenths of a point where atom choices are near-tied: `csr:k=20,v=8,...,ec=gaps,"
             "buffer=i8` on lcet10 is +0.74% in its row and +0.93% with the build of ae04b27, as its `ec=gaps+coef` row is. "
             "Every CSR cache here runs with the defaults `online=0` and `guard=0` (no online atoms, no guard bank) "
             "unless its spelling says otherwise; `err=` with `guard=0` keeps a vector that misses E at its cap's pairs.", "",
             "Texts: `cfi-ch4` (cfi-en chapter 4), `alice29` (Alice in Wonderland) and `lcet10` (Library of Congress "
             "Workshop on Electronic Texts proceedings, 1992, long prose; Canterbury corpus), all fetched by "
             "`scripts/fetch_assets.py`.", "",
             "The commands, one per eval process (`sparsekv` is the release build):", "", "```sh"]
    for run in runs:
        for p in run["processes"]:
            later = (f"  # rows of {', '.join(p['superseded'])}: from a later process" if p.get("superseded") else "")
            lines.append(p["command"].replace(shown([report["bin"]]), "sparsekv") + later)  # stored as shown() wrote it
    lines += ["```", ""]
    scripts = list(dict.fromkeys(p["script"] for run in runs for p in run["processes"] if p.get("script")))
    if scripts:
        lines += ["They were run by:", "", "```sh"] + [s.replace(report["bin"], "BIN") for s in scripts] + ["```", ""]
    lines += ["## Against the issue's targets", "",
              "Targets: at ≤ 5.0 bits/ch within 1% of fp32 perplexity, at ≤ 3.0 within 3%, at ≤ 2.0 within 10%. "
              "Each point is judged against the tightest target its bits fall under.", "",
              "| cache | " + " | ".join(f"{r['text']} ctx {r['ctx']}" for r in runs) + " |",
              "|---|" + "---|" * len(runs)]
    csr = list(dict.fromkeys(r["spec"] for run in runs for r in ordered_rows(run, caches) if family(r["spec"]).startswith("CSR")))
    for c in csr:
        cells = []
        for run in runs:
            r = next((x for x in run["rows"] if x["spec"] == c), None)
            cells.append("not run" if r is None else
                         f"{r['bitsPerChannel']:.2f} bits, {100 * r['relativeChange']:+.2f}%: {verdict(r)}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += [""] + summary(runs, csr)
    lines.append("")
    for run in runs:
        cut = (f" (the protocol asks for {PROTOCOL_WINDOWS}: cut for time)"
               if run["ctx"] == PROTOCOL_CTX and run["windows"] < PROTOCOL_WINDOWS else "")
        lines += [f"## {run['file']}, ctx {run['ctx']}: {windows(run['windows'])}{cut}, {run['tokensScored']:,} tokens scored "
                  f"(text {run['tokens']:,} tokens)", "",
                  f"fp32 perplexity {run['fp32Perplexity']:.4f}.", "",
                  "| KV cache | bits/ch | KV bytes/token | perplexity | vs fp32 | mean KL | top-1 agreement | seconds | target |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in ordered_rows(run, caches):
            lines.append(f"| {r['spec']} | {r['bitsPerChannel']:.3f} | {r['bytesPerToken']:.0f} | {r['perplexity']:.4f} | "
                         f"{100 * r['relativeChange']:+.2f}% | {r['meanKL']:.5f} | {100 * r['top1Agreement']:.2f}% | "
                         f"{r['seconds']:.0f} | {verdict(r) if family(r['spec']).startswith('CSR') else ''} |")
        llama = run.get("llama")
        if llama and "f16" in llama["rows"]:
            lines += ["", f"llama.cpp's own K/V quantization on the same windows (llama-cpp-python {llama['llamaCppPython']}, "
                      "flash attention, one thread, token by token; `scripts/llama_frontier.py`), against **its own f16 "
                      "cache**, whose perplexity is "
                      f"{llama['rows']['f16']['perplexity']:.4f} (ours in fp32: {run['fp32Perplexity']:.4f}):", "",
                      "| llama.cpp K and V | bits/ch | perplexity | vs llama.cpp f16 | seconds |", "|---|---:|---:|---:|---:|"]
            for t, r in llama["rows"].items():
                lines.append(f"| {t} | {r['bitsPerChannel']:.1f} | {r['perplexity']:.4f} | {100 * r['relativeChange']:+.2f}% | "
                             f"{r['seconds']:.0f} |")
        missing = [c for c in run["requested"] if c not in {r["spec"] for r in run["rows"]}]
        if missing:
            lines += ["", "Not measured (time): " + ", ".join(f"`{c}`" for c in missing) + "."]
        lines.append("")
    loads = [f"{run['text']} ctx {run['ctx']} {p['loadavgBefore'][0]:g} / {p['loadavgAfter'][0]:g}"
             for run in runs for p in run["processes"]]
    lines.append("Seconds: the cache's own eval time summed over windows (fp32 reference excluded), one thread, on a "
                 "shared machine (1-minute load average before / after each process: " + "; ".join(loads) + "), so "
                 "they only compare rows of one table.")
    return "\n".join(lines) + "\n"


def svg(report, csr_label="CSR, fixed sparsity"):
    """One panel per (text, ctx): perplexity increase (symmetric log axis) against bits/channel (log2 axis)."""
    runs = report["runs"]
    series = {"fp16": ("#7f7f7f", "square"), "KIVI": ("#1f77b4", "diamond"), "CSR": ("#d62728", "circle"),
              "CSR err=": ("#ff7f0e", "triangle"), "llama.cpp": ("#000000", "square")}
    cols = 2 if len(runs) > 1 else 1
    nrows = math.ceil(len(runs) / cols)
    pw, ph, m, gap = 430, 300, 75, 80
    W = max(2 * m + cols * pw + (cols - 1) * gap, 1080)  # room for the title and the legend
    H = m + nrows * (ph + gap) + 20
    xlo, xhi = 1.0, 16.0
    yticks = [-1, 0, 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200]
    c0 = 0.5  # symlog linear scale, percent

    def f(v):
        return math.copysign(math.log10(1 + abs(v) / c0), v)

    for run in runs:  # llama.cpp's quantized K/V as points of their own series (change vs its f16 cache)
        run["points"] = run["rows"] + [
            {"spec": f"llama.cpp {t}", "bitsPerChannel": r["bitsPerChannel"], "relativeChange": r["relativeChange"]}
            for t, r in (run.get("llama") or {"rows": {}})["rows"].items() if t != "f16"]
    allv = [100 * r["relativeChange"] for run in runs for r in run["points"]] + [10]
    ylo, yhi = f(min(-1, min(allv))), f(max(allv) * 1.15)

    def sx(x0, b):
        b = min(max(b, xlo), xhi)
        return x0 + (math.log2(b) - math.log2(xlo)) / (math.log2(xhi) - math.log2(xlo)) * pw

    def sy(y0, v):
        return y0 + ph - (f(v) - ylo) / (yhi - ylo) * ph

    def marker(shape, x, y, color):
        s = 4.5
        if shape == "square":
            return f'<rect x="{x - s:.1f}" y="{y - s:.1f}" width="{2 * s}" height="{2 * s}" fill="{color}"/>'
        if shape == "diamond":
            return f'<path d="M{x:.1f},{y - s - 1:.1f} L{x + s + 1:.1f},{y:.1f} L{x:.1f},{y + s + 1:.1f} L{x - s - 1:.1f},{y:.1f} Z" fill="{color}"/>'
        if shape == "triangle":
            return f'<path d="M{x:.1f},{y - s - 1:.1f} L{x + s + 1:.1f},{y + s:.1f} L{x - s - 1:.1f},{y + s:.1f} Z" fill="{color}"/>'
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{s}" fill="{color}"/>'

    def panel(x0, y0, run):
        out = [f'<text x="{x0 + pw / 2:.1f}" y="{y0 - 12}" text-anchor="middle" font-size="14" font-weight="bold">'
               f'{run["file"]}, ctx {run["ctx"]}, {windows(run["windows"])}, token by token</text>',
               f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
        for v in yticks:
            if ylo <= f(v) <= yhi:
                out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{sy(y0, v):.1f}" y2="{sy(y0, v):.1f}" stroke="{"#bbb" if v == 0 else "#eee"}"/>')
                out.append(f'<text x="{x0 - 6}" y="{sy(y0, v) + 4:.1f}" text-anchor="end" font-size="11">{v:+g}%</text>'
                           if v else f'<text x="{x0 - 6}" y="{sy(y0, v) + 4:.1f}" text-anchor="end" font-size="11">0</text>')
        for b in [1, 1.5, 2, 3, 4, 5, 6, 8, 12, 16]:
            out.append(f'<line x1="{sx(x0, b):.1f}" x2="{sx(x0, b):.1f}" y1="{y0}" y2="{y0 + ph}" stroke="#f3f3f3"/>')
            out.append(f'<text x="{sx(x0, b):.1f}" y="{y0 + ph + 16}" text-anchor="middle" font-size="11">{b:g}</text>')
        out.append(f'<text x="{x0 + pw / 2:.1f}" y="{y0 + ph + 34}" text-anchor="middle" font-size="12">bits per channel (log scale)</text>')
        out.append(f'<text x="{x0 - 50}" y="{y0 + ph / 2:.1f}" text-anchor="middle" font-size="12" '
                   f'transform="rotate(-90 {x0 - 50} {y0 + ph / 2:.1f})">perplexity vs fp32 (symlog)</text>')
        # The targets as a step line: a point under it meets the target of its bit rate.
        d, prev = [], xlo
        for b, t in TARGETS:
            d += [f"{'M' if not d else 'L'}{sx(x0, prev):.1f},{sy(y0, 100 * t):.1f}", f"L{sx(x0, b):.1f},{sy(y0, 100 * t):.1f}"]
            prev = b
        out.append(f'<path d="{" ".join(d)}" fill="none" stroke="#2ca02c" stroke-width="2" stroke-dasharray="6,4"/>')
        for fam, (color, shape) in series.items():
            pts = sorted((r["bitsPerChannel"], 100 * r["relativeChange"], r["spec"]) for r in run["points"] if family(r["spec"]) == fam)
            if not pts:
                continue
            if fam in ("KIVI", "CSR") and len(pts) > 1:
                path = " ".join(f"{'M' if j == 0 else 'L'}{sx(x0, b):.1f},{sy(y0, v):.1f}" for j, (b, v, _) in enumerate(pts))
                out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
            for b, v, name in pts:
                out.append(marker(shape, sx(x0, b), sy(y0, v), color))
                right = sx(x0, b) > x0 + pw - 40  # labels of points at the right edge go to their left
                anchor = ' text-anchor="end"' if right else ""
                out.append(f'<text x="{sx(x0, b) + (-7 if right else 7):.1f}" y="{sy(y0, v) - 6:.1f}" font-size="9" '
                           f'fill="{color}"{anchor}>{short(name)}</text>')
        return out

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 25 + 20 * ((len(series) + 1) // 2)}" font-family="sans-serif">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">Perplexity increase against '
             f'bits per channel (SmolLM2-135M, dictionary {report["dictionary"]["contentHash"][:8]}…)</text>']
    for i, run in enumerate(runs):
        parts += panel(m + (i % cols) * (pw + gap), m + (i // cols) * (ph + gap), run)
    legend = [("fp16", "fp16"), ("KIVI", "KIVI-2/4/8"), ("CSR", csr_label),
              ("CSR err=", "CSR err= (error-targeted, cap 16/8, int8, guard=0)"),
              ("llama.cpp", "llama.cpp q8_0/q4_0 K+V (vs its own f16)")]
    for i, (fam, text) in enumerate(legend):
        color, shape = series[fam]
        x, y = m + (i % 2) * 380, H - 10 + 20 * (i // 2)
        parts.append(marker(shape, x, y - 4, color))
        parts.append(f'<text x="{x + 10}" y="{y}" font-size="12">{text}</text>')
    x, y = m - 6, H + 10 + 20 * ((len(legend) + 1) // 2)
    parts.append(f'<path d="M{x},{y - 4} L{x + 12},{y - 4}" stroke="#2ca02c" stroke-width="2" stroke-dasharray="4,3"/>')
    parts.append(f'<text x="{x + 16}" y="{y}" font-size="12">issue 11 targets, a point must lie under the step: '
                 f'≤ 2 bits/ch within 10%, ≤ 3 within 3%, ≤ 5 within 1% of fp32 perplexity</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_reports(args, info, units):
    runs = []
    for text, ctx, windows, caches in units:
        run = load_run(run_path(args.out, text, ctx))
        if run and run["rows"]:
            run["requested"] = caches
            lp = os.path.join(args.out, "frontier-runs", f"llama-{text}-ctx{ctx}.json")
            if os.path.exists(lp):
                with open(lp) as f:
                    llama = json.load(f)
                if llama["windows"] == run["windows"] and llama["tokens"] == run["tokens"]:
                    run["llama"] = llama
                else:
                    log(f"{lp}: other windows than the CSR row set ({llama['windows']} of {llama['tokens']} tokens), left out")
            runs.append(run)
    if not runs:
        log("nothing measured yet: no report written")
        return
    # Processes written before they recorded their machine ran on the one the last report names.
    previous = None
    old_report = os.path.join(args.out, "frontier.json")
    if os.path.exists(old_report):
        with open(old_report) as f:
            old = json.load(f)
        previous = old.get("previousMachine") or old.get("machine")
    report = {"machine": machine(), "previousMachine": previous, "threads": THREADS, "bin": args.bin, "dictionary": info,
              "dictionaryBytes": os.path.getsize(args.dict), "calibration": calibration(info), "caches": args.kv,
              "targets": [{"maxBitsPerChannel": b, "maxRelativeChange": t} for b, t in TARGETS],
              "measuredUTC": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": runs}
    with open(os.path.join(args.out, "frontier.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "frontier.md"), "w") as f:
        f.write(markdown(report))
    with open(os.path.join(args.out, "frontier.svg"), "w") as f:
        f.write(svg(report))
    log(f"wrote {args.out}/frontier.json, .md and .svg ({len(runs)} row sets)")


def main():
    ap = argparse.ArgumentParser(description="Perplexity increase against bits/channel for every KV cache, token-by-token "
                                             "decoding, three texts and ctx 4096 (reports/frontier.{json,md,svg}).")
    ap.add_argument("--texts", nargs="*", default=TEXTS, help="texts under $SPARSEKV_HOME/texts, without .txt (none: only the long row set)")
    ap.add_argument("--kv", nargs="+", default=CACHES, help="caches at ctx 1024 (fp32 is the reference, always run)")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--windows", type=int, default=6, help="windows per text at --ctx")
    ap.add_argument("--long-text", default=LONG_TEXT)
    ap.add_argument("--long-ctx", type=int, default=LONG_CTX)
    ap.add_argument("--long-windows", type=int, default=1)
    ap.add_argument("--long-kv", nargs="+", default=LONG_CACHES)
    ap.add_argument("--no-long", action="store_true", help="skip the long-context row set")
    ap.add_argument("--group", type=int, default=0, help="caches per eval process (0: all of a text's in one)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the reports from the saved runs, run nothing")
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "sparsekv"))
    ap.add_argument("--dict", default=DICT)
    ap.add_argument("--out", default=os.path.join(ROOT, "reports"))
    args = ap.parse_args()
    if args.windows < 1 or args.long_windows < 1 or args.group < 0:
        ap.error("--windows and --long-windows must be >= 1, --group >= 0")
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"error: {args.bin} not found; build it first (swift build -c release, or make build)")
    for t in args.texts + ([] if args.no_long else [args.long_text]):
        if not os.path.exists(os.path.join(HOME, "texts", f"{t}.txt")):
            sys.exit(f"error: no text {HOME}/texts/{t}.txt; run scripts/fetch_assets.py texts")
    info = dict_info(args.bin, args.dict)
    units = [(t, args.ctx, args.windows, args.kv) for t in args.texts]
    if not args.no_long:
        units.append((args.long_text, args.long_ctx, args.long_windows, args.long_kv))
    if not args.report_only:
        for text, ctx, windows, caches in units:
            run_unit(args, info, text, ctx, windows, caches)
            write_reports(args, info, units)
    write_reports(args, info, units)


if __name__ == "__main__":
    main()
