"""Frozen configs of tora: the ST-DiT backbone (Open-Sora 1.2 STDiT3), rectified flow, the causal 3D VAE,
the text stand-in, the trajectory extractor, the Tora model, and the training run (`RunConfig`).

Every class is a `jaxzoo.Config`: `cfg.to_json()` / `Cls.from_json(s)` round-trip, `cfg.save(dir)`, and
`help(Cls)` lists each field with its meaning.
"""

from __future__ import annotations

import dataclasses

import jaxzoo

FUSERS = (None, "channel", "cross_attention", "adanorm")
REMAT_POLICIES = ("none", "block", "dots")
TRAINABLE = ("motion", "motion+temporal", "all")


def _check_precision(name: str, precision: jaxzoo.Precision) -> None:
    if precision.compute_dtype not in ("float32", "bfloat16"):
        raise ValueError(
            f"{name}.precision.compute_dtype must be 'float32' or 'bfloat16'; got {precision.compute_dtype!r}."
        )
    if precision.param_dtype != "float32":
        raise ValueError(f"{name} keeps its parameters in float32; got param_dtype={precision.param_dtype!r}.")


@dataclasses.dataclass(frozen=True)
class STDiTConfig(jaxzoo.Config):
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
    qk_norm: bool = True  # RMSNorm (float32, learned scale) on queries and keys of self-attention
    input_sq_size: int = 512  # reference side length in pixels of the 2D position-embedding scale
    vae_spatial_factor: int = 8  # pixels per latent cell; turns latent H, W into Open-Sora's height, width
    timestep_scale: float = 1000.0  # t in [0, 1] is embedded as t * 1000, as Open-Sora's t in [0, 1000]
    default_fps: float = 24.0  # fps of a video when the caller passes none (Open-Sora's inference default)
    image_fps: float = 120.0  # fps of a single frame when the caller passes none (Open-Sora's IMG_FPS)
    train_null_caption: bool = False  # False: the null caption y_embedding is fixed (Open-Sora's buffer);
    # True: it learns like any other parameter
    rope_theta: float = 10000.0  # RoPE base of the temporal attention
    final_t0_on_modulated: bool = True  # final layer on conditioning frames (x_mask False): True modulates
    # the already t-modulated x again with the t=0 shift/scale, as Open-Sora 1.2's T2IFinalLayer does;
    # False modulates the block output's norm with the t=0 shift/scale instead
    precision: jaxzoo.Precision = jaxzoo.Precision()  # compute dtype float32 or bfloat16; params stay float32
    remat: str = "block"  # activation rematerialisation in the backward pass (REMAT_POLICIES): "none" keeps
    # every activation, "block" recomputes each block (pair with scan) from its input, "dots" keeps the
    # outputs of the weight matmuls and recomputes the rest (attention, norms, GELU). Default "block": the
    # longest clips fit (benchmarks/tora_step.py's memory table); True / False mean "block" / "none"
    scan: bool = False  # nn.scan over depth: one compiled block pair, parameters stacked on a "layers" axis
    shard_sequence: bool = False  # shard tokens' H' axis (logical "length") over "model" (see `rules`); with
    # a "model" mesh axis, set it for long clips (benchmarks/tora_step.py: ~7x less memory per device on 8)
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
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        if min(self.in_channels, self.caption_channels, self.depth, self.model_max_length) < 1:
            raise ValueError(
                "in_channels, caption_channels, depth and model_max_length must be positive; got "
                f"{self.in_channels}, {self.caption_channels}, {self.depth}, {self.model_max_length}."
            )
        _check_precision("STDiTConfig", self.precision)
        if isinstance(self.remat, bool):
            object.__setattr__(self, "remat", "block" if self.remat else "none")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {REMAT_POLICIES} (or a bool); got {self.remat!r}.")
        if self.motion_fuser not in FUSERS:
            raise ValueError(f"motion_fuser must be one of {FUSERS}; got {self.motion_fuser!r}.")
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

    @property
    def rules(self) -> jaxzoo.sharding.Rules:
        """Logical-axis rules: jaxzoo's defaults, plus "length" -> "model" with `shard_sequence`."""
        if self.shard_sequence:
            return jaxzoo.extend_rules(("length", "model"))
        return jaxzoo.DEFAULT_RULES

    @classmethod
    def xl(cls, **overrides) -> STDiTConfig:
        """STDiT3-XL/2 as released (`hpcai-tech/OpenSora-STDiT-v3`, about 1.1B parameters)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> STDiTConfig:
        """A CPU-sized model for tests and examples (2 block pairs of width 32, no remat: memory is no
        concern at this size and recomputation only costs time)."""
        base = dict(
            remat="none",
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
class FlowConfig(jaxzoo.Config):
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
class VAEConfig(jaxzoo.Config):
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
    precision: jaxzoo.Precision = jaxzoo.Precision()  # compute dtype float32 or bfloat16; params stay float32

    def __post_init__(self):
        for name in ("channel_multipliers", "spatial_downsample", "temporal_downsample"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        n = len(self.channel_multipliers)
        if len(self.spatial_downsample) != n or len(self.temporal_downsample) != n:
            raise ValueError(
                "spatial_downsample and temporal_downsample need one entry per level "
                f"({n}); got {len(self.spatial_downsample)} and {len(self.temporal_downsample)}."
            )
        if min(self.in_channels, self.latent_channels, self.filters, self.num_res_blocks + 1) < 1:
            raise ValueError("in_channels, latent_channels and filters must be positive.")
        _check_precision("VAEConfig", self.precision)

    @property
    def spatial_factor(self) -> int:
        return 2 ** sum(self.spatial_downsample)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def rules(self) -> jaxzoo.sharding.Rules:
        return jaxzoo.DEFAULT_RULES

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
class TextConfig(jaxzoo.Config):
    """The network-free text stand-in (`tora.text.TokenTextEncoder`): hashed words -> one attention layer."""

    vocab_size: int = 1024  # token ids in [0, vocab_size); id 0 is padding
    max_length: int = 16  # longest caption in tokens
    width: int = 64  # feature width Dy (set STDiTConfig.caption_channels to this)
    num_heads: int = 4  # heads of the one self-attention layer

    def __post_init__(self):
        if self.vocab_size < 2 or self.max_length < 1 or self.width % self.num_heads:
            raise ValueError(
                "TextConfig needs vocab_size >= 2, max_length >= 1 and width divisible by num_heads; got "
                f"{self.vocab_size}, {self.max_length}, {self.width}, {self.num_heads}."
            )

    @classmethod
    def tiny(cls, **overrides) -> TextConfig:
        """64 words, 6 tokens, width 16, 2 heads."""
        return cls(**{**dict(vocab_size=64, max_length=6, width=16, num_heads=2), **overrides})


@dataclasses.dataclass(frozen=True)
class TrajectoryExtractorConfig(jaxzoo.Config):
    """Tora's Trajectory Extractor (`TrajExtractor` in the released code)."""

    motion_vae: VAEConfig | None = VAEConfig()  # the motion VAE (Open-Sora VAE architecture, frozen);
    # None feeds the flow RGB directly (pixel-space models, e.g. the CPU example)
    unshuffle: int = 2  # pixel-unshuffle factor per latent frame; must equal the DiT's spatial patch size
    channels: int = 128  # width of the features f_i (the fuser's motion_channels)
    num_levels: int = 28  # chained levels, one per DiT block pair (STDiT3-XL: depth 28)
    num_res_blocks: int = 2  # residual blocks per level (nums_rb)
    bn_momentum: float = 0.9  # BatchNorm running-average decay (torch's momentum 0.1)
    bn_eps: float = 1e-5  # BatchNorm epsilon (torch default)

    def __post_init__(self):
        if min(self.unshuffle, self.channels, self.num_levels, self.num_res_blocks) < 1:
            raise ValueError(
                "unshuffle, channels, num_levels and num_res_blocks must be positive; got "
                f"{self.unshuffle}, {self.channels}, {self.num_levels}, {self.num_res_blocks}."
            )
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1); got {self.bn_momentum}.")

    @property
    def spatial_factor(self) -> int:
        """Pixels per motion token side: motion-VAE factor x unshuffle."""
        vae = 1 if self.motion_vae is None else self.motion_vae.spatial_factor
        return vae * self.unshuffle

    @property
    def temporal_factor(self) -> int:
        return 1 if self.motion_vae is None else self.motion_vae.temporal_factor

    @classmethod
    def tiny(cls, **overrides) -> TrajectoryExtractorConfig:
        """Pixel space (no motion VAE), 16 channels, 2 levels of one residual block."""
        return cls(**{**dict(motion_vae=None, channels=16, num_levels=2, num_res_blocks=1), **overrides})


