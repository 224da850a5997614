#!/usr/bin/env bash
# End-to-end test of the docker compose cluster (docker/compose.yaml): coordinator + 3
# workers in containers, a generation and a KV drain through them, tokens checked against
# a local single-process run with the same settings.
#
#   cluster/docker-e2e.sh [--bin PATH] [--kv SPEC] [--keep-logs]   (as root; `make docker-e2e`)
#
# Steps: Debian packages (docker.io, docker-compose, debootstrap) if missing; a Docker
# engine (dockerd started in the background if none answers, stopped at exit); the base
# image (debootstrap + docker import, no registry needed; the rootfs tarball is cached);
# the project image from the prebuilt binary (docker/Dockerfile --target prebuilt);
# with the Prometheus profile, its image from Debian's prometheus package (debootstrap too);
# compose up; wait for READY; generate and compare; the HTTP API (streamed chat, /metrics
# against the socket counters); Prometheus scraping the coordinator and the workers; drain
# w2 during a CLI generation and a streamed HTTP completion, both compared with a local run;
# byte counters; compose down. On any failure or signal it says which step
# failed, shows the containers' logs, brings everything down and exits non-zero; the run's
# folder (container and dockerd logs, client output) is kept then, or with --keep-logs.
#
# Environment:
#   SPARSEKV_BIN               sparsekv binary (default .build/release/sparsekv; --bin)
#   SPARSEKV_HOME              model and texts (default ~/.cache/sparsekv; scripts/setup.sh)
#   SPARSEKV_E2E_KV            KV cache spec for cluster and reference (default csr:8,coef=i8; --kv)
#   SPARSEKV_E2E_SKIP_DRAIN=1  skip the drain step (for a sparsekv without `cluster drain`)
#   SPARSEKV_E2E_DRAIN         worker id to drain (default w2)
#   SPARSEKV_BASE_IMAGE        base image (default sparsekv-base:bookworm, made here when
#                              missing; e.g. debian:bookworm-slim where a registry is reachable)
#   SPARSEKV_E2E_CACHE         where the base rootfs tarball is kept (default $SPARSEKV_HOME/docker)
#   SPARSEKV_E2E_SKIP_PROMETHEUS=1  skip the compose Prometheus profile
#   SPARSEKV_PROMETHEUS_IMAGE  its image (default sparsekv-prometheus:bookworm, made here from
#                              Debian's prometheus package with debootstrap when missing)
#   SPARSEKV_DEBIAN_MIRROR     debootstrap mirror (default: the Debian archive this machine's
#                              apt uses, from /etc/apt/sources.list(.d), else deb.debian.org)
set -euo pipefail
# Plaintext links, explicitly: every sparsekv process here runs as with --insecure.
export SPARSEKV_INSECURE=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"

bin="${SPARSEKV_BIN:-.build/release/sparsekv}"
kv="${SPARSEKV_E2E_KV:-csr:8,coef=i8}"
keep_logs=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --kv) kv="$2"; shift 2 ;;
        --keep-logs) keep_logs=1; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "docker-e2e.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

