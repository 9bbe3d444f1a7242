"""STDiT3 (Open-Sora 1.2) in Flax Linen: interleaved spatial and temporal DiT blocks with adaLN-single.

`STDiT(cfg).apply(variables, x, t, y, y_mask, fps, x_mask, motion)` maps noisy latents x [B, T, H, W, C],
timesteps t [B] in [0, 1] and caption features y [B, Ly, Dy] to the velocity v = x0 - noise, shaped like x.
Inside, tokens keep the layout [B, T', H', W', hidden] (T', H', W' = the patch grid), so spatial attention
runs over (H', W') per frame and temporal attention over T' per patch. The maths is in `tora.ops`.

Parameter tree (Python loop over depth): x_embedder, t_embedder, fps_embedder, t_block, y_embedder,
spatial_blocks_{i}, temporal_blocks_{i}, final_layer. With `cfg.scan` the pairs are stacked under
`blocks/{spatial_block,temporal_block}` with a leading "layers" axis.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxzoo
from jaxzoo.nn import DenseGeneral, flat_init
from tora import ops
from tora.config import STDiTConfig

_xavier = nn.initializers.xavier_uniform
_zeros = nn.initializers.zeros_init()
_std02 = nn.initializers.normal(0.02)


def _p(init, names):
    return nn.with_logical_partitioning(init, names)


def _dtype(cfg: STDiTConfig):
    return cfg.precision.compute


def _dense(features, names, name, dtype, kernel_init=None, bias_names=None):
    """Linear with Open-Sora's xavier-uniform kernel, zero bias and logical axis names (in, out)."""
    return nn.Dense(
        features,
        kernel_init=_p(kernel_init or _xavier(), names),
        bias_init=_p(_zeros, bias_names or (names[-1],)),
        dtype=dtype,
        name=name,
    )


def Linear(features, names, n_in: int = 1, zero: bool = False, dtype=jnp.float32, name=None):  # noqa: N802
    """y = x W + b contracting the last `n_in` axes of x; W [*in_shape, *features] with logical `names`.

    jaxzoo's DenseGeneral (the kernel created at its full shape, so logical names fit it), initialised
    xavier-uniform over the flattened (fan_in, fan_out) as torch's Linear with Open-Sora's init; `zero`
    gives zeros.
    """
    init = _zeros if zero else flat_init(_xavier(), n_in)
    return DenseGeneral(tuple(features), tuple(names), n_in=n_in, kernel_init=init, dtype=dtype, name=name)


class SelfAttention(nn.Module):
    """Open-Sora `Attention`: fused qkv with bias, QK RMSNorm, RoPE over frames when temporal, then proj.

    x: [B, T', H', W', C] -> same. Spatial: attention among the H' * W' patches of each frame. Temporal:
    attention among the T' frames of each patch, with interleaved RoPE at positions 0..T'-1 applied after
    the QK-norm (Open-Sora 1.2 with qk_norm_legacy=False).
    """

    config: STDiTConfig
    temporal: bool = False

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        b, t, h, w, c = x.shape
        n, d = cfg.num_heads, cfg.head_dim
        dtype = _dtype(cfg)
        qkv = Linear((3, n, d), ("embed", None, "heads", "head_dim"), dtype=dtype, name="qkv")(
            x.reshape(b, t, h * w, c)
        )  # [B, T, S, 3, N, D]
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]  # [B, T, S, N, D]
        if cfg.qk_norm:
            # LlamaRMSNorm over head_dim (eps 1e-6, float32), as Open-Sora's QK-norm
            q = jaxzoo.RMSNorm(1e-6, axis_name="head_dim", name="q_norm")(q)
            k = jaxzoo.RMSNorm(1e-6, axis_name="head_dim", name="k_norm")(k)
        if self.temporal:
            pos = jnp.arange(t)
            # interleaved RoPE over T: [B, S, T, N, D] layout inside
            rot = lambda a: jaxzoo.rope(
                a.transpose(0, 2, 1, 3, 4), pos, cfg.rope_theta, mode="interleaved"
            ).transpose(0, 2, 1, 3, 4)
            q, k = rot(q), rot(k)
            o = ops.temporal_attention(q, k, v)
        else:
            o = ops.spatial_attention(q, k, v)
        o = Linear(
            (c,), ("heads", "head_dim", "embed"), n_in=2, zero=self.temporal, dtype=dtype, name="proj"
        )(o)  # [B, T, S, C]
        return o.reshape(b, t, h, w, c)


