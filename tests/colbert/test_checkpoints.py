"""Checkpoint interop: Stanford ColBERT `artifact.metadata`, PyLate folders, XLM-RoBERTa backbones.

PyLate is not a test dependency, so `pylate_encode` below is a transcription of how PyLate loads a folder and
encodes text, written with transformers + torch (both in the test extra):
- lightonai/pylate `pylate/models/colbert.py` (commit 00b0c526a628e857e5ff2d1ba5522e87e92aaabc):
  `ColBERT.__init__` (the HF_ColBERT branch reading `artifact.metadata`: query_prefix = metadata
  `query_token_id`, query_length = `query_maxlen`, ...; `_parse_model_config` for
  config_sentence_transformers.json; pad id := mask id), `preprocess` (max_seq_length = length - 1, queries
  padded to max_length, prefix id inserted after the first token) and `encode` (queries keep every token,
  documents keep attention_mask AND not-skiplist, then L2 normalisation);
- `pylate/models/Dense.py` (commit 034d6aa62f73a613afe80a52b2b64494e19541c6): `from_stanford_weights` reads
  only `linear.weight`; `Dense.forward` is act(linear(x)) with the Identity activation.
The metadata ColBERT writes is transcribed from stanford-futuredata/ColBERT `colbert/infra/config/settings.py`
(commit 071ce5ae25ad7640af32829f43a3e2426a4dfd7f, `TokenizerSettings`: query_token_id "[unused0]",
doc_token_id "[unused1]", query_token "[Q]", doc_token "[D]") and `base_config.py` (`save_for_checkpoint`
writes `export()` plus a "meta" entry; `from_path` ignores unknown keys).
"""

import json
import string
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from colbert.bert import BertConfig, BertModel
from colbert.encoder import Encoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file, save_file  # noqa: E402

TINY_VOCAB = (Path(__file__).parent / "tiny_vocab.txt").read_text().splitlines()
QUERIES = ["what is col bert", "hello, world"]
DOCS = ["hello, world... (again)", "a late interaction", "col ##bert is a world"]


def _perturbed_bert(cfg):
    torch.manual_seed(0)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 1-layer transformers BertModel over the tiny vocabulary, saved with vocab.txt."""
    path = tmp_path_factory.mktemp("bert")
    cfg = transformers.BertConfig(
        vocab_size=len(TINY_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=24,
    )  # fmt: skip
    model = _perturbed_bert(cfg)
    model.save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    return path, model


def stanford_folder(src: Path, out: Path, head: np.ndarray, metadata: dict) -> Path:
    """A Stanford HF_ColBERT folder: "bert."-prefixed backbone + linear.weight [dim, hidden] + metadata."""
    out.mkdir(parents=True, exist_ok=True)
    state = {"bert." + k: v for k, v in load_file(str(src / "model.safetensors")).items()}
    state["linear.weight"] = np.ascontiguousarray(head.T)
    save_file(state, str(out / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "architectures": ["HF_ColBERT"]}))
    (out / "vocab.txt").write_text((src / "vocab.txt").read_text())
    (out / "artifact.metadata").write_text(json.dumps(metadata, indent=4))
    return out


def colbert_metadata(**changes) -> dict:
    """`artifact.metadata` as ColBERT's save_for_checkpoint writes it (a subset of the exported fields)."""
    meta = {
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_token": "[Q]", "doc_token": "[D]",
        "ncells": None, "centroid_score_threshold": None, "ndocs": None, "index_path": None, "nbits": 2,
        "kmeans_niters": 4, "similarity": "cosine", "bsize": 32, "nway": 64, "model_name": "bert-base-uncased",
        "query_maxlen": 8, "attend_to_mask_tokens": False, "interaction": "colbert", "dim": 8,
        "doc_maxlen": 12, "mask_punctuation": True, "checkpoint": "colbert-ir/colbertv2.0",
        "meta": {"hostname": "x", "git_branch": "main", "version": "colbert-v0.4"},
    }  # fmt: skip
    meta.update(changes)
    return meta


