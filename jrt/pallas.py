"""A Pallas kernel for chunked (prefix) linear attention, the forward pass of `jrt.ops`'s chunked form.

One program per (batch, head) walks its sequence chunk by chunk (`lax.fori_loop`), keeping the running
state in the factored Taylor layout (no [F = 1 + f + f^2]-wide feature vector is ever built):

  s0 = sum_t w_t v_t [dv],  s1 = sum_t w_t k_t v_t^T [f, dv],  s2[i] = sum_t w_t k_t,i k_t v_t^T [f, dv]
  z0 = sum_t w_t,           z1 = sum_t w_t k_t [f],             z2 = sum_t w_t k_t k_t^T [f, f]

so a query's readout is s0 + q.s1 / sqrt(f) + sum_i q_i (q s2[i]) / (2f), and every
operation is a 2-D matmul or an elementwise op. Inside a chunk the exact kernel 1 + s + s^2/2 is used,
causal, as in the XLA form. The initial state (PLA's encoder sums, in `LinearAttentionState`'s F layout)
is split into the factored blocks outside the kernel.

The backward pass is the XLA chunked form's (`jax.custom_vjp`): the kernel speeds up prefill and the
training forward; gradients are exact to float32 rounding. `interpret=True` runs the kernel with the
Pallas interpreter (CPU tests); `jrt.ops` selects the kernel with `kernel="pallas"` (the default "auto"
does so only on GPU/TPU).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

__all__ = ["chunked_linear_attention"]


def _kernel(q_ref, k_ref, v_ref, w_ref, s0_ref, s1_ref, s2_ref, z0_ref, z1_ref, z2_ref, y_ref, *, chunk, eps):
    """One (batch, head): q, k [L, f], v [L, dv], w [L, 1]; initial state blocks; y [L, dv]."""
    n, f = q_ref.shape
    c = chunk
    inv = 1.0 / math.sqrt(f)  # phi(q).phi(k) = 1 + (q.k) / sqrt(f) + (q.k)^2 / (2f)
    a1, a2 = inv, 0.5 / f  # the coefficients of the unscaled linear and quadratic blocks
    row = jax.lax.broadcasted_iota(jnp.int32, (c, c), 0)
    col = jax.lax.broadcasted_iota(jnp.int32, (c, c), 1)
    causal = (col <= row).astype(jnp.float32)

    def body(i, state):
        s0, s1, s2, z0, z1, z2 = state
        sl = pl.ds(i * c, c)
        q, k, v, w = q_ref[sl, :], k_ref[sl, :], v_ref[sl, :], w_ref[sl, :]  # [C, f], [C, f], [C, dv], [C, 1]
        # intra-chunk: exact kernel, causal
        s = jnp.dot(q, k.T) * inv  # [C, C]
        a = (1.0 + s + 0.5 * s * s) * causal * w.T
        num = jnp.dot(a, v)  # [C, dv]
        den = jnp.sum(a, axis=1, keepdims=True)  # [C, 1]
        # readout of the state before this chunk
        num = num + s0 + a1 * jnp.dot(q, s1)
        for j in range(f):
            num = num + a2 * q[:, j : j + 1] * jnp.dot(q, s2[j])
        den = den + z0 + a1 * jnp.sum(q * z1, axis=1, keepdims=True)
        den = den + a2 * jnp.sum(jnp.dot(q, z2) * q, axis=1, keepdims=True)
        y_ref[sl, :] = num / (den + eps)
        # add this chunk to the state
        kw = k * w  # [C, f]
        vw = v * w  # [C, dv]
        s0 = s0 + jnp.sum(vw, axis=0, keepdims=True)
        s1 = s1 + jnp.dot(k.T, vw)
        s2 = tuple(s2[j] + jnp.dot(k.T, kw[:, j : j + 1] * v) for j in range(f))
        z0 = z0 + jnp.sum(w, axis=0, keepdims=True)
        z1 = z1 + jnp.sum(kw, axis=0, keepdims=True)
        z2 = z2 + jnp.dot(kw.T, k)
        return s0, s1, s2, z0, z1, z2

    s2_init = tuple(s2_ref[j] for j in range(f))
    init = (s0_ref[...], s1_ref[...], s2_init, z0_ref[...], z1_ref[...], z2_ref[...])
    jax.lax.fori_loop(0, n // c, body, init)


def _factored(kv, k_sum, f: int):
    """Split an F-layout state (kv [G, F, dv], k_sum [G, F]) into the kernel's scaled factored blocks."""
    a1, a2 = f**-0.25, 1.0 / math.sqrt(2.0 * f)
    g, _, dv = kv.shape
    s0 = kv[:, :1]  # [G, 1, dv]
    s1 = kv[:, 1 : 1 + f] / a1  # [G, f, dv]
    s2 = kv[:, 1 + f :].reshape(g, f, f, dv) / a2  # [G, f, f, dv]
    z0 = k_sum[:, :1, None]  # [G, 1, 1]
    z1 = k_sum[:, None, 1 : 1 + f] / a1  # [G, 1, f]
    z2 = k_sum[:, 1 + f :].reshape(g, f, f) / a2  # [G, f, f]
    return s0, s1, s2, z0, z1, z2


