"""ColBERTv2 residual compression: k-means centroids plus an nbits-per-dimension bucketed residual.

Training (ColBERTv2 `collection_indexer.py`, `codecs/residual.py`):
- num_centroids defaults to 2^floor(log2(16 sqrt(num_embeddings))).
- k-means: k-means++ init, then jitted Lloyd iterations with squared-L2 assignment (faiss.Kmeans in
  ColBERT); the final centroids are L2-normalised, as in ColBERT. With a mesh, the embeddings are sharded
  over its "data" axis and XLA all-reduces the per-centroid sums.
- Buckets from heldout residuals r = x - c over all dimensions flattened:
  cutoffs = quantile(r, i / 2^b, i = 1..2^b - 1), weights = quantile(r, (i + 0.5) / 2^b, i = 0..2^b - 1).
Encoding: code = argmax_c <c, x> (int32), bucket = #cutoffs < r per dimension (torch.bucketize), packed
8 / nbits buckets per byte. Decoding: c[code] + weights[bucket], then re-normalised to unit length.
Storage per vector: 4 B (code) + dim * nbits / 8 B, e.g. 36 B at dim 128, nbits 2 (float32: 512 B).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "ResidualCodec",
    "default_num_centroids",
    "kmeans",
    "kmeans_plus_plus",
    "assign_nearest",
    "pack_nbits",
    "unpack_nbits",
]

NBITS = (1, 2, 4)


def default_num_centroids(num_embeddings: int) -> int:
    """ColBERTv2's centroid count: 2^floor(log2(16 sqrt(num_embeddings)))."""
    return 2 ** int(math.floor(math.log2(16 * math.sqrt(max(num_embeddings, 1)))))


def check_nbits(nbits):
    if nbits not in NBITS:
        raise ValueError(f"nbits must be one of {NBITS} (bits per residual dimension); got {nbits!r}.")


def _sq_dists(x, c):
    """||x - c||^2 up to the per-row constant ||x||^2: [n, dim], [K, dim] -> [n, K]."""
    return jnp.sum(c * c, axis=-1)[None, :] - 2.0 * x @ c.T


