"""JRT-RNN and Based language models as Linen modules (the maths is in `jrt.ops`).

A block is pre-norm: x += Mixer(RMSNorm(x)); x += SwiGLU(RMSNorm(x)), with a float32 residual stream.
Mixers: "conv" (BaseConv), "swa" (sliding-window softmax attention with RoPE), "pla" (prefix linear
attention, JRT) and "la" (causal linear attention, Based). No position embeddings; the LM head is tied.

Three modes share one parameter tree:
  "parallel": training / scoring, input_ids [B, L] -> logits [B, L, V];
  "prefill":  the same, and writes a constant-size "cache" collection (call with mutable=["cache"]);
  "decode":   input_ids [B, 1], reads and updates the cache (LA/PLA state, SWA rolling window, conv
              state, position index).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxzoo
from jrt import ops
from jrt.config import JRTConfig

MODES = ("parallel", "prefill", "decode")


def _normal(std: float, axes: tuple):
    return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def _zeros(axes: tuple):
    return nn.with_logical_partitioning(nn.initializers.zeros, axes)


def _out_std(cfg: JRTConfig) -> float:
    """The scaled residual init of out_proj / fc2: std / sqrt(2 * n_layers)."""
    return cfg.init_std / math.sqrt(2 * cfg.n_layers)


def _dense(cfg, features, axes, *, std=None, axis=-1, bias=False, name=None):
    """A DenseGeneral whose kernel axes are named ``axes`` (None: an unsharded split like q/k/v)."""
    return jaxzoo.DenseGeneral(
        features=(features,) if isinstance(features, int) else tuple(features),
        axes=axes,
        n_in=1 if axis == -1 else len(axis),
        kernel_init=nn.initializers.normal(cfg.init_std if std is None else std),
        use_bias=bias,
        dtype=cfg.precision.compute,
        param_dtype=cfg.precision.param,
        name=name,
    )


def _rms_norm(cfg, name):
    return jaxzoo.RMSNorm(eps=cfg.norm_eps, axis_name="embed", param_dtype=cfg.precision.param, name=name)


def _norm(cfg, name, x):
    """RMSNorm of the residual stream, statistics in ``precision.dtype_for("norm")``, output in compute."""
    return _rms_norm(cfg, name)(x.astype(cfg.precision.dtype_for("norm"))).astype(cfg.precision.compute)


def check_token_ids(ids, vocab_size: int, what: str = "input_ids") -> None:
    """ValueError when concrete token ids fall outside [0, vocab_size) (skipped for traced arrays)."""
    if isinstance(ids, jax.core.Tracer):
        return
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(
            f"{what} must be token ids in [0, {vocab_size}), but got values in [{ids.min()}, {ids.max()}]."
        )


def check_mask(mask, shape, what: str = "mask") -> None:
    """ValueError unless `mask` [B, L] has exactly `shape` and, when concrete, every row is left-padded
    (False...False True...True) with at least one real token."""
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{what} must have the shape [B, L] = {tuple(shape)} of the token ids, but got {tuple(mask.shape)}."
        )
    if isinstance(mask, jax.core.Tracer):
        return
    mask = np.asarray(mask).astype(bool)
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise ValueError(
            f"{what} row {int(empty[0])} is all padding; every row needs at least one real token."
        )
    right = np.flatnonzero((mask[:, :-1] & ~mask[:, 1:]).any(axis=1))
    if right.size:
        raise ValueError(
            f"{what} must be left padding (False ... False True ... True), but row {int(right[0])} has a "
            "padded position after a real token (right padding or a hole)."
        )


def check_inputs(cfg: JRTConfig, input_ids, mask, mode: str) -> None:
    """Shape and value checks of `LM.__call__`, on shapes before tracing."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, but got {mode!r}.")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must have rank 2 [B, L], but got shape {tuple(input_ids.shape)}.")
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise ValueError(f"input_ids must be integer token ids, but got dtype {input_ids.dtype}.")
    n = input_ids.shape[1]
    if mode == "decode":
        if n != 1:
            raise ValueError(f"decode mode takes one token per sequence [B, 1], but got length {n}.")
    else:
        if n > cfg.max_len:
            raise ValueError(
                f"The sequence has {n} tokens, longer than the configured context {cfg.max_len}."
            )
        if n < cfg.prefix_len:
            raise ValueError(
                f"The encoder length M={cfg.prefix_len} must be at most the sequence length L={n}; "
                "left-pad the prompt to M tokens (jrt.generate does this)."
            )
    if mask is not None:
        check_mask(mask, input_ids.shape)
    check_token_ids(input_ids, cfg.vocab_size)


