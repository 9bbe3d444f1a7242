"""Updatable index: delete, search over a subset of ids, streaming build, memory-mapped load; each against a
rebuild from scratch with the same codec."""

import numpy as np
import pytest

import colbert
from tests.colbert.test_index import make_collection

K = 5
ARGS = {"k": K, "ncells": 2, "ndocs": 16}


@pytest.fixture(scope="module")
def built():
    docs, Q = make_collection(3, n_docs=80)
    index = colbert.Index.build(docs, nbits=2, num_centroids=16, seed=0, progress=False)
    return docs, Q, index


def _same(a, b, id_map=None):
    """a, b: (ids, scores) of a search; id_map maps b's ids to a's (-1 stays -1)."""
    ids_b = b[0] if id_map is None else np.where(b[0] >= 0, id_map[np.maximum(b[0], 0)], -1)
    np.testing.assert_array_equal(a[0], ids_b)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-5)


def test_delete_equals_rebuild_without_those_documents(built):
    docs, Q, full = built
    index = colbert.Index.build(docs, codec=full.codec, progress=False)
    gone = [0, 5, 6, 33, 79]
    index.delete(gone)
    index.delete([5])  # again: a no-op
    kept = np.setdiff1d(np.arange(len(docs)), gone)
    rebuilt = colbert.Index.build([docs[i] for i in kept], codec=full.codec, progress=False)
    assert index.num_docs == len(docs) and index.num_live == len(kept)
    assert index.num_tokens == rebuilt.num_tokens
    _same(index.search(Q, **ARGS), rebuilt.search(Q, **ARGS), kept)
    ids, _ = index.search(Q, k=K, ncells=16, centroid_score_threshold=-10.0, ndocs=80)
    assert not np.isin(ids, gone).any()
    # the deleted ids stay deleted through save/load, and later additions get new ids
    index.add(docs[:2], progress=False)
    assert index.num_docs == len(docs) + 2 and index.doclens[0] == 0


def test_search_restricted_to_allowed_ids_equals_index_of_them(built):
    docs, Q, full = built
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(len(docs), 30, replace=False))
    sub = colbert.Index.build([docs[i] for i in subset], codec=full.codec, progress=False)
    _same(full.search(Q, allowed_ids=subset, **ARGS), sub.search(Q, **ARGS), subset)
    mask = np.zeros(len(docs), bool)
    mask[subset] = True
    _same(full.search(Q, allowed_ids=mask, **ARGS), sub.search(Q, **ARGS), subset)
    ids, _ = full.search(Q, allowed_ids=subset, **ARGS)
    assert np.isin(ids[ids >= 0], subset).all()


def test_build_streaming_equals_build(built):
    docs, Q, full = built
    batches = [docs[i : i + 7] for i in range(0, len(docs), 7)]
    streamed = colbert.Index.build_streaming(iter(batches), codec=full.codec, batch_tokens=64, progress=False)
    for name in ("codes", "residuals", "doclens", "offsets", "ivf_pids", "ivf_offsets"):
        np.testing.assert_array_equal(getattr(streamed, name), getattr(full, name), err_msg=name)
    # training its own codec on the first batches (>= sample_tokens vectors), then the same as build with it
    trained = colbert.Index.build_streaming(
        (b for b in batches), nbits=2, num_centroids=16, sample_tokens=200, seed=0, progress=False
    )
    first = np.concatenate([d for b in batches[: 1 + np.argmax(np.cumsum([sum(map(len, b)) for b in batches]) >= 200)]
                            for d in b])  # fmt: skip
    codec = colbert.ResidualCodec.train(first, nbits=2, num_centroids=16, seed=0)
    np.testing.assert_allclose(trained.codec.centroids, codec.centroids, atol=1e-6)
    again = colbert.Index.build(docs, codec=trained.codec, progress=False)
    _same(trained.search(Q, **ARGS), again.search(Q, **ARGS))


def test_mmap_load_searches_the_same(built, tmp_path):
    docs, Q, full = built
    index = colbert.Index.build(docs, codec=full.codec, progress=False).delete([3])
    index.save(tmp_path / "ix")
    mapped = colbert.Index.load(tmp_path / "ix", mmap=True)
    assert isinstance(mapped.residuals, np.memmap) and isinstance(mapped.codes, np.memmap)
    assert mapped.num_live == len(docs) - 1
    _same(mapped.search(Q, **ARGS), index.search(Q, **ARGS))
    _same(colbert.Index.load(tmp_path / "ix").search(Q, **ARGS), index.search(Q, **ARGS))


def test_update_bad_input(built):
    docs, Q, full = built
    with pytest.raises(ValueError, match=r"doc ids to delete must be in \[0, 3\)"):
        colbert.Index.build(docs[:3], codec=full.codec, progress=False).delete([80])
    with pytest.raises(ValueError, match="allowed_ids must be doc ids"):
        full.search(Q, k=K, allowed_ids=[-1])
    with pytest.raises(ValueError, match="bool mask must have shape"):
        full.search(Q, k=K, allowed_ids=np.ones(3, bool))
    with pytest.raises(ValueError, match="got no batches"):
        colbert.Index.build_streaming(iter([]), progress=False)
    empty = colbert.Index.build(docs[:2], codec=full.codec, progress=False).delete([0, 1])
    with pytest.raises(ValueError, match="the index is empty"):
        empty.search(Q, k=1)