class CrossAttention(nn.Module):
    """Open-Sora `MultiHeadCrossAttention`: every video token attends to the caption tokens (key mask).

    x: [B, T', H', W', C], y: [B, Ly, C], y_mask: [B, Ly] bool -> [B, T', H', W', C]. No norm, no RoPE.
    """

    config: STDiTConfig
    zero_proj: bool = False

    @nn.compact
    def __call__(self, x, y, y_mask):
        cfg = self.config
        b, t, h, w, c = x.shape
        n, d = cfg.num_heads, cfg.head_dim
        dtype = _dtype(cfg)
        q = Linear((n, d), ("embed", "heads", "head_dim"), dtype=dtype, name="q_linear")(
            x.reshape(b, t * h * w, c)
        )  # [B, L, N, D]
        kv = Linear((2, n, d), ("embed", None, "heads", "head_dim"), dtype=dtype, name="kv_linear")(
            y
        )  # [B, Ly, 2, N, D]
        o = jaxzoo.dot_product_attention(q, kv[:, :, 0], kv[:, :, 1], mask=y_mask)  # [B, L, N, D]
        o = Linear(
            (c,), ("heads", "head_dim", "embed"), n_in=2, zero=self.zero_proj, dtype=dtype, name="proj"
        )(o)
        return o.reshape(b, t, h, w, c)


class Mlp(nn.Module):
    """fc1 -> GELU (tanh) -> fc2."""

    config: STDiTConfig
    zero_fc2: bool = False

    @nn.compact
    def __call__(self, x):
        cfg, dtype = self.config, _dtype(self.config)
        x = _dense(cfg.mlp_dim, ("embed", "mlp"), "fc1", dtype)(x)
        x = nn.gelu(x, approximate=True)
        return _dense(cfg.hidden_size, ("mlp", "embed"), "fc2", dtype, _zeros if self.zero_fc2 else None)(x)


class STDiTBlock(nn.Module):
    """`STDiT3Block`: adaLN-modulated self-attention (spatial or temporal), cross-attention, MLP.

    x: [B, T', H', W', C]; t_mlp, t0_mlp: [B, 6C] (t0_mlp = the t=0 modulation, used on frames where
    x_mask [B, T'] is False); y: [B, Ly, C]; y_mask: [B, Ly]; motion: None or [B, T', H', W', Cm].
    Temporal blocks start with zeroed attn.proj, cross_attn.proj and mlp.fc2 weights, so they are the
    identity at init (Open-Sora's `initialize_weights`).
    """

    config: STDiTConfig
    temporal: bool = False

    @nn.compact
    def __call__(self, x, y, y_mask, t_mlp, t0_mlp=None, x_mask=None, motion=None):
        cfg = self.config
        b, c = x.shape[0], cfg.hidden_size
        table = self.param(
            "scale_shift_table", _p(lambda k, s: jax.random.normal(k, s) / c**0.5, (None, "embed")), (6, c)
        )

        def mods(tm):  # [B, 6C] -> six [B, 1, 1, 1, C]
            m = (table[None] + tm.reshape(b, 6, c)).astype(x.dtype)
            return [m[:, i, None, None, None, :] for i in range(6)]

        sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp = mods(t_mlp)
        z = mods(t0_mlp) if x_mask is not None else (sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp)

        xn = jaxzoo.layer_norm(x, eps=1e-6)
        x_m = ops.frame_select(x_mask, ops.modulate(xn, sh_msa, sc_msa), ops.modulate(xn, z[0], z[1]))
        if (
            cfg.motion_fuser is not None
            and motion is not None
            and self.temporal == (cfg.motion_position == "temporal")
        ):
            # Tora's motion-guidance fuser. DECISION (tora.md section 4 marks the place as a guess): on the
            # adaLN-modulated norm1 output, after the conditioning-frame selection, just before this block's
            # self-attention, as the released CogVideoX port does.
            from tora.motion import MotionGuidanceFuser

            x_m = MotionGuidanceFuser(cfg.motion_fuser, hidden_size=c, name="motion_fuser")(x_m, motion)
        x_m = SelfAttention(cfg, temporal=self.temporal, name="attn")(x_m)
        x = x + ops.frame_select(x_mask, g_msa * x_m, z[2] * x_m)

        x = x + CrossAttention(cfg, zero_proj=self.temporal, name="cross_attn")(x, y, y_mask)

        xn = jaxzoo.layer_norm(x, eps=1e-6)
        x_m = ops.frame_select(x_mask, ops.modulate(xn, sh_mlp, sc_mlp), ops.modulate(xn, z[3], z[4]))
        x_m = Mlp(cfg, zero_fc2=self.temporal, name="mlp")(x_m)
        return x + ops.frame_select(x_mask, g_mlp * x_m, z[5] * x_m)


