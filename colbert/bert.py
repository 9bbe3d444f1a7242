"""BERT in Flax Linen with Hugging Face `BertModel` numerics, and the ColBERT head on top.

ColBERT (Khattab & Zaharia 2020; ColBERTv2, Santhanam et al. 2022) encodes every token with a BERT,
projects it with a bias-free linear layer to `dim` (128) and L2-normalises it. This file holds:

- `BertConfig` / `ColBERTConfig`: frozen configs (field names follow our house style; `BertConfig.from_hf`
  and `to_hf` translate Hugging Face's config.json),
- pure array functions (`layer_norm`, `gelu`, `attention`, `l2_normalize`, `colbert_project`): the maths,
  tested against numpy,
- Linen modules `BertModel` (embeddings + post-LayerNorm layers) and `ColBERT` (BertModel + head).

Parameter tree of `BertModel` (what `colbert.encoder` converts Hugging Face weights into)::

    embed/{word_embeddings, position_embeddings, token_type_embeddings}/embedding, embed/ln/{scale, bias}
    layer_{i}/attn/{query, key, value}/{kernel [E, H, Dh], bias [H, Dh]}
    layer_{i}/attn/out/{kernel [H, Dh, E], bias [E]}, layer_{i}/attn_ln/{scale, bias}
    layer_{i}/mlp_in/{kernel [E, F], bias [F]}, layer_{i}/mlp_out/{kernel [F, E], bias [E]},
    layer_{i}/mlp_ln/{scale, bias}

Each layer sows its output as `intermediates/layer_{i}/resid_post`, the embedding output as
`intermediates/embeddings` (read them with `module.apply(..., mutable=["intermediates"])`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxzoo.nn import DenseGeneral

_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@dataclasses.dataclass(frozen=True)
class BertConfig:
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
    dtype: str = "float32"  # compute dtype: "float32", "bfloat16"/"float16", or "float64" (exactness tests)
    remat: bool = False  # rematerialise each layer in the backward pass (saves activation memory)

    def __post_init__(self):
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
        if self.dtype not in ("float32", "bfloat16", "float16", "float64"):
            raise ValueError(
                f"BertConfig.dtype must be float32, bfloat16, float16 or float64, got {self.dtype!r}."
            )
        if not (0.0 <= self.hidden_dropout < 1.0 and 0.0 <= self.attention_dropout < 1.0):
            raise ValueError("BertConfig dropout rates must lie in [0, 1).")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> BertConfig:
        """Build from a Hugging Face BERT config.json dict."""
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
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face config.json dict (model_type "bert")."""
        return {
            "model_type": "bert",
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
class ColBERTConfig:
    """ColBERT = BERT + bias-free projection to `dim` + L2 norm, and its tokenisation rules.

    Defaults follow stanford-futuredata/ColBERT `settings.py`, except `doc_maxlen` = 180 (the README's
    training example and PyLate's default, as issue 5 asks) instead of 220.
    """

    bert: BertConfig = dataclasses.field(default_factory=BertConfig)  # the backbone
    dim: int = 128  # output dimension of the ColBERT projection
    query_maxlen: int = 32  # queries are padded (with [MASK]) or truncated to exactly this many tokens
    doc_maxlen: int = 180  # documents are truncated to at most this many tokens
    mask_punctuation: bool = True  # drop punctuation tokens of documents from the MaxSim mask
    attend_to_mask_tokens: bool = False  # let the BERT attend to the [MASK] query padding
    query_token: str = "[unused0]"  # the [Q] marker inserted after [CLS] in queries
    doc_token: str = "[unused1]"  # the [D] marker inserted after [CLS] in documents

    def __post_init__(self):
        if self.dim < 1:
            raise ValueError(f"ColBERTConfig.dim must be positive, got {self.dim}.")
        for name in ("query_maxlen", "doc_maxlen"):
            value = getattr(self, name)
            if not 4 <= value <= self.bert.max_position_embeddings:
                raise ValueError(
                    f"ColBERTConfig.{name} must lie in [4, {self.bert.max_position_embeddings}] (room for "
                    f"[CLS], the marker, one token and [SEP]), got {value}."
                )


# ----------------------------------------------------------------------------------------------------
# The maths: pure array functions.


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm over the last axis, in float32 like PyTorch: (x - mean) / sqrt(var + eps) * scale + bias."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # bf16 -> f32; f64 (tests) stays f64
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale + bias).astype(x.dtype)