@dataclasses.dataclass(frozen=True)
class ToraConfig(jaxzoo.Config):
    """A Tora model: the ST-DiT (with its motion hook set), the extractor, and what trains."""

    stdit: STDiTConfig = STDiTConfig(motion_fuser="adanorm", motion_channels=128)  # backbone + fuser kind
    extractor: TrajectoryExtractorConfig = TrajectoryExtractorConfig()  # motion VAE + TE levels
    trainable: str = "motion"  # "motion": extractor + fusers (released code, "adapter-like");
    # "motion+temporal": also the temporal blocks (the paper's text); "all": everything but the motion VAE
    sigma: float = 10.0  # Gaussian blur of sparse trajectory maps (pixels); paper: 10 at 256+ px
    kernel_size: int = 99  # blur kernel size (odd); paper: 99
    max_tracks: int = 16  # stage 2: up to this many sparse tracks per clip (N ~ U{1..max_tracks})
    track_stride: int = 32  # stage 2: grid stride of candidate track starts (pixels)
    blur_padding: str = "zero"  # border of the trajectory blur: "zero" (Tora's training code, conv2d
    # padding="same"; the default: what a model sees in training) or "reflect" (its inference code,
    # cv2.filter2D's BORDER_REFLECT_101)
    color_norm: str = "clip"  # flow colouring: "clip" divides by the clip's largest flow norm (Tora's
    # inference code and the default: keeps relative speed along the clip); "chunk" by each group of
    # color_chunk frames' own maximum (its training code, a side effect of batching RAFT)
    color_chunk: int = 2  # frames per group with color_norm="chunk" (Tora: max(B T // 20, 1) = 2 at 49 frames)

    def __post_init__(self):
        s, e = self.stdit, self.extractor
        if s.motion_fuser is None:
            raise ValueError(
                "a Tora model needs stdit.motion_fuser set to 'channel', 'cross_attention' or 'adanorm'."
            )
        if s.motion_channels != e.channels:
            raise ValueError(
                f"stdit.motion_channels ({s.motion_channels}) must equal the extractor's channels ({e.channels})."
            )
        if e.num_levels != s.depth:
            raise ValueError(
                f"the extractor needs one level per block pair: num_levels={e.num_levels}, depth={s.depth}."
            )
        if s.patch_size[1] != e.unshuffle or s.patch_size[2] != e.unshuffle or s.patch_size[0] != 1:
            raise ValueError(
                f"the extractor's unshuffle ({e.unshuffle}) must equal the ST-DiT's spatial patch size and the "
                f"temporal patch must be 1; got patch_size={s.patch_size}."
            )
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}; got {self.trainable!r}.")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}.")
        if self.max_tracks < 1 or self.track_stride < 1 or self.sigma <= 0:
            raise ValueError("max_tracks, track_stride and sigma must be positive.")
        if self.blur_padding not in ("zero", "reflect"):
            raise ValueError(f"blur_padding must be 'zero' or 'reflect'; got {self.blur_padding!r}.")
        if self.color_norm not in ("clip", "chunk") or self.color_chunk < 1:
            raise ValueError(
                f"color_norm must be 'clip' or 'chunk' and color_chunk >= 1; got {self.color_norm!r}, "
                f"{self.color_chunk}."
            )

    @property
    def color_chunk_frames(self) -> int | None:
        """The `chunk` argument of `tora.flow_to_rgb` for this config: None per clip, else color_chunk."""
        return self.color_chunk if self.color_norm == "chunk" else None

    @property
    def rules(self) -> jaxzoo.sharding.Rules:
        return self.stdit.rules

    @classmethod
    def tiny(cls, fuser: str = "adanorm", **overrides) -> ToraConfig:
        """CPU-sized: a 2-pair ST-DiT of width 32 on pixel-space video (no VAEs), 16 motion channels."""
        stdit = STDiTConfig.tiny(in_channels=3, vae_spatial_factor=1, motion_fuser=fuser, motion_channels=16)
        ext = TrajectoryExtractorConfig.tiny()
        base = dict(stdit=stdit, extractor=ext, sigma=1.5, kernel_size=7, max_tracks=4, track_stride=4)
        base.update(overrides)
        return cls(**base)