class SpatialBlock(STDiTBlock):
    """STDiT3 block with self-attention among the patches of each frame."""

    temporal: bool = False


class TemporalBlock(STDiTBlock):
    """STDiT3 block with self-attention among the frames of each patch (RoPE over frames)."""

    temporal: bool = True


class BlockPair(nn.Module):
    """One spatial block then one temporal block; the unit `nn.scan` repeats over depth."""

    config: STDiTConfig

    @nn.compact
    def __call__(self, x, y, y_mask, t_mlp, t0_mlp, x_mask, motion):
        x = _block(self.config, SpatialBlock, "spatial_block")(x, y, y_mask, t_mlp, t0_mlp, x_mask, motion)
        x = _block(self.config, TemporalBlock, "temporal_block")(x, y, y_mask, t_mlp, t0_mlp, x_mask, motion)
        return x, None


def remat(cls, policy: str):
    """`cls` wrapped for the backward pass by `STDiTConfig.remat`: "none" as is, "block" recomputed from its
    input (`nn.remat`), "dots" keeping the weight-matmul outputs (`dots_with_no_batch_dims_saveable`: the
    attention scores and everything elementwise are recomputed)."""
    if policy == "none":
        return cls
    if policy == "dots":
        return nn.remat(cls, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    return nn.remat(cls)


def _block(cfg, cls, name):
    if not cfg.scan:
        cls = remat(cls, cfg.remat)
    return cls(cfg, name=name)


class TimestepEmbedder(nn.Module):
    """Sinusoid(256) -> Linear -> SiLU -> Linear. Used for t (scaled to [0, 1000]) and for fps."""

    config: STDiTConfig
    zero_last: bool = False
    freq_dim: int = 256

    @nn.compact
    def __call__(self, s):  # s: [B] -> [B, C]
        c = self.config.hidden_size
        h = ops.timestep_embedding(s, self.freq_dim)
        h = _dense(c, (None, "embed"), "fc1", jnp.float32, _std02 if self.zero_last else None)(h)
        h = nn.silu(h)
        return _dense(c, ("embed", None), "fc2", jnp.float32, _zeros if self.zero_last else None)(h)


class CaptionEmbedder(nn.Module):
    """Open-Sora `CaptionEmbedder`: MLP Dy -> C -> C (GELU tanh) over text-encoder features, with a null
    caption `y_embedding` [model_max_length, Dy] that replaces y where `drop` [B] is True (CFG).

    The null caption is a random constant as in Open-Sora (a buffer there; a parameter here, so checkpoints
    carry it, behind `stop_gradient`); `cfg.train_null_caption=True` lets it learn instead."""

    config: STDiTConfig

    @nn.compact
    def __call__(self, y, drop=None):  # y: [B, Ly, Dy] -> [B, Ly, C]
        cfg, dtype = self.config, _dtype(self.config)
        null = self.param(
            "y_embedding",
            _p(lambda k, s: jax.random.normal(k, s) / s[1] ** 0.5, (None, "out")),
            (cfg.model_max_length, cfg.caption_channels),
        )
        if not cfg.train_null_caption:  # Open-Sora registers y_embedding as a buffer: it never trains
            null = jax.lax.stop_gradient(null)
        if drop is not None:
            y = jnp.where(drop[:, None, None], null[None, : y.shape[1]].astype(y.dtype), y)
        h = _dense(cfg.hidden_size, ("out", "mlp"), "fc1", dtype)(y)
        h = nn.gelu(h, approximate=True)
        return _dense(cfg.hidden_size, ("mlp", "embed"), "fc2", dtype)(h)


class FinalLayer(nn.Module):
    """`T2IFinalLayer`: LN, modulate with (table(2, C) + t), Linear to patch * out_channels.

    On conditioning frames (x_mask False) Open-Sora 1.2 computes the t=0 branch from the already-modulated
    x (`x = t2i_modulate(norm_final(x), shift, scale)`, then `x_zero = t2i_modulate(norm_final(x),
    shift_zero, scale_zero)`: it reuses the name x). `cfg.final_t0_on_modulated=True` (default) does the
    same, so released weights give Open-Sora's outputs; False modulates norm_final(x) of the block output
    for both branches (what the masked-frame path presumably intends). Noised frames are the same either way.
    """

    config: STDiTConfig

    @nn.compact
    def __call__(self, x, t_emb, t0_emb=None, x_mask=None):  # x [B, T', H', W', C] -> [B, T', H', W', P]
        cfg = self.config
        c = cfg.hidden_size
        table = self.param(
            "scale_shift_table", _p(lambda k, s: jax.random.normal(k, s) / c**0.5, (None, "embed")), (2, c)
        )

        def mods(te):
            m = (table[None] + te[:, None]).astype(x.dtype)  # [B, 2, C]
            return m[:, 0, None, None, None], m[:, 1, None, None, None]

        xn = jaxzoo.layer_norm(x, eps=1e-6)
        shift, scale = mods(t_emb)
        out = ops.modulate(xn, shift, scale)
        if x_mask is not None:
            src = jaxzoo.layer_norm(out, eps=1e-6) if cfg.final_t0_on_modulated else xn
            out = ops.frame_select(x_mask, out, ops.modulate(src, *mods(t0_emb)))
        p = int(np.prod(cfg.patch_size)) * cfg.out_channels
        return _dense(p, ("embed", None), "linear", _dtype(cfg))(out)


def _concrete(a):
    """numpy value of `a`, or None while tracing (value checks then run in the caller before jit)."""
    if a is None or isinstance(a, jax.core.Tracer):
        return None
    return np.asarray(a)


def check_inputs(
    cfg: STDiTConfig, x, t, y, y_mask=None, fps=None, x_mask=None, motion=None, y_drop=None, height=None,
    width=None, num_frames=None,
) -> None:
    """Raise ValueError with a sentence for inputs STDiT cannot take. Shapes always; values (t in [0, 1], a
    caption mask with a real token per row) when they are concrete, so it runs before tracing."""
    if x.ndim != 5:
        raise ValueError(f"STDiT expects latents x of shape [B, T, H, W, C]; got shape {tuple(x.shape)}.")
    b, t_len, h, w, c = x.shape
    if min(t_len, h, w) < 1:
        raise ValueError(
            f"STDiT needs at least one frame and one latent pixel (num_frames >= 1, H, W >= 1); got (T, H, W) = "
            f"{(t_len, h, w)}, which the {cfg.patch_size} patch cannot cover even after padding."
        )
    if c != cfg.in_channels:
        raise ValueError(f"x has {c} channels but the config expects in_channels={cfg.in_channels}.")
    if tuple(jnp.shape(t)) != (b,):
        raise ValueError(f"t must have shape [B] = ({b},); got {tuple(jnp.shape(t))}.")
    tv = _concrete(t)
    if tv is not None and tv.size and (not np.all(np.isfinite(tv)) or tv.min() < 0 or tv.max() > 1):
        raise ValueError(
            f"timesteps t must lie in [0, 1] (1 = pure noise; Open-Sora's 0-1000 units divided by 1000); got "
            f"values in [{tv.min()}, {tv.max()}]."
        )
    if y.ndim != 3 or y.shape[0] != b or y.shape[2] != cfg.caption_channels:
        raise ValueError(
            f"y must have shape [B, Ly, caption_channels] = ({b}, Ly, {cfg.caption_channels}); got {tuple(y.shape)}."
        )
    if y.shape[1] > cfg.model_max_length:
        raise ValueError(
            f"the caption has {y.shape[1]} tokens, more than model_max_length={cfg.model_max_length}."
        )
    if y_mask is not None:
        if tuple(y_mask.shape) != tuple(y.shape[:2]):
            raise ValueError(
                f"the caption mask y_mask must have shape [B, Ly] = {tuple(y.shape[:2])} to match the caption "
                f"y; got {tuple(y_mask.shape)}."
            )
        mv = _concrete(y_mask)
        if mv is not None and not np.all(mv.astype(bool).any(axis=1)):
            rows = np.flatnonzero(~mv.astype(bool).any(axis=1)).tolist()
            raise ValueError(
                f"the caption mask y_mask must mark at least one real token per clip; rows {rows} are all False "
                "(pass the null caption with y_drop instead of an empty caption)."
            )
    if y_drop is not None and tuple(jnp.shape(y_drop)) != (b,):
        raise ValueError(f"y_drop must have shape [B] = ({b},), one flag per clip; got {tuple(jnp.shape(y_drop))}.")
    if fps is not None and jnp.ndim(fps) > 0 and tuple(jnp.shape(fps)) != (b,):
        raise ValueError(f"fps must be a scalar or have shape [B] = ({b},); got {tuple(jnp.shape(fps))}.")
    for name, v in (("height", height), ("width", width), ("num_frames", num_frames)):
        if v is not None and jnp.ndim(v) > 0 and tuple(jnp.shape(v)) != (b,):
            raise ValueError(f"{name} must be a scalar or have shape [B] = ({b},); got {tuple(jnp.shape(v))}.")
        cv = _concrete(v)
        if cv is not None and cv.size and cv.min() < 1:
            raise ValueError(f"{name} (pixels / frames of the clip) must be >= 1; got {cv.min()}.")
    if x_mask is not None:
        if tuple(x_mask.shape) != (b, t_len):
            raise ValueError(
                f"the frame mask x_mask must have shape [B, T] = ({b}, {t_len}), one entry per latent frame; "
                f"got {tuple(x_mask.shape)}."
            )
        if cfg.patch_size[0] != 1:
            raise ValueError(
                f"a frame mask needs a temporal patch size of 1; got patch_size={cfg.patch_size}."
            )
    if motion is not None:
        if len(motion) != cfg.depth:
            raise ValueError(
                f"motion must hold one entry per block pair (depth={cfg.depth}); got {len(motion)}."
            )
        if cfg.motion_fuser is None and any(m is not None for m in motion):
            raise ValueError(
                "motion features were given but this ST-DiT has no motion fuser (motion_fuser=None); they "
                "would be ignored. Set motion_fuser and motion_channels, or pass motion=None."
            )
        for i, m in enumerate(motion):
            if m is not None and (jnp.ndim(m) != 5 or m.shape[-1] != cfg.motion_channels):
                raise ValueError(
                    f"motion[{i}] must have shape [B, T', H', W', motion_channels={cfg.motion_channels}]; got "
                    f"{tuple(jnp.shape(m))}."
                )


class STDiT(nn.Module):
    """STDiT3: x [B, T, H, W, C], t [B] in [0, 1], y [B, Ly, Dy] -> velocity [B, T, H, W, C] (float32).

    y_mask [B, Ly] (True/1 = real token; default all), fps [B] or scalar (default cfg.default_fps),
    x_mask [B, T] bool (False = clean conditioning frame: t=0 modulation, default all True), motion: None
    or `depth` entries of None or [B, T', H', W', motion_channels] (Tora), y_drop [B] bool: replace the
    caption by the null caption (classifier-free guidance).

    Pixel geometry, as Open-Sora's `height`, `width`, `num_frames` model arguments (scalars or [B]; as
    Open-Sora, the first clip's height and width set the position-embedding scale): height and width (pixels)
    default to the latent size times `cfg.vae_spatial_factor`, which differs from Open-Sora at its buckets
    (e.g. 240x426 pixels are 30x54 latents, not 240x432). num_frames (pixel frames) only picks the default
    fps: `cfg.image_fps` (120) for one frame, else `cfg.default_fps`; without it one latent frame counts as
    an image.
    """

    config: STDiTConfig

    @nn.compact
    def __call__(
        self, x, t, y, y_mask=None, fps=None, x_mask=None, motion=None, y_drop=None, *, height=None, width=None,
        num_frames=None,
    ):
        cfg = self.config
        check_inputs(cfg, x, t, y, y_mask, fps, x_mask, motion, y_drop, height, width, num_frames)
        b, t_len, h, w, _ = x.shape
        dtype = _dtype(cfg)

        # === patch embedding + 2D position embedding ===
        tok = ops.patchify(x.astype(dtype), cfg.patch_size)  # [B, T', H', W', pt*ph*pw*C]
        _, tq, hq, wq, _ = tok.shape
        k_in = tok.shape[-1]
        bound = 1.0 / k_in**0.5  # PyTorch Conv3d default init (kaiming_uniform, a=sqrt(5))
        tok = nn.Dense(
            cfg.hidden_size,
            kernel_init=_p(
                lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound), (None, "embed")
            ),
            bias_init=_p(lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound), ("embed",)),
            dtype=dtype,
            name="x_embedder",
        )(tok)  # [B, T', H', W', C]
        first = lambda v, d: d if v is None else (v if jnp.ndim(v) == 0 else v[0])  # Open-Sora's height[0]
        scale, base = ops.pos_embed_scale(
            hq,
            wq,
            height=first(height, h * cfg.vae_spatial_factor),
            width=first(width, w * cfg.vae_spatial_factor),
            input_sq_size=cfg.input_sq_size,
        )
        pos = ops.pos_embed_2d(hq, wq, cfg.hidden_size, scale=scale, base_size=base).reshape(hq, wq, -1)
        tok = tok + jnp.asarray(pos, dtype)

        # === conditioning: t (+ fps) -> adaLN-single; caption ===
        if fps is None:  # Open-Sora: IMG_FPS (120) for a single frame, the video's fps otherwise
            single = (t_len == 1) if num_frames is None else (jnp.asarray(num_frames) == 1)
            fps = jnp.where(single, cfg.image_fps, cfg.default_fps)
        fps = jnp.broadcast_to(jnp.asarray(fps, jnp.float32), (b,))
        t_embedder = TimestepEmbedder(cfg, name="t_embedder")
        fps_emb = TimestepEmbedder(cfg, zero_last=True, name="fps_embedder")(fps)
        t_emb = t_embedder(t.astype(jnp.float32) * cfg.timestep_scale) + fps_emb  # [B, C]
        t_block = _dense(6 * cfg.hidden_size, ("embed", None), "t_block", jnp.float32)
        t_mlp = t_block(nn.silu(t_emb))  # [B, 6C]
        t0_emb = t0_mlp = None
        if x_mask is not None:
            x_mask = x_mask.astype(bool)
            t0_emb = t_embedder(jnp.zeros((b,), jnp.float32)) + fps_emb
            t0_mlp = t_block(nn.silu(t0_emb))
        y_emb = CaptionEmbedder(cfg, name="y_embedder")(y.astype(dtype), y_drop)  # [B, Ly, C]
        y_mask = jnp.ones(y.shape[:2], bool) if y_mask is None else y_mask.astype(bool)

        # === blocks ===
        constrain = lambda a: (
            nn.with_logical_constraint(a, ("batch", None, "length", None, "embed")) if cfg.shard_sequence else a
        )
        tok = constrain(tok)
        if cfg.scan:
            tok = self._scan(tok, y_emb, y_mask, t_mlp, t0_mlp, x_mask, motion)
        else:
            for i in range(cfg.depth):
                m = None if motion is None else motion[i]
                args = (y_emb, y_mask, t_mlp, t0_mlp, x_mask, m)
                tok = constrain(_block(cfg, SpatialBlock, f"spatial_blocks_{i}")(tok, *args))
                tok = constrain(_block(cfg, TemporalBlock, f"temporal_blocks_{i}")(tok, *args))

        # === final layer ===
        out = FinalLayer(cfg, name="final_layer")(tok, t_emb, t0_emb, x_mask)  # [B, T', H', W', P]
        out = ops.unpatchify(out, cfg.patch_size, (t_len, h, w), cfg.out_channels)
        return out[..., : cfg.in_channels].astype(jnp.float32)

    def _scan(self, tok, y_emb, y_mask, t_mlp, t0_mlp, x_mask, motion):
        cfg = self.config
        if motion is not None and any(m is None for m in motion):
            raise ValueError("with cfg.scan=True, motion must be None or have an entry for every block pair.")
        stacked = None if motion is None else jnp.stack(list(motion))
        cls = remat(BlockPair, cfg.remat)
        scanned = nn.scan(
            cls,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast,) * 5 + ((nn.broadcast if stacked is None else 0),),
            length=cfg.depth,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        tok, _ = scanned(cfg, name="blocks")(tok, y_emb, y_mask, t_mlp, t0_mlp, x_mask, stacked)
        return tok
