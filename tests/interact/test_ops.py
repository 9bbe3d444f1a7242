"""The subset transforms and the values derived from dividends, against naive loops over subsets."""

import math

import jax
import numpy as np
import pytest

import interact as it


def popcount(m):
    return bin(m).count("1")


def submasks(s):
    """Every T subset of S (as bit masks), S itself included."""
    t = s
    while True:
        yield t
        if t == 0:
            return
        t = (t - 1) & s


def naive_harsanyi(v):
    n = v.shape[-1].bit_length() - 1
    out = np.zeros_like(v)
    for s in range(2**n):
        for t in submasks(s):
            out[..., s] += (-1) ** (popcount(s) - popcount(t)) * v[..., t]
    return out


def naive_zeta(a):
    n = a.shape[-1].bit_length() - 1
    out = np.zeros_like(a)
    for s in range(2**n):
        for t in submasks(s):
            out[..., s] += a[..., t]
    return out


def naive_or(v):
    n = v.shape[-1].bit_length() - 1
    full = 2**n - 1
    out = np.zeros_like(v)
    out[..., 0] = v[..., 0]
    for s in range(1, 2**n):
        for t in submasks(s):
            out[..., s] -= (-1) ** (popcount(s) - popcount(t)) * v[..., full ^ t]
    return out


def naive_shapley(v):
    n = v.shape[-1].bit_length() - 1
    phi = np.zeros(v.shape[:-1] + (n,))
    for i in range(n):
        for t in range(2**n):
            if t >> i & 1:
                continue
            k = popcount(t)
            w = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            phi[..., i] += w * (v[..., t | 1 << i] - v[..., t])
    return phi


def naive_banzhaf(v):
    n = v.shape[-1].bit_length() - 1
    beta = np.zeros(v.shape[:-1] + (n,))
    for i in range(n):
        for t in range(2**n):
            if not t >> i & 1:
                beta[..., i] += (v[..., t | 1 << i] - v[..., t]) / 2 ** (n - 1)
    return beta


def discrete_derivative(v, s, t):
    return sum((-1) ** (popcount(s) - popcount(l)) * v[..., t | l] for l in submasks(s))


def naive_sii(v, order):
    n = v.shape[-1].bit_length() - 1
    out = np.zeros_like(v)
    for s in range(2**n):
        if popcount(s) != order:
            continue
        for t in range(2**n):
            if t & s:
                continue
            k = popcount(t)
            w = math.factorial(n - k - order) * math.factorial(k) / math.factorial(n - order + 1)
            out[..., s] += w * discrete_derivative(v, s, t)
    return out


def naive_bii(v, order):
    n = v.shape[-1].bit_length() - 1
    out = np.zeros_like(v)
    for s in range(2**n):
        if popcount(s) != order:
            continue
        for t in range(2**n):
            if not t & s:
                out[..., s] += discrete_derivative(v, s, t) / 2 ** (n - order)
    return out


def int_game(rng, shape):
    """Integer-valued games: every transform is exact in float32 (|values| << 2^24), so 1e-5 is a real test."""
    return rng.integers(-8, 9, size=shape).astype(np.float32)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 10])
