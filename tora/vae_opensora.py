"""Open-Sora 1.2's video VAE (`VideoAutoencoderPipeline`, released as hpcai-tech/OpenSora-VAE-v1.2), in Linen.

Two stages, as in hpcaitech/Open-Sora branch opensora/v1.2 (opensora/models/vae/vae.py, vae_temporal.py):

1. `SpatialVAE` (Open-Sora's `VideoAutoencoderKL`): the 2D SD-VAE (diffusers' `AutoencoderKL` with the SDXL
   VAE's config, PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers) run frame by frame in micro-batches of
   `micro_batch_size` frames; latents are scaled by 0.18215. [B, T, H, W, 3] -> [B, T, H/8, W/8, 4].
2. `TemporalVAE` (Open-Sora's `VAE_Temporal_SD`): a causal 3D conv VAE on those latents, 4 -> 4 channels,
   time compression 4. A clip is zero-padded at the front to a multiple of 4 (17 -> 20 frames -> 5 latents)
   and the padding is cut off after decoding. The pipeline runs it on chunks of `micro_frame_size` = 17
   frames, so 51 frames -> 3 x 5 = 15 latent frames (17 -> 5, 102 -> 30; 20 -> 5 + 1 = 6).

`OpenSoraVAE` chains them and normalises the latents per channel, z = (z_temporal - shift) / scale with
Open-Sora's shift (-0.10, 0.34, 0.27, 0.98) and scale (3.85, 2.32, 2.33, 3.06). Layout is channels-last
throughout (video [B, T, H, W, C] in [-1, 1]); parameter names mirror the PyTorch module names
(`spatial_vae/module/encoder/down_blocks_0/resnets_1/conv1/kernel` <- `spatial_vae.module.encoder.
down_blocks.0.resnets.1.conv1.weight`), so `tora.load_opensora_vae(path)` maps the released checkpoint key
by key. `encode(x)` returns the posterior means; `encode(x, rng)` samples both posteriors as Open-Sora does.

Which VAE to use:
- `tora.VAE3D` / `tora.VAEConfig` (tora/vae.py), a compact causal 3D VAE trained from scratch, stays the
  default for the CPU experiments (examples, `RunConfig`): it is small, strictly causal per frame and trains
  in minutes. It is not weight-compatible with Open-Sora.
- `tora.OpenSoraVAE(tora.OpenSoraVAEConfig())` (this file) with `tora.load_opensora_vae(path)` is the
  choice for Open-Sora 1.2 / Tora weights: latents of an `STDiTConfig.xl()` backbone loaded with
  `tora.load_opensora` come from (and decode through) this VAE. 393.3M parameters (83.7M in the spatial
  SD-VAE, 309.7M in the temporal VAE, 517 checkpoint keys with the two buffers); `OpenSoraVAEConfig.tiny()`
  is for tests.

Usage (weights from hpcai-tech/OpenSora-VAE-v1.2, downloaded beforehand):

    cfg = tora.OpenSoraVAEConfig()
    params = tora.load_opensora_vae("OpenSora-VAE-v1.2/model.safetensors", cfg)
    vae = tora.OpenSoraVAE(cfg)
    z = jax.jit(lambda p, x: vae.apply({"params": p}, x, method="encode"))(params, video)  # 51x240x426 -> [B, 15, 30, 53, 4]
    x = jax.jit(lambda p, z: vae.apply({"params": p}, z, 51, method="decode"))(params, z)  # [B, 51, 240, 424, 3]

(the SD-VAE floors odd sizes: 426 -> 213 -> 106 -> 53 latents -> 424 pixels, as in Open-Sora). Non-finite
input is checked on concrete arrays (a host copy); under `jax.jit` only shapes and channels are checked.

DECISION: the reference's GroupNorm in the temporal VAE pools statistics over time within a chunk, so a
latent frame depends on later frames of its 17-frame chunk; we keep that (weights are trained with it),
unlike tora/vae.py's per-frame statistics.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxzoo
from jaxzoo.nn import Conv, DenseGeneral, GroupNorm, dot_product_attention

__all__ = [
    "OpenSoraVAE",
    "OpenSoraVAEConfig",
    "SDVAEConfig",
    "SpatialVAE",
    "TemporalVAE",
    "TemporalVAEConfig",
]


# ------------------------------------------------------------------------------------------------ configs
@dataclasses.dataclass(frozen=True)
class SDVAEConfig(jaxzoo.Config):
    """diffusers' AutoencoderKL as Open-Sora 1.2's spatial VAE uses it (the SDXL VAE config)."""

    in_channels: int = 3  # pixel channels
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # width of each level (all but the last halve H, W)
    layers_per_block: int = 2  # resnets per encoder level (the decoder has one more)
    norm_num_groups: int = 32  # GroupNorm groups
    latent_channels: int = 4  # channels of the latent
    scaling_factor: float = 0.18215  # latents are multiplied by this (Open-Sora's constant, not SDXL's 0.13025)
    micro_batch_size: int | None = 4  # frames per encoder/decoder call (memory knob; None: all at once)
    precision: jaxzoo.Precision = jaxzoo.Precision()  # compute dtype float32 or bfloat16; params stay float32

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"every block_out_channels {self.block_out_channels} must divide into "
                             f"norm_num_groups={self.norm_num_groups} groups.")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1 or None; got {self.micro_batch_size}.")

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclasses.dataclass(frozen=True)
class TemporalVAEConfig(jaxzoo.Config):
    """Open-Sora 1.2's `VAE_Temporal_SD`: a causal 3D conv VAE on the spatial latents (time only)."""

    in_out_channels: int = 4  # channels in and out (the spatial latent)
    latent_embed_dim: int = 4  # latent channels
    embed_dim: int = 4  # channels after quant_conv (Open-Sora: = latent_embed_dim)
    filters: int = 128  # width of the first level
    num_res_blocks: int = 4  # residual blocks per level and in the middle
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)  # width of each level as a multiple of `filters`
    temporal_downsample: tuple[bool, ...] = (False, True, True)  # transitions that halve T (x4 total)
    num_groups: int = 32  # GroupNorm groups (statistics over channels of a group, T, H and W)

    precision: jaxzoo.Precision = jaxzoo.Precision()  # compute dtype float32 or bfloat16; params stay float32

    def __post_init__(self):
        object.__setattr__(self, "channel_multipliers", tuple(self.channel_multipliers))
        object.__setattr__(self, "temporal_downsample", tuple(bool(t) for t in self.temporal_downsample))
        if len(self.temporal_downsample) != len(self.channel_multipliers) - 1:
            raise ValueError(f"temporal_downsample needs one entry per level transition "
                             f"({len(self.channel_multipliers) - 1}); got {len(self.temporal_downsample)}.")
        if any((self.filters * m) % self.num_groups for m in self.channel_multipliers):
            raise ValueError(f"every level width filters x {self.channel_multipliers} must divide into "
                             f"num_groups={self.num_groups} groups.")

    @property
    def time_downsample_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a clip: front-padded to a multiple of the factor (17 -> 20 -> 5)."""
        f = self.time_downsample_factor
        return (num_frames + (-num_frames % f)) // f


@dataclasses.dataclass(frozen=True)
class OpenSoraVAEConfig(jaxzoo.Config):
    """Open-Sora 1.2's `VideoAutoencoderPipeline` (`OpenSoraVAE_V1_2`): spatial SD-VAE then temporal VAE."""

    spatial: SDVAEConfig = SDVAEConfig()  # the per-frame 2D VAE
    temporal: TemporalVAEConfig = TemporalVAEConfig()  # the causal temporal VAE
    micro_frame_size: int | None = 17  # frames per temporal-VAE chunk (None: the whole clip in one chunk)
    shift: tuple[float, ...] = (-0.10, 0.34, 0.27, 0.98)  # per-channel latent shift: z = (z - shift) / scale
    scale: tuple[float, ...] = (3.85, 2.32, 2.33, 3.06)  # per-channel latent scale

    def __post_init__(self):
        object.__setattr__(self, "shift", tuple(float(s) for s in self.shift))
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        c = self.temporal.latent_embed_dim
        if len(self.shift) not in (1, c) or len(self.scale) not in (1, c):
            raise ValueError(f"shift and scale need 1 or {c} entries; got {len(self.shift)} and {len(self.scale)}.")
        if self.temporal.in_out_channels != self.spatial.latent_channels:
            raise ValueError(f"the temporal VAE takes {self.temporal.in_out_channels} channels but the spatial "
                             f"VAE gives {self.spatial.latent_channels}.")
        if self.micro_frame_size is not None and self.micro_frame_size < 1:
            raise ValueError(f"micro_frame_size must be >= 1 or None; got {self.micro_frame_size}.")

    @classmethod
    def v1_2(cls, **overrides) -> OpenSoraVAEConfig:
        """The released OpenSora-VAE-v1.2 (the defaults)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> OpenSoraVAEConfig:
        """Two spatial levels (x2), three temporal levels (x4 in time), widths 8-32: for tests."""
        kw = dict(
            spatial=SDVAEConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                micro_batch_size=4),
            temporal=TemporalVAEConfig(filters=8, num_res_blocks=1, channel_multipliers=(1, 2, 2, 4),
                                       temporal_downsample=(False, True, True), num_groups=4),
        )
        return cls(**{**kw, **overrides})

    @property
    def latent_channels(self) -> int:
        return self.temporal.embed_dim

    def latent_frames(self, num_frames: int) -> int:
        """Open-Sora's `get_latent_size` in time: 17 -> 5, 51 -> 15, 102 -> 30, 20 -> 6, 1 -> 1."""
        m, tv = self.micro_frame_size, self.temporal
        if m is None:
            return tv.latent_frames(num_frames)
        rest = num_frames % m
        return (num_frames // m) * tv.latent_frames(m) + (tv.latent_frames(rest) if rest else 0)


# ------------------------------------------------------------------------------------------------ layers
# ------------------------------------------------------------------------------ spatial: diffusers AutoencoderKL
class SDResnetBlock(nn.Module):
    """diffusers' ResnetBlock2D without time embedding: GN -> SiLU -> conv3 -> GN -> SiLU -> conv3, + a 1x1
    `conv_shortcut` when the width changes. x [N, H, W, Cin] -> [N, H, W, features]."""

    features: int
    groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = Conv(self.features, (3, 3), dtype=self.dtype, name="conv1")(
            nn.silu(GroupNorm(self.groups, eps=1e-6, name="norm1")(x)))
        h = Conv(self.features, (3, 3), dtype=self.dtype, name="conv2")(
            nn.silu(GroupNorm(self.groups, eps=1e-6, name="norm2")(h)))
        if x.shape[-1] != self.features:
            x = Conv(self.features, (1, 1), dtype=self.dtype, name="conv_shortcut")(x)
        return x + h


class SDAttention(nn.Module):
    """The single-head self-attention of diffusers' UNetMidBlock2D (group_norm, to_q/k/v, to_out.0, residual)
    over the H W positions of each image. x [N, H, W, C] -> same."""

    groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        n, hh, ww, c = x.shape
        h = GroupNorm(self.groups, eps=1e-6, name="group_norm")(x).reshape(n, hh * ww, c)  # [N, L, C]
        dense = lambda name, axes: DenseGeneral((c,), axes, dtype=self.dtype, name=name)  # noqa: E731
        q, k, v = (dense(nm, ("embed", "head_dim"))(h)[:, :, None] for nm in ("to_q", "to_k", "to_v"))  # [N, L, 1, C]
        o = dot_product_attention(q, k, v)[:, :, 0]  # [N, L, C]
        return x + dense("to_out_0", ("head_dim", "embed"))(o).reshape(n, hh, ww, c)


class SDMidBlock(nn.Module):
    """diffusers' UNetMidBlock2D as the VAE uses it: resnet, attention, resnet."""

    groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = SDResnetBlock(c, self.groups, self.dtype, name="resnets_0")(x)
        x = SDAttention(self.groups, self.dtype, name="attentions_0")(x)
        return SDResnetBlock(c, self.groups, self.dtype, name="resnets_1")(x)


class SDDownsample(nn.Module):
    """diffusers' Downsample2D(padding=0): zero-pad bottom and right by 1, conv 3x3 stride 2."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):  # [N, H, W, C] -> [N, H // 2, W // 2, features]
        return Conv(self.features, (3, 3), (2, 2), ((0, 1), (0, 1)), dtype=self.dtype, name="conv")(x)


class SDUpsample(nn.Module):
    """diffusers' Upsample2D: nearest x2, conv 3x3."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):  # [N, H, W, C] -> [N, 2H, 2W, features]
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return Conv(self.features, (3, 3), dtype=self.dtype, name="conv")(x)


class SDBlock(nn.Module):
    """DownEncoderBlock2D / UpDecoderBlock2D: `num_layers` resnets, then a downsampler (`resample="down"`), an
    upsampler ("up") or nothing (None, the last block)."""

    features: int
    num_layers: int
    groups: int
    resample: str | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for j in range(self.num_layers):
            x = SDResnetBlock(self.features, self.groups, self.dtype, name=f"resnets_{j}")(x)
        if self.resample == "down":
            x = SDDownsample(self.features, self.dtype, name="downsamplers_0")(x)
        elif self.resample == "up":
            x = SDUpsample(self.features, self.dtype, name="upsamplers_0")(x)
        return x


class SDEncoder(nn.Module):
    """diffusers' vae.Encoder: x [N, H, W, 3] -> moments [N, H/f, W/f, 2 latent_channels]."""

    config: SDVAEConfig

    @nn.compact
    def __call__(self, x):
        cfg, dt = self.config, self.config.precision.compute
        chans, g = cfg.block_out_channels, cfg.norm_num_groups
        x = Conv(chans[0], (3, 3), dtype=dt, name="conv_in")(x.astype(dt))
        for i, c in enumerate(chans):
            x = SDBlock(c, cfg.layers_per_block, g, "down" if i < len(chans) - 1 else None, dt,
                        name=f"down_blocks_{i}")(x)
        x = SDMidBlock(g, dt, name="mid_block")(x)
        x = nn.silu(GroupNorm(g, eps=1e-6, name="conv_norm_out")(x))
        return Conv(2 * cfg.latent_channels, (3, 3), dtype=dt, name="conv_out")(x)


class SDDecoder(nn.Module):
    """diffusers' vae.Decoder: z [N, h, w, latent_channels] -> x [N, h f, w f, 3]."""

    config: SDVAEConfig

    @nn.compact
    def __call__(self, z):
        cfg, dt = self.config, self.config.precision.compute
        chans, g = cfg.block_out_channels[::-1], cfg.norm_num_groups
        x = Conv(chans[0], (3, 3), dtype=dt, name="conv_in")(z.astype(dt))
        x = SDMidBlock(g, dt, name="mid_block")(x)
        for i, c in enumerate(chans):
            x = SDBlock(c, cfg.layers_per_block + 1, g, "up" if i < len(chans) - 1 else None, dt,
                        name=f"up_blocks_{i}")(x)
        x = nn.silu(GroupNorm(g, eps=1e-6, name="conv_norm_out")(x))
        return Conv(cfg.in_channels, (3, 3), dtype=dt, name="conv_out")(x).astype(jnp.float32)


class SDAutoencoderKL(nn.Module):
    """diffusers' AutoencoderKL (encoder, quant_conv, post_quant_conv, decoder) on images [N, H, W, C]."""

    config: SDVAEConfig

    def setup(self):
        cfg = self.config
        self.encoder = SDEncoder(cfg)
        self.quant_conv = Conv(2 * cfg.latent_channels, (1, 1), dtype=cfg.precision.compute)
        self.post_quant_conv = Conv(cfg.latent_channels, (1, 1), dtype=cfg.precision.compute)
        self.decoder = SDDecoder(cfg)

    def encode(self, x):
        """x [N, H, W, C] -> (mean, logvar) [N, H/f, W/f, latent_channels], logvar clipped to [-30, 20]."""
        moments = self.quant_conv(self.encoder(x)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z):
        """z [N, h, w, latent_channels] -> x [N, h f, w f, C]."""
        return self.decoder(self.post_quant_conv(z.astype(self.config.precision.compute)))

    def __call__(self, x):
        return self.decode(self.encode(x)[0])


def _scan_chunks(fn, module: nn.Module, xs):
    """fn(module, chunk) for each chunk along the leading axis of the pytree xs, stacked: an nn.scan with
    the parameters broadcast (one traced copy of the network however many chunks)."""
    if jax.tree.leaves(xs)[0].shape[0] == 1:
        return jax.tree.map(lambda y: y[None], fn(module, jax.tree.map(lambda v: v[0], xs)))
    body = lambda mdl, carry, xb: (carry, fn(mdl, xb))  # noqa: E731
    return nn.scan(body, variable_broadcast="params", split_rngs={"params": False})(module, None, xs)[1]


def _micro_batched(fn, module: nn.Module, x: jax.Array, size: int | None):
    """fn(module, x[i : i + size]) over the leading axis of x, concatenated (the last micro-batch is
    zero-padded: every op here is per image)."""
    n = x.shape[0]
    if size is None or n <= size:
        return fn(module, x)
    pad = -n % size
    xs = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape(-1, size, *x.shape[1:])
    ys = _scan_chunks(fn, module, xs)
    return jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:])[:n], ys)


