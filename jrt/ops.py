"""The maths of JRT-RNN and Based as pure array functions.

Shapes: B batch, L sequence, M encoder (prefix) length, H heads, f feature (q/k) dim, dv value dim,
F = 1 + f + f*f the Taylor feature dim, C chunk size, N number of chunks, W attention window.

Linear attention (Based) and prefix linear attention (JRT's PLA) come in three forms that agree to
float32 rounding: a quadratic reference form (`chunk_size=None`), a chunked form (quadratic inside a
chunk, a running [F, dv] state between chunks; O(L) time and memory), and a recurrent form
(`prefill` + `decode_step`) with a constant-size state for generation.

Speed. The chunked form never builds phi(k) or phi(q) ([.., 1 + f + f^2] per token, 68x the values at
the 360M head shape f=16, dv=4): `feature_sums` forms the state's quadratic block from k (x) (w k v^T)
and `feature_readout` reads it with q (q . S2), the same multiply-adds with 4x less memory traffic; this
made the LA/PLA layer's train step ~4x faster on a CPU and PLA's encoder sums nearly free. `kernel=
"pallas"` runs the chunked forward as the Pallas kernel of `jrt.pallas` (the default of `JRTConfig` on
GPU/TPU).

Padding. Token masks are True for real tokens. The reference code zeroes padded keys *before* the
feature map, but phi(0) = [1, 0, ..., 0] != 0, so padded tokens still add weight 1 and their value to
every sum. We instead zero phi(k) itself (a weight of exactly 0), so padded tokens contribute nothing.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

import jaxzoo

__all__ = [
    "LinearAttentionState",
    "prefix_positions",
    "taylor_feature_map",
    "taylor_kernel",
    "feature_dim",
    "linear_attention",
    "feature_sums",
    "feature_readout",
    "resolve_kernel",
    "prefix_linear_attention",
    "prefill",
    "decode_step",
    "sliding_window_attention",
    "causal_depthwise_conv",
    "window_cache",
    "window_decode_step",
    "conv_decode_step",
]


class LinearAttentionState(NamedTuple):
    """Recurrent state of an LA/PLA layer: kv = sum phi(k_j) v_j^T [B, H, F, dv], k_sum = sum phi(k_j) [B, H, F]."""

    kv: jax.Array
    k_sum: jax.Array


def feature_dim(f: int) -> int:
    """Size F = 1 + f + f^2 of the Taylor feature map for head feature dim f."""
    return 1 + f + f * f


def taylor_feature_map(x: jax.Array) -> jax.Array:
    """phi(x) = [1, x / f^(1/4), vec(x x^T) / (sqrt(2) sqrt(f))]: [..., f] -> [..., 1 + f + f*f].

    phi(q) . phi(k) = 1 + q.k / sqrt(f) + (q.k)^2 / (2 f), the 2nd-order Taylor expansion of
    exp(q.k / sqrt(f)). The full outer product is kept (no symmetric compression), as in the reference.
    """
    f = x.shape[-1]
    ones = jnp.ones((*x.shape[:-1], 1), x.dtype)
    x1 = x / f**0.25
    x2 = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], f * f) / math.sqrt(2.0 * f)
    return jnp.concatenate([ones, x1, x2], axis=-1)


def taylor_kernel(q: jax.Array, k: jax.Array) -> jax.Array:
    """phi(q_i) . phi(k_j) without building phi: q [B, Lq, H, f], k [B, Lk, H, f] -> [B, H, Lq, Lk]."""
    s = jnp.einsum("bqhf,bkhf->bhqk", q, k) / math.sqrt(q.shape[-1])
    return 1.0 + s + 0.5 * s * s


# ----------------------------------------------------------------------------------------------------
# Input checks (run on shapes in Python, before anything is traced).


def _check_rank(name: str, x: jax.Array, rank: int, layout: str) -> None:
    if x.ndim != rank:
        raise ValueError(f"{name} must have rank {rank} ({layout}), but got shape {tuple(x.shape)}.")


def _check_qkv(q, k, v) -> None:
    _check_rank("q", q, 4, "[B, L, H, f]")
    _check_rank("k", k, 4, "[B, L, H, f]")
    _check_rank("v", v, 4, "[B, L, H, dv]")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape [B, L, H, f], but got {q.shape} and {k.shape}.")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must share [B, L, H] with k, but got v {tuple(v.shape)} and k {tuple(k.shape)}.")


def _check_kv(k, v) -> None:
    _check_rank("k", k, 4, "[B, L, H, f]")
    _check_rank("v", v, 4, "[B, L, H, dv]")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must share [B, L, H] with k, but got v {tuple(v.shape)} and k {tuple(k.shape)}.")


def _check_encoder(k, v, k_enc, v_enc) -> None:
    _check_rank("k_enc", k_enc, 4, "[B, M, H, f]")
    _check_rank("v_enc", v_enc, 4, "[B, M, H, dv]")
    b, n, h, f = k.shape
    m = k_enc.shape[1]
    if m > n:
        raise ValueError(
            f"The encoder length M must be at most the sequence length L, but got M={m} > L={n}; "
            "left-pad the prompt to at least M tokens."
        )
    if k_enc.shape != (b, m, h, f):
        raise ValueError(
            f"k_enc must have shape [B, M, H, f] = {(b, m, h, f)}, but got {tuple(k_enc.shape)}."
        )
    if v_enc.shape != (b, m, h, v.shape[-1]):
        raise ValueError(
            f"v_enc must have shape [B, M, H, dv] = {(b, m, h, v.shape[-1])}, but got {tuple(v_enc.shape)}."
        )


def _check_mask(name: str, mask, shape) -> None:
    if mask is not None and tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape [B, L] = {tuple(shape)}, but got {tuple(mask.shape)}.")


def _check_enc_mask(enc_mask, shape) -> None:
    if enc_mask is not None and tuple(enc_mask.shape) != tuple(shape):
        raise ValueError(
            f"enc_mask must have shape [B, M] = {tuple(shape)}, but got {tuple(enc_mask.shape)}."
        )


def _check_chunk(chunk_size) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, but got {chunk_size!r}.")


# ----------------------------------------------------------------------------------------------------
# Linear attention and prefix linear attention.


def prefix_positions(mask, m: int):
    """Where each row's encoder prefix is: the positions of its first M real tokens.

    A ragged batch is left-padded, so row b's prefix starts after its padding, not at column 0.
    mask: [B, L] bool, True for real tokens. Returns (index [B, M] int32, valid [B, M] bool): index[b, i]
    is the position of row b's i-th real token, valid[b, i] False where the row has fewer than i+1 real
    tokens (those slots point at some other position and must get weight 0).
    """
    mask = mask.astype(bool)
    rank = jnp.cumsum(mask, axis=1) - 1  # [B, L]: 0 for the first real token
    in_prefix = mask & (rank < m)
    order = jnp.argsort(jnp.where(in_prefix, 0, 1), axis=1, stable=True)[:, :m].astype(jnp.int32)
    return order, jnp.take_along_axis(in_prefix, order, axis=1)


def _key_weights(mask, b: int, n: int) -> jax.Array:
    """Per-key weight [B, n] in float32: 1 for real tokens, 0 for padding."""
    if mask is None:
        return jnp.ones((b, n), jnp.float32)
    return mask.astype(jnp.float32)


def _quadratic(q, k, v, w, k_enc, v_enc, w_enc, eps):
    """Reference O(L^2) form. All inputs float32; w, w_enc [B, L], [B, M] key weights."""
    n = q.shape[1]
    causal = jnp.tril(jnp.ones((n, n), jnp.float32))
    a = taylor_kernel(q, k) * causal * w[:, None, None, :]  # [B, H, L, L]
    num = jnp.einsum("bhqk,bkhd->bqhd", a, v)
    den = jnp.einsum("bhqk->bqh", a)
    if k_enc is not None:
        a_enc = taylor_kernel(q, k_enc) * w_enc[:, None, None, :]  # [B, H, L, M], non-causal
        num = num + jnp.einsum("bhqk,bkhd->bqhd", a_enc, v_enc)
        den = den + jnp.einsum("bhqk->bqh", a_enc)
    return num / (den[..., None] + eps)


def _exclusive_cumsum(x):
    """Sum over earlier chunks along axis 1: out[:, n] = sum_{n' < n} x[:, n']."""
    return jnp.cumsum(jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1), axis=1)


def feature_sums(k, v, w):
    """sum_t w_t phi(k_t) v_t^T and sum_t w_t phi(k_t) over the token axis (-3), without building phi.

    k: [..., T, H, f]; v: [..., T, H, dv]; w: [..., T] key weights. Returns (kv [..., H, F, dv],
    k_sum [..., H, F]) in the layout of `taylor_feature_map` ([1 | x / f^(1/4) | vec(x x^T) / sqrt(2f)]).
    The quadratic block is sum_t k_t (x) (w_t k_t v_t^T): a [.., f, T] x [T, f * dv] matmul whose operand
    holds f * dv floats per token instead of phi's 1 + f + f^2 (4x less memory traffic at f=16, dv=4, the
    360M head shape, and the same multiply-adds).
    """
    f = k.shape[-1]
    a1, a2 = f**-0.25, 1.0 / math.sqrt(2.0 * f)
    kw = k * w[..., None, None]
    vw = v * w[..., None, None]
    s0 = jnp.sum(vw, axis=-3)  # [..., H, dv]
    s1 = a1 * jnp.einsum("...thi,...thd->...hid", k, vw)  # [..., H, f, dv]
    kv = kw[..., :, None] * v[..., None, :]  # [..., T, H, f, dv]
    s2 = a2 * jnp.einsum("...thj,...thid->...hjid", k, kv)  # [..., H, f, f, dv]
    lead = s2.shape[:-3]
    kv_state = jnp.concatenate([s0[..., None, :], s1, s2.reshape(*lead, f * f, s2.shape[-1])], axis=-2)
    z0 = jnp.broadcast_to(jnp.sum(w, axis=-1)[..., None, None], (*s0.shape[:-1], 1))  # [..., H, 1]
    z1 = a1 * jnp.sum(kw, axis=-3)  # [..., H, f]
    z2 = a2 * jnp.einsum("...thi,...thj->...hij", kw, k)  # [..., H, f, f]
    return kv_state, jnp.concatenate([z0, z1, z2.reshape(*lead, f * f)], axis=-1)


def feature_readout(q, kv, k_sum):
    """phi(q_c) . kv and phi(q_c) . k_sum without building phi(q).

    q: [..., C, H, f]; kv: [..., H, F, dv]; k_sum: [..., H, F]. Returns (num [..., C, H, dv], den [..., C, H]).
    """
    f = q.shape[-1]
    a1, a2 = f**-0.25, 1.0 / math.sqrt(2.0 * f)
    s0, s1 = kv[..., 0, :], kv[..., 1 : 1 + f, :]
    s2 = kv[..., 1 + f :, :].reshape(*kv.shape[:-2], f, f, kv.shape[-1])  # [..., H, f, f, dv]
    num = s0[..., None, :, :] + a1 * jnp.einsum("...chi,...hid->...chd", q, s1)
    t = jnp.einsum("...chi,...hijd->...chjd", q, s2)  # [..., C, H, f, dv]
    num = num + a2 * jnp.einsum("...chj,...chjd->...chd", q, t)
    z0, z1 = k_sum[..., 0], k_sum[..., 1 : 1 + f]
    z2 = k_sum[..., 1 + f :].reshape(*k_sum.shape[:-1], f, f)
    den = z0[..., None, :] + a1 * jnp.einsum("...chi,...hi->...ch", q, z1)
    den = den + a2 * jnp.einsum("...chi,...hij,...chj->...ch", q, z2, q)
    return num, den


def _chunk_inputs(q, k, v, w, chunk_size: int):
    """Pad L to a multiple of C (trailing zeros of weight 0) and split: [B, N, C, H, *], w [B, N, C]."""
    b, n, h, f = q.shape
    dv = v.shape[-1]
    c = chunk_size
    pad = (-n) % c
    if pad:  # trailing padding: later keys never reach earlier queries (causal), so no mask is needed
        q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
        w = jnp.pad(w, ((0, 0), (0, pad)))
    nc = (n + pad) // c
    return (
        q.reshape(b, nc, c, h, f),
        k.reshape(b, nc, c, h, f),
        v.reshape(b, nc, c, h, dv),
        w.reshape(b, nc, c),
    )


def _intra_chunk(qc, kc, vc, wc):
    """The exact kernel, causal inside each chunk: (num [B, N, C, H, dv], den [B, N, C, H])."""
    c, f = qc.shape[2], qc.shape[-1]
    s = jnp.einsum("bnqhf,bnkhf->bnhqk", qc, kc) / math.sqrt(f)
    a = (1.0 + s + 0.5 * s * s) * jnp.tril(jnp.ones((c, c), jnp.float32)) * wc[:, :, None, None, :]
    return jnp.einsum("bnhqk,bnkhd->bnqhd", a, vc), jnp.einsum("bnhqk->bnqh", a)


def _chunked(q, k, v, w, state: LinearAttentionState | None, chunk_size: int, eps):
    """Chunked O(L) form: exact kernel inside a chunk, running feature-space state across chunks.

    `state` (kv [B, H, F, dv], k_sum [B, H, F]) is the state before the first token (the encoder sums
    for PLA, None for zeros).
    """
    b, n, h, _ = q.shape
    dv = v.shape[-1]
    qc, kc, vc, wc = _chunk_inputs(q, k, v, w, chunk_size)
    num, den = _intra_chunk(qc, kc, vc, wc)

    # Inter-chunk: state before each chunk = exclusive prefix sum of per-chunk sums (+ initial state).
    kv_chunk, ks_chunk = feature_sums(kc, vc, wc)  # [B, N, H, F, dv], [B, N, H, F]
    # (shifted inclusive sums, not cumsum - x: the latter cancels catastrophically in the backward pass)
    kv_prev = _exclusive_cumsum(kv_chunk)
    ks_prev = _exclusive_cumsum(ks_chunk)
    if state is not None:
        kv_prev = kv_prev + state.kv[:, None]
        ks_prev = ks_prev + state.k_sum[:, None]
    num_s, den_s = feature_readout(qc, kv_prev, ks_prev)
    y = (num + num_s) / ((den + den_s)[..., None] + eps)
    return y.reshape(b, -1, h, dv)[:, :n]


KERNELS = ("auto", "xla", "pallas", "interpret")


def resolve_kernel(kernel: str) -> str:
    """The chunked-form implementation: "auto" is "pallas" on GPU/TPU and "xla" elsewhere (CPU);
    "interpret" runs the Pallas kernel with the interpreter (tests)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, but got {kernel!r}.")
    if kernel == "auto":
        return "pallas" if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu") else "xla"
    return kernel


