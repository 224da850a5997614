#!/usr/bin/env bash
# Starts a SparseKV cluster on emulated hosts: the coordinator, each worker and a client each
# in a network namespace of their own, joined by veth pairs to a bridge that lives in yet
# another namespace. Every link is rate-limited with tbf in both directions. Needs root.
#
#   cluster/netns-launch.sh [options]              run until Ctrl-C / SIGTERM, then remove everything
#   cluster/netns-launch.sh [options] -- CMD ...   run CMD in the client namespace with
#                                                  SPARSEKV_CLUSTER=<endpoint>, then remove everything
#   cluster/netns-launch.sh --cleanup PREFIX       remove what a SIGKILLed run with PREFIX left
#
# Options as launch.sh: -n WORKERS (3)  -p PORT (coordinator, 5555)  --kv SPEC (fp32)  --ctx N
#   --model PATH  --dict PATH  --memory BYTES (2G)  --bin PATH  --logs DIR  --threads N (1)
# and: --rate RATE     tbf rate of every link, each direction: N{bit,kbit,mbit,gbit} (100mbit)
#      --prefix NAME   namespace/interface name prefix, [a-z][a-z0-9]{0,7} (default skv + random)
#      --subnet A.B.C  the /24 used inside the namespaces only (10.77.0)
#      --measure BYTES before starting the cluster, time a bulk TCP transfer of BYTES
#                      client -> coordinator and back (python3); results in LOGS/rate.json
#      --net-only      namespaces and links only, no sparsekv processes
#      --prefill-workers K, --handoff-baseline ENC, --replicate   passed to the coordinator
# Hosts: PREFIX-co (.2, coordinator), PREFIX-w1.. (.11.., workers on port 6000), PREFIX-cl
# (.100, client), PREFIX-br (the bridge). Nothing is put in the root namespace. CMD also gets
# SPARSEKV_NETNS_PREFIX and SPARSEKV_NETNS_LOGS. On exit, error, SIGINT or SIGTERM every
# process group gets SIGTERM, then SIGKILL after 5 s, and every namespace made is deleted
# (which deletes its veth ends). LOGS gets pids (cluster processes), cmd.pid, namespaces.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
me="netns-launch.sh"
workers=3 port=5555 kv=fp32 ctx="" model="" dict="" memory=2G threads=1
rate=100mbit prefix="" subnet=10.77.0 measure=0 net_only=0 cleanup_prefix=""
bin="${SPARSEKV_BIN:-}"
logs=""
cmd=()
extra_coord=()
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
        --rate) rate="$2"; shift 2 ;;
        --prefix) prefix="$2"; shift 2 ;;
        --subnet) subnet="$2"; shift 2 ;;
        --measure) measure="$2"; shift 2 ;;
        --net-only) net_only=1; shift ;;
        --prefill-workers) extra_coord+=(--prefill-workers "$2"); shift 2 ;;
        --handoff-baseline) extra_coord+=(--handoff-baseline "$2"); shift 2 ;;
        --replicate) extra_coord+=(--replicate); shift ;;
        --cleanup) cleanup_prefix="$2"; shift 2 ;;
        --) shift; cmd=("$@"); break ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "$me: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "$me: $*" >&2; exit 1; }

# MARK: - Preconditions

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, veth pairs and tc); run it with sudo"
if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
    command -v apt-get >/dev/null || die "needs iproute2 (ip, tc); install it"
    echo "$me: installing iproute2 (ip, tc)" >&2
    apt-get update -q >/dev/null || die "apt-get update failed (offline?); install iproute2 by hand"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iproute2 >/dev/null \
        || die "apt-get install iproute2 failed"
fi

valid_prefix() { [[ $1 =~ ^[a-z][a-z0-9]{0,7}$ ]]; }
# Names of the namespaces a prefix owns: exactly PREFIX-br, PREFIX-co, PREFIX-cl, PREFIX-wN.
owned_namespaces() { ip netns list | awk '{print $1}' | grep -E "^$1-(br|co|cl|w[0-9]+)\$" || true; }

# Kills whatever still runs inside a namespace (only ours: we made it), then deletes it.
remove_namespace() {
    local ns="$1" p
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
}

