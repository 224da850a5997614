#!/usr/bin/env python3
"""Write llama.cpp's token ids for tricky strings, for SparseKV's tokenizer tests.

Usage (re-runnable; overwrites the fixture):

    python3 scripts/reference/make_tokenizer_cases.py
    python3 scripts/reference/make_tokenizer_cases.py --model path/to.gguf --out /tmp/cases.json

Input: the SmolLM2 GGUF fetched by scripts/fetch_assets.py into $SPARSEKV_HOME (default
~/.cache/sparsekv): models/SmolLM2-135M-Instruct.Q4_1.gguf. Only its vocabulary is loaded
(`Llama(vocab_only=True)`), so this takes a second.

Output: Tests/SparseKVEngineTests/Fixtures/tokenizer-cases.json with
    model      file name, byte size; vocab size, bos/eos ids, add_bos, and every id for
               which llama_vocab_is_eog() is true
    cases      ~50 strings chosen to exercise the pre-tokenizer and BPE corner cases
               (digit runs, contractions, whitespace runs, CRLF, non-Latin scripts,
               combining marks, emoji, code, special tokens with and without parsing,
               control characters, scalars newer than llama.cpp's Unicode tables), each
               with `add_special`, `parse_special`, the ids `llama_tokenize` returns, and
               the text `llama_detokenize` gives back (remove_special and unparse_special
               false: control tokens are not rendered)
    pre_variants the same cases' ids under other pre-tokenizers: SmolLM2's vocabulary and
               merges with tokenizer.ggml.pre set to "gpt-2", "default", "llama3" or "qwen2"
               (written to a temporary vocab-only GGUF with the `gguf` package), so the
               splitters SmolLM2 does not use are checked against llama.cpp too
    full_texts for each of texts/{cfi-ch4,alice29,cfi-calib}.txt that exists: byte size and
               FNV-1a-64 of the file, token count and FNV-1a-64 of the ids (little-endian
               int32), so a test can check whole texts without storing the id lists
               (FNV-1a because Swift on Linux has no SHA-256 without another package)
    generator  this script and the llama-cpp-python version

Ids come from llama-cpp-python's `Llama.tokenize(text_bytes, add_bos=add_special,
special=parse_special)`, a thin wrapper over `llama_tokenize(vocab, text, add_special,
parse_special)`. Texts are passed as UTF-8 bytes exactly as written below; the full texts
are read as raw bytes (alice29.txt keeps its CRLF line ends and trailing 0x1A byte).

Requires llama-cpp-python (tested with 0.3.36); any CPU build works since no weights load.
The pre_variants section also needs the `gguf` package (pip install gguf); without it
the section is left empty.
"""
import argparse
import ctypes
import json
import os
import struct
import sys
import tempfile

HOME = os.environ.get("SPARSEKV_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "sparsekv")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL = os.path.join(HOME, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = os.path.join(REPO, "Tests", "SparseKVEngineTests", "Fixtures", "tokenizer-cases.json")
FULL_TEXTS = ["cfi-ch4.txt", "alice29.txt", "cfi-calib.txt"]

CHATML = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
)

# (name, text, add_special, parse_special)
CASES = [
    ("plain", "Hello world", False, False),
    ("plain add_special", "Hello world", True, False),
    ("empty add_special", "", True, False),
    ("digit run", "12345", False, False),
    ("long digit run", "00000000001234567890", False, False),
    ("decimal", "3.14", False, False),
    ("numbers in text", "In 2024, 1,000,000 people paid $3.50 (or 7%) on 12/31.", False, False),
    ("letters and digits", "Mixed123Numbers456and7.89e10", False, False),
    ("contractions", "don't I'll WE'RE they've she'd it's you'M", False, False),
    ("apostrophe edge", "'s 'tis rock'n'roll '' ' x'", False, False),
    ("multiple spaces", "a  b   c    d", False, False),
    ("tabs", "\tindented\twith\t\ttabs", False, False),
    ("newlines", "line1\n\n\nline2\n", False, False),
    ("crlf", "crlf line\r\nnext line\r\n\r\nlast", False, False),
    ("lone cr", "alpha\r\rbeta\r", False, False),
    ("leading spaces", "   leading spaces", False, False),
    ("trailing spaces", "trailing spaces   ", False, False),
    ("single space", " ", False, False),
    ("whitespace only lines", "    \n    \n\t\n", False, False),
    ("mixed whitespace", "  \t \n  x", False, False),
    ("unicode spaces", "non\u00a0breaking\u2003em\u3000ideographic\u0085next", False, False),
    ("info separators", "x\u001fy\u001cz", False, False),
    ("latin accents", "café naïve résumé é Ångström", False, False),
    ("sharp s", "Straße ß STRASSE", False, False),
    ("chinese", "中文分词测试，很好。", False, False),
    ("japanese", "日本語のテキストです。カタカナ", False, False),
    ("cyrillic greek", "Привет, мир! Ελληνικά", False, False),
    ("devanagari marks", "हिन्दी पाठ", False, False),
    ("combining marks", "e\u0301 a\u0308 n\u0303o\u0302", False, False),
    ("emoji skin tone", "👍🏽 thumbs up 🎉", False, False),
    ("emoji zwj", "family 👨\u200d👩\u200d👧\u200d👦 done", False, False),
    ("non-ascii numbers", "٣٤٥ and ½ ¾ x² Ⅻ", False, False),
    ("unicode 16 letter", "Hello\U00010d40world \U00010d41", False, False),
    ("punctuation runs", "...!!?? wait—what?! (yes) [no] {maybe} <tag>", False, False),
    ("quotes", "'quoted' \"double\" `back` “curly” ‘single’", False, False),
    ("code", "def f(x):\n    return x**2\n", False, False),
    ("code braces", "if (a && b) { x += 1; } // done\n\tfor i in 0..<n {}", False, False),
    ("url email", "See https://example.com/path?q=1&r=2#frag or someone@example.org.", False, False),
    ("control char", "\u001a", False, False),
    ("eof marker", "end of file\r\n\u001a", False, False),
    ("nul and bell", "a\u0000b\u0007c", False, False),
    ("special unparsed", "<|im_start|>user\nHi<|im_end|>", False, False),
    ("special parsed", "<|im_start|>user\nHi<|im_end|>", False, True),
    ("special alone parsed", "<|im_start|>", False, True),
    ("special adjacent parsed", "text<|endoftext|>more<|im_end|><|im_start|>", False, True),
    ("special with spaces parsed", " <|im_end|> \n<repo_name> x", False, True),
    ("special partial", "<|im_start|<|im_end", False, True),
    ("chatml parsed", CHATML, True, True),
    ("chatml unparsed", CHATML, True, False),
]


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return format(h, "x")


