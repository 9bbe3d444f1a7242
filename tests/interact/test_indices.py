"""shapiq's indices (k-SII, STII, FSII, FBII, Co-Moebius, SII, BII) from the dividends, against brute-force
definitions on the game values, against a transcription of shapiq's ExactComputer, and against shapiq itself
where it is installed. The order cap against the dense transforms on games of bounded order.

Transcribed from mmschlk/shapiq @ 12ec287: src/shapiq/game_theory/exact.py (ExactComputer.base_interaction,
compute_stii, compute_fii, _base_weights, _stii_weight, _get_fii_weights) and
src/shapiq/game_theory/aggregation.py (aggregate_base_attributions, for k-SII). Coalitions are tuples;
game values are looked up through our subset index (bit i <-> player i).
"""

import itertools
import math

import jax
import numpy as np
import pytest
from scipy.special import bernoulli, binom

import interact as it


def powerset(items, min_size=0, max_size=None):
    items = sorted(items)
    max_size = len(items) if max_size is None else min(max_size, len(items))
    return itertools.chain.from_iterable(
        itertools.combinations(items, k) for k in range(min_size, max_size + 1)
    )


def bits(coalition):
    return sum(1 << i for i in coalition)


class Exact:
    """shapiq's ExactComputer, the parts that compute our indices (float64 numpy, dict lookups)."""

    def __init__(self, v, n):
        self.v, self.n, self.grand = v, n, set(range(n))
        self.big_M = 10e7

    def game(self, coalition):
        return self.v[bits(coalition)]

    def base_weight(self, coalition_size, interaction_size, index):
        n = self.n
        if index == "SII":
            return 1 / ((n - interaction_size + 1) * binom(n - interaction_size, coalition_size))
        if index == "BII":
            return 1 / (2 ** (n - interaction_size))
        if index == "Co-Moebius":
            return 1.0 if coalition_size == n - interaction_size else 0.0
        raise AssertionError(index)

    def base_interaction(self, index, order):
        out = {}
        for interaction in powerset(self.grand, max_size=order):
            out[interaction] = 0.0
        for coalition in powerset(self.grand):
            val = self.game(coalition)
            for interaction in out:
                cap = len(set(coalition) & set(interaction))
                w = self.base_weight(len(coalition) - cap, len(interaction), index)
                out[interaction] += (-1) ** (len(interaction) - cap) * w * val
        return out

    def k_sii(self, order):
        sii = self.base_interaction("SII", order)
        bern = bernoulli(order)
        out = {(): self.game(())}
        for base, value in sii.items():
            for interaction in powerset(base, min_size=1, max_size=order):
                out[interaction] = out.get(interaction, 0) + float(bern[len(base) - len(interaction)]) * value
        return out

    def derivative(self, interaction, coalition):
        return sum((-1) ** (len(interaction) - len(sub)) * self.game(tuple(sorted(set(coalition) | set(sub))))
                   for sub in powerset(interaction))  # fmt: skip

    def stii(self, order):
        n = self.n
        out = {(): self.game(())}
        for interaction in powerset(self.grand, max_size=order - 1):
            out[interaction] = self.derivative(interaction, ())
        weights = [order / (n * binom(n - 1, t)) for t in range(n - order + 1)]
        for interaction in powerset(self.grand, min_size=order, max_size=order):
            out[interaction] = 0.0
            for coalition in powerset(self.grand):
                cap = len(set(coalition) & set(interaction))
                out[interaction] += (
                    (-1) ** (order - cap) * weights[len(coalition) - cap] * self.game(coalition)
                )
        return out

    def fii(self, index, order):
        n = self.n
        if index == "FSII":
            w = np.array(
                [self.big_M] + [1 / ((n - 1) * binom(n - 2, s - 1)) for s in range(1, n)] + [self.big_M]
            )
        else:
            w = np.full(n + 1, 2.0**-n)
        interactions = list(powerset(self.grand, max_size=order))
        lookup = {c: i for i, c in enumerate(interactions)}
        coalitions = list(powerset(self.grand))
        mat = np.zeros((len(coalitions), len(interactions)))
        lsw = np.zeros(len(coalitions))
        for r, coalition in enumerate(coalitions):
            lsw[r] = w[len(coalition)]
            for interaction in powerset(coalition, max_size=order):
                mat[r, lookup[interaction]] = 1
        sqrt_w = np.sqrt(np.diag(lsw))
        resp = np.array([self.game(c) for c in coalitions]) - self.game(())
        vals = np.linalg.lstsq(sqrt_w @ mat, resp @ sqrt_w, rcond=None)[0]
        vals[0] = self.game(()) if index == "FSII" else vals[0] + self.game(())
        return dict(zip(interactions, vals, strict=True))

    def __call__(self, index, order):
        if index == "k-SII":
            return self.k_sii(order)
        if index == "STII":
            return self.stii(order)
        if index in ("FSII", "FBII"):
            return self.fii(index, order)
        out = self.base_interaction(index, order)
        # shapiq 1.4's InteractionValues (interaction_values._update_interactions_for_index): the baseline
        # v(empty) replaces the empty value of every index but SII, BII, FBII and BV; SII of order 1 is "SV".
        if index == "Co-Moebius" or (index == "SII" and order == 1):
            out[()] = self.game(())
        return out