class BaseConv(nn.Module):
    """in_proj d -> 4d (bias), halves u1, u2; y = out_proj(silu(causal_conv3(u1)) * u2) (bias)."""

    config: JRTConfig
    mode: str = "parallel"

    @nn.compact
    def __call__(self, x, mask, positions, prefix=None):  # x [B, L, d] -> [B, L, d]
        cfg = self.config
        inner = cfg.conv_expand * cfg.d_model // 2
        u = _dense(cfg, (2, inner), ("embed", None, "mlp"), bias=True, name="in_proj")(x)  # [B, L, 2, E]
        u1, u2 = u[..., 0, :], u[..., 1, :]
        if cfg.padding == "exact":
            u1 = u1 * mask[..., None].astype(u1.dtype)  # padded tokens feed nothing into the convolution
        # torch Conv1d's default init (kaiming-uniform, a=sqrt(5)): U(-1/sqrt(K), 1/sqrt(K)) for depthwise.
        bound = 1.0 / math.sqrt(cfg.conv_kernel)
        kernel = self.param(
            "conv_kernel",
            nn.with_logical_partitioning(
                lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound),
                ("kernel", "mlp"),
            ),
            (cfg.conv_kernel, inner),
            cfg.precision.param,
        ).astype(u1.dtype)  # [K, E]
        if self.mode == "decode":
            state = self.variable("cache", "conv_state", jnp.zeros, (x.shape[0], cfg.conv_kernel - 1, inner))
            y, new = ops.conv_decode_step(u1[:, 0], state.value.astype(u1.dtype), kernel)
            state.value = new.astype(state.value.dtype)
            y = y[:, None]
        else:
            y = ops.causal_depthwise_conv(u1, kernel)
            if self.mode == "prefill":  # the last K-1 inputs (zeros before the start)
                padded = jnp.pad(u1, ((0, 0), (cfg.conv_kernel - 1, 0), (0, 0)))
                tail = padded[:, padded.shape[1] - (cfg.conv_kernel - 1) :]
                self.variable("cache", "conv_state", lambda: tail.astype(jnp.float32))
        y = nn.silu(y) * u2
        return _dense(cfg, cfg.d_model, ("mlp", "embed"), std=_out_std(cfg), bias=True, name="out_proj")(y)


class SlidingWindowAttention(nn.Module):
    """Softmax attention over itself + `config.window` previous tokens; fused Wqkv, RoPE, no biases."""

    config: JRTConfig
    mode: str = "parallel"

    @nn.compact
    def __call__(self, x, mask, positions, prefix=None):
        cfg = self.config
        h, d = cfg.heads, cfg.head_dim
        qkv = _dense(cfg, (3, h, d), ("embed", None, "heads", "head_dim"), name="Wqkv")(x)  # [B, L, 3, H, D]
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        q = jaxzoo.rope(q, positions, theta=cfg.rope_base, mode="half")  # full head dim, rotate_half
        k = jaxzoo.rope(k, positions, theta=cfg.rope_base, mode="half")
        if self.mode == "decode":
            b, w = x.shape[0], cfg.window
            ck = self.variable("cache", "k", jnp.zeros, (b, w, h, d))
            cv = self.variable("cache", "v", jnp.zeros, (b, w, h, d))
            ok = self.variable("cache", "valid", jnp.zeros, (b, w), bool)
            y, (ck.value, cv.value, ok.value) = ops.window_decode_step(
                q[:, 0], k[:, 0], v[:, 0], ck.value, cv.value, ok.value, positions[0]
            )
            y = y[:, None]
        else:
            if cfg.padding == "reference":  # the reference's SWA ignores the mask
                mask = jnp.ones_like(mask)
            y = ops.sliding_window_attention(q, k, v, window=cfg.window, mask=mask)
            if self.mode == "prefill":
                cache = ops.window_cache(k.astype(jnp.float32), v.astype(jnp.float32), mask, cfg.window)
                for name, value in zip(("k", "v", "valid"), cache):
                    self.variable("cache", name, lambda value=value: value)
        return _dense(
            cfg,
            cfg.d_model,
            ("heads", "head_dim", "embed"),
            std=_out_std(cfg),
            axis=(-2, -1),
            name="out_proj",
        )(y)


