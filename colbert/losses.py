"""ColBERT training losses, as pure functions of MaxSim scores (stanford-futuredata/ColBERT training.py).

A training batch holds B queries, each with `nway` candidate documents (positive first, then hard
negatives), the documents laid out query-major: D[b * nway + j] is candidate j of query b.

- `nway_cross_entropy`: CE over each query's nway scores with the positive at index 0 (ColBERT without
  teacher scores).
- `kl_distillation`: KL(teacher || student) over the nway candidates, `KLDivLoss(batchmean,
  log_target=True)(log_softmax(scores), log_softmax(alpha * teacher))` (ColBERTv2 distillation; PyLate's
  default additionally min-max normalises both score sets per query: `normalize=True`).
- `inbatch_negative_cross_entropy`: ColBERT's `compute_ib_loss`: each query against every document of
  the batch except its own hard negatives, CE with the positive as label.
- `colbert_loss`: the sum ColBERT trains on, from token embeddings and masks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from colbert.maxsim import maxsim


def _float(x):
    """bf16/f16 -> f32 for the softmax; f32 and f64 stay as they are."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_scores(scores, name="scores"):
    if np.ndim(scores) != 2:
        raise ValueError(f"{name} must be [batch, nway], got shape {tuple(np.shape(scores))}.")


def nway_cross_entropy(scores: jax.Array) -> jax.Array:
    """Mean CE of scores [B, nway] with label 0 (the positive is each row's first candidate)."""
    _check_scores(scores)
    logp = jax.nn.log_softmax(_float(scores), axis=-1)
    return -jnp.mean(logp[:, 0])


def _minmax(x):
    lo, hi = x.min(-1, keepdims=True), x.max(-1, keepdims=True)
    return (x - lo) / jnp.maximum(hi - lo, 1e-12)


def kl_distillation(
    scores: jax.Array, teacher_scores: jax.Array, alpha: float = 1.0, normalize: bool = False
) -> jax.Array:
    """KL(teacher || student) per query, averaged over queries ("batchmean").

    scores, teacher_scores: [B, nway]. alpha: ColBERT's `distillation_alpha` (teacher temperature).
    normalize: min-max normalise both per query first (PyLate's `Distillation` default).
    """
    _check_scores(scores)
    if np.shape(teacher_scores) != np.shape(scores):
        raise ValueError(
            f"teacher_scores must match scores {tuple(np.shape(scores))}, got {tuple(np.shape(teacher_scores))}."
        )
    s = _float(scores)
    t = _float(teacher_scores).astype(s.dtype)
    if normalize:
        s, t = _minmax(s), _minmax(t)
    log_s = jax.nn.log_softmax(s, axis=-1)
    log_t = jax.nn.log_softmax(t * alpha, axis=-1)
    return jnp.sum(jnp.exp(log_t) * (log_t - log_s)) / s.shape[0]


def inbatch_negative_cross_entropy(all_scores: jax.Array, nway: int) -> jax.Array:
    """ColBERT's in-batch-negative loss from all_scores [B, B * nway] (query b vs every document).

    Query b keeps every document except its own hard negatives (D[b*nway + 1 .. b*nway + nway - 1]);
    the label is its positive D[b*nway]. ColBERT gathers the kept columns; setting the dropped ones to
    -inf gives the same softmax.
    """
    _check_scores(all_scores, "all_scores")
    b, n = all_scores.shape
    if n != b * nway:
        raise ValueError(
            f"all_scores must be [B, B * nway] = [{b}, {b * nway}], got {tuple(all_scores.shape)}."
        )
    cols = jnp.arange(n)[None, :]
    rows = jnp.arange(b)[:, None]
    own_negative = (cols // nway == rows) & (cols % nway != 0)
    logits = jnp.where(own_negative, -jnp.inf, _float(all_scores))
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(logp[jnp.arange(b), jnp.arange(b) * nway])


def group_scores(Q, D, q_mask=None, d_mask=None, *, nway: int) -> jax.Array:
    """MaxSim of each query against its own nway candidates: Q [B, Lq, d], D [B * nway, Ld, d] -> [B, nway]."""
    b = Q.shape[0]
    if D.shape[0] != b * nway:
        raise ValueError(f"D must hold B * nway = {b * nway} documents (query-major), got {D.shape[0]}.")
    Dg = D.reshape((b, nway) + D.shape[1:])
    dm = None if d_mask is None else d_mask.reshape(b, nway, -1)
    qm = jnp.ones(Q.shape[:2], bool) if q_mask is None else q_mask.astype(bool)
    dm = jnp.ones(Dg.shape[:3], bool) if dm is None else dm.astype(bool)
    return jax.vmap(lambda q, d, m, n: maxsim(q, d, m, n))(Q, Dg, qm, dm)


def colbert_loss(
    Q,
    D,
    q_mask=None,
    d_mask=None,
    *,
    nway: int,
    teacher_scores=None,
    alpha: float = 1.0,
    use_ib_negatives: bool = False,
) -> tuple[jax.Array, dict]:
    """ColBERT's training objective from token embeddings.

    Q: [B, Lq, dim] (all positions scored: q_mask usually None), D: [B * nway, Ld, dim] query-major,
    d_mask: [B * nway, Ld] (padding and punctuation off). With teacher_scores [B, nway]: KL distillation,
    else nway cross-entropy; plus the in-batch-negative CE when use_ib_negatives.
    Returns (loss, metrics).
    """
    if Q.ndim != 3 or D.ndim != 3:
        raise ValueError(f"Q and D must be [batch, length, dim], got {tuple(Q.shape)} and {tuple(D.shape)}.")
    scores = group_scores(Q, D, q_mask, d_mask, nway=nway)  # [B, nway]
    if teacher_scores is not None:
        loss = kl_distillation(scores, teacher_scores, alpha)
    else:
        loss = nway_cross_entropy(scores)
    metrics = {"main_loss": loss, "pos_score": scores[:, 0].mean()}
    if nway > 1:
        metrics["neg_score"] = scores[:, 1:].mean()
        metrics["accuracy"] = jnp.mean(jnp.argmax(scores, -1) == 0)
    if use_ib_negatives:
        ib = inbatch_negative_cross_entropy(maxsim(Q, D, q_mask, d_mask), nway)
        metrics["ib_loss"] = ib
        loss = loss + ib
    return loss, metrics
