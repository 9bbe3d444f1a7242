"""MaxSim late-interaction scoring (ColBERT): exact, masked, chunked, and over multi-passage documents.

score(q, d) = sum over valid query tokens i of max over valid doc tokens j of <q_i, d_j>.

Masking follows the -inf convention (ColBERT's GPU path and fast-plaid use -9999): a padded doc token never
wins the max, also when every similarity of a query token is negative. pylate, RAGatouille and the ColBERT
CPU path zero-fill instead, which differs from this exactly in that all-negative case (see the reference
note). A padded query token adds 0, and a document without a valid token scores -inf.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["maxsim", "maxsim_passages", "split_passages", "pad_documents"]


def _shape(x) -> tuple[int, ...]:
    return tuple(np.shape(x))


def check_query_docs(Q, D, q_mask, d_mask, *, d_name: str = "D", d_dim: int | None = None):
    """Validates shapes before tracing; returns (batched, B, Lq) and raises ValueError with a sentence.

    Q is [Lq, dim] or [B, Lq, dim]; D is [N, Ld, X] where X is the feature width (`d_dim` when the docs
    are stored in another format, e.g. packed bits); q_mask is [Lq] / [B, Lq]; d_mask is [N, Ld].
    """
    qs, ds = _shape(Q), _shape(D)
    if len(qs) not in (2, 3):
        raise ValueError(f"Q must be [Lq, dim] or [B, Lq, dim]; got an array of shape {qs}.")
    if len(ds) != 3:
        raise ValueError(f"{d_name} must be [N, Ld, dim] (a batch of padded documents); got shape {ds}.")
    want = qs[-1] if d_dim is None else d_dim
    if ds[-1] != want:
        raise ValueError(
            f"{d_name} has feature width {ds[-1]} but Q has dim {qs[-1]} (expected {d_name}.shape[-1] == {want})."
        )
    if q_mask is not None and _shape(q_mask) != qs[:-1]:
        raise ValueError(f"q_mask must have shape {qs[:-1]} (Q without its last axis); got {_shape(q_mask)}.")
    if d_mask is not None and _shape(d_mask) != ds[:-1]:
        raise ValueError(
            f"d_mask must have shape {ds[:-1]} ({d_name} without its last axis); got {_shape(d_mask)}."
        )
    return len(qs) == 3


def check_chunk_size(chunk_size):
    if chunk_size is not None and (not isinstance(chunk_size, int | np.integer) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}.")


def reduce_maxsim(sim, q_mask, d_mask):
    """The MaxSim reduction of similarities sim [B, N, Ld, Lq] (float32) to scores [B, N].

    q_mask [B, Lq] and d_mask [N, Ld] are bool or None (all valid).
    """
    if d_mask is not None:
        sim = jnp.where(d_mask[None, :, :, None], sim, -jnp.inf)
    m = jnp.max(sim, axis=2)  # [B, N, Lq]
    if d_mask is not None:
        has_doc = jnp.any(d_mask, axis=-1)  # [N]
        m = jnp.where(has_doc[None, :, None], m, 0.0)  # keeps -inf (and its zero-gradient) out of the sum
    if q_mask is not None:
        m = jnp.where(q_mask[:, None, :], m, 0.0)
    score = jnp.sum(m, axis=-1)  # [B, N]
    if d_mask is not None:
        score = jnp.where(has_doc[None, :], score, -jnp.inf)
    return score


def map_chunks(fn, chunk_size, *doc_args):
    """Applies fn(*doc_chunk) -> [B, c] over chunks of the leading (document) axis, one chunk in memory.

    Pads N up to a multiple of chunk_size (padded docs are sliced off) and runs lax.map, so the
    [B, c, Ld, Lq] similarity block is the only large intermediate. Differentiable.
    """
    n = doc_args[0].shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(*doc_args)
    num = math.ceil(n / chunk_size)
    pad = num * chunk_size - n

    def split(x):
        if x is None:
            return None
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape((num, chunk_size) + x.shape[1:])

    chunks = tuple(split(x) for x in doc_args)
    out = jax.lax.map(lambda c: fn(*c), chunks)  # [num, B, c]
    out = jnp.moveaxis(out, 0, 1).reshape(out.shape[1], num * chunk_size)
    return out[:, :n]


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _maxsim(Q, D, q_mask, d_mask, chunk_size):
    # Q [B, Lq, dim]; D [N, Ld, dim]; q_mask [B, Lq] | None; d_mask [N, Ld] | None.
    def block(D, d_mask):
        acc = jnp.promote_types(jnp.result_type(Q, D), jnp.float32)  # bf16 -> f32, f64 stays f64
        sim = jnp.einsum("bqh,nth->bntq", Q, D, preferred_element_type=acc)  # [B, c, Ld, Lq]
        return reduce_maxsim(sim, q_mask, d_mask)

    if d_mask is None:
        return map_chunks(lambda D: block(D, None), chunk_size, D)
    return map_chunks(block, chunk_size, D, d_mask)


def maxsim(Q, D, q_mask=None, d_mask=None, *, chunk_size=None):
    """Exact MaxSim scores of queries against padded documents.

    Args:
      Q: [Lq, dim] or [B, Lq, dim] query token embeddings (float32 or bfloat16).
      D: [N, Ld, dim] padded document token embeddings.
      q_mask: bool [Lq] / [B, Lq], True for real query tokens (None: all real).
      d_mask: bool [N, Ld], True for real document tokens (None: all real).
      chunk_size: stream over N in chunks of this many documents, so peak memory is one
        [B, chunk, Ld, Lq] block instead of [B, N, Ld, Lq]. None scores all N at once.

    Returns:
      float32 [N] (or [B, N] for batched Q). bf16 inputs accumulate in float32. Differentiable in Q and D.
    """
    batched = check_query_docs(Q, D, q_mask, d_mask)
    check_chunk_size(chunk_size)
    Q = jnp.asarray(Q)
    if not batched:
        Q = Q[None]
        q_mask = None if q_mask is None else jnp.asarray(q_mask, bool)[None]
    q_mask = None if q_mask is None else jnp.asarray(q_mask, bool)
    d_mask = None if d_mask is None else jnp.asarray(d_mask, bool)
    out = _maxsim(Q, jnp.asarray(D), q_mask, d_mask, chunk_size)
    return out if batched else out[0]


def maxsim_passages(Q, D, q_mask=None, d_mask=None, *, chunk_size=None):
    """MaxSim over "tensor array" documents: a document's score is the max over its passages (MaxP).

    Args:
      Q: [Lq, dim] or [B, Lq, dim]; q_mask [Lq] / [B, Lq].
      D: [N, P, Ld, dim] documents of P passages each; d_mask bool [N, P, Ld]. A passage with no valid
        token is ignored; a document with no valid passage scores -inf.

    Returns:
      float32 [N] or [B, N].
    """
    ds = _shape(D)
    if len(ds) != 4:
        raise ValueError(f"D must be [N, P, Ld, dim] (documents of passages); got shape {ds}.")
    if d_mask is not None and _shape(d_mask) != ds[:-1]:
        raise ValueError(f"d_mask must have shape {ds[:-1]} (D without its last axis); got {_shape(d_mask)}.")
    n, p, ld, dim = ds
    flat = jnp.reshape(jnp.asarray(D), (n * p, ld, dim))
    flat_mask = None if d_mask is None else jnp.reshape(jnp.asarray(d_mask, bool), (n * p, ld))
    scores = maxsim(Q, flat, q_mask, flat_mask, chunk_size=chunk_size)  # [..., N*P]
    return jnp.max(scores.reshape(scores.shape[:-1] + (n, p)), axis=-1)


def split_passages(tokens, passage_len: int = 200, stride: int | None = None):
    """Splits one long token sequence into overlapping passages for MaxP scoring.

    Args:
      tokens: [L, ...] (token embeddings [L, dim] or token ids [L]).
      passage_len: tokens per passage (the ColBERT advice for long documents is ~200).
      stride: start-to-start distance; None means passage_len // 2 (half-overlapping windows, our choice;
        the reference gives no default). Windows start at 0, stride, 2*stride, ... and the last one reaches
        the end of the sequence.

    Returns:
      (passages [P, passage_len, ...], mask bool [P, passage_len]) as numpy arrays, zero-padded.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim < 1:
        raise ValueError(f"tokens must be a sequence [L, ...]; got a scalar of shape {tokens.shape}.")
    if passage_len < 1:
        raise ValueError(f"passage_len must be >= 1; got {passage_len}.")
    stride = max(1, passage_len // 2) if stride is None else stride
    if not 1 <= stride <= passage_len:
        raise ValueError(
            f"stride must be in [1, passage_len={passage_len}] so passages cover the text; got {stride}."
        )
    length = tokens.shape[0]
    num = 1 + max(0, math.ceil((length - passage_len) / stride))
    passages = np.zeros((num, passage_len) + tokens.shape[1:], tokens.dtype)
    mask = np.zeros((num, passage_len), bool)
    for i in range(num):
        piece = tokens[i * stride : i * stride + passage_len]
        passages[i, : len(piece)] = piece
        mask[i, : len(piece)] = True
    return passages, mask


def pad_documents(docs, length: int | None = None):
    """Pads a list of variable-length [Ld_i, dim] arrays to (D [N, L, dim], mask bool [N, L]) in numpy.

    length: the padded length (default: the longest document); longer documents raise ValueError.
    """
    docs = [np.asarray(d) for d in docs]
    if not docs:
        raise ValueError("pad_documents needs at least one document; got an empty list.")
    for i, d in enumerate(docs):
        if d.ndim != 2 or d.shape[1] != docs[0].shape[1]:
            raise ValueError(
                f"every document must be [Ld, dim] with dim {docs[0].shape[1]}; document {i} has shape {d.shape}."
            )
    longest = max(d.shape[0] for d in docs)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"a document has {longest} tokens, more than the padded length {length}.")
    out = np.zeros((len(docs), length, docs[0].shape[1]), np.result_type(*docs))
    mask = np.zeros((len(docs), length), bool)
    for i, d in enumerate(docs):
        out[i, : d.shape[0]] = d
        mask[i, : d.shape[0]] = True
    return out, mask