class LinearAttention(nn.Module):
    """Taylor linear attention: causal (Based, prefix=False) or prefix linear attention (JRT, prefix=True).

    q, k: d -> H*f, v: d -> H*dv (no biases); PLA adds separate k_enc / v_enc projections applied to the
    first M tokens. No positional encoding.

    `prefix` (PLA): None when the encoder is the first M columns (an unpadded batch), else
    (index [B, M], valid [B, M]) from `ops.prefix_positions`: each row's own first M real tokens.
    """

    config: JRTConfig
    prefix: bool = False
    mode: str = "parallel"

    @nn.compact
    def __call__(self, x, mask, positions, prefix=None):
        cfg = self.config
        h, f, dv, m = cfg.heads, cfg.feature_dim, cfg.head_dim, cfg.prefix_len
        names = ("embed", "heads", "head_dim")
        q = _dense(cfg, (h, f), names, name="q_proj")(x)  # [B, L, H, f]
        k = _dense(cfg, (h, f), names, name="k_proj")(x)
        v = _dense(cfg, (h, dv), names, name="v_proj")(x)  # [B, L, H, dv]
        big_f = ops.feature_dim(f)
        if self.mode == "decode":
            b = x.shape[0]
            kv = self.variable("cache", "kv", jnp.zeros, (b, h, big_f, dv))
            ks = self.variable("cache", "k_sum", jnp.zeros, (b, h, big_f))
            y, state = ops.decode_step(
                ops.LinearAttentionState(kv.value, ks.value), q[:, 0], k[:, 0], v[:, 0], eps=cfg.attn_eps
            )
            kv.value, ks.value = state
            y = y[:, None]
        else:
            enc_mask = None
            if cfg.padding == "reference":
                # PrefixLinearAttention.forward: k and k_enc masked_fill(~mask, 0) before the feature map,
                # only when the prompt fits the encoder (L <= M); LinearAttention (Based) ignores the mask.
                if self.prefix and x.shape[1] <= m:
                    k = k * mask[..., None, None].astype(k.dtype)
                    enc_mask = mask[:, :m]  # not a weight here: zeroes k_enc below
                mask = None
            if self.prefix:
                if prefix is None:
                    x_enc = x[:, :m]  # [B, M, d]
                else:
                    index, enc_mask = prefix
                    x_enc = jnp.take_along_axis(x, index[..., None], axis=1)  # [B, M, d], each row's own
                k_enc = _dense(cfg, (h, f), names, name="k_enc_proj")(x_enc)  # [B, M, H, f]
                v_enc = _dense(cfg, (h, dv), names, name="v_enc_proj")(x_enc)  # [B, M, H, dv]
                if cfg.padding == "reference" and enc_mask is not None:
                    k_enc = k_enc * enc_mask[..., None, None].astype(k_enc.dtype)
                    enc_mask = None
                y = ops.prefix_linear_attention(
                    q,
                    k,
                    v,
                    k_enc,
                    v_enc,
                    mask=mask,
                    enc_mask=enc_mask,
                    eps=cfg.attn_eps,
                    chunk_size=cfg.chunk_size,
                    kernel=cfg.kernel,
                )
            else:
                k_enc = v_enc = None
                y = ops.linear_attention(
                    q, k, v, mask=mask, eps=cfg.attn_eps, chunk_size=cfg.chunk_size, kernel=cfg.kernel
                )
            if self.mode == "prefill":
                state = ops.prefill(k, v, k_enc, v_enc, mask=mask, enc_mask=enc_mask)
                self.variable("cache", "kv", lambda: state.kv)
                self.variable("cache", "k_sum", lambda: state.k_sum)
        y = y.astype(cfg.precision.compute)
        return _dense(
            cfg,
            cfg.d_model,
            ("heads", "head_dim", "embed"),
            std=_out_std(cfg),
            axis=(-2, -1),
            name="out_proj",
        )(y)


class SwiGLU(nn.Module):
    """fc1: d -> 2h split into (y, gate); fc2(y * silu(gate)): h -> d. No biases."""

    config: JRTConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        yg = _dense(cfg, (2, cfg.mlp_hidden), ("embed", None, "mlp"), name="fc1")(x)  # [B, L, 2, h]
        hidden = yg[..., 0, :] * nn.silu(yg[..., 1, :])
        return _dense(cfg, cfg.d_model, ("mlp", "embed"), std=_out_std(cfg), name="fc2")(hidden)


class Block(nn.Module):
    """x += Mixer(RMSNorm(x)); x += SwiGLU(RMSNorm(x)); x stays in the residual dtype (float32)."""

    config: JRTConfig
    mixer: str = "conv"
    mode: str = "parallel"

    @nn.compact
    def __call__(self, x, mask, positions, prefix=None):  # [B, L, d] float32
        cfg = self.config
        resid = cfg.precision.dtype_for("residual")
        if self.mixer == "conv":
            mixer = BaseConv(cfg, self.mode, name="conv")
        elif self.mixer == "swa":
            mixer = SlidingWindowAttention(cfg, self.mode, name="swa")
        else:
            mixer = LinearAttention(cfg, self.mixer == "pla", self.mode, name=self.mixer)
        x = x + mixer(_norm(cfg, "mixer_norm", x), mask, positions, prefix).astype(resid)
        x = x + SwiGLU(cfg, name="mlp")(_norm(cfg, "mlp_norm", x)).astype(resid)
        self.sow("intermediates", "resid_post", x)
        return x


