#!/usr/bin/env bash
# Failover and shutdown timings on loopback (a measurement, not a test; nothing is asserted).
#
#   scripts/failover_timings.sh [--bin PATH] [--kv SPEC] [--tokens N] [--kill-after S] [--bytes-only]
#
# 1. For six cases (a standby present and the 3rd registered worker killed; no standby,
#    the 3rd killed; no standby, the 1st killed; each with kept replicas, --replicas 1, and
#    without, --replicas 0): a coordinator and 3 workers, a generation of N tokens, kill -9
#    of the worker S seconds in. Prints the coordinator's failover lines (silence before
#    the death was declared, time to reload, replicas installed or tokens recomputed, the
#    pause) and whether the tokens equal a single-process run.
# 2. Replica bytes per decoded token, for SPEC and for fp32: a generation of N tokens with
#    --replicas 1 and no kill; the workers' kv byte counters (sparsekv cluster stats on each
#    worker) minus the full copies the holders acked (the coordinator's "keeps the replica"
#    lines) are the streamed append payloads, divided by the decode steps.
# 3. SIGTERM timings: a coordinator with a session in flight (until it, its workers and the
#    client are gone), a lone worker, a client waiting on a stopped coordinator.
set -euo pipefail
# Plaintext links, explicitly: every sparsekv process here runs as with --insecure.
export SPARSEKV_INSECURE=1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${SPARSEKV_BIN:-$root/.build/release/sparsekv}" kv="csr:8,coef=i8" tokens=200 after=4 bytes_only=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --kv) kv="$2"; shift 2 ;;
        --tokens) tokens="$2"; shift 2 ;;
        --kill-after) after="$2"; shift 2 ;;
        --bytes-only) bytes_only=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
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

# Starts a coordinator (with --kv $4, default SPEC) and 3 workers (+ a standby with $2 = 1,
# replicas $3) in directory $1; sets co, ep, pid_w*, ep_w*.
cluster() {
    local d="$1" standby="$2" replicas="${3:-1}" spec="${4:-$kv}"
    mkdir -p "$d"
    "$bin" coordinator --listen tcp://127.0.0.1:0 --workers 3 --kv "$spec" --dict "$dict" --ctx 1024 -t 1 --replicas "$replicas" \
        >"$d/co.out" 2>"$d/co.log" & co=$!; started+=("$co")
    ep="$(line "$d/co.out" LISTENING)"
    for w in w1 w2 w3; do
        "$bin" worker --coordinator "$ep" --id "$w" --memory 2G -t 1 >"$d/$w.out" 2>"$d/$w.log" &
        started+=($!); eval "pid_$w=$!"
    done
    for w in w1 w2 w3; do eval "ep_$w=\"\$(line \"$d/$w.out\" LISTENING)\""; done
    line "$d/co.out" READY >/dev/null
    if [[ $standby == 1 ]]; then
        "$bin" worker --coordinator "$ep" --id w9 --memory 2G -t 1 >"$d/w9.out" 2>"$d/w9.log" & started+=($!)
        until grep -q "registered w9 at" "$d/co.log" && { [[ $spec != csr* ]] || grep -q "w9 acked dictionary" "$d/co.log"; }; do sleep 0.05; done
    fi
}

local_tokens() {
    "$bin" generate -p "The capital of France is" -n "$tokens" --kv "$1" --dict "$dict" --ctx 1024 -t 1 --ignore-eos --json 2>/dev/null
}

if [[ $bytes_only == 0 ]]; then
local_tokens "$kv" >"$work/local.json"
for case in "w3 1 1" "w3 1 0" "w3 0 1" "w3 0 0" "w1 0 1" "w1 0 0"; do
    read -r victim standby replicas <<<"$case"
    d="$work/kill-$victim-$standby-$replicas"
    cluster "$d" "$standby" "$replicas"
    "$bin" generate --cluster "$ep" -p "The capital of France is" -n "$tokens" --ignore-eos --json >"$d/gen.json" 2>"$d/gen.log" &
    gen=$!
    sleep "$after"
    eval "kill -KILL \$pid_$victim"
    wait "$gen"
    kill -TERM "$co"; gone "$co"
    echo "== $kv, standby: $standby, --replicas $replicas, kill -9 of $victim after ${after} s of a $tokens-token generation"
    grep -E "is dead|failover of|installing replicas|generates again" "$d/co.log" | sed 's/.*\] /   /'
    python3 -c "import json,sys; a=json.load(open('$work/local.json'))['generatedTokens']; b=json.load(open('$d/gen.json'))['generatedTokens']; print('   tokens equal the single-process run:', a == b, f'({len(b)})')"
    sleep 0.5
done
fi

specs=("$kv"); [[ $kv == fp32 ]] || specs+=(fp32)
for spec in "${specs[@]}"; do
    d="$work/bytes-${spec//[:,=]/_}"
    cluster "$d" 0 1 "$spec"
    "$bin" generate --cluster "$ep" -p "The capital of France is" -n "$tokens" --ignore-eos --json >"$d/gen.json" 2>"$d/gen.log"
    sleep 0.3
    for w in w1 w2 w3; do eval "\"\$bin\" cluster stats --cluster \"\$ep_$w\"" >"$d/$w.stats.json"; done
    kill -TERM "$co"; gone "$co"
    python3 - "$d" "$spec" "$tokens" <<'PY'
import json, re, sys
d, spec, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
sent = msgs = 0
for w in ("w1", "w2", "w3"):
    t = json.load(open(f"{d}/{w}.stats.json"))
    for peer in t["byPeer"].values():
        sent += peer["kv"]["sentBytes"]; msgs += peer["kv"]["sentMessages"]
full = [(int(a), int(b)) for a, b in re.findall(r"keeps the replica of .*?: (\d+) tokens, (\d+) bytes", open(f"{d}/co.log").read())]
stream_bytes, stream_msgs = sent - sum(b for _, b in full), msgs - len(full)
steps = stream_msgs / 3
print(f"== replica bytes, {spec}, 3 workers, {tokens} tokens: full copies after the prompt {sum(b for _, b in full)} B "
      f"({len(full)} messages, {full[0][0] if full else 0} tokens); streamed {stream_bytes} B in {stream_msgs} messages "
      f"= {stream_bytes / steps:.0f} B per decoded token (all 30 layers), {stream_bytes / stream_msgs:.0f} B per message")
PY
    sleep 0.5
done
[[ $bytes_only == 1 ]] && exit 0

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
