#!/usr/bin/env bash
# The emulated-link test: a coordinator and 3 workers, each on its own emulated host
# (cluster/netns-launch.sh), over rate-limited links. For each KV setting it
#   1. runs a local single-process reference generation,
#   2. starts the cluster over --rate links after timing a bulk transfer over them
#      (the achieved rate must be 80-102% of the configured one),
#   3. generates from the client namespace and checks the tokens equal the reference,
#   4. prints the coordinator's byte counters,
#   5. drains w2 while a second generation decodes (its KV crosses the limited links, CSR and
#      the fp16 baseline, timed) and checks that generation's tokens too,
#   5b. kills w3 (kill -9) while a third generation decodes, once its KV has a kept replica
#      (on w1): the coordinator declares it dead by heartbeat, w1 takes its layers and
#      installs the replica, the session resumes without recomputing, and its tokens are checked;
#      the replica bytes the holder counted (w3's full copies and per-token stream) are checked
#      against the link counters of the holder's and w3's interfaces, and the replica's bytes
#      per decoded token are printed next to the fp16 dense K+V of the same layers
#      (measured from a quiet cluster: no kv crossing between workers for a second), and
#      once every session has ended no live worker may hold any KV,
#   6. checks that nothing is left: no process, namespace or link.
# Then it stops a cluster with SIGTERM while it is loading and once while it serves a
# command, and checks the same. Needs root. Exit status 0 only if every step passed.
#
#   cluster/netns-e2e.sh [--bin PATH] [--rate 100mbit] [--kv SPEC]... [--keep-logs]
#   (default --kv csr:8,coef=i8 and fp32; binary from --bin, $SPARSEKV_BIN or .build/release/sparsekv)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
bin="${SPARSEKV_BIN:-$root/.build/release/sparsekv}"
rate=100mbit kvs=() keep=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --rate) rate="$2"; shift 2 ;;
        --kv) kvs+=("$2"); shift 2 ;;
        --keep-logs) keep=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "netns-e2e: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ ${#kvs[@]} -gt 0 ]] || kvs=("csr:8,coef=i8" fp32)

home_dir="${SPARSEKV_HOME:-$HOME/.cache/sparsekv}"
model="$home_dir/models/SmolLM2-135M-Instruct.Q4_1.gguf"
dict="$root/dicts/SmolLM2-135M-Instruct.Q4_1.csr.gguf"
launcher="$here/netns-launch.sh"
ctx=2048 tokens=24 drain_worker=w2
work=""
t0=$SECONDS

# MARK: - Reporting

step="preconditions"
launcher_pid="" prefixes=()
say() { echo "[netns-e2e $((SECONDS - t0))s] $*" >&2; }
fail() { echo "[netns-e2e] FAILED at step '$step': $*" >&2; exit 1; }
finish() {
    local status=$?
    # A launcher still running (this script was interrupted) is stopped; it removes its own
    # namespaces, and --cleanup removes what a killed one could not.
    if [[ -n "$launcher_pid" ]] && kill -0 "$launcher_pid" 2>/dev/null; then
        kill -TERM "$launcher_pid" 2>/dev/null || true
        wait "$launcher_pid" 2>/dev/null || true
    fi
    for p in "${prefixes[@]}"; do "$launcher" --cleanup "$p" >/dev/null 2>&1 || true; done
    if [[ $status -eq 0 ]]; then
        say "PASSED (${#kvs[@]} KV settings at $rate, 2 interrupted runs) in $((SECONDS - t0)) s"
        [[ $keep -eq 1 ]] && say "logs in $work" || rm -rf "$work"
    elif [[ -n "$work" ]]; then
        echo "[netns-e2e] logs in $work" >&2
    fi
    exit $status
}
trap finish EXIT
trap 'echo "[netns-e2e] interrupted at step '"'"'$step'"'"'" >&2; exit 130' INT
trap 'echo "[netns-e2e] terminated at step '"'"'$step'"'"'" >&2; exit 143' TERM

# MARK: - Preconditions

[[ $(id -u) -eq 0 ]] || fail "needs root (network namespaces and tc); run it with sudo"
[[ -x "$bin" ]] || fail "no sparsekv binary at $bin; build it (swift build -c release) or pass --bin PATH"
[[ -f "$model" ]] || fail "no model at $model; run scripts/setup.sh"
[[ -f "$dict" ]] || fail "no dictionary at $dict"
command -v python3 >/dev/null || fail "needs python3"
work="$(mktemp -d -t sparsekv-netns-e2e.XXXXXX)"
prompt="$work/prompt.txt"
if [[ -f "$home_dir/texts/cfi-ch4.txt" ]]; then
    head -c 2000 "$home_dir/texts/cfi-ch4.txt" >"$prompt"   # about 400 tokens