def _run_chunked(q, k, v, w, state, chunk_size, eps, kernel):
    if kernel == "xla":
        return _chunked(q, k, v, w, state, chunk_size, eps)
    from jrt.pallas import chunked_linear_attention

    return chunked_linear_attention(
        q, k, v, w, state, chunk_size=chunk_size, eps=eps, interpret=kernel == "interpret"
    )


def linear_attention(
    q, k, v, *, mask=None, eps: float = 1e-12, chunk_size: int | None = None, kernel: str = "xla"
):
    """Causal Taylor linear attention (Based).

    y_i = sum_{j<=i} phi(q_i).phi(k_j) v_j / (sum_{j<=i} phi(q_i).phi(k_j) + eps).

    Args:
      q, k: [B, L, H, f]; v: [B, L, H, dv].
      mask: optional [B, L] bool, True for real tokens; padded keys get weight 0.
      eps: added to the denominator (1e-12 as in the reference's default path).
      chunk_size: None for the quadratic reference form, else the chunk length of the O(L) form.
      kernel: the chunked form's implementation, "xla", "pallas" (`jrt.pallas`; forward kernel, XLA
        backward), "interpret" (the Pallas kernel interpreted, for CPU tests) or "auto" (Pallas on GPU/TPU).
    Returns:
      [B, L, H, dv] in v's dtype (accumulation in float32).
    """
    _check_qkv(q, k, v)
    _check_mask("mask", mask, q.shape[:2])
    _check_chunk(chunk_size)
    kernel = resolve_kernel(kernel)
    w = _key_weights(mask, *q.shape[:2])
    return _linear_attention(q, k, v, w, eps=eps, chunk_size=chunk_size, kernel=kernel)


