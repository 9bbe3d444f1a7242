"""ModernBERT backbone: parity with transformers' ModernBertModel (eager attention) on a random tiny config
with padding and sequences longer than the sliding window, the weight converter, config.json round trips,
and PyLate / Stanford folders with a ModernBERT backbone (encoded as PyLate does, via the transcription
`pylate_encode` of tests/colbert/test_checkpoints.py)."""

import json

import flax
import jax
import numpy as np
import pytest

import jaxzoo
from colbert.bert import ColBERTConfig, backbone_from_hf, backbone_module
from colbert.encoder import Encoder, _read_state_dict
from colbert.modernbert import (
    ModernBertConfig,
    ModernBertModel,
    hf_to_params,
    params_to_hf,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import save_file  # noqa: E402

from tests.colbert.test_checkpoints import (  # noqa: E402
    DOCS,
    QUERIES,
    TINY_VOCAB,
    assert_same_vectors,
    pylate_encode,
)


def hf_config(**changes):
    """A tiny transformers ModernBertConfig: 4 layers (global, local, global, local), window 4 (|i - j| <= 2)."""
    kwargs = dict(
        vocab_size=len(TINY_VOCAB) + 2, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=24, max_position_embeddings=64, local_attention=4, global_attn_every_n_layers=2,
        pad_token_id=0, cls_token_id=4, sep_token_id=5, bos_token_id=4, eos_token_id=5,
        attn_implementation="eager",
    )  # fmt: skip
    kwargs.update(changes)
    return transformers.ModernBertConfig(**kwargs)


def random_model(cfg, seed=0):
    """transformers' ModernBertModel, randomly initialised and perturbed (norm scales away from 1)."""
    torch.manual_seed(seed)
    model = transformers.ModernBertModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def padded_batch(vocab, length=13, lengths=(13, 9, 2), seed=0):
    rng = np.random.default_rng(seed)
    mask = (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(7, vocab, (len(lengths), length)), 0)
    return ids, mask


def ours(model_cfg, params, ids, mask):
    fn = jax.jit(lambda p, i, m: ModernBertModel(model_cfg).apply({"params": p}, i, m))
    return np.asarray(fn(params, ids, mask))


def theirs(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()


# ------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("preset", ["base", "large", "tiny"])
def test_config_round_trips_json(preset):
    cfg = getattr(ModernBertConfig, preset)()
    assert ModernBertConfig.from_json(cfg.to_json()) == cfg
    hash(cfg)
    colbert_cfg = ColBERTConfig.tiny(bert=cfg)
    assert ColBERTConfig.from_json(colbert_cfg.to_json()) == colbert_cfg


def test_config_unknown_and_missing_fields_raise():
    data = ModernBertConfig.tiny().to_dict()
    with pytest.raises(ValueError, match="no field"):
        ModernBertConfig.from_dict({**data, "rope_scaling": None})
    del data["local_attention"]
    with pytest.raises(ValueError, match="lacks field"):
        ModernBertConfig.from_dict(data)
    with pytest.raises(ValueError, match="hidden_act"):
        ModernBertConfig.tiny(hidden_act="swiglu")


def test_config_matches_transformers_both_ways():
    cfg = ModernBertConfig.tiny(global_attn_every_n_layers=2, num_layers=5, local_rope_theta=500.0)
    theirs_cfg = transformers.ModernBertConfig(**cfg.to_hf())
    assert list(theirs_cfg.layer_types) == list(cfg.layer_types)
    assert theirs_cfg.sliding_window == cfg.local_attention // 2
    assert theirs_cfg.rope_parameters["sliding_attention"]["rope_theta"] == 500.0
    assert ModernBertConfig.from_hf(theirs_cfg.to_dict()) == cfg
    # The config.json of checkpoints written before transformers 5 (ModernBERT-base on the Hub).
    legacy = {"model_type": "modernbert", "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0,
              "local_rope_theta": 10000.0, "local_attention": 128, "hidden_activation": "gelu",
              "num_hidden_layers": 22, "hidden_size": 768, "num_attention_heads": 12,
              "intermediate_size": 1152, "vocab_size": 50368}  # fmt: skip
    assert ModernBertConfig.from_hf(legacy) == ModernBertConfig.base()
    assert isinstance(backbone_from_hf(legacy), ModernBertConfig)
    assert ModernBertConfig.large().to_hf()["num_hidden_layers"] == 28


def test_layer_types_outside_the_every_n_pattern_raise():
    hf = ModernBertConfig.tiny().to_hf()
    hf["layer_types"] = ["sliding_attention", "full_attention", "full_attention"]
    with pytest.raises(ValueError, match="config field 'layer_types'"):
        ModernBertConfig.from_hf(hf)


def test_unknown_model_type_raises_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="config.json field 'model_type' is 't5'"):
        backbone_from_hf({"model_type": "t5"})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 16}))
    with pytest.raises(ValueError, match="'model_type' is 't5'"):
        Encoder.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------- maths


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {
            "norm_bias": True,
            "attention_bias": True,
            "mlp_bias": True,
            "hidden_activation": "gelu_pytorch_tanh",
        },
    ],
    ids=["default", "biases"],
)
def test_matches_transformers_with_padding_and_sliding_window(changes):
    hf = hf_config(**changes)
    model = random_model(hf)
    cfg = ModernBertConfig.from_hf(hf.to_dict())
    assert cfg.local_attention == 4 and cfg.layer_types == ("full_attention", "sliding_attention") * 2
    params = hf_to_params({k: v.numpy() for k, v in model.state_dict().items()}, cfg)
    ids, mask = padded_batch(hf.vocab_size)  # 13 tokens: far longer than the window of +-2
    real = mask.astype(bool)
    got, want = ours(cfg, params, ids, mask), theirs(model, ids, mask)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-4)
    # The window matters: attending globally in every layer gives other hidden states.
    wide = cfg.replace(local_attention=64)
    assert np.abs(ours(wide, params, ids, mask)[real] - want[real]).max() > 1e-2