else
    for _ in $(seq 20); do echo "The history of copyright is a history of printers, authors and readers."; done >"$prompt"
fi
rate_bits="$(python3 -c 'import re,sys; m=re.fullmatch(r"(\d+)(bit|kbit|mbit|gbit)", sys.argv[1].lower()); print(int(m[1])*{"bit":1,"kbit":10**3,"mbit":10**6,"gbit":10**9}[m[2]]) if m else sys.exit(1)' "$rate")" \
    || fail "--rate takes N{bit,kbit,mbit,gbit}, e.g. 100mbit (got '$rate')"
# Bulk transfer for the rate check: about 1 s per direction.
measure=$((rate_bits / 8))

new_prefix() { local p; p="e2e$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-5)"; prefixes+=("$p"); echo "$p"; }

# Nothing of run PREFIX (logs in DIR) may be left: processes, namespaces, links.
assert_clean() {
    local p="$1" dir="$2" pid left
    for pid in $(cat "$dir/pids" "$dir/cmd.pid" 2>/dev/null); do
        kill -0 "$pid" 2>/dev/null && fail "process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80)) is still running"
    done
    left="$(ip netns list | awk '{print $1}' | grep "^$p-" || true)"
    [[ -z "$left" ]] || fail "namespaces left: $left"
    left="$(ip -br link | awk '{print $1}' | grep "^$p-" || true)"
    [[ -z "$left" ]] || fail "links left in the root namespace: $left"
    say "clean: no process, namespace or link of $p left"
}

# MARK: - The client (runs in the client namespace, SPARSEKV_CLUSTER set)

cat >"$work/client.sh" <<'CLIENT'
#!/usr/bin/env bash
set -euo pipefail
out="$1" PREFIX="$2"
"$BIN" generate --cluster "$SPARSEKV_CLUSTER" --prompt-file "$PROMPT" -n "$TOKENS" --ignore-eos --json >"$out/cluster.json" \
    || { echo "client: generate --cluster failed" >&2; exit 11; }
"$BIN" cluster stats --cluster "$SPARSEKV_CLUSTER" >"$out/stats.json" \
    || { echo "client: cluster stats failed" >&2; exit 12; }
# Drain a worker while a second generation decodes: its KV crosses the limited links,
# in the cache's encoding and, measured alongside, in dense fp16.
"$BIN" generate --cluster "$SPARSEKV_CLUSTER" --prompt-file "$PROMPT" -n "$TOKENS" --ignore-eos --json >"$out/after-drain.json" &
gen=$!
"$BIN" cluster drain "$DRAIN_WORKER" --cluster "$SPARSEKV_CLUSTER" --baseline fp16 --after-tokens 4 --wait-session --json >"$out/drain.json" \
    || { echo "client: cluster drain $DRAIN_WORKER failed" >&2; kill "$gen" 2>/dev/null; exit 13; }
