"""The layer kit every package uses: dense, attention, norms, RoPE, parameter counting.

- ``DenseGeneral``: Flax's ``nn.DenseGeneral`` initialises its kernel flat ([prod(in), prod(out)]) and
  reshapes it, so logical axis names for a multi-axis kernel (``("embed", "heads", "head_dim")``) do not
  fit it and sharded initialisation fails. Here the kernel is created at its real shape.
- ``Conv``: an N-d channels-last convolution with its kernel at [*k, in, out] under logical names, torch's
  default initialisation, explicit or causal padding (the video VAEs' causal 3-D convolutions).
- ``dot_product_attention``: one masking convention: ``mask`` True = attend; a query row whose keys are
  all masked returns zeros (never an average of padding).
- ``layer_norm`` / ``rms_norm`` / ``group_norm`` with PyTorch numerics (biased variance, eps inside the
  square root, statistics in float32), and the ``LayerNorm`` / ``RMSNorm`` / ``GroupNorm`` modules that
  call them with logically named ``scale`` / ``bias`` parameters.
- ``rope``: rotary position embedding, half-split (GPT-NeoX / Llama / Hugging Face ``rotate_half``) or
  interleaved (GPT-J, ``rotary_embedding_torch``) pairs.
- ``param_count``.

Each package's paper-specific maths stays in its own ``ops.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]


def flat_init(init: Initializer, n_in: int) -> Initializer:
    """Run a 2-D initializer on the flattened (fan_in, fan_out) view of an ``n_in``-input kernel and reshape,
    as a torch ``nn.Linear`` of the flattened sizes would (e.g. xavier-uniform over the flat matrix)."""

    def init_flat(key, shape, dtype=jnp.float32):
        flat = (math.prod(shape[:n_in]), math.prod(shape[n_in:]))
        return init(key, flat, dtype).reshape(shape)

    return init_flat


class DenseGeneral(nn.Module):
    """y = x . kernel (+ bias), contracting the last ``n_in`` axes of x.

    x [..., *in] -> y [..., *features]; kernel [*in, *features] with logical names ``axes`` (one per kernel
    axis); bias [*features] named by the last ``len(features)`` of ``axes``. Parameter names are
    ``kernel`` and ``bias``, as in Flax's Dense.
    """

    features: tuple[int, ...]
    axes: tuple[str | None, ...]
    n_in: int = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros
    dtype: Any = jnp.float32  # computation dtype
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = tuple(self.features)
        if x.ndim < self.n_in:
            raise ValueError(
                f"DenseGeneral contracts the last {self.n_in} axes; got an input of shape {x.shape}"
            )
        shape = tuple(x.shape[x.ndim - self.n_in :]) + features
        if len(self.axes) != len(shape):
            raise ValueError(
                f"DenseGeneral kernel has shape {shape} but {len(self.axes)} logical axis names {self.axes}"
            )
        init = nn.with_logical_partitioning(self.kernel_init, tuple(self.axes))
        kernel = self.param("kernel", init, shape, self.param_dtype)
        y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=self.n_in)
        if self.use_bias:
            bias_axes = tuple(self.axes[self.n_in :])
            bias = self.param(
                "bias", nn.with_logical_partitioning(self.bias_init, bias_axes), features, self.param_dtype
            )
            y = y + bias.astype(self.dtype)
        return y


# ------------------------------------------------------------------------------------------ attention
def torch_conv_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """PyTorch's ConvNd / Linear default (kaiming-uniform with a = sqrt(5): U(+-1/sqrt(fan_in))) for a
    kernel [*k, in, out], drawn as a 2-D [prod(k) in, out] array and reshaped (same fans; XLA:CPU compiles
    rank-5 random draws very slowly)."""
    flat = (math.prod(shape[:-1]), shape[-1])
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")(key, flat, dtype).reshape(shape)


class Conv(nn.Module):
    """N-d convolution, channels last: x [B, *S, Cin] -> [B, *S', features]; kernel [*k, Cin, features]
    (a torch weight [out, in, *k] transposed), bias [features].

    padding: None for k // 2 zeros on both sides of every spatial axis; "causal" for (k - stride, 0) on
    the first spatial axis (time: an output never sees later inputs) and k // 2 on the others; or explicit
    ((lo, hi), ...) per spatial axis. Logical names: "kernel" on the first tap axis (Flax refuses a
    repeated name, so the other taps are None), "conv_in", "conv_out" (``axes`` overrides them).
    """

    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: str | tuple[tuple[int, int], ...] | None = None
    use_bias: bool = True
    kernel_init: Initializer = torch_conv_init
    bias_init: Initializer = nn.initializers.zeros
    axes: tuple[str | None, ...] | None = None
    dtype: Any = jnp.float32  # computation dtype
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = tuple(self.kernel_size)
        nd = len(k)
        if nd not in (1, 2, 3) or x.ndim != nd + 2:
            raise ValueError(f"Conv with a {nd}-d kernel {k} expects x [B, {nd} spatial axes, C]; got {x.shape}")
        strides = tuple(self.strides) if self.strides is not None else (1,) * nd
        if self.padding is None:
            pad = tuple((kk // 2, kk // 2) for kk in k)
        elif self.padding == "causal":
            pad = ((max(k[0] - strides[0], 0), 0),) + tuple((kk // 2, kk // 2) for kk in k[1:])
        elif isinstance(self.padding, str):
            raise ValueError(f"Conv padding must be None, 'causal' or ((lo, hi), ...); got {self.padding!r}")
        else:
            pad = tuple(tuple(p) for p in self.padding)
        names = self.axes if self.axes is not None else ("kernel",) + (None,) * (nd - 1) + ("conv_in", "conv_out")
        kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, tuple(names)),
                            (*k, x.shape[-1], self.features), self.param_dtype)
        spatial = "DHW"[3 - nd :]
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), kernel.astype(self.dtype), window_strides=strides, padding=pad,
            dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"))
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(self.bias_init, (names[-1],)),
                              (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    local_window: int | tuple[int, int] | None = None,
) -> jax.Array:
    """softmax(q k^T * scale + bias) v with q [B, Lq, H, D], k [B, Lk, K, D], v [B, Lk, K, Dv] -> [B, Lq, H, Dv].

    K may divide H (grouped-query attention). ``mask`` is boolean, True = attend, broadcastable to
    [B, H, Lq, Lk] (a key mask [B, Lk] is accepted and means [B, 1, 1, Lk]); ``is_causal`` adds the causal
    mask. ``local_window=(left, right)`` (or one int w for (w, w)) is sliding-window attention: query i sees
    keys i - left .. i + right only (positions aligned at the end when Lq < Lk, as the causal mask), e.g.
    ModernBERT's local layers (64, 64) or a causal window (w - 1, 0). Scores and softmax are float32
    (float64 for float64 inputs). A query row with no key to attend to returns exactly zeros. Without dropout this is ``jax.nn.dot_product_attention`` (a fused kernel on
    GPU); dropout (training) drops probabilities with ``dropout_rng`` and rescales by 1 / (1 - rate).
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"dot_product_attention expects q, k, v of rank 4 [B, L, heads, D]; got {q.shape}, {k.shape}, {v.shape}"
        )
    if q.shape[2] % k.shape[2] or k.shape[2] != v.shape[2]:
        raise ValueError(f"key/value heads {k.shape[2]}/{v.shape[2]} must be equal and divide query heads {q.shape[2]}")
    b, lq, h, d = q.shape
    lk = k.shape[1]
    scale = d**-0.5 if scale is None else scale
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        if mask.ndim == 2:
            if mask.shape != (b, lk) and mask.shape[1] != lk:
                raise ValueError(f"a 2-D key mask must be [B, Lk] = [{b}, {lk}]; got {mask.shape}")
            mask = mask[:, None, None, :]
        if mask.ndim != 4:
            raise ValueError(f"mask must be [B, Lk] or broadcastable to [B, H, Lq, Lk]; got shape {mask.shape}")
    if is_causal:
        causal = jnp.tril(jnp.ones((lq, lk), bool), k=lk - lq)[None, None]
        mask = causal if mask is None else mask & causal
    if local_window is not None:
        left, right = (local_window, local_window) if isinstance(local_window, int) else tuple(local_window)
        if min(left, right) < 0:
            raise ValueError(f"local_window must be >= 0 on both sides; got {local_window!r}")
        offset = jnp.arange(lk)[None, :] - (jnp.arange(lq)[:, None] + lk - lq)  # key minus query position
        band = ((offset >= -left) & (offset <= right))[None, None]
        mask = band if mask is None else mask & band
    acc = jnp.promote_types(q.dtype, jnp.float32)
    fused = v.shape[-1] == d and q.dtype == k.dtype == v.dtype  # what jax.nn's kernel accepts
    if dropout_rate == 0.0 and acc == jnp.float32 and fused:
        out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale)
    else:
        group = h // k.shape[2]
        kk = jnp.repeat(k, group, axis=2) if group > 1 else k
        vv = jnp.repeat(v, group, axis=2) if group > 1 else v
        scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(acc), kk.astype(acc)) * scale
        if bias is not None:
            scores = scores + bias.astype(acc)
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(acc).min)
        probs = jax.nn.softmax(scores, axis=-1)  # [B, H, Lq, Lk]
        if dropout_rate > 0.0:
            if dropout_rng is None:
                raise ValueError("dot_product_attention with dropout_rate > 0 needs dropout_rng")
            keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
            probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), vv)
    if mask is not None:
        any_key = jnp.broadcast_to(jnp.any(mask, axis=-1), (b, h, lq))  # [B, H, Lq]
        out = jnp.where(jnp.transpose(any_key, (0, 2, 1))[..., None], out, 0)
    return out


