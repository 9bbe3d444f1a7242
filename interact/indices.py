"""shapiq's interaction indices from the Harsanyi dividends (Moebius coefficients), with the fast transforms.

Every index here is a weighted superset sum of the dividends m: for |S| = s <= order,

    index(S) = sum_{T superset of S} w_index(s, |T|) m(T),

with weights that depend only on the two sizes (shapiq's `moebius_converter` distribution weights, and
the ExactComputer's empty-set conventions). For each s the weights are applied to m by |T| and one
superset sum gives all S of that size; sizes whose weights coincide share one (Co-Moebius needs one, STII
one, k-SII, FSII and FBII two at order 2), and the empty set is a weighted total, no superset sum. The
superset sums run as one jitted program per (index, n, order, dtype): the 2^n values as a tensor of 4-bit
chunks [16, ..., 16], and per chunk one small matmul with the 16 x kept zeta matrix, where kept are the
chunk's subsets of size <= order (11 of 16 at order 2), so the tensor shrinks chunk by chunk and the S of
size <= order are gathered from it at static positions (O(2^n) at fixed order instead of O(n 2^n)
elementwise passes). At n = 20, order 2 or n, every index runs in milliseconds of CPU time (the benchmark's "k=2" and "k=n" rows).

Indices (shapiq's names): "Moebius", "Co-Moebius", "SII", "BII", "k-SII", "STII", "FSII", "FBII".
Values at |S| > order are 0 (also for "Moebius": shapiq's `ExactComputer("Moebius", k)` returns every
order whatever k). The empty set holds shapiq's (1.4) convention: its `InteractionValues` puts the baseline
v(empty) in the empty slot of every index but SII, BII and FBII, so v(empty) for k-SII, STII, FSII,
Co-Moebius (whose formula would give v(N) there) and SII of order 1 (the Shapley value), the fitted
intercept for FBII, the index's own formula for SII (order >= 2) and BII.

Where shapiq itself approximates: FSII, which it fits by least squares with a 1e7 weight on v(empty) and
v(N) instead of the two equality constraints; ours is the exactly constrained solution (closed form), so
the two differ by ~1e-9 relative (tests compare with shapiq to 1e-6 and with the constrained least squares
to 1e-9). Every other index above is exact in shapiq and matches to 1e-9.

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

from interact.ops import _float, check_num_players, num_players

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
    if index == "Co-Moebius":  # the empty slot holds v(empty) = m(empty), shapiq's baseline
        return 1.0 if s > 0 else float(t == 0)
    if index == "SII":
        if s == 0 and k == 1:  # order 1 is the Shapley value; shapiq puts the baseline v(empty) there
            return float(t == 0)
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
    """index values on the order-capped family (`_low_index`): m [..., F], sizes [F] (subset sizes),
    w [order+1, n+1] -> [..., F]. The distinct weight rows that are not the identity are applied together
    (one stacked superset sum over [..., r, F]), then each subset picks the row of its size."""
    order = w.shape[0] - 1
    rows, pick, empty = _weight_rows(w)
    sizes = jnp.asarray(sizes)
    keep = sizes <= order
    if not len(rows):
        return _set_empty(jnp.where(keep, m, 0.0), m, sizes, empty)
    weights = jnp.take(jnp.asarray(rows, m.dtype), sizes, axis=1)  # [r, F]
    stacked = jnp.concatenate([m[..., None, :], supsum(m[..., None, :] * weights)], axis=-2)  # [..., r+1, F]
    choice = jnp.take(jnp.asarray(pick), sizes)  # [F]
    out = jnp.take_along_axis(stacked, jnp.broadcast_to(choice, m.shape)[..., None, :], axis=-2)[..., 0, :]
    return _set_empty(jnp.where(keep, out, 0.0), m, sizes, empty)


def _weight_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The distinct weight rows of w [order+1, n+1] that are not the identity, for the sizes s >= 1 ->
    (rows [r, n+1], pick [n+1]: per size s, 0 = the dividend itself, j + 1 = row j, sizes above the order
    pick 0 and are zeroed; empty: w[0] when the empty set is not its own dividend, else None; the empty set
    needs no superset sum, only the weighted total sum_T w[0, |T|] m(T)). Rows are compared on the sizes
    t >= s only (a set of size s has no smaller supersets), so Co-Moebius needs one row."""
    order = w.shape[0] - 1
    rows: list[np.ndarray] = []
    pick = np.zeros(w.shape[1], np.int32)
    for s in range(1, order + 1):
        row = w[s]
        if np.array_equal(row[s:], np.eye(len(row))[s, s:]):
            continue
        match = [j for j, r in enumerate(rows) if np.array_equal(r[s:], row[s:])]
        if not match:
            rows.append(row)
            match = [len(rows) - 1]
        pick[s] = match[0] + 1
    empty = None if np.array_equal(w[0], np.eye(w.shape[1])[0]) else w[0]
    return (np.stack(rows) if rows else np.zeros((0, w.shape[1]))), pick, empty