wait "$gen" || { echo "client: the generation during the drain failed" >&2; exit 14; }
# Kill the last worker while a third, longer generation decodes, once the coordinator has
# logged that w3's KV has a kept replica for it: failover from the replica over the links.
# Around it, each worker link's counters (its veth in its namespace: bytes and packets each
# way) and each live worker's own byte counters (cluster stats on the worker), so that the
# replica bytes the holder counted can be checked against its link.
counters() {
    local tag="$1" ns w
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$PREFIX-w[0-9]+\$"); do
        w=${ns#"$PREFIX"-}
        # The worker's counters first, so that both include the stats request itself.
        if [[ -n "$(ip netns pids "$ns")" ]]; then
            "$BIN" cluster stats --cluster "tcp://$(ip -n "$ns" -4 -o addr show dev "$ns" | awk '{print $4}' | cut -d/ -f1):6000" \
                >"$out/stats-$w-$tag.json" || { echo "client: cluster stats on $w failed" >&2; return 1; }
        fi
        ip -n "$ns" -s -j link show "$ns" >"$out/link-$w-$tag.json"
    done
}
# The kv bytes the live workers received, summed (their stats, as `counters quiet` writes them).
kv_received() {
    rm -f "$out"/stats-w*-quiet.json
    counters quiet || return 1
    python3 -c 'import json, sys
print(sum(c.get("kv", {}).get("receivedBytes", 0) for f in sys.argv[1:] for c in json.load(open(f))["byPeer"].values()))' \
        "$out"/stats-w*-quiet.json
}
# Waits until no kv crosses between workers for a second: a replica asked for near the end
# of the last generation may still be on its way over a slow link, and its bytes must not
# land in the window measured next.
quiet() {
    local a b
    a=$(kv_received) || return 1
    for _ in $(seq 60); do
        sleep 1
        b=$(kv_received) || return 1
        [[ "$a" == "$b" ]] && return 0
        a=$b
    done
    echo "client: kv kept crossing between the workers for a minute" >&2
    return 1
}
log="$out/logs/coordinator.log"
replicas_before=$(grep -c "keeps the replica of w3's" "$log" || true)
quiet || exit 17
counters before || exit 17
"$BIN" generate --cluster "$SPARSEKV_CLUSTER" --prompt-file "$PROMPT" -n $((TOKENS * 4)) --ignore-eos --json >"$out/after-kill.json" &
gen=$!
for _ in $(seq 600); do
    (( $(grep -c "keeps the replica of w3's" "$log" || true) > replicas_before )) && break
    sleep 0.1
done
sleep 0.5
# What w3 itself counted sending, a moment before it dies (its counters die with it).
counters prekill || { kill "$gen" 2>/dev/null; exit 17; }
sleep 0.3
victim=$(ip netns pids "$PREFIX-w3" | head -1)
[[ -n "$victim" ]] || { echo "client: no process in $PREFIX-w3" >&2; kill "$gen" 2>/dev/null; exit 15; }
kill -KILL "$victim"
wait "$gen" || { echo "client: the generation during the failover failed" >&2; exit 16; }
counters after || exit 17
# Every session has ended: once the workers' dropSession is in, none may hold any KV (a copy
# that landed after its session ended is dropped too).
none_held() { python3 -c 'import json, sys; sys.exit(any(json.load(open(f))["kvCacheBytes"] for f in sys.argv[1:]))' "$out"/stats-w*-end.json; }
for _ in $(seq 100); do
    counters end || exit 17
    none_held && break
    sleep 0.1
done
none_held || { echo "client: a worker still holds KV after every session ended ($(grep -h -o '"kvCacheBytes": *[0-9]*' "$out"/stats-w*-end.json | tr '\n' ' '))" >&2; exit 18; }
CLIENT
chmod +x "$work/client.sh"
export BIN="$bin" PROMPT="$prompt" TOKENS="$tokens" DRAIN_WORKER="$drain_worker"

# MARK: - One KV setting end to end

run_setting() {
    local kv="$1" name="${1//[^a-z0-9]/_}" dir p status
    dir="$work/$name"; mkdir -p "$dir"
    local dict_args=(); [[ $kv == csr* ]] && dict_args=(--dict "$dict")

    step="$kv: local reference"
    "$bin" generate --kv "$kv" "${dict_args[@]}" --ctx "$ctx" --prompt-file "$prompt" -n "$tokens" --ignore-eos --json -t 1 \
        >"$dir/reference.json" 2>"$dir/reference.log" || { cat "$dir/reference.log" >&2; fail "the single-process run failed"; }
    say "$kv: reference run done"

    step="$kv: cluster over $rate links"
    p="$(new_prefix)"
    # In the background, so that a signal to this script is handled at once (finish stops it).
    "$launcher" --bin "$bin" --prefix "$p" --rate "$rate" --measure "$measure" -n 3 --kv "$kv" "${dict_args[@]}" \
        --ctx "$ctx" --logs "$dir/logs" -- "$work/client.sh" "$dir" "$p" >"$dir/launcher.out" 2>"$dir/launcher.err" &
    launcher_pid=$!
    set +e; wait "$launcher_pid"; status=$?; set -e
    launcher_pid=""
    sed 's/^/    /' "$dir/launcher.err" >&2
    case $status in
        0) ;;
        11) fail "generate --cluster failed in the client namespace (logs in $dir/logs)" ;;
        12) fail "cluster stats failed (logs in $dir/logs)" ;;
        13) step="$kv: drain hook"; fail "cluster drain $drain_worker failed (logs in $dir/logs)" ;;
        14) step="$kv: drain hook"; fail "generate after the drain failed (logs in $dir/logs)" ;;
        15|16) step="$kv: failover hook"; fail "the generation during the kill of w3 failed (logs in $dir/logs)" ;;
        17) step="$kv: failover hook"; fail "a worker link's or a worker's byte counters could not be read (logs in $dir/logs)" ;;
        18) step="$kv: KV left behind"; fail "a worker still holds KV once every session ended (logs in $dir/logs)" ;;
        *) fail "netns-launch.sh exited with $status (see the lines above; logs in $dir/logs)" ;;
    esac

    step="$kv: cleanup after the run"
    assert_clean "$p" "$dir/logs"

    step="$kv: link rate"
    python3 - "$dir/logs/rate.json" <<'PY' || fail "the links do not run at the configured rate"
