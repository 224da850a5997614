#!/usr/bin/env python3
"""Dump llama.cpp reference data for SmolLM2 that the Swift tests compare against.

Usage (re-runnable; overwrites the fixture):

    python3 scripts/reference/make_reference.py            # everything, incl. speed
    python3 scripts/reference/make_reference.py --no-speed  # skip the (machine-specific) timing
    python3 scripts/reference/make_reference.py --out /tmp/ref.json
    python3 scripts/reference/make_reference.py --speed-only  # re-measure speed, patch the fixture

Speed is measured with n_threads=2; on a busy machine (other builds running) ggml's spinning
thread barriers make it many times slower, so the load average is recorded next to it. Measure
on an idle machine (`--speed-only` re-does just that part, in about a minute when idle).

Inputs (fetched by scripts/fetch_assets.py into $SPARSEKV_HOME, default ~/.cache/sparsekv):
    models/SmolLM2-135M-Instruct.Q4_1.gguf
    texts/cfi-ch4.txt   (evaluation text, UTF-8)
    texts/alice29.txt   (CRLF line ends and a trailing 0x1A byte; kept exactly)
Texts are read as raw bytes and decoded as strict UTF-8; nothing is normalised.

Output: Tests/SparseKVEngineTests/Fixtures/smollm2-reference.json with
    model        file name, byte size, sha256; add_bos / bos_id / eos_id; vocab size
    texts        per text: byte size, sha256, token_count, full ids (add_bos=False, special=False)
    greedy       per prompt: prompt ids, 48 argmax ids (EOS does NOT stop generation) and,
                 for each step, the gap top-1 minus top-2 logit (tests may accept divergence
                 after a near-tie)
    logits       for 2 prompts, at 4 positions (incl. the last): top-20 (id, logit) and the
                 full-vocabulary logsumexp (computed in float64 from float32 logits)
    perplexity   llama-perplexity protocol (see below), ctx 1024 x 6 chunks and ctx 512 x 4
                 chunks, for both texts; per-chunk mean nll and running ppl
    speed        llama.cpp's own prefill/decode tokens/s on this machine (median of 3);
                 machine-specific, for the benchmark only, never for tests
    settings     everything needed to reproduce

Perplexity protocol, reproduced from llama.cpp tools/perplexity/perplexity.cpp (`perplexity()`):
  * tokens = common_tokenize(text, add_special=true): BOS is prepended only if the vocab says
    so (tokenizer.ggml.add_bos_token; False for SmolLM2, so tokens == the raw text ids);
  * n_chunk = min(n_chunks, len(tokens) // n_ctx); chunk i = tokens[i*n_ctx:(i+1)*n_ctx];
  * each chunk is evaluated from an empty KV cache (llama_memory_clear); if add_bos, the
    first token of the chunk is replaced by BOS for the evaluation;
  * first = n_ctx // 2; the logits at positions j = first .. n_ctx-2 score token j+1, i.e.
    n_ctx - 1 - first tokens per chunk (511 at ctx 1024, 255 at ctx 512);
  * nll = -(logit[tok] - max - log(sum(exp(logit - max)))), ppl = exp(sum(nll) / count).
  llama-perplexity packs several chunks into one batch as separate sequences (n_batch 2048,
  n_parallel = n_batch / n_ctx); here each chunk is its own batch of n_ctx tokens
  (n_batch = n_ctx, n_ubatch = 512, as llama-perplexity's physical batch). Sequences never
  attend to each other there, so the values agree up to float rounding.
  Defaults shared with llama-perplexity: KV cache type f16 for K and V; flash attention:
  llama.cpp's default is "auto", which on a CPU-only build resolves to enabled, so the main
  numbers use flash_attn=True; a cross-check without flash attention is recorded too.

Requires llama-cpp-python (tested with 0.3.36) built for this CPU, e.g.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AVX512=OFF" \
      CMAKE_BUILD_PARALLEL_LEVEL=2 pip install --no-cache-dir llama-cpp-python
(a native build can hit an illegal instruction on some machines of this fleet).
"""
import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