def _frame_chunks(fn, module: nn.Module, x: jax.Array, q: int, size: int):
    """fn(module, x[:, k size : (k + 1) size]) for k < q, concatenated along time (axis 1). x [B, >= q size, ...]."""
    b = x.shape[0]
    xs = x[:, : q * size].reshape(b, q, size, *x.shape[2:]).swapaxes(0, 1)  # [q, B, size, ...]
    ys = _scan_chunks(fn, module, xs)
    return jax.tree.map(lambda y: y.swapaxes(0, 1).reshape(b, q * y.shape[2], *y.shape[3:]), ys)


class SpatialVAE(nn.Module):
    """Open-Sora's `VideoAutoencoderKL`: the SD-VAE on each frame, latents x 0.18215, micro-batched.

    encode: x [B, T, H, W, C] -> [B, T, H/8, W/8, 4]; decode: the inverse. Parameters under `module/`."""

    config: SDVAEConfig

    def setup(self):
        self.module = SDAutoencoderKL(self.config)

    def encode(self, x, rng=None):
        """Posterior mean (rng None) or a sample (Open-Sora samples), times scaling_factor."""
        b, t = x.shape[:2]
        frames = x.reshape(b * t, *x.shape[2:])
        mean, logvar = _micro_batched(lambda m, v: m.encode(v), self.module, frames, self.config.micro_batch_size)
        z = mean if rng is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
        return (z * self.config.scaling_factor).reshape(b, t, *z.shape[1:])

    def decode(self, z):
        b, t = z.shape[:2]
        frames = (z / self.config.scaling_factor).reshape(b * t, *z.shape[2:])
        x = _micro_batched(lambda m, v: m.decode(v), self.module, frames, self.config.micro_batch_size)
        return x.reshape(b, t, *x.shape[1:])

    def __call__(self, x):
        return self.decode(self.encode(x))


