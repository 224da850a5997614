#!/usr/bin/env bash
# Failover and shutdown timings on loopback (a measurement, not a test; nothing is asserted).
#
#   scripts/failover_timings.sh [--bin PATH] [--kv SPEC] [--tokens N] [--kill-after S]
#
# 1. For three cases (a standby present and the 3rd registered worker killed; no standby,
#    the 3rd killed; no standby, the 1st killed): a coordinator and 3 workers, a generation
#    of N tokens, kill -9 of the worker S seconds in. Prints the coordinator's failover lines
#    (silence before the death was declared, time to reload, tokens recomputed, pause) and
#    whether the tokens equal a single-process run.
# 2. SIGTERM timings: a coordinator with a session in flight (until it, its workers and the
#    client are gone), a lone worker, a client waiting on a stopped coordinator.
set -euo pipefail
# Plaintext links, explicitly: every sparsekv process here runs as with --insecure.
export SPARSEKV_INSECURE=1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${SPARSEKV_BIN:-$root/.build/release/sparsekv}" kv="csr:8,coef=i8" tokens=200 after=4
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --kv) kv="$2"; shift 2 ;;
        --tokens) tokens="$2"; shift 2 ;;
        --kill-after) after="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "failover_timings: unknown option $1" >&2; exit 2 ;;
    esac
done
model="${SPARSEKV_HOME:-$HOME/.cache/sparsekv}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
dict="$root/dicts/SmolLM2-135M-Instruct.Q4_1.csr.gguf"
work="$(mktemp -d)"
export OPENBLAS_NUM_THREADS=1
started=()
cleanup() { for p in "${started[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
now() { date +%s%N; }
gone() { while kill -0 "$1" 2>/dev/null; do sleep 0.005; done; }
line() { until grep -q "^$2 " "$1" 2>/dev/null; do sleep 0.05; done; sed -n "s/^$2 //p" "$1" | head -1; }

"$bin" generate -p "The capital of France is" -n "$tokens" --kv "$kv" --dict "$dict" --ctx 1024 -t 1 --ignore-eos --json \
    2>/dev/null >"$work/local.json"

# Starts a coordinator and 3 workers (+ a standby with $2 = 1) in directory $1; sets co, ep, pid_w*.
cluster() {
    local d="$1" standby="$2"
    mkdir -p "$d"
    "$bin" coordinator --listen tcp://127.0.0.1:0 --workers 3 --kv "$kv" --dict "$dict" --ctx 1024 -t 1 \
        >"$d/co.out" 2>"$d/co.log" & co=$!; started+=("$co")
    ep="$(line "$d/co.out" LISTENING)"
    for w in w1 w2 w3; do
        "$bin" worker --coordinator "$ep" --id "$w" --memory 2G -t 1 >"$d/$w.out" 2>"$d/$w.log" &
        started+=($!); eval "pid_$w=$!"
    done
    line "$d/co.out" READY >/dev/null
    if [[ $standby == 1 ]]; then
        "$bin" worker --coordinator "$ep" --id w9 --memory 2G -t 1 >"$d/w9.out" 2>"$d/w9.log" & started+=($!)
        until grep -q "w9 acked dictionary" "$d/co.log"; do sleep 0.05; done
    fi
}

for case in "w3 1" "w3 0" "w1 0"; do
    read -r victim standby <<<"$case"
    d="$work/kill-$victim-$standby"
    cluster "$d" "$standby"
    "$bin" generate --cluster "$ep" -p "The capital of France is" -n "$tokens" --ignore-eos --json >"$d/gen.json" 2>"$d/gen.log" &
    gen=$!
    sleep "$after"
    eval "kill -KILL \$pid_$victim"
    wait "$gen"
    kill -TERM "$co"; gone "$co"
    echo "== $kv, standby: $standby, kill -9 of $victim after ${after} s of a $tokens-token generation"
    grep -E "is dead|failover of|generates again" "$d/co.log" | sed 's/.*\] /   /'
    python3 -c "import json,sys; a=json.load(open('$work/local.json'))['generatedTokens']; b=json.load(open('$d/gen.json'))['generatedTokens']; print('   tokens equal the single-process run:', a == b, f'({len(b)})')"
    sleep 0.5
done

echo "== SIGTERM"
d="$work/sigterm"; cluster "$d" 0
workers=("$pid_w1" "$pid_w2" "$pid_w3")
"$bin" generate --cluster "$ep" -p "The capital of France is" -n 400 --ignore-eos >"$d/gen.out" 2>"$d/gen.log" & gen=$!
sleep 2
t0=$(now); kill -TERM "$co"; gone "$co"; t1=$(now)
for p in "${workers[@]}"; do gone "$p"; done; t2=$(now)
gone "$gen"; t3=$(now)
echo "   coordinator with a session in flight: exited $(( (t1 - t0) / 1000000 )) ms after SIGTERM, its workers by $(( (t2 - t0) / 1000000 )) ms, the client by $(( (t3 - t0) / 1000000 )) ms: $(tail -1 "$d/gen.log")"
d="$work/lone"; mkdir -p "$d"
"$bin" coordinator --listen tcp://127.0.0.1:0 --workers 1 --ctx 512 -t 1 >"$d/co.out" 2>"$d/co.log" & co=$!; started+=("$co")
ep="$(line "$d/co.out" LISTENING)"
"$bin" worker --coordinator "$ep" --id w1 --memory 2G -t 1 >"$d/w.out" 2>"$d/w.log" & w=$!; started+=("$w")
line "$d/co.out" READY >/dev/null
t0=$(now); kill -TERM "$w"; gone "$w"; t1=$(now)
echo "   a worker: exited $(( (t1 - t0) / 1000000 )) ms after SIGTERM"
kill -STOP "$co"
"$bin" generate --cluster "$ep" -p "Hello" -n 4 >"$d/c.out" 2>"$d/c.log" & c=$!
sleep 1
t0=$(now); kill -TERM "$c"; gone "$c"; t1=$(now)
echo "   a client waiting on a stopped coordinator: exited $(( (t1 - t0) / 1000000 )) ms after SIGTERM: $(tail -1 "$d/c.log")"
kill -CONT "$co"
t0=$(now); kill -TERM "$co"; gone "$co"; t1=$(now)
echo "   a coordinator whose worker is gone: exited $(( (t1 - t0) / 1000000 )) ms after SIGTERM"