def fnv1a64_ids(ids):
    return fnv1a64(b"".join(struct.pack("<i", t) for t in ids))


def dump_one_item_per_line(obj):
    """JSON with one case per line: readable diffs without an id per line."""
    def one(v):
        return json.dumps(v, ensure_ascii=False)
    parts = []
    for key, value in obj.items():
        if isinstance(value, list):
            items = ",\n".join("  " + one(v) for v in value)
            parts.append(f' {one(key)}: [\n{items}\n ]')
        else:
            parts.append(f" {one(key)}: {one(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


VARIANT_PRES = ["gpt-2", "default", "llama3", "qwen2"]


def write_variant(src, pre, path):
    """Copies every metadata key of `src` (no tensors) with tokenizer.ggml.pre = pre."""
    import gguf
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(path, arch=arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "tokenizer.ggml.pre":
            w.add_string(key, pre)
        elif field.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_array(key, list(field.contents()))
        else:
            w.add_key_value(key, field.contents(), field.types[0])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def variant_ids(llama_cpp, model, cases):
    try:
        import gguf  # noqa: F401
    except ImportError:
        print("[cases] no `gguf` package: pre_variants skipped", file=sys.stderr)
        return []
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for pre in VARIANT_PRES:
            path = os.path.join(tmp, f"vocab-{pre}.gguf")
            write_variant(model, pre, path)
            llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            ids = [llm.tokenize(text.encode("utf-8"), add_bos=add, special=parse) for _, text, add, parse in cases]
            out.append({"pre": pre, "ids": ids})
            del llm
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    try:
        import llama_cpp
    except ImportError:
        sys.exit("error: llama-cpp-python is not installed (pip install llama-cpp-python)")
    if not os.path.exists(args.model):
        sys.exit(f"error: {args.model} not found; run scripts/fetch_assets.py first")

    llm = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    def detok(ids):
        # llama_detokenize itself: Llama.detokenize truncates pieces longer than 32 bytes
        # and drops a space after a leading BOS, which llama.cpp does not do.
        arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
        size = 64 + 256 * len(ids)
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, False)
        if n < 0:
            sys.exit(f"error: llama_detokenize needs {-n} bytes")
        return buf.raw[:n].decode("utf-8", errors="replace")

    cases = []
    for name, text, add_special, parse_special in CASES:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)
        cases.append({
            "name": name, "text": text, "add_special": add_special, "parse_special": parse_special,
            "ids": ids, "detokenized": detok(ids),
        })

    variants = variant_ids(llama_cpp, args.model, CASES)

    full = []
    for fname in FULL_TEXTS:
        path = os.path.join(HOME, "texts", fname)
        if not os.path.exists(path):
            print(f"[cases] {path} missing, skipped", file=sys.stderr)
            continue
        data = open(path, "rb").read()
        ids = llm.tokenize(data, add_bos=False, special=False)
        full.append({
            "file": fname, "bytes": len(data), "fnv1a64": fnv1a64(data),
            "add_special": False, "parse_special": False,
            "token_count": len(ids), "ids_fnv1a64": fnv1a64_ids(ids),
        })
        print(f"[cases] {fname}: {len(ids)} tokens", file=sys.stderr)

    out = {
        "model": {
            "file": os.path.basename(args.model),
            "bytes": os.path.getsize(args.model),
            "vocab_size": n_vocab,
            "bos_id": llama_cpp.llama_vocab_bos(vocab),
            "eos_id": llama_cpp.llama_vocab_eos(vocab),
            "eot_id": llama_cpp.llama_vocab_eot(vocab),
            "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
            "eog_ids": [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        },
        "cases": cases,
        "pre_variants": variants,
        "full_texts": full,
        "generator": {
            "script": "scripts/reference/make_tokenizer_cases.py",
            "llama_cpp_python": getattr(llama_cpp, "__version__", "unknown"),
        },
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(dump_one_item_per_line(out))
    print(f"[cases] wrote {len(cases)} cases to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
