#!/usr/bin/env python3
"""Bandwidth and memory of each KV cache setting, measured on a real cluster over
emulated links.

For every link rate (cluster/netns-launch.sh: a network namespace per process, tbf on
every veth) and every cache setting, it starts a 2-worker cluster in prefill -> decode
handoff mode (coordinator --prefill-workers 1 --handoff-baseline fp16): worker w1
prefills every layer, then the session's whole KV cache moves to w2, which decodes. For
each context length one generation runs, and the coordinator reports, from the
receivers' socket counters and its own clock:

  - the full KV transfer in the setting's own encoding (bytes on the wire, time from
    request to ack), and the same KV sent again in dense fp16 (checked, discarded);
  - replication-style streaming (coordinator --replicate): the decode worker sends each
    decoded token's KV (codes for CSR) to the prefill worker, which checks and discards
    it; bytes per token from the receiver's kv counters;
  - the activation bytes per token on the coordinator's links;
  - the session's KV bytes on the workers, decode tokens/s;
and the script reads each process's peak RSS (VmHWM) before the cluster stops.

Every byte figure comes from socket counters: the script checks that the bytes the
replies report equal the kv bytes the decode worker's counters received, and the
activation bytes the coordinator's counters sent. Quality is taken from token-by-token
`sparsekv eval --json` outputs or scripts/bench_frontier.py's run files (--quality; default
reports/frontier-runs/), CSR rows only from outputs that name the dictionary the cluster ran;
it is not recomputed here.

Output: reports/bandwidth.json, reports/bandwidth.md, reports/bandwidth.svg.

  scripts/bench_bandwidth.py [--ctx 512 2048 4096 8192] [--rates 100mbit 1gbit]
                             [--kv fp16 kivi4 ...] [--decode 16] [--quality EVAL.json ...] [--bin PATH] [--out DIR]
Needs root (network namespaces). `make bench-bandwidth` runs the defaults (about 35 min).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.environ.get("SPARSEKV_HOME", os.path.expanduser("~/.cache/sparsekv"))
DICT = os.path.join(ROOT, "dicts", "SmolLM2-135M-Instruct.Q4_1.csr.gguf")
TEXT = os.path.join(HOME, "texts", "cfi-ch4.txt")

# (--kv spec, the name the eval table uses for it)
# The CSR points of reports/frontier.md: at 4.4 bits/ch (within 1% of fp32 on every text, indices
# stored as gaps, ec=gaps, buffer in int8) and the same with its coefficients Huffman-coded too
# (ec=gaps+coef, about 4.0, the same perplexity); at 2.99 (ec=gaps) and the 3-bit and 2-bit points
# with coded coefficients (ec=gaps+coef: 6 value pairs and a 110-token buffer; 5 key and 4 value
# pairs); CSR-4 as the plain baseline; with the key pairs allocated per layer by
# scripts/layer_sensitivity.py (reports/layer-sensitivity.md) where named.
ALLOC16 = "k@0-3=12,k@5=24,k@7=24,k@9=24,k@10-12=12,k@14=24,k@16=12,k@17=24,k@19=12,k@20=24,k@25=12,k@27=12,k@29=12"
# The same ranking at 20 key pairs on average (16 / 28 / 20), for the gap-coded CSR point under 5 bits.
ALLOC20 = "k@0-3=16,k@5=28,k@7=28,k@9=28,k@10-12=16,k@14=28,k@16=16,k@17=28,k@19=16,k@20=28,k@25=16,k@27=16,k@29=16"
ALLOC8 = "k@0-3=4,k@5=16,k@7=16,k@9=16,k@10-12=4,k@14=16,k@16=4,k@17=16,k@19=4,k@20=16,k@25=4,k@27=4,k@29=4"
# At 9 key pairs on average (the 3-bit point with 5 value pairs): the six layers of most gain at
# 17, layers 18 and 23 (the most harm at 4 pairs among the rest) at 13, the twelve of least harm at
# 4-5; and a steeper one (21 for layers 9, 14, 20, 3-4 for the twelve). 270 pairs either way.
ALLOC9 = ("k@0-3=4,k@5=17,k@7=17,k@9=17,k@10-12=4,k@14=17,k@16=4,k@17=17,k@18=13,k@19=5,k@20=17,k@23=13,"
          "k@25=5,k@27=5,k@29=5")
ALLOC9S = ("k@0-3=3,k@5=17,k@7=17,k@9=21,k@10-12=3,k@14=21,k@16=3,k@17=17,k@18=13,k@19=4,k@20=21,k@23=13,"
           "k@25=4,k@27=4,k@29=4")
# ALLOC9S scaled to 6 key pairs on average (the 2-bit point): 180 pairs, 2 for the twelve layers of
# least harm, 11-14 for the six of most gain, 9 for layers 18 and 23.
ALLOC6S = ("k@0-3=2,k@5=11,k@7=11,k@9=14,k@10-12=2,k@14=14,k@16=2,k@17=11,k@18=9,k@19=3,k@20=13,k@23=9,"
           "k@25=3,k@27=3,k@29=3")
# The same at 7 and 5 pairs on average (210 and 150 pairs), to trade key pairs for buffer tokens.
ALLOC7S = ("k@0-3=2,k@5=13,k@7=13,k@9=17,k@10-12=2,k@14=17,k@16=2,k@17=13,k@18=11,k@19=3,k@20=17,k@23=11,"
           "k@25=3,k@27=3,k@29=3")
ALLOC5S = ("k@0-3=2,k@5=9,k@7=9,k@9=12,k@10-12=2,k@14=12,k@16=2,k@17=9,k@18=7,k@19=2,k@20=11,k@23=7,"
           "k@25=2,k@27=2,k@29=2")
SETTINGS = [
    ("fp16", "fp16"),
    ("kivi4", "kivi4"),
    ("kivi2", "kivi2"),
    ("csr:k=20,v=8,coef=i6,alg=omp,recent=56,sink=4,ec=gaps,buffer=i8," + ALLOC20,
     f"csr:k=20,v=8,{ALLOC20},coef=i6,alg=omp,ec=gaps,recent=56,buffer=i8,sink=4"),
    ("csr:k=20,v=8,coef=i6,alg=omp,recent=56,sink=4,ec=gaps+coef,buffer=i8," + ALLOC20,
     f"csr:k=20,v=8,{ALLOC20},coef=i6,alg=omp,ec=gaps+coef,recent=56,buffer=i8,sink=4"),
    ("csr:k=9,v=5,coef=i6,alg=omp,recent=91,buffer=i8,sink=2,ec=gaps," + ALLOC9S,
     f"csr:k=9,v=5,{ALLOC9S},coef=i6,alg=omp,ec=gaps,recent=91,buffer=i8,sink=2"),
    ("csr:k=9,v=6,coef=i6,alg=omp,recent=110,buffer=i8,sink=2,ec=gaps+coef," + ALLOC9S,
     f"csr:k=9,v=6,{ALLOC9S},coef=i6,alg=omp,ec=gaps+coef,recent=110,buffer=i8,sink=2"),
    ("csr:k=5,v=4,coef=i6,alg=omp,recent=56,buffer=i8,sink=2,ec=gaps+coef," + ALLOC5S,
     f"csr:k=5,v=4,{ALLOC5S},coef=i6,alg=omp,ec=gaps+coef,recent=56,buffer=i8,sink=2"),
    ("csr:4,coef=i6,alg=omp,recent=32,sink=4", "csr:k=4,v=2,coef=i6,alg=omp,recent=32,sink=4"),
]
# Quality of each setting: token-by-token evals at ctx 1024, 6 windows (scripts/bench_frontier.py's run
# files, or `sparsekv eval --json` outputs). CSR rows count only when the file names the dictionary the
# cluster runs; KIVI rows need no dictionary.
QUALITY = [os.path.join(ROOT, "reports", "frontier-runs", f"{t}-ctx1024.json") for t in ("cfi-ch4", "alice29", "lcet10")]


def log(msg):
    print(f"[bench-bandwidth {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tokenize(binary, text):
    out = subprocess.run([binary, "tokenize", "-t", "1", "-p", text], check=True, capture_output=True, text=True).stdout
    return len(out.split())


def prompt_of(binary, text, tokens):
    """A prefix of `text` that tokenizes (with BOS-free counting) to at most `tokens` tokens."""
    ratio = len(text) / tokenize(binary, text[:200_000])
    cut = int(tokens * ratio)
    for _ in range(6):
        n = tokenize(binary, text[:cut])
        if tokens - 24 <= n <= tokens:
            break
        cut = int(cut * tokens / n) - (8 if n > tokens else 0)
    return text[:cut]


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def process_name(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        return str(pid)
    if "coordinator" in args[:3]:
        return "coordinator"
    return args[args.index("--id") + 1] if "--id" in args else str(pid)


# MARK: - Inside the client namespace


def client(args):
    """Runs in the client namespace with SPARSEKV_CLUSTER set: one generation per
    prompt, then every process's counters and peak RSS."""
    cluster = os.environ["SPARSEKV_CLUSTER"]
    out = args.client
    logs = os.path.join(out, "logs")
    # Which worker prefills: the coordinator logs "assigned layers ... to wN (prefill)".
    with open(os.path.join(logs, "coordinator.log")) as f:
        prefill = next((line.split(" to ")[1].split()[0] for line in f if line.rstrip().endswith("(prefill)")), "w1")
    roles = {"prefill": prefill, "decode": "w2" if prefill == "w1" else "w1"}
    endpoints = {}
    for name in ("w1", "w2"):
        with open(os.path.join(logs, f"{name}.out")) as f:
            endpoints[name] = next(line.split()[1] for line in f if line.startswith("LISTENING"))

    def counters(endpoint):
        return json.loads(subprocess.run([args.bin, "cluster", "stats", "--cluster", endpoint],
                                         check=True, capture_output=True, text=True).stdout)

    def streamed():
        # The prefill worker receives kv only as the decode worker's stream.
        t = counters(endpoints[roles["prefill"]])
        return total(t, "kv", "receivedBytes"), total(t, "kv", "receivedMessages")

    results = []
    for prompt_file in sorted(os.listdir(os.path.join(out, "prompts")), key=lambda p: int(p.split(".")[0])):
        before = streamed()
        r = subprocess.run([args.bin, "generate", "--cluster", cluster, "--prompt-file", os.path.join(out, "prompts", prompt_file),
                            "-n", str(args.decode), "--ignore-eos", "--json"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"generate --cluster failed for {prompt_file}: {r.stderr[-2000:]}")
        time.sleep(0.3)  # the last stream message may trail the reply
        after = streamed()
        results.append({"ctx": int(prompt_file.split(".")[0]), "reply": json.loads(r.stdout),
                        "streamBytes": after[0] - before[0], "streamMessages": after[1] - before[1]})
    stats = {"coordinator": counters(cluster)}
    for name, endpoint in endpoints.items():
        stats[name] = counters(endpoint)
    with open(os.path.join(logs, "pids")) as f:
        rss = {process_name(int(p)): rss_kb(int(p)) for p in f.read().split()}
    rss = {"coordinator": rss.get("coordinator"), "prefill": rss.get(roles["prefill"]), "decode": rss.get(roles["decode"])}
    with open(os.path.join(out, "client.json"), "w") as f:
        json.dump({"runs": results, "stats": stats, "peakRSSkB": rss, "roles": roles}, f)


# MARK: - Driver


def total(traffic, category, field, peers=None):
    return sum(c[category][field] for p, c in traffic["byPeer"].items() if peers is None or p in peers)


def run_setting(args, spec, rate, prompts, max_ctx, work):
    out = os.path.join(work, f"{spec.replace(':', '_').replace(',', '_').replace('=', '-')}-{rate}")
    os.makedirs(os.path.join(out, "prompts"))
    for ctx, text in prompts.items():
        with open(os.path.join(out, "prompts", f"{ctx}.txt"), "w") as f:
            f.write(text)
    cmd = [os.path.join(ROOT, "cluster", "netns-launch.sh"), "--bin", args.bin, "--rate", rate, "-n", "2",
           "--prefill-workers", "1", "--handoff-baseline", "fp16", "--replicate", "--kv", spec, "--ctx", str(max_ctx),
           "--logs", os.path.join(out, "logs"), "--threads", str(args.threads)]
    if spec.startswith("csr"):
        cmd += ["--dict", DICT]
    cmd += ["--", sys.executable, os.path.abspath(__file__), "--client", out, "--bin", args.bin, "--decode", str(args.decode)]
    started = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{spec} at {rate}: the cluster run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    with open(os.path.join(out, "client.json")) as f:
        c = json.load(f)
    # Counters against the replies: every kv byte the decode worker received is a reported
    # transfer (move + baseline), and so is every kv byte the prefill worker sent.
    reported_kv = sum(x["reply"]["kvTransferBytes"] + x["reply"]["kvBaselineBytes"] for x in c["runs"])
    received_kv = total(c["stats"][c["roles"]["decode"]], "kv", "receivedBytes")
    sent_kv = total(c["stats"][c["roles"]["prefill"]], "kv", "sentBytes")
    reported_act = sum(x["reply"]["activationBytesSent"] for x in c["runs"])
    counted_act = total(c["stats"]["coordinator"], "activations", "sentBytes")
    check = {"reportedKVBytes": reported_kv, "decodeWorkerReceivedKVBytes": received_kv, "prefillWorkerSentKVBytes": sent_kv,
             "reportedActivationBytesSent": reported_act, "coordinatorSentActivationBytes": counted_act}
    check["agree"] = reported_kv == received_kv == sent_kv and reported_act == counted_act
    if not check["agree"]:
        sys.exit(f"{spec} at {rate}: reported bytes differ from the socket counters: {check}")
    log(f"{spec} at {rate}: {len(c['runs'])} contexts in {time.time() - started:.0f} s; counters agree "
        f"({reported_kv:,} kv bytes, {reported_act:,} activation bytes)")
    return c, check


def dictionary_hash(binary):
    out = subprocess.run([binary, "dict", "info", DICT, "--json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["contentHash"]


def quality_table(paths, dictionary):
    """cache name -> text -> quality, from `sparsekv eval --json` outputs (the text named
    after the evaluated file); the first result for a (cache, text) pair wins. A CSR result
    counts only when its output names `dictionary` (the hash of the one the cluster runs)."""
    table = {}
    for path in paths:
        if not os.path.exists(path):
            log(f"no quality file {path}; its column stays empty")
            continue
        with open(path) as f:
            data = json.load(f)
        if isinstance(data, dict) and "rows" in data:  # a scripts/bench_frontier.py run file
            data = [{"file": data["file"], "dictionary": data["dictionary"]["contentHash"], "results": data["rows"]}]
        for entry in data if isinstance(data, list) else [data]:
            text = os.path.splitext(os.path.basename(entry["file"]))[0]
            for r in entry["results"]:
                if r["cache"].startswith("csr") and entry.get("dictionary") != dictionary:
                    continue
                table.setdefault(r["cache"], {}).setdefault(text, {
                    "bitsPerChannel": r["bitsPerChannel"], "perplexityChange": r["relativeChange"], "top1": r["top1Agreement"]})
    return table


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ctx", type=int, nargs="+", default=[512, 2048, 4096, 8192])
    p.add_argument("--rates", nargs="+", default=["100mbit", "1gbit"])
    p.add_argument("--later-ctx", type=int, nargs="*", default=[512, 2048, 4096],
                   help="contexts for the rates after the first (a rate changes transfer times only, but each prompt must be prefilled again)")
    p.add_argument("--kv", nargs="+", default=[s for s, _ in SETTINGS])
    p.add_argument("--quality", nargs="*", default=QUALITY,
                   help="`sparsekv eval --json` outputs the quality columns come from (ctx 1024, 6 windows, token by token)")
    p.add_argument("--decode", type=int, default=16, help="tokens generated after each prompt")
    p.add_argument("--threads", type=int, default=1, help="threads per process")
    p.add_argument("--bin", default=os.environ.get("SPARSEKV_BIN", os.path.join(ROOT, ".build", "release", "sparsekv")))
    p.add_argument("--out", default=os.path.join(ROOT, "reports"))
    p.add_argument("--name", default="bandwidth", help="file name stem of the reports")
    p.add_argument("--client", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.bin = os.path.abspath(args.bin)
    if args.client:
        return client(args)
    if os.geteuid() != 0:
        sys.exit("bench_bandwidth.py needs root (network namespaces and tc); run it with sudo")
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"no sparsekv binary at {args.bin}; build it (make build) or pass --bin")
    names = dict(SETTINGS)
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    max_ctx = min(max(args.ctx), 8192)
    # Prompt + generated tokens must fit the context: the prompt gets ctx - decode - 1.
    prompts = {ctx: prompt_of(args.bin, text, min(ctx, 8192) - args.decode - 1) for ctx in args.ctx}
    quality = quality_table(args.quality, dictionary_hash(args.bin))
    work = tempfile.mkdtemp(prefix="sparsekv-bench-bandwidth.")
    rows, checks = [], []
    started = time.time()
    for k, rate in enumerate(args.rates):
        for spec in args.kv:
            these = prompts if k == 0 else {c: t for c, t in prompts.items() if c in args.later_ctx}
            if not these:
                continue
            c, check = run_setting(args, spec, rate, these, max_ctx, work)
            checks.append({"kv": spec, "rate": rate, **check})
            for x in c["runs"]:
                r = x["reply"]
                tokens = len(r["promptTokens"]) + len(r["generatedTokens"])
                rows.append({
                    "kv": spec, "evalName": names.get(spec, spec), "rate": rate, "ctx": x["ctx"],
                    "promptTokens": len(r["promptTokens"]), "generatedTokens": len(r["generatedTokens"]),
                    "transferBytes": r["kvTransferBytes"], "transferSeconds": r["kvTransferSeconds"],
                    "fp16Bytes": r["kvBaselineBytes"], "fp16Seconds": r["kvBaselineSeconds"],
                    "kvCacheBytes": r["kvCacheBytes"],
                    "streamBytesPerToken": x["streamBytes"] / max(x["streamMessages"], 1),
                    "streamMessages": x["streamMessages"],
                    "activationBytesPerToken": r["activationBytesSent"] / max(tokens - 1, 1),
                    "decodeTokensPerSecond": r["decodeTokensPerSecond"],
                    "prefillTokensPerSecond": r["prefillTokensPerSecond"],
                    "peakRSSkB": c["peakRSSkB"],
                })
    report = {"machine": machine(), "model": "SmolLM2-135M-Instruct Q4_1", "decodeTokens": args.decode, "threads": args.threads,
              "rates": args.rates, "contexts": args.ctx, "rows": rows, "counterChecks": checks,
              "quality": {names.get(s, s): quality.get(names.get(s, s)) for s in args.kv},
              "seconds": round(time.time() - started)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
        f.write(markdown(report))
    with open(os.path.join(args.out, f"{args.name}.svg"), "w") as f:
        f.write(svg(report))
    log(f"wrote {args.out}/{args.name}.json, .md and .svg in {report['seconds']} s")
    print(markdown(report))


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


# MARK: - Reports


def mb(b):
    return f"{b / 1e6:,.2f} MB"


def label(kv):
    """A setting as the tables name it: a per-layer allocation (`k@...`) shortened, spelled out below them."""
    parts = kv.split(",")
    if not any("@" in p for p in parts):
        return kv
    return ",".join(p for p in parts if "@" not in p) + " (keys per layer)"


def markdown(report):
    lines = [f"# KV bandwidth: {report['model']}, full-cache transfer between two workers", "",
             f"Measured on {report['machine']} with `scripts/bench_bandwidth.py` "
             f"(2-worker handoff cluster over tbf-limited network namespaces, {report.get('threads', 1)} BLAS thread(s) per process; "
             f"{report['decodeTokens']} tokens decoded per session). Bytes are kvTransfer messages as the receiving worker's socket counted them; times run from the "
             "coordinator's kvRequest to the receiver's ack (serialize, send, decode). The fp16 column is the same "
             "session's KV sent again in dense fp16. Perplexity changes are against fp32, from `sparsekv eval` "
             "(ctx 1024, 6 windows, token by token unless stated otherwise), with the dictionary the cluster ran.", ""]
    q = report["quality"]
    texts = list(dict.fromkeys(t for v in q.values() if v for t in v)) or ["cfi-ch4", "alice29"]
    for ctx in report["contexts"]:
        lines += [f"## {ctx} tokens", "",
                  f"| KV cache | bits/ch at 1,024 | ppl vs fp32 ({' / '.join(texts)}) | KV on workers | full transfer | fp16 transfer | "
                  "ratio | " + " | ".join(f"time @{r}" for r in report["rates"]) + " | fp16 time @" + report["rates"][0] +
                  " | stream B/token | act. B/token | decode tok/s | peak RSS prefill / decode worker |",
                  "|---|---:|---|---:|---:|---:|---:|" + "---:|" * len(report["rates"]) + "---:|---:|---:|---:|---:|"]
        for kv in dict.fromkeys(r["kv"] for r in report["rows"]):
            rs = {r["rate"]: r for r in report["rows"] if r["kv"] == kv and r["ctx"] == ctx}
            if not rs:
                continue
            spec = label(kv)
            first = rs.get(report["rates"][0]) or next(iter(rs.values()))
            qq = q.get(first["evalName"]) or {}
            bits = next((v["bitsPerChannel"] for v in qq.values()), None)
            ppl = " / ".join(f"{qq[t]['perplexityChange'] * 100:+.2f}%" if t in qq else "—" for t in texts)
            times = " | ".join(f"{rs[r]['transferSeconds'] * 1000:,.0f} ms" if r in rs else "—" for r in report["rates"])
            rss = first["peakRSSkB"]
            lines.append(
                f"| {spec} | {bits:.3f} | {ppl} | {mb(first['kvCacheBytes'])} | {mb(first['transferBytes'])} | "
                f"{mb(first['fp16Bytes'])} | {first['fp16Bytes'] / max(first['transferBytes'], 1):.1f}x | {times} | "
                f"{first['fp16Seconds'] * 1000:,.0f} ms | {first['streamBytesPerToken']:,.0f} | {first['activationBytesPerToken']:,.0f} | "
                f"{first['decodeTokensPerSecond']:.1f} | {(rss.get('prefill') or 0) / 1024:.0f} / {(rss.get('decode') or 0) / 1024:.0f} MB |"
                if bits is not None else
                f"| {spec} | — | — | {mb(first['kvCacheBytes'])} | {mb(first['transferBytes'])} | {mb(first['fp16Bytes'])} | "
                f"{first['fp16Bytes'] / max(first['transferBytes'], 1):.1f}x | {times} | {first['fp16Seconds'] * 1000:,.0f} ms | "
                f"{first['streamBytesPerToken']:,.0f} | {first['activationBytesPerToken']:,.0f} | {first['decodeTokensPerSecond']:.1f} | "
                f"{(rss.get('prefill') or 0) / 1024:.0f} / {(rss.get('decode') or 0) / 1024:.0f} MB |")
        lines.append("")
    layered = [kv for kv in dict.fromkeys(r["kv"] for r in report["rows"]) if "@" in kv]
    if layered:
        lines += ["Key pairs per layer (scripts/layer_sensitivity.py, reports/layer-sensitivity.md): "
                  + "; ".join(f"{label(kv)}: `{kv}`" for kv in layered) + ".", ""]
    ok = all(c["agree"] for c in report["counterChecks"])
    lines += [f"Counter check: the reported kv and activation bytes equal the socket counters in "
              f"{sum(c['agree'] for c in report['counterChecks'])}/{len(report['counterChecks'])} runs"
              + ("." if ok else " (FAILED)."), ""]
    return "\n".join(lines)


def svg(report):
    """Two panels against context length: bytes of a full KV transfer (log scale), and its
    time over the first link rate; one line per setting."""
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
    specs = list(dict.fromkeys(r["kv"] for r in report["rows"]))
    ctxs = sorted(report["contexts"])
    rate = report["rates"][0]
    import math
    W, H, pad, gap = 1000, 420, 70, 60
    pw = (W - 2 * pad - gap) / 2
    ph = H - 2 * pad

    def panel(x0, title, values, log_scale, unit):
        pts = [v for vs in values.values() for _, v in vs if v > 0]
        if not pts:
            return []
        lo, hi = min(pts), max(pts)
        if log_scale:
            lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
        else:
            lo, hi = 0, hi * 1.1

        def sx(c):
            return x0 + (math.log2(c) - math.log2(ctxs[0])) / max(math.log2(ctxs[-1]) - math.log2(ctxs[0]), 1e-9) * pw

        def sy(v):
            if log_scale:
                return pad + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
            return pad + ph - (v - lo) / (hi - lo) * ph

        out = [f'<text x="{x0 + pw / 2}" y="{pad - 25}" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>',
               f'<rect x="{x0}" y="{pad}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
        ticks = [lo * 10 ** i for i in range(int(round(math.log10(hi / lo))) + 1)] if log_scale else [hi * i / 5 for i in range(6)]
        for t in ticks:
            y = sy(t) if t > 0 or not log_scale else None
            if y is None:
                continue
            label = (f"{t / 1e6:g} MB" if t >= 1e6 else f"{t / 1e3:g} kB") if unit == "B" else f"{t:.2f} s"
            out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{label}</text>')
        for c in ctxs:
            out.append(f'<text x="{sx(c):.1f}" y="{pad + ph + 18}" text-anchor="middle" font-size="11">{c}</text>')
        out.append(f'<text x="{x0 + pw / 2}" y="{pad + ph + 38}" text-anchor="middle" font-size="12">context length (tokens)</text>')
        for i, (spec, vs) in enumerate(values.items()):
            vs = [(c, v) for c, v in vs if v > 0]
            if not vs:
                continue
            color = colors[i % len(colors)]
            path = " ".join(f"{'M' if j == 0 else 'L'}{sx(c):.1f},{sy(v):.1f}" for j, (c, v) in enumerate(vs))
            out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
            out += [f'<circle cx="{sx(c):.1f}" cy="{sy(v):.1f}" r="3" fill="{color}"/>' for c, v in vs]
        return out

    def series(field):
        return {s: [(r["ctx"], r[field]) for r in sorted(report["rows"], key=lambda r: r["ctx"]) if r["kv"] == s and r["rate"] == rate]
                for s in specs}

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 30 + 18 * ((len(specs) + 3) // 4)}" '
             'font-family="sans-serif">', f'<rect width="100%" height="100%" fill="white"/>']
    parts += panel(pad, "Bytes on the wire, full KV transfer", series("transferBytes"), True, "B")
    parts += panel(pad + pw + gap, f"Transfer time over {rate} links", series("transferSeconds"), False, "s")
    for i, s in enumerate(specs):
        x, y = pad + (i % 4) * 220, H + 10 + 18 * (i // 4)
        parts.append(f'<rect x="{x}" y="{y - 9}" width="14" height="4" fill="{colors[i % len(colors)]}"/>')
        parts.append(f'<text x="{x + 20}" y="{y - 3}" font-size="12">{label(s)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