def pylate_encode(path: Path, texts, is_query: bool) -> list[np.ndarray]:
    """PyLate's loading + encoding of a Stanford or PyLate folder (transcription; see the module docstring)."""
    path = Path(path)
    model = transformers.AutoModel.from_pretrained(str(path)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    query_prefix = document_prefix = query_length = document_length = attend = None
    if (path / "modules.json").exists():  # native PyLate: Dense modules + config_sentence_transformers.json
        heads = []
        for module in json.loads((path / "modules.json").read_text()):
            if module["type"].endswith("Dense"):
                w = load_file(str(path / module["path"] / "model.safetensors"))["linear.weight"]
                heads.append(torch.tensor(w))
        cfg = json.loads((path / "config_sentence_transformers.json").read_text())
        query_prefix, document_prefix = cfg.get("query_prefix"), cfg.get("document_prefix")
        query_length, document_length = cfg.get("query_length"), cfg.get("document_length")
        attend = cfg.get("attend_to_expansion_tokens")
    else:  # Stanford: Dense.from_stanford_weights + artifact.metadata
        heads = [torch.tensor(load_file(str(path / "model.safetensors"))["linear.weight"])]
        metadata = json.loads((path / "artifact.metadata").read_text())
        query_prefix = metadata.get("query_token_id") or "[unused0]"
        document_prefix = metadata.get("doc_token_id") or "[unused1]"
        query_length, document_length = metadata.get("query_maxlen"), metadata.get("doc_maxlen")
        attend = metadata.get("attend_to_mask_tokens")
    query_prefix = "[Q] " if query_prefix is None else query_prefix
    document_prefix = "[D] " if document_prefix is None else document_prefix
    query_length = 32 if query_length is None else query_length
    document_length = 180 if document_length is None else document_length
    tokenizer.add_tokens([query_prefix, document_prefix])  # no-op when they are in the vocabulary
    tokenizer.pad_token_id = tokenizer.mask_token_id
    skiplist = [tokenizer.convert_tokens_to_ids(w) for w in string.punctuation]
    prefix_id = tokenizer.convert_tokens_to_ids(query_prefix if is_query else document_prefix)
    max_length = (query_length if is_query else document_length) - 1
    features = tokenizer(
        [t.strip() for t in texts], padding="max_length" if is_query else True, truncation="longest_first",
        max_length=max_length, return_tensors="pt",
    )  # fmt: skip
    insert = lambda x, v: torch.cat([x[:, :1], torch.full_like(x[:, :1], v), x[:, 1:]], dim=1)
    ids, attention = insert(features["input_ids"], prefix_id), insert(features["attention_mask"], 1)
    if is_query and attend:
        attention.fill_(1)
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=attention).last_hidden_state
        for w in heads:
            h = h @ w.T
    if is_query:
        masks = torch.ones_like(ids, dtype=torch.bool)
    else:
        masks = torch.logical_and(~torch.isin(ids, torch.tensor(skiplist)), attention.bool())
    return [torch.nn.functional.normalize(e[m], p=2, dim=1).numpy() for e, m in zip(h, masks)]