try:
    import llama_cpp
    from llama_cpp import Llama
except ImportError:  # pragma: no cover
    sys.exit("error: llama-cpp-python is not installed (see the docstring for the build command)")

HOME = os.environ.get("SPARSEKV_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "sparsekv")
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "Tests", "SparseKVEngineTests", "Fixtures", "smollm2-reference.json")
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = {"cfi-ch4": "cfi-ch4.txt", "alice29": "alice29.txt"}

SEED = 1234
N_THREADS = 2
N_UBATCH = 512            # llama.cpp default physical batch
GGML_TYPE_F16 = 1         # ggml_type enum value; llama.cpp's default KV cache type
GREEDY_STEPS = 48
TOP_K_LOGITS = 20
LOGIT_DECIMALS = 5        # logits are float32 (about 7 significant digits); 1e-5 is plenty
PPL_RUNS = [(1024, 6), (512, 4)]   # (n_ctx, n_chunks)
LONG_PROMPT_TOKENS = 600  # the long cfi-ch4 prompt is cut at the first sentence end past this
SPEED_PREFILL = 512
SPEED_DECODE = 128
SPEED_RUNS = 3
# How the llama-cpp-python used for the checked-in fixture was built (recorded, not checked).
BUILD_COMMAND = ('CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON '
                 '-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AVX512=OFF" '
                 'CMAKE_BUILD_PARALLEL_LEVEL=2 pip install --no-cache-dir llama-cpp-python==0.3.36')

CHATML_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def log(msg):
    print(f"[reference] {msg}", file=sys.stderr, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_text(path):
    raw = open(path, "rb").read()
    text = raw.decode("utf-8")          # strict: a bad byte is an error, not a replacement
    assert text.encode("utf-8") == raw  # CRLF, 0x1A etc. survive unchanged
    return raw, text


def make_llama(model_path, n_ctx, logits_all, flash_attn=True, n_batch=None):
    return Llama(
        model_path=model_path,
        n_ctx=n_ctx,
        n_batch=n_batch or n_ctx,
        n_ubatch=min(N_UBATCH, n_batch or n_ctx),
        n_threads=N_THREADS,
        n_threads_batch=N_THREADS,
        seed=SEED,
        logits_all=logits_all,
        flash_attn=flash_attn,
        type_k=GGML_TYPE_F16,
        type_v=GGML_TYPE_F16,
        n_gpu_layers=0,
        use_mmap=True,
        verbose=False,
    )


def tokenize(llm, text, add_special, special):
    """llama_tokenize(add_special, parse_special). add_special adds BOS only if the vocab wants it."""
    return [int(t) for t in llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=special)]


def run_from_empty(llm, ids):
    """Evaluate ids from an empty KV cache; return the float32 logits of every position."""
    llm.reset()          # n_tokens = 0; eval() then removes every cached cell (seq_rm from 0)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)


def logsumexp64(rows):
    rows = np.asarray(rows, dtype=np.float64)
    m = rows.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(rows - m).sum(axis=-1, keepdims=True)))[..., 0]


def top2_gap(row):
    part = np.partition(row, -2)[-2:]
    return float(part[1] - part[0])


# ---------------------------------------------------------------- prompts

def build_prompts(llm, texts):
    alice = texts["alice29"]
    a0 = alice.index("Alice was beginning")
    a1 = alice.index("conversation?'", a0) + len("conversation?'")
    alice_sentence = alice[a0:a1]   # keeps its CRLF line breaks

    cfi = texts["cfi-ch4"]
    # Cut chapter 4 at the first sentence end ('. ') at or after LONG_PROMPT_TOKENS tokens.
    ids = tokenize(llm, cfi, add_special=True, special=False)
    approx = len(llm.detokenize(ids[:LONG_PROMPT_TOKENS]).decode("utf-8", errors="replace"))
    cut = cfi.index(". ", max(0, approx - 1)) + 1
    long_prompt = cfi[:cut]

    return [
        # name, text, parse_special
        ("capital", "The capital of France is", False),
        ("alice_sentence", alice_sentence, False),
        ("code_fibonacci", "def fibonacci(n):", False),
        ("chatml_capital", CHATML_PROMPT, True),
        ("digits", "Question: What is 12 + 35?\nAnswer:", False),
        ("cfi_long", long_prompt, False),
    ]


