"""A PLAID-style late-interaction index: residual-compressed token vectors, an inverted file (IVF) from
centroid to documents, and PLAID's four-stage search (Santhanam et al. 2022, "PLAID").

Storage (packed, no padding): codes int32 [T], residuals uint8 [T, dim * nbits / 8], doclens [N],
offsets [N + 1] (document i owns tokens offsets[i]:offsets[i + 1]), and the IVF: ivf_pids (sorted unique
document ids per centroid, concatenated) with ivf_offsets [K + 1].

Search, for each query (ColBERT `search/candidate_generation.py`, `filter_pids.cpp`, `index_storage.py`):
  1. S = centroids . q_i for every query token [Lq, K]; the top-ncells centroids per query token, unioned,
     select IVF lists whose documents are the candidates.
  2. Pruned centroid interaction: only centroids with max_i S[i, c] >= centroid_score_threshold count;
     approx(d) = sum_i max over the document's kept codes of S[i, code]; keep the top ndocs.
  3. The same without pruning over those; keep the top ndocs / 4 (at least k).
  4. Decompress those documents and rank them by exact MaxSim; return the top k.
PLAID's defaults by k (ColBERT `searcher.py`, `plaid_defaults`): k <= 10 -> (ncells 1, threshold 0.5,
ndocs 256); k <= 100 -> (2, 0.45, 1024); otherwise (4, 0.4, max(4k, 4096)). `search` uses
`search_defaults`: (4, 0.4, 2048) for k <= 100 (more recall on real text, see there).
Steps 1 and 2-4 are jitted; the ragged IVF union (step 1's lookup) is numpy on the host.

Updating: `add` appends documents, `delete` removes them (their vectors and IVF entries go; ids of the
others stay, a deleted id keeps doclen 0), `search(..., allowed_ids=...)` searches a subset of ids,
`build_streaming` builds from an iterator of document batches in bounded memory, and
`Index.load(path, mmap=True)` memory-maps the arrays (one .npy file per array).
"""

from __future__ import annotations

import functools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from colbert.codec import ResidualCodec, check_nbits, decompress_arrays, default_num_centroids
from colbert.maxsim import map_chunks, pad_documents, reduce_maxsim

__all__ = ["Index", "plaid_defaults", "search_defaults", "index_num_centroids", "FORMAT_VERSION"]

FORMAT_VERSION = 2  # 1: one arrays.npz; 2: one .npy per array (memory-mappable)


def plaid_defaults(k: int) -> tuple[int, float, int]:
    """(ncells, centroid_score_threshold, ndocs) that ColBERT's Searcher uses for a given k."""
    if k <= 10:
        return 1, 0.5, 256
    if k <= 100:
        return 2, 0.45, 1024
    return 4, 0.4, max(4 * k, 4096)


def search_defaults(k: int) -> tuple[int, float, int]:
    """(ncells, centroid_score_threshold, ndocs) that `Index.search` uses: (4, 0.4, 2048) for k <= 100,
    PLAID's (4, 0.4, max(4k, 4096)) above. Tuned on 524k MiniLM vectors of the Python docs
    (benchmarks/colbert_maxsim.py): PLAID's k <= 10 setting (1, 0.5, 256) lost candidates in its centroid
    stages; more cells did not help, more ndocs (stages 3-4 keep ndocs / 4) did, at a latency still well
    under brute-force MaxSim."""
    return (4, 0.4, 2048) if k <= 100 else plaid_defaults(k)


