#!/usr/bin/env python3
"""Draws `sparsekv eval --json` outputs as a frontier chart (scripts/bench_frontier.py's): perplexity
increase against bits per channel, one panel per eval file, with llama.cpp's q8_0/q4_0 points from
reports/frontier-runs/llama-<text>-ctx<ctx>.json when they are there, and the issue-11 targets.

  scripts/frontier_svg.py -o OUT.svg [--csr-label TEXT] EVAL.json [EVAL.json ...]

Files of the same text and context are merged into one panel (their rows must come from the
same windows; each row is against its own process's fp32 reference).
"""
import argparse
import json
import os
import sys

from bench_frontier import ROOT, svg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("evals", nargs="+", help="outputs of sparsekv eval --json")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--csr-label", default="CSR")
    ap.add_argument("--llama-dir", default=os.path.join(ROOT, "reports", "frontier-runs"))
    ap.add_argument("--dict-hash", default=None, help="content hash shown in the title (default: reports/frontier.json's)")
    args = ap.parse_args()
    panels = {}
    for path in args.evals:
        for d in json.load(open(path)):
            rows = [dict(r, spec=r["cache"]) for r in d["results"]]
            if not rows:
                continue
            text = os.path.splitext(os.path.basename(d["file"]))[0]
            key = (text, rows[0]["contextLength"])
            run = panels.setdefault(key, {"file": os.path.basename(d["file"]), "ctx": key[1], "windows": rows[0]["windows"], "rows": []})
            if run["windows"] != rows[0]["windows"]:
                sys.exit(f"{path}: {rows[0]['windows']} windows, another file of {text} ctx {key[1]} has {run['windows']}")
            run["rows"] += [r for r in rows if r["spec"] not in {x["spec"] for x in run["rows"]}]
    for (text, ctx), run in panels.items():
        lp = os.path.join(args.llama_dir, f"llama-{text}-ctx{ctx}.json")
        if os.path.exists(lp):
            run["llama"] = json.load(open(lp))
    h = args.dict_hash or json.load(open(os.path.join(ROOT, "reports", "frontier.json")))["dictionary"]["contentHash"]
    with open(args.out, "w") as f:
        f.write(svg({"runs": list(panels.values()), "dictionary": {"contentHash": h}}, csr_label=args.csr_label))
    print(f"wrote {args.out} ({len(panels)} panels)", file=sys.stderr)


if __name__ == "__main__":
    main()
