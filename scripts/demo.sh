#!/usr/bin/env bash
# The main job (single process for now): generate from a long prompt taken from the
# texts, then measure perplexity on chapter 4 of cfi-en with fp32 and fp16 KV caches.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.build/release/sparsekv
HOME_DIR="${SPARSEKV_HOME:-$HOME/.cache/sparsekv}"
PROMPT_FILE="$(mktemp)"; trap 'rm -f "$PROMPT_FILE"' EXIT
head -c 6000 "$HOME_DIR/texts/alice29.txt" | tr -d '\r' > "$PROMPT_FILE"
echo "== generate: 64 tokens after ~1500 tokens of Alice in Wonderland" >&2
"$BIN" generate --prompt-file "$PROMPT_FILE" -n 64
echo "== chat" >&2
"$BIN" generate --chat -p "Name three uses of a KV cache in a language model." -n 96
for kv in fp32 fp16; do
  echo "== perplexity, cfi-en chapter 4, ctx 1024, 6 windows, kv $kv" >&2
  "$BIN" perplexity --file "$HOME_DIR/texts/cfi-ch4.txt" --ctx 1024 --chunks 6 --kv "$kv"
done