def test_converter_round_trips_and_reads_the_masked_lm_prefix():
    hf = hf_config(norm_bias=True, mlp_bias=True)
    state = {k: v.numpy() for k, v in random_model(hf).state_dict().items()}
    cfg = ModernBertConfig.from_hf(hf.to_dict())
    params = hf_to_params(state, cfg)
    assert params["layer_0"]["qkv"]["kernel"].shape == (16, 3, 2, 8) and "attn_norm" not in params["layer_0"]
    back = params_to_hf(params, cfg)
    assert sorted(back) == sorted(state)
    for key in state:
        np.testing.assert_array_equal(back[key], state[key])
    # ModernBertForMaskedLM / HF_ColBERT checkpoints: "model."-prefixed backbone next to other keys.
    prefixed = {"model." + k: v for k, v in state.items()} | {"head.dense.weight": np.zeros((16, 16))}
    again = hf_to_params(prefixed, cfg)
    assert jax.tree.all(jax.tree.map(np.array_equal, again, params))
    # The Linen module's parameter tree is what the converter builds.
    boxed = jax.eval_shape(ModernBertModel(cfg).init, jax.random.key(0), np.ones((1, 5), np.int32))
    shapes = jax.tree.map(lambda x: x.shape, flax.linen.meta.unbox(boxed["params"]))
    assert shapes == jax.tree.map(np.shape, params)


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"vocab_size": 99}, "embeddings.tok_embeddings.weight"),
        ({"intermediate_size": 32}, "layers.0.mlp.Wi.weight"),
        ({"hidden_size": 32}, "embeddings.tok_embeddings.weight"),
    ],
    ids=["vocab", "mlp", "hidden"],
)
def test_state_dict_that_does_not_fit_the_config_names_the_key(changes, key):
    hf = hf_config()
    state = {k: v.numpy() for k, v in random_model(hf).state_dict().items()}
    cfg = ModernBertConfig.from_hf(hf.to_dict(), **changes)
    with pytest.raises(ValueError, match=f"Weight '{key}' has shape"):
        hf_to_params(state, cfg)
    del state["layers.1.attn_norm.weight"]
    with pytest.raises(ValueError, match="no weight 'layers.1.attn_norm.weight'"):
        hf_to_params(state, ModernBertConfig.from_hf(hf.to_dict()))


# ------------------------------------------------------------------------------------------------- folders


@pytest.fixture(scope="module")
def modernbert_pylate(tmp_path_factory):
    """A native PyLate folder over a random tiny ModernBERT: tokenizer with "[Q] "/"[D] " added, the backbone
    at the root, two Dense modules ([out, in] linear.weight), config_sentence_transformers.json."""
    from colbert.tokenize import load_tokenizer

    src = tmp_path_factory.mktemp("vocab")
    (src / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    out = tmp_path_factory.mktemp("modern_pylate")
    tok = load_tokenizer(src)
    tok.add_tokens(
        ["[Q] ", "[D] "]
    )  # ids len(TINY_VOCAB), len(TINY_VOCAB) + 1: inside the model's vocabulary
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizerFast", "cls_token": "[CLS]", "sep_token": "[SEP]",
        "mask_token": "[MASK]", "pad_token": "[PAD]", "unk_token": "[UNK]",
    }))  # fmt: skip
    model = random_model(hf_config(attn_implementation="sdpa"), seed=1)
    model.save_pretrained(out)
    rng = np.random.default_rng(2)
    heads = [rng.normal(size=(12, 16)).astype(np.float32), rng.normal(size=(8, 12)).astype(np.float32)]
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    for i, w in enumerate(heads, start=1):
        (out / f"{i}_Dense").mkdir()
        cfg = {"in_features": w.shape[1], "out_features": w.shape[0], "bias": False, "use_residual": False,
               "activation_function": "torch.nn.modules.linear.Identity"}  # fmt: skip
        (out / f"{i}_Dense" / "config.json").write_text(json.dumps(cfg))
        save_file({"linear.weight": np.ascontiguousarray(w)}, str(out / f"{i}_Dense" / "model.safetensors"))
        modules.append({"idx": i, "name": str(i), "path": f"{i}_Dense", "type": "pylate.models.Dense.Dense"})
    (out / "modules.json").write_text(json.dumps(modules))
    st = {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 9, "document_length": 16,
          "attend_to_expansion_tokens": False, "do_query_expansion": True}  # fmt: skip
    (out / "config_sentence_transformers.json").write_text(json.dumps(st))
    return out