class LM(nn.Module):
    """JRT-RNN / Based language model: input_ids [B, L] int -> logits [B, L, vocab] float32.

    For JRT (PLA layers) the first config.encoder_len tokens are the non-causal prefix of the PLA layers.
    `mask` [B, L] (True = real token, left padding) removes padding from every sum; then each row's
    prefix is its own first M *real* tokens, so a row of a ragged batch gives what it gives alone.
    """

    config: JRTConfig

    @nn.compact
    def __call__(self, input_ids, mask=None, *, mode: str = "parallel"):
        cfg = self.config
        check_inputs(cfg, input_ids, mask, mode)
        b, n = input_ids.shape
        prefix = None
        if mask is None:
            mask = jnp.ones((b, n), bool)
        else:
            mask = mask.astype(bool)
            if cfg.is_jrt and mode != "decode" and cfg.padding == "exact":
                prefix = ops.prefix_positions(mask, cfg.prefix_len)  # each row's first M real tokens
        if mode == "decode":
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            positions = index.value + jnp.arange(1)
            index.value = index.value + 1
        else:
            positions = jnp.arange(n)
            if mode == "prefill":
                self.variable("cache", "index", lambda: jnp.asarray(n, jnp.int32))
        embedding = self.param(
            "embedding",
            _normal(cfg.init_std, ("vocab", "embed")),
            (cfg.vocab_size, cfg.d_model),
            cfg.precision.param,
        )
        x = jnp.take(embedding, input_ids, axis=0).astype(cfg.precision.dtype_for("residual"))  # [B, L, d]
        block = nn.remat(Block) if cfg.remat else Block
        for i, mixer in enumerate(cfg.mixers):
            x = block(cfg, mixer, mode, name=f"layer_{i}")(x, mask, positions, prefix)
        x = _norm(cfg, "final_norm", x)
        dt, out = cfg.precision.compute, cfg.precision.dtype_for("logits")
        if cfg.tie_embeddings:
            logits = jnp.einsum("bld,vd->blv", x.astype(dt), embedding.astype(dt), preferred_element_type=out)
        else:
            logits = _dense(cfg, cfg.vocab_size, ("embed", "vocab"), name="lm_head")(x.astype(dt))
        return logits.astype(jnp.float32)


@functools.cache
def _init_fn(cfg: JRTConfig, seq_len: int):
    return jax.jit(
        lambda rng: nn.meta.unbox(jaxzoo.module_init(LM(config=cfg), sample_ids(cfg, seq_len))(rng))
    )


def sample_ids(cfg: JRTConfig, seq_len: int | None = None) -> jax.Array:
    """Zero token ids [1, seq_len] to initialise `LM(cfg)` with (default: max(M, 1) tokens)."""
    return jnp.zeros((1, max(cfg.prefix_len, 1) if seq_len is None else seq_len), jnp.int32)


def init_params(cfg: JRTConfig, rng, *, seq_len: int | None = None):
    """Unsharded parameters of `LM(cfg)` (plain arrays, logical boxes removed); compiled once per cfg.

    For a training state (sharded, with its optimizer) use `jrt.init_state`."""
    return _init_fn(cfg, max(cfg.prefix_len, 1) if seq_len is None else seq_len)(rng)


@functools.cache
def apply_fn(cfg: JRTConfig):
    """The jitted parallel forward `(params, input_ids, mask) -> logits`, compiled once per cfg and shape."""
    return jax.jit(lambda params, input_ids, mask: LM(config=cfg).apply({"params": params}, input_ids, mask))


def sharding_examples() -> list[tuple[str, nn.Module, tuple]]:
    """One tiny instance and sample inputs `(name, module, args)` of every Linen module of jrt, for the
    sharded-init test on a (data=4, model=2) mesh (heads, mlp and vocab even; batch 4)."""
    cfg = JRTConfig.tiny()  # d 32, 2 heads, mlp 64, vocab 64, M 8
    b, n = 4, 16
    x = jnp.zeros((b, n, cfg.d_model), jnp.float32)
    mask, positions = jnp.ones((b, n), bool), jnp.arange(n)
    ids = jnp.zeros((b, n), jnp.int32)
    return [
        ("BaseConv", BaseConv(config=cfg), (x, mask, positions)),
        ("SlidingWindowAttention", SlidingWindowAttention(config=cfg), (x, mask, positions)),
        ("LinearAttention", LinearAttention(config=cfg, prefix=True), (x, mask, positions)),
        ("SwiGLU", SwiGLU(config=cfg), (x,)),
        ("Block", Block(config=cfg, mixer="pla"), (x, mask, positions)),
        ("LM", LM(config=cfg), (ids,)),
    ]
