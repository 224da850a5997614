#!/usr/bin/env bash
# The distributed part of the main job: a local cluster (coordinator + 3 workers on
# loopback, CSR-8 KV cache with int8 coefficients) generates from a ~3,000-token prompt
# cut from cfi-en chapter 4. After 16 generated tokens, worker w2 is drained: its layers
# and the session's KV move to its neighbours (CSR-coded), the same KV is also sent in
# dense fp16 as the measured baseline, and the session goes on. Then a short report:
# the transfer in bytes (CSR vs fp16), tokens/s, bytes on the wire by category (from the
# coordinator's socket counters) and every process's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.build/release/sparsekv}"
HOME_DIR="${SPARSEKV_HOME:-$HOME/.cache/sparsekv}"
KV="${KV:-csr:8,coef=i8}"
WORK="$(mktemp -d -t sparsekv-demo.XXXXXX)"; trap 'rm -rf "$WORK"' EXIT
head -c 14000 "$HOME_DIR/texts/cfi-ch4.txt" > "$WORK/prompt.txt"

cat > "$WORK/client.sh" <<'CLIENT'
#!/usr/bin/env bash
set -euo pipefail
"$BIN" generate --cluster "$SPARSEKV_CLUSTER" --prompt-file "$WORK/prompt.txt" -n 48 --ignore-eos --json > "$WORK/result.json" &
gen=$!
echo "== draining w2 once the session has 16 tokens (CSR transfer, fp16 measured alongside)" >&2
"$BIN" cluster drain w2 --wait-session --after-tokens 16 --baseline fp16 --json > "$WORK/drain.json" || { kill "$gen"; exit 1; }
wait "$gen"
echo "== peak RSS per process (VmHWM)" >&2
for pid in $(cat "$WORK/logs/pids"); do
  [[ -r "/proc/$pid/status" ]] || { echo "  (pid $pid has exited: the drained worker)" >&2; continue; }
  name="$(tr '\0' ' ' < "/proc/$pid/cmdline" | awk '{for (i = 1; i <= NF; i++) if ($i == "--id") print $(i+1); if ($2 == "coordinator") print "coordinator"}' | head -1)"
  printf '  %-12s %s\n' "$name" "$(grep VmHWM "/proc/$pid/status" | awk '{print $2, $3}')" >&2
done
CLIENT
chmod +x "$WORK/client.sh"

echo "== local cluster: coordinator + 3 workers, kv $KV, ~3,000-token prompt from cfi-en chapter 4" >&2
BIN="$BIN" WORK="$WORK" cluster/launch.sh -n 3 --kv "$KV" --ctx 4096 --bin "$BIN" --logs "$WORK/logs" -- "$WORK/client.sh" >&2
python3 - "$WORK/result.json" "$WORK/drain.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d = json.load(open(sys.argv[2]))
print(r["text"])
print(f"\n== report\nprompt {len(r['promptTokens'])} tokens, prefill {r['prefillTokensPerSecond']:.1f} tok/s, "
      f"decode {len(r['generatedTokens'])} tokens at {r['decodeTokensPerSecond']:.1f} tok/s (not counting the drain pause)")
print(f"session KV on the workers at the end: {r['kvCacheBytes']:,} bytes ({r['kvCache']})")
moved = [t for t in d["transfers"] if t["mode"] == "install"]
base = [t for t in d["transfers"] if t["mode"] == "measure"]
print(f"drain of {d['worker']} (layers {d['firstLayer']}..<{d['endLayer']}): the session paused {d['seconds']:.2f} s "
      f"(the neighbour loading the layers, then the transfers), {d['sessionCount']} live session:")
for t in d["transfers"]:
    print(f"  layers {t['firstLayer']:2d}..<{t['endLayer']:<2d} -> {t['destination']}: {t['encoding']:4s} ({t['mode']}), "
          f"{t['tokenCount']} tokens, {t['wireBytes']:>10,} bytes on the wire, {t['seconds'] * 1000:6.1f} ms")
mb, bb = sum(t["wireBytes"] for t in moved), sum(t["wireBytes"] for t in base)
if moved and base:
    print(f"  KV transfer: CSR {mb:,} bytes vs dense fp16 {bb:,} bytes ({bb / mb:.1f}x fewer with CSR)")
t = r.get("coordinatorTraffic", {})
for cat, c in sorted(t.items()):
    print(f"  {cat:12s} sent {c['sentBytes']:>12,} B in {c['sentMessages']:>5} msgs, received {c['receivedBytes']:>12,} B in {c['receivedMessages']:>5} msgs")
n = len(r["promptTokens"]) + len(r["generatedTokens"])
a = t.get("activations", {}).get("sentBytes", 0)
print(f"  activation bytes per token on the coordinator -> first worker link: {a / max(n, 1):.0f}")
PY
