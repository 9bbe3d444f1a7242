"""BERT in Flax Linen with Hugging Face `BertModel` numerics, and the ColBERT head on top.

ColBERT (Khattab & Zaharia 2020; ColBERTv2, Santhanam et al. 2022) encodes every token with a BERT,
projects it with a bias-free linear layer to `dim` (128) and L2-normalises it. This file holds:

- `BertConfig` / `ColBERTConfig`: frozen `jaxzoo.Config`s that round-trip through JSON (field names follow
  our house style; `BertConfig.from_hf` and `to_hf` translate Hugging Face's config.json), with presets
  (`tiny()`, `minilm()`, `bert_base()`; `ColBERTConfig.colbertv2()`),
- pure array functions (`gelu`, `l2_normalize`, `colbert_project`): the maths, tested against numpy;
  LayerNorm and attention are jaxzoo's (`jaxzoo.layer_norm`, `jaxzoo.dot_product_attention`),
- Linen modules `BertModel` (embeddings + post-LayerNorm layers) and `ColBERT` (backbone + head),
- the backbone dispatch: `backbone_from_hf` (config.json `model_type` -> `BertConfig` or, for "modernbert",
  `colbert.modernbert.ModernBertConfig`) and `backbone_module` (-> `BertModel` / `ModernBertModel`).

Parameter tree of `BertModel` (what `colbert.encoder` converts Hugging Face weights into)::

    embed/{word_embeddings [V, E], position_embeddings, token_type_embeddings}, embed/ln/{scale, bias}
    layer_{i}/{query, key, value}/{kernel [E, H, Dh], bias [H, Dh]}
    layer_{i}/out/{kernel [H, Dh, E], bias [E]}, layer_{i}/attn_ln/{scale, bias}
    layer_{i}/mlp_in/{kernel [E, F], bias [F]}, layer_{i}/mlp_out/{kernel [F, E], bias [E]},
    layer_{i}/mlp_ln/{scale, bias}

Each layer sows its output as `intermediates/layer_{i}/resid_post`, the embedding output as
`intermediates/embeddings` (read them with `module.apply(..., mutable=["intermediates"])`).

Masking convention: a sequence whose attention mask is all zeros gets zeros from every attention layer
(`jaxzoo.dot_product_attention`), where Hugging Face attends uniformly over the padding. Real inputs always
attend to [CLS], so the two agree on every sequence with at least one real token.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxzoo
from colbert.modernbert import MODEL_TYPE as MODERNBERT
from colbert.modernbert import ModernBertConfig, ModernBertModel
from colbert.modernbert import sharding_examples as modernbert_examples
from jaxzoo.nn import DenseGeneral, LayerNorm, dot_product_attention

_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
# Backbones with BERT's layer stack: they differ only in how position ids are counted (see `position_ids`).
MODEL_TYPES = ("bert", "roberta", "xlm-roberta")


@dataclasses.dataclass(frozen=True)
class BertConfig(jaxzoo.Config):
    """A BERT encoder. Defaults are all-MiniLM-L6-v2 (sentence-transformers), a 6-layer BERT."""

    vocab_size: int = 30522  # word-piece vocabulary size
    hidden_size: int = 384  # E: model width
    num_layers: int = 6  # number of transformer layers
    num_heads: int = 12  # H: attention heads; head_dim = hidden_size // num_heads
    intermediate_size: int = 1536  # F: MLP width
    max_position_embeddings: int = 512  # longest sequence the absolute position table covers
    type_vocab_size: int = 2  # token-type (segment) vocabulary
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon, as in the Hugging Face config
    hidden_act: str = "gelu"  # "gelu" = exact erf GELU (BERT's), "gelu_new"/"gelu_pytorch_tanh" = tanh form
    hidden_dropout: float = 0.1  # dropout after embeddings and each residual branch (training only)
    attention_dropout: float = 0.1  # dropout on attention probabilities (training only)
    pad_token_id: int = 0  # id of [PAD]
    precision: jaxzoo.Precision = jaxzoo.Precision()  # param/compute dtypes (float64 for exactness tests)
    remat: bool = False  # rematerialise each layer in the backward pass (saves activation memory)
    model_type: str = "bert"  # "bert", or "roberta"/"xlm-roberta" (positions counted from pad_token_id + 1)

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"BertConfig.model_type must be one of {MODEL_TYPES}, got {self.model_type!r}.")
        for name in ("vocab_size", "hidden_size", "num_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"BertConfig.{name} must be positive, got {getattr(self, name)}.")
        if self.num_layers < 0:
            raise ValueError(f"BertConfig.num_layers must be >= 0, got {self.num_layers}.")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})."
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act must be one of {_ACTIVATIONS}, got {self.hidden_act!r}.")
        if not isinstance(self.precision, jaxzoo.Precision):
            raise ValueError(
                f"BertConfig.precision must be a jaxzoo.Precision (e.g. jaxzoo.Precision.of('bfloat16')), "
                f"got {self.precision!r}."
            )
        if not (0.0 <= self.hidden_dropout < 1.0 and 0.0 <= self.attention_dropout < 1.0):
            raise ValueError("BertConfig dropout rates must lie in [0, 1).")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_length(self) -> int:
        """Longest sequence the position table covers (RoBERTa's first pad_token_id + 1 rows are unused)."""
        if self.model_type == "bert":
            return self.max_position_embeddings
        return self.max_position_embeddings - self.pad_token_id - 1

    @classmethod
    def minilm(cls, **changes) -> BertConfig:
        """all-MiniLM-L6-v2: 6 layers, width 384, 12 heads (the defaults)."""
        return cls(**changes)

    @classmethod
    def bert_base(cls, **changes) -> BertConfig:
        """bert-base-uncased (ColBERTv2's backbone): 12 layers, width 768, 12 heads, MLP 3072."""
        return cls(
            **{"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072, **changes}
        )

    @classmethod
    def tiny(cls, **changes) -> BertConfig:
        """A 1-layer width-16 BERT for tests and smoke runs (vocabulary 64, 32 positions, no dropout)."""
        return cls(
            **{
                "vocab_size": 64,
                "hidden_size": 16,
                "num_layers": 1,
                "num_heads": 2,
                "intermediate_size": 32,
                "max_position_embeddings": 32,
                "hidden_dropout": 0.0,
                "attention_dropout": 0.0,
                **changes,
            }
        )

    @classmethod
    def xlm_roberta(cls, **changes) -> BertConfig:
        """XLM-RoBERTa base (jina-colbert-v2's family): vocabulary 250002, 514 positions, pad id 1, 1 type."""
        return cls.bert_base(
            **{
                "model_type": "xlm-roberta",
                "vocab_size": 250002,
                "max_position_embeddings": 514,
                "type_vocab_size": 1,
                "layer_norm_eps": 1e-5,
                "pad_token_id": 1,
                **changes,
            }
        )

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> BertConfig:
        """Build from a Hugging Face BERT, RoBERTa or XLM-RoBERTa config.json dict."""
        model_type = hf.get("model_type", "bert")
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"Only BERT-style backbones {MODEL_TYPES} are supported; the config.json holds model_type "
                f"{model_type!r}."
            )
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"Only absolute position embeddings are supported, the config asks for "
                f"{hf['position_embedding_type']!r}."
            )
        kwargs = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            hidden_act=hf.get("hidden_act", "gelu"),
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            pad_token_id=hf.get("pad_token_id", 0) or 0,
            model_type=model_type,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face config.json dict (model_type `self.model_type`)."""
        return {
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": self.hidden_dropout,
            "attention_probs_dropout_prob": self.attention_dropout,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
            "initializer_range": 0.02,
        }


@dataclasses.dataclass(frozen=True)
class ColBERTConfig(jaxzoo.Config):
    """ColBERT = BERT + bias-free projection to `dim` + L2 norm, and its tokenisation rules.

    Defaults follow stanford-futuredata/ColBERT `settings.py`, except `doc_maxlen` = 180 (the README's
    training example and PyLate's default, as issue 5 asks) instead of 220, and the backbone, which is
    all-MiniLM-L6-v2 (`colbertv2()` has ColBERTv2's bert-base).
    """

    bert: BertConfig | ModernBertConfig = BertConfig()  # the backbone: a BERT/(XLM-)RoBERTa or a ModernBERT
    dim: int = 128  # output dimension of the ColBERT projection
    query_maxlen: int = 32  # queries are padded (with [MASK]) or truncated to exactly this many tokens
    doc_maxlen: int = 180  # documents are truncated to at most this many tokens
    mask_punctuation: bool = True  # drop punctuation tokens of documents from the MaxSim mask
    attend_to_mask_tokens: bool = False  # let the BERT attend to the [MASK] query padding
    # The markers are vocabulary tokens (ColBERT's `query_token_id`/`doc_token_id` in artifact.metadata, which
    # shows them as "[Q]"/"[D]"; PyLate folders use added tokens "[Q] "/"[D] "); "" inserts no marker.
    query_token: str = "[unused0]"  # the [Q] marker inserted after [CLS] in queries
    doc_token: str = "[unused1]"  # the [D] marker inserted after [CLS] in documents

    def __post_init__(self):
        if not isinstance(self.bert, BertConfig | ModernBertConfig):
            raise ValueError(
                "ColBERTConfig.bert must be a BertConfig or a ModernBertConfig, got "
                f"{type(self.bert).__name__}."
            )
        if self.dim < 1:
            raise ValueError(f"ColBERTConfig.dim must be positive, got {self.dim}.")
        for name, marker in (("query_maxlen", self.query_token), ("doc_maxlen", self.doc_token)):
            value, low = getattr(self, name), 3 + bool(marker)
            if not low <= value <= self.bert.max_length:
                raise ValueError(
                    f"ColBERTConfig.{name} must lie in [{low}, {self.bert.max_length}] (room for [CLS], the "
                    f"marker, one token and [SEP]), got {value}."
                )

    @classmethod
    def minilm(cls, **changes) -> ColBERTConfig:
        """all-MiniLM-L6-v2 backbone with a 128-dim head (the defaults)."""
        return cls(**changes)

    @classmethod
    def colbertv2(cls, **changes) -> ColBERTConfig:
        """ColBERTv2 (colbert-ir/colbertv2.0): bert-base backbone, dim 128, query 32, documents 180 tokens."""
        return cls(**{"bert": BertConfig.bert_base(), **changes})

    @classmethod
    def tiny(cls, **changes) -> ColBERTConfig:
        """`BertConfig.tiny()` with an 8-dim head, queries of 6 and documents of 8 tokens (tests, smoke)."""
        return cls(**{"bert": BertConfig.tiny(), "dim": 8, "query_maxlen": 6, "doc_maxlen": 8, **changes})


# ----------------------------------------------------------------------------------------------------
# The maths: pure array functions.


def gelu(x: jax.Array, kind: str = "gelu") -> jax.Array:
    """BERT's activations: "gelu" is the exact x * Phi(x) (erf), the others the tanh approximation."""
    if kind == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if kind in ("gelu_new", "gelu_pytorch_tanh"):
        return jax.nn.gelu(x, approximate=True)
    if kind == "relu":
        return jax.nn.relu(x)
    raise ValueError(f"Unknown activation {kind!r}; expected one of {_ACTIVATIONS}.")


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||_2, eps) over the last axis (torch.nn.functional.normalize)."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    # rsqrt(max(|x|^2, eps^2)) == 1 / max(|x|, eps), but its gradient at x = 0 (padding) is 0, not NaN.
    inv = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(xf), -1, keepdims=True), eps * eps))
    return (xf * inv).astype(x.dtype)


