#!/usr/bin/env bash
# The main job: a local cluster (coordinator + 3 workers over ZeroMQ, CSR KV cache)
# generates from a ~3,000-token prompt and reports tokens/s, bytes on the wire and peak
# RSS per process (scripts/cluster_demo.sh); then, in one process, a generation and a
# comparison of KV caches (fp32, fp16, KIVI, CSR) on two windows of chapter 4 of cfi-en:
# bits per channel, perplexity, KL, top-1 agreement.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.build/release/sparsekv
HOME_DIR="${SPARSEKV_HOME:-$HOME/.cache/sparsekv}"
BIN="$BIN" scripts/cluster_demo.sh
PROMPT_FILE="$(mktemp)"; trap 'rm -f "$PROMPT_FILE"' EXIT
head -c 6000 "$HOME_DIR/texts/alice29.txt" | tr -d '\r' > "$PROMPT_FILE"
echo "== generate: 64 tokens after ~1500 tokens of Alice in Wonderland, CSR-8 KV cache" >&2
"$BIN" generate --prompt-file "$PROMPT_FILE" -n 64 --kv csr:8,coef=i8
echo "== chat" >&2
"$BIN" generate --chat -p "Name three uses of a KV cache in a language model." -n 96 --kv csr:16,coef=i8
echo "== KV caches against fp32: cfi-en chapter 4, ctx 1024, 2 windows" >&2
"$BIN" eval --file "$HOME_DIR/texts/cfi-ch4.txt" --ctx 1024 --chunks 2 \
  --kv fp16 kivi4 kivi2 csr:16,coef=i8 csr:8,coef=i8 csr:4