@functools.partial(jax.jit, static_argnames=("eps", "chunk_size", "kernel"))
def _linear_attention(q, k, v, w, *, eps, chunk_size, kernel="xla"):
    out_dtype = v.dtype
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    if chunk_size is None:
        y = _quadratic(q, k, v, w, None, None, None, eps)
    else:
        y = _run_chunked(q, k, v, w, None, chunk_size, eps, kernel)
    return y.astype(out_dtype)


def _encoder_state(k_enc, v_enc, w_enc) -> LinearAttentionState:
    return LinearAttentionState(*feature_sums(k_enc, v_enc, w_enc))  # [B, H, F, dv], [B, H, F]


def prefix_linear_attention(
    q,
    k,
    v,
    k_enc,
    v_enc,
    *,
    mask=None,
    enc_mask=None,
    eps: float = 1e-12,
    chunk_size: int | None = None,
    kernel: str = "xla",
):
    """Prefix linear attention (JRT-RNN's PLA).

    num_i = sum_{j<=i} phi(q_i).phi(k_j) v_j + sum_{j<M} phi(q_i).phi(k_enc_j) v_enc_j, den_i likewise
    (one shared denominator), y_i = num_i / (den_i + eps). The encoder term is non-causal for every
    query i, prefix and decoder positions alike; prefix tokens also enter the causal term, through the
    decoder projections, as in the reference.

    Args:
      q, k: [B, L, H, f]; v: [B, L, H, dv].
      k_enc: [B, M, H, f], v_enc: [B, M, H, dv], the encoder projections of the first M <= L tokens.
      mask: optional [B, L] bool, True for real tokens; the key weights of the causal term.
      enc_mask: optional [B, M] bool, the key weights of the encoder term (default mask[:, :M]; a ragged
        batch gathers each row's own first M real tokens, see `prefix_positions`).
      eps, chunk_size, kernel: as in `linear_attention`.
    Returns:
      [B, L, H, dv] in v's dtype.
    """
    _check_qkv(q, k, v)
    _check_encoder(k, v, k_enc, v_enc)
    _check_mask("mask", mask, q.shape[:2])
    _check_enc_mask(enc_mask, k_enc.shape[:2])
    _check_chunk(chunk_size)
    kernel = resolve_kernel(kernel)
    w = _key_weights(mask, *q.shape[:2])
    w_enc = w[:, : k_enc.shape[1]] if enc_mask is None else enc_mask.astype(jnp.float32)
    return _prefix_linear_attention(
        q, k, v, k_enc, v_enc, w, w_enc, eps=eps, chunk_size=chunk_size, kernel=kernel
    )


