"""ModernBERT in Flax Linen with Hugging Face `ModernBertModel` numerics (the backbone of PyLate's
GTE-ModernColBERT and most recent ColBERT models).

ModernBERT (Warner et al. 2024, "Smarter, Better, Faster, Longer") differs from BERT in five places:

- no position table: rotary embeddings (`jaxzoo.rope`, half-split pairs), theta `global_rope_theta`
  (160000) in global layers and `local_rope_theta` (10000) in local ones;
- alternating attention: layer i attends globally when i % `global_attn_every_n_layers` == 0, otherwise
  within a sliding window: query i sees key j iff |i - j| <= `local_attention` // 2 (`jaxzoo.dot_product_attention`'s
  `local_window`);
- pre-LayerNorm layers without biases: h += attn(LN(h)) (layer 0 has no attention norm: the embedding norm
  is its input norm); h += mlp(LN(h)); a final LayerNorm; norms, projections and the MLP have no bias;
- a GeGLU MLP: Wi maps E -> 2F, split into (input, gate); out = Wo(gelu(input) * gate);
- one fused Wqkv projection [E -> 3 * H * Dh].

This file holds `ModernBertConfig` (a `jaxzoo.Config`, with `from_hf` / `to_hf` for transformers'
config.json and presets `base()`, `large()`, `tiny()`), the Linen modules
`ModernBertEmbeddings`, `ModernBertLayer` and `ModernBertModel` (built on jaxzoo's `DenseGeneral`,
`LayerNorm`, `dot_product_attention` and `rope`), and the weight converters `hf_to_params` /
`params_to_hf` between transformers' state dict and our parameter tree::

    embed/tok_embeddings [V, E]                       <- embeddings.tok_embeddings.weight
    embed/norm/scale [E]                              <- embeddings.norm.weight
    layer_{i}/attn_norm/scale (i > 0)                 <- layers.{i}.attn_norm.weight
    layer_{i}/qkv/kernel [E, 3, H, Dh]                <- layers.{i}.attn.Wqkv.weight [3 H Dh, E]
    layer_{i}/attn_out/kernel [H, Dh, E]              <- layers.{i}.attn.Wo.weight [E, E]
    layer_{i}/mlp_norm/scale                          <- layers.{i}.mlp_norm.weight
    layer_{i}/mlp_in/kernel [E, 2, F]                 <- layers.{i}.mlp.Wi.weight [2 F, E] (input, gate)
    layer_{i}/mlp_out/kernel [F, E]                   <- layers.{i}.mlp.Wo.weight [E, F]
    final_norm/scale                                  <- final_norm.weight

(with `bias` leaves where `norm_bias` / `attention_bias` / `mlp_bias` are set). Keys may carry the "model."
prefix of `ModernBertForMaskedLM` and Stanford `HF_ColBERT` checkpoints; the masked-LM head is ignored.

Masking: a query whose window holds no real key (a padding position far from every real token) gets zeros
from `jaxzoo.dot_product_attention`, where transformers averages uniformly; real tokens always see
themselves, so the two agree on every real token. ModernBERT has no token types: `token_type_ids` is
accepted (the BERT signature) and ignored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxzoo
from jaxzoo.nn import DenseGeneral, LayerNorm, dot_product_attention, rope

MODEL_TYPE = "modernbert"
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class ModernBertConfig(jaxzoo.Config):
    """A ModernBERT encoder (transformers' `ModernBertConfig`). Defaults are answerdotai/ModernBERT-base."""

    vocab_size: int = 50368  # V: BPE vocabulary size
    hidden_size: int = 768  # E: model width
    num_layers: int = 22  # number of transformer layers
    num_heads: int = 12  # H: attention heads; head_dim = hidden_size // num_heads
    intermediate_size: int = 1152  # F: GeGLU width (Wi maps E -> 2F: input and gate)
    max_position_embeddings: int = 8192  # longest sequence the model was trained on (RoPE has no table)
    norm_eps: float = 1e-5  # LayerNorm epsilon
    norm_bias: bool = False  # LayerNorms carry a bias
    attention_bias: bool = False  # Wqkv and Wo carry biases
    mlp_bias: bool = False  # Wi and Wo of the MLP carry biases
    hidden_act: str = "gelu"  # GeGLU activation: "gelu" (erf), "gelu_new"/"gelu_pytorch_tanh", "relu", "silu"
    global_attn_every_n_layers: int = 3  # layer i attends globally iff i % n == 0, else in a sliding window
    local_attention: int = 128  # sliding window: query i sees keys j with |i - j| <= local_attention // 2
    global_rope_theta: float = 160000.0  # RoPE base of the global layers
    local_rope_theta: float = 10000.0  # RoPE base of the sliding-window layers
    embedding_dropout: float = 0.0  # dropout after the embedding norm (training only)
    attention_dropout: float = 0.0  # dropout on attention probabilities and the attention output
    mlp_dropout: float = 0.0  # dropout on the GeGLU product (training only)
    pad_token_id: int = 50283  # id of [PAD]
    cls_token_id: int = 50281  # id of [CLS] (transformers' bos_token_id)
    sep_token_id: int = 50282  # id of [SEP] (transformers' eos_token_id)
    precision: jaxzoo.Precision = jaxzoo.Precision()  # param/compute dtypes (float64 for exactness tests)
    remat: bool = False  # rematerialise each layer in the backward pass (saves activation memory)

    def __post_init__(self):
        positive = ("vocab_size", "hidden_size", "num_heads", "intermediate_size", "max_position_embeddings",
                    "global_attn_every_n_layers", "local_attention")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"ModernBertConfig.{name} must be positive, got {getattr(self, name)}.")
        if self.num_layers < 0:
            raise ValueError(f"ModernBertConfig.num_layers must be >= 0, got {self.num_layers}.")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"ModernBertConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads}) into an even head_dim (RoPE rotates pairs)."
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"ModernBertConfig.hidden_act must be one of {tuple(_ACTIVATIONS)}, got {self.hidden_act!r}."
            )
        if not (self.global_rope_theta > 0 and self.local_rope_theta > 0):
            raise ValueError(
                f"ModernBertConfig RoPE thetas must be positive, got global {self.global_rope_theta} and "
                f"local {self.local_rope_theta}."
            )
        for name in ("embedding_dropout", "attention_dropout", "mlp_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"ModernBertConfig.{name} must lie in [0, 1), got {getattr(self, name)}.")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"ModernBertConfig.pad_token_id must lie in [0, vocab_size={self.vocab_size}), got "
                f"{self.pad_token_id}."
            )
        if not isinstance(self.precision, jaxzoo.Precision):
            raise ValueError(
                "ModernBertConfig.precision must be a jaxzoo.Precision (e.g. "
                f"jaxzoo.Precision.of('bfloat16')), got {self.precision!r}."
            )

    @property
    def model_type(self) -> str:
        """transformers' model_type, "modernbert" (`BertConfig.model_type` is a field; here it is fixed)."""
        return MODEL_TYPE

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_length(self) -> int:
        """Longest sequence the model was trained on (`ColBERTConfig` checks query/doc lengths against it)."""
        return self.max_position_embeddings

    def is_global(self, layer: int) -> bool:
        """Whether layer `layer` attends globally (else within the sliding window)."""
        return layer % self.global_attn_every_n_layers == 0

    @property
    def layer_types(self) -> tuple[str, ...]:
        """transformers' `layer_types`: "full_attention" / "sliding_attention" per layer."""
        return tuple(
            "full_attention" if self.is_global(i) else "sliding_attention" for i in range(self.num_layers)
        )

    # -- presets ----------------------------------------------------------------------------------------

    @classmethod
    def base(cls, **changes) -> ModernBertConfig:
        """answerdotai/ModernBERT-base (GTE-ModernColBERT-v1's backbone): 22 layers, width 768, 12 heads,
        GeGLU 1152 (the defaults)."""
        return cls(**changes)

    @classmethod
    def large(cls, **changes) -> ModernBertConfig:
        """answerdotai/ModernBERT-large: 28 layers, width 1024, 16 heads, GeGLU 2624."""
        return cls(
            **{"hidden_size": 1024, "num_layers": 28, "num_heads": 16, "intermediate_size": 2624, **changes}
        )

    @classmethod
    def tiny(cls, **changes) -> ModernBertConfig:
        """3 layers (global, local, local), width 16, 2 heads, GeGLU 24, window 4, vocabulary 64, pad id 0
        (tests and smoke runs)."""
        return cls(
            **{
                "vocab_size": 64,
                "hidden_size": 16,
                "num_layers": 3,
                "num_heads": 2,
                "intermediate_size": 24,
                "max_position_embeddings": 64,
                "local_attention": 4,
                "pad_token_id": 0,
                "cls_token_id": 2,
                "sep_token_id": 3,
                **changes,
            }
        )

    # -- transformers' config.json ----------------------------------------------------------------------

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> ModernBertConfig:
        """Build from transformers' ModernBertConfig dict (config.json): the current form (`layer_types`,
        `rope_parameters`) or the one before transformers 5 (`global_attn_every_n_layers`,
        `global_rope_theta`, `local_rope_theta`)."""
        model_type = hf.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(
                f"ModernBertConfig.from_hf needs model_type 'modernbert'; the config holds {model_type!r}."
            )
        num_layers = hf.get("num_hidden_layers", 22)
        every = hf.get("global_attn_every_n_layers", 3)
        layer_types = hf.get("layer_types")
        if layer_types is not None:
            every = _every_n(layer_types, num_layers)
        rope = hf.get("rope_parameters") or {}
        thetas = {}
        for ours, key, legacy, default in (
            ("global_rope_theta", "full_attention", "global_rope_theta", 160000.0),
            ("local_rope_theta", "sliding_attention", "local_rope_theta", 10000.0),
        ):
            params = rope.get(key) or {}
            if params.get("rope_type", "default") != "default":
                raise ValueError(
                    f"Only default RoPE is supported; config field 'rope_parameters' asks for rope_type "
                    f"{params['rope_type']!r} in {key} layers."
                )
            thetas[ours] = float(params.get("rope_theta", hf.get(legacy) or default))
        if hf.get("rope_scaling"):
            raise ValueError(
                f"Only default RoPE is supported; config field 'rope_scaling' is {hf['rope_scaling']!r}."
            )
        if hf.get("head_dim") not in (None, hf.get("hidden_size", 768) // hf.get("num_attention_heads", 12)):
            raise ValueError(
                f"config field 'head_dim' = {hf['head_dim']} must be hidden_size // num_attention_heads."
            )
        pick = lambda key, default: default if hf.get(key) is None else hf[key]
        kwargs = dict(
            vocab_size=pick("vocab_size", 50368),
            hidden_size=pick("hidden_size", 768),
            num_layers=num_layers,
            num_heads=pick("num_attention_heads", 12),
            intermediate_size=pick("intermediate_size", 1152),
            max_position_embeddings=pick("max_position_embeddings", 8192),
            norm_eps=float(pick("norm_eps", 1e-5)),
            norm_bias=pick("norm_bias", False),
            attention_bias=pick("attention_bias", False),
            mlp_bias=pick("mlp_bias", False),
            hidden_act=pick("hidden_activation", "gelu"),
            global_attn_every_n_layers=every,
            local_attention=pick("local_attention", 128),
            embedding_dropout=float(pick("embedding_dropout", 0.0)),
            attention_dropout=float(pick("attention_dropout", 0.0)),
            mlp_dropout=float(pick("mlp_dropout", 0.0)),
            pad_token_id=pick("pad_token_id", 50283),
            cls_token_id=pick("cls_token_id", 50281),
            sep_token_id=pick("sep_token_id", 50282),
            **thetas,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """transformers' config.json dict: both the current keys (`layer_types`, `rope_parameters`) and the
        older ones (`global_attn_every_n_layers`, `*_rope_theta`), so transformers 4.48+ and 5 read it."""
        return {
            "model_type": MODEL_TYPE,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "norm_eps": self.norm_eps,
            "norm_bias": self.norm_bias,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "hidden_activation": self.hidden_act,
            "global_attn_every_n_layers": self.global_attn_every_n_layers,
            "layer_types": list(self.layer_types),
            "local_attention": self.local_attention,
            "global_rope_theta": self.global_rope_theta,
            "local_rope_theta": self.local_rope_theta,
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": self.global_rope_theta},
                "sliding_attention": {"rope_type": "default", "rope_theta": self.local_rope_theta},
            },
            "embedding_dropout": self.embedding_dropout,
            "attention_dropout": self.attention_dropout,
            "mlp_dropout": self.mlp_dropout,
            "pad_token_id": self.pad_token_id,
            "cls_token_id": self.cls_token_id,
            "sep_token_id": self.sep_token_id,
            "bos_token_id": self.cls_token_id,
            "eos_token_id": self.sep_token_id,
            "initializer_range": 0.02,
            "initializer_cutoff_factor": 2.0,
        }


def _every_n(layer_types, num_layers: int) -> int:
    """The n of transformers' `layer_types` of the "global every n layers" pattern, else ValueError."""
    kinds = tuple(layer_types)
    if len(kinds) != num_layers:
        raise ValueError(
            f"config field 'layer_types' lists {len(kinds)} layers, num_hidden_layers is {num_layers}."
        )
    globals_ = [i for i, kind in enumerate(kinds) if kind == "full_attention"]
    every = globals_[1] if len(globals_) > 1 else max(num_layers, 1)
    want = tuple("full_attention" if i % every == 0 else "sliding_attention" for i in range(num_layers))
    if kinds != want:
        raise ValueError(
            "config field 'layer_types' must be 'full_attention' every n layers from layer 0 and "
            f"'sliding_attention' elsewhere; got {list(kinds)}."
        )
    return every


# ----------------------------------------------------------------------------------------------------
# Modules.

_embed_init = nn.initializers.truncated_normal(0.02, lower=-2.0, upper=2.0)  # initializer_range, cutoff 2


def _norm(cfg: ModernBertConfig, name: str) -> LayerNorm:
    return LayerNorm(eps=cfg.norm_eps, use_bias=cfg.norm_bias, param_dtype=cfg.precision.param, name=name)


def _dense(cfg: ModernBertConfig, features, axes, name, *, n_in=1, use_bias=False, out_proj=False):
    """jaxzoo's DenseGeneral with ModernBERT's init: truncated normal 0.02 (divided by sqrt(2 * layers) for
    the output projections), cut at 2 std."""
    std = 0.02 / math.sqrt(2.0 * max(cfg.num_layers, 1)) if out_proj else 0.02
    return DenseGeneral(
        tuple(features) if isinstance(features, tuple) else (features,),
        tuple(axes),
        n_in=n_in,
        use_bias=use_bias,
        kernel_init=nn.initializers.truncated_normal(std, lower=-2.0, upper=2.0),
        dtype=cfg.precision.compute,
        param_dtype=cfg.precision.param,
        name=name,
    )


class ModernBertEmbeddings(nn.Module):
    """Token embeddings, LayerNorm (no bias) and dropout; no positions (RoPE). [B, L] -> [B, L, E]."""

    config: ModernBertConfig

    @nn.compact
    def __call__(self, input_ids, deterministic: bool = True):
        cfg = self.config
        init = nn.with_logical_partitioning(_embed_init, ("vocab", "embed"))
        table = self.param("tok_embeddings", init, (cfg.vocab_size, cfg.hidden_size), cfg.precision.param)
        h = jnp.take(table, input_ids, axis=0)  # [B, L, E]
        h = _norm(cfg, "norm")(h)
        h = nn.Dropout(cfg.embedding_dropout)(h, deterministic=deterministic)
        return h.astype(cfg.precision.dtype_for("residual"))


class ModernBertLayer(nn.Module):
    """One pre-LayerNorm layer: h += Wo attn(rope(Wqkv LN(h))); h += Wo (gelu(in) * gate)(Wi LN(h)).

    Layer `index` attends globally (RoPE theta `global_rope_theta`) when index % global_attn_every_n_layers
    == 0, else within the sliding window (theta `local_rope_theta`); layer 0 has no attention norm.
    h [B, L, E], mask [B, L] (1/True = a real token that may be attended to) -> [B, L, E].
    """

    config: ModernBertConfig
    index: int = 0

    @nn.compact
    def __call__(self, h, mask, deterministic: bool = True):
        cfg = self.config
        length = h.shape[1]
        is_global = cfg.is_global(self.index)
        x = h if self.index == 0 else _norm(cfg, "attn_norm")(h)
        qkv = _dense(cfg, (3, cfg.num_heads, cfg.head_dim), ("embed", None, "heads", "head_dim"), "qkv",
                     use_bias=cfg.attention_bias)(x)  # [B, L, 3, H, Dh]  # fmt: skip
        positions = jnp.arange(length)
        theta = cfg.global_rope_theta if is_global else cfg.local_rope_theta
        q = rope(qkv[:, :, 0], positions, theta)  # [B, L, H, Dh]
        k = rope(qkv[:, :, 1], positions, theta)
        v = qkv[:, :, 2]
        allowed = jnp.asarray(mask).astype(bool)[:, None, None, :]  # [B, 1, 1, L]
        window = None if is_global else cfg.local_attention // 2  # |i - j| <= local_attention // 2
        drop = not deterministic and cfg.attention_dropout > 0
        ctx = dot_product_attention(
            q,
            k,
            v,
            mask=allowed,
            local_window=window,
            dropout_rate=cfg.attention_dropout if drop else 0.0,
            dropout_rng=self.make_rng("dropout") if drop else None,
        )  # [B, L, H, Dh]
        out = _dense(cfg, cfg.hidden_size, ("heads", "head_dim", "embed"), "attn_out", n_in=2,
                     use_bias=cfg.attention_bias, out_proj=True)(ctx)  # [B, L, E]  # fmt: skip
        out = nn.Dropout(cfg.attention_dropout)(out, deterministic=deterministic)
        h = h + out
        m = _dense(cfg, (2, cfg.intermediate_size), ("embed", None, "mlp"), "mlp_in",
                   use_bias=cfg.mlp_bias)(_norm(cfg, "mlp_norm")(h))  # [B, L, 2, F]  # fmt: skip
        m = _ACTIVATIONS[cfg.hidden_act](m[..., 0, :]) * m[..., 1, :]  # [B, L, F]
        m = nn.Dropout(cfg.mlp_dropout)(m, deterministic=deterministic)
        m = _dense(cfg, cfg.hidden_size, ("mlp", "embed"), "mlp_out", use_bias=cfg.mlp_bias, out_proj=True)(m)
        h = h + m
        self.sow("intermediates", "resid_post", h)
        return h


class ModernBertModel(nn.Module):
    """ModernBERT encoder. (input_ids [B, L], attention_mask [B, L], token_type_ids ignored) -> [B, L, E].

    Returns the last hidden state after the final norm (transformers' `ModernBertModel(...)
    .last_hidden_state`); the same call signature as `colbert.BertModel`, so the ColBERT head and `Encoder`
    take either. Sows `intermediates/embeddings` and `intermediates/layer_{i}/resid_post` (before the final
    norm).
    """

    config: ModernBertConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic: bool = True):
        cfg = self.config
        del token_type_ids  # ModernBERT has no segment embeddings
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}.")
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                f"{tuple(input_ids.shape)}."
            )
        h = ModernBertEmbeddings(cfg, name="embed")(input_ids, deterministic)
        self.sow("intermediates", "embeddings", h)
        layer_cls = nn.remat(ModernBertLayer, static_argnums=(3,)) if cfg.remat else ModernBertLayer
        for i in range(cfg.num_layers):
            h = layer_cls(cfg, index=i, name=f"layer_{i}")(h, attention_mask, deterministic)
        return _norm(cfg, "final_norm")(h)