def index_num_centroids(num_embeddings: int) -> int:
    """`Index.build`'s default centroid count: 2^floor(log2(2 sqrt(T))), ColBERTv2's count / 8 (2048 for
    1M vectors instead of 16384). On a CPU the build is dominated by assigning every vector to its nearest
    centroid (T x K x dim multiply-adds): ColBERT's count makes 1M vectors cost 4.2 TFLOP, this one 0.5."""
    return max(1, default_num_centroids(num_embeddings) // 8)


def _check_docs(docs, dim: int | None = None, what: str = "documents"):
    if isinstance(docs, np.ndarray | jax.Array) and np.ndim(docs) == 2:
        raise ValueError(
            "documents must be a list of [Ld, dim] arrays; got one 2-D array (wrap it in a list)."
        )
    docs = [np.asarray(d, np.float32) for d in docs]
    if not docs:
        raise ValueError("documents must be a non-empty list of [Ld, dim] arrays; got an empty list.")
    dim = docs[0].shape[-1] if dim is None else dim
    for i, d in enumerate(docs):
        if d.ndim != 2 or d.shape[0] < 1 or d.shape[1] != dim:
            raise ValueError(
                f"every document must be [Ld >= 1, dim = {dim}]; document {i} has shape {d.shape}."
            )
        if not np.all(np.isfinite(d)):
            raise ValueError(f"{what} must be finite; document {i} holds NaN or inf values.")
        norms = np.linalg.norm(d, axis=-1)
        if np.any(norms < 1e-6):
            raise ValueError(f"{what} must be unit-norm token vectors; document {i} holds a zero vector.")
        if np.any(
            np.abs(norms - 1) > 1e-3
        ):  # the index stores directions: normalise, as ColBERT's encoder does
            docs[i] = d / norms[:, None]
    return docs


def _check_query(Q, q_mask, dim: int):
    """Checks Q [Lq, dim] / [B, Lq, dim] and q_mask; returns (Q float32 [B, Lq, dim], mask [B, Lq], batched)."""
    qs = np.shape(Q)
    if len(qs) not in (2, 3) or qs[-1] != dim:
        raise ValueError(f"Q must be [Lq, {dim}] or [B, Lq, {dim}]; got shape {qs}.")
    if qs[-2] == 0:
        raise ValueError(f"Q must hold at least one query token; got shape {qs}.")
    Q = np.asarray(Q, np.float32)
    if not np.all(np.isfinite(Q)):
        raise ValueError("Q must be finite; the query vectors hold NaN or inf values.")
    if q_mask is not None and np.shape(q_mask) != qs[:-1]:
        raise ValueError(f"q_mask must have shape {qs[:-1]}; got {np.shape(q_mask)}.")
    batched = len(qs) == 3
    Qb = Q if batched else Q[None]
    qm = np.ones(Qb.shape[:2], bool) if q_mask is None else np.asarray(q_mask, bool).reshape(Qb.shape[:2])
    empty = np.flatnonzero(~qm.any(1))
    if empty.size:
        raise ValueError(f"q_mask must keep at least one token per query; query {int(empty[0])} keeps none.")
    return Qb, qm, batched


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def candidate_width(num_candidates: int, n1: int) -> int:
    """The padded candidate count stage 2 is compiled for: a power of two >= max(num_candidates, n1).

    With n1, n2 and k fixed by (k, ndocs), a stream of queries compiles at most log2(num_docs / n1) + 1
    shapes (see `Index.warmup`), not one per new candidate count."""
    return _next_pow2(max(num_candidates, n1, 1))


class _Compressor:
    """Compresses documents through one fixed-size buffer of batch_tokens vectors (one compile), keeping
    only the packed codes and residuals: feed(docs) any number of times, then finish()."""

    def __init__(self, codec: ResidualCodec, batch_tokens: int, on_flush=None):
        self.codec, self.on_flush = codec, on_flush
        self.buf = np.zeros((batch_tokens, codec.dim), np.float32)
        self.filled, self.codes, self.resid, self.lens = 0, [], [], []

    def _flush(self):
        c, r = self.codec.compress(self.buf)
        self.codes.append(np.asarray(c)[: self.filled])
        self.resid.append(np.asarray(r)[: self.filled])
        if self.on_flush is not None:
            self.on_flush(self.filled)
        self.filled = 0

    def feed(self, docs):
        size = len(self.buf)
        for d in docs:
            self.lens.append(d.shape[0])
            start = 0
            while start < d.shape[0]:
                take = min(size - self.filled, d.shape[0] - start)
                self.buf[self.filled : self.filled + take] = d[start : start + take]
                self.filled, start = self.filled + take, start + take
                if self.filled == size:
                    self._flush()

    def finish(self):
        if self.filled:
            self.buf[self.filled :] = 0
            self._flush()
        nbytes = self.codec.dim * self.codec.nbits // 8
        codes = np.concatenate(self.codes) if self.codes else np.zeros(0, np.int32)
        resid = np.concatenate(self.resid) if self.resid else np.zeros((0, nbytes), np.uint8)
        return codes, resid, np.asarray(self.lens, np.int32)


class Index:
    """Residual-compressed multi-vector index with PLAID search. Build with Index.build(docs)."""

    def __init__(self, codec: ResidualCodec):
        self.codec = codec
        nbytes = codec.dim * codec.nbits // 8
        self.codes = np.zeros(0, np.int32)  # [T]
        self.residuals = np.zeros((0, nbytes), np.uint8)  # [T, nbytes]
        self.doclens = np.zeros(0, np.int32)  # [N]
        self.offsets = np.zeros(1, np.int64)  # [N + 1]
        self.ivf_pids = np.zeros(0, np.int32)
        self.ivf_offsets = np.zeros(codec.num_centroids + 1, np.int64)
        self._device = None

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        doc_embeddings,
        *,
        nbits: int = 4,
        num_centroids: int | None = None,
        codec: ResidualCodec | None = None,
        kmeans_niters: int = 4,
        kmeans_points_per_centroid: int = 64,
        seed: int = 123,
        batch_tokens: int = 65536,
        mesh=None,
        progress: bool = True,
    ) -> Index:
        """Builds an index from a list of [Ld_i, dim] token-embedding arrays (unit-norm rows).

        nbits: residual bits per dimension, in {1, 2, 4}; default 4 (ColBERTv2 uses 2): on 262k MiniLM vectors
        of the Python docs, exhaustive MaxSim over 2-bit decompressed vectors keeps only 0.83 of the float
        top-10 (4 bits: 0.95), a ceiling no search setting can pass; 4 bits cost 68 B per vector instead of
        36 (float32: 512). num_centroids: None = `index_num_centroids`
        (2^floor(log2(2 sqrt(total tokens))), ColBERTv2's count / 8, for CPU build time; pass
        `colbert.codec.default_num_centroids(total)` for ColBERTv2's). codec: reuse a trained ResidualCodec
        (nbits/num_centroids are then ignored). The codec trains on the tokens of at most 16 sqrt(120 N)
        sampled documents (ColBERTv2's sample), k-means on at most kmeans_points_per_centroid * K of them
        (faiss caps at 256), then all documents are compressed in batches of batch_tokens vectors, so peak
        memory is the packed index plus one batch. mesh: shards k-means over its "data" axis.
        """
        docs = _check_docs(doc_embeddings)
        if codec is None:
            check_nbits(nbits)
            n = len(docs)
            total = sum(d.shape[0] for d in docs)
            take = np.random.default_rng(seed).permutation(n)[: min(n, int(16 * math.sqrt(120 * n)))]
            sample = np.concatenate([docs[i] for i in np.sort(take)])
            k = min(index_num_centroids(total), len(sample)) if num_centroids is None else num_centroids
            codec = ResidualCodec.train(
                sample, nbits=nbits, num_centroids=k, kmeans_niters=kmeans_niters, seed=seed, mesh=mesh,
                max_points_per_centroid=kmeans_points_per_centroid,
            )  # fmt: skip
        index = cls(codec)
        index.add(docs, batch_tokens=batch_tokens, progress=progress)
        return index

    @classmethod
    def build_streaming(
        cls,
        batches,
        *,
        nbits: int = 4,
        num_centroids: int | None = None,
        codec: ResidualCodec | None = None,
        sample_tokens: int = 1 << 18,
        expected_tokens: int | None = None,
        kmeans_niters: int = 4,
        kmeans_points_per_centroid: int = 64,
        seed: int = 123,
        batch_tokens: int = 65536,
        mesh=None,
        progress: bool = True,
    ) -> Index:
        """Builds an index from an iterable of document batches (each a list of [Ld, dim] arrays) in bounded
        memory: the packed index (about 4 + dim * nbits / 8 bytes per vector), the codec's training sample
        and one compression buffer; the float vectors of a batch are dropped once it is compressed.

        Without `codec`, the codec trains on the first batches, buffered until they hold `sample_tokens`
        vectors (a stream cannot be sampled uniformly in one pass: shuffle the stream if its order is
        topical); `num_centroids` None = `index_num_centroids` of `expected_tokens` vectors when given, else
        of the sample's size. Equals `Index.build(all documents, codec=index.codec)` (tested).
        """
        if codec is None:
            check_nbits(nbits)
        it = iter(batches)
        pending, seen = [], 0
        if codec is None:
            for batch in it:
                docs = _check_docs(batch)
                pending.append(docs)
                seen += sum(d.shape[0] for d in docs)
                if seen >= sample_tokens:
                    break
            if not pending:
                raise ValueError("build_streaming got no batches of documents; expected at least one batch.")
            sample = np.concatenate([d for docs in pending for d in docs])
            total = seen if expected_tokens is None else max(int(expected_tokens), 1)
            k = min(index_num_centroids(total), len(sample)) if num_centroids is None else num_centroids
            codec = ResidualCodec.train(
                sample, nbits=nbits, num_centroids=k, kmeans_niters=kmeans_niters, seed=seed, mesh=mesh,
                max_points_per_centroid=kmeans_points_per_centroid,
            )  # fmt: skip
            del sample
        index = cls(codec)
        comp = _Compressor(codec, batch_tokens)
        bar = tqdm(desc="compress", unit="tok", disable=not progress)
        for docs in pending:
            comp.feed(docs)
            bar.update(sum(d.shape[0] for d in docs))
        pending.clear()
        for batch in it:
            docs = _check_docs(batch, codec.dim)
            comp.feed(docs)
            bar.update(sum(d.shape[0] for d in docs))
        bar.close()
        codes, resid, lens = comp.finish()
        if not len(lens):
            raise ValueError("build_streaming got no batches of documents; expected at least one batch.")
        index._append(codes, resid, lens)
        return index

    def add(self, more_docs, *, batch_tokens: int = 65536, progress: bool = True) -> Index:
        """Appends documents (ids continue from len(self)) with the existing codec: no retraining and no
        re-compression of what is stored; only the IVF lists are merged. Returns self."""
        docs = _check_docs(more_docs, self.codec.dim)
        total = sum(d.shape[0] for d in docs)
        bar = tqdm(total=total, desc="compress", unit="tok", disable=not progress or total <= batch_tokens)
        comp = _Compressor(self.codec, batch_tokens, on_flush=bar.update)
        comp.feed(docs)
        self._append(*comp.finish())
        bar.close()
        return self

    def _append(self, new_codes, new_resid, lens):
        """Appends compressed documents (codes [T], residuals [T, nbytes], doclens [n]) and their IVF."""
        first_pid = self.num_docs
        self.codes = np.concatenate([self.codes, new_codes])
        self.residuals = np.concatenate([self.residuals, new_resid])
        self.doclens = np.concatenate([self.doclens, lens])
        self.offsets = np.concatenate([self.offsets, self.offsets[-1] + np.cumsum(lens, dtype=np.int64)])
        self._merge_ivf(new_codes, np.repeat(np.arange(first_pid, self.num_docs, dtype=np.int64), lens))
        self._device = None

    def delete(self, doc_ids) -> Index:
        """Removes documents: their vectors and IVF entries are dropped; the ids of the others do not change
        (a deleted id keeps a length of 0 and is never returned). Deleting a deleted id again is a no-op.
        Search results equal those of an index built from the remaining documents with the same codec
        (tested). Returns self."""
        ids = np.unique(np.asarray(doc_ids, np.int64).reshape(-1))
        if ids.size and (ids[0] < 0 or ids[-1] >= self.num_docs):
            raise ValueError(
                f"doc ids to delete must be in [0, {self.num_docs}); got values from {ids[0]} to {ids[-1]}."
            )
        dead = np.zeros(self.num_docs, bool)
        dead[ids] = True
        keep = ~np.repeat(dead, self.doclens)
        self.codes, self.residuals = self.codes[keep], self.residuals[keep]
        self.doclens = np.where(dead, 0, self.doclens).astype(np.int32)
        self.offsets = np.concatenate([[0], np.cumsum(self.doclens, dtype=np.int64)])
        owner = np.repeat(np.arange(self.codec.num_centroids), np.diff(self.ivf_offsets))
        live = ~dead[self.ivf_pids]
        self.ivf_pids = np.asarray(self.ivf_pids)[live]
        counts = np.bincount(owner[live], minlength=self.codec.num_centroids)
        self.ivf_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._device = None
        return self

    def _merge_ivf(self, codes, pids):
        """Adds (centroid, pid) pairs to the IVF, keeping each centroid's pids sorted and unique."""
        k = self.codec.num_centroids
        old_codes = np.repeat(np.arange(k, dtype=np.int64), np.diff(self.ivf_offsets))
        keys = np.concatenate(
            [old_codes * (1 << 32) + self.ivf_pids, codes.astype(np.int64) * (1 << 32) + pids]
        )
        keys = np.unique(keys)
        self.ivf_pids = (keys & ((1 << 32) - 1)).astype(np.int32)
        counts = np.bincount(keys >> 32, minlength=k)
        self.ivf_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    # ------------------------------------------------------------------------------------------- facts
    @property
    def num_docs(self) -> int:
        return len(self.doclens)

    def __len__(self) -> int:
        return self.num_docs

    @property
    def num_live(self) -> int:
        """Documents not deleted (num_docs counts every id ever added)."""
        return int(np.count_nonzero(self.doclens))

    @property
    def num_tokens(self) -> int:
        return len(self.codes)

    @property
    def bytes_per_vector(self) -> float:
        """Stored bytes per token vector: code + residual + its share of doclens/offsets/IVF."""
        total = self.codes.nbytes + self.residuals.nbytes + self.doclens.nbytes + self.offsets.nbytes
        total += self.ivf_pids.nbytes + self.ivf_offsets.nbytes
        return total / max(self.num_tokens, 1)

    def embeddings(self, doc_ids):
        """Decompressed, padded documents: (D float32 [len(ids), Lmax, dim], mask bool [len(ids), Lmax])."""
        ids = np.asarray(doc_ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_docs):
            raise ValueError(
                f"doc ids must be in [0, {self.num_docs}); got values from {ids.min()} to {ids.max()}."
            )
        dev = self._on_device()
        return _gather_decompress(dev, jnp.asarray(ids), self.codec.nbits, int(self.doclens.max()))

    def _on_device(self):
        if self._device is None:
            self._device = {
                "codes": jnp.asarray(self.codes),
                "residuals": jnp.asarray(self.residuals),
                "offsets": jnp.asarray(self.offsets[:-1].astype(np.int32)),
                "doclens": jnp.asarray(self.doclens),
                "centroids": self.codec.centroids,
                "weights": self.codec.weights,
            }
        return self._device

    # ------------------------------------------------------------------------------------------ search
    def search(
        self, Q, k: int = 10, *, q_mask=None, ncells=None, centroid_score_threshold=None, ndocs=None,
        allowed_ids=None,
    ):  # fmt: skip
        """PLAID search. Q: [Lq, dim] or [B, Lq, dim] (q_mask [Lq] / [B, Lq], True = real token).

        Tip: ColBERT-trained encoders score every query position ([MASK] expansion included, q_mask None);
        an encoder whose head was not trained for expansion (e.g. MiniLM with a fresh head) retrieves
        better with q_mask = the query's attention mask (`Encoder.tokenize_queries(texts)[1]`): on the
        Python-docs example that raised nDCG@10 from 0.66 to 0.74. Q must be finite; every query must keep
        at least one token. A stream of queries compiles once per candidate-width bucket; call
        `warmup(k, num_queries=B, query_len=Lq)` first to compile them all up front.

        Returns (doc_ids int32 [k], scores float32 [k]) best first (or [B, k]); scores are exact MaxSim of
        the decompressed documents. If fewer than k documents reach the last stage (e.g. ncells=1 on a tiny
        collection), the tail is padded with id -1 and score -inf.

        allowed_ids: restrict the search to these document ids (a sequence of ids or a bool mask [num_docs]):
        the result is that of an index holding only them (same codec), i.e. the candidates of step 1 are
        intersected with the subset before scoring.
        """
        if self.num_live == 0:
            raise ValueError("the index is empty: add documents (Index.build or index.add) before searching.")
        Qn, qm_np, batched = _check_query(Q, q_mask, self.codec.dim)
        if not 1 <= k <= self.num_docs:
            raise ValueError(
                f"k must be between 1 and the number of indexed documents ({self.num_docs}); got {k}."
            )
        if ndocs is not None and ndocs <= 0:
            raise ValueError(f"ndocs must be a positive number of candidates to keep; got {ndocs}.")
        if centroid_score_threshold is not None and not np.isfinite(centroid_score_threshold):
            raise ValueError(
                f"centroid_score_threshold must be a finite number; got {centroid_score_threshold}."
            )
        d_ncells, d_thr, d_ndocs = search_defaults(k)
        ncells = d_ncells if ncells is None else ncells
        thr = d_thr if centroid_score_threshold is None else centroid_score_threshold
        ndocs = d_ndocs if ndocs is None else ndocs
        if not 1 <= ncells <= self.codec.num_centroids:
            raise ValueError(
                f"ncells must be in [1, num_centroids = {self.codec.num_centroids}]; got {ncells}."
            )
        Qb, qm = jnp.asarray(Qn), jnp.asarray(qm_np)
        dev = self._on_device()

        # Stage 1: centroid scores and candidate generation (ragged IVF union on the host).
        S, cells = _centroid_scores(Qb, qm, dev["centroids"], ncells)  # [B, Lq, K], [B, Lq * ncells]
        cells = np.asarray(cells)
        cands = [self._ivf_union(c) for c in cells]
        if allowed_ids is not None:
            allowed = self._allowed_mask(allowed_ids)
            cands = [c[allowed[c]] for c in cands]
        n1 = min(max(ndocs, k), self.num_docs)
        n2 = min(n1, max(ndocs // 4, k))
        width = candidate_width(max(len(c) for c in cands), n1)
        cand = np.zeros((len(cands), width), np.int32)
        valid = np.zeros((len(cands), width), bool)
        for b, c in enumerate(cands):
            cand[b, : len(c)], valid[b, : len(c)] = c, True

        ids, scores = _plaid_stages(
            dev, S, qm, Qb, jnp.asarray(cand), jnp.asarray(valid), jnp.float32(thr),
            n1=n1, n2=n2, k=min(k, n2), nbits=self.codec.nbits, lmax=int(self.doclens.max()),
        )  # fmt: skip
        ids, scores = np.asarray(ids), np.asarray(scores)
        if ids.shape[1] < k:
            ids = np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - scores.shape[1])), constant_values=-np.inf)
        ids = np.where(np.isfinite(scores), ids, -1).astype(np.int32)
        return (ids, scores) if batched else (ids[0], scores[0])

    def _allowed_mask(self, allowed_ids) -> np.ndarray:
        a = np.asarray(allowed_ids)
        if a.dtype == bool:
            if a.shape != (self.num_docs,):
                raise ValueError(
                    f"allowed_ids as a bool mask must have shape ({self.num_docs},); got {a.shape}."
                )
            return a
        a = a.astype(np.int64).reshape(-1)
        if a.size and (a.min() < 0 or a.max() >= self.num_docs):
            raise ValueError(
                f"allowed_ids must be doc ids in [0, {self.num_docs}); got values from {a.min()} to {a.max()}."
            )
        mask = np.zeros(self.num_docs, bool)
        mask[a] = True
        return mask

    def warmup(
        self, k: int = 10, *, num_queries: int = 1, query_len: int = 32, ncells=None, ndocs=None
    ) -> int:
        """Compiles search for every candidate-width bucket of this (k, ndocs) and query shape, so that
        a stream of queries of that shape never compiles again. Returns the number of buckets."""
        d_ncells, thr, d_ndocs = search_defaults(k)
        ndocs = d_ndocs if ndocs is None else ndocs
        n1 = min(max(ndocs, k), self.num_docs)
        counts = [1 << i for i in range(self.num_docs.bit_length())] + [self.num_docs]
        widths = sorted({candidate_width(n, n1) for n in counts})
        Q = np.zeros((num_queries, query_len, self.codec.dim), np.float32)
        Q[..., 0] = 1.0
        dev = self._on_device()
        qm = jnp.ones(Q.shape[:2], bool)
        S, _ = _centroid_scores(jnp.asarray(Q), qm, dev["centroids"], ncells or d_ncells)
        n2 = min(n1, max(ndocs // 4, k))
        for width in widths:
            cand = jnp.zeros((num_queries, width), jnp.int32)
            jax.block_until_ready(_plaid_stages(
                dev, S, qm, jnp.asarray(Q), cand, jnp.zeros((num_queries, width), bool),
                jnp.float32(thr), n1=n1, n2=n2, k=min(k, n2), nbits=self.codec.nbits, lmax=int(self.doclens.max()),
            ))  # fmt: skip
        return len(widths)

    def _ivf_union(self, cells):
        cells = np.unique(cells)
        starts, ends = self.ivf_offsets[cells], self.ivf_offsets[cells + 1]
        if not np.any(ends > starts):
            return np.zeros(0, np.int32)
        lens = ends - starts
        idx = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
        return np.unique(self.ivf_pids[idx])

    # -------------------------------------------------------------------------------------- save, load
    def save(self, path) -> pathlib.Path:
        """Writes path/meta.json (format version, shapes) and one path/<array>.npy per array (centroids,
        cutoffs, weights, codes, residuals, doclens, offsets, ivf_pids, ivf_offsets), so that
        `Index.load(path, mmap=True)` can memory-map them."""
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": "jaxzoo.colbert.Index",
            "format_version": FORMAT_VERSION,
            "nbits": self.codec.nbits,
            "dim": self.codec.dim,
            "num_centroids": self.codec.num_centroids,
            "num_docs": self.num_docs,
            "num_tokens": self.num_tokens,
        }
        arrays = {
            "centroids": np.asarray(self.codec.centroids), "cutoffs": np.asarray(self.codec.cutoffs),
            "weights": np.asarray(self.codec.weights), "codes": self.codes, "residuals": self.residuals,
            "doclens": self.doclens, "offsets": self.offsets, "ivf_pids": self.ivf_pids,
            "ivf_offsets": self.ivf_offsets,
        }  # fmt: skip
        for name, array in arrays.items():
            np.save(path / f"{name}.npy", np.ascontiguousarray(array))
        (path / "meta.json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path, *, mmap: bool = False) -> Index:
        """Reads an index written by `save`, checking every array against the metadata (a ValueError names
        the file and the field: shapes, code and document-id ranges, offsets against lengths, nbits).

        mmap=True memory-maps the arrays read-only (`np.load(mmap_mode="r")`): loading reads only the
        pages the checks touch, and the OS pages the rest in on demand. Search copies codes and residuals
        to the device on its first call (on CPU: into memory); `add`/`delete` make in-memory copies.
        Folders of format version 1 (one arrays.npz) still load, without mmap.
        """
        path = pathlib.Path(path)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"no colbert index at {path}: expected {meta_file} and the array files.")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_file} is not valid JSON: {err}") from err
        if not isinstance(meta, dict):
            raise ValueError(f"{meta_file} must hold a JSON object; got {type(meta).__name__}.")
        version = meta.get("format_version")
        if version not in (1, FORMAT_VERSION):
            raise ValueError(
                f"index at {path} has format version {version!r}; this code reads versions 1 and "
                f"{FORMAT_VERSION}. Rebuild the index with this version."
            )
        for key in ("nbits", "dim", "num_centroids", "num_docs", "num_tokens"):
            if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool) or meta[key] < 0:
                raise ValueError(
                    f"{meta_file}: field {key!r} must be a non-negative int; got {meta.get(key)!r}."
                )
        if meta["nbits"] not in (1, 2, 4):
            raise ValueError(f"{meta_file}: field 'nbits' must be 1, 2 or 4; got {meta['nbits']}.")
        arrays = {}
        if version == 1:
            arrays_file = path / "arrays.npz"
            if not arrays_file.is_file():
                raise FileNotFoundError(f"no colbert index at {path}: expected {arrays_file}.")
            a = np.load(arrays_file)
            for name in _ARRAYS:
                if name not in a.files:
                    raise ValueError(f"{arrays_file} has no array {name!r}.")
                arrays[name] = a[name]
            files = dict.fromkeys(_ARRAYS, arrays_file)
        else:
            files = {name: path / f"{name}.npy" for name in _ARRAYS}
            for name, file in files.items():
                if not file.is_file():
                    raise FileNotFoundError(f"colbert index at {path} lacks {file} (array {name!r}).")
                try:
                    arrays[name] = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
                except ValueError as err:
                    raise ValueError(f"{file}: array {name!r} is not a readable .npy file: {err}") from err
        _validate(arrays, meta, files)
        codec = ResidualCodec(
            centroids=jnp.asarray(arrays["centroids"]), cutoffs=jnp.asarray(arrays["cutoffs"]),
            weights=jnp.asarray(arrays["weights"]), nbits=int(meta["nbits"]),
        )  # fmt: skip
        index = cls(codec)
        for name in ("codes", "residuals", "doclens", "offsets", "ivf_pids", "ivf_offsets"):
            setattr(index, name, arrays[name])
        return index


