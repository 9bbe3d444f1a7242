"""Tora's motion modules (arXiv 2407.21705, Sec. 3.2-3.3): the Trajectory Extractor and the Motion-guidance Fuser.

`TrajectoryExtractor(cfg)`: flow RGB [B, T, H, W, 3] -> the motion VAE (part 1's `VAE3D`, frozen) ->
per latent frame: pixel-unshuffle, a 3x3 conv, then `num_levels` chained levels of residual blocks
(BatchNorm, ReLU, conv3x3) -> one feature map f_i [B, T', H', W', channels] per DiT block pair, where
(T', H', W') is the DiT's token grid. BatchNorm statistics live in the "batch_stats" collection.

`MotionGuidanceFuser(variant, hidden_size)`: h [B, T', H', W', C], f [B, T', H', W', Cm] -> h' like h.
  "channel":          h' = h + MLP([h, f])                                   (paper Eq. 6)
  "cross_attention":  h' = h + CrossAttn(q=h, kv=f of the same frame)        (Eq. 7)
  "adanorm":          h' = h + GroupNorm(h) * gamma(f) + beta(f)             (Eq. 8, the default)
Every variant's last layer is zero-initialised, so the fuser is the identity at init and a Tora model
starts exactly as its base ST-DiT (the paper calls this "vital").

The array maths (pixel-unshuffle, the replicate-padded temporal conv, the AdaNorm update) are the pure
functions at the top of this file, tested against numpy loops; GroupNorm is `jaxzoo.group_norm`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxzoo
from jaxzoo.nn import flat_init
from tora.config import TrajectoryExtractorConfig

__all__ = [
    "FUSER_VARIANTS",
    "TrajectoryExtractorConfig",
    "TrajectoryExtractor",
    "MotionGuidanceFuser",
    "pixel_unshuffle",
    "temporal_conv_replicate",
    "adanorm_fuse",
]

FUSER_VARIANTS = ("channel", "cross_attention", "adanorm")


# ----------------------------------------------------------------------------- pure array functions
def pixel_unshuffle(x: jax.Array, r: int) -> jax.Array:
    """[..., H, W, C] -> [..., H/r, W/r, C*r*r], channel order (c, i, j) as torch.nn.PixelUnshuffle."""
    *lead, h, w, c = x.shape
    if h % r or w % r:
        raise ValueError(f"pixel_unshuffle needs H and W divisible by {r}; got H={h}, W={w}.")
    x = x.reshape(*lead, h // r, r, w // r, r, c)  # [..., h, i, w, j, c]
    n = len(lead)
    perm = (*range(n), n, n + 2, n + 4, n + 1, n + 3)  # -> [..., h, w, c, i, j]
    return x.transpose(perm).reshape(*lead, h // r, w // r, c * r * r)


def temporal_conv_replicate(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """A 1-D convolution over frames with replicate ("edge") padding, as torch Conv1d(padding_mode="replicate").

    x: [B, T, H, W, Cin], kernel: [K, Cin, Cout] (K odd), bias: [Cout] -> [B, T, H, W, Cout]:
    out[t] = bias + sum_k x[clip(t + k - K//2, 0, T-1)] @ kernel[k] (a correlation, as torch's).
    """
    k = kernel.shape[0]
    t = x.shape[1]
    pad = k // 2
    xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0)), mode="edge")  # [B, T+2p, H, W, Cin]
    out = sum(
        jnp.einsum("bthwi,io->bthwo", xp[:, j : j + t], kernel[j], precision=jax.lax.Precision.HIGHEST)
        for j in range(k)
    )
    return out + bias


def adanorm_fuse(h: jax.Array, normed: jax.Array, gamma: jax.Array, beta: jax.Array) -> jax.Array:
    """Tora's AdaNorm fuser update h + GroupNorm(h) * gamma + beta (all [B, T, H, W, C])."""
    return h + normed * gamma + beta


def _num_groups(channels: int, wanted: int) -> int:
    """The largest divisor of `channels` that is <= `wanted` (GroupNorm32 on any width)."""
    return max(g for g in range(1, min(wanted, channels) + 1) if channels % g == 0)


# ----------------------------------------------------------------------------- fuser
def _p(init, names):
    return nn.with_logical_partitioning(init, names)


_zeros = nn.initializers.zeros_init()
_kaiming = nn.initializers.kaiming_normal()


class MotionGuidanceFuser(nn.Module):
    """Injects motion features f [B, T', H', W', Cm] into hidden states h [B, T', H', W', hidden_size].

    Returns h' shaped like h, equal to h at init for every variant (zero-initialised last layers).
    """

    variant: str = "adanorm"  # "channel", "cross_attention" or "adanorm" (the paper's best, Table 3)
    hidden_size: int = 1152  # width C of h (the ST-DiT's hidden size)
    num_groups: int = 32  # GroupNorm groups of the AdaNorm variant (clipped to a divisor of C)
    head_dim: int = 64  # cross-attention head width (one head when C is not a multiple)
    mlp_ratio: float = 1.0  # hidden width of the channel variant's MLP, as a multiple of C

    @nn.compact
    def __call__(self, h: jax.Array, f: jax.Array) -> jax.Array:
        if self.variant not in FUSER_VARIANTS:
            raise ValueError(
                f"the motion fuser variant must be one of {FUSER_VARIANTS}; got {self.variant!r}."
            )
        if h.ndim != 5 or h.shape[-1] != self.hidden_size:
            raise ValueError(
                f"the fuser expects h of shape [B, T, H, W, {self.hidden_size}]; got {tuple(h.shape)}."
            )
        if f.ndim != 5 or f.shape[:4] != h.shape[:4]:
            raise ValueError(
                f"motion features must have shape [B, T, H, W, Cm] on h's grid {tuple(h.shape[:4])}; "
                f"got {tuple(f.shape)}."
            )
        f = f.astype(h.dtype)
        c = self.hidden_size
        if self.variant == "adanorm":
            return self._adanorm(h, f, c)
        if self.variant == "channel":
            hidden = int(c * self.mlp_ratio)
            z = jnp.concatenate([h, f], -1)  # [B, T, H, W, C + Cm]
            z = nn.Dense(
                hidden,
                kernel_init=_p(nn.initializers.xavier_uniform(), ("embed", "mlp")),
                bias_init=_p(_zeros, ("mlp",)),
                name="fc1",
            )(z)
            z = nn.gelu(z, approximate=True)
            z = nn.Dense(
                c, kernel_init=_p(_zeros, ("mlp", "embed")), bias_init=_p(_zeros, ("embed",)), name="fc2"
            )(z)
            return h + z
        return h + self._cross_attention(h, f, c)

    def _adanorm(self, h, f, c):
        b, t, hh, ww, cm = f.shape
        mid = max(c // 4, 1)
        out = {}
        for name in ("gamma", "beta"):
            s = nn.Conv(
                mid,
                (3, 3),
                padding="SAME",
                kernel_init=_p(_kaiming, ("kernel", None, "conv_in", "mlp")),
                bias_init=_p(_zeros, ("mlp",)),
                name=f"{name}_spatial",
            )(f.reshape(b * t, hh, ww, cm)).reshape(b, t, hh, ww, mid)  # per frame 3x3 conv
            kernel = self.param(f"{name}_temporal_kernel", _p(_zeros, ("kernel", "mlp", "embed")), (3, mid, c))
            bias = self.param(f"{name}_temporal_bias", _p(_zeros, ("embed",)), (c,))
            out[name] = temporal_conv_replicate(
                s, kernel.astype(s.dtype), bias.astype(s.dtype)
            )  # [B,T,H,W,C]
        g = _num_groups(c, self.num_groups)
        scale = self.param("norm_scale", _p(nn.initializers.ones_init(), ("embed",)), (c,))
        shift = self.param("norm_bias", _p(_zeros, ("embed",)), (c,))
        normed = jaxzoo.group_norm(h, g, scale, shift, eps=1e-5, reduce_axes=(-3, -2))  # per frame, over H, W
        return adanorm_fuse(h, normed, out["gamma"], out["beta"])

    def _cross_attention(self, h, f, c):
        # DECISION (the paper does not say which motion patches a token sees): each token attends to the
        # motion patches of its own latent frame, [B*T', H'*W'] queries to [B*T', H'*W'] keys/values.
        b, t, hh, ww, cm = f.shape
        n = c // self.head_dim if c % self.head_dim == 0 and c >= self.head_dim else 1
        d = c // n
        xavier = lambda n_in: flat_init(nn.initializers.xavier_uniform(), n_in)
        q = jaxzoo.DenseGeneral(
            (n, d), ("embed", "heads", "head_dim"), kernel_init=xavier(1), name="q_linear"
        )(h.reshape(b * t, hh * ww, c))  # [BT, S, N, D]
        kv = jaxzoo.DenseGeneral(
            (2, n, d), ("out", None, "heads", "head_dim"), kernel_init=xavier(1), name="kv_linear"
        )(f.reshape(b * t, hh * ww, cm))  # [BT, S, 2, N, D]
        o = jaxzoo.dot_product_attention(q, kv[:, :, 0], kv[:, :, 1], scale=d**-0.5)  # [BT, S, N, D]
        o = jaxzoo.DenseGeneral(
            (c,), ("heads", "head_dim", "embed"), n_in=2, kernel_init=_zeros, name="proj"
        )(o)
        return o.reshape(b, t, hh, ww, c)


# ----------------------------------------------------------------------------- extractor
class ResnetBlock(nn.Module):
    """x + conv3x3(ReLU(BN(conv3x3(ReLU(BN(x)))))) on [N, H, W, C] (Tora's `ResnetBlock`, identity skip)."""

    config: TrajectoryExtractorConfig
    train: bool = False  # BatchNorm on batch statistics (updating "batch_stats") instead of running ones

    @nn.compact
    def __call__(self, x):
        cfg, train = self.config, self.train
        c = x.shape[-1]
        z = x
        for i in (1, 2):
            z = nn.BatchNorm(
                use_running_average=not train,
                momentum=cfg.bn_momentum,
                epsilon=cfg.bn_eps,
                scale_init=_p(nn.initializers.ones_init(), ("embed",)),
                bias_init=_p(_zeros, ("embed",)),
                name=f"bn{i}",
            )(z)
            z = nn.relu(z)
            z = nn.Conv(
                c,
                (3, 3),
                padding="SAME",
                # Megatron-style: conv1 splits its outputs over "mlp", conv2 its inputs.
                kernel_init=_p(
                    _kaiming,
                    ("kernel", None, "conv_in", "mlp") if i == 1 else ("kernel", None, "mlp", "conv_out"),
                ),
                bias_init=_p(_zeros, ("mlp",) if i == 1 else ("conv_out",)),
                name=f"conv{i}",
            )(z)
        return x + z


class TrajectoryExtractor(nn.Module):
    """flow RGB [B, T, H, W, 3] in [-1, 1] -> `num_levels` motion features [B, T', H', W', channels].

    T' = ceil(T / temporal_factor) latent frames, H' = H / spatial_factor, W' likewise. With `train` the
    BatchNorm layers use (and update, in the mutable "batch_stats" collection) batch statistics.
    """

    config: TrajectoryExtractorConfig = TrajectoryExtractorConfig()

    @nn.compact
    def __call__(self, flow_rgb: jax.Array, train: bool = False) -> list[jax.Array]:
        cfg = self.config
        check_flow_rgb(cfg, flow_rgb)
        z = flow_rgb.astype(jnp.float32)
        if cfg.motion_vae is not None:
            from tora.vae import VAE3D  # part 1's causal 3-D VAE

            # The posterior mean of the frozen motion VAE (deterministic; Tora samples it).
            z, _ = VAE3D(config=cfg.motion_vae, name="motion_vae").encode(z)  # [B, T', H/fs, W/fs, latent]
            z = jax.lax.stop_gradient(z)
        b, t, h, w, _ = z.shape
        z = pixel_unshuffle(z.reshape(b * t, h, w, -1), cfg.unshuffle)  # [BT', H', W', 4 r^2]
        z = nn.Conv(
            cfg.channels,
            (3, 3),
            padding="SAME",
            kernel_init=_p(_kaiming, ("kernel", None, "conv_in", "embed")),
            bias_init=_p(_zeros, ("embed",)),
            name="conv_in",
        )(z)
        feats = []
        for i in range(cfg.num_levels):  # f_i = Level_i(f_{i-1}), each level residual: f_{i-1} + Conv_i(...)
            for j in range(cfg.num_res_blocks):
                z = ResnetBlock(cfg, train, name=f"level_{i}_block_{j}")(z)
            feats.append(z.reshape(b, t, *z.shape[1:]))
        return feats


def check_flow_rgb(cfg: TrajectoryExtractorConfig, flow_rgb) -> None:
    """ValueError with a sentence when flow RGB cannot go through the extractor (shapes; values in [-1, 1]
    when concrete)."""
    if flow_rgb.ndim != 5 or flow_rgb.shape[-1] != 3:
        raise ValueError(
            f"the trajectory extractor expects flow RGB of shape [B, T, H, W, 3]; got {tuple(flow_rgb.shape)}."
        )
    _, _, h, w, _ = flow_rgb.shape
    s = cfg.spatial_factor
    if h % s or w % s:
        raise ValueError(
            f"flow RGB height and width must be multiples of {s} (motion VAE x unshuffle); got H={h}, W={w}."
        )
    if not isinstance(flow_rgb, jax.core.Tracer):
        v = np.asarray(flow_rgb)
        if v.size and (not np.all(np.isfinite(v)) or v.min() < -1 - 1e-6 or v.max() > 1 + 1e-6):
            raise ValueError(
                "flow RGB must lie in [-1, 1] (tora.flow_to_rgb's output, Tora's /255*2-1); got values in "
                f"[{v.min()}, {v.max()}]. Map uint8 images with x / 255 * 2 - 1."
            )
