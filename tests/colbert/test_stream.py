"""Issue 14 for colbert: passages streamed through the encoder into an Index (text and token-id shards),
and the analytic training FLOPs per example against XLA's cost analysis."""

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import colbert
from colbert.bert import BertConfig, BertModel, ColBERTConfig
from colbert.encoder import Encoder
from colbert.tokenize import ColBERTTokenizer
from jaxzoo.flops import xla_flops

WORDS = "what is late interaction hello world again colbert a".split()


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab")
    vocab = (Path(__file__).parent / "tiny_vocab.txt").read_text()
    (path / "vocab.txt").write_text(vocab)
    cfg = ColBERTConfig(bert=BertConfig.tiny(vocab_size=len(vocab.splitlines())), dim=8, query_maxlen=6,
                        doc_maxlen=24)  # fmt: skip
    ids = jnp.zeros((1, 8), jnp.int32)
    params = nn.meta.unbox(BertModel(cfg.bert).init(jax.random.key(0), ids, jnp.ones_like(ids))["params"])
    linear = np.asarray(jax.random.normal(jax.random.key(1), (cfg.bert.hidden_size, cfg.dim)))
    return Encoder(cfg, params, linear, ColBERTTokenizer.from_pretrained(path, cfg))


def passages(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(2, 30)))) + "." for _ in range(n)]


def test_index_passages_equals_encode_all_then_build(encoder, tmp_path):
    texts = passages(40)
    streamed = colbert.index_passages(encoder, iter(texts), chunk=16, batch_size=8, num_centroids=8,
                                      sample_tokens=100, seed=0, progress=False)  # fmt: skip
    assert streamed.num_docs == len(texts)
    docs = encoder.encode_documents(texts, batch_size=8, progress=False)
    vecs = [v for chunk in colbert.encode_passages(encoder, texts, chunk=16, batch_size=8) for v in chunk]
    for a, b in zip(vecs, docs):
        np.testing.assert_allclose(a, b, atol=1e-5)
    full = colbert.Index.build(docs, codec=streamed.codec, progress=False)
    for name in ("doclens", "codes", "ivf_pids"):
        np.testing.assert_array_equal(getattr(streamed, name), getattr(full, name), err_msg=name)
    Q = encoder.encode_queries(["late interaction", "hello world"], progress=False)
    for a, b in zip(streamed.search(Q, k=3, ncells=2), full.search(Q, k=3, ncells=2)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # the same through token-id shards on disk, read back by jaxzoo.data's grain loader
    source = colbert.tokenize_to_shards(encoder, iter(texts), tmp_path / "tok", chunk=16, rows_per_shard=12)
    from_shards = colbert.index_passages(encoder, source, chunk=16, batch_size=8, codec=streamed.codec,
                                         progress=False)  # fmt: skip
    for name in ("doclens", "codes", "ivf_pids"):
        np.testing.assert_array_equal(getattr(from_shards, name), getattr(full, name), err_msg=name)
    with pytest.raises(ValueError, match="one string"):
        colbert.index_passages(encoder, "a single passage")


def _batch(cfg, b, nway, seed=0):
    rng = np.random.default_rng(seed)
    lq, ld, v = cfg.query_maxlen, cfg.doc_maxlen, cfg.bert.vocab_size
    return {
        "q_ids": rng.integers(5, v, (b, lq)).astype(np.int32), "q_attn": np.ones((b, lq), np.int32),
        "d_ids": rng.integers(5, v, (b * nway, ld)).astype(np.int32),
        "d_attn": np.ones((b * nway, ld), np.int32), "d_mask": np.ones((b * nway, ld), np.int32),
    }  # fmt: skip

@pytest.mark.slow

def test_flops_per_example_matches_xla(ib=True):  # in-batch negatives: every term of the count
    bert = BertConfig.tiny(hidden_size=64, num_heads=4, intermediate_size=256, num_layers=1, vocab_size=128)
    cfg = ColBERTConfig(bert=bert, dim=32, query_maxlen=8, doc_maxlen=24)
    run_cfg = colbert.RunConfig(model=cfg, nway=2, batch_size=4, use_ib_negatives=ib, dropout=False)
    params = nn.meta.unbox(run_cfg.recipe().init_fn(jax.random.key(0)))
    loss = colbert.make_loss_fn(cfg, nway=2, use_ib_negatives=ib, dropout=False)
    grad = jax.grad(lambda p, b: loss(p, b, jax.random.key(0))[0])
    xla = xla_flops(grad, params, _batch(cfg, 4, 2))
    ours = run_cfg.batch_size * colbert.flops_per_example(run_cfg)
    assert abs(ours - xla) / xla < 0.2, (ours, xla)
    same = colbert.flops_per_example(bert, nway=2, query_len=8, doc_len=24, dim=32, batch_size=4,
                                     use_ib_negatives=ib)  # fmt: skip
    assert same == colbert.flops_per_example(run_cfg)


def test_flops_per_example_bad_input():
    with pytest.raises(ValueError, match="ColBERTConfig, a RunConfig or a backbone config"):
        colbert.flops_per_example(3)
    with pytest.raises(ValueError, match="needs query_len, doc_len and dim"):
        colbert.flops_per_example(BertConfig.tiny())


def test_pack_words_packs_paragraphs_and_cuts_long_ones():
    import colbert

    text = "a b c\n\nd e\n\nf g h i j k"
    assert colbert.pack_words(text, 4) == ["a b c d", "e f g h", "i j k"]
    assert colbert.pack_words("", 4) == []
    with pytest.raises(ValueError, match="words must be a positive int"):
        colbert.pack_words(text, 0)
