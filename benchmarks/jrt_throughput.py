"""JRT-RNN speed: prefill and decode of one prefix-linear-attention (PLA) layer vs softmax attention,
and the train step of a whole JRT model.

The paper (Arora et al., 2024, "Just read twice") reports 19.2x FlashAttention-2 prefill throughput for
JRT-RNN (and 11.9x for JRT-Prompt on Based) at 32k tokens, batch 16, on an H100. This script measures the
same comparison with our kernels, on whatever `jax.devices()` offers:

- prefill: tokens/s of one layer (projections + attention + output projection) at each length, ours =
  `jrt_ops.prefix_linear_attention` in its chunked O(L) form with a prefix of `--encoder-len` tokens, peer =
  causal `jax.nn.dot_product_attention` (XLA on CPU, cuDNN flash attention on a GPU when available) with
  the same width, heads and head dim; the ratio per length and the crossover length;
- decode: per-token latency while generating `--decode-tokens` tokens one at a time, ours = `jrt_ops.decode_step`
  on a constant-size state, peer = attention over a KV cache that grows in blocks of `--decode-block`;
  and the memory of the state vs the cache at the end;
- train step: tokens/s of a whole `jrt.LM` train step with the 360M preset's layer pattern at a reduced
  width, vs the causal Based LM of the same preset.

One table (workload, unit, ours, peer, ratio, and the machine), median of `--repeats` timed runs after a
compile/warm-up run (`jaxzoo.script.timeit`); results.json and prefill.png (tokens/s against length) go
into --out (default outputs/jrt_throughput).

Run (CPU defaults: 10-15 minutes on a 2-core CPU; `--smoke` runs every part in seconds):
    python benchmarks/jrt_throughput.py [--out DIR] [--smoke]
GPU (the paper's setting, prefill at 360M width):
    python benchmarks/jrt_throughput.py --d-model 1024 --heads 16 --batch-size 16 \
        --lengths 1024,2048,4096,8192,16384,32768 --peer-max-len 32768 \
        --dtype bfloat16 --model-d 1024 --model-batch 8 --model-len 2048

Defaults use 2 heads of width 64 (d_model 128) so that softmax attention's [B, H, L, L] logits fit in
memory up to 16k on a CPU; per-token costs of both layers scale with the number of heads, so the ratio
per length does not depend on it much. On a CPU, lengths where the peer's logits would exceed
`--peer-max-gb` are left empty ("-"); use bfloat16 on a GPU so that cuDNN flash attention is used.

What to expect (numbers in results.json): PLA's prefill is slower than softmax attention at a few hundred
tokens and overtakes it between 256 and 1k tokens, its advantage growing with length; decoding from the
constant-size state is several times faster per token than attention over a growing KV cache, with a
state tens of times smaller; the whole JRT model trains at a throughput close to Based's. With
--accelerator on a GPU/TPU a "PLA prefill, Pallas vs XLA chunked" row times the `jrt.pallas` kernel against
the XLA chunked form (on a CPU the row is skipped with a note).

Measured with the defaults, alone on this 2-core CPU (one run, float32): prefill PLA / softmax 0.64x at
L = 256, 0.90x at 1k, 1.64x at 2k, 3.43x at 4k, 10.4x at 16k (crossover between 1k and 2k; softmax's
logits do not fit at 32k, PLA runs at 49.7k tok/s); decoding 12.5x faster per token over tokens 0-1k and
34.9x over 3k-4k, state 29.6x smaller than the KV cache at 4096 tokens; whole-model train step at the
360M layer pattern (d 64, B 2, L 256): JRT-RNN 1926 tok/s vs Based 1989 tok/s = 0.969x.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxzoo
import jrt
from jaxzoo import script
from jrt import ops as jrt_ops


def layer_weights(key, d_model, heads, feature_dim, head_dim, dtype):
    """Weights of one PLA layer (ours) and one softmax attention layer (peer), N(0, 0.02)."""
    names = {
        "wq": (d_model, heads * feature_dim),
        "wk": (d_model, heads * feature_dim),
        "wv": (d_model, heads * head_dim),
        "wk_enc": (d_model, heads * feature_dim),
        "wv_enc": (d_model, heads * head_dim),
        "wo": (heads * head_dim, d_model),
        "wq_sm": (d_model, heads * head_dim),
        "wk_sm": (d_model, heads * head_dim),
    }
    keys = jax.random.split(key, len(names))
    return {n: (0.02 * jax.random.normal(k, s)).astype(dtype) for k, (n, s) in zip(keys, names.items())}


def pla_layer(w, x, *, heads, feature_dim, encoder_len, chunk_size, kernel="xla"):
    """x [B, L, d] -> [B, L, d]: JRT-RNN's PLA layer, chunked, the first `encoder_len` tokens the prefix."""
    b, n, _ = x.shape
    m = min(encoder_len, n)
    q = (x @ w["wq"]).reshape(b, n, heads, feature_dim)
    k = (x @ w["wk"]).reshape(b, n, heads, feature_dim)
    v = (x @ w["wv"]).reshape(b, n, heads, -1)
    k_enc = (x[:, :m] @ w["wk_enc"]).reshape(b, m, heads, feature_dim)
    v_enc = (x[:, :m] @ w["wv_enc"]).reshape(b, m, heads, -1)
    y = jrt_ops.prefix_linear_attention(q, k, v, k_enc, v_enc, chunk_size=chunk_size, kernel=kernel)
    return y.reshape(b, n, -1) @ w["wo"]


