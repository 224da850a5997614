#!/usr/bin/env python3
"""Probe for issue 10's "csr:8 >= fp16 decode": what does coding keys *after* RoPE cost?

SparseKV codes keys before RoPE, so a decode step must rebuild each position's key from
its s atoms (s x 64 multiply-adds per position and KV head) before rotating and scoring
it. Keys coded after RoPE (as Lexico does) could be scored in atom space instead: q.D once
per step, then s lookups per position. This probe measures the quality side of that trade
on the model, without touching the engine:

  * keys (pre- and post-RoPE) and post-RoPE queries come from the float64 reference
    forward of scripts/reference/make_f64_reference.py (the `gguf` package), over windows
    of --window tokens from the calibration text (training) and one window of cfi-ch4
    (held out), every window from position 0;
  * one dictionary of --atoms atoms per layer and variant is trained with scikit-learn's
    MiniBatchDictionaryLearning (not the project's NeuralDict trainer: the comparison
    between the two variants is what counts), atoms normalised;
  * held-out keys are coded with OMP at each sparsity of --sparsity; pre-RoPE codes are
    rotated after decoding;
  * reported: relative squared error of the keys (post-RoPE) and of the attention logits
    q.k over every causal (query, key) pair of every query head.

Needs `python3 -m pip install gguf scikit-learn` and a built `sparsekv` (for tokenizing).
Writes a Markdown table to stdout (reports/rope-key-probe.md was made with the defaults).
"""
import argparse, os, subprocess, sys, time
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
HOME = os.environ.get("SPARSEKV_HOME", os.path.expanduser("~/.cache/sparsekv"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="5,15,25")
    ap.add_argument("--atoms", type=int, default=1024)
    ap.add_argument("--sparsity", default="8,16")
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--train-windows", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10, help="MiniBatchDictionaryLearning max_iter")
    ap.add_argument("--model", default=os.path.join(HOME, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--bin", default=os.path.join(HERE, "..", ".build/release/sparsekv"))
    args = ap.parse_args()
    try:
        from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode
        import make_f64_reference as ref
    except ImportError as e:
        sys.exit(f"error: {e}; install with: python3 -m pip install gguf scikit-learn")
    layers = [int(x) for x in args.layers.split(",")]
    sparsities = [int(x) for x in args.sparsity.split(",")]
    win = args.window

    def ids(path, count):
        out = subprocess.run([args.bin, "tokenize", "--model", args.model, "--file", path],
                             capture_output=True, text=True, check=True).stdout
        t = [int(x) for x in out.replace(",", " ").split()]
        if len(t) < count:
            sys.exit(f"error: {path} has {len(t)} tokens, {count} needed")
        return t[:count]

    model = ref.Model(args.model)
    hd, kvh, group = model.head_dim, model.kv_heads, model.heads // model.kv_heads

    def collect(tokens):
        """layer -> (pre-RoPE keys, post-RoPE keys, post-RoPE queries), (n, heads, hd) each."""
        got, n = {}, len(tokens)
        x = model.embedding[np.asarray(tokens)]
        causal = np.arange(n)[None, :] <= np.arange(n)[:, None]
        for l, blk in enumerate(model.blocks):
            h = model.rmsnorm(x, blk["attn_norm"])
            kpre = h @ blk["wk"].T
            q = model.rope(h @ blk["wq"].T, model.heads, 0).reshape(n, model.heads, hd)
            k = model.rope(kpre, kvh, 0).reshape(n, kvh, hd)
            v = (h @ blk["wv"].T).reshape(n, kvh, hd)
            if l in layers:
                got[l] = (kpre.reshape(n, kvh, hd), k, q)
            scores = np.einsum("nhd,thd->hnt", q, np.repeat(k, group, axis=1)) / np.sqrt(hd)
            scores = np.where(causal[None], scores, -np.inf)
            scores -= scores.max(axis=-1, keepdims=True)
            p = np.exp(scores)
            p /= p.sum(axis=-1, keepdims=True)
            att = np.einsum("hnt,thd->nhd", p, np.repeat(v, group, axis=1)).reshape(n, model.heads * hd)
            x = x + att @ blk["wo"].T
            h = model.rmsnorm(x, blk["ffn_norm"])
            g, u = h @ blk["wgate"].T, h @ blk["wup"].T
            x = x + (g / (1.0 + np.exp(-g)) * u) @ blk["wdown"].T
        return got

    t0 = time.time()
    calib = ids(os.path.join(HOME, "texts/cfi-calib.txt"), args.train_windows * win)
    train = [collect(calib[i * win:(i + 1) * win]) for i in range(args.train_windows)]
    held = collect(ids(os.path.join(HOME, "texts/cfi-ch4.txt"), win))
    print(f"[rope-probe] forward passes {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    print(f"Keys coded before or after RoPE: N = {args.atoms} atoms, OMP; trained on "
          f"{args.train_windows} x {win} tokens of cfi-calib, tested on {win} tokens of cfi-ch4 "
          f"(positions 0-{win - 1}); `python3 scripts/rope_key_probe.py --layers {args.layers} "
          f"--atoms {args.atoms} --sparsity {args.sparsity} --window {win} --epochs {args.epochs}`.\n")
    print("| layer | keys coded | s | key rel. sq. error | logit rel. sq. error |")
    print("|---:|---|---:|---:|---:|")
    for l in layers:
        for variant in ("before RoPE", "after RoPE"):
            pick = 0 if variant == "before RoPE" else 1
            X = np.concatenate([w[l][pick].reshape(-1, hd) for w in train])
            t1 = time.time()
            dl = MiniBatchDictionaryLearning(n_components=args.atoms, alpha=0.1, batch_size=512,
                                             max_iter=args.epochs, random_state=0)
            dl.fit(X)
            D = dl.components_ / np.linalg.norm(dl.components_, axis=1, keepdims=True)
            kpre, kpost, q = held[l]
            for s in sparsities:
                C = sparse_encode(kpre.reshape(-1, hd) if pick == 0 else kpost.reshape(-1, hd), D,
                                  algorithm="omp", n_nonzero_coefs=s)
                R = C @ D
                R = (model.rope(R.reshape(-1, kvh * hd), kvh, 0) if pick == 0 else R).reshape(-1, kvh, hd)
                key_err = np.linalg.norm(R - kpost) ** 2 / np.linalg.norm(kpost) ** 2
                num = den = 0.0
                for j in range(model.heads):
                    exact, approx = q[:, j] @ kpost[:, j // group].T, q[:, j] @ R[:, j // group].T
                    mask = np.tril(np.ones_like(exact, dtype=bool))
                    num += ((approx - exact)[mask] ** 2).sum()
                    den += (exact[mask] ** 2).sum()
                print(f"| {l} | {variant} | {s} | {key_err:.4f} | {num / den:.4f} |", flush=True)
            print(f"[rope-probe] layer {l} {variant}: trained in {time.time() - t1:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
