"""PLAID-style Index: search recall against exhaustive MaxSim, add == build, save/load, stage checks."""

import json

import numpy as np
import pytest

import colbert
from colbert.index import plaid_defaults


def make_collection(seed, n_docs=120, dim=16, topics=10):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((topics, dim))

    def doc(n):
        x = centers[rng.choice(rng.integers(0, topics, 2), n)] + 0.5 * rng.standard_normal((n, dim))
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    docs = [doc(int(rng.integers(3, 12))) for _ in range(n_docs)]
    queries = np.stack([doc(6) for _ in range(4)])
    return docs, queries


@pytest.fixture(scope="module")
def collection():
    docs, queries = make_collection(0)
    codec = colbert.ResidualCodec.train(np.concatenate(docs), nbits=4, num_centroids=16, seed=0)
    return docs, queries, codec


def test_search_recall_against_exhaustive(collection):
    docs, Q, codec = collection
    index = colbert.Index.build(docs, codec=codec, progress=False)
    assert index.num_docs == len(docs) and index.num_tokens == sum(len(d) for d in docs)
    exact_ids, _ = colbert.exhaustive_search(Q, docs, k=10)  # float MaxSim over every document
    D, mask = index.embeddings(np.arange(len(docs)))
    decoded_ids = np.argsort(-np.asarray(colbert.maxsim(Q, D, None, mask)), axis=1)[:, :10]
    ids, scores = index.search(Q, k=10)  # PLAID defaults for k=10: ncells 1, threshold 0.5, ndocs 256
    assert ids.shape == (4, 10) and scores.shape == (4, 10)

    def recall(a, b):
        return np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)])

    # the stages lose nothing against exhaustive search over the same decompressed vectors; against
    # float vectors the 4-bit codec (dim 16, 16 centroids) costs about one document in ten.
    assert recall(ids, decoded_ids) >= 0.95, recall(ids, decoded_ids)
    assert recall(ids, exact_ids) >= 0.85, recall(ids, exact_ids)
    # returned scores are exact MaxSim of the decompressed documents, sorted best first
    for b in range(4):
        D, mask = index.embeddings(ids[b])
        np.testing.assert_allclose(scores[b], colbert.maxsim(Q[b], D, None, mask), rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(scores[b]) <= 0)


def test_all_cells_and_no_pruning_is_exact_over_decompressed(collection):
    docs, Q, codec = collection
    index = colbert.Index.build(docs, codec=codec, progress=False)
    ids, scores = index.search(Q, k=5, ncells=16, centroid_score_threshold=-10.0, ndocs=4 * len(docs))
    D, mask = index.embeddings(np.arange(len(docs)))
    full = np.asarray(colbert.maxsim(Q, D, None, mask))
    for b in range(4):  # a numpy top-5 over every decompressed document
        np.testing.assert_allclose(scores[b], np.sort(full[b])[::-1][:5], rtol=1e-5, atol=1e-5)


def test_ivf_lists_every_document_under_each_of_its_codes(collection):
    docs, _, codec = collection
    index = colbert.Index.build(docs, codec=codec, progress=False)
    for pid in range(len(docs)):
        codes = index.codes[index.offsets[pid] : index.offsets[pid + 1]]
        for c in set(codes.tolist()):
            assert pid in index.ivf_pids[index.ivf_offsets[c] : index.ivf_offsets[c + 1]]
    sizes = np.diff(index.ivf_offsets)
    expected = [len({p for p in range(len(docs)) if c in index.codes[index.offsets[p] : index.offsets[p + 1]]})
                for c in range(codec.num_centroids)]  # fmt: skip
    np.testing.assert_array_equal(sizes, expected)


def test_add_then_search_equals_build_all(collection):
    docs, Q, codec = collection
    full = colbert.Index.build(docs, codec=codec, progress=False, batch_tokens=64)
    part = colbert.Index.build(docs[:50], codec=codec, progress=False, batch_tokens=100)
    part.add(docs[50:90], progress=False).add(docs[90:], progress=False)
    for name in ("codes", "residuals", "doclens", "offsets", "ivf_pids", "ivf_offsets"):
        np.testing.assert_array_equal(getattr(part, name), getattr(full, name), err_msg=name)
    a = full.search(Q, k=10, ncells=2)
    b = part.search(Q, k=10, ncells=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)


def test_save_load_round_trip(collection, tmp_path):
    docs, Q, codec = collection
    index = colbert.Index.build(docs, codec=codec, progress=False)
    index.save(tmp_path / "idx")
    loaded = colbert.Index.load(tmp_path / "idx")
    assert loaded.codec.nbits == 4 and loaded.num_docs == len(docs)
    for name in ("codes", "residuals", "doclens", "offsets", "ivf_pids", "ivf_offsets"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(index, name))
    np.testing.assert_array_equal(loaded.search(Q, k=3)[0], index.search(Q, k=3)[0])


def test_build_trains_its_own_codec_and_reports_size(collection):
    docs, Q, codec = collection  # same shapes as the fixture's codec: reuses the compiled k-means
    index = colbert.Index.build(docs, nbits=4, num_centroids=16, seed=0, progress=False)
    assert index.codec.nbits == 4 and index.codec.num_centroids == 16
    np.testing.assert_allclose(index.codec.centroids, codec.centroids, rtol=1e-6)  # every doc is sampled
    assert index.codec.bytes_per_vector == 4 + 16 * 4 // 8
    assert index.bytes_per_vector < 16 * 4 / 2  # well under float32 (64 B) including the IVF and offsets
    one_ids, one_scores = index.search(Q[1], k=10)  # a single query == its row of the batch
    ids, scores = index.search(Q, k=10)
    assert one_ids.shape == (10,) and np.all(one_ids >= 0)
    np.testing.assert_array_equal(one_ids, ids[1])
    np.testing.assert_allclose(one_scores, scores[1], rtol=1e-6)


def test_plaid_defaults():
    assert plaid_defaults(10) == (1, 0.5, 256)
    assert plaid_defaults(100) == (2, 0.45, 1024)
    assert plaid_defaults(1000) == (4, 0.4, 4096)
    assert plaid_defaults(2000) == (4, 0.4, 8000)


def test_bad_input_messages(collection, tmp_path):
    docs, Q, codec = collection
    index = colbert.Index.build(docs[:20], codec=codec, progress=False)
    with pytest.raises(ValueError, match="the index is empty"):
        colbert.Index(codec).search(Q[0])
    with pytest.raises(ValueError, match=r"k must be between 1 and the number of indexed documents \(20\)"):
        index.search(Q[0], k=21)
    with pytest.raises(ValueError, match=r"Q must be \[Lq, 16\]"):
        index.search(np.ones((3, 8)))
    with pytest.raises(ValueError, match="q_mask must have shape"):
        index.search(Q[0], q_mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="ncells must be in"):
        index.search(Q[0], ncells=17)
    with pytest.raises(ValueError, match=r"doc ids must be in \[0, 20\)"):
        index.embeddings([20])
    with pytest.raises(ValueError, match="document 1 has shape"):
        index.add([np.ones((2, 16)), np.ones((2, 8))])
    with pytest.raises(ValueError, match="non-empty list"):
        colbert.Index.build([])
    with pytest.raises(ValueError, match=r"nbits must be one of \(1, 2, 4\)"):
        colbert.Index.build(docs, nbits=3)
    with pytest.raises(FileNotFoundError, match="no colbert index at"):
        colbert.Index.load(tmp_path / "missing")
    index.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "meta.json").read_text())
    meta["format_version"] = 0
    (tmp_path / "old" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version 0"):
        colbert.Index.load(tmp_path / "old")
