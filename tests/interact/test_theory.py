"""The noisy-triggering model against a direct least-squares solve, and the random-game spindle."""

import itertools

import jax
import numpy as np
import pytest

import interact as it


def popcount(m):
    return bin(m).count("1")


def triggering_matrix(n):
    """J[S, T] = 1(T subset of S): the triggering functions on every masked input."""
    return np.array([[float(t & s == t) for t in range(2**n)] for s in range(2**n)])


@pytest.mark.parametrize("n", [1, 3, 5])
def test_gram_matrix(n):
    j = triggering_matrix(n)
    np.testing.assert_array_equal(it.gram_matrix(n), j.T @ j)


@pytest.mark.parametrize("n,sigma2", [(2, 0.3), (3, 0.05), (4, 1e-3), (4, 0.0)])
def test_weights_match_least_squares(n, sigma2):
    # min_w E_eps mean_S (y_S - w.(J_S + eps))^2 = mean_S (y_S - w.J_S)^2 + sum_T c_T w_T^2 (eps is zero-mean,
    # independent): a ridge problem, solved here by stacking rows [J; sqrt(2^n c)] and lstsq.
    rng = np.random.default_rng(n)
    w_star = rng.normal(size=2**n)
    j = triggering_matrix(n)
    y = j @ w_star
    c = np.array([2.0 ** popcount(t) * sigma2 for t in range(2**n)])
    a = np.vstack([j, np.diag(np.sqrt(2**n * c))])
    ref = np.linalg.lstsq(a, np.concatenate([y, np.zeros(2**n)]), rcond=None)[0]
    with jax.enable_x64(True):
        ours = it.noisy_triggering_weights(w_star, sigma2)
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_noise_check_by_sampling():
    # The expected loss the formula minimises, by sampling the noise: its gradient vanishes at w_hat.
    n, sigma2 = 3, 0.1
    rng = np.random.default_rng(0)
    w_star = rng.normal(size=2**n)
    with jax.enable_x64(True):
        w_hat = np.asarray(it.noisy_triggering_weights(w_star, sigma2))
    j = triggering_matrix(n)
    std = np.sqrt([2.0 ** popcount(t) * sigma2 for t in range(2**n)])
    grad = np.zeros(2**n)
    draws = 20000
    eps = rng.normal(size=(draws, 2**n, 2**n)) * std  # [draw, S, T]
    feats = j[None] + eps
    resid = (j @ w_star)[None] - feats @ w_hat
    grad = -2 * np.einsum("ds,dst->t", resid, feats) / (draws * 2**n)
    assert np.abs(grad).max() < 0.05  # Monte Carlo error ~ 1/sqrt(draws); the gradient at w_star is ~1


def test_higher_orders_emerge_as_noise_shrinks():
    n = 6
    w_star = np.random.default_rng(1).normal(size=2**n)
    with jax.enable_x64(True):
        share = np.asarray(it.predicted_order_strength(w_star, [1.0, 0.1, 0.01, 1e-4]))
    assert share.shape == (4, n)
    np.testing.assert_allclose(share.sum(-1), 1.0, atol=1e-12)
    high = share[:, n // 2 :].sum(-1)  # share of orders above n/2
    assert np.all(np.diff(high) > 0)
    # With sigma^2 -> 0 the model recovers w*.
    with jax.enable_x64(True):
        np.testing.assert_allclose(it.noisy_triggering_weights(w_star, 1e-12), w_star, atol=1e-6)


def test_strength_by_order():
    i = np.random.default_rng(2).normal(size=(2, 32)).astype(np.float32)
    ours = it.strength_by_order(i)
    for b, k in itertools.product(range(2), range(1, 6)):
        ref = sum(abs(float(i[b, s])) for s in range(32) if popcount(s) == k)
        assert ours[b, k - 1] == pytest.approx(ref, rel=1e-5)


def test_random_game_is_a_spindle():
    n = 8
    expected = it.random_game_strength(n, scale=1.0)
    v = np.random.default_rng(3).normal(size=(4000, 2**n)).astype(np.float32)
    measured = np.asarray(it.strength_by_order(it.harsanyi(v))).mean(0)
    # 4000 draws: each order's mean has a relative standard error below 1%; allow 3%.
    np.testing.assert_allclose(measured, expected, rtol=0.03)
    peak = int(np.argmax(expected)) + 1
    assert 1 < peak < n  # medium orders dominate
    assert np.all(np.diff(expected[:peak]) > 0) and np.all(np.diff(expected[peak - 1 :]) < 0)


def test_error_sigma_negative():
    with pytest.raises(ValueError, match="sigma2 is a noise variance"):
        it.noisy_triggering_weights(np.zeros(4), -1.0)


def test_error_w_star_rank():
    with pytest.raises(ValueError, match="one vector"):
        it.noisy_triggering_weights(np.zeros((2, 4)), 0.1)


def test_error_theory_size_guard():
    with pytest.raises(ValueError, match="at most n = 12 players"):
        it.gram_matrix(16)
    with pytest.raises(ValueError, match="at most n = 12 players"):
        it.noisy_triggering_weights(np.zeros(2**13), 0.1)


def test_random_interaction_strength_is_binomial():
    s = it.random_interaction_strength(6)
    np.testing.assert_allclose(s / s.sum(), [6, 15, 20, 15, 6, 1] / np.float64(63))
