#!/usr/bin/env bash
# Speed benchmark: SparseKV vs llama.cpp in the same invocation, on 2 threads.
# Prefill tokens/s (512-token prompt) and decode tokens/s (128 tokens after it), medians
# of repeats, and SparseKV's decode-step profile. llama.cpp runs through
# llama-cpp-python when it is installed (see scripts/reference/make_reference.py for the
# build flags); without it only SparseKV is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.build/release/sparsekv
REPEATS="${REPEATS:-5}"
OUT="$(mktemp)"; trap 'rm -f "$OUT"' EXIT
"$BIN" bench speed --threads 2 --repeats "$REPEATS" --json > "$OUT"
python3 - "$OUT" <<'PY'
import json, os, sys
ours = json.load(open(sys.argv[1]))
print(f"SparseKV  prefill {ours['prefillTokensPerSecond']:8.1f} tok/s   decode {ours['decodeTokensPerSecond']:7.1f} tok/s"
      f"   (median of {ours['repeats']}, OpenBLAS {ours['blasCore']}, {ours['decodeStepMilliseconds']:.2f} ms/step profiled)")
for part, share in sorted(ours["decodeProfile"].items(), key=lambda kv: -kv[1]):
    print(f"    {part:45s} {100 * share:5.1f}%")
try:
    import llama_cpp  # noqa: F401
except ImportError:
    print("llama.cpp: llama-cpp-python not installed; no baseline in this run")
    sys.exit(0)
sys.path.insert(0, "scripts/reference")
import make_reference as ref
home = os.environ.get("SPARSEKV_HOME") or os.path.expanduser("~/.cache/sparsekv")
text = open(os.path.join(home, "texts", "cfi-ch4.txt"), "rb").read().decode("utf-8")
import llama_cpp
tok = llama_cpp.Llama(model_path=os.path.join(home, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"), vocab_only=True, verbose=False)
ids = tok.tokenize(text.encode(), add_bos=False, special=False)
base = ref.measure_speed(os.path.join(home, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"), ids)
print(f"llama.cpp prefill {base['prefill_tokens_per_s']:8.1f} tok/s   decode {base['decode_tokens_per_s']:7.1f} tok/s   (median of {base['runs']}, f16 KV, flash attention)")
print(f"ratio     prefill {ours['prefillTokensPerSecond'] / base['prefill_tokens_per_s']:8.2f}x       decode {ours['decodeTokensPerSecond'] / base['decode_tokens_per_s']:7.2f}x   (SparseKV / llama.cpp)")
PY