if [[ -n "$cleanup_prefix" ]]; then
    valid_prefix "$cleanup_prefix" || die "--cleanup takes a prefix like skv1a2b3 (got '$cleanup_prefix')"
    found="$(owned_namespaces "$cleanup_prefix")"
    for ns in $found; do remove_namespace "$ns"; echo "$me: removed namespace $ns" >&2; done
    [[ -n "$found" ]] || echo "$me: no namespaces with prefix $cleanup_prefix" >&2
    exit 0
fi

# tc rate -> bit/s (decimal units, as tc reads them).
rate_bits() {
    local r="${1,,}" m
    [[ $r =~ ^([0-9]+)(bit|kbit|mbit|gbit)$ ]] || return 1
    case "${BASH_REMATCH[2]}" in bit) m=1 ;; kbit) m=1000 ;; mbit) m=1000000 ;; gbit) m=1000000000 ;; esac
    echo $((BASH_REMATCH[1] * m))
}
rate_bps="$(rate_bits "$rate")" || die "--rate takes N followed by bit, kbit, mbit or gbit, e.g. 100mbit (got '$rate')"
[[ $rate_bps -ge 1000000 ]] || die "--rate below 1mbit is too slow to load a cluster"
[[ $workers =~ ^[0-9]+$ && $workers -ge 1 && $workers -le 80 ]] || die "-n takes 1..80 workers (got '$workers')"
[[ $subnet =~ ^(10|192\.168|172\.(1[6-9]|2[0-9]|3[01]))(\.[0-9]{1,3}){1,2}$ && $(tr -cd . <<<"$subnet" | wc -c) -eq 2 ]] \
    || die "--subnet takes the first three octets of a private /24, e.g. 10.77.0 (got '$subnet')"
[[ $measure =~ ^[0-9]+$ ]] || die "--measure takes a byte count (got '$measure')"
if [[ $measure -gt 0 ]]; then command -v python3 >/dev/null || die "--measure needs python3"; fi

if [[ -z "$prefix" ]]; then
    prefix="skv$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-5)"
fi
valid_prefix "$prefix" || die "--prefix takes [a-z][a-z0-9]{0,7}, e.g. skv1 (got '$prefix')"
[[ -z "$(owned_namespaces "$prefix")" ]] || die "namespaces with prefix $prefix exist already (another run, or '$0 --cleanup $prefix')"

if [[ $net_only -eq 0 ]]; then
    if [[ -z "$bin" ]]; then
        for b in "$root/.build/release/sparsekv" "$root/.build-nodes/release/sparsekv"; do
            [[ -x "$b" ]] && bin="$b" && break
        done
    fi
    [[ -x "$bin" ]] || die "no sparsekv binary; build it (swift build -c release) or pass --bin PATH"
    bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
fi
[[ -n "$logs" ]] || logs="$(mktemp -d -t sparsekv-netns.XXXXXX)"
mkdir -p "$logs"

# MARK: - Teardown (armed before anything is made)