_ARRAYS = (
    "centroids", "cutoffs", "weights", "codes", "residuals", "doclens", "offsets", "ivf_pids", "ivf_offsets",
)  # fmt: skip


def _validate(a: dict, meta: dict, files: dict) -> None:
    """Checks loaded index arrays against each other and the metadata; ValueError naming file and field."""
    n, t, k, dim, nbits = (meta[x] for x in ("num_docs", "num_tokens", "num_centroids", "dim", "nbits"))

    def fail(field, what):
        raise ValueError(f"{files[field]}: array {field!r} {what}.")

    expect = {
        "centroids": (k, dim), "cutoffs": (2**nbits - 1,), "weights": (2**nbits,), "codes": (t,),
        "residuals": (t, dim * nbits // 8), "doclens": (n,), "offsets": (n + 1,), "ivf_offsets": (k + 1,),
    }  # fmt: skip
    for field, shape in expect.items():
        if a[field].shape != shape:
            fail(field, f"has shape {a[field].shape}; the metadata (num_docs {n}, num_tokens {t}, "
                 f"num_centroids {k}, dim {dim}, nbits {nbits}) implies {shape}")  # fmt: skip
    if a["residuals"].dtype != np.uint8:
        fail("residuals", f"must be uint8; got {a['residuals'].dtype}")
    for field in ("centroids", "cutoffs", "weights"):
        if not np.all(np.isfinite(a[field])):
            fail(field, "holds NaN or inf values")
    codes = np.asarray(a["codes"])
    if t and (codes.min() < 0 or codes.max() >= k):
        fail("codes", f"must lie in [0, {k}); got values from {codes.min()} to {codes.max()}")
    doclens, offsets = np.asarray(a["doclens"]), np.asarray(a["offsets"])
    if n and doclens.min() < 0:
        fail("doclens", "must be >= 0 for every document (0: deleted)")
    if offsets[0] != 0 or np.any(np.diff(offsets) != doclens) or offsets[-1] != t:
        fail("offsets", "must start at 0, step by doclens and end at num_tokens")
    ivf_offsets, ivf_pids = np.asarray(a["ivf_offsets"]), np.asarray(a["ivf_pids"])
    if ivf_offsets[0] != 0 or np.any(np.diff(ivf_offsets) < 0) or ivf_offsets[-1] != len(ivf_pids):
        fail("ivf_offsets", "must start at 0, never decrease and end at len(ivf_pids)")
    if len(ivf_pids) and (ivf_pids.min() < 0 or ivf_pids.max() >= n):
        fail(
            "ivf_pids",
            f"must be document ids in [0, {n}); got values from {ivf_pids.min()} to {ivf_pids.max()}",
        )


@functools.partial(jax.jit, static_argnames=("ncells",))
def _centroid_scores(Q, q_mask, centroids, ncells):
    S = jnp.einsum("bqh,kh->bqk", Q, centroids)  # [B, Lq, K]
    _, top = jax.lax.top_k(S, ncells)  # [B, Lq, ncells]
    top = jnp.where(q_mask[..., None], top, top[:, :1])  # padded query tokens add no cells
    return S, top.reshape(Q.shape[0], -1)


def _doc_tokens(dev, pids, lmax):
    """Token rows and validity of documents pids [..., C]: ([..., C, lmax] int32, [..., C, lmax] bool)."""
    pos = jnp.arange(lmax, dtype=jnp.int32)
    rows = dev["offsets"][pids][..., None] + pos  # [..., C, lmax]
    mask = pos < dev["doclens"][pids][..., None]
    return jnp.where(mask, rows, 0), mask


@functools.partial(jax.jit, static_argnames=("nbits", "lmax"))
def _gather_decompress(dev, pids, nbits, lmax):
    rows, mask = _doc_tokens(dev, pids, lmax)
    D = decompress_arrays(dev["centroids"], dev["weights"], dev["codes"][rows], dev["residuals"][rows], nbits)
    return jnp.where(mask[..., None], D, 0.0), mask


@functools.partial(jax.jit, static_argnames=("n1", "n2", "k", "nbits", "lmax"))
def _plaid_stages(dev, S, q_mask, Q, cand, valid, threshold, *, n1, n2, k, nbits, lmax):
    """Stages 2-4 for a batch of queries. S [B, Lq, K]; cand/valid [B, C]; returns ids, scores [B, k]."""

    def one(S, q_mask, Q, cand, valid):
        St = S.T  # [K, Lq]
        keep = jnp.max(jnp.where(q_mask[:, None], S, -jnp.inf), axis=0) >= threshold  # [K]

        def approx(pids, ok, prune):
            def block(pids, ok):
                rows, mask = _doc_tokens(dev, pids, lmax)  # [c, lmax]
                codes = dev["codes"][rows]
                mask = mask & ok[:, None]
                if prune:
                    mask = mask & keep[codes]
                sim = St[codes][None]  # [1, c, lmax, Lq]
                return reduce_maxsim(sim, q_mask[None], mask)[0]  # [c]

            return map_chunks(lambda p, o: block(p, o)[None], 1024, pids, ok)[0]

        # Stage 2: pruned centroid interaction over all candidates -> top n1.
        s1 = approx(cand, valid, True)
        s1 = jnp.where(valid, s1, -jnp.inf)
        _, i1 = jax.lax.top_k(s1, n1)
        p1, ok1 = cand[i1], valid[i1]
        # Stage 3: full centroid interaction -> top n2.
        s2 = jnp.where(ok1, approx(p1, ok1, False), -jnp.inf)
        _, i2 = jax.lax.top_k(s2, n2)
        p2, ok2 = p1[i2], ok1[i2]
        # Stage 4: decompress and score exactly.
        D, mask = _gather_decompress(dev, p2, nbits, lmax)  # [n2, lmax, dim]
        sim = jnp.einsum("qh,nth->ntq", Q, D)[None]  # [1, n2, lmax, Lq]
        s3 = jnp.where(ok2, reduce_maxsim(sim, q_mask[None], mask & ok2[:, None])[0], -jnp.inf)
        top, i3 = jax.lax.top_k(s3, k)
        return p2[i3], top

    # lax.map, not vmap: one query at a time keeps the [C, lmax, Lq] block per query (vmap turned the
    # St[codes] lookup into a batched gather that ran 2.5x slower per query on CPU).
    return jax.lax.map(lambda a: one(*a), (S, q_mask, Q, cand, valid))


def exhaustive_search(Q, docs, k: int = 10, q_mask=None, chunk_size: int | None = 256):
    """Exact float MaxSim over every document (the reference that PLAID approximates).

    docs: a list of [Ld_i, dim] arrays. Returns (ids [k], scores [k]) or [B, k] for batched Q.
    """
    from colbert.maxsim import maxsim

    docs = _check_docs(docs, None)
    dim = docs[0].shape[-1]
    Qn, qm, batched = _check_query(Q, q_mask, dim)
    if not 1 <= k <= len(docs):
        raise ValueError(f"k must be between 1 and the number of documents ({len(docs)}); got {k}.")
    Q, q_mask = (Qn, qm) if batched else (Qn[0], qm[0])
    D, mask = pad_documents(docs)
    scores = maxsim(Q, D, q_mask, mask, chunk_size=chunk_size)
    top, ids = jax.lax.top_k(scores, k)
    return np.asarray(ids, np.int32), np.asarray(top)