# Open-Sora 1.2's optimiser: AdamW lr 1e-4, eps 1e-15, no weight decay, global-norm clip 1.0, a linear
# warm-up of 1000 steps then a constant rate, and an EMA of the weights with decay 0.99.
OPENSORA_OPTIMIZER = jaxzoo.OptimizerConfig(
    algorithm="adamw",
    learning_rate=1e-4,
    b1=0.9,
    b2=0.999,
    eps=1e-15,
    weight_decay=0.0,
    schedule="constant",
    warmup_steps=1000,
    grad_clip=1.0,
    ema_decay=0.99,
)


@dataclasses.dataclass(frozen=True)
class RunConfig(jaxzoo.Config):
    """A training run: the model (an ST-DiT, a Tora model or the VAE), its loss settings and the optimizer.

    `recipe()` rebuilds model, init function, optimizer and rules from this config alone, so
    `jaxzoo.rebuild(workdir)` works on a folder written by `tora.train(..., workdir=...)`.
    """

    model: STDiTConfig | ToraConfig | VAEConfig = STDiTConfig()  # what trains (rectified flow, Tora or VAE)
    flow: FlowConfig = FlowConfig()  # rectified-flow loss settings (ST-DiT and Tora runs)
    optimizer: jaxzoo.OptimizerConfig = OPENSORA_OPTIMIZER  # Open-Sora 1.2 AdamW + clip + warm-up + EMA
    steps: int = 20000  # optimisation steps of the run (the schedule's length)
    batch_size: int = 8  # clips per step
    seed: int = 0  # PRNG seed of the initialisation and the training noise
    stage: int | None = None  # Tora only: 1 dense flow, 2 sparse tracks, None: read batch["stage"]

    def __post_init__(self):
        if not isinstance(self.model, STDiTConfig | ToraConfig | VAEConfig):
            raise ValueError(f"RunConfig.model must be an STDiTConfig, ToraConfig or VAEConfig; got {self.model!r}.")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1; got {self.steps}, {self.batch_size}.")
        if self.stage not in (None, 1, 2):
            raise ValueError(f"stage must be 1, 2 or None; got {self.stage!r}.")

    @property
    def rules(self) -> jaxzoo.sharding.Rules:
        return self.model.rules

    def recipe(self) -> jaxzoo.Recipe:
        """Model, init function, optimizer, rules and extra collections of this run (see `tora.train`)."""
        from tora.train import recipe

        return recipe(self)

    @classmethod
    def tiny(cls, model: STDiTConfig | ToraConfig | VAEConfig | None = None, **overrides) -> RunConfig:
        """A CPU-sized run: `STDiTConfig.tiny(depth=1)`, 10 steps of 4 clips, Open-Sora's optimizer with
        lr 1e-3 and no warm-up."""
        opt = OPENSORA_OPTIMIZER.replace(learning_rate=1e-3, warmup_steps=0)
        base = dict(model=model or STDiTConfig.tiny(depth=1), optimizer=opt, steps=10, batch_size=4)
        base.update(overrides)
        return cls(**base)
