"""A compact Magvit-v2 style causal 3D VAE (Open-Sora 1.2's `VAE_Temporal_SD`, extended to space).

Video x [B, T, H, W, C] in [-1, 1] -> latents z [B, T / ft, H / fs, W / fs, latent_channels] with ft, fs the
temporal and spatial factors of `VAEConfig` (x4 and x8 by default). Every convolution is causal in time
(zero front padding of kt - stride frames), T is zero-padded at the front to a multiple of ft (Open-Sora
pads 17 frames to 20 -> 5 latents), and GroupNorm is taken per frame, so latent frame j depends only on
input frames < (j + 1) * ft (in padded frame indices). DECISION: Open-Sora's GroupNorm also pools over
time, which leaks future frames into past latents; per-frame statistics keep the encoder strictly causal.
Tora uses this architecture as its motion VAE.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxzoo
from tora.config import VAEConfig


def _dtype(cfg: VAEConfig):
    return cfg.precision.compute


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over all but the batch axis: [B]."""
    kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    return kl.reshape(kl.shape[0], -1).sum(-1)


def depth_to_space(x: jax.Array, ts: int, ss: int) -> jax.Array:
    """[B, T, H, W, C * ts * ss * ss] -> [B, T ts, H ss, W ss, C] ("B T H W (C ts hs ws) -> B (T ts) (H hs) (W ws) C")."""
    b, t, h, w, c = x.shape
    c_out = c // (ts * ss * ss)
    x = x.reshape(b, t, h, w, c_out, ts, ss, ss).transpose(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, t * ts, h * ss, w * ss, c_out)


def CausalConv3d(features: int, kernel: tuple[int, int, int] = (3, 3, 3), strides: tuple[int, int, int] = (1, 1, 1),
                 dtype=jnp.float32, name: str | None = None) -> jaxzoo.Conv:
    """Conv3d, causal in time (`jaxzoo.Conv` with padding "causal": kt - st zeros in front of T, k // 2
    around H, W), torch's default initialisation: [B, T, H, W, Cin] -> [B, T / st, H / sh, W / sw, features]."""
    return jaxzoo.Conv(features, kernel, strides, "causal", dtype=dtype, name=name)


def frame_group_norm(num_groups: int, channels: int, name: str | None = None) -> jaxzoo.GroupNorm:
    """GroupNorm of x [B, T, H, W, C] with statistics per frame (over H, W and the group's channels, so
    it stays causal); the group count is clipped to the largest divisor of C that is <= `num_groups`."""
    g = min(num_groups, channels)
    while channels % g:
        g -= 1
    return jaxzoo.GroupNorm(num_groups=g, eps=1e-6, reduce_axes=(2, 3), name=name)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv3 -> GN -> SiLU -> conv3, plus a 1x1x1 conv skip when the width changes."""

    features: int
    num_groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = CausalConv3d(self.features, dtype=self.dtype, name="conv1")(
            nn.silu(frame_group_norm(self.num_groups, x.shape[-1], name="norm1")(x))
        )
        h = CausalConv3d(self.features, dtype=self.dtype, name="conv2")(
            nn.silu(frame_group_norm(self.num_groups, h.shape[-1], name="norm2")(h))
        )
        if x.shape[-1] != self.features:
            x = CausalConv3d(self.features, (1, 1, 1), dtype=self.dtype, name="skip")(x)
        return x + h


class Encoder(nn.Module):
    """x [B, T, H, W, C] (T a multiple of the temporal factor) -> (mean, logvar) [B, T', H', W', Cz]."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x):
        cfg, dtype = self.config, _dtype(self.config)
        h = CausalConv3d(cfg.filters, dtype=dtype, name="conv_in")(x.astype(dtype))
        for i, mult in enumerate(cfg.channel_multipliers):
            width = cfg.filters * mult
            for j in range(cfg.num_res_blocks):
                h = ResBlock(width, cfg.num_groups, dtype, name=f"down_{i}_res_{j}")(h)
            st = 2 if cfg.temporal_downsample[i] else 1
            ss = 2 if cfg.spatial_downsample[i] else 1
            if st > 1 or ss > 1:
                h = CausalConv3d(width, strides=(st, ss, ss), dtype=dtype, name=f"down_{i}")(h)
        width = cfg.filters * cfg.channel_multipliers[-1]
        h = ResBlock(width, cfg.num_groups, dtype, name="mid_res")(h)
        h = nn.silu(frame_group_norm(cfg.num_groups, h.shape[-1], name="norm_out")(h))
        h = CausalConv3d(2 * cfg.latent_channels, dtype=dtype, name="conv_out")(h).astype(jnp.float32)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)


