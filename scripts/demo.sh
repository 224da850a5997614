#!/usr/bin/env bash
# The main job (a few minutes after the build): a local cluster (coordinator + 3 workers
# over ZeroMQ, CSR KV cache) generates from a ~3,000-token prompt, drains a worker mid-way
# and reports tokens/s, bytes on the wire and peak RSS per process
# (scripts/cluster_demo.sh); then `sparsekv serve` answers a streamed chat completion
# over OpenAI's HTTP API, printed token by token as the server-sent events arrive.
# The KV cache comparison (fp32, fp16, KIVI, CSR: bits per channel, perplexity, KL) is
# `make bench-eval`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.build/release/sparsekv}"
BIN="$BIN" scripts/cluster_demo.sh

echo "== serve: OpenAI-compatible HTTP API (one process, CSR-16 KV cache), a streamed chat completion" >&2
OUT="$(mktemp)"
setsid "$BIN" serve --http 127.0.0.1:0 --kv csr:16,coef=i8 --ctx 2048 >"$OUT" 2>/dev/null &
SERVER=$!
trap 'kill -TERM "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; rm -f "$OUT"' EXIT
URL=""
for _ in $(seq 300); do
  URL="$(sed -n 's/^LISTENING //p' "$OUT" | head -1)"
  [[ -n "$URL" ]] && break
  kill -0 "$SERVER" 2>/dev/null || { echo "demo: sparsekv serve exited" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$URL" ]] || { echo "demo: sparsekv serve did not start" >&2; exit 1; }
echo "   $URL; curl -N $URL/v1/chat/completions -d '{\"messages\": [...], \"stream\": true}'" >&2
curl -sN "$URL/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "messages": [{"role": "user", "content": "Name three uses of a KV cache in a language model."}],
  "max_tokens": 96, "temperature": 0, "stream": true}' | python3 -u /dev/fd/3 3<<'PY'
import json, sys
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("data: ") or line == "data: [DONE]":
        continue
    chunk = json.loads(line[6:])
    for c in chunk["choices"]:
        sys.stdout.write(c["delta"].get("content") or "")
        sys.stdout.flush()
    if "usage" in chunk and "sparsekv" in chunk:
        u, x = chunk["usage"], chunk["sparsekv"]
        print(f"\n== {u['prompt_tokens']} prompt + {u['completion_tokens']} generated tokens, "
              f"prefill {x['prefill_ms']:.0f} ms, decode {x['decode_ms']:.0f} ms, "
              f"KV cache {x['kv_cache']} {x['kv_cache_bytes']:,} bytes", file=sys.stderr)
PY
echo "== GET /metrics (excerpt)" >&2
curl -s "$URL/metrics" | grep -E '^sparsekv_(generated_tokens_total|prompt_tokens_total|http_requests_total|info)' >&2 || true
