"""The AND-OR decomposition: universal matching, the q bound, the optimiser against a numpy loop, baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import interact as it


def popcount(m):
    return bin(m).count("1")


def and_matrix(n):
    """A[S, T] = (-1)^{|S|-|T|} [T subset of S], so I_and = A v."""
    a = np.zeros((2**n, 2**n))
    for s in range(2**n):
        for t in range(2**n):
            if t & s == t:
                a[s, t] = (-1) ** (popcount(s) - popcount(t))
    return a


def or_matrix(n):
    """O[S, T] with I_or = O v: -(-1)^{|S|-|N minus T|} [N minus T subset of S] for S non-empty, [T empty] for S empty."""
    full = 2**n - 1
    o = np.zeros((2**n, 2**n))
    o[0, 0] = 1.0
    for s in range(1, 2**n):
        for t in range(2**n):
            c = full ^ t
            if c & s == c:
                o[s, t] = -((-1) ** (popcount(s) - popcount(c)))
    return o


def naive_matching(i_and, i_or, t):
    """The universal-matching sum for one subset T, by a loop over S."""
    total = i_and[0] + i_or[0]
    for s in range(1, len(i_and)):
        if s & t == s:
            total += i_and[s]
        if s & t:
            total += i_or[s]
    return total


def naive_extract(v, q_bound, steps, lr, momentum=0.9):
    """The lab's optimiser, step by step in float64 numpy with explicit transform matrices (steps - 1 updates:
    the lab's loop evaluates the loss `steps` times and updates after all but the last)."""
    n = v.shape[-1].bit_length() - 1
    a, o = and_matrix(n), or_matrix(n)
    p, q = np.zeros_like(v), np.zeros_like(v)
    bp, bq = np.zeros_like(v), np.zeros_like(v)
    bound = q_bound * abs(v[-1] - v[0])
    lrs = np.logspace(np.log10(lr), np.log10(lr) - 1, steps)
    for t in range(steps - 1):
        sa = np.sign(a @ (0.5 * (v + q) + p))
        so = np.sign(o @ (0.5 * (v + q) - p))
        gp = a.T @ sa - o.T @ so
        gq = 0.5 * (a.T @ sa + o.T @ so)
        bp, bq = momentum * bp + gp, momentum * bq + gq
        p = p - lrs[t] * bp
        q = np.clip(q - lrs[t] * bq, -bound, bound)
    return p, q


def test_lr_schedule_is_logspace():
    lrs = it.lr_schedule(1e-4, 5)
    np.testing.assert_allclose(lrs, [1e-4 * 10 ** (-i / 4) for i in range(5)], rtol=1e-12)


@pytest.mark.parametrize("n,steps", [(2, 15), (3, 40)])
def test_optimiser_matches_numpy_loop(n, steps):
    v = np.random.default_rng(n).normal(size=(2, 2**n))
    with jax.enable_x64(True):
        res = it.extract_and_or(v, q_bound=0.04, steps=steps, lr=1e-2, merge_singletons=False)
        for b in range(2):
            p, q = naive_extract(v[b], 0.04, steps, 1e-2)
            np.testing.assert_allclose(res.p[b], p, atol=1e-10)
            np.testing.assert_allclose(res.q[b], q, atol=1e-10)
            np.testing.assert_allclose(res.i_and[b], and_matrix(n) @ (0.5 * (v[b] + q) + p), atol=1e-10)
            np.testing.assert_allclose(res.i_or[b], or_matrix(n) @ (0.5 * (v[b] + q) - p), atol=1e-10)


@pytest.mark.parametrize("n,batch,merge", [(1, (), True), (4, (2, 2), False), (6, (2,), True)])
def test_universal_matching(n, batch, merge):
    v = np.random.default_rng(n).normal(size=batch + (2**n,)).astype(np.float32)
    res = it.extract_and_or(v, q_bound=0.04, steps=300, lr=1e-3, merge_singletons=merge)
    i_and, i_or, q = (np.asarray(a, np.float64).reshape(-1, 2**n) for a in (res.i_and, res.i_or, res.q))
    target = v.reshape(-1, 2**n).astype(np.float64) + q
    for b in range(target.shape[0]):
        for t in range(2**n):
            # float32 sums of up to 2^(n+1) terms of size ~1: 1e-5 relative to the largest |I| seen.
            scale = max(1.0, np.abs(i_and[b]).max(), np.abs(i_or[b]).max())
            assert abs(naive_matching(i_and[b], i_or[b], t) - target[b, t]) <= 1e-5 * scale
    np.testing.assert_allclose(it.and_or_to_game(res.i_and, res.i_or), v + res.q, atol=1e-5)


