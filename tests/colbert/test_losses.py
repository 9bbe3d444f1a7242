"""colbert.losses against plain-numpy transcriptions of ColBERT's training.py, and finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colbert.losses import (
    colbert_loss,
    group_scores,
    inbatch_negative_cross_entropy,
    kl_distillation,
    nway_cross_entropy,
)


def np_maxsim(q, d, dmask):
    total = 0.0
    for i in range(q.shape[0]):
        total += max(float(q[i] @ d[j]) for j in range(d.shape[0]) if dmask[j])
    return total


def np_log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def np_nway_ce(scores):
    return sum(-np_log_softmax(list(r))[0] for r in scores) / len(scores)


def np_kl(scores, teacher, alpha=1.0, normalize=False):
    total = 0.0
    for s, t in zip(scores, teacher):
        s, t = list(s), [x * 1.0 for x in t]
        if normalize:
            s = [(x - min(s)) / (max(s) - min(s)) for x in s]
            t = [(x - min(t)) / (max(t) - min(t)) for x in t]
        ls, lt = np_log_softmax(s), np_log_softmax([alpha * x for x in t])
        total += sum(math.exp(b) * (b - a) for a, b in zip(ls, lt))
    return total / len(scores)


def np_ib_loss(all_scores, nway):
    """ColBERT compute_ib_loss: gather all but the query's own negatives, CE with label qidx * nway."""
    b, n = all_scores.shape
    flat = all_scores.reshape(-1)
    keep = [
        list(range(q * n, q * n + nway * q + 1)) + list(range(q * n + nway * (q + 1), q * n + n))
        for q in range(b)
    ]
    rows = [[flat[i] for i in idx] for idx in keep]
    return sum(-np_log_softmax(r)[q * nway] for q, r in enumerate(rows)) / b


def random_batch(rng, b, nway, lq=4, ld=6, dim=8, dtype=np.float32):
    Q = rng.normal(size=(b, lq, dim)).astype(dtype)
    D = rng.normal(size=(b * nway, ld, dim)).astype(dtype)
    dmask = rng.random((b * nway, ld)) < 0.7
    dmask[:, 0] = True
    return Q, D, dmask


@pytest.mark.parametrize("b,nway", [(1, 1), (3, 2), (2, 4)])
def test_group_scores_and_ce_match_numpy(b, nway):
    rng = np.random.default_rng(b * 10 + nway)
    Q, D, dmask = random_batch(rng, b, nway)
    scores = np.asarray(group_scores(jnp.asarray(Q), jnp.asarray(D), None, jnp.asarray(dmask), nway=nway))
    want = np.array(
        [[np_maxsim(Q[i], D[i * nway + j], dmask[i * nway + j]) for j in range(nway)] for i in range(b)]
    )
    np.testing.assert_allclose(scores, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(nway_cross_entropy(jnp.asarray(want)), np_nway_ce(want), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("alpha,normalize", [(1.0, False), (0.5, False), (2.0, True)])
def test_kl_distillation_matches_torch_formula(alpha, normalize):
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(4, 5)) * 3
    teacher = rng.normal(size=(4, 5)) * 5
    got = kl_distillation(
        jnp.asarray(scores, jnp.float32), jnp.asarray(teacher, jnp.float32), alpha, normalize
    )
    np.testing.assert_allclose(got, np_kl(scores, teacher, alpha, normalize), atol=1e-5, rtol=1e-5)
    same = kl_distillation(jnp.asarray(teacher), jnp.asarray(teacher))
    np.testing.assert_allclose(same, 0.0, atol=1e-6)


@pytest.mark.parametrize("b,nway", [(2, 1), (3, 2), (2, 3)])
def test_inbatch_negatives_match_colbert_gather(b, nway):
    rng = np.random.default_rng(b + 100 * nway)
    all_scores = rng.normal(size=(b, b * nway)) * 4
    got = inbatch_negative_cross_entropy(jnp.asarray(all_scores, jnp.float32), nway)
    np.testing.assert_allclose(got, np_ib_loss(all_scores, nway), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("teacher,ib", [(False, False), (True, True)])
def test_colbert_loss_matches_numpy(teacher, ib):
    b, nway = 2, 3
    rng = np.random.default_rng(11)
    Q, D, dmask = random_batch(rng, b, nway)
    t = rng.normal(size=(b, nway)).astype(np.float32) if teacher else None
    loss, metrics = colbert_loss(
        jnp.asarray(Q),
        jnp.asarray(D),
        None,
        jnp.asarray(dmask),
        nway=nway,
        teacher_scores=t,
        use_ib_negatives=ib,
    )
    scores = np.array(
        [[np_maxsim(Q[i], D[i * nway + j], dmask[i * nway + j]) for j in range(nway)] for i in range(b)]
    )
    want = np_kl(scores, t) if teacher else np_nway_ce(scores)
    if ib:
        all_scores = np.array([[np_maxsim(Q[i], D[j], dmask[j]) for j in range(b * nway)] for i in range(b)])
        want += np_ib_loss(all_scores, nway)
    np.testing.assert_allclose(loss, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(metrics["pos_score"], scores[:, 0].mean(), atol=1e-5, rtol=1e-5)


def test_colbert_loss_gradient_matches_finite_differences():
    b, nway = 2, 2
    rng = np.random.default_rng(12)
    Q, D, dmask = random_batch(rng, b, nway, dtype=np.float64)
    t = rng.normal(size=(b, nway))
    with jax.enable_x64(True):
        f = jax.jit(
            lambda q, d: colbert_loss(
                q, d, None, jnp.asarray(dmask), nway=nway, teacher_scores=t, use_ib_negatives=True
            )[0]
        )
        gq, gd = jax.jit(jax.grad(f, argnums=(0, 1)))(jnp.asarray(Q), jnp.asarray(D))
        dq, dd = rng.normal(size=Q.shape), rng.normal(size=D.shape)
        eps = 1e-6
        numeric = (f(Q + eps * dq, D + eps * dd) - f(Q - eps * dq, D - eps * dd)) / (2 * eps)
        analytic = jnp.vdot(gq, dq) + jnp.vdot(gd, dd)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
        assert float(jnp.abs(gd[~dmask]).max()) == 0.0  # masked doc tokens get no gradient


def test_scores_must_be_2d():
    with pytest.raises(ValueError, match=r"scores must be \[batch, nway\]"):
        nway_cross_entropy(jnp.zeros(4))


def test_teacher_shape_must_match():
    with pytest.raises(ValueError, match="teacher_scores must match scores"):
        kl_distillation(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_all_scores_shape_must_be_b_by_b_nway():
    with pytest.raises(ValueError, match=r"all_scores must be \[B, B \* nway\]"):
        inbatch_negative_cross_entropy(jnp.zeros((2, 5)), 2)


def test_documents_must_be_b_times_nway():
    with pytest.raises(ValueError, match="D must hold B \\* nway = 6 documents"):
        group_scores(jnp.zeros((2, 4, 8)), jnp.zeros((5, 6, 8)), nway=3)


def test_colbert_loss_rejects_bad_rank():
    with pytest.raises(ValueError, match=r"Q and D must be \[batch, length, dim\]"):
        colbert_loss(jnp.zeros((4, 8)), jnp.zeros((2, 6, 8)), nway=2)