import json, sys
r = json.load(open(sys.argv[1]))
bad = [t for t in r["transfers"] if not 0.80 <= t["ratio"] <= 1.02]
for t in bad:
    print(f"    {t['direction']}: {t['mbitPerSecond']} Mbit/s against {t['configuredMbitPerSecond']} configured", file=sys.stderr)
sys.exit(1 if bad else 0)
PY

    step="$kv: tokens against the reference"
    python3 - "$dir" "$kv" <<'PY' || fail "the cluster's tokens differ from the single-process run"
import json, os, sys
d, kv = sys.argv[1], sys.argv[2]
ref = json.load(open(f"{d}/reference.json"))
got = json.load(open(f"{d}/cluster.json"))
ok = True
def compare(label, run):
    global ok
    if run["promptTokens"] != ref["promptTokens"] or run["generatedTokens"] != ref["generatedTokens"]:
        ok = False
        print(f"    {label}: {run['generatedTokens']}\n    reference: {ref['generatedTokens']}", file=sys.stderr)
    else:
        print(f"    {label}: {len(run['promptTokens'])} prompt + {len(run['generatedTokens'])} generated tokens equal "
              f"the reference, decode {run['decodeTokensPerSecond']:.1f} tok/s", file=sys.stderr)
compare(f"{kv} cluster", got)
if os.path.exists(f"{d}/after-drain.json"):
    compare(f"{kv} after drain", json.load(open(f"{d}/after-drain.json")))
if os.path.exists(f"{d}/after-kill.json"):
    # Four times as long as the reference: its first tokens must be the reference's.
    run = json.load(open(f"{d}/after-kill.json"))
    run["generatedTokens"] = run["generatedTokens"][:len(ref["generatedTokens"])]
    compare(f"{kv} with w3 killed mid-decode", run)
sys.exit(0 if ok else 1)
PY

    step="$kv: failover over $rate links"
    grep -q "failover of w3" "$dir/logs/coordinator.log" || fail "w3 was not declared dead and failed over (logs in $dir/logs)"
    grep -E "is dead|failover of|installing replicas|generates again" "$dir/logs/coordinator.log" | sed 's/.*\] /    /' >&2
    grep -q "resumed from replicas" "$dir/logs/coordinator.log" \
        || fail "the session was not resumed from w3's replica (logs in $dir/logs)"

    step="$kv: replica bytes against the link"
    python3 - "$dir" "$kv_geometry" "$kv" <<'PY' || fail "the replica bytes the holder counted do not match its link's counters"
import json, re, sys
d, (kv_heads, head_dim), kv = sys.argv[1], map(int, sys.argv[2].split()), sys.argv[3]
log = open(f"{d}/logs/coordinator.log").read()
# The replica copies of the killed generation's session: the last session with one of w3's.
copies = re.findall(r"session (\d+): (\S+) keeps the replica of w3's layers (\d+)\.\.<(\d+): (\d+) tokens, (\d+) bytes", log)
if not copies:
    sys.exit("    no replica of w3's layers was acked")
session = copies[-1][0]
copies = [c for c in copies if c[0] == session]
holders = {c[1] for c in copies}
if len(holders) != 1:
    sys.exit(f"    w3's replicas are on {sorted(holders)}; one holder expected")
h = holders.pop()
def link(w, tag):
    s = json.load(open(f"{d}/link-{w}-{tag}.json"))[0]["stats64"]
    return {k: s[k]["bytes"] for k in ("rx", "tx")} | {k + "_packets": s[k]["packets"] for k in ("rx", "tx")}
def stats(w, tag):
    return json.load(open(f"{d}/stats-{w}-{tag}.json"))["byPeer"]
def delta(a, b):
    return {k: b[k] - a[k] for k in a}