def _chunked_rows(fn, x, chunk: int):
    """fn([c, dim]) -> [c, ...] over row chunks of x [n, dim], one chunk in memory.

    The rows are split as [chunk, n / chunk] so that a block-sharded leading axis stays local: each lax.map
    step takes one row from every device's block (n is padded up to a multiple of chunk).
    """
    n = x.shape[0]
    if n <= chunk:
        return fn(x)
    steps = -(-n // chunk)
    xp = jnp.pad(x, [(0, steps * chunk - n)] + [(0, 0)] * (x.ndim - 1))
    xs = jnp.moveaxis(xp.reshape((chunk, steps) + x.shape[1:]), 1, 0)  # [steps, chunk, dim]
    out = jax.lax.map(fn, xs)  # [steps, chunk, ...]
    return jnp.moveaxis(out, 0, 1).reshape((steps * chunk,) + out.shape[2:])[:n]


@functools.partial(jax.jit, static_argnames=("chunk",))
def assign_nearest(x, centroids, chunk: int = 4096):
    """Index of the nearest centroid in squared L2 for each row: x [n, dim] -> int32 [n]."""
    return _chunked_rows(lambda xc: jnp.argmin(_sq_dists(xc, centroids), axis=-1).astype(jnp.int32), x, chunk)


@functools.partial(jax.jit, static_argnames=("k",))
def kmeans_plus_plus(x, weights, key, k: int):
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centroid is drawn with probability
    proportional to weight * squared distance to the nearest chosen one. x [n, dim], weights [n] (0 for
    padding rows) -> centroids [k, dim]."""
    first = jax.random.categorical(jax.random.fold_in(key, 0), jnp.log(weights))
    c0 = x[first]
    d2 = jnp.sum((x - c0) ** 2, axis=-1)
    cents = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(c0)

    def body(i, carry):
        cents, d2 = carry
        p = weights * d2
        logits = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)
        idx = jax.random.categorical(jax.random.fold_in(key, i), logits)
        c = x[idx]
        return cents.at[i].set(c), jnp.minimum(d2, jnp.sum((x - c) ** 2, axis=-1))

    cents, _ = jax.lax.fori_loop(1, k, body, (cents, d2))
    return cents


@functools.partial(jax.jit, static_argnames=("niters", "chunk"))
def _lloyd(x, weights, centroids, niters: int, chunk: int):
    k = centroids.shape[0]

    def step(_, c):
        a = assign_nearest(x, c, chunk)  # [n]
        sums = jax.ops.segment_sum(x * weights[:, None], a, num_segments=k)  # [K, dim]
        counts = jax.ops.segment_sum(weights, a, num_segments=k)  # [K]
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1e-12)[:, None], c)  # empty: keep

    return jax.lax.fori_loop(0, niters, step, centroids)


def kmeans(x, k: int, *, niters: int = 4, key=None, mesh=None, chunk: int = 4096, init_per_centroid: int = 8):
    """k-means++ init then `niters` Lloyd iterations (squared L2). x [n, dim] -> centroids [k, dim] float32.

    The k-means++ seeding is sequential in k (k passes over its points), so it runs on a random subset of
    at most init_per_centroid * k points (our choice, to keep CPU builds in seconds); Lloyd uses all of x.
    mesh: optional jax.sharding.Mesh with a "data" axis; the points are padded to a multiple of
    chunk * devices and sharded over it (padding rows carry weight 0).
    """
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(
            f"k-means needs 1 <= num_centroids <= number of points; got {k} centroids for {n} points."
        )
    key = jax.random.key(0) if key is None else key
    ndev = 1 if mesh is None else mesh.shape["data"]
    chunk = max(ndev, min(chunk, -(-n // ndev) * ndev) // ndev * ndev)
    padded = -(-n // chunk) * chunk
    w = np.zeros(padded, np.float32)
    w[:n] = 1.0
    xp = np.zeros((padded, x.shape[1]), np.float32)
    xp[:n] = x
    if mesh is not None:
        spec = jax.sharding.PartitionSpec("data")
        xp = jax.device_put(xp, jax.sharding.NamedSharding(mesh, spec))
        w = jax.device_put(w, jax.sharding.NamedSharding(mesh, spec))
    seed_pts = x[np.random.default_rng(0).permutation(n)[: min(n, init_per_centroid * k)]]
    init = kmeans_plus_plus(jnp.asarray(seed_pts), jnp.ones(len(seed_pts), jnp.float32), key, k)
    return _lloyd(xp, w, init, niters, chunk)


def pack_nbits(buckets, nbits: int):
    """[..., dim] integer buckets in [0, 2^nbits) -> [..., dim * nbits / 8] uint8, first value in the high bits."""
    per = 8 // nbits
    b = buckets.astype(jnp.uint8).reshape(buckets.shape[:-1] + (buckets.shape[-1] // per, per))
    shifts = (8 - nbits * (jnp.arange(per) + 1)).astype(jnp.uint8)
    return jnp.sum(b << shifts, axis=-1, dtype=jnp.uint8)  # disjoint bits: sum == bitwise or


def unpack_nbits(packed, nbits: int):
    """Inverse of pack_nbits: [..., nbytes] uint8 -> [..., nbytes * 8 / nbits] uint8 buckets."""
    per = 8 // nbits
    shifts = (8 - nbits * (jnp.arange(per) + 1)).astype(jnp.uint8)
    b = (packed[..., None] >> shifts) & jnp.uint8(2**nbits - 1)
    return b.reshape(packed.shape[:-1] + (packed.shape[-1] * per,))


@struct.dataclass
class ResidualCodec:
    """Centroids plus bucketed residuals (a pytree: pass it through jax.jit).

    centroids: float32 [K, dim], unit rows. cutoffs: float32 [2^nbits - 1]. weights: float32 [2^nbits].
    """

    centroids: jax.Array
    cutoffs: jax.Array
    weights: jax.Array
    nbits: int = struct.field(pytree_node=False, default=2)

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def num_centroids(self) -> int:
        return self.centroids.shape[0]

    @property
    def bytes_per_vector(self) -> int:
        """4 B int32 centroid id + dim * nbits / 8 B of packed residual."""
        return 4 + self.dim * self.nbits // 8

    @classmethod
    def train(
        cls,
        embeddings,
        *,
        nbits: int = 2,
        num_centroids: int | None = None,
        kmeans_niters: int = 4,
        max_points_per_centroid: int = 256,
        seed: int = 123,
        mesh=None,
    ) -> ResidualCodec:
        """Fits centroids and residual buckets to embeddings [n, dim] (unit-norm token vectors).

        k-means runs on a random sample of at most max_points_per_centroid * K points (faiss's default cap);
        the bucket quantiles come from a heldout 5% of the sample (at most 50k vectors, as ColBERTv2), or
        from the whole sample when that heldout would be under 16 vectors (our choice for tiny collections).
        """
        check_nbits(nbits)
        x = np.asarray(embeddings, np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(
                f"ResidualCodec.train needs embeddings [n, dim] with n >= 1; got shape {x.shape}."
            )
        if (x.shape[1] * nbits) % 8:
            raise ValueError(
                f"dim * nbits must be a multiple of 8 to pack residuals; got dim {x.shape[1]}, nbits {nbits}."
            )
        n = x.shape[0]
        k = default_num_centroids(n) if num_centroids is None else int(num_centroids)
        if not 1 <= k <= n:
            raise ValueError(f"num_centroids must be in [1, number of embeddings = {n}]; got {k}.")
        rng = np.random.default_rng(seed)
        sample = x[rng.permutation(n)[: min(n, max_points_per_centroid * k)]]
        heldout_n = min(50_000, int(0.05 * len(sample)))
        if heldout_n >= 16 and len(sample) - heldout_n >= k:
            train_x, heldout = sample[heldout_n:], sample[:heldout_n]
        else:
            train_x, heldout = sample, sample
        cents = kmeans(train_x, k, niters=kmeans_niters, key=jax.random.key(seed), mesh=mesh)
        cents = cents / jnp.maximum(jnp.linalg.norm(cents, axis=-1, keepdims=True), 1e-12)
        cents = jax.device_put(cents, jax.devices()[0]) if mesh is not None else cents
        return cls.fit_buckets(cents, heldout, nbits=nbits)

    @classmethod
    def fit_buckets(cls, centroids, heldout, *, nbits: int = 2) -> ResidualCodec:
        """A codec for given unit centroids [K, dim], with bucket cutoffs and weights from the residuals of
        heldout [n, dim] (all dimensions flattened). Lets one set of centroids serve several nbits."""
        check_nbits(nbits)
        cents = jnp.asarray(centroids, jnp.float32)
        heldout = jnp.asarray(heldout, jnp.float32)
        if heldout.ndim != 2 or heldout.shape[1] != cents.shape[1]:
            raise ValueError(
                f"heldout must be [n, {cents.shape[1]}] like the centroids; got {tuple(heldout.shape)}."
            )
        codes = nearest_codes(heldout, cents)
        resid = np.asarray(heldout - cents[codes]).ravel()
        levels = 2**nbits
        cutoffs = np.quantile(resid, np.arange(1, levels) / levels).astype(np.float32)
        weights = np.quantile(resid, (np.arange(levels) + 0.5) / levels).astype(np.float32)
        return cls(centroids=cents, cutoffs=jnp.asarray(cutoffs), weights=jnp.asarray(weights), nbits=nbits)

    def compress(self, x):
        """x [n, dim] -> (codes int32 [n], residuals uint8 [n, dim * nbits / 8])."""
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"compress expects embeddings [n, {self.dim}]; got shape {tuple(x.shape)}.")
        return _compress(self, x)

    def decompress(self, codes, residuals):
        """(codes [n], residuals [n, dim * nbits / 8]) -> unit-norm float32 [n, dim]."""
        return _decompress(self, jnp.asarray(codes), jnp.asarray(residuals))


@functools.partial(jax.jit, static_argnames=("chunk",))
def nearest_codes(x, centroids, chunk: int = 4096):
    """ColBERT's code: argmax_c <c, x> (= nearest unit centroid in L2): x [n, dim] -> int32 [n]."""
    return _chunked_rows(lambda xc: jnp.argmax(xc @ centroids.T, axis=-1).astype(jnp.int32), x, chunk)


@jax.jit
def _compress(codec: ResidualCodec, x):
    x = x.astype(jnp.float32)
    codes = nearest_codes(x, codec.centroids)  # [n]
    resid = x - codec.centroids[codes]  # [n, dim]
    buckets = jnp.sum(resid[..., None] > codec.cutoffs, axis=-1)  # [n, dim], torch.bucketize(right=False)
    return codes, pack_nbits(buckets, codec.nbits)


@jax.jit
def _decompress(codec: ResidualCodec, codes, residuals):
    return decompress_arrays(codec.centroids, codec.weights, codes, residuals, codec.nbits)


def decompress_arrays(centroids, weights, codes, residuals, nbits: int):
    """Pure decode: centroids[codes] + weights[buckets], re-normalised. codes [...], residuals [..., nbytes]."""
    x = centroids[codes] + weights[unpack_nbits(residuals, nbits).astype(jnp.int32)]
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
