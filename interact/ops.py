"""Subset transforms on games over n players: the maths of AND/OR (Harsanyi) interactions.

A game is an array v of shape [..., 2^n] holding v(x_S) for every subset S of the n players. The subset
index is an integer m in [0, 2^n): bit i of m says whether player i is present (player 0 is the least
significant bit), so `subset_masks(n)[m, i] == (m >> i) & 1`.

All transforms here are the fast subset (Yates) transforms, O(n 2^n): reshape the last axis to (2,)*n and
do one add or subtract per player axis. They are linear, so `jax.grad` through them is their transpose.
Leading axes are batch axes everywhere.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

MAX_PLAYERS = 30  # 2^30 values is already 4 GiB in float32; more is a mistake, not a workload


def check_num_players(n: int) -> int:
    """Returns n after checking 0 <= n <= MAX_PLAYERS."""
    if not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"The number of players must be a non-negative integer; got {n!r}.")
    if n > MAX_PLAYERS:
        raise ValueError(f"At most {MAX_PLAYERS} players are supported (a game has 2^n values); got n = {n}.")
    return int(n)


def num_players(v: jax.Array | np.ndarray, name: str = "v") -> int:
    """n such that the last axis of v has 2^n entries; ValueError otherwise."""
    shape = np.shape(v)
    if len(shape) == 0:
        raise ValueError(f"{name} must have a last axis of length 2^n (one value per subset); got a scalar.")
    size = shape[-1]
    if size < 1 or size & (size - 1):
        raise ValueError(
            f"The last axis of {name} must have length 2^n (one value per subset of n players); "
            f"got length {size}, which is not a power of two."
        )
    return check_num_players(size.bit_length() - 1)


def subset_masks(n: int) -> np.ndarray:
    """Bool [2^n, n]: row m says which players are in subset m (bit i <-> player i)."""
    n = check_num_players(n)
    m = np.arange(2**n, dtype=np.int64)[:, None]
    return ((m >> np.arange(n)) & 1).astype(bool)


def subset_sizes(n: int) -> np.ndarray:
    """Int32 [2^n]: |S| for every subset index (the popcount)."""
    n = check_num_players(n)
    sizes = np.zeros(2**n, dtype=np.int32)
    for i in range(n):  # sizes of subsets with bit i set = sizes of those without, plus one
        sizes[2**i : 2 ** (i + 1)] = sizes[: 2**i] + 1
    return sizes


def _per_player(a: jax.Array, n: int, fn) -> jax.Array:
    """Applies fn(absent, present) -> (new_absent, new_present) along every player axis of a [..., 2^n]."""
    batch = a.shape[:-1]
    for i in range(n):
        # [..., 2^(n-i-1), 2, 2^i]: the middle axis is bit i of the subset index.
        b = a.reshape(*batch, 2 ** (n - i - 1), 2, 2**i)
        lo, hi = fn(b[..., 0, :], b[..., 1, :])
        a = jnp.stack([lo, hi], axis=-2).reshape(*batch, 2**n)
    return a


def _float(v) -> jax.Array:
    v = jnp.asarray(v)
    return v if jnp.issubdtype(v.dtype, jnp.inexact) else v.astype(jnp.float32)


@jax.jit
def _harsanyi_impl(v):
    v = _float(v)
    return _per_player(v, num_players(v), lambda lo, hi: (lo, hi - lo))


@jax.jit
def _harsanyi_inverse_impl(a):
    a = _float(a)
    return _per_player(a, num_players(a), lambda lo, hi: (lo, hi + lo))


@jax.jit
def _or_interactions_impl(v):
    # The complement of subset index T is 2^n - 1 - T, so v(x_{N minus T}) indexed by T is v reversed.
    v = _float(v)
    out = -_harsanyi_impl(v[..., ::-1])
    return out.at[..., 0].set(v[..., 0])


@jax.jit
def _or_interactions_inverse_impl(a):
    a = _float(a)
    total = jnp.sum(a, axis=-1)  # v(N) = I_or(empty) + sum of I_or over all non-empty S
    # With T' = N minus T: v(x_T) = v(N) - sum_{non-empty S subset of T'} I_or(S).
    inner = _harsanyi_inverse_impl(a.at[..., 0].set(0.0))  # [..., 2^n], indexed by T'
    return total[..., None] - inner[..., ::-1]


def _superset_sum(a: jax.Array, n: int, weight: float = 1.0) -> jax.Array:
    """b(S) = sum_{T superset of S} weight^{|T|-|S|} a(T), one pass per player."""
    return _per_player(a, n, lambda lo, hi: (lo + weight * hi, hi))


def _sum_over_members(w: jax.Array, n: int) -> jax.Array:
    """phi_i = sum over subsets S containing i of w(S).  [..., 2^n] -> [..., n]."""
    batch = w.shape[:-1]
    out = []
    for i in range(n):
        b = w.reshape(*batch, 2 ** (n - i - 1), 2, 2**i)
        out.append(jnp.sum(b[..., 1, :], axis=(-2, -1)))
    return jnp.stack(out, axis=-1)


def _combined(i_and, i_or):
    i_and = _float(i_and)
    total = i_and if i_or is None else i_and + _float(i_or)
    return total, num_players(total)


@jax.jit
def _shapley_values_impl(i_and, i_or=None):
    total, n = _combined(i_and, i_or)
    sizes = subset_sizes(n)
    inv = np.where(sizes > 0, 1.0 / np.maximum(sizes, 1), 0.0).astype(total.dtype)
    return _sum_over_members(total * inv, n)


@jax.jit
def _banzhaf_values_impl(i_and, i_or=None):
    total, n = _combined(i_and, i_or)
    sizes = subset_sizes(n)
    weight = np.where(sizes > 0, 2.0 ** (1 - sizes.astype(np.float64)), 0.0).astype(total.dtype)
    return _sum_over_members(total * weight, n)


@partial(jax.jit, static_argnames="order")
def _sii_impl(a, order):
    a = _float(a)
    n = num_players(a)
    sizes = subset_sizes(n)
    out = jnp.zeros_like(a)
    for k in range(order, n + 1):  # dividends of size k, summed onto their subsets, weighted 1/(k-order+1)
        layer = jnp.where(sizes == k, a, 0.0)
        out = out + _superset_sum(layer, n) / (k - order + 1)
    return jnp.where(sizes == order, out, 0.0)


@partial(jax.jit, static_argnames="order")
def _bii_impl(a, order):
    a = _float(a)
    n = num_players(a)
    return jnp.where(subset_sizes(n) == order, _superset_sum(a, n, 0.5), 0.0)


# Public entry points: check shapes on the host (before any transfer or tracing), then run the jitted code.


def _check_order(n, order):
    if not isinstance(order, int | np.integer) or not 0 <= order <= n:
        raise ValueError(f"order must be an integer between 0 and n = {n}; got {order!r}.")


def harsanyi(v: jax.Array) -> jax.Array:
    """AND interactions (Harsanyi dividends, the Moebius transform) of games v [..., 2^n] -> [..., 2^n].

    I(S) = sum_{T subset of S} (-1)^{|S|-|T|} v(x_T); O(n 2^n), batched over leading axes.
    """
    num_players(v)
    return _harsanyi_impl(v)


def harsanyi_inverse(interactions: jax.Array) -> jax.Array:
    """The zeta transform, inverse of `harsanyi`: v(x_S) = sum_{T subset of S} I(T).  [..., 2^n]."""
    num_players(interactions, "I")
    return _harsanyi_inverse_impl(interactions)


def or_interactions(v: jax.Array) -> jax.Array:
    """OR interactions: I_or(S) = -sum_{T subset of S} (-1)^{|S|-|T|} v(x_{N minus T}) for non-empty S and
    I_or(empty) = v(x_empty).  [..., 2^n] -> [..., 2^n]."""
    num_players(v)
    return _or_interactions_impl(v)


def or_interactions_inverse(interactions: jax.Array) -> jax.Array:
    """Inverse of `or_interactions`: v(x_T) = I_or(empty) + sum over non-empty S meeting T of I_or(S)."""
    num_players(interactions, "I_or")
    return _or_interactions_inverse_impl(interactions)


def shapley_values(i_and: jax.Array, i_or: jax.Array | None = None) -> jax.Array:
    """Shapley values from the dividends: phi_i = sum_{S containing i} (I_and(S) + I_or(S)) / |S|.

    With only AND dividends this is the Harsanyi form of the Shapley value. The OR dividends are the
    Moebius transform of the dual game, whose Shapley value equals the game's, so they enter the same way.
    [..., 2^n] -> [..., n]; efficiency: sum_i phi_i = v(N) - v(empty).
    """
    _check_pair(i_and, i_or)
    return _shapley_values_impl(i_and, i_or)


def banzhaf_values(i_and: jax.Array, i_or: jax.Array | None = None) -> jax.Array:
    """Banzhaf values from the dividends: beta_i = sum_{S containing i} (I_and(S) + I_or(S)) / 2^{|S|-1}.

    [..., 2^n] -> [..., n]. (The Banzhaf value of the dual game equals the game's, so OR enters as AND.)
    """
    _check_pair(i_and, i_or)
    return _banzhaf_values_impl(i_and, i_or)


def shapley_interaction_index(interactions: jax.Array, order: int) -> jax.Array:
    """The Shapley interaction index (Grabisch) of every subset of size `order`, from Harsanyi dividends.

    SII(S) = sum_{T superset of S} I(T) / (|T| - |S| + 1).  interactions: [..., 2^n], the dividends of one
    game (e.g. `harsanyi(v)`). Returns [..., 2^n] holding SII(S) where |S| == order and 0 elsewhere; order 1
    gives the Shapley values at the singleton indices. O(n^2 2^n).
    """
    _check_order(num_players(interactions, "I"), order)
    return _sii_impl(interactions, order=int(order))


def banzhaf_interaction_index(interactions: jax.Array, order: int) -> jax.Array:
    """The Banzhaf interaction index of every subset of size `order`: sum_{T superset of S} I(T)/2^{|T|-|S|}.

    [..., 2^n] -> [..., 2^n], zero where |S| != order.
    """
    _check_order(num_players(interactions, "I"), order)
    return _bii_impl(interactions, order=int(order))


def _check_pair(i_and, i_or):
    num_players(i_and, "I_and")
    if i_or is not None and np.shape(i_or) != np.shape(i_and):
        raise ValueError(
            f"I_and and I_or must have the same shape; got {np.shape(i_and)} and {np.shape(i_or)}."
        )
