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


def pos_embed_2d(h: int, w: int, dim: int, scale=1.0, base_size: int | None = None) -> jax.Array:
    """Open-Sora's `PositionEmbedding2D` for an h x w patch grid: [h * w, dim], row-major over (h, w).

    grid = arange(n) / scale * (base_size / n); the first dim/2 channels encode the w coordinate and the last
    dim/2 the h coordinate (Open-Sora's variable names say the opposite; the values are these). float32 as
    Open-Sora; `scale` may be a traced scalar (pixel height and width given as arrays), h, w are static.
    """
    scale = jnp.asarray(scale, jnp.float32)
    grid_h = jnp.arange(h, dtype=jnp.float32) / scale
    grid_w = jnp.arange(w, dtype=jnp.float32) / scale
    if base_size is not None:
        grid_h = grid_h * (base_size / h)
        grid_w = grid_w * (base_size / w)
    hh, ww = jnp.meshgrid(grid_h, grid_w, indexing="ij")  # [h, w]
    emb_w = _sincos_1d_f32(ww.reshape(-1), dim // 2)
    emb_h = _sincos_1d_f32(hh.reshape(-1), dim // 2)
    return jnp.concatenate([emb_w, emb_h], axis=-1)


def _sincos_1d_f32(pos: jax.Array, dim: int) -> jax.Array:
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))  # [dim/2]
    out = pos[:, None] * inv_freq[None]
    return jnp.concatenate([jnp.sin(out), jnp.cos(out)], axis=-1)


def pos_embed_scale(h: int, w: int, *, height, width, input_sq_size: int) -> tuple:
    """(scale, base_size) of STDiT3: scale = sqrt(height * width) / input_sq_size (pixels), base_size =
    round(sqrt(h w)) (patches). height, width may be numbers or traced scalars."""
    if isinstance(height, int | float) and isinstance(width, int | float):
        return math.sqrt(height * width) / input_sq_size, round(math.sqrt(h * w))
    return jnp.sqrt(jnp.asarray(height, jnp.float32) * width) / input_sq_size, round(math.sqrt(h * w))


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


def pixel_shift_ratio(
    height, width, num_frames, base_resolution: float = 512 * 512, scale: float = 1.0
) -> jax.Array:
    """Open-Sora's `timestep_transform` ratio from the pixel geometry (scalars or [B] arrays, traceable).

    As `opensora/schedulers/rf/rectified_flow.py`: sqrt(height * width / base_resolution) times
    sqrt(num_frames // 17 * 5), with 1 for an image. Below 17 frames Open-Sora's formula gives 0 (every t
    becomes 0, its issue #601); there we use ceil(num_frames / 4) as `opensora_latent_frames` does.
    """
    nf = jnp.asarray(num_frames, jnp.float32)
    frames = jnp.where(nf <= 1, 1.0, jnp.where(nf < 17, jnp.ceil(nf / 4), jnp.floor(nf / 17) * 5))
    h, w = jnp.asarray(height, jnp.float32), jnp.asarray(width, jnp.float32)
    return jnp.sqrt(h * w / base_resolution) * jnp.sqrt(frames) * scale


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