pids=()            # process group leaders we started (sparsekv processes, CMD)
made=()            # namespaces we made, bridge first
stopped=0
stop_all() {
    [[ $stopped -eq 1 ]] && return
    stopped=1
    local p alive ns i
    for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    # Grace period for a clean exit (the coordinator also tells its workers to shut down).
    for _ in $(seq 50); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    # Nodes before the bridge; deleting a node's namespace deletes its veth pair.
    for ((i = ${#made[@]} - 1; i >= 0; i--)); do remove_namespace "${made[i]}"; done
    if [[ ${#made[@]} -gt 0 ]]; then
        local left
        left="$(owned_namespaces "$prefix")$(ip -br link 2>/dev/null | awk '{print $1}' | grep "^$prefix-" || true)"
        if [[ -n "$left" ]]; then
            echo "$me: could not remove: $left" >&2
        else
            echo "$me: removed namespaces $prefix-* and their links" >&2
        fi
    fi
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

# MARK: - Namespaces, bridge, links

bridge_ns="$prefix-br"
coord_ns="$prefix-co" coord_ip="$subnet.2"
client_ns="$prefix-cl" client_ip="$subnet.100"
worker_ns() { echo "$prefix-w$1"; }
worker_ip() { echo "$subnet.$((10 + $1))"; }

# Bucket of at least rate/250 s (the classic HZ rule) and 32 KiB; 20 ms of queue.
burst=$((rate_bps / 8 / 250)); [[ $burst -ge 32768 ]] || burst=32768
shape() { tc -n "$1" qdisc add dev "$2" root tbf rate "$rate" burst "$burst" latency 20ms; }

made+=("$bridge_ns"); ip netns add "$bridge_ns"
ip -n "$bridge_ns" link add "$prefix-br" type bridge
ip -n "$bridge_ns" link set "$prefix-br" up

# A host: namespace NS with interface PREFIX-TAG (address IP/24) whose peer PREFIX-TAGb is a
# bridge port; both ends shaped, so the link is limited in each direction.
add_host() {
    local ns="$1" tag="$2" addr="$3"
    made+=("$ns"); ip netns add "$ns"   # recorded first: a signal in between still removes it
    ip -n "$ns" link set lo up
    ip -n "$ns" link add "$prefix-$tag" type veth peer name "$prefix-${tag}b" netns "$bridge_ns"
    ip -n "$bridge_ns" link set "$prefix-${tag}b" master "$prefix-br" up
    ip -n "$ns" addr add "$addr/24" dev "$prefix-$tag"
    ip -n "$ns" link set "$prefix-$tag" up
    shape "$ns" "$prefix-$tag"
    shape "$bridge_ns" "$prefix-${tag}b"
}
add_host "$coord_ns" co "$coord_ip"
add_host "$client_ns" cl "$client_ip"
for i in $(seq "$workers"); do add_host "$(worker_ns "$i")" "w$i" "$(worker_ip "$i")"; done
printf '%s\n' "${made[@]}" >"$logs/namespaces"
echo "$me: ${#made[@]} namespaces $prefix-*, links at $rate each way (tbf burst $burst B), subnet $subnet.0/24" >&2

# MARK: - Rate check

# One transfer FROM_NS -> TO_NS:TO_IP; prints the receiver's JSON line.
bulk() {
    local from="$1" to="$2" to_ip="$3" out="$logs/bulk.$$" rpid
    ip netns exec "$to" python3 "$here/netns_bulk.py" recv "$to_ip" 5999 >"$out" &
    rpid=$!
    ip netns exec "$from" python3 "$here/netns_bulk.py" send "$to_ip" 5999 "$measure" \
        || { kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; die "bulk transfer $from -> $to failed"; }
    wait "$rpid" || die "bulk receiver in $to failed"
    cat "$out"; rm -f "$out"
}
if [[ $measure -gt 0 ]]; then
    up="$(bulk "$client_ns" "$coord_ns" "$coord_ip")"
    down="$(bulk "$coord_ns" "$client_ns" "$client_ip")"
    python3 - "$rate" "$rate_bps" "$up" "$down" "$logs/rate.json" <<'PY'
import json, sys
rate, bps, up, down, path = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
runs = [dict(direction="client->coordinator", **up), dict(direction="coordinator->client", **down)]
for r in runs:
    r["configuredMbitPerSecond"] = bps / 1e6
    r["ratio"] = round(r["mbitPerSecond"] / (bps / 1e6), 3)
    print(f"rate check {r['direction']:20s} {r['bytes']:>12,} B in {r['seconds']:7.3f} s: "
          f"{r['mbitPerSecond']:9.2f} Mbit/s (configured {rate}, ratio {r['ratio']:.3f})", file=sys.stderr)
json.dump({"rate": rate, "transfers": runs}, open(path, "w"), indent=1)
PY
fi

if [[ $net_only -eq 1 ]]; then
    export SPARSEKV_NETNS_PREFIX="$prefix" SPARSEKV_NETNS_LOGS="$logs"
    if [[ ${#cmd[@]} -gt 0 ]]; then
        setsid ip netns exec "$client_ns" "${cmd[@]}" <&0 &
        pids+=($!)
        set +e; wait "${pids[-1]}"; status=$?; set -e
        stop_all; exit $status
    fi
    echo "$me: network up (no cluster); client namespace $client_ns; Ctrl-C removes it" >&2
    setsid sleep infinity & pids+=($!); wait "${pids[-1]}" || true
    exit 0
fi

# MARK: - Cluster

model_args=(); [[ -n "$model" ]] && model_args=(--model "$model")
# Plaintext links, explicitly (no CURVE keys here yet; cluster/launch.sh has them): the
# processes get --insecure, and CMD's sparsekv clients SPARSEKV_INSECURE=1.
export SPARSEKV_INSECURE=1
endpoint="tcp://$coord_ip:$port"
coord_args=(--listen "$endpoint" --workers "$workers" --kv "$kv" -t "$threads" "${extra_coord[@]}")
[[ -n "$ctx" ]] && coord_args+=(--ctx "$ctx")
[[ -n "$dict" ]] && coord_args+=(--dict "$dict")

# setsid gives each process its own process group; `ip netns exec` execs the command, so the
# pid is the sparsekv process itself.
setsid ip netns exec "$coord_ns" "$bin" coordinator "${model_args[@]}" "${coord_args[@]}" --insecure \
    >"$logs/coordinator.out" 2>"$logs/coordinator.log" &
pids+=($!)
echo "${pids[-1]}" >"$logs/pids"   # one line per process, as each starts

listening=""
for _ in $(seq 600); do
    listening="$(sed -n 's/^LISTENING //p' "$logs/coordinator.out" 2>/dev/null | head -1)"
    [[ -n "$listening" ]] && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "$me: the coordinator exited:" >&2; cat "$logs/coordinator.log" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$listening" ]] || die "the coordinator did not start (see $logs)"

# One worker at a time, each once the coordinator has registered the one before: the plan
# follows the order of registration, so w1, w2, ... get the layers in that order on every run
# (started together, a worker that loads faster could register first and change the plan).
for i in $(seq "$workers"); do
    setsid ip netns exec "$(worker_ns "$i")" "$bin" worker "${model_args[@]}" --coordinator "$endpoint" \
        --listen "tcp://$(worker_ip "$i"):6000" --id "w$i" --memory "$memory" -t "$threads" --insecure \
        >"$logs/w$i.out" 2>"$logs/w$i.log" &
    pids+=($!)
    echo "${pids[-1]}" >>"$logs/pids"
    [[ "$i" -lt "$workers" ]] || break
    for _ in $(seq 1200); do
        grep -q "registered w$i at" "$logs/coordinator.log" 2>/dev/null && break
        kill -0 "${pids[-1]}" 2>/dev/null || break   # reported by the readiness loop below
        sleep 0.1
    done
done

ready=""
for _ in $(seq 1800); do
    ready="$(sed -n 's/^READY //p' "$logs/coordinator.out" 2>/dev/null | head -1)"
    [[ -n "$ready" ]] && break
    for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { echo "$me: a process exited before the cluster was ready (logs in $logs):" >&2; tail -n 5 "$logs"/*.log >&2; exit 1; }
    done
    sleep 0.1
done
[[ -n "$ready" ]] || die "the cluster did not get ready in 180 s (logs in $logs)"
echo "SPARSEKV_CLUSTER=$ready (client namespace $client_ns; logs in $logs)"

export SPARSEKV_CLUSTER="$ready" SPARSEKV_NETNS_PREFIX="$prefix" SPARSEKV_NETNS_LOGS="$logs"
if [[ ${#cmd[@]} -gt 0 ]]; then
    # In the background (own process group), so a signal to this script is handled at once.
    setsid ip netns exec "$client_ns" "${cmd[@]}" <&0 &
    pids+=($!)
    echo "${pids[-1]}" >"$logs/cmd.pid"
    set +e; wait "${pids[-1]}"; status=$?; set -e
    stop_all
    exit $status
fi
echo "$me: e.g. ip netns exec $client_ns $bin generate --cluster $ready -p 'The capital of France is' -n 16" >&2
# Serve until a signal; `wait` returns when one arrives (or the coordinator exits).
wait "${pids[0]}" || true
