"""MaxSim, passage MaxSim and passage splitting against numpy loops over tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import colbert


def naive_maxsim(Q, D, q_mask, d_mask):
    """score[b, n] = sum over valid i of max over valid j of <Q[b, i], D[n, j]>; -inf for empty docs."""
    Q, D = np.asarray(Q, np.float64), np.asarray(D, np.float64)
    out = np.zeros((Q.shape[0], D.shape[0]))
    for b in range(Q.shape[0]):
        for n in range(D.shape[0]):
            valid = [j for j in range(D.shape[1]) if d_mask[n, j]]
            if not valid:
                out[b, n] = -np.inf
                continue
            total = 0.0
            for i in range(Q.shape[1]):
                if q_mask[b, i]:
                    total += max(float(Q[b, i] @ D[n, j]) for j in valid)
            out[b, n] = total
    return out


def ragged_masks(rng, b, lq, n, ld):
    q_mask = rng.random((b, lq)) < 0.7
    q_mask[:, 0] = True
    d_mask = np.zeros((n, ld), bool)
    for i in range(n):
        d_mask[i, : rng.integers(1, ld + 1)] = True
    d_mask[0] = rng.random(ld) < 0.5  # a non-prefix mask
    d_mask[0, -1] = True
    return q_mask, d_mask


@pytest.mark.parametrize(
    "b,lq,n,ld,dim,chunk_size", [(1, 4, 3, 5, 8, None), (2, 7, 6, 9, 16, 4), (3, 5, 11, 4, 32, 3)]
)
def test_maxsim_matches_loops(b, lq, n, ld, dim, chunk_size):
    rng = np.random.default_rng(b * 100 + n)
    Q = rng.standard_normal((b, lq, dim)).astype(np.float32)
    D = rng.standard_normal((n, ld, dim)).astype(np.float32)
    q_mask, d_mask = ragged_masks(rng, b, lq, n, ld)
    got = colbert.maxsim(Q, D, q_mask, d_mask, chunk_size=chunk_size)
    assert got.shape == (b, n) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, naive_maxsim(Q, D, q_mask, d_mask), rtol=1e-5, atol=1e-5)
    # unbatched query and no masks
    got1 = colbert.maxsim(Q[0], D, chunk_size=chunk_size)
    ref1 = naive_maxsim(Q[:1], D, np.ones((1, lq), bool), np.ones((n, ld), bool))[0]
    assert got1.shape == (n,)
    np.testing.assert_allclose(got1, ref1, rtol=1e-5, atol=1e-5)


def test_all_negative_similarities_and_empty_docs():
    rng = np.random.default_rng(0)
    Q = np.abs(rng.standard_normal((1, 3, 8))).astype(np.float32)
    D = -np.abs(rng.standard_normal((3, 5, 8))).astype(np.float32)  # every <q, d> < 0
    q_mask = np.array([[True, True, False]])
    d_mask = np.array([[True, True, False, False, False], [False] * 5, [True] * 5])
    got = np.asarray(colbert.maxsim(Q, D, q_mask, d_mask))
    ref = naive_maxsim(Q, D, q_mask, d_mask)
    assert np.all(got[0, [0, 2]] < 0)  # a zero-filled pad would have made these 0
    assert got[0, 1] == -np.inf
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_bf16_accumulates_in_float32():
    rng = np.random.default_rng(1)
    Q = jnp.asarray(rng.standard_normal((2, 6, 64)), jnp.bfloat16)
    D = jnp.asarray(rng.standard_normal((5, 7, 64)), jnp.bfloat16)
    got = colbert.maxsim(Q, D)
    assert got.dtype == jnp.float32
    ref = naive_maxsim(
        np.asarray(Q, np.float32), np.asarray(D, np.float32), np.ones((2, 6), bool), np.ones((5, 7), bool)
    )
    # products of bf16 values are exact in float32; only the float32 sum order differs.
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    Q = rng.standard_normal((2, 4, 6))
    D = rng.standard_normal((3, 5, 6))
    q_mask, d_mask = ragged_masks(rng, 2, 4, 3, 5)
    w = rng.standard_normal((2, 3))

    def loss(Q, D):
        return jnp.sum(w * colbert.maxsim(Q, D, q_mask, d_mask, chunk_size=2))

    with jax.enable_x64():
        gq, gd = jax.grad(loss, argnums=(0, 1))(jnp.asarray(Q), jnp.asarray(D))
        eps = 1e-6
        for _ in range(4):  # central differences along random directions of (Q, D): <grad, v>
            vq, vd = rng.standard_normal(Q.shape), rng.standard_normal(D.shape)
            fd = (loss(Q + eps * vq, D + eps * vd) - loss(Q - eps * vq, D - eps * vd)) / (2 * eps)
            np.testing.assert_allclose(np.sum(gq * vq) + np.sum(gd * vd), fd, rtol=1e-6, atol=1e-8)
        # and against the slow form: d score / d D[n, j] = sum of the q_i whose max is at j
        want = np.zeros_like(D)
        for b in range(2):
            for n in range(3):
                valid = np.flatnonzero(d_mask[n])
                for i in np.flatnonzero(q_mask[b]):
                    j = valid[np.argmax(D[n, valid] @ Q[b, i])]
                    want[n, j] += w[b, n] * Q[b, i]
        np.testing.assert_allclose(gd, want, rtol=1e-12, atol=1e-12)
    assert np.abs(np.asarray(gd)[~d_mask]).max() == 0  # padded doc tokens get no gradient


def test_gradient_is_finite_with_empty_document():
    Q = jnp.ones((2, 4))
    D = jnp.ones((2, 3, 4))
    d_mask = jnp.array([[True, False, False], [False, False, False]])
    g = jax.grad(lambda D: jnp.sum(jnp.where(jnp.isfinite(s := colbert.maxsim(Q, D, None, d_mask)), s, 0)))(D)
    assert np.all(np.isfinite(g))


def test_sharded_scoring_equals_single_device():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rng = np.random.default_rng(3)
    Q = rng.standard_normal((2, 5, 16)).astype(np.float32)
    D = rng.standard_normal((16, 6, 16)).astype(np.float32)
    q_mask, d_mask = ragged_masks(rng, 2, 5, 16, 6)
    ref = colbert.maxsim(Q, D, q_mask, d_mask)
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    Ds, ms = jax.device_put(D, spec), jax.device_put(d_mask, spec)
    got = colbert.maxsim(Q, Ds, q_mask, ms)
    assert len(got.sharding.device_set) == 8
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("b", [None, 2])
def test_maxsim_passages_matches_loops(b):
    rng = np.random.default_rng(4)
    n, p, ld, dim, lq = 4, 3, 5, 8, 4
    Q = rng.standard_normal((b or 1, lq, dim)).astype(np.float32)
    D = rng.standard_normal((n, p, ld, dim)).astype(np.float32)
    d_mask = rng.random((n, p, ld)) < 0.6
    d_mask[1, 1] = False  # an empty passage is ignored
    d_mask[2] = False  # a document with no valid passage
    q_mask = np.ones((b or 1, lq), bool)
    ref = np.full((b or 1, n), -np.inf)
    for i in range(p):
        ref = np.maximum(ref, naive_maxsim(Q, D[:, i], q_mask, d_mask[:, i]))
    got = colbert.maxsim_passages(Q if b else Q[0], D, q_mask if b else q_mask[0], d_mask)
    np.testing.assert_allclose(got, ref if b else ref[0], rtol=1e-5, atol=1e-5)


def test_split_passages_covers_the_sequence():
    tokens = np.arange(11)
    passages, mask = colbert.split_passages(tokens, passage_len=4, stride=3)
    np.testing.assert_array_equal(passages, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 10, 0, 0]])
    np.testing.assert_array_equal(mask.sum(1), [4, 4, 4, 2])
    p, m = colbert.split_passages(np.ones((3, 5)), passage_len=200)
    assert p.shape == (1, 200, 5) and m.sum() == 3
    p, m = colbert.split_passages(np.arange(400), passage_len=200)  # default stride 100
    assert p.shape == (3, 200) and p[1, 0] == 100 and m.all()


def test_pad_documents():
    docs = [np.ones((2, 3)), 2 * np.ones((4, 3))]
    D, mask = colbert.pad_documents(docs)
    assert D.shape == (2, 4, 3) and mask.sum(1).tolist() == [2, 4] and D[0, 2:].sum() == 0


def test_bad_input_messages():
    Q, D = np.zeros((4, 8)), np.zeros((3, 5, 8))
    with pytest.raises(ValueError, match="feature width 16 but Q has dim 8"):
        colbert.maxsim(Q, np.zeros((3, 5, 16)))
    with pytest.raises(ValueError, match="Q must be"):
        colbert.maxsim(np.zeros(8), D)
    with pytest.raises(ValueError, match=r"D must be \[N, Ld, dim\]"):
        colbert.maxsim(Q, np.zeros((5, 8)))
    with pytest.raises(ValueError, match="q_mask must have shape"):
        colbert.maxsim(Q, D, q_mask=np.ones(5, bool))
    with pytest.raises(ValueError, match="d_mask must have shape"):
        colbert.maxsim(Q, D, d_mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        colbert.maxsim(Q, D, chunk_size=0)
    with pytest.raises(ValueError, match=r"D must be \[N, P, Ld, dim\]"):
        colbert.maxsim_passages(Q, D)
    with pytest.raises(ValueError, match="stride must be in"):
        colbert.split_passages(np.arange(10), passage_len=4, stride=5)
    with pytest.raises(ValueError, match="document 1 has shape"):
        colbert.pad_documents([np.ones((2, 3)), np.ones((2, 4))])
