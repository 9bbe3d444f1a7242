"""Pure array functions of the ST-DiT backbone and rectified flow. Modules in `stdit.py` call these.

Norms, RoPE and attention come from the shared kit (`jaxzoo.layer_norm`, `jaxzoo.rms_norm`,
`jaxzoo.rope(mode="interleaved")`, `jaxzoo.dot_product_attention`); what is here is Open-Sora's own maths.

Layouts: latents x [B, T, H, W, C]; tokens [B, T, S, C] with S = H' * W' patches per frame (row-major over
(h, w)); attention heads [..., L, N, D] (L tokens, N heads, D head_dim).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxzoo


# ----------------------------------------------------------------------------- embeddings
def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Open-Sora's sinusoidal timestep features [B, dim] = [cos(t f), sin(t f)], f_i = max_period^(-i/half)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)  # [half]
    args = t.astype(jnp.float32)[:, None] * freqs[None]  # [B, half]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def sincos_1d(pos: np.ndarray, dim: int) -> np.ndarray:
    """[len(pos), dim] = [sin(p w), cos(p w)] with w_i = 10000^(-2i/dim), i < dim/2 (Open-Sora's `_get_sin_cos_emb`)."""
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, dim, 2, dtype=np.float64) / dim))  # [dim/2]
    out = np.einsum("i,d->id", pos.astype(np.float64), inv_freq)
    return np.concatenate([np.sin(out), np.cos(out)], axis=-1)