@functools.partial(jax.jit, static_argnames=("eps", "chunk_size", "kernel"))
def _prefix_linear_attention(q, k, v, k_enc, v_enc, w, w_enc, *, eps, chunk_size, kernel="xla"):
    out_dtype = v.dtype
    q, k, v, k_enc, v_enc = (x.astype(jnp.float32) for x in (q, k, v, k_enc, v_enc))
    if chunk_size is None:
        y = _quadratic(q, k, v, w, k_enc, v_enc, w_enc, eps)
    else:
        y = _run_chunked(q, k, v, w, _encoder_state(k_enc, v_enc, w_enc), chunk_size, eps, kernel)
    return y.astype(out_dtype)


def prefill(k, v, k_enc=None, v_enc=None, *, mask=None, enc_mask=None) -> LinearAttentionState:
    """Recurrent state after a prompt: kv = sum_j phi(k_j) v_j^T (+ encoder sums), k_sum = sum_j phi(k_j).

    Args:
      k: [B, L, H, f]; v: [B, L, H, dv]; k_enc, v_enc: optional [B, M, H, f], [B, M, H, dv] (PLA).
      mask: optional [B, L] bool, True for real tokens (left padding is the usual case).
      enc_mask: optional [B, M] bool, the encoder keys' weights (default mask[:, :M]).
    Returns:
      LinearAttentionState(kv [B, H, F, dv], k_sum [B, H, F]) in float32.
    """
    _check_kv(k, v)
    if (k_enc is None) != (v_enc is None):
        raise ValueError("prefill needs both k_enc and v_enc, or neither; got only one of them.")
    if k_enc is not None:
        _check_encoder(k, v, k_enc, v_enc)
        _check_enc_mask(enc_mask, k_enc.shape[:2])
    _check_mask("mask", mask, k.shape[:2])
    w = _key_weights(mask, *k.shape[:2])
    w_enc = None
    if k_enc is not None:
        w_enc = w[:, : k_enc.shape[1]] if enc_mask is None else enc_mask.astype(jnp.float32)
    return _prefill(k, v, k_enc, v_enc, w, w_enc)