def assert_same_vectors(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_stanford_metadata_is_read_as_colbert_writes_it(tiny_bert, tmp_path):
    src, _ = tiny_bert
    head = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    folder = stanford_folder(src, tmp_path / "stanford", head, colbert_metadata())
    enc = Encoder.from_pretrained(folder)  # used to fail with "no token '[Q]'"
    cfg = enc.config
    assert (cfg.query_token, cfg.doc_token, cfg.query_maxlen, cfg.doc_maxlen) == (
        "[unused0]",
        "[unused1]",
        8,
        12,
    )
    ids, _ = enc.tokenize_queries(["hello"])
    assert ids[0, 1] == TINY_VOCAB.index("[unused0]")
    assert_same_vectors(
        list(enc.encode_queries(QUERIES, progress=False)), pylate_encode(folder, QUERIES, True)
    )
    assert_same_vectors(enc.encode_documents(DOCS, progress=False), pylate_encode(folder, DOCS, False))


def test_saved_folder_has_colbert_metadata_and_loads_as_pylate_does(tiny_bert, tmp_path):
    src, _ = tiny_bert
    with pytest.warns(UserWarning, match="has no ColBERT head"):
        enc = Encoder.from_pretrained(src, dim=8, query_maxlen=8, doc_maxlen=12)
    out = enc.save_pretrained(tmp_path / "ours")
    meta = json.loads((out / "artifact.metadata").read_text())
    assert meta["query_token_id"] == "[unused0]" and meta["doc_token_id"] == "[unused1]"
    assert meta["query_token"] == "[Q]" and meta["doc_token"] == "[D]"
    assert_same_vectors(list(enc.encode_queries(QUERIES, progress=False)), pylate_encode(out, QUERIES, True))
    assert_same_vectors(enc.encode_documents(DOCS, progress=False), pylate_encode(out, DOCS, False))


def test_saved_folder_loads_in_pylate_where_installed(tiny_bert, tmp_path):
    pylate = pytest.importorskip("pylate")
    src, _ = tiny_bert
    with pytest.warns(UserWarning):
        enc = Encoder.from_pretrained(src, dim=8, query_maxlen=8, doc_maxlen=12)
    out = enc.save_pretrained(tmp_path / "ours")
    model = pylate.models.ColBERT(str(out), device="cpu")
    theirs = model.encode(QUERIES, is_query=True)
    assert_same_vectors(list(enc.encode_queries(QUERIES, progress=False)), [np.asarray(t) for t in theirs])


def test_integer_marker_ids_of_older_folders_still_load(tiny_bert, tmp_path):
    src, _ = tiny_bert
    head = np.ones((16, 8), np.float32)
    meta = colbert_metadata(query_token_id=TINY_VOCAB.index("[unused1]"), doc_token_id=2)
    enc = Encoder.from_pretrained(stanford_folder(src, tmp_path / "old", head, meta))
    assert enc.config.query_token == "[unused1]" and enc.config.doc_token == TINY_VOCAB[2]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("query_maxlen", "8", "field 'query_maxlen' must be int"),
        ("query_token_id", 999, "is not an id of the tokenizer's vocabulary"),
        ("mask_punctuation", 1, "field 'mask_punctuation' must be bool"),
        ("dim", 16, "field 'dim' is 16, but the head has 8"),
        ("similarity", "l2", "only similarity 'cosine'"),
    ],
)
def test_bad_metadata_names_the_file_and_field(tiny_bert, tmp_path, field, value, message):
    src, _ = tiny_bert
    folder = stanford_folder(
        src, tmp_path / "bad", np.ones((16, 8), np.float32), colbert_metadata(**{field: value})
    )
    with pytest.raises(ValueError, match=message) as err:
        Encoder.from_pretrained(folder)
    assert "artifact.metadata" in str(err.value)