def position_ids(input_ids: jax.Array, config: BertConfig) -> jax.Array:
    """Rows of the position table each token reads, [B, L] int32.

    BERT: 0, 1, ..., L-1. RoBERTa / XLM-RoBERTa (transformers `create_position_ids_from_input_ids`): tokens
    that are not [PAD] count from pad_token_id + 1, [PAD] tokens read row pad_token_id.
    """
    length = input_ids.shape[1]
    if config.model_type == "bert":
        return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), input_ids.shape)
    real = (input_ids != config.pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + config.pad_token_id


def colbert_project(hidden: jax.Array, kernel: jax.Array) -> jax.Array:
    """The ColBERT head: [B, L, E] @ [E, dim] (no bias), then L2-normalise each token vector."""
    return l2_normalize(jnp.einsum("ble,ed->bld", hidden, kernel.astype(hidden.dtype)))


# ----------------------------------------------------------------------------------------------------
# Modules.

_init = nn.initializers.normal(stddev=0.02)  # BERT's initializer_range


def _dense(features, axes, name, precision: jaxzoo.Precision, in_axes=1, use_bias=True, dtype=None):
    """jaxzoo's DenseGeneral with BERT's init: kernel [*in_shape, *features] with logical names `axes`."""
    features = tuple(features) if isinstance(features, tuple) else (features,)
    return DenseGeneral(
        features,
        tuple(axes),
        n_in=in_axes,
        use_bias=use_bias,
        kernel_init=_init,
        dtype=precision.compute if dtype is None else dtype,
        param_dtype=precision.param,
        name=name,
    )


def _layer_norm(cfg: BertConfig, name: str) -> LayerNorm:
    """jaxzoo's LayerNorm (PyTorch numerics: biased variance, eps inside the sqrt, statistics in float32)."""
    return LayerNorm(eps=cfg.layer_norm_eps, param_dtype=cfg.precision.param, name=name)


class BertEmbeddings(nn.Module):
    """word + absolute position + token type embeddings, then LayerNorm and dropout. [B, L] -> [B, L, E]."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool = True):
        cfg = self.config

        def table(n, axes, name):
            init = nn.with_logical_partitioning(_init, axes)
            return self.param(name, init, (n, cfg.hidden_size), cfg.precision.param)

        words = table(cfg.vocab_size, ("vocab", "embed"), "word_embeddings")
        positions = table(cfg.max_position_embeddings, (None, "embed"), "position_embeddings")
        types = table(cfg.type_vocab_size, (None, "embed"), "token_type_embeddings")
        h = jnp.take(words, input_ids, axis=0) + jnp.take(types, token_type_ids, axis=0)  # [B, L, E]
        h = h + jnp.take(positions, position_ids(input_ids, cfg), axis=0)
        h = _layer_norm(cfg, "ln")(h)
        h = nn.Dropout(cfg.hidden_dropout)(h, deterministic=deterministic)
        return h.astype(cfg.precision.dtype_for("residual"))


class BertLayer(nn.Module):
    """One post-LayerNorm transformer layer: h = LN(h + attn(h)); h = LN(h + mlp(h)). [B, L, E] -> same.

    mask [B, L]: 1/True = a real token that may be attended to (a key mask).
    """

    config: BertConfig

    @nn.compact
    def __call__(self, h, mask, deterministic: bool = True):
        cfg = self.config
        prec = cfg.precision
        hd = (cfg.num_heads, cfg.head_dim)
        qkv_axes = ("embed", "heads", "head_dim")
        q = _dense(hd, qkv_axes, "query", prec)(h)  # [B, L, H, Dh]
        k = _dense(hd, qkv_axes, "key", prec)(h)
        v = _dense(hd, qkv_axes, "value", prec)(h)
        drop = not deterministic and cfg.attention_dropout > 0
        ctx = dot_product_attention(
            q,
            k,
            v,
            mask=jnp.asarray(mask).astype(bool),  # [B, L] key mask
            dropout_rate=cfg.attention_dropout if drop else 0.0,
            dropout_rng=self.make_rng("dropout") if drop else None,
        )  # [B, L, H, Dh]
        out = _dense(cfg.hidden_size, ("heads", "head_dim", "embed"), "out", prec, in_axes=2)(ctx)
        out = nn.Dropout(cfg.hidden_dropout)(out, deterministic=deterministic)
        h = _layer_norm(cfg, "attn_ln")(h + out)
        m = _dense(cfg.intermediate_size, ("embed", "mlp"), "mlp_in", prec)(h)  # [B, L, F]
        m = gelu(m, cfg.hidden_act)
        m = _dense(cfg.hidden_size, ("mlp", "embed"), "mlp_out", prec)(m)  # [B, L, E]
        m = nn.Dropout(cfg.hidden_dropout)(m, deterministic=deterministic)
        h = _layer_norm(cfg, "mlp_ln")(h + m)
        self.sow("intermediates", "resid_post", h)
        return h


class BertModel(nn.Module):
    """BERT encoder. (input_ids [B, L], attention_mask [B, L], token_type_ids [B, L] or None) -> [B, L, E].

    Returns the last hidden state (Hugging Face's `BertModel(...).last_hidden_state`); no pooler.
    """

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic: bool = True):
        cfg = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}.")
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if attention_mask.shape != input_ids.shape or token_type_ids.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} and token_type_ids "
                f"{tuple(token_type_ids.shape)} must have the shape of input_ids {tuple(input_ids.shape)}."
            )
        if input_ids.shape[1] > cfg.max_length:
            raise ValueError(f"Sequences may have at most {cfg.max_length} tokens, got {input_ids.shape[1]}.")
        h = BertEmbeddings(cfg, name="embed")(input_ids, token_type_ids, deterministic)
        self.sow("intermediates", "embeddings", h)
        layer_cls = nn.remat(BertLayer, static_argnums=(3,)) if cfg.remat else BertLayer
        for i in range(cfg.num_layers):
            h = layer_cls(cfg, name=f"layer_{i}")(h, attention_mask, deterministic)
        return h


# Backbone configs by transformers' config.json `model_type`.
BACKBONES = {**{t: BertConfig for t in MODEL_TYPES}, MODERNBERT: ModernBertConfig}


def backbone_from_hf(hf: dict[str, Any]) -> BertConfig | ModernBertConfig:
    """The backbone config of a Hugging Face config.json dict, chosen by its `model_type` (default "bert")."""
    model_type = hf.get("model_type", "bert")
    if model_type not in BACKBONES:
        raise ValueError(
            f"config.json field 'model_type' is {model_type!r}; supported backbones are {sorted(BACKBONES)}."
        )
    return BACKBONES[model_type].from_hf(hf)


def backbone_module(config: BertConfig | ModernBertConfig) -> nn.Module:
    """`ModernBertModel` for a ModernBertConfig, else `BertModel`; (ids, mask, types) -> [B, L, E]."""
    if isinstance(config, ModernBertConfig):
        return ModernBertModel(config)
    return BertModel(config)


class ColBERT(nn.Module):
    """Backbone + ColBERT head. (ids [B, L], mask [B, L]) -> L2-normalised token vectors [B, L, dim].

    The backbone is `backbone_module(config.bert)`: a `BertModel`, or a `ModernBertModel` for a
    ModernBertConfig. Parameters: {"bert": backbone params, "linear": {"kernel": [E, dim]}} (logical names
    ("embed", "out")). The head runs in `precision.dtype_for("logits")` (float32 by default).
    Masking of the output (punctuation, padding) is the caller's job: it goes into MaxSim as d_mask.
    """

    config: ColBERTConfig

    def setup(self):
        prec = self.config.bert.precision
        self.bert = backbone_module(self.config.bert)
        self.linear = _dense(
            self.config.dim, ("embed", "out"), None, prec, use_bias=False, dtype=prec.dtype_for("logits")
        )

    def __call__(self, input_ids, attention_mask, token_type_ids=None, deterministic: bool = True):
        h = self.bert(input_ids, attention_mask, token_type_ids, deterministic)
        out_dtype = self.config.bert.precision.dtype_for("logits")
        return l2_normalize(self.linear(h.astype(out_dtype)))  # [B, L, dim]

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None, deterministic: bool = True):
        """The BERT's last hidden state [B, L, E]."""
        return self.bert(input_ids, attention_mask, token_type_ids, deterministic)


def sharding_examples() -> list[tuple[str, nn.Module, tuple]]:
    """One tiny instance and sample inputs of every Linen module of the package, for the (data=4, model=2)
    mesh test (`jaxzoo.init_sharded(module, key, *args, mesh=mesh)`): heads, MLP width and vocabulary are
    even, batches are 4."""
    cfg = ColBERTConfig.tiny()
    b, e = cfg.bert, cfg.bert.hidden_size
    ids = jnp.ones((4, 6), jnp.int32)
    mask = jnp.ones((4, 6), jnp.int32)
    return [
        ("BertEmbeddings", BertEmbeddings(b), (ids, jnp.zeros_like(ids))),
        ("BertLayer", BertLayer(b), (jnp.zeros((4, 6, e), jnp.float32), mask)),
        ("BertModel", BertModel(b), (ids, mask)),
        ("ColBERT", ColBERT(cfg), (ids, mask)),
        ("ColBERT[modernbert]", ColBERT(cfg.replace(bert=ModernBertConfig.tiny())), (ids, mask)),
        *modernbert_examples(),
    ]