def _forward(q, k, v, w, kv0, ks0, *, chunk_size, eps, interpret):
    b, n, h, f = q.shape
    dv = v.shape[-1]
    c = chunk_size
    pad = (-n) % c
    if pad:  # trailing keys of weight 0 after every query: no effect on the first n outputs
        q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
        w = jnp.pad(w, ((0, 0), (0, pad)))
    length = n + pad
    g = b * h

    def heads_first(x):  # [B, L, H, X] -> [B*H, L, X]
        return x.transpose(0, 2, 1, 3).reshape(g, length, x.shape[-1])

    qg, kg, vg = heads_first(q), heads_first(k), heads_first(v)
    wg = jnp.broadcast_to(w[:, None, :, None], (b, h, length, 1)).reshape(g, length, 1)
    blocks = _factored(kv0.reshape(g, *kv0.shape[2:]), ks0.reshape(g, ks0.shape[-1]), f)

    def spec(*shape):
        return pl.BlockSpec((None, *shape), lambda i: (i,) + (0,) * len(shape))

    in_specs = [spec(length, f), spec(length, f), spec(length, dv), spec(length, 1)]
    in_specs += [spec(1, dv), spec(f, dv), spec(f, f, dv), spec(1, 1), spec(1, f), spec(f, f)]
    y = pl.pallas_call(
        functools.partial(_kernel, chunk=c, eps=eps),
        out_shape=jax.ShapeDtypeStruct((g, length, dv), jnp.float32),
        grid=(g,),
        in_specs=in_specs,
        out_specs=spec(length, dv),
        interpret=interpret,
    )(qg, kg, vg, wg, *blocks)
    return y.reshape(b, h, length, dv).transpose(0, 2, 1, 3)[:, :n]


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _pallas_chunked(q, k, v, w, kv0, ks0, chunk_size, eps, interpret):
    return _forward(q, k, v, w, kv0, ks0, chunk_size=chunk_size, eps=eps, interpret=interpret)


def _xla(q, k, v, w, kv0, ks0, chunk_size, eps):
    from jrt.ops import LinearAttentionState, _chunked

    return _chunked(q, k, v, w, LinearAttentionState(kv0, ks0), chunk_size, eps)


def _fwd(q, k, v, w, kv0, ks0, chunk_size, eps, interpret):
    y = _forward(q, k, v, w, kv0, ks0, chunk_size=chunk_size, eps=eps, interpret=interpret)
    return y, (q, k, v, w, kv0, ks0)


def _bwd(chunk_size, eps, interpret, residuals, g):
    _, vjp = jax.vjp(functools.partial(_xla, chunk_size=chunk_size, eps=eps), *residuals)
    return vjp(g)


_pallas_chunked.defvjp(_fwd, _bwd)


def chunked_linear_attention(q, k, v, w, state=None, *, chunk_size: int, eps: float, interpret: bool = False):
    """The chunked (prefix) linear attention of `jrt.ops` with the Pallas forward kernel.

    q, k: [B, L, H, f] float32; v: [B, L, H, dv] float32; w: [B, L] key weights; state: optional
    `LinearAttentionState` (kv [B, H, F, dv], k_sum [B, H, F]) before the first token (PLA's encoder sums).
    Returns y [B, L, H, dv] float32; gradients through the XLA chunked form.
    """
    b, _, h, f = q.shape
    dv = v.shape[-1]
    big_f = 1 + f + f * f
    if state is None:
        kv0 = jnp.zeros((b, h, big_f, dv), jnp.float32)
        ks0 = jnp.zeros((b, h, big_f), jnp.float32)
    else:
        kv0, ks0 = state
    return _pallas_chunked(q, k, v, w, kv0, ks0, chunk_size, eps, interpret)
