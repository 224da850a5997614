#!/usr/bin/env bash
# The CSR evaluation table of issue 3: every KV cache against fp32 on the same windows
# (ctx 1024, 6 windows = 3,066 scored tokens) of cfi-en chapter 4 and of alice29.txt.
# The two texts run as two processes of one thread each. Output: reports/eval-<text>.{md,json}.
#   CHUNKS=6 CTX=1024 DECODE_BATCH=16 KV="..." scripts/bench_eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.build/release/sparsekv}"
HOME_DIR="${SPARSEKV_HOME:-$HOME/.cache/sparsekv}"
CHUNKS="${CHUNKS:-6}"; CTX="${CTX:-1024}"; DECODE_BATCH="${DECODE_BATCH:-16}"
KV="${KV:-fp32 fp16 kivi4 kivi2 csr:16 csr:8 csr:4 csr:16,coef=i8 csr:8,coef=i8 csr:8,coef=i8,alg=omp csr:4,coef=i8,alg=omp csr:8,coef=i8,online=32,guard=0.01 csr:k=3,v=1 csr:2}"
mkdir -p reports
pids=()
for text in cfi-ch4 alice29; do
  # shellcheck disable=SC2086
  "$BIN" eval --threads 1 --file "$HOME_DIR/texts/$text.txt" --ctx "$CTX" --chunks "$CHUNKS" \
    --decode-batch "$DECODE_BATCH" --json --kv $KV > "reports/eval-$text.json" 2> "reports/eval-$text.log" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
python3 - <<'PY'
import json
for text in ["cfi-ch4", "alice29"]:
    r = json.load(open(f"reports/eval-{text}.json"))[0]
    rows = r["results"]
    first = rows[0]
    lines = [f"### {r['file']}: ctx {first['contextLength']}, {first['windows']} windows, {first['tokensScored']} tokens scored",
             "", "| KV cache | bits/channel | KV bytes/token | perplexity | vs fp32 | mean KL | top-1 agreement | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in rows:
        lines.append(f"| {e['cache']} | {e['bitsPerChannel']:.3f} | {e['bytesPerToken']:.0f} | {e['perplexity']:.4f} | "
                     f"{e['relativeChange']*100:+.2f}% | {e['meanKL']:.5f} | {e['top1Agreement']*100:.2f}% | {e['seconds']:.0f} |")
    open(f"reports/eval-{text}.md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines) + "\n")
PY