def softmax_layer(w, x, *, heads):
    """x [B, L, d] -> [B, L, d]: causal multi-head softmax attention with the same heads and head dim."""
    b, n, _ = x.shape
    q = (x @ w["wq_sm"]).reshape(b, n, heads, -1)
    k = (x @ w["wk_sm"]).reshape(b, n, heads, -1)
    v = (x @ w["wv"]).reshape(b, n, heads, -1)
    y = jaxzoo.dot_product_attention(q, k, v, is_causal=True)  # [B, L, H, D]
    return y.reshape(b, n, -1) @ w["wo"]


def prefill_rows(args, w, dtype):
    rows, ratios = [], {}
    for n in args.lengths:
        x = jax.random.normal(jax.random.key(n), (args.batch_size, n, args.d_model)).astype(dtype)
        ours = jax.jit(
            lambda w, x: pla_layer(
                w,
                x,
                heads=args.heads,
                feature_dim=args.feature_dim,
                encoder_len=args.encoder_len,
                chunk_size=args.chunk_size,
            )
        )
        t_ours = script.timeit(functools.partial(ours, w, x), repeats=args.repeats)
        logits_gb = args.batch_size * args.heads * n * n * 4 / 1e9
        t_peer = None
        on_cpu = jax.devices()[0].platform == "cpu"  # XLA materialises the logits; cuDNN flash does not
        if n <= args.peer_max_len and (logits_gb <= args.peer_max_gb or not on_cpu):
            peer = jax.jit(lambda w, x: softmax_layer(w, x, heads=args.heads))
            t_peer = script.timeit(functools.partial(peer, w, x), repeats=args.repeats)
        tok = args.batch_size * n
        ratio = t_peer / t_ours if t_peer else None
        if ratio is not None:
            ratios[n] = ratio
        rows.append(
            row(
                f"prefill L={n} B={args.batch_size}",
                "tok/s",
                tok / t_ours,
                tok / t_peer if t_peer else None,
                ratio,
                length=n,
            )
        )
    faster = [n for n, r in sorted(ratios.items()) if r > 1]
    if not ratios:
        crossover = "no peer measurement"
    elif not faster:
        crossover = f"PLA slower at every measured length (<= {max(ratios)})"
    elif faster[0] == min(ratios):
        crossover = f"PLA faster already at the shortest length, {faster[0]}"
    else:
        slower = max(n for n in ratios if n < faster[0])
        crossover = f"between L={slower} and L={faster[0]}"
    return rows, crossover