def test_q_bound_is_respected():
    v = np.random.default_rng(7).normal(size=(2, 64)).astype(np.float32)  # [2, 64]: shares one compile
    for q_bound in [0.0, 0.02, 0.5]:
        res = it.extract_and_or(v, q_bound=q_bound, steps=200, lr=1e-2)
        bound = q_bound * np.abs(v[:, -1] - v[:, 0])
        assert np.all(np.abs(res.q) <= bound[:, None] * (1 + 1e-6))
    assert np.abs(res.q).max() > 0  # the error is used when allowed


def test_merge_singletons():
    v = np.random.default_rng(8).normal(size=(2, 64)).astype(np.float32)
    raw = it.extract_and_or(v, steps=100, lr=1e-2, merge_singletons=False)
    merged = it.extract_and_or(v, steps=100, lr=1e-2, merge_singletons=True)
    low = np.broadcast_to(it.subset_sizes(6) <= 1, v.shape)
    np.testing.assert_allclose(merged.i_and[low], raw.i_and[low] + raw.i_or[low], atol=1e-6)
    np.testing.assert_array_equal(merged.i_or[low], 0.0)
    np.testing.assert_array_equal(merged.i_and[~low], raw.i_and[~low])


def test_recovers_a_pure_or_game():
    # v(T) = 1 if T meets {0, 1}: one OR interaction (L1 = 1) but three AND ones (L1 = 3).
    n = 3
    v = np.array([1.0 if t & 0b011 else 0.0 for t in range(2**n)], np.float32)
    res = it.extract_and_or(v, q_bound=0.0, steps=3000, lr=3e-3)
    assert float(res.loss) < 1.05
    assert abs(float(res.i_or[0b011]) - 1.0) < 0.05
    assert np.abs(res.i_and).max() < 0.05


def test_loss_drops_below_the_even_split():
    v = np.random.default_rng(9).normal(size=(2, 2**6)).astype(np.float32)
    start = 0.5 * (np.abs(it.harsanyi(v)).sum(-1) + np.abs(it.or_interactions(v)).sum(-1))
    res = it.extract_and_or(v, q_bound=0.04, steps=1000, lr=1e-3)
    assert res.loss.shape == (2,)
    assert np.all(res.loss < 0.8 * start)


def naive_baseline_l1(w, x, base):  # the variant's loss: the empty set left out
    """sum over non-empty S of |I_and(S)| for fn(x_S) = prod tanh(x_S @ w), by loops in float64."""
    n = len(x)
    v = []
    for t in range(2**n):
        xs = np.array([x[i] if t >> i & 1 else base[i] for i in range(n)])
        v.append(np.prod(np.tanh(xs @ w)))
    dividends = [sum((-1) ** popcount(s ^ t) * v[t] for t in range(2**n) if t & s == t) for s in range(2**n)]
    return sum(abs(d) for d in dividends[1:])