def _set_empty(out, m, sizes, empty):
    """out with its empty-set entry (position 0) replaced by sum_T empty[|T|] m(T), when empty is given."""
    if empty is None:
        return out
    total = jnp.sum(m * jnp.take(jnp.asarray(empty, m.dtype), sizes), axis=-1)
    return out.at[..., 0].set(total)


def _chunks(n: int, bits: int = 4) -> tuple[int, ...]:
    """Player bits grouped into chunks of <= `bits`, highest bits first (the C-order axes of [2^n])."""
    return tuple([n % bits] if n % bits else []) + (bits,) * (n // bits)


@lru_cache(maxsize=32)
def _plan(index: str, n: int, order: int):
    """Everything static about one (index, n, order): weight rows, per-chunk superset-sum matrices
    restricted to the chunk subsets of size <= order, and (when the output family is small) the positions
    of the subsets of size <= order in the restricted tensor and in [2^n]."""
    w = index_weights(index, n, order)
    rows, pick, empty = _weight_rows(w)
    chunks = _chunks(n)
    family = sum(math.comb(n, j) for j in range(order + 1))
    dense = family > 2 ** (n - 1)  # most subsets: compute them all, select by size in the graph
    keeps = [[u for u in range(2**b) if dense or u.bit_count() <= order] for b in chunks]
    mats = tuple(np.array([[float(u & t == u) for u in keep] for t in range(2**b)])  # [2^b, kept]
                 for b, keep in zip(chunks, keeps, strict=True))  # fmt: skip
    if dense:
        return rows, pick, empty, chunks, mats, None, None, None
    # the subsets of size <= order: their index in [2^n] and in the restricted tensor (row-major)
    index_of, place = [], []
    shape = [len(k) for k in keeps]
    lookup = [{u: i for i, u in enumerate(k)} for k in keeps]
    shift = np.cumsum([0, *chunks[::-1]])[::-1][1:]  # low bit of each chunk, highest chunk first
    for size in range(order + 1):
        for c in itertools.combinations(range(n), size):
            sub = sum(1 << i for i in c)
            index_of.append(sub)
            coords = [lookup[j][(sub >> int(shift[j])) & (2 ** chunks[j] - 1)] for j in range(len(chunks))]
            place.append(np.ravel_multi_index(coords, shape))
    sizes = np.array([bin(i).count("1") for i in index_of])
    return (
        rows,
        pick,
        empty,
        chunks,
        mats,
        np.array(index_of, np.int32),
        np.array(place, np.int32),
        pick[sizes],
    )


def _chunked_superset_sum(a: jax.Array, chunks, mats) -> jax.Array:
    """a [..., 2^n] -> the superset sums on the restricted tensor [..., kept_1, ..., kept_c]: one small matmul
    per chunk of player bits (mats[j] [2^b_j, kept_j], 1 where the kept subset lies inside the row's)."""
    batch = a.shape[:-1]
    a = a.reshape(*batch, *[2**b for b in chunks])
    for j, mat in enumerate(mats):
        axis = len(batch) + j
        a = jnp.moveaxis(jnp.tensordot(a, jnp.asarray(mat, a.dtype), axes=[[axis], [0]]), -1, axis)
    return a


@partial(jax.jit, static_argnames=("index", "order"))
def _index_impl(m, index, order):
    m = _float(m)
    n = num_players(m)
    rows, pick, empty, chunks, mats, index_of, place, choice = _plan(index, n, order)
    sizes = jax.lax.population_count(jnp.arange(2**n, dtype=jnp.int32))  # |T| of every subset index T
    batch = m.shape[:-1]
    # every row at once: the dividends weighted by |T| [..., r, 2^n], then the chunked superset sums
    transformed = []
    if len(rows):
        g = m[..., None, :] * jnp.take(jnp.asarray(rows, m.dtype), sizes, axis=1)
        stacked_rows = _chunked_superset_sum(g, chunks, mats).reshape(*batch, len(rows), -1)  # [..., r, P]
        transformed = [stacked_rows[..., j, :] for j in range(len(rows))]
    if index_of is None:  # all 2^n subsets, in subset-index order; pick each subset's row by its size
        choice_all = jnp.take(jnp.asarray(pick), sizes)
        out = m
        for j, t in enumerate(transformed):
            out = jnp.where(choice_all == j + 1, t, out)
        return jnp.where(sizes <= order, out, 0.0)  # the empty set: `_put_empty`
    # few subsets: gather them from the restricted tensors, scatter into zeros
    stacked = jnp.stack([m[..., index_of], *[t[..., place] for t in transformed]], axis=-2)  # [..., r+1, F]
    vals = jnp.take_along_axis(stacked, jnp.broadcast_to(jnp.asarray(choice), (*batch, 1, len(place))),
                               axis=-2)[..., 0, :]  # fmt: skip
    return jnp.zeros_like(m).at[..., index_of].set(vals)  # the empty set: `_put_empty`


@partial(jax.jit, static_argnames=("index", "order"), donate_argnums=0)
def _put_empty(out, m, index, order):
    """out with the empty set's value sum_T w[0, |T|] m(T) (a second small program: inside `_index_impl`
    XLA fuses it badly and it doubles the time)."""
    m = _float(m)
    n = num_players(m)
    empty = _plan(index, n, order)[2]
    sizes = jax.lax.population_count(jnp.arange(2**n, dtype=jnp.int32))
    total = jnp.sum(m * jnp.take(jnp.asarray(empty, m.dtype), sizes), axis=-1)
    return out.at[..., 0].set(total)


def interaction_index(interactions: jax.Array, index: str, order: int | None = None) -> jax.Array:
    """shapiq's `index` up to `order` from the Harsanyi dividends [..., 2^n] (e.g. `harsanyi(v)`).

    Returns [..., 2^n] in subset-index order: index(S) for |S| <= order (order defaults to n), 0 above.
    Equals shapiq's `ExactComputer(game, n)(index, order)` on the same game (checked to 1e-9 in the tests;
    FSII to 1e-6: shapiq approximates it with a 1e7 penalty; ours is the exact constrained least squares).
    Batched over leading axes; one compiled program per (index, n, order, dtype), cached. Indices: "Moebius", "Co-Moebius", "SII", "BII", "k-SII",
    "STII", "FSII", "FBII".
    """
    n = num_players(interactions, "I")
    order = n if order is None else order
    _check_index(index, n, order)
    out = _index_impl(interactions, index=index, order=int(order))
    if _plan(index, n, int(order))[2] is not None:  # FBII, SII, BII: the empty set is a weighted total
        out = _put_empty(out, interactions, index=index, order=int(order))
    return out


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