def pallas_rows(args, w, dtype):
    """PLA prefill with the Pallas kernel (`jrt.pallas`) vs the XLA chunked form; GPU/TPU only."""
    if jax.devices()[0].platform == "cpu":
        return [], "Pallas row skipped: the kernel runs on GPU/TPU only (on a CPU it is only interpreted, in tests)"
    rows = []
    for n in args.lengths:
        x = jax.random.normal(jax.random.key(n), (args.batch_size, n, args.d_model)).astype(dtype)
        kw = dict(
            heads=args.heads, feature_dim=args.feature_dim, encoder_len=args.encoder_len, chunk_size=args.chunk_size
        )
        times = {}
        for kernel in ("pallas", "xla"):
            fn = jax.jit(functools.partial(pla_layer, kernel=kernel, **kw))
            times[kernel] = script.timeit(functools.partial(fn, w, x), repeats=args.repeats)
        tok = args.batch_size * n
        rows.append(
            row(
                f"PLA prefill, Pallas vs XLA chunked, L={n} B={args.batch_size}",
                "tok/s",
                tok / times["pallas"],
                tok / times["xla"],
                times["xla"] / times["pallas"],
            )
        )
    return rows, "Pallas rows: ours = jrt.pallas kernel, peer = the XLA chunked form of the same layer"


def decode_rows(args, w, dtype):
    """Generate `decode_tokens` tokens one by one (lax.scan per block of `decode_block` tokens)."""
    b, h, f, dh = args.batch_size, args.heads, args.feature_dim, args.head_dim
    total, block = args.decode_tokens, args.decode_block
    xs = jax.random.normal(jax.random.key(1), (total, b, args.d_model)).astype(dtype)

    def ours_block(state, xs):
        def body(state, x):
            q = (x @ w["wq"]).reshape(b, h, f)
            k = (x @ w["wk"]).reshape(b, h, f)
            v = (x @ w["wv"]).reshape(b, h, dh)
            y, state = jrt_ops.decode_step(state, q, k, v)
            return state, y.reshape(b, -1) @ w["wo"]

        return jax.lax.scan(body, state, xs)

    def peer_block(cache_k, cache_v, start, xs):
        def body(carry, inp):
            ck, cv = carry
            t, x = inp
            q = (x @ w["wq_sm"]).reshape(b, 1, h, dh)
            k = (x @ w["wk_sm"]).reshape(b, 1, h, dh)
            v = (x @ w["wv"]).reshape(b, 1, h, dh)
            ck = jax.lax.dynamic_update_slice_in_dim(ck, k, t, axis=1)
            cv = jax.lax.dynamic_update_slice_in_dim(cv, v, t, axis=1)
            filled = jnp.broadcast_to(jnp.arange(ck.shape[1]) <= t, (b, ck.shape[1]))  # [B, Lk] key mask
            y = jaxzoo.dot_product_attention(q, ck, cv, mask=filled)
            return (ck, cv), y.reshape(b, -1) @ w["wo"]

        steps = start + jnp.arange(xs.shape[0], dtype=jnp.int32)
        return jax.lax.scan(body, (cache_k, cache_v), (steps, xs))

    big_f = jrt.feature_dim(f)
    state = jrt_ops.LinearAttentionState(
        kv=jnp.zeros((b, h, big_f, dh), jnp.float32), k_sum=jnp.zeros((b, h, big_f), jnp.float32)
    )
    ours = jax.jit(ours_block)
    peer = jax.jit(peer_block)
    rows = []
    cache_k = cache_v = jnp.zeros((b, 0, h, dh), dtype)
    for start in range(0, total, block):
        seg = xs[start : start + block]
        t_ours = script.timeit(functools.partial(ours, state, seg), repeats=args.repeats)
        state, _ = ours(state, seg)
        grow = ((0, 0), (0, seg.shape[0]), (0, 0), (0, 0))  # the cache grows by one block
        cache_k, cache_v = jnp.pad(cache_k, grow), jnp.pad(cache_v, grow)
        t_peer = script.timeit(functools.partial(peer, cache_k, cache_v, start, seg), repeats=args.repeats)
        (cache_k, cache_v), _ = peer(cache_k, cache_v, start, seg)
        n = seg.shape[0]
        rows.append(
            row(
                f"decode tokens {start}-{start + n} B={b}",
                "ms/token",
                1e3 * t_ours / n,
                1e3 * t_peer / n,
                t_peer / t_ours,
            )
        )
    state_mb = (state.kv.size + state.k_sum.size) * state.kv.dtype.itemsize / 2**20
    cache_mb = (cache_k.size + cache_v.size) * cache_k.dtype.itemsize / 2**20
    rows.append(row(f"decode memory at {total} tokens", "MiB/layer", state_mb, cache_mb, cache_mb / state_mb))
    return rows