def test_learn_baseline_matches_numpy_loop():
    # SGD momentum with the logspace decay and the clamp, run in numpy with finite-difference gradients of
    # the naive L1, against ours (gradients through all 2^n model calls).
    rng = np.random.default_rng(10)
    w = rng.normal(size=(3, 3)).astype(np.float32)
    x = rng.normal(size=3).astype(np.float32)
    b0 = np.zeros(3, np.float32)
    steps, lr, bound = 12, 3e-2, 0.2
    b, losses = it.learn_baseline(
        lambda xs, w: jnp.tanh(xs @ w).prod(),
        x,
        b0,
        [[0], [1], [2]],
        steps=steps,
        lr=lr,
        bound=bound,
        fn_args=(w,),
        momentum=0.9,  # the variant: momentum, empty set left out (the default is the lab's, see
        include_empty=False,  # test_lab_transcription.py)
    )
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    ref, buf, ref_losses = np.zeros(3), np.zeros(3), []
    for lr_t in np.logspace(np.log10(lr), np.log10(lr) - 1, steps):
        ref_losses.append(naive_baseline_l1(w64, x64, ref))
        grad = np.zeros(3)
        for i in range(3):
            d = np.zeros(3)
            d[i] = 1e-6
            grad[i] = (naive_baseline_l1(w64, x64, ref + d) - naive_baseline_l1(w64, x64, ref - d)) / 2e-6
        buf = 0.9 * buf + grad
        ref = np.clip(ref - lr_t * buf, -bound, bound)
    np.testing.assert_allclose(losses, ref_losses, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(b, ref, atol=1e-5)
    assert losses[-1] < losses[0]
    assert np.abs(ref).max() == pytest.approx(bound)  # the clamp is active in this run


def test_error_v_not_power_of_two():
    with pytest.raises(ValueError, match="not a power of two"):
        it.extract_and_or(np.zeros((2, 24)), steps=1)


def test_error_negative_q_bound():
    with pytest.raises(ValueError, match="q_bound must be a non-negative"):
        it.extract_and_or(np.zeros(8), q_bound=-0.1, steps=1)


def test_error_negative_steps():
    with pytest.raises(ValueError, match="steps and lr must be non-negative"):
        it.extract_and_or(np.zeros(8), steps=-1)


def test_error_baseline_bound_negative():
    with pytest.raises(ValueError, match="bound must be non-negative"):
        it.learn_baseline(lambda xs: xs.sum(), np.zeros(2), np.zeros(2), [[0], [1]], bound=-1.0)


def test_no_recompile_across_steps_and_hyperparameters():
    from interact.andor import _extract

    v = np.random.default_rng(11).normal(size=(2, 64)).astype(np.float32)
    it.extract_and_or(v, steps=5, lr=1e-3)
    before = _extract._cache_size()
    for steps, lr, q_bound, merge in [(7, 1e-2, 0.02, True), (3, 1e-4, 0.1, False)]:
        it.extract_and_or(v, steps=steps, lr=lr, q_bound=q_bound, merge_singletons=merge)
    assert _extract._cache_size() == before


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_extract_non_finite_values(bad):
    v = np.zeros(8, np.float32)
    v[5] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        it.extract_and_or(v, steps=2)


@pytest.mark.parametrize("kwargs,match", [
    ({"lr": np.nan}, "lr must be a finite number"),
    ({"q_bound": np.nan}, "q_bound must be a non-negative"),
    ({"momentum": 1.0}, r"momentum must lie in \[0, 1\)"),
    ({"momentum": -0.1}, r"momentum must lie in \[0, 1\)"),
])  # fmt: skip
def test_error_extract_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        it.extract_and_or(np.zeros(8), steps=2, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"lr": np.nan}, "lr must be a finite number"),
    ({"bound": np.nan}, "bound must be non-negative"),
    ({"momentum": 1.5}, r"momentum must lie in \[0, 1\)"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
])  # fmt: skip
def test_error_learn_baseline_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        it.learn_baseline(lambda xs: xs.sum(), np.zeros(2), np.zeros(2), [[0], [1]], **kwargs)


def test_shapley_values_of_and_or_sum_to_the_matched_game():
    # The AND-OR dividends rebuild v + q, so efficiency holds for v + q, not for v (q != 0 here).
    v = np.random.default_rng(12).normal(size=(3, 2**5)).astype(np.float32)
    with jax.enable_x64(True):
        v64 = v.astype(np.float64)
        res = it.extract_and_or(v64, q_bound=0.1, steps=300, lr=1e-2)
        phi = np.asarray(it.shapley_values(res.i_and, res.i_or))
        g = v64 + np.asarray(res.q)
        np.testing.assert_allclose(phi.sum(-1), g[:, -1] - g[:, 0], atol=1e-10)
        assert np.abs(np.asarray(res.q)[:, [0, -1]]).max() > 1e-4  # q moves v(N) or v(empty): v alone fails
        assert np.abs(phi.sum(-1) - (v64[:, -1] - v64[:, 0])).max() > 1e-5


def test_shared_interactions_find_the_common_pattern():
    # Two models that share one AND interaction {0, 1} plus small model-specific noise: the shared pattern is
    # the strongest interaction of both, and universal matching holds for each model.
    n = 4
    rng = np.random.default_rng(13)
    shared = np.zeros(2**n)
    shared[0b0011] = 2.0
    v = np.stack([np.asarray(it.harsanyi_inverse(shared), np.float64) + 0.05 * rng.normal(size=2**n)
                  for _ in range(2)])  # fmt: skip
    with jax.enable_x64(True):
        res = it.extract_shared_and_or(v, q_bound=0.04, steps=500, lr=1e-3)
        assert res.i_and.shape == (2, 2**n) and res.p_share.shape == (2**n,)
        for m in range(2):
            strongest = int(np.argmax(np.abs(np.asarray(res.i_and[m]) + np.asarray(res.i_or[m]))))
            assert strongest == 0b0011
            rebuilt = it.and_or_to_game(res.i_and[m], res.i_or[m])
            np.testing.assert_allclose(rebuilt, v[m] + res.q[m], atol=1e-9)


def test_error_shared_inputs():
    with pytest.raises(ValueError, match="one value per model"):
        it.extract_shared_and_or(np.zeros((2, 8)), p_bound=[0.1, 0.2, 0.3], steps=2)
    with pytest.raises(ValueError, match="alpha weighs"):
        it.extract_shared_and_or(np.zeros((2, 8)), alpha=1.5, steps=2)
    with pytest.raises(ValueError, match=r"\[M, \.\.\., 2\^n\]"):
        it.extract_shared_and_or(np.zeros(8), steps=2)