# ------------------------------------------------------------------------------ temporal: VAE_Temporal_SD
class CausalConv(nn.Module):
    """Open-Sora's CausalConv3d: zero pad kt - st frames in front and k // 2 around H, W, then `conv`
    (a Conv3d: parameters under `conv/`, as torch's `.conv.weight`). x [B, T, H, W, C]."""

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    strides: tuple[int, int, int] = (1, 1, 1)
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return Conv(self.features, self.kernel_size, self.strides, "causal", use_bias=self.use_bias,
                    dtype=self.dtype, name="conv")(x)


class TemporalResBlock(nn.Module):
    """Open-Sora's ResBlock: GN -> SiLU -> conv1 -> GN -> SiLU -> conv2 (3x3x3, no bias), + conv3 (1x1x1)
    on the residual when the width changes. GroupNorm pools over T, H, W (torch's GroupNorm, eps 1e-5)."""

    features: int
    groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = CausalConv(self.features, use_bias=False, dtype=self.dtype, name="conv1")(
            nn.silu(GroupNorm(self.groups, eps=1e-5, name="norm1")(x)))
        h = CausalConv(self.features, use_bias=False, dtype=self.dtype, name="conv2")(
            nn.silu(GroupNorm(self.groups, eps=1e-5, name="norm2")(h)))
        if x.shape[-1] != self.features:
            x = CausalConv(self.features, (1, 1, 1), use_bias=False, dtype=self.dtype, name="conv3")(x)
        return h + x


