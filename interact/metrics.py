"""Metrics over interactions: salient sets, per-order strengths A_k^+ / A_k^-, and train/test Jaccard.

Interactions are [..., 2^n] arrays in subset-index order; AND and OR are passed separately and counted
together (a subset S of order k contributes its AND and its OR interaction).

The empty set is not an interaction: I_and(empty) + I_or(empty) is the output at the baseline. It is left out
of the threshold max |I(S)| and of the salient set by default (`include_empty=True` restores the old
behaviour, where the baseline output set the threshold on most samples at initialisation).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from interact.ops import num_players, subset_sizes

SALIENT_THRESHOLD = 0.05  # tau = 0.05 max_S |I(S)|, the ICLR'24 code (the ICML'23 notebook uses 0.1)


def _check_threshold(threshold: float) -> float:
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold is a fraction of max |I(S)| and must lie in (0, 1]; got {threshold}.")
    return float(threshold)


def _stack(i_and, i_or):
    """[..., K, 2^n] with K = 1 (AND only) or 2 (AND, OR) and n."""
    i_and = jnp.asarray(i_and)
    n = num_players(i_and, "I_and")
    if i_or is None:
        return i_and[..., None, :], n
    i_or = jnp.asarray(i_or)
    if i_or.shape != i_and.shape:
        raise ValueError(f"I_and and I_or must have the same shape; got {i_and.shape} and {i_or.shape}.")
    return jnp.stack([i_and, i_or], axis=-2), n


def _check_finite(name, a):
    if not bool(jnp.all(jnp.isfinite(jnp.asarray(a)))):
        raise ValueError(
            f"{name} holds NaN or infinite values; interactions of finite model outputs are finite."
        )


def _salient(both, threshold, include_empty):
    """Bool mask of |I(S)| >= threshold * max |I| over [..., K, 2^n], the empty set excluded unless asked."""
    strength = jnp.abs(both)
    if not include_empty:
        strength = strength.at[..., 0].set(0.0)
    tau = threshold * jnp.max(strength, axis=(-2, -1), keepdims=True)
    mask = strength >= tau
    if not include_empty:
        mask = mask.at[..., 0].set(False)
    return mask


def salient_mask(
    i_and: jax.Array,
    i_or: jax.Array | None = None,
    *,
    threshold: float = SALIENT_THRESHOLD,
    include_empty: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """|I(S)| >= threshold * max |I| per sample (the max runs over AND and OR together and over all
    non-empty S; with include_empty the empty set counts too, in the max and in the mask).

    Returns a bool array shaped like i_and, or a pair (and_mask, or_mask) when i_or is given.
    """
    threshold = _check_threshold(threshold)
    both, _ = _stack(i_and, i_or)
    mask = _salient(both, threshold, include_empty)
    return mask[..., 0, :] if i_or is None else (mask[..., 0, :], mask[..., 1, :])


def order_strengths(
    i_and: jax.Array,
    i_or: jax.Array | None = None,
    *,
    threshold: float = SALIENT_THRESHOLD,
    normalize: str | None = None,
    include_empty: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Per-order strengths of the salient interactions, for orders k = 1..n.

    A_k^+ = sum over salient S with |S| = k of max(I(S), 0), A_k^- = sum of min(I(S), 0) (<= 0), AND and OR
    together. normalize: None (raw), "total" (divide both by the sample's total salient strength
    sum_k A_k^+ - A_k^-), or "max" (divide by max_k max(A_k^+, -A_k^-)). The two-phase paper's exact
    normalisation was not readable; "total" is our default choice for plots. The threshold's max runs over
    the non-empty S (include_empty=True: over the empty set too, the old behaviour). Returns ([..., n], [..., n]).
    """
    if normalize not in (None, "total", "max"):
        raise ValueError(f'normalize must be None, "total" or "max"; got {normalize!r}.')
    _stack(i_and, i_or)  # shape checks on the host
    _check_finite("I_and", i_and)
    if i_or is not None:
        _check_finite("I_or", i_or)
    return _order_strengths(i_and, i_or, _check_threshold(threshold), normalize, bool(include_empty))