def greedy(llm, prompt_ids, steps):
    llm.reset()
    llm.eval(prompt_ids)
    out, gaps, top1 = [], [], []
    for step in range(steps):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        tok = int(np.argmax(row))           # lowest id wins an exact tie
        out.append(tok)
        gaps.append(round(top2_gap(row), LOGIT_DECIMALS))
        top1.append(round(float(row[tok]), LOGIT_DECIMALS))
        if step + 1 < steps:
            llm.eval([tok])                 # keep going past EOS on purpose
    return out, gaps, top1


def logits_at(all_logits, positions):
    entries = []
    lse = logsumexp64(all_logits[positions])
    for k, pos in enumerate(positions):
        row = all_logits[pos]
        order = np.argsort(-row, kind="stable")[:TOP_K_LOGITS]
        entries.append({
            "position": int(pos),
            "top": [[int(i), round(float(row[i]), LOGIT_DECIMALS)] for i in order],
            "logsumexp": round(float(lse[k]), LOGIT_DECIMALS),
            "argmax": int(order[0]),
        })
    return entries


# ---------------------------------------------------------------- perplexity

def perplexity(model_path, text, n_ctx, n_chunks, flash_attn=True):
    llm = make_llama(model_path, n_ctx, logits_all=True, flash_attn=flash_attn)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llm._model.vocab))
    bos = llm.token_bos()
    tokens = tokenize(llm, text, add_special=True, special=False)   # common_tokenize(..., true)
    if len(tokens) < 2 * n_ctx:
        raise SystemExit(f"error: need at least {2 * n_ctx} tokens, text has {len(tokens)}")
    n_chunk_max = len(tokens) // n_ctx
    n_chunk = min(n_chunks, n_chunk_max)
    first = n_ctx // 2
    chunk_nll, running, count, nll_sum = [], [], 0, 0.0
    t0 = time.perf_counter()
    for i in range(n_chunk):
        chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        if add_bos:
            chunk[0] = bos
        logits = run_from_empty(llm, chunk)
        scored = logits[first:n_ctx - 1]                        # positions first .. n_ctx-2
        targets = np.array(tokens[i * n_ctx + first + 1:(i + 1) * n_ctx], dtype=np.int64)
        nll = logsumexp64(scored) - scored[np.arange(len(targets)), targets].astype(np.float64)
        chunk_nll.append(float(nll.mean()))
        nll_sum += float(nll.sum())
        count += len(targets)
        running.append(float(np.exp(nll_sum / count)))
    llm.close()
    return {
        "n_ctx": n_ctx,
        "n_chunks": n_chunk,
        "n_chunk_max": n_chunk_max,
        "first_scored_position": first,
        "tokens_per_chunk_scored": n_ctx - 1 - first,
        "tokens_scored": count,
        "ppl": float(np.exp(nll_sum / count)),
        "mean_nll": nll_sum / count,
        "chunk_mean_nll": chunk_nll,
        "running_ppl": running,
        "seconds": round(time.perf_counter() - t0, 2),
    }


# ---------------------------------------------------------------- speed

