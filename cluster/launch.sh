#!/usr/bin/env bash
# Starts a SparseKV cluster on loopback: one coordinator and N workers.
#
#   cluster/launch.sh [options]              run until Ctrl-C / SIGTERM, then stop everything
#   cluster/launch.sh [options] -- CMD ...   run CMD with SPARSEKV_CLUSTER=<endpoint>, then stop everything
#
# Options: -n WORKERS (3)  -p PORT (0 = free port)  --kv SPEC (fp32)  --ctx N  --model PATH
#          --dict PATH  --memory BYTES (per worker, 2G)  --bin PATH (sparsekv binary)
#          --logs DIR (process logs; default a temporary directory)  --threads N (per process, 1)
#          --prefill-workers K (prefill -> decode handoff: K prefill + K decode workers; -n must be 2K)
#          --handoff-baseline fp16 (with it: also send each handoff's KV in dense fp16, measured)
#          --replicas N (1: keep a live replica of each worker's KV on the next worker, the default; 0: none)
#          --replicate (without replicas: workers stream each decoded token's KV to a peer, which counts and discards it)
#          --http HOST:PORT (the coordinator also serves OpenAI's HTTP API; CMD gets SPARSEKV_HTTP=http://...)
#          --insecure (plaintext links; default: CURVE keys for every process, see below)
# Security: by default every process gets a CURVE key pair in LOGS/keys/NAME (coordinator, w1..,
# client), cross-authorized: the coordinator accepts the workers and the client, each worker the
# coordinator and the other workers. CMD runs with SPARSEKV_KEYS=LOGS/keys/client, which
# `sparsekv generate --cluster` and `sparsekv cluster ...` use; from elsewhere pass
# --keys LOGS/keys/client. SPARSEKV_CLUSTER ends in #<coordinator public key>.
# Every process runs in its own process group; on exit each group is sent SIGTERM, then
# SIGKILL after a grace period, and waited for, so nothing is left behind.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
workers=3 port=0 kv=fp32 ctx="" model="" dict="" memory=2G threads=1 prefill=0 http=0 insecure=0
bin="${SPARSEKV_BIN:-}"
logs=""
cmd=()
coord_extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n|--workers) workers="$2"; shift 2 ;;
        -p|--port) port="$2"; shift 2 ;;
        --kv) kv="$2"; shift 2 ;;
        --ctx) ctx="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --dict) dict="$2"; shift 2 ;;
        --memory) memory="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --logs) logs="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --prefill-workers) prefill="$2"; shift 2 ;;
        --handoff-baseline) coord_extra+=(--handoff-baseline "$2"); shift 2 ;;
        --replicate) coord_extra+=(--replicate); shift ;;
        --replicas) coord_extra+=(--replicas "$2"); shift 2 ;;
        --http) coord_extra+=(--http "$2"); http=1; shift 2 ;;
        --insecure) insecure=1; shift ;;
        --) shift; cmd=("$@"); break ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "launch.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -z "$bin" ]]; then
    for b in "$root/.build/release/sparsekv" "$root/.build-nodes/release/sparsekv"; do
        [[ -x "$b" ]] && bin="$b" && break
    done
fi
[[ -x "$bin" ]] || { echo "launch.sh: no sparsekv binary; build it (swift build -c release) or pass --bin PATH" >&2; exit 1; }
[[ -n "$logs" ]] || logs="$(mktemp -d -t sparsekv-cluster.XXXXXX)"
mkdir -p "$logs"

model_args=(); [[ -n "$model" ]] && model_args=(--model "$model")