# ------------------------------------------------------------------------------------------ norms
def _stats_dtype(x: jax.Array) -> Any:
    return jnp.promote_types(x.dtype, jnp.float32)  # bf16 -> f32; f64 (tests) stays f64


def layer_norm(x: jax.Array, scale: jax.Array | None = None, bias: jax.Array | None = None,
               eps: float = 1e-5) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis; statistics in float32 (PyTorch)."""
    xf = x.astype(_stats_dtype(x))
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)


def rms_norm(x: jax.Array, scale: jax.Array | None = None, eps: float = 1e-6) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) over the last axis in float32, cast back, times ``scale`` (LlamaRMSNorm)."""
    xf = x.astype(_stats_dtype(x))
    y = (xf * jax.lax.rsqrt(jnp.square(xf).mean(-1, keepdims=True) + eps)).astype(x.dtype)
    return y if scale is None else scale.astype(x.dtype) * y


def group_norm(x: jax.Array, num_groups: int, scale: jax.Array | None = None, bias: jax.Array | None = None,
               eps: float = 1e-5, reduce_axes: tuple[int, ...] | None = None) -> jax.Array:
    """GroupNorm of channels-last x [..., C]: channels split into ``num_groups`` groups, statistics over
    each group's channels and ``reduce_axes`` (default: every axis but the first and the last, as torch's
    GroupNorm over (N, C, *spatial)); affine per channel."""
    c = x.shape[-1]
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"group_norm: {c} channels cannot be split into {num_groups} groups")
    reduce_axes = tuple(range(1, x.ndim - 1)) if reduce_axes is None else tuple(a % x.ndim for a in reduce_axes)
    xf = x.astype(_stats_dtype(x)).reshape(x.shape[:-1] + (num_groups, c // num_groups))
    axes = tuple(reduce_axes) + (xf.ndim - 1,)
    mean = xf.mean(axes, keepdims=True)
    var = jnp.square(xf - mean).mean(axes, keepdims=True)
    y = ((xf - mean) * jax.lax.rsqrt(var + eps)).reshape(x.shape)
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)


class LayerNorm(nn.Module):
    """``layer_norm`` with learned ``scale`` (ones) and ``bias`` (zeros) named ``axis_name``."""

    eps: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    axis_name: str = "embed"
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape, axes = (x.shape[-1],), (self.axis_name,)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, axes), shape,
                           self.param_dtype) if self.use_scale else None
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, axes), shape,
                          self.param_dtype) if self.use_bias else None
        return layer_norm(x, scale, bias, self.eps)