@pytest.fixture(scope="module")
def modernbert_encoder(modernbert_pylate):
    return Encoder.from_pretrained(modernbert_pylate)


LONG_DOCS = DOCS + ["col bert is a late world , hello again col ##bert world interaction"]


def test_pylate_folder_with_a_modernbert_backbone_encodes_as_pylate(modernbert_pylate, modernbert_encoder):
    enc = modernbert_encoder
    assert isinstance(enc.config.bert, ModernBertConfig) and isinstance(enc.module, ModernBertModel)
    assert (enc.config.dim, enc.config.query_maxlen, enc.config.doc_maxlen) == (8, 9, 16)
    queries = list(enc.encode_queries(QUERIES, progress=False))
    assert_same_vectors(queries, pylate_encode(modernbert_pylate, QUERIES, True))
    docs = enc.encode_documents(LONG_DOCS, progress=False)
    assert max(len(d) for d in docs) > 2 * 2 + 1  # longer than a window: the local layers mask something
    assert_same_vectors(docs, pylate_encode(modernbert_pylate, LONG_DOCS, False))
    # The ColBERT module (what training uses) dispatches to the same backbone.
    ids, mask = enc.tokenize_queries(QUERIES)
    assert isinstance(backbone_module(enc.config.bert), ModernBertModel)
    np.testing.assert_allclose(
        np.asarray(enc.colbert.apply({"params": enc.colbert_params}, ids, mask)), np.stack(queries), atol=1e-5
    )


def test_saved_modernbert_folder_reloads_in_transformers_pylate_and_here(modernbert_encoder, tmp_path):
    enc = modernbert_encoder
    out = enc.save_pretrained(tmp_path / "ours")
    hf = json.loads((out / "config.json").read_text())
    assert hf["model_type"] == "modernbert" and hf["architectures"] == ["HF_ColBERT"]
    model, info = transformers.ModernBertModel.from_pretrained(
        str(out), attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"]
    ids, mask = padded_batch(len(TINY_VOCAB) + 2, length=11, lengths=(11, 6))
    real = mask.astype(bool)
    np.testing.assert_allclose(
        np.asarray(enc.bert_hidden_states(ids, mask))[real], theirs(model.eval(), ids, mask)[real], atol=1e-4
    )
    assert_same_vectors(list(enc.encode_queries(QUERIES, progress=False)), pylate_encode(out, QUERIES, True))
    assert_same_vectors(enc.encode_documents(LONG_DOCS, progress=False), pylate_encode(out, LONG_DOCS, False))
    again = Encoder.from_pretrained(out)
    assert again.config == enc.config
    assert all(k.startswith("model.") for k in _read_state_dict(out) if k != "linear.weight")


@pytest.mark.slow  # ~20 s of compiles on 2 cores
def test_modernbert_colbert_trains_sharded_as_on_one_device():
    from colbert.train import RunConfig, init_state, make_train_step
    from tests.colbert.test_runtime_contract import make_batch_arrays

    model = ColBERTConfig.tiny(bert=ModernBertConfig.tiny(attention_dropout=0.1, mlp_dropout=0.1))
    cfg = RunConfig.tiny(model=model)
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    batch = make_batch_arrays(cfg.model)
    plan1, plan8 = init_state(cfg, jax.random.key(0)), init_state(cfg, jax.random.key(0), mesh=mesh)
    qkv = plan8.state.params["bert"]["layer_1"]["qkv"]["kernel"]  # [E, 3, H, Dh]: heads over "model"
    assert tuple(qkv.sharding.spec)[:3] == (None, None, "model")
    step1, step8 = make_train_step(cfg), make_train_step(cfg, mesh=mesh, state_sharding=plan8.shardings)
    s1, s8 = plan1.state, plan8.state
    for _ in range(2):
        s1, m1 = step1(s1, batch, jax.random.key(7))
        s8, m8 = step8(s8, batch, jax.random.key(7))
        assert np.isfinite(float(m1["loss"]))
        np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6)