def pylate_folder(src: Path, out: Path, heads: list[np.ndarray], st_config: dict, activation=None) -> Path:
    """A native PyLate folder: backbone at the root with "[Q] "/"[D] " added to tokenizer and embeddings,
    Dense modules 1_Dense, 2_Dense, ... ([out, in] `linear.weight`), config_sentence_transformers.json."""
    from colbert.tokenize import load_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(src)
    tok.add_tokens(["[Q] ", "[D] "])  # what PyLate's __init__ does before saving
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizerFast", "cls_token": "[CLS]", "sep_token": "[SEP]",
        "mask_token": "[MASK]", "pad_token": "[PAD]", "unk_token": "[UNK]",
    }))  # fmt: skip
    model = transformers.BertModel.from_pretrained(str(src), add_pooling_layer=False)
    model.resize_token_embeddings(tok.get_vocab_size())
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[-2:] = torch.randn(2, model.config.hidden_size)
    model.save_pretrained(out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    for i, w in enumerate(heads, start=1):
        (out / f"{i}_Dense").mkdir()
        cfg = {"in_features": w.shape[1], "out_features": w.shape[0], "bias": False, "use_residual": False,
               "activation_function": activation or "torch.nn.modules.linear.Identity"}  # fmt: skip
        (out / f"{i}_Dense" / "config.json").write_text(json.dumps(cfg))
        save_file({"linear.weight": np.ascontiguousarray(w)}, str(out / f"{i}_Dense" / "model.safetensors"))
        modules.append({"idx": i, "name": str(i), "path": f"{i}_Dense", "type": "pylate.models.Dense.Dense"})
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    return out


def test_pylate_folder_loads_its_dense_head_and_prefixes(tiny_bert, tmp_path):
    src, _ = tiny_bert
    rng = np.random.default_rng(1)
    heads = [rng.normal(size=(12, 16)).astype(np.float32), rng.normal(size=(8, 12)).astype(np.float32)]
    st = {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 9, "document_length": 14,
          "attend_to_expansion_tokens": False, "skiplist_words": list(string.punctuation),
          "do_query_expansion": True, "similarity_fn_name": "MaxSim"}  # fmt: skip
    folder = pylate_folder(src, tmp_path / "pylate", heads, st)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the head is found: no random-head warning
        enc = Encoder.from_pretrained(folder)
    assert (enc.config.dim, enc.config.query_maxlen, enc.config.doc_maxlen) == (8, 9, 14)
    assert enc.config.query_token == "[Q] " and enc.tokenizer.query_token_id == len(TINY_VOCAB)
    assert_same_vectors(
        list(enc.encode_queries(QUERIES, progress=False)), pylate_encode(folder, QUERIES, True)
    )
    assert_same_vectors(enc.encode_documents(DOCS, progress=False), pylate_encode(folder, DOCS, False))


def test_pylate_dense_with_an_activation_raises(tiny_bert, tmp_path):
    src, _ = tiny_bert
    folder = pylate_folder(src, tmp_path / "tanh", [np.ones((8, 16), np.float32)], {},
                           activation="torch.nn.modules.activation.Tanh")  # fmt: skip
    with pytest.raises(ValueError, match="only the Identity activation"):
        Encoder.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------- XLM-RoBERTa


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory):
    path = tmp_path_factory.mktemp("xlmr")
    torch.manual_seed(0)
    cfg = transformers.XLMRobertaConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=30, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    model = transformers.XLMRobertaModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    return path, model


def test_xlm_roberta_matches_transformers(tiny_xlmr):
    path, model = tiny_xlmr
    cfg = BertConfig.from_hf(json.loads((path / "config.json").read_text()))
    assert cfg.model_type == "xlm-roberta" and cfg.max_length == 28
    from colbert.encoder import _read_state_dict, hf_to_params

    params = hf_to_params(_read_state_dict(path), cfg)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 40, (3, 9)).astype(np.int32)
    ids[:, 0] = 0
    lengths = np.array([9, 6, 2])
    mask = (np.arange(9)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, 1)  # <pad> = 1 after the end: RoBERTa counts positions over real tokens
    ids[0, 5] = 4  # a [MASK]-like token inside: still a real position
    got = np.asarray(jax.jit(lambda p, i, m: BertModel(cfg).apply({"params": p}, i, m))(params, ids, mask))
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long())
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want.last_hidden_state.numpy()[real], atol=1e-5, rtol=1e-5)


def test_xlm_roberta_stanford_folder_round_trips(tiny_xlmr, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    path, _ = tiny_xlmr
    words = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "[Q]", "[D]"] + [f"w{i}" for i in range(33)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))
    with pytest.warns(UserWarning, match="has no ColBERT head"):
        enc = Encoder.from_pretrained(
            path, dim=4, query_maxlen=6, doc_maxlen=8, query_token="[Q]", doc_token="[D]"
        )
    ids, _ = enc.tokenize_queries(["w3 w4"])
    assert ids[0].tolist() == [0, 5, 10, 11, 2, 4]  # <s> [Q] w3 w4 </s> <mask>
    out = enc.save_pretrained(tmp_path / "xlmr_colbert")
    assert all(
        k.startswith("roberta.") for k in load_file(str(out / "model.safetensors")) if k != "linear.weight"
    )
    again = Encoder.from_pretrained(out)
    assert again.config == enc.config
    docs = ["w1 w2 w3", "w5"]
    assert_same_vectors(
        again.encode_documents(docs, progress=False), enc.encode_documents(docs, progress=False)
    )
