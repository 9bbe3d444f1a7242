"""Rectified flow as Open-Sora 1.2 defines it (`opensora/schedulers/rf`).

Convention: x_t = (1 - t) x0 + t eps with t in [0, 1], so t = 0 is data and **t = 1 is pure noise**
(Open-Sora writes t in [0, 1000]; we divide by 1000 and the model re-multiplies inside its timestep
embedding). The model predicts the velocity v = x0 - eps, and sampling integrates from t = 1 to 0 with
z <- z + v dt. Training t is logit-normal (sigmoid of N(0, 1)) and then shifted towards noise for large
or long videos by `ops.timestep_shift` with ratio sqrt(H W / 512^2) * sqrt(latent frames).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from tora import ops
from tora.config import FlowConfig


def sample_t(rng: jax.Array, batch: int, cfg: FlowConfig) -> jax.Array:
    """Training timesteps [batch] in (0, 1): sigmoid(N(0, 1)) ("logit-normal") or U(0, 1)."""
    if cfg.sample_method == "logit-normal":
        return jax.nn.sigmoid(jax.random.normal(rng, (batch,)))
    return jax.random.uniform(rng, (batch,))


def latent_shift_ratio(
    latent_shape: tuple[int, ...], cfg: FlowConfig, vae_spatial_factor: int = 8
) -> jax.Array:
    """Open-Sora's shift ratio for latents [B, T, H, W, C]: pixels (H f) x (W f), T latent frames.

    Open-Sora counts latent frames as num_frames // 17 * 5, which equals T for its VAE from 17 frames on;
    we use T itself, so clips shorter than 17 frames get a ratio from their true length instead of 0
    (Open-Sora issue #601).
    """
    _, t, h, w, _ = latent_shape
    if t < 1:
        raise ValueError(f"num_frames must be >= 1; got latents with T={t}.")
    f = vae_spatial_factor
    return ops.shift_ratio(h * f, w * f, t, cfg.base_resolution, cfg.transform_scale)


def shift_ratio(
    latent_shape: tuple[int, ...], cfg: FlowConfig, vae_spatial_factor: int = 8, *, height=None, width=None,
    num_frames=None,
) -> jax.Array:
    """The timestep-shift ratio of a batch: from Open-Sora's pixel geometry (`height`, `width`, `num_frames`,
    scalars or [B]) when given, as `timestep_transform` does; missing entries come from the latent shape
    (latent size x `vae_spatial_factor`, T latent frames: `latent_shift_ratio`)."""
    if height is None and width is None and num_frames is None:
        return latent_shift_ratio(latent_shape, cfg, vae_spatial_factor)
    _, t, h, w, _ = latent_shape
    f = vae_spatial_factor
    height = h * f if height is None else height
    width = w * f if width is None else width
    if num_frames is None:  # latent T stands for Open-Sora's num_frames // 17 * 5
        return ops.shift_ratio(height, width, t, cfg.base_resolution, cfg.transform_scale)
    return ops.pixel_shift_ratio(height, width, num_frames, cfg.base_resolution, cfg.transform_scale)


def training_inputs(
    x0: jax.Array,
    rng: jax.Array,
    cfg: FlowConfig,
    x_mask: jax.Array | None = None,
    vae_spatial_factor: int = 8,
    *,
    height=None,
    width=None,
    num_frames=None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x_t, t, v_target) for one training step. Frames with x_mask False stay clean (x_t = x0).

    height, width, num_frames: the clips' pixel geometry (scalars or [B]) for the timestep shift, as the
    `height`, `width`, `num_frames` of Open-Sora's batches; default from the latent shape."""
    k_t, k_n = jax.random.split(rng)
    t = sample_t(k_t, x0.shape[0], cfg)
    if cfg.use_timestep_transform:
        ratio = shift_ratio(x0.shape, cfg, vae_spatial_factor, height=height, width=width, num_frames=num_frames)
        t = ops.timestep_shift(t, ratio)
    noise = jax.random.normal(k_n, x0.shape, x0.dtype)
    x_t = ops.rf_interpolate(x0, noise, t)
    if x_mask is not None:
        x_t = ops.frame_select(x_mask.astype(bool), x_t, x0)
    return x_t, t, x0 - noise


def make_loss_fn(model: nn.Module, cfg: FlowConfig = FlowConfig()) -> Callable:
    """`loss_fn(params, batch, rng) -> (loss, metrics)` for `jaxzoo.train.make_train_step`.

    batch: {"x": latents [B, T, H, W, C], "y": caption features [B, Ly, Dy], optional "y_mask" [B, Ly],
    "x_mask" [B, T] (False = clean conditioning frame, excluded from the loss), "fps" [B], "motion", and
    Open-Sora's pixel geometry "height", "width", "num_frames" [B] (position-embedding scale, timestep
    shift, image fps; default from the latent shape)}. The caption is replaced by the model's null caption
    with probability cfg.caption_dropout.
    """
    vae_f = getattr(model.config, "vae_spatial_factor", 8)

    def loss_fn(params, batch, rng):
        x0 = batch["x"]
        x_mask = batch.get("x_mask")
        k_in, k_drop = jax.random.split(rng)
        geom = {k: batch[k] for k in ("height", "width", "num_frames") if batch.get(k) is not None}
        x_t, t, target = training_inputs(x0, k_in, cfg, x_mask, vae_f, **geom)
        y_drop = (
            jax.random.bernoulli(k_drop, cfg.caption_dropout, (x0.shape[0],)) if cfg.caption_dropout else None
        )
        v = model.apply(
            {"params": params},
            x_t,
            t,
            batch["y"],
            batch.get("y_mask"),
            batch.get("fps"),
            x_mask,
            batch.get("motion"),
            y_drop=y_drop,
            **geom,
        )
        loss = ops.masked_frame_mse(v, target, x_mask)
        return loss, {"t_mean": t.mean()}

    return loss_fn