def test_subset_masks_and_sizes(n):
    masks = it.subset_masks(n)
    assert masks.shape == (2**n, n) and masks.dtype == bool
    for m in [0, 1, 2**n - 1, (2**n - 1) // 3]:
        assert masks[m].tolist() == [bool(m >> i & 1) for i in range(n)]
    np.testing.assert_array_equal(it.subset_sizes(n), masks.sum(1))


@pytest.mark.parametrize("n,batch", [(1, ()), (2, (3,)), (4, (2, 3)), (7, (2,)), (10, ())])
def test_harsanyi_exact_float32(n, batch):
    v = int_game(np.random.default_rng(n), batch + (2**n,))
    ours = it.harsanyi(v)
    assert ours.dtype == np.float32 and ours.shape == v.shape
    ref = naive_harsanyi(v.astype(np.float64))
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(it.harsanyi_inverse(ref.astype(np.float32)), v, atol=1e-5, rtol=0)
    np.testing.assert_allclose(it.harsanyi_inverse(ref.astype(np.float32)), naive_zeta(ref), atol=1e-5)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_transforms_random_float32(n):
    # Random reals: each I(S) sums 2^|S| <= 64 terms of size <= 1, so float32 rounding stays below 1e-5.
    v = np.random.default_rng(0).uniform(-1, 1, (4, 2**n)).astype(np.float32)
    np.testing.assert_allclose(it.harsanyi(v), naive_harsanyi(v.astype(np.float64)), atol=1e-5, rtol=0)
    np.testing.assert_allclose(it.or_interactions(v), naive_or(v.astype(np.float64)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [2, 5, 9])
def test_transforms_float64(n):
    v = np.random.default_rng(1).normal(size=(3, 2**n))
    with jax.enable_x64(True):
        ours = it.harsanyi(v)
        assert ours.dtype == np.float64
        np.testing.assert_allclose(ours, naive_harsanyi(v), atol=1e-10, rtol=0)
        np.testing.assert_allclose(it.or_interactions(v), naive_or(v), atol=1e-10, rtol=0)
        np.testing.assert_allclose(it.harsanyi_inverse(it.harsanyi(v)), v, atol=1e-10, rtol=0)
        np.testing.assert_allclose(it.or_interactions_inverse(it.or_interactions(v)), v, atol=1e-10)


@pytest.mark.parametrize("n,batch", [(1, (2,)), (3, ()), (6, (2, 2)), (8, (1,))])
def test_or_interactions_exact_float32(n, batch):
    v = int_game(np.random.default_rng(10 + n), batch + (2**n,))
    ref = naive_or(v.astype(np.float64))
    np.testing.assert_allclose(it.or_interactions(v), ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(it.or_interactions_inverse(ref.astype(np.float32)), v, atol=1e-5, rtol=0)


def test_integer_input_is_promoted():
    v = np.arange(8)
    np.testing.assert_allclose(it.harsanyi(v), naive_harsanyi(v.astype(np.float64)), atol=1e-5)


def test_transform_gradient_is_transpose():
    # The L1 gradient used by the sparsifier flows through the transform's transpose: check against the
    # explicit matrix built from the naive transform.
    n = 4
    rng = np.random.default_rng(3)
    v = rng.normal(size=2**n).astype(np.float32)
    w = rng.normal(size=2**n).astype(np.float32)
    mat = naive_harsanyi(np.eye(2**n)).T  # column t = transform of unit vector e_t
    g = jax.grad(lambda a: (it.harsanyi(a) * w).sum())(v)
    np.testing.assert_allclose(g, mat.T @ w, atol=1e-5)
    mat_or = naive_or(np.eye(2**n)).T
    g = jax.grad(lambda a: (it.or_interactions(a) * w).sum())(v)
    np.testing.assert_allclose(g, mat_or.T @ w, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_shapley_and_banzhaf_against_brute_force(n):
    v = np.random.default_rng(n).uniform(-1, 1, (2, 2**n)).astype(np.float32)
    i_and = it.harsanyi(v)
    phi = it.shapley_values(i_and)
    np.testing.assert_allclose(phi, naive_shapley(v.astype(np.float64)), atol=1e-5)
    np.testing.assert_allclose(phi.sum(-1), v[:, -1] - v[:, 0], atol=1e-5)  # efficiency
    np.testing.assert_allclose(it.banzhaf_values(i_and), naive_banzhaf(v.astype(np.float64)), atol=1e-5)


@pytest.mark.parametrize("n", [2, 4, 7])
def test_shapley_with_and_or_parts(n):
    # v = v_and + v_or; the OR dividends are those of the dual game and enter the Shapley value like AND.
    rng = np.random.default_rng(20 + n)
    v_and, v_or = rng.uniform(-1, 1, (2, 3, 2**n)).astype(np.float32)
    i_and, i_or = it.harsanyi(v_and), it.or_interactions(v_or)
    v = (v_and + v_or).astype(np.float64)
    phi = it.shapley_values(i_and, i_or)
    np.testing.assert_allclose(phi, naive_shapley(v), atol=1e-5)
    np.testing.assert_allclose(phi.sum(-1), v[:, -1] - v[:, 0], atol=1e-5)
    np.testing.assert_allclose(it.banzhaf_values(i_and, i_or), naive_banzhaf(v), atol=1e-5)


@pytest.mark.parametrize("n,order", [(3, 1), (4, 2), (5, 3), (6, 2), (6, 0), (4, 4)])
def test_interaction_indices_against_brute_force(n, order):
    v = np.random.default_rng(order + n).uniform(-1, 1, (2, 2**n)).astype(np.float32)
    i_and = it.harsanyi(v)
    np.testing.assert_allclose(it.shapley_interaction_index(i_and, order), naive_sii(v, order), atol=1e-5)
    np.testing.assert_allclose(it.banzhaf_interaction_index(i_and, order), naive_bii(v, order), atol=1e-5)


def test_large_n_exact():
    # n = 16 with integer values in [-2, 2]: dividends stay below 2^17, so float32 is exact end to end.
    v = np.random.default_rng(0).integers(-2, 3, size=2**16).astype(np.float32)
    i = it.harsanyi(v)
    np.testing.assert_array_equal(it.harsanyi_inverse(i), v)
    full = 2**16 - 1
    np.testing.assert_allclose(i[full], sum((-1) ** (16 - popcount(t)) * float(v[t]) for t in range(2**16)))


def test_error_too_many_players():
    with pytest.raises(ValueError, match="At most 30 players"):
        it.subset_masks(31)
    with pytest.raises(ValueError, match="At most 30 players"):
        it.harsanyi(np.broadcast_to(np.float32(0), (2**31,)))  # a view: no memory is used


def test_error_not_power_of_two():
    with pytest.raises(ValueError, match="not a power of two"):
        it.harsanyi(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="not a power of two"):
        it.or_interactions(np.zeros(12))
    with pytest.raises(ValueError, match="not a power of two"):
        it.shapley_values(np.zeros(3))


def test_error_and_or_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        it.shapley_values(np.zeros(8), np.zeros(16))


def test_error_bad_order():
    with pytest.raises(ValueError, match="order must be an integer between 0 and n = 3"):
        it.shapley_interaction_index(np.zeros(8), 4)