class RMSNorm(nn.Module):
    """``rms_norm`` with a learned ``scale`` (ones) named ``axis_name``."""

    eps: float = 1e-6
    axis_name: str = "embed"
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
                           (x.shape[-1],), self.param_dtype)
        return rms_norm(x, scale, self.eps)


class GroupNorm(nn.Module):
    """``group_norm`` with learned per-channel ``scale`` and ``bias`` named ``axis_name``."""

    num_groups: int = 32
    eps: float = 1e-5
    reduce_axes: tuple[int, ...] | None = None
    axis_name: str = "conv_out"
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape, axes = (x.shape[-1],), (self.axis_name,)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, axes), shape,
                           self.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, axes), shape,
                          self.param_dtype)
        return group_norm(x, self.num_groups, scale, bias, self.eps, self.reduce_axes)


# ------------------------------------------------------------------------------------------ RoPE
ROPE_MODES = ("half", "interleaved")


def rope(x: jax.Array, positions: jax.Array, theta: float = 10000.0, mode: str = "half",
         rotary_dim: int | None = None) -> jax.Array:
    """Rotary position embedding of x [..., L, H, D] at ``positions`` [L] or [B, L] (integers or floats).

    Frequency i (of D'/2, D' = ``rotary_dim`` or D) is theta^(-2i/D'). ``mode="half"`` rotates the pairs
    (x[i], x[i + D'/2]) (GPT-NeoX, Llama, Hugging Face ``rotate_half``); ``mode="interleaved"`` the pairs
    (x[2i], x[2i+1]) (GPT-J, ``rotary_embedding_torch``). Features past ``rotary_dim`` pass unchanged.
    Angles and rotation in float32; the result has x's dtype.
    """
    if mode not in ROPE_MODES:
        raise ValueError(f"rope mode must be one of {ROPE_MODES}; got {mode!r}")
    d = x.shape[-1] if rotary_dim is None else rotary_dim
    if d % 2 or d > x.shape[-1] or d < 2:
        raise ValueError(f"rope needs an even rotary_dim <= head dim {x.shape[-1]}; got {d}")
    positions = jnp.asarray(positions)
    if positions.ndim not in (1, 2) or positions.shape[-1] != x.shape[-3]:
        raise ValueError(f"positions must be [L] or [B, L] with L = {x.shape[-3]}; got shape {positions.shape}")
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))  # [D'/2]
    ang = positions.astype(jnp.float32)[..., None] * inv_freq  # [(B,) L, D'/2]
    cos, sin = jnp.cos(ang)[..., None, :], jnp.sin(ang)[..., None, :]  # [(B,) L, 1, D'/2]
    xf = x[..., :d].astype(jnp.float32)
    if mode == "half":
        x1, x2 = xf[..., : d // 2], xf[..., d // 2 :]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    else:
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(xf.shape)
    out = out.astype(x.dtype)
    return out if d == x.shape[-1] else jnp.concatenate([out, x[..., d:]], axis=-1)


# ------------------------------------------------------------------------------------------ counting
def param_count(tree: Any) -> int:
    """Number of scalars in a tree of arrays, ShapeDtypeStructs or logically boxed variables."""
    leaves = jax.tree.leaves(nn.meta.unbox(tree))
    return int(sum(math.prod(getattr(x, "shape", ())) for x in leaves))
