"""Frozen configs for the Tora backbone (Open-Sora 1.2 STDiT3), rectified flow and the 3D causal VAE."""

from __future__ import annotations

import dataclasses

_FUSERS = (None, "channel", "cross_attention", "adanorm")


@dataclasses.dataclass(frozen=True)
class STDiTConfig:
    """STDiT3 (Open-Sora 1.2) dimensions. Field names follow Open-Sora's `STDiT3Config`."""

    in_channels: int = 4  # latent channels C of x [B, T, H, W, C]
    caption_channels: int = 4096  # width Dy of the text-encoder features y [B, Ly, Dy] (T5-XXL: 4096)
    model_max_length: int = 300  # rows of the learned null caption; captions may be at most this long
    hidden_size: int = 1152  # token width
    depth: int = 28  # number of (spatial, temporal) block pairs
    num_heads: int = 16  # attention heads; hidden_size must be a multiple
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (pt, ph, pw) of the 3D patch embedding
    mlp_ratio: float = 4.0  # MLP hidden = mlp_ratio * hidden_size (GELU tanh)
    pred_sigma: bool = True  # Open-Sora predicts 2C channels; only the first C (the velocity) are returned
    qk_norm: bool = True  # RMSNorm (float32, learned weight) on queries and keys of self-attention
    input_sq_size: int = 512  # reference side length in pixels of the 2D position-embedding scale
    vae_spatial_factor: int = 8  # pixels per latent cell; turns latent H, W into Open-Sora's height, width
    timestep_scale: float = 1000.0  # t in [0, 1] is embedded as t * 1000, as Open-Sora's t in [0, 1000]
    default_fps: float = 24.0  # fps used when the caller passes none (Open-Sora uses 120 for images)
    rope_theta: float = 10000.0  # RoPE base of the temporal attention
    dtype: str = "float32"  # compute dtype ("float32" or "bfloat16"); parameters stay float32
    remat: bool = False  # rematerialise each block pair in the backward pass (saves activation memory)
    scan: bool = False  # nn.scan over depth: one compiled block pair, parameters stacked on a "layers" axis
    shard_sequence: bool = (
        False  # shard tokens' H' axis over logical "seq" (map it: extend_rules(("seq", "model")))
    )
    motion_fuser: str | None = None  # Tora motion hook: None, "channel", "cross_attention" or "adanorm"
    motion_channels: int = 0  # width of the motion features handed to each block
    motion_position: str = "temporal"  # block kind whose self-attention input gets the motion features

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size must be a multiple of num_heads; got hidden_size={self.hidden_size}, "
                f"num_heads={self.num_heads}."
            )
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim; got head_dim={self.head_dim}.")
        if self.hidden_size % 4:
            raise ValueError(
                f"the 2D sin-cos position embedding needs hidden_size divisible by 4; got {self.hidden_size}."
            )
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive ints (pt, ph, pw); got {self.patch_size}.")
        if min(self.in_channels, self.caption_channels, self.depth, self.model_max_length) < 1:
            raise ValueError(
                "in_channels, caption_channels, depth and model_max_length must be positive; got "
                f"{self.in_channels}, {self.caption_channels}, {self.depth}, {self.model_max_length}."
            )
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16'; got {self.dtype!r}.")
        if self.motion_fuser not in _FUSERS:
            raise ValueError(f"motion_fuser must be one of {_FUSERS}; got {self.motion_fuser!r}.")
        if self.motion_fuser is not None and self.motion_channels < 1:
            raise ValueError(
                f"motion_fuser={self.motion_fuser!r} needs motion_channels >= 1; got {self.motion_channels}."
            )
        if self.motion_position not in ("temporal", "spatial"):
            raise ValueError(
                f"motion_position must be 'temporal' or 'spatial'; got {self.motion_position!r}."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.pred_sigma else self.in_channels

    @classmethod
    def xl(cls, **overrides) -> STDiTConfig:
        """STDiT3-XL/2 as released (`hpcai-tech/OpenSora-STDiT-v3`, about 1.1B parameters)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> STDiTConfig:
        """A CPU-sized model for tests and examples (2 block pairs of width 32)."""
        base = dict(
            in_channels=4,
            caption_channels=16,
            model_max_length=8,
            hidden_size=32,
            depth=2,
            num_heads=2,
            pred_sigma=False,
        )
        base.update(overrides)
        return cls(**base)


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Open-Sora 1.2 rectified flow (`opensora/schedulers/rf`)."""

    sample_method: str = "logit-normal"  # training t: "logit-normal" (sigmoid of N(0,1)) or "uniform"
    use_timestep_transform: bool = True  # the resolution- and length-dependent shift of t
    base_resolution: int = 512 * 512  # pixels of the unshifted reference resolution
    transform_scale: float = 1.0  # extra factor on the shift ratio
    caption_dropout: float = 0.1  # probability of replacing the caption by the learned null caption
    num_sampling_steps: int = 30  # Euler steps (Open-Sora's inference config; the class default is 10)
    guidance_scale: float = 7.0  # classifier-free guidance scale (inference config; class default 4.0)

    def __post_init__(self):
        if self.sample_method not in ("logit-normal", "uniform"):
            raise ValueError(
                f"sample_method must be 'logit-normal' or 'uniform'; got {self.sample_method!r}."
            )
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1); got {self.caption_dropout}.")
        if self.num_sampling_steps < 1:
            raise ValueError(f"num_sampling_steps must be >= 1; got {self.num_sampling_steps}.")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0; got {self.guidance_scale}.")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """A compact Magvit-v2 style causal 3D VAE (Open-Sora's `VAE_Temporal_SD` generalised to space too).

    Levels marked in `spatial_downsample` halve H and W, levels marked in `temporal_downsample` halve T
    with a causal strided convolution. As in Open-Sora, T is zero-padded at the front to a multiple of the
    temporal factor (17 frames -> 20 -> 5 latent frames) and the padding is cut off after decoding, so
    latent frame j depends only on (padded) input frames < (j + 1) * temporal_factor.
    """

    in_channels: int = 3  # pixel channels (RGB; Tora's motion VAE also takes flow images as RGB)
    latent_channels: int = 4  # channels of the latent z
    filters: int = 128  # width of the first level
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)  # width of each level as a multiple of `filters`
    num_res_blocks: int = 2  # residual blocks per level
    spatial_downsample: tuple[bool, ...] = (True, True, True, False)  # levels that halve H and W (x8 total)
    temporal_downsample: tuple[bool, ...] = (False, True, True, False)  # levels that halve T (x4 total)
    num_groups: int = 32  # GroupNorm groups (clipped to the channel count)
    kl_weight: float = 1e-6  # weight of the KL term in the loss
    dtype: str = "float32"  # compute dtype

    def __post_init__(self):
        n = len(self.channel_multipliers)
        if len(self.spatial_downsample) != n or len(self.temporal_downsample) != n:
            raise ValueError(
                "spatial_downsample and temporal_downsample need one entry per level "
                f"({n}); got {len(self.spatial_downsample)} and {len(self.temporal_downsample)}."
            )
        if min(self.in_channels, self.latent_channels, self.filters, self.num_res_blocks + 1) < 1:
            raise ValueError("in_channels, latent_channels and filters must be positive.")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16'; got {self.dtype!r}.")

    @property
    def spatial_factor(self) -> int:
        return 2 ** sum(self.spatial_downsample)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @classmethod
    def tiny(cls, **overrides) -> VAEConfig:
        """Two levels of width 8: x2 in time, x4 in space."""
        base = dict(
            filters=8,
            channel_multipliers=(1, 2),
            num_res_blocks=1,
            spatial_downsample=(True, True),
            temporal_downsample=(True, False),
            num_groups=4,
        )
        base.update(overrides)
        return cls(**base)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Open-Sora 1.2 optimiser settings."""

    learning_rate: float = 1e-4  # AdamW learning rate
    adam_eps: float = 1e-15  # AdamW epsilon
    weight_decay: float = 0.0  # AdamW weight decay
    b1: float = 0.9  # AdamW beta1
    b2: float = 0.999  # AdamW beta2
    grad_clip: float = 1.0  # global-norm gradient clip
    warmup_steps: int = 1000  # linear warm-up of the learning rate (Open-Sora uses 1000)
    ema_decay: float = 0.99  # EMA of the weights kept in TrainState.extra["ema"]

    def __post_init__(self):
        if self.learning_rate <= 0 or self.grad_clip <= 0:
            raise ValueError("learning_rate and grad_clip must be positive.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay}.")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0; got {self.warmup_steps}.")
