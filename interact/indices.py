"""shapiq's interaction indices from the Harsanyi dividends (Moebius coefficients), with the fast transforms.

Every index here is a weighted superset sum of the dividends m: for |S| = s <= order,

    index(S) = sum_{T superset of S} w_index(s, |T|) m(T),

with weights that depend only on the two sizes (shapiq's `moebius_converter` distribution weights, and
the ExactComputer's empty-set conventions). For each s the weights are applied to m by |T| and one
superset sum (O(n 2^n)) gives all S of that size, so an index up to order k costs O(k n 2^n).

Indices (shapiq's names): "Moebius", "Co-Moebius", "SII", "BII", "k-SII", "STII", "FSII", "FBII".
Values at |S| > order are 0. The empty set holds shapiq's baseline convention: v(empty) for k-SII, STII and
FSII, the fitted intercept for FBII, v(N) for Co-Moebius, the index's own formula for SII and BII.

An order cap for large n (`low_order_subsets`, `harsanyi_low_order`, `interaction_index_low_order`): the
subsets of size <= K only (sum_{j<=K} C(n, j) of them, in shapiq's powerset order), the game evaluated on
them, and the same transforms restricted to that family (a Yates pass per player, as a gather). The
dividends m(S), |S| <= K, are exact for any game; the indices are exact when the game has no dividends
above order K (a game "of order K"), since the sums over supersets are cut at size K.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from functools import cache, lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from interact.ops import _float, _superset_sum, check_num_players, num_players

INDICES = ("Moebius", "Co-Moebius", "SII", "BII", "k-SII", "STII", "FSII", "FBII")


@cache
def _bernoulli(k: int) -> tuple[Fraction, ...]:
    """B_0..B_k with B_1 = -1/2 (scipy's convention, used by shapiq's aggregation)."""
    b = [Fraction(1)]
    for m in range(1, k + 1):
        b.append(-sum(math.comb(m + 1, j) * b[j] for j in range(m)) / Fraction(m + 1))
    return tuple(b)


def _weight(index: str, s: int, t: int, k: int) -> float:
    """w_index(s, t): the share of a dividend of size t >= s in the index of a set of size s <= k."""
    d = t - s
    if index == "Moebius":
        return float(d == 0)
    if index == "Co-Moebius":
        return 1.0
    if index == "SII":
        return 1.0 / (d + 1)
    if index == "BII":
        return 0.5**d
    if index == "k-SII":
        if s == 0:
            return float(t == 0)
        bern = _bernoulli(k)
        return float(sum(math.comb(d, j) * bern[j] / Fraction(d - j + 1) for j in range(min(k, t) - s + 1)))
    if t <= k:  # STII, FSII, FBII: the dividends up to order k stay where they are
        return float(d == 0)
    if index == "STII":
        return 1.0 / math.comb(t, k) if s == k else 0.0
    if index == "FSII":
        if s == 0:
            return 0.0
        return float((-1) ** (k - s) * Fraction(s, k + s) * Fraction(math.comb(k, s) * math.comb(t - 1, k),
                                                                        math.comb(t + k - 1, k + s)))  # fmt: skip
    if index == "FBII":
        return (-1) ** (k - s) * 0.5**d * math.comb(d - 1, k - s)
    raise AssertionError(index)


def index_weights(index: str, n: int, order: int) -> np.ndarray:
    """Float64 [order + 1, n + 1]: w[s, t] = the weight of a dividend of size t in the index of a set of size
    s (0 where t < s)."""
    _check_index(index, n, order)
    w = np.zeros((order + 1, n + 1))
    for s in range(order + 1):
        for t in range(s, n + 1):
            w[s, t] = _weight(index, s, t, order)
    return w


def _check_index(index, n, order):
    if index not in INDICES:
        raise ValueError(f"index must be one of {INDICES}; got {index!r}.")
    if not isinstance(order, int | np.integer) or not 1 <= order <= n:
        raise ValueError(f"order must be an integer between 1 and n = {n}; got {order!r}.")


def _apply(m, sizes, w, supsum):
    """index values on a family of subsets: m [..., F], sizes [F] (subset sizes), w [order+1, n+1] -> [..., F].

    The distinct weight rows that are not the identity are applied together: one stacked superset sum
    over [..., r, F] (Co-Moebius needs one row for every order, STII one), then each subset picks the row
    of its size. Sizes are an array computed in the graph for the dense family, so no 2^n constant is
    baked into the program.
    """
    order = w.shape[0] - 1
    rows: list[np.ndarray] = []
    pick = np.zeros(w.shape[1], np.int32)  # per size: 0 = the dividend itself, j + 1 = transformed row j
    for s in range(order + 1):
        row = w[s]
        if np.array_equal(row, np.eye(len(row))[s]):
            continue
        match = [j for j, r in enumerate(rows) if np.array_equal(r, row)]
        if not match:
            rows.append(row)
            match = [len(rows) - 1]
        pick[s] = match[0] + 1
    sizes = jnp.asarray(sizes)
    keep = sizes <= order
    if not rows:
        return jnp.where(keep, m, 0.0)
    weights = jnp.take(jnp.asarray(np.stack(rows), m.dtype), sizes, axis=1)  # [r, F]
    stacked = jnp.concatenate([m[..., None, :], supsum(m[..., None, :] * weights)], axis=-2)  # [..., r+1, F]
    choice = jnp.take(jnp.asarray(pick), sizes)  # [F]
    out = jnp.take_along_axis(stacked, jnp.broadcast_to(choice, m.shape)[..., None, :], axis=-2)[..., 0, :]
    return jnp.where(keep, out, 0.0)


@partial(jax.jit, static_argnames=("index", "order"))
def _index_impl(m, index, order):
    m = _float(m)
    n = num_players(m)
    sizes = jax.lax.population_count(jnp.arange(2**n, dtype=jnp.int32))  # |S| of every subset index S
    return _apply(m, sizes, index_weights(index, n, order), lambda a: _superset_sum(a, n))


def interaction_index(interactions: jax.Array, index: str, order: int | None = None) -> jax.Array:
    """shapiq's `index` up to `order` from the Harsanyi dividends [..., 2^n] (e.g. `harsanyi(v)`).

    Returns [..., 2^n] in subset-index order: index(S) for |S| <= order (order defaults to n), 0 above.
    Equals shapiq's `ExactComputer(game, n)(index, order)` on the same game (checked to 1e-9 in the tests;
    FSII against its exact constrained least squares, which shapiq approximates with a 1e7 penalty).
    O(order n 2^n), batched over leading axes. Indices: "Moebius", "Co-Moebius", "SII", "BII", "k-SII",
    "STII", "FSII", "FBII".
    """
    n = num_players(interactions, "I")
    order = n if order is None else order
    _check_index(index, n, order)
    return _index_impl(interactions, index=index, order=int(order))


# ---- the order cap: subsets of size <= K only ----


@lru_cache(maxsize=8)
def _family(n: int, max_order: int):
    """(masks bool [F, n], sizes [F], down [n, F], up [n, F]) for the subsets of size <= max_order in
    shapiq's powerset order (by size, then lexicographic). down[i, j]: position of S_j minus {i} (or j when
    i is not in S_j); up[i, j]: position of S_j plus {i} (or j when i is in S_j or |S_j| = max_order)."""
    subsets = [c for k in range(max_order + 1) for c in itertools.combinations(range(n), k)]
    pos = {c: j for j, c in enumerate(subsets)}
    masks = np.zeros((len(subsets), n), bool)
    down = np.tile(np.arange(len(subsets)), (n, 1))
    up = down.copy()
    for j, c in enumerate(subsets):
        masks[j, list(c)] = True
        for i in range(n):
            if i in c:
                down[i, j] = pos[tuple(x for x in c if x != i)]
            elif len(c) < max_order:
                up[i, j] = pos[tuple(sorted((*c, i)))]
    return masks, masks.sum(1), down, up


def _check_cap(n, max_order):
    n = check_num_players(n) if n <= 30 else n
    if not isinstance(max_order, int | np.integer) or not 1 <= max_order <= n:
        raise ValueError(f"max_order must be an integer between 1 and n = {n}; got {max_order!r}.")
    count = sum(math.comb(n, j) for j in range(max_order + 1))
    if count > 5_000_000:
        raise ValueError(
            f"{count} subsets of size <= {max_order} among {n} players is too many for the order cap "
            "(at most 5e6); lower max_order."
        )
    return int(n), int(max_order)


def low_order_subsets(n: int, max_order: int) -> np.ndarray:
    """Bool [F, n]: the subsets of size <= max_order, F = sum_{j <= max_order} C(n, j), in shapiq's powerset
    order. Evaluate the game on these rows (a mask per row) and pass the values to `harsanyi_low_order`."""
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer number of players; got {n!r}.")
    return _family(*_check_cap(int(n), max_order))[0].copy()


def _check_family_values(v, n, max_order, name):
    n, max_order = _check_cap(n, max_order)
    masks = _family(n, max_order)[0]
    if np.shape(v)[-1:] != (len(masks),):
        raise ValueError(
            f"{name} must have a last axis of {len(masks)} values (the subsets of size <= {max_order} of {n} "
            f"players, `low_order_subsets`); got shape {np.shape(v)}."
        )
    return n, max_order


def harsanyi_low_order(v: jax.Array, n: int, max_order: int) -> jax.Array:
    """Harsanyi dividends m(S) for |S| <= max_order from v [..., F] on `low_order_subsets(n, max_order)`.

    Exact for every game (m(S) only needs v on the subsets of S). O(n F)."""
    n, max_order = _check_family_values(v, n, max_order, "v")
    _, sizes, down, _ = _family(n, max_order)
    return _low_moebius(_float(jnp.asarray(v)), jnp.asarray(down), jnp.asarray(down != np.arange(len(sizes))))


@jax.jit
def _low_moebius(a, down, has):
    for i in range(down.shape[0]):
        a = a - jnp.where(has[i], a[..., down[i]], 0.0)
    return a


def interaction_index_low_order(
    dividends: jax.Array, n: int, max_order: int, index: str, order: int
) -> jax.Array:
    """`interaction_index` on the subsets of size <= max_order: dividends [..., F] from `harsanyi_low_order`;
    returns [..., F] (index(S) for |S| <= order <= max_order, 0 above). Exact when the game has no dividends
    above max_order; otherwise the superset sums are cut at size max_order."""
    n, max_order = _check_family_values(dividends, n, max_order, "dividends")
    _check_index(index, n, order)
    if order > max_order:
        raise ValueError(f"order must not exceed max_order = {max_order}; got {order}.")
    _, sizes, _, up = _family(n, max_order)
    w = index_weights(index, n, order)
    has = up != np.arange(len(sizes))
    return _low_index(_float(jnp.asarray(dividends)), jnp.asarray(up), jnp.asarray(has), sizes, w)


def _low_index(m, up, has, sizes, w):
    def supsum(a):
        for i in range(up.shape[0]):
            a = a + jnp.where(has[i], a[..., up[i]], 0.0)
        return a

    return _apply(m, sizes, w, supsum)