home_dir="${SPARSEKV_HOME:-$HOME/.cache/sparsekv}"
model_file="SmolLM2-135M-Instruct.Q4_1.gguf"
model="$home_dir/models/$model_file"
dict="$root/dicts/${model_file%.gguf}.csr.gguf"
base_image="${SPARSEKV_BASE_IMAGE:-sparsekv-base:bookworm}"
cache_dir="${SPARSEKV_E2E_CACHE:-$home_dir/docker}"
# The machine's own Debian archive: the first `deb` entry (one-line or deb822 .sources)
# whose suite is a plain release (not -security/-updates), so debootstrap works wherever apt does.
apt_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        case "$f" in
            *.sources)
                awk 'BEGIN { RS = ""; FS = "\n" }
                     { uri = ""; suite = ""; deb = 0
                       for (i = 1; i <= NF; i++) {
                         if ($i ~ /^Types:.*(^|[ \t])deb([ \t]|$)/) deb = 1
                         if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
                         if ($i ~ /^Suites:/) { split($i, a, /[ \t]+/); suite = a[2] } }
                       if (deb && uri != "" && suite !~ /-(security|updates|backports)$/) { print uri; exit } }' "$f" ;;
            *)
                awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                   if ($(i + 1) !~ /-(security|updates|backports)$/) { print $i; exit } }' "$f" ;;
        esac
    done | head -1
}
mirror="${SPARSEKV_DEBIAN_MIRROR:-$(apt_mirror)}"
mirror="${mirror:-http://deb.debian.org/debian}"
drain_id="${SPARSEKV_E2E_DRAIN:-w2}"
prometheus=1; [[ "${SPARSEKV_E2E_SKIP_PROMETHEUS:-0}" == 1 ]] && prometheus=0
prometheus_image="${SPARSEKV_PROMETHEUS_IMAGE:-sparsekv-prometheus:bookworm}"
image="sparsekv:e2e"
project="sparsekve2e$$"
ctx=2048
n_short=24 n_long=64
# The legacy builder is what Debian's docker.io has; a newer CLI without buildx needs it too.
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"

run_dir="$(mktemp -d -t sparsekv-docker-e2e.XXXXXX)"
t0=$SECONDS
step_name="start"
step_t0=$SECONDS
dockerd_pid=""
compose_up=0
rootfs=""
debootstrap_pid=""
bg_pids=()
compose=()

step() {
    [[ "$step_name" != start ]] && echo "   ($((SECONDS - step_t0)) s)"
    step_name="$1"; step_t0=$SECONDS
    echo "== [$((SECONDS - t0)) s] $step_name"
}
die() { echo "docker-e2e: $*" >&2; exit 1; }

# MARK: - cleanup (runs on every exit: success, failure, Ctrl-C, SIGTERM)