def received(peers, peer=None, cat=None):
    b = m = 0
    for p, cats in peers.items():
        for c, t in cats.items():
            if (peer is None or p == peer) and (cat is None or c == cat):
                b, m = b + t["receivedBytes"], m + t["receivedMessages"]
    return b, m
def sent(peers, cat):
    return sum(t[cat]["sentBytes"] for t in peers.values())
hb, ha = stats(h, "before"), stats(h, "after")
# What the holder counted: w3's kv messages (the full copies, then one stream message per
# decoded token and segment), and everything it received from anyone.
rep = [a - b for a, b in zip(received(ha, "w3", "kv"), received(hb, "w3", "kv"))]
tot = [a - b for a, b in zip(received(ha), received(hb))]
hl, sl = delta(link(h, "before"), link(h, "after")), delta(link("w3", "before"), link("w3", "after"))
w3_sent = sent(stats("w3", "prekill"), "kv") - sent(stats("w3", "before"), "kv")
full = sum(int(c[5]) for c in copies)
stream, stream_msgs = rep[0] - full, rep[1] - len(copies)
steps = stream_msgs / len(copies)
layers = sum(int(c[3]) - int(c[2]) for c in copies)
fp16 = layers * 2 * kv_heads * head_dim * 2
print(f"    {h} keeps w3's replica (layers {', '.join(f'{c[2]}..<{c[3]}' for c in copies)}): counted on {h}, from w3, kv: "
      f"{rep[0]:,} B in {rep[1]} messages = full copies {full:,} B ({copies[0][4]} tokens) + stream {stream:,} B "
      f"in {stream_msgs} messages ({steps:g} decoded tokens)", file=sys.stderr)
if steps > 0:
    print(f"    replica stream {stream / steps:,.0f} B per decoded token for {layers} layers; fp16 dense K+V of the same "
          f"layers {fp16:,} B per token (x{stream / steps / fp16:.3f})", file=sys.stderr)
print(f"    w3 counted {w3_sent:,} B of kv sent up to a moment before its death; its link sent {sl['tx']:,} B in the window",
      file=sys.stderr)
print(f"    {h}'s link received {hl['rx']:,} B in {hl['rx_packets']:,} packets; {h} counted {tot[0]:,} B in {tot[1]} messages "
      f"from all peers (link/counted x{hl['rx'] / max(tot[0], 1):.3f}); the replica is {rep[0] / max(hl['rx'], 1):.1%} of the link's bytes",
      file=sys.stderr)
# Every counted byte crossed the links, and the link carries no more than the counted bytes
# plus per-packet headers (Ethernet 14 + IPv4 20 + TCP with options up to 60), per-message
# ZMTP framing (up to 9) and a little uncounted traffic (ZMTP greetings, ARP): 64 KiB.
slack = 94 * hl["rx_packets"] + 9 * tot[1] + 65536
checks = [
    (steps >= 1 and stream_msgs % len(copies) == 0, "the stream is one message per decoded token and segment"),
    (w3_sent <= rep[0], "the holder received at least what w3 counted sending"),
    (sl["tx"] >= rep[0], "w3's link sent at least the replica bytes"),
    (hl["rx"] >= tot[0] >= rep[0], "the holder's link received at least what the holder counted"),
    (hl["rx"] - tot[0] <= slack, f"the holder's link carried at most {slack:,} B beyond the counted bytes"),
]
# What a token's replica costs follows from the cache: fp32 rows are twice fp16, CSR codes less than fp16.
if kv == "fp32":
    checks.append((steps >= 1 and stream / steps >= 2 * fp16, "an fp32 replica streams at least the fp32 K+V rows per token"))
elif kv.startswith("csr"):
    checks.append((steps >= 1 and stream / steps < fp16, "a CSR replica streams less than fp16 dense per token"))
ok = True
for passed, what in checks:
    ok = ok and passed
    print(f"    {'ok' if passed else 'NOT'}: {what}", file=sys.stderr)
sys.exit(0 if ok else 1)
PY

    step="$kv: byte counters"
    python3 - "$dir" <<'PY' || fail "the coordinator's byte counters are missing or show no activations"