def gelu(x: jax.Array, kind: str = "gelu") -> jax.Array:
    """BERT's activations: "gelu" is the exact x * Phi(x) (erf), the others the tanh approximation."""
    if kind == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if kind in ("gelu_new", "gelu_pytorch_tanh"):
        return jax.nn.gelu(x, approximate=True)
    if kind == "relu":
        return jax.nn.relu(x)
    raise ValueError(f"Unknown activation {kind!r}; expected one of {_ACTIVATIONS}.")


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dropout_rate: float = 0.0, rng=None
) -> jax.Array:
    """Softmax attention with a key mask.

    q, k, v: [B, L, H, Dh]; mask: [B, L] (1/True = attend to that key). Returns [B, L, H, Dh].
    Masked keys get the dtype's most negative value before the softmax, as Hugging Face does, so a row
    whose keys are all masked attends uniformly instead of producing NaN. With dropout_rate > 0 (training)
    the probabilities are dropped with the key `rng` and rescaled by 1 / (1 - rate), as BERT does.
    """
    acc = jnp.promote_types(q.dtype, jnp.float32)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(acc) / math.sqrt(q.shape[-1])
    scores = jnp.where(mask[:, None, None, :].astype(bool), scores, jnp.finfo(acc).min)
    probs = jax.nn.softmax(scores, axis=-1)  # [B, H, Lq, Lk]
    if dropout_rate > 0:
        keep = jax.random.bernoulli(rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    probs = probs.astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||_2, eps) over the last axis (torch.nn.functional.normalize)."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    # rsqrt(max(|x|^2, eps^2)) == 1 / max(|x|, eps), but its gradient at x = 0 (padding) is 0, not NaN.
    inv = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(xf), -1, keepdims=True), eps * eps))
    return (xf * inv).astype(x.dtype)


def colbert_project(hidden: jax.Array, kernel: jax.Array) -> jax.Array:
    """The ColBERT head: [B, L, E] @ [E, dim] (no bias), then L2-normalise each token vector."""
    return l2_normalize(jnp.einsum("ble,ed->bld", hidden, kernel.astype(hidden.dtype)))


# ----------------------------------------------------------------------------------------------------
# Modules.

_init = nn.initializers.normal(stddev=0.02)  # BERT's initializer_range


def _dense(features, axes, name, in_axes=1, dtype=jnp.float32):
    """jaxzoo's DenseGeneral: kernel [*in_shape, *features] at its real shape with logical names `axes`."""
    features = tuple(features) if isinstance(features, tuple) else (features,)
    return DenseGeneral(features, tuple(axes), n_in=in_axes, kernel_init=_init, dtype=dtype, name=name)


class _LayerNorm(nn.Module):
    """LayerNorm calling `layer_norm` (PyTorch numerics: biased variance, eps inside the sqrt)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x):
        e = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (e,))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (e,))
        return layer_norm(x, scale, bias, self.config.layer_norm_eps)


class BertEmbeddings(nn.Module):
    """word + absolute position + token type embeddings, then LayerNorm and dropout. [B, L] -> [B, L, E]."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool = True):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)

        def table(n, axes, name):
            return self.param(name, nn.with_logical_partitioning(_init, axes), (n, cfg.hidden_size))

        words = table(cfg.vocab_size, ("vocab", "embed"), "word_embeddings")
        positions = table(cfg.max_position_embeddings, (None, "embed"), "position_embeddings")
        types = table(cfg.type_vocab_size, (None, "embed"), "token_type_embeddings")
        length = input_ids.shape[1]
        h = jnp.take(words, input_ids, axis=0) + jnp.take(types, token_type_ids, axis=0)  # [B, L, E]
        h = h + positions[None, :length]
        h = _LayerNorm(cfg, name="ln")(h)
        h = nn.Dropout(cfg.hidden_dropout)(h, deterministic=deterministic)
        return h.astype(dtype)