def pos_embed_2d(h: int, w: int, dim: int, scale: float = 1.0, base_size: int | None = None) -> np.ndarray:
    """Open-Sora's `PositionEmbedding2D` for an h x w patch grid: [h * w, dim], row-major over (h, w).

    grid = arange(n) / scale * (base_size / n); the first dim/2 channels encode the w coordinate and the last
    dim/2 the h coordinate (Open-Sora's variable names say the opposite; the values are these). Computed in
    numpy from static shapes, so it is a constant under jit.
    """
    grid_h = np.arange(h, dtype=np.float64) / scale
    grid_w = np.arange(w, dtype=np.float64) / scale
    if base_size is not None:
        grid_h = grid_h * (base_size / h)
        grid_w = grid_w * (base_size / w)
    hh, ww = np.meshgrid(grid_h, grid_w, indexing="ij")  # [h, w]
    emb_w = sincos_1d(ww.reshape(-1), dim // 2)
    emb_h = sincos_1d(hh.reshape(-1), dim // 2)
    return np.concatenate([emb_w, emb_h], axis=-1).astype(np.float32)


def pos_embed_scale(h: int, w: int, *, height: float, width: float, input_sq_size: int) -> tuple[float, int]:
    """(scale, base_size) of STDiT3: scale = sqrt(height * width) / input_sq_size, base_size = round(sqrt(h w))."""
    return math.sqrt(height * width) / input_sq_size, round(math.sqrt(h * w))


# ----------------------------------------------------------------------------- modulation
def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """t2i_modulate: x * (1 + scale) + shift."""
    return x * (1 + scale) + shift


def frame_select(x_mask: jax.Array | None, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-frame choice for tokens [B, T, ...]: a where x_mask[B, T] is True (noised frame), else b."""
    if x_mask is None:
        return a
    return jnp.where(x_mask.reshape(x_mask.shape + (1,) * (a.ndim - 2)), a, b)


# ----------------------------------------------------------------------------- attention
def spatial_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Self-attention among the S patches of each frame. q, k, v: [B, T, S, N, D] -> [B, T, S, N, D]."""
    b, t, s, n, d = q.shape
    flat = lambda a: a.reshape(b * t, s, n, d)  # "B T S N D -> (B T) S N D"
    return jaxzoo.dot_product_attention(flat(q), flat(k), flat(v)).reshape(b, t, s, n, d)


def temporal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Self-attention among the T frames of each patch. q, k, v: [B, T, S, N, D] -> [B, T, S, N, D]."""
    b, t, s, n, d = q.shape
    flat = lambda a: a.transpose(0, 2, 1, 3, 4).reshape(b * s, t, n, d)  # "B T S N D -> (B S) T N D"
    out = jaxzoo.dot_product_attention(flat(q), flat(k), flat(v))
    return out.reshape(b, s, t, n, d).transpose(0, 2, 1, 3, 4)


# ----------------------------------------------------------------------------- patches
def padded_size(size: tuple[int, int, int], patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """(T, H, W) rounded up to multiples of the patch (Open-Sora's PatchEmbed3D zero-pads at the end)."""
    return tuple(-(-n // p) * p for n, p in zip(size, patch))


def patchify(x: jax.Array, patch: tuple[int, int, int]) -> jax.Array:
    """[B, T, H, W, C] -> [B, T', H', W', pt * ph * pw * C], zero-padding T, H, W up to the patch.

    Features are ordered (pt, ph, pw, C), so the patch embedding is one Dense on the last axis (a
    Conv3d with kernel = stride = patch, as in Open-Sora).
    """
    b, t, h, w, c = x.shape
    pt, ph, pw = patch
    tp, hp, wp = padded_size((t, h, w), patch)
    x = jnp.pad(x, ((0, 0), (0, tp - t), (0, hp - h), (0, wp - w), (0, 0)))
    x = x.reshape(b, tp // pt, pt, hp // ph, ph, wp // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)  # [B, T', H', W', pt, ph, pw, C]
    return x.reshape(b, tp // pt, hp // ph, wp // pw, pt * ph * pw * c)


def unpatchify(x: jax.Array, patch: tuple[int, int, int], size: tuple[int, int, int], c: int) -> jax.Array:
    """Inverse of `patchify`: [B, T', H', W', pt * ph * pw * c] -> [B, T, H, W, c], cropping the padding."""
    b, tq, hq, wq, _ = x.shape
    pt, ph, pw = patch
    x = x.reshape(b, tq, hq, wq, pt, ph, pw, c).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    x = x.reshape(b, tq * pt, hq * ph, wq * pw, c)
    t, h, w = size
    return x[:, :t, :h, :w]


# ----------------------------------------------------------------------------- rectified flow
def opensora_latent_frames(num_frames: int) -> int:
    """Latent frames Open-Sora's timestep shift assumes for `num_frames` pixel frames.

    Open-Sora uses num_frames // 17 * 5 (17-frame micro clips -> 5 latents each), which is 0 for fewer than
    17 frames and collapses every t to 0 (Open-Sora issue #601). We keep the formula from 17 frames on and
    use what its VAE actually produces for one shorter clip, ceil(num_frames / 4), below (1 for an image).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}.")
    if num_frames == 1:
        return 1
    if num_frames < 17:
        return -(-num_frames // 4)
    return num_frames // 17 * 5


def shift_ratio(
    height: float, width: float, latent_frames: float, base_resolution: float = 512 * 512, scale: float = 1.0
) -> jax.Array:
    """Open-Sora's shift ratio sqrt(height * width / base_resolution) * sqrt(latent_frames) * scale.

    height, width in pixels; latent_frames is Open-Sora's `num_frames // 17 * 5` (see `opensora_latent_frames`;
    for latents this is their frame count T).
    """
    return jnp.sqrt(height * width / base_resolution) * jnp.sqrt(jnp.maximum(latent_frames, 1)) * scale


def timestep_shift(t: jax.Array, ratio: jax.Array) -> jax.Array:
    """Open-Sora's `timestep_transform` on t in [0, 1]: t' = ratio * t / (1 + (ratio - 1) * t)."""
    return ratio * t / (1 + (ratio - 1) * t)


def rf_interpolate(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = (1 - t) x0 + t noise with t [B] broadcast over the other axes (t = 1 is pure noise)."""
    t = t.reshape(t.shape + (1,) * (x0.ndim - 1)).astype(x0.dtype)
    return (1 - t) * x0 + t * noise


def masked_frame_mse(pred: jax.Array, target: jax.Array, x_mask: jax.Array | None = None) -> jax.Array:
    """Open-Sora's `mean_flat` with a frame mask: per-sample mean of (pred - target)^2 over the frames where
    x_mask [B, T] is True (all frames when None), then the batch mean. pred, target: [B, T, H, W, C]."""
    se = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
    per_frame = se.reshape(se.shape[0], se.shape[1], -1).sum(-1)  # [B, T]
    numel = se[0, 0].size
    if x_mask is None:
        return (per_frame.sum(1) / (se.shape[1] * numel)).mean()
    m = x_mask.astype(jnp.float32)
    return ((per_frame * m).sum(1) / (jnp.maximum(m.sum(1), 1.0) * numel)).mean()