class Decoder(nn.Module):
    """z [B, T', H', W', Cz] -> x [B, T' ft, H' fs, W' fs, C]; upsampling by conv + depth-to-space."""

    config: VAEConfig

    @nn.compact
    def __call__(self, z):
        cfg, dtype = self.config, _dtype(self.config)
        width = cfg.filters * cfg.channel_multipliers[-1]
        h = CausalConv3d(width, dtype=dtype, name="conv_in")(z.astype(dtype))
        h = ResBlock(width, cfg.num_groups, dtype, name="mid_res")(h)
        for i in reversed(range(len(cfg.channel_multipliers))):
            width = cfg.filters * cfg.channel_multipliers[i]
            st = 2 if cfg.temporal_downsample[i] else 1
            ss = 2 if cfg.spatial_downsample[i] else 1
            if st > 1 or ss > 1:
                h = CausalConv3d(h.shape[-1] * st * ss * ss, dtype=dtype, name=f"up_{i}")(h)
                h = depth_to_space(h, st, ss)
            for j in range(cfg.num_res_blocks):
                h = ResBlock(width, cfg.num_groups, dtype, name=f"up_{i}_res_{j}")(h)
        h = nn.silu(frame_group_norm(cfg.num_groups, h.shape[-1], name="norm_out")(h))
        return CausalConv3d(cfg.in_channels, dtype=dtype, name="conv_out")(h).astype(jnp.float32)


def _check_video(cfg: VAEConfig, x) -> None:
    if x.ndim != 5:
        raise ValueError(f"VAE3D expects video x of shape [B, T, H, W, C]; got shape {tuple(x.shape)}.")
    b, t, h, w, c = x.shape
    if t < 1:
        raise ValueError(f"num_frames must be >= 1; got T={t}.")
    if c != cfg.in_channels:
        raise ValueError(f"x has {c} channels but the VAE expects in_channels={cfg.in_channels}.")
    if h % cfg.spatial_factor or w % cfg.spatial_factor:
        raise ValueError(
            f"H and W must be multiples of the spatial factor {cfg.spatial_factor}; got H={h}, W={w}."
        )


class VAE3D(nn.Module):
    """Causal 3D VAE. `apply(v, x, rng)` -> (reconstruction, mean, logvar); methods `encode`, `decode`."""

    config: VAEConfig

    def setup(self):
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def front_pad(self, t: int) -> int:
        """Frames of zero padding put in front of a T-frame clip (to a multiple of the temporal factor)."""
        return -t % self.config.temporal_factor

    def encode(self, x):
        """x [B, T, H, W, C] -> (mean, logvar) [B, ceil(T / ft), H / fs, W / fs, latent_channels]."""
        _check_video(self.config, x)
        p = self.front_pad(x.shape[1])
        x = jnp.pad(x, ((0, 0), (p, 0), (0, 0), (0, 0), (0, 0)))
        return self.encoder(x)

    def decode(self, z, num_frames: int | None = None):
        """z [B, T', H', W', Cz] -> x [B, num_frames or T' ft, H' fs, W' fs, C] (front padding cut off)."""
        x = self.decoder(z)
        if num_frames is not None:
            x = x[:, x.shape[1] - num_frames :]
        return x

    def __call__(self, x, rng=None):
        mean, logvar = self.encode(x)
        z = mean if rng is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
        return self.decode(z, x.shape[1]), mean, logvar


def make_vae_loss_fn(vae: VAE3D) -> Callable:
    """`loss_fn(params, batch, rng) -> (loss, metrics)`: Open-Sora's VAE loss without the perceptual and
    adversarial terms, L1 reconstruction summed per clip + kl_weight * KL, averaged over the batch.
    batch: {"x": video [B, T, H, W, C]}."""

    def loss_fn(params, batch, rng):
        x = batch["x"]
        recon, mean, logvar = vae.apply({"params": params}, x, rng)
        rec = jnp.abs(recon - x).reshape(x.shape[0], -1).sum(-1).mean()
        kl = kl_divergence(mean, logvar).mean()
        mse = jnp.square(recon - x).mean()
        return rec + vae.config.kl_weight * kl, {"l1_sum": rec, "kl": kl, "mse": mse}

    return loss_fn