show_logs() {
    [[ $compose_up -eq 1 ]] || return 0
    echo "---- containers" >&2
    docker ps -a --filter "label=com.docker.compose.project=$project" \
        --format '{{.Names}}\t{{.Status}}' >&2 || true
    echo "---- container logs (last 40 lines each)" >&2
    "${compose[@]}" logs --no-color --tail 40 >&2 2>&1 || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    if [[ $status -ne 0 ]]; then
        echo "" >&2
        case $status in
            130|143) echo "docker-e2e: INTERRUPTED in step: $step_name (exit $status)" >&2 ;;
            *) echo "docker-e2e: FAILED in step: $step_name (exit $status)" >&2 ;;
        esac
        for f in "$run_dir"/*.err; do
            [[ -s "$f" ]] && { echo "---- $(basename "$f")" >&2; tail -n 20 "$f" >&2; }
        done
        show_logs
    fi
    for p in "${bg_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${bg_pids[@]}"; do wait "$p" 2>/dev/null; done
    if [[ $compose_up -eq 1 ]]; then
        echo "== [$((SECONDS - t0)) s] bringing the cluster down" >&2
        "${compose[@]}" logs --no-color --timestamps >"$run_dir/containers.log" 2>&1
        # The coordinator first: it tells its workers to shut down.
        "${compose[@]}" stop -t 10 coordinator >/dev/null 2>&1
        "${compose[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1 \
            || echo "docker-e2e: compose down failed" >&2
        left="$(docker ps -aq --filter "label=com.docker.compose.project=$project")"
        [[ -n "$left" ]] && docker rm -f $left >/dev/null 2>&1
        docker network ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker network rm >/dev/null 2>&1
    fi
    if [[ -n "$debootstrap_pid" ]]; then
        kill -TERM -- "-$debootstrap_pid" 2>/dev/null
        wait "$debootstrap_pid" 2>/dev/null
    fi
    if [[ -n "$rootfs" && -d "$rootfs" ]]; then
        # debootstrap mounts proc/sys inside the target; never delete through a mount.
        grep -o " $rootfs[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
        rm -rf --one-file-system "$rootfs"
    fi
    if [[ -n "$dockerd_pid" ]]; then
        echo "== [$((SECONDS - t0)) s] stopping the Docker engine this script started (pid $dockerd_pid)" >&2
        kill -TERM "$dockerd_pid" 2>/dev/null
        for _ in $(seq 150); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$dockerd_pid" 2>/dev/null; then
            echo "docker-e2e: dockerd did not stop in 30 s; killing it" >&2
            kill -KILL -- "-$dockerd_pid" 2>/dev/null
        fi
        wait "$dockerd_pid" 2>/dev/null
    fi
    if [[ $status -eq 0 && $keep_logs -eq 0 ]]; then
        rm -rf "$run_dir"
    elif ! rmdir "$run_dir" 2>/dev/null; then
        echo "docker-e2e: files of this run (container, dockerd and client logs) are in $run_dir" >&2
    fi
    [[ $status -eq 0 ]] && echo "== [$((SECONDS - t0)) s] docker e2e passed"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# MARK: - checks and packages

step "checks and packages"
[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts dockerd)"
[[ -d "$(dirname "$bin")" ]] && bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
[[ -x "$bin" ]] || die "no sparsekv binary at $bin: build it (swift build -c release --product sparsekv) or pass --bin PATH"
[[ -r "$model" ]] || die "no model at $model: run scripts/setup.sh"
[[ -r "$dict" ]] || die "no dictionary at $dict"

need=()
command -v docker >/dev/null && command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
command -v python3 >/dev/null || need+=(python3)
if [[ "$base_image" == sparsekv-base:bookworm ]]; then command -v debootstrap >/dev/null || need+=(debootstrap); fi
if [[ ${#need[@]} -gt 0 ]]; then
    echo "   installing Debian packages: ${need[*]}"
    apt-get update -q >"$run_dir/apt.err" 2>&1 || die "apt-get update failed (see $run_dir/apt.err)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" \
        >"$run_dir/apt.err" 2>&1 || die "apt-get install ${need[*]} failed"
fi
if command -v docker-compose >/dev/null; then
    compose=(docker-compose -p "$project" -f "$root/docker/compose.yaml")
else
    compose=(docker compose -p "$project" -f "$root/docker/compose.yaml")
fi
[[ $prometheus -eq 1 ]] && compose+=(--profile prometheus)

cluster_help="$("$bin" cluster --help 2>&1 || true)"
drain_supported=1
grep -qE '^\s+drain\b' <<<"$cluster_help" || drain_supported=0
if [[ "${SPARSEKV_E2E_SKIP_DRAIN:-0}" != 1 && $drain_supported -eq 0 ]]; then
    die "$bin has no 'cluster drain' command; build a newer one or set SPARSEKV_E2E_SKIP_DRAIN=1"
fi

# MARK: - engine

step "Docker engine"
if docker info >/dev/null 2>&1; then
    echo "   using the running engine"
else
    # No default bridge, no iptables/NAT rules, no forwarding changes: the compose network
    # (a bridge of its own) carries container-to-container traffic, the published port on
    # 127.0.0.1 goes through docker-proxy, and nothing is left on the host afterwards.
    setsid dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
        >"$run_dir/dockerd.log" 2>&1 &
    dockerd_pid=$!
    echo "   started dockerd (pid $dockerd_pid, log $run_dir/dockerd.log)"
    for _ in $(seq 120); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || { tail -n 20 "$run_dir/dockerd.log" >&2; die "dockerd exited"; }
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { tail -n 20 "$run_dir/dockerd.log" >&2; die "dockerd did not answer in 60 s"; }
fi

# MARK: - base image

# Makes image NAME from a debootstrap'ed bookworm minbase with PACKAGES (comma list); the
# rootfs tarball is cached in $cache_dir. Extra arguments go to `docker import` (-c ...).
bootstrap_image() { # NAME PACKAGES TARBALL [IMPORT ARGS...]
    local name="$1" packages="$2" tarball="$3"; shift 3
    if [[ ! -s "$tarball" ]]; then
        mkdir -p "$cache_dir"
        rootfs="$run_dir/rootfs"
        echo "   debootstrap bookworm (minbase + $packages) from $mirror"
        # In the background, in its own process group: a signal to this script stops it at once.
        setsid debootstrap --variant=minbase --include="$packages" \
            bookworm "$rootfs" "$mirror" >"$run_dir/debootstrap.err" 2>&1 &
        debootstrap_pid=$!
        wait "$debootstrap_pid" || die "debootstrap failed (see $run_dir/debootstrap.err)"
        debootstrap_pid=""
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
            "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
            "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/info/*
        tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf --one-file-system "$rootfs"; rootfs=""
    else
        echo "   from the cached rootfs $tarball"
    fi
    docker import "$@" "$tarball" "$name" >/dev/null
}

step "base image $base_image"
if docker image inspect "$base_image" >/dev/null 2>&1; then
    echo "   present"
elif [[ "$base_image" != sparsekv-base:bookworm ]]; then
    echo "   not present; the build pulls it"
else
    bootstrap_image "$base_image" libzmq5,libopenblas0-pthread "$cache_dir/sparsekv-base-bookworm.rootfs.tar" -c 'CMD ["/bin/bash"]'
fi

if [[ $prometheus -eq 1 ]]; then
    step "Prometheus image $prometheus_image"
    if docker image inspect "$prometheus_image" >/dev/null 2>&1; then
        echo "   present"
    elif [[ "$prometheus_image" != sparsekv-prometheus:bookworm ]]; then
        echo "   not present; compose pulls it"
    else
        # Debian's prometheus package: the same flags as prom/prometheus, binary in /usr/bin.
        bootstrap_image "$prometheus_image" prometheus "$cache_dir/sparsekv-prometheus-bookworm.rootfs.tar" \
            -c 'ENTRYPOINT ["/usr/bin/prometheus"]' -c 'WORKDIR /var/lib/prometheus'
    fi
fi

# MARK: - project image

step "project image $image (prebuilt binary)"
context="$run_dir/context"
mkdir -p "$context/docker/prebuilt/bin" "$context/docker/prebuilt/lib" "$context/dicts"
cp "$root"/dicts/*.csr.gguf "$context/dicts/"
cp "$root/docker/entrypoint.sh" "$context/docker/"
cp "$bin" "$context/docker/prebuilt/bin/sparsekv"
# Shared libraries Debian does not provide (the Swift runtime of a non-static build).
libs="$(ldd "$bin")" || die "ldd $bin failed"
! grep -q 'not found' <<<"$libs" || die "ldd $bin: $(grep 'not found' <<<"$libs")"
awk '$2 == "=>" && $3 ~ /^\// && $3 !~ /^\/(usr\/)?lib(32|64|x32)?\// { print $3 }' <<<"$libs" \
    | while read -r lib; do cp -L "$lib" "$context/docker/prebuilt/lib/"; done
docker build -f "$root/docker/Dockerfile" --target prebuilt --build-arg "BASE_IMAGE=$base_image" \
    -t "$image" "$context" >"$run_dir/build.err" 2>&1 || { tail -n 30 "$run_dir/build.err" >&2; die "docker build failed"; }
rm -rf "$context"

# MARK: - cluster

step "compose up (coordinator + 3 workers, kv $kv, ctx $ctx)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
endpoint="tcp://127.0.0.1:$port"
http_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export SPARSEKV_HTTP_PORT="$http_port"
export SPARSEKV_IMAGE="$image" SPARSEKV_PORT="$port" SPARSEKV_MODELS="$home_dir/models" \
    SPARSEKV_MODEL="$model_file" SPARSEKV_KV="$kv" SPARSEKV_CTX="$ctx" SPARSEKV_WORKERS=3 \
    SPARSEKV_THREADS=1 SPARSEKV_MEMORY=2G SPARSEKV_BIND=127.0.0.1
unset SPARSEKV_DICT
if [[ $prometheus -eq 1 ]]; then
    prometheus_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    # docker/prometheus.yml with this run's HTTP port.
    sed "s/coordinator:8080/coordinator:$http_port/" "$root/docker/prometheus.yml" >"$run_dir/prometheus.yml"
    export SPARSEKV_PROMETHEUS_IMAGE="$prometheus_image" SPARSEKV_PROMETHEUS_PORT="$prometheus_port" \
        SPARSEKV_PROMETHEUS_CONFIG="$run_dir/prometheus.yml"
fi
compose_up=1
"${compose[@]}" up -d >"$run_dir/compose-up.err" 2>&1 || { cat "$run_dir/compose-up.err" >&2; die "compose up failed"; }

# The local single-process references run meanwhile (same model, cache, dictionary, ctx).
short_prompt="The capital of France is"
long_prompt="$run_dir/long-prompt.txt"
if [[ -r "$home_dir/texts/alice29.txt" ]]; then
    head -c 3000 "$home_dir/texts/alice29.txt" >"$long_prompt"
else
    for _ in $(seq 12); do echo "The quick brown fox jumps over the lazy dog while the cluster keeps its caches small."; done >"$long_prompt"
fi
local_args=(--model "$model" --kv "$kv" --dict "$dict" --ctx "$ctx" -t 1 --ignore-eos --json)
"$bin" generate "${local_args[@]}" --prompt "$short_prompt" -n $n_short \
    >"$run_dir/ref-short.json" 2>"$run_dir/ref-short.err" &
ref_short_pid=$!; bg_pids+=($ref_short_pid)
"$bin" generate "${local_args[@]}" --prompt-file "$long_prompt" -n $n_long \
    >"$run_dir/ref-long.json" 2>"$run_dir/ref-long.err" &
ref_long_pid=$!; bg_pids+=($ref_long_pid)

step "waiting for READY"
coordinator_id="$("${compose[@]}" ps -q coordinator)"
[[ -n "$coordinator_id" ]] || die "no coordinator container"
health=""
for _ in $(seq 240); do
    health="$(docker inspect -f '{{.State.Health.Status}}' "$coordinator_id")"
    [[ "$health" == healthy ]] && break
    exited="$(docker ps -a --filter "label=com.docker.compose.project=$project" --filter status=exited --format '{{.Names}}')"
    [[ -z "$exited" ]] || die "container(s) exited before the cluster was ready: $exited"
    sleep 0.5
done
[[ "$health" == healthy ]] || die "the coordinator is not healthy after 120 s (status: $health)"
docker logs "$coordinator_id" 2>&1 | grep -E 'cluster ready' | sed 's/^/   /'

# Runs `sparsekv generate --cluster` with retries while the coordinator says "not ready".
cluster_generate() { # OUT ERR ARGS...
    local out="$1" err="$2"; shift 2
    for _ in $(seq 20); do
        "$bin" generate --cluster "$endpoint" --json "$@" >"$out" 2>"$err" && return 0
        grep -q 'not ready' "$err" || return 1
        sleep 0.5
    done
    return 1
}
same_tokens() { # A.json B.json -> prints a verdict, exit 0 when generatedTokens are equal
    python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ta, tb = a["generatedTokens"], b["generatedTokens"]
if ta == tb and ta:
    print(f"   {len(ta)} generated tokens equal to the local single-process run")
    sys.exit(0)
print(f"   cluster tokens   {ta}\n   reference tokens {tb}")
sys.exit(1)
PY
}
wait_pid() { # PID SECONDS: wait for a background process, fail after SECONDS
    local pid="$1"
    for _ in $(seq $(( $2 * 5 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && return 124
    wait "$pid"
}

step "generate through the cluster ($n_short tokens) and compare"
cluster_generate "$run_dir/short.json" "$run_dir/short.err" --prompt "$short_prompt" -n $n_short --ignore-eos \
    || die "generate --cluster failed"
wait_pid "$ref_short_pid" 300 || die "the local reference run failed"
same_tokens "$run_dir/short.json" "$run_dir/ref-short.json" || die "cluster tokens differ from the local run"
printf '   text: %s\n' "$(python3 -c 'import json,sys; print(repr(json.load(open(sys.argv[1]))["text"]))' "$run_dir/short.json")"

step "HTTP API (the coordinator's, published on :$http_port): streamed = non-streamed chat, /metrics = socket counters"
python3 - "http://127.0.0.1:$http_port" "$bin" "$endpoint" <<'PY' || die "the HTTP API check failed"
import json, subprocess, sys, urllib.request
base, bin_, endpoint = sys.argv[1:4]
def post(body):
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=300).read().decode()
ask = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 8, "temperature": 0}
whole = json.loads(post(ask))["choices"][0]["message"]["content"]
events = [e[6:] for e in post(dict(ask, stream=True)).split("\n\n") if e.startswith("data: ")]
assert events[-1] == "[DONE]", "the stream does not end with [DONE]"
pieces = [json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if json.loads(e)["choices"]]
assert "".join(pieces) == whole, f"streamed {''.join(pieces)!r} != {whole!r}"
print(f"   chat: {whole!r}, streamed in {len(events) - 1} chunks")
stats = json.loads(subprocess.run([bin_, "cluster", "stats", "--cluster", endpoint], check=True, capture_output=True, text=True).stdout)
metrics = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
got = {}
for line in metrics.splitlines():
    if line.startswith("sparsekv_wire_bytes_total{"):
        labels, value = line[len("sparsekv_wire_bytes_total{"):].rsplit("} ", 1)
        d = dict(kv.split("=", 1) for kv in labels.split(","))
        got[(d["peer"].strip('"'), d["kind"].strip('"'), d["direction"].strip('"'))] = float(value)
n = 0
for peer, kinds in stats["byPeer"].items():
    if peer not in ("w1", "w2", "w3"):
        continue
    for kind in ("activations", "kv", "dictionary"):
        for direction, field in (("sent", "sentBytes"), ("received", "receivedBytes")):
            assert got.get((peer, kind, direction), 0.0) == kinds[kind][field], f"{peer} {kind} {direction}"
            n += 1
print(f"   /metrics wire bytes equal the coordinator's socket counters ({n} series)")
PY

if [[ $prometheus -eq 1 ]]; then
    step "Prometheus (compose profile, published on :$prometheus_port) scrapes the coordinator and the 3 workers"
    python3 - "http://127.0.0.1:$prometheus_port" <<'PY' || die "Prometheus did not scrape the cluster"
import json, sys, time, urllib.parse, urllib.request
base = sys.argv[1]
def get(path):
    return json.loads(urllib.request.urlopen(base + path, timeout=10).read().decode())["data"]
def query(q):
    return get("/api/v1/query?query=" + urllib.parse.quote(q))["result"]
deadline, targets = time.time() + 90, []
while time.time() < deadline:
    try:
        targets = get("/api/v1/targets")["activeTargets"]
        if len(targets) == 4 and all(t["health"] == "up" for t in targets):
            break
    except OSError:
        pass
    time.sleep(1)
print("   targets: " + ", ".join(f"{t['labels']['instance']} {t['health']}" for t in targets))
assert len(targets) == 4 and all(t["health"] == "up" for t in targets), "not every target is up"
ready = {r["metric"]["worker"]: r["value"][1] for r in query("sparsekv_worker_ready")}
assert ready == {"w1": "1", "w2": "1", "w3": "1"}, f"sparsekv_worker_ready {ready}"
# The coordinator sends activations to the first worker of the pipeline only.
sent = query('sum(sparsekv_wire_bytes_total{job="sparsekv",kind="activations",direction="sent"})')
assert sent and float(sent[0]["value"][1]) > 0, f"coordinator activation bytes {sent}"
workers = query('sum by (instance) (sparsekv_wire_bytes_total{job="sparsekv-workers",kind="activations",direction="received"})')
assert len(workers) == 3 and all(float(r["value"][1]) > 0 for r in workers), f"worker activation bytes {workers}"
print(f"   sparsekv_worker_ready {ready}; activation bytes scraped: coordinator sent {sent[0]['value'][1]}, "
      + ", ".join(f"{r['metric']['instance']} received {r['value'][1]}" for r in workers))
PY
fi

if [[ "${SPARSEKV_E2E_SKIP_DRAIN:-0}" == 1 ]]; then
    step "drain $drain_id: SKIPPED (SPARSEKV_E2E_SKIP_DRAIN=1)"
else
    step "drain $drain_id during a $n_long-token generation"
    sessions_before="$(docker logs "$coordinator_id" 2>&1 | grep -cE 'session [0-9]+: [0-9]+ prompt tokens' || true)"
    # A streamed HTTP text completion of the same prompt runs through the drain too.
    python3 - "http://127.0.0.1:$http_port" "$long_prompt" $n_long >"$run_dir/http-stream.json" 2>"$run_dir/http-stream.err" <<'PY' &
import json, sys, urllib.request
base, prompt_file, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
# The bytes as they are (alice29.txt has CRLF line ends, which text mode would turn into LF).
body = {"prompt": open(prompt_file, "rb").read().decode(), "max_tokens": n, "temperature": 0, "stream": True}
req = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
pieces, finish, error, done, chunks = [], None, None, False, 0
with urllib.request.urlopen(req, timeout=600) as r:
    for line in r:
        line = line.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            break
        o = json.loads(data)
        if "error" in o:
            error = o["error"]
            continue
        for c in o.get("choices", []):
            pieces.append(c.get("text") or "")
            finish = c.get("finish_reason") or finish
            chunks += 1
print(json.dumps({"text": "".join(pieces), "finish_reason": finish, "error": error, "done": done, "chunks": chunks}))
PY
    http_pid=$!; bg_pids+=($http_pid)
    "$bin" generate --cluster "$endpoint" --json --prompt-file "$long_prompt" -n $n_long --ignore-eos \
        >"$run_dir/long.json" 2>"$run_dir/long.err" &
    long_pid=$!; bg_pids+=($long_pid)
    started=0
    for _ in $(seq 300); do
        n="$(docker logs "$coordinator_id" 2>&1 | grep -cE 'session [0-9]+: [0-9]+ prompt tokens' || true)"
        [[ "$n" -gt $((sessions_before + 1)) ]] && { started=1; break; }
        kill -0 "$long_pid" 2>/dev/null || break
        sleep 0.2
    done
    [[ $started -eq 1 ]] || die "the long generation and the HTTP stream did not both start a session"
    kill -0 "$long_pid" 2>/dev/null || die "the generation ended before the drain was issued"
    drain_args=(--cluster "$endpoint" --json)
    drain_help="$("$bin" cluster drain --help 2>&1 || true)"
    # Where the CLI can wait for decoding to be under way, let it (else: prefill has started);
    # where it can, also send the KV as dense fp16 to measure both on the same sockets.
    grep -q -- '--after-tokens' <<<"$drain_help" && drain_args+=(--after-tokens 8)
    grep -q -- '--baseline' <<<"$drain_help" && drain_args+=(--baseline fp16)
    "$bin" cluster drain "$drain_id" "${drain_args[@]}" >"$run_dir/drain.json" 2>"$run_dir/drain.err" \
        || die "sparsekv cluster drain $drain_id failed"
    python3 - "$run_dir/drain.json" "$drain_id" <<'PY' || die "the drain reply does not name $drain_id with the 2 live sessions"
import json, sys
r = json.load(open(sys.argv[1]))
print("   drain: " + json.dumps(r, sort_keys=True)[:2000])
for enc, b in sorted(r.get("wireBytesByEncoding", {}).items()):
    print(f"   KV moved as {enc}: {b:,} bytes on the wire")
# Both live sessions (the CLI generation and the HTTP stream) must have moved.
moved = {t["sessionID"] for t in r.get("transfers", [])}
sys.exit(0 if r.get("worker") == sys.argv[2] and r.get("sessionCount", 0) >= 2 and len(moved) >= 2 else 1)
PY
    echo "   [$((SECONDS - t0)) s] drain done; waiting for the generation"
    wait_pid "$long_pid" 300 || die "the generation during the drain failed"
    echo "   [$((SECONDS - t0)) s] generation done"
    wait_pid "$ref_long_pid" 300 || die "the local reference run (long) failed"
    same_tokens "$run_dir/long.json" "$run_dir/ref-long.json" || die "tokens after the drain differ from the local run"
    wait_pid "$http_pid" 300 || die "the HTTP stream during the drain failed (see $run_dir/http-stream.err)"
    python3 - "$run_dir/http-stream.json" "$run_dir/ref-long.json" <<'PY' || die "the HTTP stream through the drain is wrong"
import json, sys
s, ref = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["text"]
print(f"   HTTP stream through the drain: {s['chunks']} chunks, finish {s['finish_reason']}, [DONE] {s['done']}, error {s['error']}")
assert s["done"] and s["error"] is None, "the stream did not end with [DONE]"
# Greedy: the text equals the local run's (which ignores EOS: a stop at EOS gives a prefix).
ok = s["text"] == ref if s["finish_reason"] == "length" else ref.startswith(s["text"])
assert ok, f"streamed {s['text']!r} vs local {ref!r}"
print("   its text equals the local single-process run")
PY
    drained_id="$("${compose[@]}" ps -q "$drain_id")"
    state=""
    for _ in $(seq 60); do
        state="$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$drained_id")"
        [[ "$state" == exited* ]] && break
        sleep 0.5
    done
    [[ "$state" == "exited 0" ]] || die "the drained worker $drain_id is not 'exited 0' (state: $state)"
    echo "   $drain_id exited with status 0"
fi

step "byte counters"
"$bin" cluster stats --cluster "$endpoint" >"$run_dir/stats-coordinator.json" 2>"$run_dir/stats.err" \
    || die "cluster stats failed"
stats_pids=()
for w in w1 w2 w3; do
    id="$(docker ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$w")"
    [[ -n "$id" ]] || continue   # not running (drained)
    docker exec "$id" sparsekv cluster stats --insecure --cluster "tcp://127.0.0.1:6001" >"$run_dir/stats-$w.json" 2>"$run_dir/stats-$w.err" &
    stats_pids+=($!)
done
for p in "${stats_pids[@]}"; do wait "$p" || die "cluster stats on a worker failed"; done
python3 - "$run_dir" <<'PY'
import glob, json, os, sys
cats = ["control", "activations", "kv", "dictionary"]
print(f"   {'node':12s} {'category':12s} {'sent B':>12s} {'received B':>12s}")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "stats-*.json"))):
    node = os.path.basename(path)[6:-5]
    peers = json.load(open(path))["byPeer"]
    for c in cats:
        s = sum(p[c]["sentBytes"] for p in peers.values())
        r = sum(p[c]["receivedBytes"] for p in peers.values())
        print(f"   {node:12s} {c:12s} {s:12,d} {r:12,d}")
PY

step "compose down"
"${compose[@]}" logs --no-color --timestamps >"$run_dir/containers.log" 2>&1 || true
"${compose[@]}" stop -t 10 coordinator >/dev/null 2>&1 || true
"${compose[@]}" down -v --remove-orphans -t 5 >"$run_dir/compose-down.err" 2>&1 || die "compose down failed"
compose_up=0
left="$(docker ps -aq --filter "label=com.docker.compose.project=$project")"
[[ -z "$left" ]] || die "containers left after down: $left"
echo "   ($((SECONDS - step_t0)) s)"
step_name="done"