@partial(jax.jit, static_argnums=(3, 4))
def _order_strengths(i_and, i_or, threshold, normalize, include_empty):
    both, n = _stack(i_and, i_or)
    kept = jnp.where(_salient(both, threshold, include_empty), both, 0.0)
    one_hot = jnp.asarray(subset_sizes(n)[:, None] == np.arange(1, n + 1)[None, :], both.dtype)  # [2^n, n]
    pos = jnp.einsum("...ks,so->...o", jnp.maximum(kept, 0.0), one_hot, precision="highest")
    neg = jnp.einsum("...ks,so->...o", jnp.minimum(kept, 0.0), one_hot, precision="highest")
    if normalize == "total":
        scale = jnp.sum(pos - neg, axis=-1, keepdims=True)
    elif normalize == "max":
        scale = jnp.max(jnp.maximum(pos, -neg), axis=-1, keepdims=True)
    else:
        return pos, neg
    scale = jnp.where(scale > 0, scale, 1.0)
    return pos / scale, neg / scale


def weighted_jaccard(a: jax.Array, b: jax.Array) -> jax.Array:
    """Jaccard similarity of two interaction vectors [..., m]: each is mapped to the non-negative
    [max(I, 0), max(-I, 0)], then sum(min) / sum(max). 1 when both are zero."""
    a2 = jnp.concatenate([jnp.maximum(a, 0.0), jnp.maximum(-a, 0.0)], axis=-1)
    b2 = jnp.concatenate([jnp.maximum(b, 0.0), jnp.maximum(-b, 0.0)], axis=-1)
    num = jnp.sum(jnp.minimum(a2, b2), axis=-1)
    den = jnp.sum(jnp.maximum(a2, b2), axis=-1)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0)


def jaccard_by_order(
    train_and: jax.Array,
    test_and: jax.Array,
    train_or: jax.Array | None = None,
    test_or: jax.Array | None = None,
) -> jax.Array:
    """The generalisation metric of the two-phase paper, for orders k = 1..n -> [n].

    train_*: [N_train, 2^n] and test_*: [N_test, 2^n] interactions of samples of one class. For each order
    k, the mean interaction vector over the training samples and over the test samples (AND and OR entries
    of the subsets with |S| = k, concatenated) are compared with `weighted_jaccard`. (The paper's formula
    was not readable; this follows the issue's definition.)
    """
    tr, n = _stack(train_and, train_or)
    te, n_te = _stack(test_and, test_or)
    if tr.ndim != 3 or te.ndim != 3 or n != n_te or tr.shape[1] != te.shape[1]:
        raise ValueError(
            "jaccard_by_order needs train and test interactions [samples, 2^n] with the same n and the same "
            f"AND/OR parts; got train {tr.shape[0:1] + tr.shape[2:]} and test {te.shape[0:1] + te.shape[2:]}."
        )
    if tr.shape[0] == 0 or te.shape[0] == 0:
        raise ValueError(
            "jaccard_by_order needs at least one train and one test sample (of the class); got "
            f"{tr.shape[0]} train and {te.shape[0]} test samples. With none, the similarity is undefined "
            "(it is not 1, perfect generalisation)."
        )
    return _jaccard_by_order(tr, te)


@jax.jit
def _jaccard_by_order(tr, te):
    n = num_players(tr)
    mean_tr = jnp.mean(tr, axis=0).reshape(-1)  # [K * 2^n]
    mean_te = jnp.mean(te, axis=0).reshape(-1)
    sizes = np.tile(subset_sizes(n), tr.shape[1])
    out = []
    for k in range(1, n + 1):
        idx = np.nonzero(sizes == k)[0]
        out.append(weighted_jaccard(mean_tr[idx], mean_te[idx]))
    return jnp.stack(out)
