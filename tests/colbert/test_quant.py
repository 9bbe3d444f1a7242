"""Binary quantisation: packing, float-vs-bit and bit-vs-bit MaxSim against numpy loops over tokens."""

import jax.numpy as jnp
import numpy as np
import pytest

import colbert
from colbert.quant import ranking_agreement


def naive_bits(x):
    """[..., dim] -> [..., dim] of 0/1 ints, bit = x > 0 (no packing)."""
    return (np.asarray(x) > 0).astype(np.int64)


def naive_binary_maxsim(Q, bits, q_mask, d_mask, hamming=False):
    dim = bits.shape[-1]
    out = np.zeros((Q.shape[0], bits.shape[0]))
    for b in range(Q.shape[0]):
        for n in range(bits.shape[0]):
            valid = [j for j in range(bits.shape[1]) if d_mask[n, j]]
            if not valid:
                out[b, n] = -np.inf
                continue
            for i in range(Q.shape[1]):
                if not q_mask[b, i]:
                    continue
                if hamming:
                    qb = naive_bits(Q[b, i])
                    out[b, n] -= min(sum(int(qb[h] != bits[n, j, h]) for h in range(dim)) for j in valid)
                else:
                    out[b, n] += max(
                        sum(float(Q[b, i, h]) * (2 * bits[n, j, h] - 1) for h in range(dim)) / np.sqrt(dim)
                        for j in valid
                    )
    return out


def test_binarize_packs_sign_bits_32x_smaller():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    x[0, 0, :8] = [0, -0.0, 1, -1, 2, 0, 0, 3]  # x > 0: 0 and -0 are 0 bits
    packed = colbert.binarize(x)
    assert packed.dtype == jnp.uint8 and packed.shape == (3, 5, 8)
    assert x.nbytes == 32 * packed.nbytes
    assert int(packed[0, 0, 0]) == 0b00101001
    np.testing.assert_array_equal(colbert.unpack_bits(packed, jnp.int32), naive_bits(x))


@pytest.mark.parametrize("hamming", [False, True])
@pytest.mark.parametrize("b,lq,n,ld,dim,chunk", [(1, 3, 4, 5, 8, 128), (2, 4, 5, 6, 48, 2)])
def test_binary_scores_match_loops(hamming, b, lq, n, ld, dim, chunk):
    rng = np.random.default_rng(dim + n)
    Q = rng.standard_normal((b, lq, dim)).astype(np.float32)
    D = rng.standard_normal((n, ld, dim)).astype(np.float32)
    q_mask = rng.random((b, lq)) < 0.7
    q_mask[:, 0] = True
    d_mask = rng.random((n, ld)) < 0.6
    d_mask[0] = False  # empty document
    d_mask[1, 0] = True
    bits = naive_bits(D)
    if hamming:
        got = colbert.maxsim_hamming(
            colbert.binarize(Q), colbert.binarize(D), q_mask, d_mask, chunk_size=chunk
        )
    else:
        got = colbert.maxsim_binary(Q, colbert.binarize(D), q_mask, d_mask, chunk_size=chunk)
    assert got.shape == (b, n) and got.dtype == jnp.float32
    np.testing.assert_allclose(
        got, naive_binary_maxsim(Q, bits, q_mask, d_mask, hamming), rtol=1e-5, atol=1e-5
    )
    # unbatched query
    q0 = colbert.binarize(Q[0]) if hamming else Q[0]
    fn = colbert.maxsim_hamming if hamming else colbert.maxsim_binary
    np.testing.assert_allclose(fn(q0, colbert.binarize(D), q_mask[0], d_mask), got[0], rtol=1e-6)


def test_binary_all_negative_similarities_keep_the_true_max():
    # every doc bit is 0, so each token reads as -1/sqrt(dim); a positive query makes all dots negative.
    Q = np.ones((1, 2, 8), np.float32)
    D = -np.ones((2, 3, 8), np.float32)
    d_mask = np.array([[True, False, False], [True, True, True]])
    got = colbert.maxsim_binary(Q, colbert.binarize(D), None, d_mask)
    np.testing.assert_allclose(got, [[-2 * 8 / np.sqrt(8)] * 2], rtol=1e-6)


def test_binary_and_hamming_preserve_the_float_ranking():
    # clustered data: documents near the query's topic should stay on top after binarisation.
    rng = np.random.default_rng(5)
    dim, n = 64, 200
    topics = rng.standard_normal((20, dim))
    doc_topic = rng.integers(0, 20, n)
    D = topics[doc_topic][:, None, :] + 0.6 * rng.standard_normal((n, 8, dim))
    Q = topics[:4][:, None, :] + 0.6 * rng.standard_normal((4, 6, dim))
    D /= np.linalg.norm(D, axis=-1, keepdims=True)
    Q /= np.linalg.norm(Q, axis=-1, keepdims=True)
    D, Q = D.astype(np.float32), Q.astype(np.float32)
    ref = colbert.maxsim(Q, D)
    binary = ranking_agreement(ref, colbert.maxsim_binary(Q, colbert.binarize(D)), k=10)
    hamming = ranking_agreement(ref, colbert.maxsim_hamming(colbert.binarize(Q), colbert.binarize(D)), k=10)
    shuffled = ranking_agreement(ref, rng.permutation(np.asarray(ref).T).T, k=10)
    assert binary["spearman"] > 0.8 and hamming["spearman"] > 0.7 and shuffled["spearman"] < 0.3
    assert binary["overlap@10"] > 0.6 and hamming["overlap@10"] > 0.5


def test_ranking_agreement_hand_computed():
    ref = np.array([4.0, 3.0, 2.0, 1.0])
    got = ranking_agreement(ref, np.array([1.0, 2.0, 3.0, 4.0]), k=2)
    assert got == {"overlap@2": 0.0, "spearman": pytest.approx(-1.0)}
    assert ranking_agreement(ref, ref, k=2) == {"overlap@2": 1.0, "spearman": pytest.approx(1.0)}


def test_bad_input_messages():
    with pytest.raises(ValueError, match="multiple of 8"):
        colbert.binarize(np.ones((2, 12)))
    Q, Db = np.ones((3, 16), np.float32), np.zeros((4, 5, 2), np.uint8)
    with pytest.raises(ValueError, match="feature width 3 but Q has dim 16"):
        colbert.maxsim_binary(Q, np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="D_bits must be uint8"):
        colbert.maxsim_binary(Q, Db.astype(np.int32))
    with pytest.raises(ValueError, match="d_mask must have shape"):
        colbert.maxsim_binary(Q, Db, d_mask=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="Q_bits must be uint8"):
        colbert.maxsim_hamming(Q, Db)
    with pytest.raises(ValueError, match="q_mask must have shape"):
        colbert.maxsim_hamming(np.zeros((3, 2), np.uint8), Db, q_mask=np.ones(4, bool))
    with pytest.raises(ValueError, match="query dim that is a multiple of 8"):
        colbert.maxsim_binary(np.ones((3, 12)), Db)