class TemporalEncoder(nn.Module):
    """Open-Sora's vae_temporal.Encoder: x [B, T, H, W, C] (T a multiple of the factor) -> [B, T/f, H, W, out]."""

    config: TemporalVAEConfig
    features: int

    @nn.compact
    def __call__(self, x):
        cfg, dt = self.config, self.config.precision.compute
        x = CausalConv(cfg.filters, use_bias=False, dtype=dt, name="conv_in")(x.astype(dt))
        n = len(cfg.channel_multipliers)
        for i, mult in enumerate(cfg.channel_multipliers):
            width = cfg.filters * mult
            for j in range(cfg.num_res_blocks):
                x = TemporalResBlock(width, cfg.num_groups, dt, name=f"block_res_blocks_{i}_{j}")(x)
            if i < n - 1 and cfg.temporal_downsample[i]:
                x = CausalConv(width, strides=(2, 1, 1), dtype=dt, name=f"conv_blocks_{i}")(x)
        width = cfg.filters * cfg.channel_multipliers[-1]
        for j in range(cfg.num_res_blocks):
            x = TemporalResBlock(width, cfg.num_groups, dt, name=f"res_blocks_{j}")(x)
        x = nn.silu(GroupNorm(cfg.num_groups, eps=1e-5, name="norm1")(x))
        return CausalConv(self.features, (1, 1, 1), dtype=dt, name="conv2")(x)


