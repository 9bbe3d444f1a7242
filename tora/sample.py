"""Euler sampler of Open-Sora 1.2's rectified flow with classifier-free guidance.

Steps t_i = shift(1 - i/N), i = 0..N-1, then t_N = 0; z <- z + v (t_i - t_{i+1}) with
v = v_uncond + s (v_cond - v_uncond), the unconditional pass using the model's learned null caption with
the same caption mask (as Open-Sora). Conditioning frames (x_mask False) are held at the given latents.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tora import ops
from tora.config import FlowConfig
from tora.flow import shift_ratio


def euler_timesteps(num_steps: int, ratio: jax.Array | float | None = None) -> jax.Array:
    """[num_steps + 1] times from 1 down to 0: shift(1 - i / num_steps) for i < num_steps, then 0."""
    t = 1.0 - jnp.arange(num_steps, dtype=jnp.float32) / num_steps
    if ratio is not None:
        t = ops.timestep_shift(t, ratio)
    return jnp.concatenate([t, jnp.zeros((1,), jnp.float32)])


def make_sampler(model: nn.Module, cfg: FlowConfig = FlowConfig()):
    """Return `sample(params, rng, y, y_mask=None, *, num_frames, height, width, num_steps=None,
    guidance_scale=None, fps=None, x_cond=None, x_mask=None, motion=None, pixel_size=None)
    -> latents [B, T, H, W, C]`.

    num_frames, height and width are the latent size (frames, cells). pixel_size = (num_frames, height,
    width) of the video in pixels is Open-Sora's geometry (its inference `num_frames`, `image_size`): it sets
    the timestep shift, the position-embedding scale and the image fps (120 for one frame); without it they
    come from the latent size (x `vae_spatial_factor`, T latent frames), which differs at Open-Sora's buckets. The loop runs inside one `jax.jit`, compiled once per
    (shape, num_steps); the guidance scale is traced, so changing it does not recompile. guidance_scale
    >= 0 (1 = the conditional prediction alone, 0 = the unconditional one; default cfg.guidance_scale).
    x_cond [B, T, H, W, C] with x_mask [B, T] (False = keep x_cond) gives image-to-video / extension.
    """
    mcfg = model.config
    vae_f = getattr(mcfg, "vae_spatial_factor", 8)

    @functools.partial(jax.jit, static_argnames=("num_frames", "height", "width", "num_steps"))
    def _run(
        params, rng, y, y_mask, guidance, fps, x_cond, x_mask, motion, pixels, *, num_frames, height, width,
        num_steps
    ):
        b = y.shape[0]
        shape = (b, num_frames, height, width, mcfg.in_channels)
        geom = {} if pixels is None else dict(zip(("num_frames", "height", "width"), pixels))
        ratio = shift_ratio(shape, cfg, vae_f, **geom) if cfg.use_timestep_transform else None
        ts = euler_timesteps(num_steps, ratio)
        z = jax.random.normal(rng, shape, jnp.float32)
        if x_mask is not None:
            z = ops.frame_select(x_mask, z, x_cond)
        y2 = jnp.concatenate([y, y])
        m2 = None if y_mask is None else jnp.concatenate([y_mask, y_mask])
        drop = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])
        fps2 = None if fps is None else jnp.concatenate([fps, fps])
        xm2 = None if x_mask is None else jnp.concatenate([x_mask, x_mask])
        mo2 = None if motion is None else [None if f is None else jnp.concatenate([f, f]) for f in motion]
        geom2 = {k: jnp.full((2 * b,), v) for k, v in geom.items()}

        def body(i, z):
            t = jnp.full((2 * b,), ts[i])
            v = model.apply(
                {"params": params}, jnp.concatenate([z, z]), t, y2, m2, fps2, xm2, mo2, y_drop=drop, **geom2
            )
            v_c, v_u = v[:b], v[b:]
            v = v_u + guidance * (v_c - v_u)
            z = z + v * (ts[i] - ts[i + 1])
            return z if x_mask is None else ops.frame_select(x_mask, z, x_cond)

        return jax.lax.fori_loop(0, num_steps, body, z)

    def sample(
        params,
        rng,
        y,
        y_mask=None,
        *,
        num_frames: int,
        height: int,
        width: int,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        fps=None,
        x_cond=None,
        x_mask=None,
        motion=None,
        pixel_size=None,
    ):
        num_steps = cfg.num_sampling_steps if num_steps is None else int(num_steps)
        guidance_scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
        for name, v in (("num_frames", num_frames), ("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise ValueError(f"{name} (latent size) must be an integer; got {v!r} of type {type(v).__name__}.")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1; got {num_frames}.")
        if height < 1 or width < 1:
            raise ValueError(f"height and width (latent cells) must be >= 1; got {height} x {width}.")
        if pixel_size is not None:
            if len(pixel_size) != 3 or min(pixel_size) < 1:
                raise ValueError(
                    f"pixel_size must be (num_frames, height, width) of the video in pixels, all >= 1; got "
                    f"{pixel_size!r}."
                )
            pixel_size = tuple(jnp.asarray(v, jnp.float32) for v in pixel_size)
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1; got {num_steps}.")
        if guidance_scale < 0:
            raise ValueError(f"the guidance scale must be >= 0 (1 = no guidance); got {guidance_scale}.")
        b = y.shape[0]
        if (x_mask is None) != (x_cond is None):
            raise ValueError(
                "x_cond (conditioning latents) and x_mask (False = conditioning frame) go together."
            )
        if x_mask is not None:
            if tuple(x_mask.shape) != (b, num_frames):
                raise ValueError(
                    f"the frame mask x_mask must have shape [B, T] = ({b}, {num_frames}); got {tuple(x_mask.shape)}."
                )
            want = (b, num_frames, height, width, mcfg.in_channels)
            if tuple(x_cond.shape) != want:
                raise ValueError(f"x_cond must have shape {want}; got {tuple(x_cond.shape)}.")
            x_mask = jnp.asarray(x_mask, bool)
        if y_mask is not None and not bool(np.all(np.asarray(y_mask).astype(bool).any(axis=1))):
            raise ValueError("the caption mask y_mask must mark at least one real token per clip; a row is all False.")
        if fps is not None:
            if np.ndim(fps) > 0 and tuple(np.shape(fps)) != (b,):
                raise ValueError(f"fps must be a scalar or have shape [B] = ({b},); got {tuple(np.shape(fps))}.")
            fps = jnp.broadcast_to(jnp.asarray(fps, jnp.float32), (b,))
        return _run(
            params,
            rng,
            y,
            y_mask,
            jnp.asarray(guidance_scale, jnp.float32),
            fps,
            x_cond,
            x_mask,
            motion,
            pixel_size,
            num_frames=num_frames,
            height=height,
            width=width,
            num_steps=num_steps,
        )

    sample.jitted = _run
    return sample