def as_dict(values, n, order):
    return {c: float(values[bits(c)]) for c in powerset(range(n), max_size=order)}


def fsii_constrained(v, n, order):
    """FSII by its definition: the Shapley-kernel weighted least squares over 0 < |T| < n with v(empty) and v(N)
    matched exactly (solved through the KKT system), the empty set set to v(empty)."""
    interactions = list(powerset(range(n), max_size=order))[1:]  # the intercept is fixed to v(empty)
    rows = list(powerset(range(n)))
    a = np.array([[float(set(i) <= set(c)) for i in interactions] for c in rows])
    y = np.array([v[bits(c)] for c in rows]) - v[0]
    w = np.array([0.0 if len(c) in (0, n) else 1 / ((n - 1) * binom(n - 2, len(c) - 1)) for c in rows])
    full = a[-1:]  # v(N) - v(empty) = sum of all interactions
    kkt = np.block([[a.T @ (w[:, None] * a), full.T], [full, np.zeros((1, 1))]])
    rhs = np.concatenate([a.T @ (w * y), y[-1:]])
    sol = np.linalg.solve(kkt, rhs)[: len(interactions)]
    out = {(): v[0]}
    out.update(zip(interactions, sol, strict=True))
    return out


def close(ours: dict, ref: dict, atol):
    assert set(ours) == set(ref)
    diff = max(abs(ours[c] - ref[c]) for c in ref)
    assert diff <= atol, diff


CASES = [("k-SII", 2), ("k-SII", 3), ("STII", 2), ("STII", 3), ("FBII", 2), ("FBII", 3), ("FSII", 2),
         ("Co-Moebius", 2), ("Co-Moebius", 6), ("SII", 1), ("SII", 2), ("BII", 1), ("BII", 3)]  # fmt: skip


@pytest.mark.parametrize("index,order", CASES)
def test_indices_match_shapiq_exact_computer(index, order):
    n = 6
    v = np.random.default_rng(order).normal(size=2**n)
    with jax.enable_x64(True):
        ours = as_dict(np.asarray(it.interaction_index(it.harsanyi(v), index, order)), n, order)
    ref = Exact(v, n)(index, order)
    # FSII: shapiq puts a 1e8 weight on v(empty) and v(N) instead of the constraint, so it is within ~1e-7 of
    # the exact value; the exact constrained least squares matches to 1e-9 below.
    close(ours, ref, 1e-6 if index == "FSII" else 1e-9)
    if index == "FSII":
        close(ours, fsii_constrained(v, n, order), 1e-9)


def brute_force(v, n, index, order):
    """The indices by their textbook definitions on the game values (discrete derivatives)."""

    def deriv(s, t):  # Delta_S v(T), T disjoint from S
        return sum((-1) ** (len(s) - len(l)) * v[bits(t) | bits(l)] for l in powerset(s))

    out = {}
    for s in powerset(range(n), max_size=order):
        rest = set(range(n)) - set(s)
        if index == "Co-Moebius":  # Delta_S v(N minus S); the empty slot holds v(empty) (shapiq's baseline)
            out[s] = deriv(s, tuple(rest)) if s else v[0]
        elif index == "STII":
            if len(s) < order:
                out[s] = deriv(s, ())
            else:  # Sundararajan et al.: (k / n) sum_T Delta_S v(T) / C(n - 1, |T|)
                out[s] = order / n * sum(deriv(s, t) / binom(n - 1, len(t)) for t in powerset(rest))
        elif index == "SII":
            out[s] = sum(math.factorial(n - len(t) - len(s)) * math.factorial(len(t)) / math.factorial(n - len(s) + 1)
                         * deriv(s, t) for t in powerset(rest))  # fmt: skip
    return out


