"""Salient sets, per-order strengths and the train/test Jaccard, against loops over subsets."""

import numpy as np
import pytest

import interact as it


def popcount(m):
    return bin(m).count("1")


def naive_strengths(i_and, i_or, threshold):
    n = len(i_and).bit_length() - 1
    tau = threshold * max(np.abs(i_and[1:]).max(), np.abs(i_or[1:]).max())  # the empty set is no interaction
    pos, neg = np.zeros(n), np.zeros(n)
    for part in (i_and, i_or):
        for s in range(1, 2**n):
            if abs(part[s]) >= tau:
                k = popcount(s) - 1
                pos[k] += max(part[s], 0.0)
                neg[k] += min(part[s], 0.0)
    return pos, neg


def naive_jaccard(tr_and, te_and, tr_or, te_or):
    n = tr_and.shape[1].bit_length() - 1
    out = []
    for k in range(1, n + 1):
        a, b = [], []
        for part_tr, part_te in ((tr_and, te_and), (tr_or, te_or)):
            for s in range(2**n):
                if popcount(s) == k:
                    a.append(part_tr[:, s].mean())
                    b.append(part_te[:, s].mean())
        a2 = np.concatenate([np.maximum(a, 0), np.maximum(-np.array(a), 0)])
        b2 = np.concatenate([np.maximum(b, 0), np.maximum(-np.array(b), 0)])
        out.append(np.minimum(a2, b2).sum() / np.maximum(a2, b2).sum())
    return np.array(out)


@pytest.mark.parametrize("n,threshold", [(3, 0.05), (6, 0.05), (6, 0.3), (8, 1.0)])
def test_order_strengths_match_loop(n, threshold):
    rng = np.random.default_rng(n)
    # Heavy-tailed interactions, so the threshold removes a real share of them.
    i_and, i_or = (rng.standard_t(2, size=(3, 2**n)).astype(np.float32) for _ in range(2))
    pos, neg = it.order_strengths(i_and, i_or, threshold=threshold)
    assert pos.shape == (3, n)
    for b in range(3):
        ref_pos, ref_neg = naive_strengths(i_and[b].astype(np.float64), i_or[b].astype(np.float64), threshold)
        np.testing.assert_allclose(pos[b], ref_pos, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(neg[b], ref_neg, atol=1e-5, rtol=1e-5)
    total_pos, total_neg = it.order_strengths(i_and, i_or, threshold=threshold, normalize="total")
    np.testing.assert_allclose((total_pos - total_neg).sum(-1), 1.0, atol=1e-5)
    max_pos, max_neg = it.order_strengths(i_and, i_or, threshold=threshold, normalize="max")
    np.testing.assert_allclose(np.maximum(max_pos, -max_neg).max(-1), 1.0, atol=1e-6)
    and_only, _ = it.order_strengths(i_and, threshold=threshold)
    ref, _ = naive_strengths(i_and[0].astype(np.float64), np.zeros(2**n), threshold)
    np.testing.assert_allclose(and_only[0], ref, atol=1e-5, rtol=1e-5)


def test_salient_mask():
    i_and = np.array([0.0, 1.0, -0.04, 0.06, 0.5, -2.0, 0.0, 0.09], np.float32)
    i_or = np.array([0.0, 0.0, 0.1, -0.11, 0.0, 0.0, 0.0, 0.0], np.float32)
    m_and, m_or = it.salient_mask(i_and, i_or, threshold=0.05)  # tau = 0.1
    assert m_and.tolist() == [False, True, False, False, True, True, False, False]
    assert m_or.tolist() == [False, False, True, True, False, False, False, False]
    assert it.salient_mask(i_and, threshold=1.0).tolist() == [False] * 5 + [True, False, False]


@pytest.mark.parametrize("n", [3, 6])
def test_jaccard_by_order_matches_loop(n):
    rng = np.random.default_rng(n)
    tr_and, tr_or = rng.normal(size=(2, 5, 2**n)).astype(np.float32)
    te_and, te_or = rng.normal(size=(2, 4, 2**n)).astype(np.float32)
    ours = it.jaccard_by_order(tr_and, te_and, tr_or, te_or)
    ref = naive_jaccard(*(a.astype(np.float64) for a in (tr_and, te_and, tr_or, te_or)))
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(it.jaccard_by_order(tr_and, tr_and, tr_or, tr_or), 1.0, atol=1e-6)
    np.testing.assert_allclose(it.jaccard_by_order(tr_and, -tr_and, tr_or, -tr_or), 0.0, atol=1e-6)


def test_weighted_jaccard():
    a = np.array([1.0, -2.0, 0.0], np.float32)
    b = np.array([0.5, 1.0, -1.0], np.float32)
    # [1,0,0 | 0,2,0] vs [0.5,1,0 | 0,0,1]: min sums to 0.5, max to 1 + 1 + 2 + 1 = 5.
    assert float(it.weighted_jaccard(a, b)) == pytest.approx(0.1)
    assert float(it.weighted_jaccard(np.zeros(3), np.zeros(3))) == 1.0


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_error_threshold_outside_unit_interval(threshold):
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        it.order_strengths(np.zeros(8), threshold=threshold)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        it.salient_mask(np.zeros(8), threshold=threshold)


def test_error_normalize():
    with pytest.raises(ValueError, match="normalize must be None"):
        it.order_strengths(np.zeros(8), normalize="sum")


def test_error_jaccard_shapes():
    with pytest.raises(ValueError, match="same n"):
        it.jaccard_by_order(np.zeros((3, 8)), np.zeros((3, 16)))
    with pytest.raises(ValueError, match="not a power of two"):
        it.jaccard_by_order(np.zeros((3, 6)), np.zeros((3, 6)))


def test_empty_set_is_not_salient_and_does_not_set_the_threshold():
    # A large output at the baseline (I(empty) = 100) would set tau = 5 and hide every interaction.
    i_and = np.array([100.0, 1.0, -0.04, 0.06, 0.5, -2.0, 0.0, 0.09], np.float32)
    m = it.salient_mask(i_and, threshold=0.05)  # tau = 0.05 * 2 = 0.1 over the non-empty S
    assert m.tolist() == [False, True, False, False, True, True, False, False]
    old = it.salient_mask(i_and, threshold=0.05, include_empty=True)  # tau = 5: only the empty set
    assert old.tolist() == [True] + [False] * 7
    pos, neg = it.order_strengths(i_and, threshold=0.05)
    np.testing.assert_allclose(pos, [1.5, 0.0, 0.0], atol=1e-6)  # subsets {0}: 1.0 and {2}: 0.5
    np.testing.assert_allclose(neg, [0.0, -2.0, 0.0], atol=1e-6)
    pos_old, neg_old = it.order_strengths(i_and, threshold=0.05, include_empty=True)
    np.testing.assert_array_equal(pos_old, 0.0)
    np.testing.assert_array_equal(neg_old, 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_order_strengths_non_finite(bad):
    i_and = np.ones(8, np.float32)
    i_and[3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        it.order_strengths(i_and)


def test_error_jaccard_without_samples():
    with pytest.raises(ValueError, match="at least one train and one test sample"):
        it.jaccard_by_order(np.zeros((3, 8)), np.zeros((0, 8)))