# ----------------------------------------------------------------------------------------------------
# Weight conversion: transformers' ModernBertModel state dict <-> our parameter tree.

PREFIX = "model."  # base_model_prefix of ModernBertForMaskedLM and of Stanford HF_ColBERT checkpoints


def hf_to_params(state: dict[str, np.ndarray], config: ModernBertConfig) -> dict:
    """transformers `ModernBertModel` weights (keys with or without "model.") -> `ModernBertModel` params
    (numpy f32). A missing key or a shape the config does not expect raises ValueError naming the key."""
    if any(k.startswith(PREFIX) for k in state):
        state = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    e, h, dh, f = config.hidden_size, config.num_heads, config.head_dim, config.intermediate_size

    def get(key, shape):
        if key not in state:
            raise ValueError(f"The checkpoint has no weight {key!r}; is it a ModernBERT of this config?")
        value = np.asarray(state[key], dtype=np.float32)
        if value.shape != tuple(shape):
            raise ValueError(
                f"Weight {key!r} has shape {value.shape}, the config (vocab_size {config.vocab_size}, "
                f"hidden_size {e}, intermediate_size {f}) expects {tuple(shape)}."
            )
        return value

    def norm(prefix):
        out = {"scale": get(f"{prefix}.weight", (e,))}
        if config.norm_bias:
            out["bias"] = get(f"{prefix}.bias", (e,))
        return out

    def dense(prefix, out_shape, in_size, kernel_shape, bias):
        layer = {"kernel": get(f"{prefix}.weight", (math.prod(out_shape), in_size)).T.reshape(kernel_shape)}
        if bias:
            layer["bias"] = get(f"{prefix}.bias", (math.prod(out_shape),)).reshape(out_shape)
        return layer

    params = {
        "embed": {
            "tok_embeddings": get("embeddings.tok_embeddings.weight", (config.vocab_size, e)),
            "norm": norm("embeddings.norm"),
        },
        "final_norm": norm("final_norm"),
    }
    for i in range(config.num_layers):
        p = f"layers.{i}"
        layer = {
            "qkv": dense(f"{p}.attn.Wqkv", (3, h, dh), e, (e, 3, h, dh), config.attention_bias),
            "attn_out": dense(f"{p}.attn.Wo", (e,), e, (h, dh, e), config.attention_bias),
            "mlp_norm": norm(f"{p}.mlp_norm"),
            "mlp_in": dense(f"{p}.mlp.Wi", (2, f), e, (e, 2, f), config.mlp_bias),
            "mlp_out": dense(f"{p}.mlp.Wo", (e,), f, (f, e), config.mlp_bias),
        }
        if i > 0:
            layer["attn_norm"] = norm(f"{p}.attn_norm")
        params[f"layer_{i}"] = layer
    return params


