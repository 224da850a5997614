#!/bin/bash
# Entrypoint of the SparseKV image: turns the SPARSEKV_* environment (docker/README.md)
# into sparsekv command lines.
#
#   sparsekv-entrypoint coordinator     serve: register workers, plan shards, answer clients
#   sparsekv-entrypoint worker          serve a layer range for the coordinator
#   sparsekv-entrypoint healthcheck ROLE   exit 0 when this coordinator/worker is up (see below)
#   sparsekv-entrypoint ARGS...         run `sparsekv ARGS...` (generate, cluster stats, ...)
set -eu

model="${SPARSEKV_HOME:-/var/lib/sparsekv}/models/${SPARSEKV_MODEL:-SmolLM2-135M-Instruct.Q4_1.gguf}"
port="${SPARSEKV_PORT:-5555}"
worker_port="${SPARSEKV_WORKER_PORT:-6001}"
threads="${SPARSEKV_THREADS:-1}"
# The coordinator's stdout is copied here; its READY line is what the health check reads.
ready_file="${TMPDIR:-/tmp}/sparsekv-coordinator.out"

fail() { echo "sparsekv-entrypoint: $*" >&2; exit 2; }

# Addresses, not names, go into endpoints: ZeroMQ resolves a name again on every
# reconnect, on its I/O thread, and a name that left the network (a drained or stopped
# container) can stall it for the resolver's whole timeout (20 s per try in Docker's DNS
# without a reachable upstream server).
address_of() { # NAME -> its first address, or NAME itself when it does not resolve
    getent hosts "$1" | awk '{ print $1; exit }' | grep . || echo "$1"
}

case "${1:-}" in
coordinator)
    shift
    [ -r "$model" ] || fail "no model at $model: mount the host's model folder on ${SPARSEKV_HOME:-/var/lib/sparsekv}/models (SPARSEKV_MODELS) and set SPARSEKV_MODEL to the file name"
    set -- coordinator --model "$model" --listen "tcp://0.0.0.0:$port" \
        --workers "${SPARSEKV_WORKERS:-3}" --kv "${SPARSEKV_KV:-csr:8,coef=i8}" -t "$threads" --insecure "$@"
    [ -n "${SPARSEKV_CTX:-}" ] && set -- "$@" --ctx "$SPARSEKV_CTX"
    [ -n "${SPARSEKV_DICT:-}" ] && set -- "$@" --dict "$SPARSEKV_DICT"
    [ -n "${SPARSEKV_HTTP_PORT:-}" ] && set -- "$@" --http "0.0.0.0:$SPARSEKV_HTTP_PORT"
    rm -f "$ready_file"
    # exec keeps sparsekv as the process that receives SIGTERM from `docker stop`; tee
    # (started by the shell before exec) copies its stdout for the health check.
    exec > >(tee "$ready_file")
    ;;
worker)
    shift
    [ -r "$model" ] || fail "no model at $model: mount the host's model folder on ${SPARSEKV_HOME:-/var/lib/sparsekv}/models (SPARSEKV_MODELS) and set SPARSEKV_MODEL to the file name"
    host="${SPARSEKV_ADVERTISE_HOST:-$(address_of "$(hostname)")}"
    id="${SPARSEKV_WORKER_ID:-worker-$(hostname)}"
    set -- worker --model "$model" --coordinator "${SPARSEKV_COORDINATOR:-tcp://$(address_of coordinator):$port}" \
        --listen "tcp://0.0.0.0:$worker_port" --advertise "tcp://$host:$worker_port" \
        --id "$id" --memory "${SPARSEKV_MEMORY:-2G}" -t "$threads" --insecure "$@"
    [ -n "${SPARSEKV_METRICS_PORT:-}" ] && set -- "$@" --metrics "0.0.0.0:$SPARSEKV_METRICS_PORT"
    ;;
healthcheck)
    # Coordinator: healthy once it printed READY (every worker loaded and acked the
    # dictionary). Worker: healthy while its socket answers a stats request.
    case "${2:-}" in
    coordinator) exec grep -q '^READY ' "$ready_file" ;;
    worker) exec timeout 5 sparsekv cluster stats --insecure --cluster "tcp://127.0.0.1:$worker_port" >/dev/null ;;
    *) fail "healthcheck takes the role: coordinator or worker" ;;
    esac
    ;;
"")
    set -- --help
    ;;
esac
exec sparsekv "$@"