@pytest.mark.parametrize("index,order", [("Co-Moebius", 3), ("STII", 2), ("STII", 3), ("SII", 2)])
def test_indices_match_their_definitions(index, order):
    n = 5
    v = np.random.default_rng(7).normal(size=2**n)
    with jax.enable_x64(True):
        ours = as_dict(np.asarray(it.interaction_index(it.harsanyi(v), index, order)), n, order)
    close(ours, brute_force(v, n, index, order), 1e-9)


def test_k_sii_is_efficient_and_full_order_is_moebius():
    n = 7
    v = np.random.default_rng(3).normal(size=(2, 2**n))
    with jax.enable_x64(True):
        m = it.harsanyi(v)
        for index in ("k-SII", "STII", "FSII", "FBII"):
            full = np.asarray(it.interaction_index(m, index, n))
            np.testing.assert_allclose(full, np.asarray(m), atol=1e-10)  # order n: the dividends themselves
        for k in (1, 2, 3):
            for index in ("k-SII", "STII", "FSII"):  # efficient: the non-empty values sum to v(N) - v(empty)
                vals = np.asarray(it.interaction_index(m, index, k))
                np.testing.assert_allclose(vals[:, 1:].sum(-1), v[:, -1] - v[:, 0], atol=1e-10)
        sv = np.asarray(it.interaction_index(m, "k-SII", 1))[:, 1 << np.arange(n)]
        np.testing.assert_allclose(sv, it.shapley_values(m), atol=1e-10)
        bv = np.asarray(it.interaction_index(m, "FBII", 1))[:, 1 << np.arange(n)]
        np.testing.assert_allclose(bv, it.banzhaf_values(m), atol=1e-10)
        # Co-Moebius and OR interactions: I_or(S) = -(-1)^{|S|} CoMoebius(S) for S non-empty.
        co = np.asarray(it.interaction_index(m, "Co-Moebius", n))
        sign = (-1.0) ** it.subset_sizes(n)
        np.testing.assert_allclose(np.asarray(it.or_interactions(v))[:, 1:], -(sign * co)[:, 1:], atol=1e-10)


@pytest.mark.parametrize("n", [11, 12])
@pytest.mark.slow
def test_indices_match_shapiq_transcription_at_12_players(n):
    """The claim at n <= 12, on the indices whose transcription stays cheap there (Co-Moebius, STII, FBII)."""
    v = np.random.default_rng(n).normal(size=2**n)
    with jax.enable_x64(True):
        m = it.harsanyi(v)
        for index, order in (("STII", 2), ("FBII", 2)):
            ours = as_dict(np.asarray(it.interaction_index(m, index, order)), n, order)
            close(ours, Exact(v, n)(index, order), 1e-9)


def shapiq_errors(shapiq, v, n, cases):
    """Max |ours - shapiq| per (index, order) of shapiq's ExactComputer on the game v [2^n] (float64)."""
    computer = shapiq.ExactComputer(lambda c: v[(c.astype(np.int64) << np.arange(n)).sum(axis=1)],
                                    n_players=n, evaluate_game=True)  # fmt: skip
    errors = {}
    with jax.enable_x64(True):
        m = it.harsanyi(v)
        for index, order in cases:
            res = computer(index, order)
            ours = np.asarray(it.interaction_index(m, index, order))
            # shapiq's Moebius ignores the order (it returns every coalition): compare up to the order
            pairs = [(c, pos) for c, pos in res.interaction_lookup.items() if len(c) <= order]
            assert len(pairs) == sum(math.comb(n, j) for j in range(order + 1)), (index, order)
            errors[index, order] = max(abs(ours[bits(c)] - res.values[pos]) for c, pos in pairs)
    return errors


def test_against_shapiq_where_installed():
    shapiq = pytest.importorskip("shapiq")
    n = 6
    v = np.random.default_rng(0).normal(size=2**n)
    for (index, order), err in shapiq_errors(shapiq, v, n, [*CASES, ("Moebius", 2), ("Moebius", 6)]).items():
        # FSII: shapiq fits it with a 1e7 penalty instead of the constraints (see interact.indices)
        assert err <= (1e-6 if index == "FSII" else 1e-9), (index, order, err)


