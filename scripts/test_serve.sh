#!/usr/bin/env bash
# The HTTP API end to end (part of `make test`): scripts/test_serve.py with the real
# `openai` client against `sparsekv serve` (one process), then against a 3-worker cluster
# on loopback whose coordinator serves HTTP (cluster/launch.sh --http), CSR-8 KV cache, then
# `sparsekv serve --cluster` as a separate process on another 3-worker cluster (killing a
# worker at the end: its ready gauge must drop).
#
#   scripts/test_serve.sh [--bin PATH] [--single-only]
#
# Python packages (openai, prometheus_client) come from $SPARSEKV_HOME/venv, which
# scripts/setup.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release/sparsekv
single_only=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --single-only) single_only=1; shift ;;
        *) echo "test_serve.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
home="${SPARSEKV_HOME:-$HOME/.cache/sparsekv}"
py="$home/venv/bin/python"
[[ -x "$py" ]] || { echo "test_serve.sh: no $py; run scripts/setup.sh (it makes the venv with openai and prometheus_client)" >&2; exit 1; }
command -v curl >/dev/null || { echo "test_serve.sh: curl is needed (apt-get install curl)" >&2; exit 1; }

echo "== HTTP API, one process (sparsekv serve)" >&2
"$py" scripts/test_serve.py --bin "$bin" --kv fp32 --ctx 512
[[ $single_only -eq 1 ]] && exit 0

echo "== HTTP API, 3-worker cluster (coordinator --http), kv csr:8,coef=i8" >&2
cluster/launch.sh -n 3 --kv csr:8,coef=i8 --ctx 512 --threads 1 --bin "$bin" --http 127.0.0.1:0 -- \
    bash -c '"$0" scripts/test_serve.py --bin "$1" --cluster "$SPARSEKV_CLUSTER" --http "$SPARSEKV_HTTP" --kv csr:8,coef=i8 --ctx 512 --threads 1 --concurrency 3 --overload 30' "$py" "$bin"

echo "== HTTP API, sparsekv serve --cluster on a 3-worker cluster, kv csr:8,coef=i8" >&2
logs="$(mktemp -d -t sparsekv-serve-cluster.XXXXXX)"
trap 'rm -rf "$logs"' EXIT
cluster/launch.sh -n 3 --kv csr:8,coef=i8 --ctx 512 --threads 1 --bin "$bin" --logs "$logs" -- \
    bash -c '"$0" scripts/test_serve.py --bin "$1" --serve-cluster "$SPARSEKV_CLUSTER" --logs "$2" --kv csr:8,coef=i8 --ctx 512 --threads 1 --concurrency 3 --overload 30' "$py" "$bin" "$logs"
