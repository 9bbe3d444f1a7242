"""ResidualCodec and k-means against numpy references written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import colbert
from colbert.codec import (
    assign_nearest,
    default_num_centroids,
    kmeans,
    kmeans_plus_plus,
    pack_nbits,
    unpack_nbits,
)


def clustered(rng, n, dim, topics=12, noise=0.35):
    t = rng.standard_normal((topics, dim))
    x = t[rng.integers(0, topics, n)] + noise * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_pack_round_trip_and_layout(nbits):
    rng = np.random.default_rng(nbits)
    b = rng.integers(0, 2**nbits, (3, 16))
    packed = pack_nbits(jnp.asarray(b), nbits)
    assert packed.dtype == jnp.uint8 and packed.shape == (3, 16 * nbits // 8)
    per = 8 // nbits
    for i in range(3):  # first value in the high bits of each byte
        for j in range(packed.shape[1]):
            want = sum(int(b[i, j * per + t]) << (8 - nbits * (t + 1)) for t in range(per))
            assert int(packed[i, j]) == want
    np.testing.assert_array_equal(unpack_nbits(packed, nbits), b)


def test_assign_nearest_matches_loops():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 5)).astype(np.float32)
    c = rng.standard_normal((6, 5)).astype(np.float32)
    want = [int(np.argmin([np.sum((x[i] - c[j]) ** 2) for j in range(6)])) for i in range(37)]
    np.testing.assert_array_equal(assign_nearest(jnp.asarray(x), jnp.asarray(c), chunk=8), want)


def test_kmeans_plus_plus_picks_distinct_points_and_skips_zero_weight():
    x = np.array([[0.0, 0], [0, 0], [5, 5], [10, 0], [100, 100]], np.float32)
    w = np.array([1, 1, 1, 1, 0], np.float32)
    c = np.asarray(kmeans_plus_plus(jnp.asarray(x), jnp.asarray(w), jax.random.key(1), 3))
    rows = {tuple(r) for r in c.tolist()}
    assert rows == {(0.0, 0.0), (5.0, 5.0), (10.0, 0.0)}  # 3 distinct points of positive weight


def test_lloyd_step_matches_numpy():
    rng = np.random.default_rng(1)
    x = clustered(rng, 300, 8)
    got = np.asarray(kmeans(x, 5, niters=2, key=jax.random.key(3), chunk=64))
    init = np.asarray(kmeans(x, 5, niters=0, key=jax.random.key(3), chunk=64))
    c = init.astype(np.float64)
    for _ in range(2):  # naive Lloyd
        a = np.array([np.argmin(((c - p) ** 2).sum(-1)) for p in x])
        c = np.stack([x[a == j].mean(0) if np.any(a == j) else c[j] for j in range(5)])
    np.testing.assert_allclose(got, c, rtol=1e-5, atol=1e-5)


def test_sharded_kmeans_equals_single_device():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    x = clustered(np.random.default_rng(2), 500, 16)
    a = kmeans(x, 8, niters=3, key=jax.random.key(0), chunk=64)
    b = kmeans(x, 8, niters=3, key=jax.random.key(0), chunk=64, mesh=mesh)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_codec_round_trip_error_shrinks_with_nbits():
    rng = np.random.default_rng(3)
    x = clustered(rng, 1000, 32)
    cosines = []
    for nbits in (1, 2, 4):
        codec = colbert.ResidualCodec.train(x, nbits=nbits, num_centroids=16, seed=0)
        codes, resid = codec.compress(x)
        assert codes.dtype == jnp.int32 and resid.shape == (1000, 32 * nbits // 8)
        assert codec.bytes_per_vector == 4 + 32 * nbits // 8
        y = np.asarray(codec.decompress(codes, resid))
        np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 1.0, rtol=1e-5)
        # decode = normalise(centroid + weights[bucket]) by hand
        c = np.asarray(codec.centroids)
        b = np.asarray(unpack_nbits(resid, nbits))
        by_hand = c[np.asarray(codes)] + np.asarray(codec.weights)[b]
        by_hand /= np.linalg.norm(by_hand, axis=-1, keepdims=True)
        np.testing.assert_allclose(y, by_hand, rtol=1e-5, atol=1e-6)
        # the codes are the argmax centroid and buckets count the cutoffs below the residual
        np.testing.assert_array_equal(codes, np.argmax(x @ c.T, axis=-1))
        r = x - c[np.asarray(codes)]
        np.testing.assert_array_equal(b, (r[..., None] > np.asarray(codec.cutoffs)).sum(-1))
        cosines.append(float(np.mean(np.sum(x * y, -1))))
    assert cosines[0] < cosines[1] < cosines[2] and cosines[2] > 0.98, cosines
    np.testing.assert_allclose(np.linalg.norm(codec.centroids, axis=-1), 1.0, rtol=1e-5)


def test_bucket_quantiles_are_over_all_dimensions():
    x = clustered(np.random.default_rng(4), 300, 16)
    codec = colbert.ResidualCodec.train(x, nbits=2, num_centroids=4, seed=0)  # tiny: heldout = all
    r = (x - np.asarray(codec.centroids)[np.argmax(x @ np.asarray(codec.centroids).T, -1)]).ravel()
    np.testing.assert_allclose(codec.cutoffs, np.quantile(r, [0.25, 0.5, 0.75]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        codec.weights, np.quantile(r, [0.125, 0.375, 0.625, 0.875]), rtol=1e-5, atol=1e-6
    )


def test_fit_buckets_reuses_centroids():
    x = clustered(np.random.default_rng(4), 300, 16)
    codec = colbert.ResidualCodec.train(x, nbits=2, num_centroids=4, seed=0)
    again = colbert.ResidualCodec.fit_buckets(codec.centroids, x, nbits=2)
    np.testing.assert_array_equal(again.cutoffs, codec.cutoffs)
    one = colbert.ResidualCodec.fit_buckets(codec.centroids, x, nbits=1)
    assert one.nbits == 1 and one.cutoffs.shape == (1,) and one.weights.shape == (2,)
    with pytest.raises(ValueError, match=r"heldout must be \[n, 16\]"):
        colbert.ResidualCodec.fit_buckets(codec.centroids, x[:, :8])


def test_default_num_centroids():
    assert default_num_centroids(100_000) == 4096  # 16 sqrt(1e5) = 5059 -> 2^12
    assert default_num_centroids(1000) == 256


def test_bad_input_messages():
    x = np.ones((10, 8), np.float32)
    with pytest.raises(ValueError, match=r"nbits must be one of \(1, 2, 4\)"):
        colbert.ResidualCodec.train(x, nbits=3)
    with pytest.raises(ValueError, match="num_centroids must be in"):
        colbert.ResidualCodec.train(x, num_centroids=11)
    with pytest.raises(ValueError, match=r"needs embeddings \[n, dim\]"):
        colbert.ResidualCodec.train(np.ones(8))
    codec = colbert.ResidualCodec.train(clustered(np.random.default_rng(0), 40, 8), num_centroids=2)
    with pytest.raises(ValueError, match=r"compress expects embeddings \[n, 8\]"):
        codec.compress(np.ones((3, 4)))