@jax.jit
def _prefill(k, v, k_enc, v_enc, w, w_enc):
    k, v = k.astype(jnp.float32), v.astype(jnp.float32)
    kv, ks = feature_sums(k, v, w)  # [B, H, F, dv], [B, H, F]
    if k_enc is not None:
        enc = _encoder_state(k_enc.astype(jnp.float32), v_enc.astype(jnp.float32), w_enc)
        kv, ks = kv + enc.kv, ks + enc.k_sum
    return LinearAttentionState(kv=kv, k_sum=ks)


def decode_step(state: LinearAttentionState, q_t, k_t, v_t, *, eps: float = 1e-12):
    """One recurrent step: add the new token to the state, then read out (update before readout).

    Args:
      state: LinearAttentionState(kv [B, H, F, dv], k_sum [B, H, F]).
      q_t, k_t: [B, H, f]; v_t: [B, H, dv].
    Returns:
      (y_t [B, H, dv] in v_t's dtype, new state).
    """
    _check_rank("q_t", q_t, 3, "[B, H, f]")
    _check_rank("k_t", k_t, 3, "[B, H, f]")
    _check_rank("v_t", v_t, 3, "[B, H, dv]")
    if q_t.shape != k_t.shape:
        raise ValueError(
            f"q_t and k_t must have the same shape [B, H, f], but got {q_t.shape} and {k_t.shape}."
        )
    b, h, f = k_t.shape
    big_f = feature_dim(f)
    if state.kv.shape != (b, h, big_f, v_t.shape[-1]) or state.k_sum.shape != (b, h, big_f):
        raise ValueError(
            f"The state does not match the feature map: f={f} gives F=1+f+f^2={big_f}, so kv must be "
            f"{(b, h, big_f, v_t.shape[-1])} and k_sum {(b, h, big_f)}, but got {tuple(state.kv.shape)} "
            f"and {tuple(state.k_sum.shape)}."
        )
    return _decode_step(state, q_t, k_t, v_t, eps=eps)