def measure_speed(model_path, text_ids):
    """llama.cpp's own speed with n_threads=2 (machine-specific; for the benchmark only)."""
    load_before = os.getloadavg()
    llm = make_llama(model_path, 1024, logits_all=False, flash_attn=True, n_batch=SPEED_PREFILL)
    ctx = llm._ctx.ctx
    prompt = text_ids[:SPEED_PREFILL]
    feed = text_ids[SPEED_PREFILL:SPEED_PREFILL + SPEED_DECODE]   # fixed tokens; values do not matter

    def prefill():
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        llama_cpp.llama_synchronize(ctx)
        return time.perf_counter() - t

    def decode(from_empty):
        llm.reset()
        if not from_empty:
            llm.eval(prompt)
            llama_cpp.llama_synchronize(ctx)
        t = time.perf_counter()
        for tok in feed:
            llm.eval([tok])
            llama_cpp.llama_synchronize(ctx)
        return time.perf_counter() - t

    prefill(); decode(True)  # warm-up (page in the weights, size the compute buffers)
    pp = [prefill() for _ in range(SPEED_RUNS)]
    tg0 = [decode(True) for _ in range(SPEED_RUNS)]
    tg512 = [decode(False) for _ in range(SPEED_RUNS)]
    llm.close()
    load_after = os.getloadavg()
    med = statistics.median
    return {
        "note": "machine-specific: llama.cpp (via llama-cpp-python) on the machine that generated this "
                "file; for benchmark comparison only, tests must never assert on it",
        "n_threads": N_THREADS,
        "flash_attn": True,
        "kv_type": "f16",
        "runs": SPEED_RUNS,
        "prefill_tokens": SPEED_PREFILL,
        "prefill_tokens_per_s": round(SPEED_PREFILL / med(pp), 1),
        "prefill_seconds": [round(x, 4) for x in pp],
        "decode_tokens": SPEED_DECODE,
        "decode_tokens_per_s": round(SPEED_DECODE / med(tg512), 1),
        "decode_seconds": [round(x, 4) for x in tg512],
        "decode_note": "one token per llama_decode call, after a 512-token prefill (KV depth 512..639); "
                       "Python call overhead included (a few us per call)",
        "decode_from_empty_tokens_per_s": round(SPEED_DECODE / med(tg0), 1),
        "decode_from_empty_seconds": [round(x, 4) for x in tg0],
        "cpu": cpu_name(),
        "n_cpus": os.cpu_count(),
        "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
        "loadavg_1_5_15_after": [round(x, 2) for x in load_after],
        "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---------------------------------------------------------------- output

def dumps(obj, indent=0):
    """JSON with nested objects indented but lists of scalars (and of small lists) on one line."""
    pad, pad1 = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad1}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(x, (dict, list)) for x in obj) or \
                all(isinstance(x, list) and all(not isinstance(y, (dict, list)) for y in x) for x in obj):
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        return "[\n" + ",\n".join(pad1 + dumps(x, indent + 1) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(HOME, "models", MODEL_NAME))
    ap.add_argument("--texts", default=os.path.join(HOME, "texts"))
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--no-speed", action="store_true", help="skip the llama.cpp speed measurement")
    ap.add_argument("--speed-only", action="store_true",
                    help="only re-measure speed and replace the 'speed' entry of the existing --out file")
    args = ap.parse_args()

    if args.speed_only:
        ref = json.load(open(args.out, encoding="utf-8"))
        log(f"measuring llama.cpp speed (load average {os.getloadavg()[0]:.2f}) ...")
        ref["speed"] = measure_speed(args.model, ref["texts"]["cfi-ch4"]["ids"])
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(dumps(ref) + "\n")
        s = ref["speed"]
        print(f"speed (n_threads={s['n_threads']}, load {s['loadavg_1_5_15_before'][0]}): prefill "
              f"{s['prefill_tokens_per_s']} tok/s, decode {s['decode_tokens_per_s']} tok/s "
              f"(from empty: {s['decode_from_empty_tokens_per_s']}); wrote {args.out}")
        return

    t_start = time.time()
    log(f"llama-cpp-python {llama_cpp.__version__}, model {args.model}")
    main_llm = make_llama(args.model, 1024, logits_all=True, flash_attn=True)
    vocab = main_llm._model.vocab
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    add_eos = bool(llama_cpp.llama_vocab_get_add_eos(vocab))
    n_vocab = main_llm.n_vocab()

    ref = {"description": "llama.cpp reference data for SmolLM2-135M-Instruct Q4_1; generated by "
                          "scripts/reference/make_reference.py (see its docstring for the protocol)"}
    ref["model"] = {
        "file": os.path.basename(args.model),
        "size": os.path.getsize(args.model),
        "sha256": sha256_file(args.model),
        "n_vocab": n_vocab,
    }
    ref["llama_cpp_python_version"] = llama_cpp.__version__
    ref["add_bos"] = add_bos
    ref["add_eos"] = add_eos
    ref["bos_id"] = main_llm.token_bos()
    ref["eos_id"] = main_llm.token_eos()

    # ---- texts
    texts, ref["texts"] = {}, {}
    for name, fname in TEXTS.items():
        path = os.path.join(args.texts, fname)
        raw, text = read_text(path)
        texts[name] = text
        ids = tokenize(main_llm, text, add_special=False, special=False)
        ref["texts"][name] = {
            "file": fname,
            "size": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "tokenize": {"add_bos": False, "special": False},
            "token_count": len(ids),
            "ids": ids,
        }
        log(f"text {name}: {len(raw)} bytes, {len(ids)} tokens")

    # ---- greedy
    ref["greedy"] = {"steps": GREEDY_STEPS,
                     "note": "argmax of the logits at every step, EOS does not stop generation; "
                             "top1_top2_gap[k] is the logit gap behind generated id k, top1_logit its logit",
                     "prompts": []}
    prompts = build_prompts(main_llm, texts)
    prompt_ids = {}
    for name, text, special in prompts:
        ids = tokenize(main_llm, text, add_special=True, special=special)
        prompt_ids[name] = ids
        gen, gaps, top1 = greedy(main_llm, ids, GREEDY_STEPS)
        ref["greedy"]["prompts"].append({
            "name": name,
            "text": text,
            "tokenize": {"add_bos": add_bos, "special": special},
            "prompt_ids": ids,
            "generated_ids": gen,
            "generated_text": main_llm.detokenize(gen, special=True).decode("utf-8", errors="replace"),
            "top1_top2_gap": gaps,
            "top1_logit": top1,
        })
        log(f"greedy {name}: {len(ids)} prompt tokens, min gap {min(gaps):.4f}")

    # ---- logits
    ref["logits"] = {"top_k": TOP_K_LOGITS,
                     "note": "whole prompt evaluated in one llama_decode from an empty cache; logits at "
                             "prompt position p (0-based) predict token p+1; logsumexp over the full vocab",
                     "prompts": []}
    for name in ("alice_sentence", "cfi_long"):
        ids = prompt_ids[name]
        n = len(ids)
        positions = sorted({0, n // 3, (2 * n) // 3, n - 1})
        all_logits = run_from_empty(main_llm, ids)
        ref["logits"]["prompts"].append({"name": name, "prompt_ids": ids,
                                         "positions": logits_at(all_logits, positions)})
    main_llm.close()

    # ---- perplexity
    ref["perplexity"] = {"protocol": "llama-perplexity: whole text tokenized (BOS only if add_bos), "
                                     "non-overlapping windows of n_ctx from an empty cache, logits at "
                                     "positions n_ctx/2 .. n_ctx-2 score the next token",
                         "runs": []}
    for name in TEXTS:
        for n_ctx, n_chunks in PPL_RUNS:
            r = perplexity(args.model, texts[name], n_ctx, n_chunks)
            r = {"text": name, **r}
            ref["perplexity"]["runs"].append(r)
            log(f"ppl {name} ctx {n_ctx} x {r['n_chunks']}: {r['ppl']:.4f} ({r['tokens_scored']} tokens)")
    # cross-check: the same at ctx 1024 with flash attention off (llama-cpp-python's default)
    ref["perplexity"]["no_flash_attn_check"] = []
    for name in TEXTS:
        n_ctx, n_chunks = PPL_RUNS[0]
        r = perplexity(args.model, texts[name], n_ctx, n_chunks, flash_attn=False)
        ref["perplexity"]["no_flash_attn_check"].append(
            {"text": name, "n_ctx": n_ctx, "n_chunks": r["n_chunks"], "tokens_scored": r["tokens_scored"],
             "ppl": r["ppl"]})
        log(f"ppl {name} ctx {n_ctx} without flash attention: {r['ppl']:.4f}")
    # cross-check: alice29 with CRLF -> LF. The fixture keeps the CRLF bytes (its ids above);
    # a text reader that drops the CR gets this value instead (about 7% higher: CRLF tokenizes as
    # "\r" (201) + "\n" (198), and the "\n" after a "\r" is an almost free scored token).
    n_ctx, n_chunks = PPL_RUNS[0]
    r = perplexity(args.model, texts["alice29"].replace("\r\n", "\n"), n_ctx, n_chunks)
    ref["perplexity"]["alice29_lf_normalized_check"] = {
        "text": "alice29 with every CRLF replaced by LF (not the fixture's ids)", "n_ctx": n_ctx,
        "n_chunks": r["n_chunks"], "tokens_scored": r["tokens_scored"], "ppl": r["ppl"]}
    log(f"ppl alice29 (CRLF->LF) ctx {n_ctx}: {r['ppl']:.4f}")

    # ---- speed
    if not args.no_speed:
        log("measuring llama.cpp speed ...")
        ref["speed"] = measure_speed(args.model, ref["texts"]["cfi-ch4"]["ids"])

    ref["settings"] = {
        "script": "scripts/reference/make_reference.py",
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n_threads": N_THREADS,
        "n_threads_batch": N_THREADS,
        "n_ctx": "1024 for texts/greedy/logits/speed; the perplexity n_ctx for perplexity runs",
        "n_batch": "= n_ctx (one llama_decode per prompt or perplexity chunk); 512 for speed",
        "n_ubatch": N_UBATCH,
        "type_k": "f16",
        "type_v": "f16",
        "flash_attn": True,
        "flash_attn_note": "llama.cpp default 'auto' resolves to enabled on CPU; llama-cpp-python's own "
                           "default is disabled, so it is set explicitly",
        "logits_all": True,
        "seed": SEED,
        "sampling": "greedy argmax over raw logits (no sampler, no penalties)",
        "greedy_steps": GREEDY_STEPS,
        "logit_decimals": LOGIT_DECIMALS,
        "perplexity_runs": [{"n_ctx": c, "n_chunks": k} for c, k in PPL_RUNS],
        "speed_runs": SPEED_RUNS,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
        "llama_cpp_python_build": BUILD_COMMAND,
        "elapsed_seconds": round(time.time() - t_start, 1),
    }

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    data = dumps(ref) + "\n"
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(data)

    # ---- human summary
    print(f"wrote {args.out} ({len(data.encode('utf-8')):,} bytes)")
    print(f"llama-cpp-python {llama_cpp.__version__}; add_bos={add_bos} bos={ref['bos_id']} eos={ref['eos_id']}")
    for name, t in ref["texts"].items():
        print(f"  text {name:8s} {t['size']:>7,} bytes  {t['token_count']:>6,} tokens")
    for r in ref["perplexity"]["runs"]:
        print(f"  ppl {r['text']:8s} ctx {r['n_ctx']:4d} x {r['n_chunks']} chunks: {r['ppl']:.4f} "
              f"({r['tokens_scored']} tokens scored)")
    for r in ref["perplexity"]["no_flash_attn_check"]:
        print(f"  ppl {r['text']:8s} ctx {r['n_ctx']:4d} without flash attn: {r['ppl']:.4f}")
    r = ref["perplexity"]["alice29_lf_normalized_check"]
    print(f"  ppl alice29  ctx {r['n_ctx']:4d} CRLF->LF (check only): {r['ppl']:.4f}")
    for g in ref["greedy"]["prompts"]:
        print(f"  greedy {g['name']:15s} {len(g['prompt_ids']):4d} prompt tokens, min gap "
              f"{min(g['top1_top2_gap']):.4f}: {g['generated_text'][:60]!r}")
    if "speed" in ref:
        s = ref["speed"]
        print(f"  speed (n_threads={s['n_threads']}, load {s['loadavg_1_5_15_before'][0]}): prefill {s['prefill_tokens_per_s']} tok/s, "
              f"decode {s['decode_tokens_per_s']} tok/s (from empty: {s['decode_from_empty_tokens_per_s']})")


if __name__ == "__main__":
    main()
