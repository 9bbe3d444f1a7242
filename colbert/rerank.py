"""Second-stage reranking with exact MaxSim, and reciprocal rank fusion of several first stages."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import jax
import numpy as np

from colbert.maxsim import maxsim, pad_documents

__all__ = ["rerank", "reciprocal_rank_fusion"]


def _candidates(store, ids):
    """(D [C, L, dim], mask [C, L]) for candidate ids from an Index, a list of [Ld, dim] arrays, or a padded
    (D [N, L, dim], mask [N, L]) pair."""
    if hasattr(store, "embeddings"):  # colbert.Index: decompressed residuals
        return store.embeddings(ids)
    if isinstance(store, tuple) and len(store) == 2:
        D, mask = store
        n = np.shape(D)[0]
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(
                f"doc ids must be in [0, {n}) for a store of {n} documents; got {ids.min()}..{ids.max()}."
            )
        return np.asarray(D)[ids], np.asarray(mask)[ids]
    n = len(store)
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(
            f"doc ids must be in [0, {n}) for a store of {n} documents; got {ids.min()}..{ids.max()}."
        )
    return pad_documents([store[i] for i in ids])


def rerank(Q, doc_ids, store, k: int | None = None, *, q_mask=None):
    """Reorders candidate documents from any first stage by exact MaxSim.

    Args:
      Q: [Lq, dim] query (q_mask [Lq]).
      doc_ids: [C] integer candidate ids (duplicates allowed, they score the same).
      store: where the candidates' token embeddings come from: a colbert.Index (decompressed), a list of
        [Ld_i, dim] arrays indexed by id, or a padded pair (D [N, L, dim], mask [N, L]).
      k: how many to return (None: all C).

    Returns:
      (doc_ids int [k], scores float32 [k]), best first.
    """
    ids = np.asarray(doc_ids).reshape(-1)
    if np.ndim(doc_ids) != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"doc_ids must be a 1-D array of integer ids; got shape {np.shape(doc_ids)}, dtype {ids.dtype}."
        )
    if np.ndim(Q) != 2:
        raise ValueError(f"rerank takes one query Q [Lq, dim]; got shape {np.shape(Q)} (loop over a batch).")
    k = len(ids) if k is None else k
    if not 1 <= k <= len(ids):
        raise ValueError(f"k must be between 1 and the number of candidates ({len(ids)}); got {k}.")
    D, mask = _candidates(store, ids)
    scores = maxsim(Q, D, q_mask, mask)
    top, order = jax.lax.top_k(scores, k)
    return ids[np.asarray(order)], np.asarray(top)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hashable]], k: float = 60, top_k: int | None = None):
    """Reciprocal rank fusion (Cormack et al. 2009; Infinity's `rrf`): score(d) = sum over rankings that
    contain d of 1 / (k + rank), rank counted from 1. A document missing from a ranking adds nothing.

    Args:
      rankings: ranked lists of doc ids, best first (any hashable ids, e.g. ints or strings).
      k: the rank constant (default 60).
      top_k: keep this many (None: all fused documents).

    Returns:
      (ids list, scores float64 array), best first; ties keep the order in which ids were first seen.
    """
    if k < 0:
        raise ValueError(f"the RRF rank constant k must be >= 0; got {k}.")
    fused: dict = {}
    for ranking in rankings:
        seen = set()
        for rank, doc in enumerate(ranking, start=1):
            if doc in seen:
                raise ValueError(
                    f"doc id {doc!r} appears twice in one ranking; each ranking must list a doc once."
                )
            seen.add(doc)
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    order = sorted(fused, key=lambda d: -fused[d])  # stable: first-seen order among ties
    order = order if top_k is None else order[:top_k]
    return order, np.array([fused[d] for d in order], np.float64)