@functools.partial(jax.jit, static_argnames=("eps",))
def _decode_step(state, q_t, k_t, v_t, *, eps):
    out_dtype = v_t.dtype
    pk = taylor_feature_map(k_t.astype(jnp.float32))  # [B, H, F]
    pq = taylor_feature_map(q_t.astype(jnp.float32))
    kv = state.kv + pk[..., :, None] * v_t.astype(jnp.float32)[..., None, :]
    ks = state.k_sum + pk
    num = jnp.einsum("bhF,bhFd->bhd", pq, kv)
    den = jnp.einsum("bhF,bhF->bh", pq, ks)
    return (num / (den[..., None] + eps)).astype(out_dtype), LinearAttentionState(kv=kv, k_sum=ks)


# ----------------------------------------------------------------------------------------------------
# Sliding-window softmax attention (RoPE is jaxzoo.rope), causal depthwise convolution.


def sliding_window_attention(q, k, v, *, window: int, mask=None):
    """Causal softmax attention where query i sees keys i - window .. i (itself plus `window` previous).

    q, k, v: [B, L, H, D]; mask: optional [B, L] bool for real keys. Scale 1/sqrt(D). A query with no
    visible real key (a padded position) returns 0. Returns [B, L, H, D] in v's dtype.
    """
    _check_qkv(q, k, v)
    _check_mask("mask", mask, q.shape[:2])
    if mask is None:
        mask = jnp.ones(q.shape[:2], bool)
    return _sliding_window_attention(q, k, v, mask, window=window)


@functools.partial(jax.jit, static_argnames=("window",))
def _sliding_window_attention(q, k, v, mask, *, window):
    n = q.shape[1]
    i = jnp.arange(n)[:, None]
    j = jnp.arange(n)[None, :]
    visible = (j <= i) & (i - j <= window)  # [L, L]
    visible = visible[None, None] & mask[:, None, None, :]  # [B, 1, L, L]
    q, k, v32 = (x.astype(jnp.float32) for x in (q, k, v))  # softmax attention in float32, as the reference
    return jaxzoo.dot_product_attention(q, k, v32, mask=visible).astype(v.dtype)