class TemporalDecoder(nn.Module):
    """Open-Sora's vae_temporal.Decoder: z [B, T', H, W, Cz] -> [B, T' f, H, W, C] (depth-to-space in time)."""

    config: TemporalVAEConfig

    @nn.compact
    def __call__(self, z):
        cfg, dt = self.config, self.config.precision.compute
        width = cfg.filters * cfg.channel_multipliers[-1]
        x = CausalConv(width, dtype=dt, name="conv1")(z.astype(dt))
        for j in range(cfg.num_res_blocks):
            x = TemporalResBlock(width, cfg.num_groups, dt, name=f"res_blocks_{j}")(x)
        for i in reversed(range(len(cfg.channel_multipliers))):
            width = cfg.filters * cfg.channel_multipliers[i]
            for j in range(cfg.num_res_blocks):
                x = TemporalResBlock(width, cfg.num_groups, dt, name=f"block_res_blocks_{i}_{j}")(x)
            if i > 0 and cfg.temporal_downsample[i - 1]:
                c = x.shape[-1]
                x = CausalConv(2 * c, dtype=dt, name=f"conv_blocks_{i - 1}")(x)
                b, t, h, w, _ = x.shape  # "B (C ts) T H W -> B C (T ts) H W", channels last
                x = x.reshape(b, t, h, w, c, 2).transpose(0, 1, 5, 2, 3, 4).reshape(b, 2 * t, h, w, c)
        x = nn.silu(GroupNorm(cfg.num_groups, eps=1e-5, name="norm1")(x))
        return CausalConv(cfg.in_out_channels, dtype=dt, name="conv_out")(x).astype(jnp.float32)