def params_to_hf(params: dict, config: ModernBertConfig, prefix: str = "") -> dict[str, np.ndarray]:
    """`ModernBertModel` params -> transformers `ModernBertModel` state dict (numpy f32, contiguous), keys
    `prefix` + ... (`PREFIX` for a Stanford HF_ColBERT folder)."""
    a = lambda x: np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    out = {"embeddings.tok_embeddings.weight": a(params["embed"]["tok_embeddings"])}

    def norm(key, tree):
        out[f"{key}.weight"] = a(tree["scale"])
        if "bias" in tree:
            out[f"{key}.bias"] = a(tree["bias"])

    def dense(key, tree, n_in):
        kernel = np.asarray(tree["kernel"])
        n = math.prod(kernel.shape[:n_in])
        out[f"{key}.weight"] = a(kernel.reshape(n, -1).T)  # [out, in]
        if "bias" in tree:
            out[f"{key}.bias"] = a(np.asarray(tree["bias"]).reshape(-1))

    norm("embeddings.norm", params["embed"]["norm"])
    for i in range(config.num_layers):
        layer, p = params[f"layer_{i}"], f"layers.{i}"
        if i > 0:
            norm(f"{p}.attn_norm", layer["attn_norm"])
        dense(f"{p}.attn.Wqkv", layer["qkv"], 1)
        dense(f"{p}.attn.Wo", layer["attn_out"], 2)
        norm(f"{p}.mlp_norm", layer["mlp_norm"])
        dense(f"{p}.mlp.Wi", layer["mlp_in"], 1)
        dense(f"{p}.mlp.Wo", layer["mlp_out"], 1)
    norm("final_norm", params["final_norm"])
    return {prefix + k: v for k, v in out.items()}


def sharding_examples() -> list[tuple[str, nn.Module, tuple]]:
    """Tiny instances of this file's modules for the (data=4, model=2) mesh test (heads 2, GeGLU width 24 and
    vocabulary 64 are even, batches are 4); `colbert.sharding_examples` includes them."""
    cfg = ModernBertConfig.tiny()
    ids = jnp.ones((4, 6), jnp.int32)
    mask = jnp.ones((4, 6), jnp.int32)
    h = jnp.zeros((4, 6, cfg.hidden_size), jnp.float32)
    return [
        ("ModernBertEmbeddings", ModernBertEmbeddings(cfg), (ids,)),
        ("ModernBertLayer", ModernBertLayer(cfg, index=1), (h, mask)),
        ("ModernBertModel", ModernBertModel(cfg), (ids, mask)),
    ]
