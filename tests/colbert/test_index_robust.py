"""Index robustness: bad input raises a ValueError with a sentence, `Index.load` validates what it reads,
a stream of queries compiles a bounded number of times, metrics accept integer ids against string qrels."""

import json

import numpy as np
import pytest

import colbert
from colbert.index import _plaid_stages
from tests.colbert.test_index import make_collection


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    docs, queries = make_collection(0)
    codec = colbert.ResidualCodec.train(np.concatenate(docs), nbits=2, num_centroids=16, seed=0)
    index = colbert.Index.build(docs, codec=codec, progress=False)
    path = index.save(tmp_path_factory.mktemp("index") / "ix")
    return docs, queries, index, path


def test_nan_in_documents_raises_at_build_and_add(built):
    docs, _, index, _ = built
    bad = [d.copy() for d in docs[:3]]
    bad[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="document 1 holds NaN or inf"):
        colbert.Index.build(bad, codec=index.codec, progress=False)
    with pytest.raises(ValueError, match="document 1 holds NaN or inf"):
        index.add(bad, progress=False)
    with pytest.raises(ValueError, match="document 1 holds NaN or inf"):
        colbert.exhaustive_search(docs[0], bad, k=2)


def test_nan_query_raises(built):
    docs, Q, index, _ = built
    q = Q[0].copy()
    q[2, 3] = np.inf
    with pytest.raises(ValueError, match="query vectors hold NaN or inf"):
        index.search(q, k=5)
    with pytest.raises(ValueError, match="query vectors hold NaN or inf"):
        colbert.exhaustive_search(q, docs, k=5)


def test_zero_length_query_and_document_raise(built):
    docs, _, index, _ = built
    with pytest.raises(ValueError, match="at least one query token"):
        index.search(np.zeros((0, 16), np.float32), k=5)
    with pytest.raises(ValueError, match=r"document 1 has shape \(0, 16\)"):
        index.add([docs[0], np.zeros((0, 16), np.float32)], progress=False)


def test_query_mask_without_a_valid_token_raises(built):
    docs, Q, index, _ = built
    mask = np.ones(Q.shape[:2], bool)
    mask[2] = False
    with pytest.raises(ValueError, match="query 2 keeps none"):
        index.search(Q, k=5, q_mask=mask)
    with pytest.raises(ValueError, match="query 2 keeps none"):
        colbert.exhaustive_search(Q, docs, k=5, q_mask=mask)


def test_exhaustive_k_larger_than_corpus_raises(built):
    docs, Q, _, _ = built
    with pytest.raises(ValueError, match=r"k must be between 1 and the number of documents \(5\)"):
        colbert.exhaustive_search(Q[0], docs[:5], k=6)


def test_bad_ndocs_and_nan_threshold_raise(built):
    _, Q, index, _ = built
    with pytest.raises(ValueError, match="ndocs must be a positive"):
        index.search(Q[0], k=5, ndocs=0)
    with pytest.raises(ValueError, match="centroid_score_threshold must be a finite"):
        index.search(Q[0], k=5, centroid_score_threshold=float("nan"))


def test_non_unit_vectors_are_normalised_and_zero_vectors_raise(built):
    docs, Q, index, _ = built
    scaled = [3.0 * d for d in docs]
    again = colbert.Index.build(scaled, codec=index.codec, progress=False)
    np.testing.assert_array_equal(again.codes, index.codes)
    np.testing.assert_array_equal(again.residuals, index.residuals)
    zero = [docs[0], np.zeros((2, 16), np.float32)]
    with pytest.raises(ValueError, match="document 1 holds a zero vector"):
        index.add(zero, progress=False)


def _corrupt(path, tmp_path, field, value=None, meta=None):
    out = tmp_path / "bad"
    out.mkdir()
    for f in path.glob("*.npy"):
        a = np.load(f)
        np.save(out / f.name, value(a) if f.stem == field else a)
    m = json.loads((path / "meta.json").read_text())
    m.update(meta or {})
    (out / "meta.json").write_text(json.dumps(m))
    return out


@pytest.mark.parametrize(
    "field, change, meta, message",
    [
        ("codes", lambda c: c + 100, None, "array 'codes' must lie in"),
        ("offsets", lambda o: o + 1, None, "array 'offsets' must start at 0"),
        ("ivf_pids", lambda p: p + 10_000, None, "array 'ivf_pids' must be document ids"),
        ("doclens", lambda d: d[:-1], None, "array 'doclens' has shape"),
        ("residuals", lambda r: r[:, :1], None, "array 'residuals' has shape"),
        ("cutoffs", lambda c: c * np.nan, None, "array 'cutoffs' holds NaN"),
        (None, None, {"nbits": 3}, "field 'nbits' must be 1, 2 or 4"),
        (None, None, {"num_docs": "120"}, "field 'num_docs' must be a non-negative int"),
    ],
)
def test_load_validates_and_names_file_and_field(built, tmp_path, field, change, meta, message):
    _, _, _, path = built
    bad = _corrupt(path, tmp_path, field, change, meta)
    with pytest.raises(ValueError, match=message) as err:
        colbert.Index.load(bad)
    assert (f"{field}.npy" if field else "meta.json") in str(err.value)


def test_loaded_index_searches_the_same(built):
    _, Q, index, path = built
    loaded = colbert.Index.load(path)
    for a, b in zip(index.search(Q, k=5), loaded.search(Q, k=5)):
        np.testing.assert_array_equal(a, b)


def test_a_stream_of_queries_does_not_recompile_after_warmup():
    docs, _ = make_collection(1, n_docs=300)
    index = colbert.Index.build(docs, nbits=2, num_centroids=32, seed=0, progress=False)
    rng = np.random.default_rng(0)
    buckets = index.warmup(k=5, num_queries=1, query_len=6, ndocs=16)
    assert buckets <= int(np.log2(300 / 16)) + 2
    compiled = _plaid_stages._cache_size()
    widths = set()
    for _ in range(12):  # single queries whose candidate counts differ
        q = rng.standard_normal((6, 16)).astype(np.float32)
        q /= np.linalg.norm(q, axis=-1, keepdims=True)
        ncand = len(
            index._ivf_union(
                np.asarray(
                    colbert.index._centroid_scores(q[None], np.ones((1, 6), bool), index.codec.centroids, 1)[
                        1
                    ]
                )[0]
            )
        )
        widths.add(ncand)
        index.search(q, k=5, ndocs=16)
    assert len(widths) > 1  # the candidate count did change ...
    assert _plaid_stages._cache_size() == compiled  # ... and nothing compiled


def test_metrics_have_help_and_accept_integer_ids():
    assert "qrels" in colbert.ndcg_at_k.__doc__ and "best first" in colbert.recall_at_k.__doc__
    assert colbert.Index.load.__doc__
    run = {0: [3, 1, 2]}  # what Index.search gives: integer ids
    qrels = {"0": {"1": 1}}  # what TREC files give: strings
    assert colbert.mrr_at_k(run, qrels, 10) == 0.5
    assert colbert.success_at_k(run, qrels, 1) == 0.0