class TemporalVAE(nn.Module):
    """Open-Sora's `VAE_Temporal` (`VAE_Temporal_SD` at the default config).

    encode: x [B, T, H, W, C] -> (mean, logvar) [B, ceil(T / f), H, W, embed_dim] (front zero padding);
    decode(z, num_frames): -> [B, T' f - pad, H, W, C], the front padding of a `num_frames` clip cut off."""

    config: TemporalVAEConfig

    def setup(self):
        cfg, dt = self.config, self.config.precision.compute
        self.encoder = TemporalEncoder(cfg, 2 * cfg.latent_embed_dim)
        self.quant_conv = CausalConv(2 * cfg.embed_dim, (1, 1, 1), dtype=dt)
        self.post_quant_conv = CausalConv(cfg.latent_embed_dim, (1, 1, 1), dtype=dt)
        self.decoder = TemporalDecoder(cfg)

    def encode(self, x):
        pad = -x.shape[1] % self.config.time_downsample_factor
        x = jnp.pad(x, ((0, 0), (pad, 0), (0, 0), (0, 0), (0, 0)))
        moments = self.quant_conv(self.encoder(x)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z, num_frames: int | None = None):
        f = self.config.time_downsample_factor
        num_frames = z.shape[1] * f if num_frames is None else num_frames
        x = self.decoder(self.post_quant_conv(z.astype(self.config.precision.compute)))
        return x[:, -num_frames % f:]

    def __call__(self, x):
        return self.decode(self.encode(x)[0], x.shape[1])


