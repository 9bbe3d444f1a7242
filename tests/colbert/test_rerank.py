"""Exact-MaxSim reranking and reciprocal rank fusion against hand-written references."""

import numpy as np
import pytest

import colbert


def test_rerank_orders_by_exact_maxsim_from_any_store():
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((int(rng.integers(2, 7)), 8)).astype(np.float32) for _ in range(12)]
    Q = rng.standard_normal((3, 8)).astype(np.float32)
    cand = np.array([7, 2, 9, 0, 5])
    loop = {i: sum(max(float(q @ t) for t in docs[i]) for q in Q) for i in cand}
    want = sorted(cand, key=lambda i: -loop[i])[:3]
    ids, scores = colbert.rerank(Q, cand, docs, k=3)
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, [loop[i] for i in want], rtol=1e-5)
    padded = colbert.pad_documents(docs)
    ids2, scores2 = colbert.rerank(Q, cand, padded, k=3)
    np.testing.assert_array_equal(ids2, want)
    np.testing.assert_allclose(scores2, scores, rtol=1e-6)


def test_rerank_from_index_uses_decompressed_vectors():
    rng = np.random.default_rng(1)
    docs = [rng.standard_normal((5, 16)).astype(np.float32) for _ in range(30)]
    docs = [d / np.linalg.norm(d, axis=-1, keepdims=True) for d in docs]
    centroids = np.stack(docs[:8])[:, 0]  # a hand-made codec: no k-means needed here
    codec = colbert.ResidualCodec(centroids, np.array([-0.1, 0.0, 0.1], np.float32),
                                  np.array([-0.2, -0.05, 0.05, 0.2], np.float32), nbits=2)  # fmt: skip
    index = colbert.Index.build(docs, codec=codec, progress=False)
    Q = docs[3][:4]
    ids, scores = colbert.rerank(Q, np.arange(30), index, k=2)
    D, mask = index.embeddings(ids)
    np.testing.assert_allclose(scores, colbert.maxsim(Q, D, None, mask), rtol=1e-6)
    assert ids[0] == 3


def test_rrf_hand_computed():
    ids, scores = colbert.reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"], ["d"]], k=60)
    want = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 61}
    assert ids == ["a", "c", "d", "b"]  # 2/61.5-ish > 1/61 + 1/63 > 1/61 > 1/62
    np.testing.assert_allclose(scores, [want[d] for d in ids], rtol=1e-12)
    ids, scores = colbert.reciprocal_rank_fusion([[1, 2], [2, 1]], k=0, top_k=1)
    assert ids == [1] and scores.tolist() == [1.5]  # tie: first seen wins; 1/1 + 1/2


def test_bad_input_messages():
    docs = [np.ones((2, 4), np.float32)] * 3
    with pytest.raises(ValueError, match="between 1 and the number of candidates"):
        colbert.rerank(np.ones((2, 4)), [0, 1], docs, k=3)
    with pytest.raises(ValueError, match=r"doc ids must be in \[0, 3\)"):
        colbert.rerank(np.ones((2, 4)), [0, 5], docs, k=1)
    with pytest.raises(ValueError, match="1-D array of integer ids"):
        colbert.rerank(np.ones((2, 4)), [[0, 1]], docs)
    with pytest.raises(ValueError, match="one query"):
        colbert.rerank(np.ones((1, 2, 4)), [0, 1], docs)
    with pytest.raises(ValueError, match="feature width 4 but Q has dim 3"):
        colbert.rerank(np.ones((2, 3)), [0, 1], docs)
    with pytest.raises(ValueError, match="appears twice"):
        colbert.reciprocal_rank_fusion([[1, 1]])
    with pytest.raises(ValueError, match="rank constant k must be"):
        colbert.reciprocal_rank_fusion([[1]], k=-1)