class BertLayer(nn.Module):
    """One post-LayerNorm transformer layer: h = LN(h + attn(h)); h = LN(h + mlp(h)). [B, L, E] -> same."""

    config: BertConfig

    @nn.compact
    def __call__(self, h, mask, deterministic: bool = True):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        hd = (cfg.num_heads, cfg.head_dim)
        qkv_axes = ("embed", "heads", "head_dim")
        q = _dense(hd, qkv_axes, "query", dtype=dtype)(h)  # [B, L, H, Dh]
        k = _dense(hd, qkv_axes, "key", dtype=dtype)(h)
        v = _dense(hd, qkv_axes, "value", dtype=dtype)(h)
        drop = not deterministic and cfg.attention_dropout > 0
        rng = self.make_rng("dropout") if drop else None
        ctx = attention(q, k, v, mask, dropout_rate=cfg.attention_dropout if drop else 0.0, rng=rng)
        out = _dense(cfg.hidden_size, ("heads", "head_dim", "embed"), "out", in_axes=2, dtype=dtype)(ctx)
        out = nn.Dropout(cfg.hidden_dropout)(out, deterministic=deterministic)
        h = _LayerNorm(cfg, name="attn_ln")(h + out)
        m = _dense(cfg.intermediate_size, ("embed", "mlp"), "mlp_in", dtype=dtype)(h)  # [B, L, F]
        m = gelu(m, cfg.hidden_act)
        m = _dense(cfg.hidden_size, ("mlp", "embed"), "mlp_out", dtype=dtype)(m)  # [B, L, E]
        m = nn.Dropout(cfg.hidden_dropout)(m, deterministic=deterministic)
        h = _LayerNorm(cfg, name="mlp_ln")(h + m)
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
        if input_ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"Sequences may have at most {cfg.max_position_embeddings} tokens, got {input_ids.shape[1]}."
            )
        h = BertEmbeddings(cfg, name="embed")(input_ids, token_type_ids, deterministic)
        self.sow("intermediates", "embeddings", h)
        layer_cls = nn.remat(BertLayer, static_argnums=(3,)) if cfg.remat else BertLayer
        for i in range(cfg.num_layers):
            h = layer_cls(cfg, name=f"layer_{i}")(h, attention_mask, deterministic)
        return h


class ColBERT(nn.Module):
    """BERT + ColBERT head. (ids [B, L], mask [B, L]) -> L2-normalised token vectors [B, L, dim].

    Parameters: {"bert": BertModel params, "linear": {"kernel": [E, dim]}}. The output is float32.
    Masking of the output (punctuation, padding) is the caller's job: it goes into MaxSim as d_mask.
    """

    config: ColBERTConfig

    def setup(self):
        self.bert = BertModel(self.config.bert)
        self.linear = nn.Dense(
            self.config.dim,
            use_bias=False,
            dtype=jnp.promote_types(self.config.bert.dtype, jnp.float32),
            kernel_init=nn.with_logical_partitioning(_init, ("embed", "colbert_dim")),
        )

    def __call__(self, input_ids, attention_mask, token_type_ids=None, deterministic: bool = True):
        h = self.bert(input_ids, attention_mask, token_type_ids, deterministic)
        return l2_normalize(self.linear(h.astype(jnp.promote_types(h.dtype, jnp.float32))))  # [B, L, dim]

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None, deterministic: bool = True):
        """The BERT's last hidden state [B, L, E]."""
        return self.bert(input_ids, attention_mask, token_type_ids, deterministic)