import json, sys
d = sys.argv[1]
stats = json.load(open(f"{d}/stats.json"))
print("    coordinator byte counters by peer (nonzero categories):", file=sys.stderr)
for peer, cats in sorted(stats["byPeer"].items()):
    for cat, c in sorted(cats.items()):
        if c["sentBytes"] or c["receivedBytes"]:
            print(f"      {peer:14s} {cat:12s} sent {c['sentBytes']:>11,} B / {c['sentMessages']:>4} msgs, "
                  f"received {c['receivedBytes']:>11,} B / {c['receivedMessages']:>4} msgs", file=sys.stderr)
acts = sum(c["activations"]["sentBytes"] for c in stats["byPeer"].values())
sys.exit(0 if acts > 0 else 1)
PY

    step="$kv: drain over $rate links"
    [[ -f "$dir/drain.json" ]] || fail "no drain reply"
    python3 - "$dir/drain.json" "$kv" "$rate_bits" <<'PY' || fail "the drain reply is not what a drain of a live session gives"
import json, sys
r, kv, rate = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3])
moved = [t for t in r["transfers"] if t["mode"] == "install"]
base = [t for t in r["transfers"] if t["mode"] == "measure"]
ok = r["sessionCount"] == 1 and moved and len(moved) == len(base)
print(f"    drained {r['worker']} (layers {r['firstLayer']}..<{r['endLayer']}) in {r['seconds']:.2f} s, {r['sessionCount']} live session", file=sys.stderr)
for label, ts in (("moved", moved), ("fp16 baseline", base)):
    b = sum(t["wireBytes"] for t in ts)
    s = sum(t["seconds"] for t in ts)
    print(f"    {label:14s} {ts[0]['encoding'] if ts else '-':5s} {b:>11,} B on the wire in {s * 1000:8.1f} ms "
          f"({b * 8 / max(s, 1e-9) / 1e6:6.1f} Mbit/s; the link is {rate / 1e6:.0f} Mbit/s)", file=sys.stderr)
    # Nothing crosses a link faster than its rate (5% slack for clock granularity).
    ok = ok and all(t["wireBytes"] * 8 / max(t["seconds"], 1e-9) <= rate * 1.05 for t in ts if t["wireBytes"] > 200_000)
if kv.startswith("csr"):
    ok = ok and sum(t["wireBytes"] for t in moved) * 4 < sum(t["wireBytes"] for t in base)
sys.exit(0 if ok else 1)
PY
}

# MARK: - Interrupted runs

# Starts a cluster in the background and sends SIGTERM once WHEN holds (loading: all 4
# processes started; serving: the cluster is ready and CMD is running).
interrupted_run() {
    local when="$1" dir="$work/interrupt-$1" p status
    mkdir -p "$dir"
    step="SIGTERM while $when"
    p="$(new_prefix)"
    "$launcher" --bin "$bin" --prefix "$p" --rate "$rate" -n 3 --kv fp32 --ctx "$ctx" --logs "$dir/logs" \
        -- sleep 600 >"$dir/launcher.out" 2>"$dir/launcher.err" &
    launcher_pid=$!
    for _ in $(seq 600); do
        case $when in
            loading) [[ -f "$dir/logs/pids" && $(wc -l <"$dir/logs/pids") -eq 4 ]] && break ;;
            serving) [[ -s "$dir/logs/cmd.pid" ]] && break ;;
        esac
        kill -0 "$launcher_pid" 2>/dev/null || { cat "$dir/launcher.err" >&2; fail "the launcher exited early"; }
        sleep 0.1
    done
    [[ $when == loading ]] && grep -q '^READY' "$dir/logs/coordinator.out" && say "note: the cluster was ready before the signal"
    kill -TERM "$launcher_pid"
    set +e; wait "$launcher_pid"; status=$?; set -e
    launcher_pid=""
    [[ $status -eq 143 ]] || { cat "$dir/launcher.err" >&2; fail "the launcher exited with $status after SIGTERM (expected 143)"; }
    say "SIGTERM while $when: launcher exited with 143"
    assert_clean "$p" "$dir/logs"
}

# MARK: - Run

say "binary $bin, links $rate, KV settings: ${kvs[*]}"
step="model geometry"
# KV heads and head dim, for the fp16 dense size a replica's bytes per token compare with.
kv_geometry="$("$bin" info -m "$model" | python3 -c 'import re, sys; m = re.search(r"(\d+) KV heads of (\d+)", sys.stdin.read()); print(m[1], m[2]) if m else sys.exit(1)')" \
    || fail "sparsekv info -m $model names no KV heads and head dim"
for kv in "${kvs[@]}"; do run_setting "$kv"; done
interrupted_run loading
interrupted_run serving
step="done"