# CURVE keys for every process, cross-authorized (or plaintext with --insecure).
names=(coordinator client); for i in $(seq "$workers"); do names+=("w$i"); done
security() { if [[ $insecure -eq 1 ]]; then sec=(--insecure); else sec=(--keys "$logs/keys/$1"); fi; }
if [[ $insecure -eq 0 ]]; then
    rm -rf "$logs/keys"
    for n in "${names[@]}"; do "$bin" keys generate --out "$logs/keys/$n" >/dev/null; done
    for n in "${names[@]}"; do
        [[ $n == coordinator ]] || cp "$logs/keys/$n/key.pub" "$logs/keys/coordinator/authorized/$n.pub"
        if [[ $n == w* ]]; then
            for m in "${names[@]}"; do
                [[ $m == client || $m == "$n" ]] || cp "$logs/keys/$m/key.pub" "$logs/keys/$n/authorized/$m.pub"
            done
        fi
    done
    export SPARSEKV_KEYS="$logs/keys/client"
else
    export SPARSEKV_INSECURE=1
fi
coord_args=(--listen "tcp://127.0.0.1:$port" --workers "$workers" --kv "$kv" -t "$threads" --prefill-workers "$prefill" "${coord_extra[@]}")
[[ -n "$ctx" ]] && coord_args+=(--ctx "$ctx")
[[ -n "$dict" ]] && coord_args+=(--dict "$dict")

pids=()
stopped=0
stop_all() {
    [[ $stopped -eq 1 ]] && return
    stopped=1
    for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    # Grace period for a clean exit (workers are told to shut down by the coordinator too).
    for _ in $(seq 50); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

# setsid gives each process its own process group, so a group kill reaches all of it.
security coordinator
setsid "$bin" coordinator "${model_args[@]}" "${coord_args[@]}" "${sec[@]}" >"$logs/coordinator.out" 2>"$logs/coordinator.log" &
pids+=($!)

endpoint=""
for _ in $(seq 600); do
    endpoint="$(sed -n 's/^LISTENING //p' "$logs/coordinator.out" 2>/dev/null | head -1)"
    [[ -n "$endpoint" ]] && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "launch.sh: the coordinator exited:" >&2; cat "$logs/coordinator.log" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$endpoint" ]] || { echo "launch.sh: the coordinator did not start (see $logs)" >&2; exit 1; }

for i in $(seq "$workers"); do
    security "w$i"
    setsid "$bin" worker "${model_args[@]}" --coordinator "$endpoint" --id "w$i" --memory "$memory" -t "$threads" "${sec[@]}" \
        >"$logs/w$i.out" 2>"$logs/w$i.log" &
    pids+=($!)
done

ready=""
for _ in $(seq 1200); do
    ready="$(sed -n 's/^READY //p' "$logs/coordinator.out" 2>/dev/null | head -1)"
    [[ -n "$ready" ]] && break
    for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { echo "launch.sh: a process exited before the cluster was ready (logs in $logs):" >&2; tail -n 5 "$logs"/*.log >&2; exit 1; }
    done
    sleep 0.1
done
[[ -n "$ready" ]] || { echo "launch.sh: the cluster did not get ready (logs in $logs)" >&2; exit 1; }
printf '%s\n' "${pids[@]}" >"$logs/pids"
echo "SPARSEKV_CLUSTER=$ready (logs in $logs)"
http_url=""
if [[ $http -eq 1 ]]; then
    for _ in $(seq 300); do
        http_url="$(sed -n 's/^HTTP //p' "$logs/coordinator.out" 2>/dev/null | head -1)"
        [[ -n "$http_url" ]] && break
        sleep 0.1
    done
    [[ -n "$http_url" ]] || { echo "launch.sh: the coordinator's HTTP API did not start (see $logs)" >&2; exit 1; }
    echo "SPARSEKV_HTTP=$http_url"
fi
[[ $insecure -eq 1 ]] || echo "SPARSEKV_KEYS=$SPARSEKV_KEYS (a client's keys, authorized by the coordinator)"

if [[ ${#cmd[@]} -gt 0 ]]; then
    set +e
    SPARSEKV_CLUSTER="$ready" SPARSEKV_HTTP="$http_url" "${cmd[@]}"
    status=$?
    set -e
    stop_all
    exit $status
fi
# Serve until a signal; `wait` returns when one arrives (or the coordinator exits).
wait "${pids[0]}" || true