PRESETS = {
    "360m": (jrt.JRTConfig.jrt_360m, jrt.JRTConfig.based_360m),
    "tiny": (jrt.JRTConfig.tiny, jrt.JRTConfig.tiny_based),
}


def model_rows(args):
    """Train-step tokens/s of a whole JRT LM (the preset's layer pattern, reduced width) vs causal Based."""
    ids = np.random.default_rng(0).integers(0, args.model_vocab, (args.model_batch, args.model_len + 1))
    batch = {"input_ids": jnp.asarray(ids[:, :-1], jnp.int32), "labels": jnp.asarray(ids[:, 1:], jnp.int32)}
    calls, layers = {}, {}
    for name, preset in zip(("jrt", "based"), PRESETS[args.model_preset]):
        # The preset's layer pattern, heads and f at a reduced width (mlp_hidden = 2 d as in the presets).
        cfg = preset(
            d_model=args.model_d,
            mlp_hidden=2 * args.model_d,
            vocab_size=args.model_vocab,
            max_len=args.model_len,
            precision=jaxzoo.Precision.of(args.dtype),
            # JRT: the first half of the context is the prefix, as 1024 of 2048 in the paper
            **({"encoder_len": args.model_len // 2} if name == "jrt" else {}),
        )
        run = jrt.RunConfig(model=cfg, steps=max(args.repeats + 1, 10), batch_size=args.model_batch)
        state = jrt.init_state(run).state
        step = jrt.make_train_step(run, donate=False)
        calls[name] = functools.partial(step, state, batch, jax.random.key(1))
        script.timeit(calls[name], warmup=1, repeats=1)  # compile
        layers[name] = cfg.n_layers
    # Alternate the two models' timed calls so that load changes on a shared machine hit both alike.
    samples = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            samples[name].append(script.timeit(call, warmup=0, repeats=1))
    times = {name: float(np.median(v)) for name, v in samples.items()}
    tok = args.model_batch * args.model_len
    workload = (
        f"train step JRT {layers['jrt']}L vs Based {layers['based']}L, d={args.model_d}, "
        f"B={args.model_batch} L={args.model_len}"
    )
    rows = [row(workload, "tok/s", tok / times["jrt"], tok / times["based"], times["based"] / times["jrt"])]
    return rows, "whole-model row: peer = causal Based LM of the same preset (not softmax attention)"


def row(workload, unit, ours, peer, ratio, **extra):
    return {"workload": workload, "unit": unit, "ours (JRT)": ours, "peer": peer, "ratio": ratio, **extra}


def plot(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pre = [r for r in rows if "length" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["length"] for r in pre], [r["ours (JRT)"] for r in pre], marker="o", label="PLA (JRT-RNN)")
    peer = [r for r in pre if r["peer"] is not None]
    ax.plot([r["length"] for r in peer], [r["peer"] for r in peer], marker="s", label="softmax attention")
    ax.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="prefill tokens/s", title="one layer")
    ax.legend()
    fig.tight_layout()
    return fig


def main(argv=None):
    parser = script.parser(__doc__)
    parser.add_argument("--lengths", default="256,512,1024,2048,4096,8192,16384,32768")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--feature-dim", type=int, default=16, help="f, the q/k feature dim (paper: 16)")
    parser.add_argument("--encoder-len", type=int, default=1024, help="M, the prefix length (paper: 1024)")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--peer-max-len", type=int, default=16384, help="longest L for softmax attention")
    parser.add_argument(
        "--peer-max-gb", type=float, default=2.5, help="CPU: skip the peer above this logits size"
    )
    parser.add_argument("--decode-tokens", type=int, default=4096)
    parser.add_argument("--decode-block", type=int, default=1024)
    parser.add_argument("--model-preset", default="360m", choices=sorted(PRESETS), help="layer pattern")
    parser.add_argument("--model-d", type=int, default=64, help="d_model of the whole-model train step")
    parser.add_argument("--model-batch", type=int, default=2)
    parser.add_argument("--model-len", type=int, default=256)
    parser.add_argument("--model-vocab", type=int, default=2048)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: prefill,pallas,decode,model")
    smoke = dict(
        lengths="64,128",
        d_model=32,
        feature_dim=4,
        encoder_len=32,
        chunk_size=16,
        decode_tokens=32,
        decode_block=16,
        model_preset="tiny",
        model_d=32,
        model_len=32,
        model_vocab=64,
        repeats=1,
    )
    # one H200, within the suite's minutes: the paper's 360M width, bf16 (cuDNN flash attention as the peer)
    accelerator = dict(d_model=1024, heads=16, batch_size=8, lengths="2048,8192,32768", peer_max_len=32768,
                       peer_max_gb=64.0, dtype="bfloat16", model_d=1024, model_batch=4, model_len=2048)
    args = script.parse(parser, argv, smoke=smoke, accelerator=accelerator)
    args.lengths = [int(s) for s in args.lengths.split(",")]
    if args.d_model % args.heads:
        parser.error(f"--d-model {args.d_model} must be divisible by --heads {args.heads}")
    args.head_dim = args.d_model // args.heads
    run = script.setup(args, name="jrt_throughput")
    skip = set(filter(None, args.skip.split(",")))
    dtype = jnp.dtype(args.dtype)

    w = layer_weights(jax.random.key(0), args.d_model, args.heads, args.feature_dim, args.head_dim, dtype)
    rows, notes = [], []
    if "prefill" not in skip:
        r, crossover = prefill_rows(args, w, dtype)
        rows += r
        notes.append(f"prefill crossover (PLA faster than softmax attention): {crossover}")
    if "pallas" not in skip:
        r, note = pallas_rows(args, w, dtype)
        rows += r
        notes.append(note)
    if "decode" not in skip:
        rows += decode_rows(args, w, dtype)
    if "model" not in skip:
        r, note = model_rows(args)
        rows += r
        notes.append(note)

    title = (
        f"JRT throughput, {args.dtype}, d_model={args.d_model}, heads={args.heads}, head_dim={args.head_dim}, "
        f"f={args.feature_dim}, prefix M={args.encoder_len}, chunk={args.chunk_size}; peer = "
        f"jaxzoo.dot_product_attention; machine {script.machine()}"
    )
    script.print_table(rows, ["workload", "unit", "ours (JRT)", "peer", "ratio"], title=title)
    print("ratio = peer time / our time (higher: JRT faster; for memory, peer bytes / our bytes)")
    for note in notes:
        print(note)
    assert all(math.isfinite(r["ours (JRT)"]) for r in rows)
    figures = {"prefill": plot(rows)} if any("length" in r for r in rows) else {}
    run.save({"rows": rows, "notes": notes}, figures=figures)


if __name__ == "__main__":
    main()