@pytest.mark.slow
def test_against_shapiq_at_12_players_where_installed():
    """The claim at n = 12 (order 2; shapiq's Python loops take ~1 min for the five indices)."""
    shapiq = pytest.importorskip("shapiq")
    n = 12
    v = np.random.default_rng(12).normal(size=2**n)
    cases = [("k-SII", 2), ("STII", 2), ("FSII", 2), ("FBII", 2), ("Co-Moebius", 2)]
    for (index, order), err in shapiq_errors(shapiq, v, n, cases).items():
        assert err <= (1e-6 if index == "FSII" else 1e-9), (index, order, err)


def test_order_cap_matches_dense_on_a_game_of_bounded_order():
    n, big_k = 9, 3
    rng = np.random.default_rng(4)
    m = rng.normal(size=2**n) * (it.subset_sizes(n) <= big_k)  # a game of order 3
    with jax.enable_x64(True):
        v = np.asarray(it.harsanyi_inverse(m))
        masks = it.low_order_subsets(n, big_k)
        assert masks.shape == (sum(math.comb(n, j) for j in range(big_k + 1)), n)
        idx = (masks.astype(np.int64) << np.arange(n)).sum(1)
        low = it.harsanyi_low_order(v[idx], n, big_k)
        np.testing.assert_allclose(low, m[idx], atol=1e-10)
        for index, order in (
            ("k-SII", 2),
            ("STII", 2),
            ("FSII", 2),
            ("FBII", 3),
            ("SII", 1),
            ("Co-Moebius", 3),
        ):
            dense = np.asarray(it.interaction_index(it.harsanyi(v), index, order))[idx]
            capped = np.asarray(it.interaction_index_low_order(low, n, big_k, index, order))
            np.testing.assert_allclose(capped, dense, atol=1e-10)
    # The dividends are exact for any game, also where the game has higher orders.
    with jax.enable_x64(True):
        w = rng.normal(size=2**n)
        np.testing.assert_allclose(it.harsanyi_low_order(w[idx], n, big_k), np.asarray(it.harsanyi(w))[idx],
                                   atol=1e-10)  # fmt: skip


def test_order_cap_runs_where_2_to_the_n_does_not_fit():
    n, big_k = 40, 2  # 2^40 values would take 8 TiB
    masks = it.low_order_subsets(n, big_k)
    rng = np.random.default_rng(5)
    w1, w2 = rng.normal(size=n), rng.normal(size=(n, n))
    x = masks.astype(np.float64)
    v = x @ w1 + np.einsum("fi,ij,fj->f", x, np.triu(w2, 1), x)  # a game of order 2
    with jax.enable_x64(True):
        m = np.asarray(it.harsanyi_low_order(v, n, big_k))
        sv = np.asarray(it.interaction_index_low_order(m, n, big_k, "k-SII", 1))
    single = masks.sum(1) == 1
    pair = masks.sum(1) == 2
    np.testing.assert_allclose(m[single], w1, atol=1e-10)
    np.testing.assert_allclose(m[pair], np.triu(w2, 1)[np.triu_indices(n, 1)], atol=1e-10)
    # Shapley value of player i: w1_i + half of its pairs.
    expect = w1 + 0.5 * (np.triu(w2, 1).sum(1) + np.triu(w2, 1).sum(0))
    np.testing.assert_allclose(sv[single], expect, atol=1e-10)


def test_error_index_and_order():
    with pytest.raises(ValueError, match="index must be one of"):
        it.interaction_index(np.zeros(8), "SHAP", 1)
    with pytest.raises(ValueError, match="order must be an integer between 1 and n = 3"):
        it.interaction_index(np.zeros(8), "k-SII", 4)
    with pytest.raises(ValueError, match="last axis of 4 values"):
        it.harsanyi_low_order(np.zeros(5), 3, 1)
    with pytest.raises(ValueError, match="must not exceed max_order"):
        it.interaction_index_low_order(np.zeros(7), 3, 2, "k-SII", 3)


def test_index_compiles_once_per_index_order_and_shape():
    from interact.indices import _index_impl

    v = np.random.default_rng(8).normal(size=(3, 2**7)).astype(np.float32)
    m = it.harsanyi(v)
    it.interaction_index(m, "FBII", 2)
    before = _index_impl._cache_size()
    for _ in range(3):
        it.interaction_index(m + 1.0, "FBII", 2)
    assert _index_impl._cache_size() == before