# ------------------------------------------------------------------------------------------------ pipeline
def _check(x, name: str, channels: int, what: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{name} must be [B, T, H, W, C] ({what}); got shape {tuple(x.shape)}.")
    if x.shape[-1] != channels:
        raise ValueError(f"{name} has {x.shape[-1]} channels; the Open-Sora VAE expects {channels} ({what}).")
    if x.shape[1] < 1:
        raise ValueError(f"{name} has {x.shape[1]} frames; expected at least 1.")
    if not isinstance(x, jax.core.Tracer) and not bool(np.isfinite(np.asarray(x, np.float32)).all()):
        raise ValueError(f"{name} holds NaN or infinite values; expected finite {what}.")


class OpenSoraVAE(nn.Module):
    """Open-Sora 1.2's `VideoAutoencoderPipeline`. Parameters: `spatial_vae/...`, `temporal_vae/...`.

    encode(x [B, T, H, W, 3] in [-1, 1], rng=None) -> z [B, latent_frames(T), H/8, W/8, 4], normalised;
    decode(z, num_frames) -> x [B, num_frames, 8 h, 8 w, 3]. rng None: posterior means (deterministic);
    an rng samples both posteriors as Open-Sora's encode does. `apply(v, x)` = decode(encode(x), T)."""

    config: OpenSoraVAEConfig

    def setup(self):
        self.spatial_vae = SpatialVAE(self.config.spatial)
        self.temporal_vae = TemporalVAE(self.config.temporal)

    def _norm(self):
        c = self.config.latent_channels
        shift = jnp.broadcast_to(jnp.asarray(self.config.shift, jnp.float32), (c,))
        return shift, jnp.broadcast_to(jnp.asarray(self.config.scale, jnp.float32), (c,))

    def encode(self, x, rng=None):
        _check(x, "video x", self.config.spatial.in_channels, "RGB frames in [-1, 1]")
        r1, r2 = (None, None) if rng is None else jax.random.split(rng)
        x_z = self.spatial_vae.encode(x, r1)  # [B, T, h, w, 4]
        m = self.config.micro_frame_size or x_z.shape[1]
        q, r = divmod(x_z.shape[1], m)  # q chunks of m frames (one scanned network), then r frames
        enc = lambda mdl, v: mdl.encode(v)  # noqa: E731
        parts = [_frame_chunks(enc, self.temporal_vae, x_z, q, m)] if q else []
        if r:
            parts.append(self.temporal_vae.encode(x_z[:, q * m:]))
        mean = jnp.concatenate([p[0] for p in parts], axis=1)
        if r2 is not None:  # Open-Sora samples the posterior
            logvar = jnp.concatenate([p[1] for p in parts], axis=1)
            mean = mean + jnp.exp(0.5 * logvar) * jax.random.normal(r2, mean.shape)
        shift, scale = self._norm()
        return (mean - shift) / scale

    def decode(self, z, num_frames: int | None = None):
        """z [B, T', h, w, 4] -> video [B, num_frames, 8 h, 8 w, 3]; num_frames must give T' latent frames and
        defaults to the longest clip that does (15 latents -> 51 frames, 5 -> 17)."""
        _check(z, "latents z", self.config.latent_channels, "normalised latents")
        cfg = self.config
        m = cfg.micro_frame_size
        if num_frames is None:
            num_frames = z.shape[1] * cfg.temporal.time_downsample_factor
            while num_frames > 1 and cfg.latent_frames(num_frames) != z.shape[1]:
                num_frames -= 1
        if num_frames < 1 or cfg.latent_frames(num_frames) != z.shape[1]:
            raise ValueError(f"num_frames={num_frames} gives {cfg.latent_frames(max(num_frames, 1))} latent frames, "
                             f"but z has {z.shape[1]}.")
        shift, scale = self._norm()
        z = z * scale + shift
        m = num_frames if m is None else m
        q, r = divmod(num_frames, m)  # q chunks of lf(m) latents -> m frames each, then the rest -> r frames
        mz = cfg.temporal.latent_frames(m)
        dec = lambda mdl, v: mdl.decode(v, m)  # noqa: E731
        parts = [_frame_chunks(dec, self.temporal_vae, z, q, mz)] if q else []
        if r:
            parts.append(self.temporal_vae.decode(z[:, q * mz:], r))
        return self.spatial_vae.decode(jnp.concatenate(parts, axis=1))

    def __call__(self, x, rng=None):
        return self.decode(self.encode(x, rng), x.shape[1])


def sharding_examples() -> list[tuple[str, nn.Module, tuple]]:
    """One tiny instance and sample inputs of every Linen module class of this file (for tora's
    `sharding_examples()`): `(name, module, args)`."""
    cfg = OpenSoraVAEConfig.tiny(  # one level each: the smallest graphs (compile time)
        spatial=SDVAEConfig(block_out_channels=(8,), layers_per_block=1, norm_num_groups=4),
        temporal=TemporalVAEConfig(filters=8, num_res_blocks=1, channel_multipliers=(1,), temporal_downsample=(),
                                   num_groups=4))
    s, t = cfg.spatial, cfg.temporal
    img, feat = jnp.zeros((4, 2, 2, 3)), jnp.zeros((4, 2, 2, 8))  # [N, H, W, C]
    clip = jnp.zeros((4, 1, 2, 2, 8))  # [B, T, H, W, C]
    lat = jnp.zeros((4, 1, 2, 2, 4))
    return [
        ("SDResnetBlock", SDResnetBlock(16, 4), (feat,)),
        ("SDAttention", SDAttention(4), (feat,)),
        ("SDMidBlock", SDMidBlock(4), (feat,)),
        ("SDDownsample", SDDownsample(8), (feat,)),
        ("SDUpsample", SDUpsample(8), (feat,)),
        ("SDBlock/down", SDBlock(8, 1, 4, "down"), (feat,)),
        ("SDBlock/up", SDBlock(8, 1, 4, "up"), (feat,)),
        ("SDEncoder", SDEncoder(s), (img,)),
        ("SDDecoder", SDDecoder(s), (jnp.zeros((4, 2, 2, 4)),)),
        ("SDAutoencoderKL", SDAutoencoderKL(s), (img,)),
        ("SpatialVAE", SpatialVAE(s), (img[:, None],)),
        ("CausalConv", CausalConv(8), (clip,)),
        ("TemporalResBlock", TemporalResBlock(16, 4), (clip,)),
        ("TemporalEncoder", TemporalEncoder(t, 8), (lat,)),
        ("TemporalDecoder", TemporalDecoder(t), (lat,)),
        ("TemporalVAE", TemporalVAE(t), (lat,)),
        ("OpenSoraVAE", OpenSoraVAE(cfg), (img[:, None],)),
    ]
