#!/usr/bin/env bash
# CURVE vs plaintext on one loopback cluster setup (coordinator + 3 workers, fp32 KV):
# the same greedy generation, repeated, with each launcher mode in the same run. Prints
# the median decode tok/s and the TCP bytes the coordinator and workers sent during each
# request (deltas of `ss -ti` bytes_sent over their sockets: activations, control,
# heartbeats, the reply), and the CURVE/plaintext ratios.
#   scripts/curve_bench.sh [REPEATS (5)] [TOKENS (64)]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.build/release/sparsekv}"
REPEATS="${1:-5}" TOKENS="${2:-64}"
WORK="$(mktemp -d -t sparsekv-curve.XXXXXX)"; trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/client.sh" <<'CLIENT'
#!/usr/bin/env bash
set -euo pipefail
# TCP bytes the cluster's processes have sent (ss: tcp_info bytes_sent of each of their sockets).
written() {
    ss -tinpH | awk -v pids=" $(tr '\n' ' ' <"$LOGS/pids")" '
        /^[A-Z]/ { mine = 0; if (match($0, /pid=[0-9]+/)) mine = index(pids, " " substr($0, RSTART + 4, RLENGTH - 4) " ") > 0 }
        /bytes_sent:/ && mine { match($0, /bytes_sent:[0-9]+/); s += substr($0, RSTART + 11, RLENGTH - 11) }
        END { print s + 0 }'
}
"$BIN" generate --cluster "$SPARSEKV_CLUSTER" -p "The capital of France is" -n 4 --ignore-eos >/dev/null 2>&1   # warm-up
for r in $(seq "$REPEATS"); do
    before=$(written)
    "$BIN" generate --cluster "$SPARSEKV_CLUSTER" -p "The capital of France is" -n "$TOKENS" --ignore-eos --json >"$LOGS/gen$r.json" 2>/dev/null
    echo "$(( $(written) - before ))" >"$LOGS/bytes$r"
done
CLIENT
chmod +x "$WORK/client.sh"

for mode in plaintext curve; do
    flag=(); [[ $mode == plaintext ]] && flag=(--insecure)
    BIN="$BIN" LOGS="$WORK/$mode" REPEATS="$REPEATS" TOKENS="$TOKENS" \
        cluster/launch.sh -n 3 --kv fp32 --ctx 512 --bin "$BIN" --logs "$WORK/$mode" "${flag[@]}" -- "$WORK/client.sh" >/dev/null
done

python3 - "$WORK" "$REPEATS" "$TOKENS" <<'PY'
import json, statistics, sys
work, repeats, tokens = sys.argv[1], int(sys.argv[2]), sys.argv[3]
res = {}
for mode in ("plaintext", "curve"):
    runs = [json.load(open(f"{work}/{mode}/gen{r}.json")) for r in range(1, repeats + 1)]
    written = [int(open(f"{work}/{mode}/bytes{r}").read()) for r in range(1, repeats + 1)]
    res[mode] = (statistics.median(x["decodeTokensPerSecond"] for x in runs), statistics.median(written),
                 runs[0]["generatedTokens"])
    print(f"{mode:9s}: decode {res[mode][0]:6.1f} tok/s (median of {repeats}), {res[mode][1]:,.0f} TCP bytes sent by the cluster per request ({tokens} tokens)")
p, c = res["plaintext"], res["curve"]
print(f"curve/plaintext: tok/s x{c[0] / p[0]:.3f}, bytes x{c[1] / p[1]:.3f}; same greedy tokens: {p[2] == c[2]}")
PY
