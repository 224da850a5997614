#!/usr/bin/env python3
"""A long session on the 3-worker pipeline against one process: decode tokens/s, each
process's peak RSS, the session's KV bytes and activation bytes per token, per cache
setting. Both runs use the same prompt (about 4,000 tokens of cfi-en chapter 4), the same
cache and one BLAS thread per process; the cluster runs on loopback (cluster/launch.sh).

  scripts/bench_pipeline.py [--kv fp16 csr:8,coef=i8 ...] [--tokens 4000] [--decode 32] [--out reports]

Writes reports/pipeline.json and reports/pipeline.md. Peak RSS is VmHWM (cluster
processes, read before they stop) and ru_maxrss of the single process.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_bandwidth import prompt_of, process_name, rss_kb  # noqa: E402

CLIENT = r'''
import json, os, subprocess, sys
out, binary, decode = sys.argv[1], sys.argv[2], sys.argv[3]
r = subprocess.run([binary, "generate", "--cluster", os.environ["SPARSEKV_CLUSTER"], "--prompt-file", os.path.join(out, "prompt.txt"),
                    "-n", decode, "--ignore-eos", "--json"], capture_output=True, text=True)
if r.returncode != 0:
    sys.exit(r.stderr[-2000:])
sys.path.insert(0, sys.argv[4])
from bench_bandwidth import process_name, rss_kb
with open(os.path.join(out, "logs", "pids")) as f:
    rss = {process_name(int(p)): rss_kb(int(p)) for p in f.read().split()}
json.dump({"reply": json.loads(r.stdout), "peakRSSkB": rss}, open(os.path.join(out, "cluster.json"), "w"))
'''


def single(binary, kv, prompt_file, decode):
    args = [binary, "generate", "--kv", kv, "--prompt-file", prompt_file, "-n", str(decode), "--ignore-eos", "--json",
            "-t", "1", "--ctx", "8192"]
    if kv.startswith("csr"):
        args += ["--dict", DICT]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"single-process {kv} failed ({status})")
    return json.loads(out), usage.ru_maxrss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kv", nargs="+", default=["fp16", "csr:8,coef=i8"])
    ap.add_argument("--tokens", type=int, default=4000, help="prompt tokens")
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--bin", default=os.environ.get("SPARSEKV_BIN", os.path.join(ROOT, ".build", "release", "sparsekv")))
    ap.add_argument("--out", default=os.path.join(ROOT, "reports"))
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    with open(os.path.join(HOME, "texts", "cfi-ch4.txt"), encoding="utf-8") as f:
        text = f.read()
    work = tempfile.mkdtemp(prefix="sparsekv-bench-pipeline.")
    with open(os.path.join(work, "prompt.txt"), "w") as f:
        f.write(prompt_of(args.bin, text, args.tokens))
    with open(os.path.join(work, "client.py"), "w") as f:
        f.write(CLIENT)
    rows = []
    for kv in args.kv:
        started = time.time()
        local, local_rss = single(args.bin, kv, os.path.join(work, "prompt.txt"), args.decode)
        cmd = [os.path.join(ROOT, "cluster", "launch.sh"), "-n", "3", "--kv", kv, "--ctx", "8192", "--bin", args.bin,
               "--logs", os.path.join(work, "logs")]
        if kv.startswith("csr"):
            cmd += ["--dict", DICT]
        cmd += ["--", sys.executable, os.path.join(work, "client.py"), work, args.bin, str(args.decode), os.path.dirname(os.path.abspath(__file__))]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"cluster run for {kv} failed:\n{r.stderr[-3000:]}")
        with open(os.path.join(work, "cluster.json")) as f:
            c = json.load(f)
        reply = c["reply"]
        same = reply["generatedTokens"] == local["generatedTokens"]
        tokens = len(reply["promptTokens"]) + len(reply["generatedTokens"])
        rows.append({"kv": kv, "promptTokens": len(reply["promptTokens"]), "generatedTokens": len(reply["generatedTokens"]),
                     "sameTokens": same,
                     "clusterDecodeTokensPerSecond": reply["decodeTokensPerSecond"],
                     "singleDecodeTokensPerSecond": local["decodeTokensPerSecond"],
                     "clusterPrefillTokensPerSecond": reply["prefillTokensPerSecond"],
                     "singlePrefillTokensPerSecond": local["prefillTokensPerSecond"],
                     "clusterPeakRSSkB": c["peakRSSkB"], "singlePeakRSSkB": local_rss,
                     "kvCacheBytes": reply["kvCacheBytes"], "singleKVCacheBytes": local.get("kvCacheBytes"),
                     "activationBytesPerToken": reply["activationBytesSent"] / max(tokens - 1, 1)})
        print(f"[bench-pipeline] {kv}: done in {time.time() - started:.0f} s, tokens {'equal' if same else 'DIFFER'}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "pipeline.json"), "w") as f:
        json.dump({"rows": rows, "decodeTokens": args.decode}, f, indent=1)
    lines = ["# 3-worker pipeline vs one process", "",
             f"`scripts/bench_pipeline.py`: the same ~{args.tokens}-token prompt (cfi-en chapter 4), {args.decode} tokens decoded, "
             "one BLAS thread per process, loopback. Peak RSS: VmHWM of each cluster process, ru_maxrss of the single process.", "",
             "| KV cache | prompt | same tokens | decode tok/s 3 workers / 1 process | prefill tok/s 3 workers / 1 process | "
             "peak RSS coordinator / w1 / w2 / w3 | peak RSS 1 process | session KV bytes | activation B/token |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rss = r["clusterPeakRSSkB"]
        lines.append(f"| {r['kv']} | {r['promptTokens']} | {'yes' if r['sameTokens'] else 'no'} | "
                     f"{r['clusterDecodeTokensPerSecond']:.2f} / {r['singleDecodeTokensPerSecond']:.2f} | "
                     f"{r['clusterPrefillTokensPerSecond']:.1f} / {r['singlePrefillTokensPerSecond']:.1f} | "
                     + " / ".join(f"{(rss.get(n) or 0) / 1024:.0f}" for n in ("coordinator", "w1", "w2", "w3")) + " MB | "
                     f"{r['singlePeakRSSkB'] / 1024:.0f} MB | {r['kvCacheBytes']:,} | {r['activationBytesPerToken']:,.0f} |")
    with open(os.path.join(args.out, "pipeline.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
