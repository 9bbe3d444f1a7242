"""Binary quantisation of token embeddings (Infinity's `tensor,dim,bit` columns): 1 bit per dimension.

binarize keeps sign bits (x > 0) packed 8 per uint8, big-endian within a byte (numpy's packbits order),
so a [N, Ld, 128] float32 collection (512 B per token) becomes [N, Ld, 16] uint8 (16 B per token): 32x.

Two scorers read them:
- maxsim_binary: float query against binary documents; a doc token's bit b reads as (2b - 1) / sqrt(dim),
  i.e. the sign vector scaled to unit norm, so scores are on the scale of cosine MaxSim.
- maxsim_hamming: binary query against binary documents; score = -sum_q min_d popcount(q XOR d)
  (Infinity's bit x bit MaxSim), an integer-valued float32.
Both use the same masking as maxsim (-inf for documents without a valid token).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from colbert.maxsim import _shape, check_chunk_size, check_query_docs, map_chunks, reduce_maxsim

__all__ = ["binarize", "unpack_bits", "maxsim_binary", "maxsim_hamming", "ranking_agreement"]


def binarize(x):
    """Sign bits of x packed along the last axis: [..., dim] float -> [..., dim / 8] uint8 (bit = x > 0)."""
    shape = _shape(x)
    if len(shape) < 1 or shape[-1] % 8:
        raise ValueError(
            f"binarize packs the last axis 8 bits per byte, so it must be a multiple of 8; got {shape}."
        )
    return jnp.packbits(jnp.asarray(x) > 0, axis=-1)


def unpack_bits(bits, dtype=jnp.float32):
    """[..., dim / 8] uint8 -> [..., dim] of 0/1 in dtype (inverse of binarize's packing)."""
    shifts = jnp.arange(7, -1, -1, dtype=jnp.uint8)  # big-endian: bit 7 of a byte is the first dimension
    b = (bits[..., None] >> shifts) & 1  # [..., dim/8, 8]
    return b.reshape(bits.shape[:-1] + (bits.shape[-1] * 8,)).astype(dtype)


def _prepare(Q, D_bits, q_mask, d_mask, *, q_bits: bool):
    qs = _shape(Q)
    d_dim = qs[-1] if q_bits else (qs[-1] // 8 if qs and qs[-1] % 8 == 0 else None)
    if not q_bits and len(qs) in (2, 3) and qs[-1] % 8:
        raise ValueError(f"binary documents need a query dim that is a multiple of 8; got Q of shape {qs}.")
    batched = check_query_docs(Q, D_bits, q_mask, d_mask, d_name="D_bits", d_dim=d_dim)
    if jnp.asarray(D_bits).dtype != jnp.uint8:
        raise ValueError(
            f"D_bits must be uint8 packed bits from colbert.binarize; got dtype {jnp.asarray(D_bits).dtype}."
        )
    Q = jnp.asarray(Q)
    if not batched:
        Q = Q[None]
        q_mask = None if q_mask is None else jnp.asarray(q_mask)[None]
    q_mask = None if q_mask is None else jnp.asarray(q_mask, bool)
    d_mask = None if d_mask is None else jnp.asarray(d_mask, bool)
    return batched, Q, jnp.asarray(D_bits), q_mask, d_mask


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _maxsim_binary(Q, D_bits, q_mask, d_mask, chunk_size):
    # Q [B, Lq, dim] float; D_bits [N, Ld, dim/8] uint8.
    dim = Q.shape[-1]
    Q = Q.astype(jnp.promote_types(Q.dtype, jnp.float32))
    # <q, (2b - 1) / sqrt(dim)> = (2 <q, b> - sum(q)) / sqrt(dim)
    q_sum = jnp.sum(Q, axis=-1)  # [B, Lq]

    def block(D_bits, d_mask):
        b = unpack_bits(D_bits, Q.dtype)  # [c, Ld, dim]
        dots = jnp.einsum("bqh,nth->bntq", Q, b)  # [B, c, Ld, Lq]
        sim = (2.0 * dots - q_sum[:, None, None, :]) / math.sqrt(dim)
        return reduce_maxsim(sim, q_mask, d_mask)

    if d_mask is None:
        return map_chunks(lambda D: block(D, None), chunk_size, D_bits)
    return map_chunks(block, chunk_size, D_bits, d_mask)


def maxsim_binary(Q, D_bits, q_mask=None, d_mask=None, *, chunk_size=128):
    """MaxSim of float queries against binarised documents.

    Args:
      Q: [Lq, dim] or [B, Lq, dim] float queries; q_mask [Lq] / [B, Lq].
      D_bits: [N, Ld, dim / 8] uint8 from binarize; d_mask bool [N, Ld].
      chunk_size: documents per streamed chunk (see maxsim). Chunking is the default here because the
        unpacked chunk must stay in cache: unpacking all of N at once is ~3x slower on CPU.

    Returns:
      float32 [N] or [B, N]: sum_q max_d <q, (2 b_d - 1) / sqrt(dim)>.
    """
    check_chunk_size(chunk_size)
    batched, Q, D_bits, q_mask, d_mask = _prepare(Q, D_bits, q_mask, d_mask, q_bits=False)
    out = _maxsim_binary(Q, D_bits, q_mask, d_mask, chunk_size)
    return out if batched else out[0]


def _as_words(bits):
    """[..., nbytes] uint8 -> [..., nwords] of the widest unsigned type dividing nbytes (popcount width)."""
    nbytes = bits.shape[-1]
    for width, dtype in ((8, jnp.uint64), (4, jnp.uint32), (2, jnp.uint16)):
        if nbytes % width == 0 and (dtype != jnp.uint64 or jax.config.jax_enable_x64):
            words = bits.reshape(bits.shape[:-1] + (nbytes // width, width))
            return jax.lax.bitcast_convert_type(words, dtype)
    return bits


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _maxsim_hamming(Q_bits, D_bits, q_mask, d_mask, chunk_size):
    # Q_bits [B, Lq, W8]; D_bits [N, Ld, W8] uint8.
    dim = Q_bits.shape[-1] * 8
    q_words = _as_words(Q_bits)  # [B, Lq, W]

    def block(D_bits, d_mask):
        d_words = _as_words(D_bits)  # [c, Ld, W]
        dist = jnp.zeros(q_words.shape[:1] + d_words.shape[:2] + q_words.shape[1:2], jnp.int32)
        for w in range(q_words.shape[-1]):  # unrolled: one fused xor-popcount-add per word, [B, c, Ld, Lq]
            x = d_words[None, :, :, None, w] ^ q_words[:, None, None, :, w]
            dist = dist + jax.lax.population_count(x).astype(jnp.int32)
        if d_mask is not None:
            dist = jnp.where(d_mask[None, :, :, None], dist, dim + 1)
        m = -jnp.min(dist, axis=2).astype(jnp.float32)  # [B, c, Lq]
        if q_mask is not None:
            m = jnp.where(q_mask[:, None, :], m, 0.0)
        score = jnp.sum(m, axis=-1)
        if d_mask is not None:
            score = jnp.where(jnp.any(d_mask, axis=-1)[None, :], score, -jnp.inf)
        return score

    if d_mask is None:
        return map_chunks(lambda D: block(D, None), chunk_size, D_bits)
    return map_chunks(block, chunk_size, D_bits, d_mask)


def maxsim_hamming(Q_bits, D_bits, q_mask=None, d_mask=None, *, chunk_size=128):
    """Bit-against-bit MaxSim: score = -sum over valid q of min over valid d of popcount(q XOR d).

    Args:
      Q_bits: [Lq, dim / 8] or [B, Lq, dim / 8] uint8 (binarize(Q)); q_mask [Lq] / [B, Lq].
      D_bits: [N, Ld, dim / 8] uint8; d_mask bool [N, Ld].
      chunk_size: documents per streamed chunk (see maxsim).

    Returns:
      float32 [N] or [B, N] (integers; -inf for documents without a valid token). For sign vectors,
      <sign q, sign d> = dim - 2 * hamming, so this ranks like MaxSim over sign vectors.
    """
    check_chunk_size(chunk_size)
    if jnp.asarray(Q_bits).dtype != jnp.uint8:
        raise ValueError(
            f"Q_bits must be uint8 packed bits from colbert.binarize; got dtype {jnp.asarray(Q_bits).dtype}."
        )
    batched, Q_bits, D_bits, q_mask, d_mask = _prepare(Q_bits, D_bits, q_mask, d_mask, q_bits=True)
    out = _maxsim_hamming(Q_bits, D_bits, q_mask, d_mask, chunk_size)
    return out if batched else out[0]


def ranking_agreement(reference, approx, k: int = 10) -> dict[str, float]:
    """How well approximate scores preserve a reference ranking, per query averaged: overlap@k (fraction
    of the reference top-k found in the approximate top-k) and Spearman's rank correlation.

    reference, approx: [B, N] or [N] scores (higher is better).
    """
    ref = np.atleast_2d(np.asarray(reference, np.float64))
    app = np.atleast_2d(np.asarray(approx, np.float64))
    if ref.shape != app.shape:
        raise ValueError(
            f"reference and approx scores must have the same shape; got {ref.shape} and {app.shape}."
        )
    overlap, rho = [], []
    for r, a in zip(ref, app):
        overlap.append(len(set(np.argsort(-r)[:k]) & set(np.argsort(-a)[:k])) / min(k, len(r)))
        rr, ra = np.argsort(np.argsort(r)), np.argsort(np.argsort(a))
        rho.append(np.corrcoef(rr, ra)[0, 1])
    return {f"overlap@{k}": float(np.mean(overlap)), "spearman": float(np.mean(rho))}