def causal_depthwise_conv(x, kernel):
    """Causal depthwise 1-D convolution: y_t = sum_i kernel[i] * x_{t - (K-1) + i} (left zero padding).

    x: [B, L, C]; kernel: [K, C]. Matches torch Conv1d(groups=C, padding=K-1) truncated to L.
    """
    _check_rank("x", x, 3, "[B, L, C]")
    _check_rank("kernel", kernel, 2, "[K, C]")
    if kernel.shape[1] != x.shape[2]:
        raise ValueError(f"kernel has {kernel.shape[1]} channels but x has {x.shape[2]}.")
    kk, n = kernel.shape[0], x.shape[1]
    xp = jnp.pad(x, ((0, 0), (kk - 1, 0), (0, 0)))
    return sum(xp[:, i : i + n] * kernel[i] for i in range(kk))


# ----------------------------------------------------------------------------------------------------
# Constant-size decoding caches for SWA and BaseConv.


def window_cache(k, v, mask, window: int):
    """The rolling SWA cache after a prompt: slot s holds the latest position p < L with p % W == s.

    k, v: [B, L, H, D] (k already rotated); mask: [B, L] bool. Returns (k_cache [B, W, H, D],
    v_cache [B, W, H, D], valid [B, W]) with W = window; empty or padded slots are invalid.
    """
    n = k.shape[1]
    slots = jnp.arange(window)
    pos = (n - 1) - jnp.mod((n - 1) - slots, window) if window else slots  # [W]
    valid = (pos >= 0)[None, :] & jnp.take(mask, jnp.clip(pos, 0, n - 1), axis=1)
    ck = jnp.take(k, jnp.clip(pos, 0, n - 1), axis=1) * valid[..., None, None]
    cv = jnp.take(v, jnp.clip(pos, 0, n - 1), axis=1) * valid[..., None, None]
    return ck, cv, valid


def window_decode_step(q_t, k_t, v_t, k_cache, v_cache, valid, pos):
    """One SWA decoding step: attend to the W cached tokens and itself, then write itself to slot pos % W.

    q_t, k_t, v_t: [B, H, D] (q_t, k_t rotated); k_cache, v_cache: [B, W, H, D]; valid: [B, W]; pos: the
    absolute position of the new token (scalar int). Returns (y_t [B, H, D], (k_cache, v_cache, valid)).
    """
    keys = jnp.concatenate([k_cache, k_t[:, None]], axis=1).astype(jnp.float32)  # [B, W+1, H, D]
    vals = jnp.concatenate([v_cache, v_t[:, None]], axis=1).astype(jnp.float32)
    ok = jnp.concatenate([valid, jnp.ones_like(valid[:, :1])], axis=1)  # [B, W+1], the new token always
    y = jaxzoo.dot_product_attention(q_t[:, None].astype(jnp.float32), keys, vals, mask=ok)  # [B, 1, H, D]
    y = y[:, 0].astype(v_t.dtype)
    window = k_cache.shape[1]
    if window == 0:
        return y, (k_cache, v_cache, valid)
    slot = jnp.mod(pos, window)
    k_cache = jax.lax.dynamic_update_index_in_dim(k_cache, k_t.astype(k_cache.dtype), slot, axis=1)
    v_cache = jax.lax.dynamic_update_index_in_dim(v_cache, v_t.astype(v_cache.dtype), slot, axis=1)
    valid = jax.lax.dynamic_update_index_in_dim(valid, jnp.ones_like(valid[:, 0]), slot, axis=1)
    return y, (k_cache, v_cache, valid)


def conv_decode_step(x_t, state, kernel):
    """One step of `causal_depthwise_conv`: x_t [B, C], state [B, K-1, C] (the previous K-1 inputs).

    Returns (y_t [B, C], new state).
    """
    window = jnp.concatenate([state, x_t[:, None]], axis=1)  # [B, K, C]
    return jnp.einsum("bkc,kc->bc", window, kernel), window[:, 1:]
