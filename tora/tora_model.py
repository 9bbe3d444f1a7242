"""The Tora model: an ST-DiT with a Trajectory Extractor and Motion-guidance Fusers (arXiv 2407.21705).

`Tora(cfg).apply(variables, x, t, y, flow_rgb, ...)` runs the extractor on flow RGB [B, F, H, W, 3] and
hands its per-block features to part 1's `STDiT` (whose blocks call `MotionGuidanceFuser`). Parameters:
{"stdit": <the ST-DiT tree plus */motion_fuser>, "extractor": {...}}; the extractor's BatchNorm statistics
are in the "batch_stats" collection. Because every fuser is zero-initialised, a fresh Tora model with a
base ST-DiT's parameters copied in (`load_base_params`) computes exactly what the base model computes.

Training follows the paper: only the extractor and fusers learn by default ("adapter-like", `trainable`),
stage 1 on dense flow, stage 2 on sparse trajectories sampled from it (`motion_condition`,
`make_tora_loss_fn`). Sampling (`make_tora_sampler`) feeds the motion condition into both the conditional and the unconditional CFG pass,
so guidance acts on the text only, as in the released code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from tora import ops
from tora.config import TRAINABLE, FlowConfig, ToraConfig
from tora.flow import training_inputs
from tora.motion import TrajectoryExtractor, check_flow_rgb
from tora.sample import make_sampler
from tora.stdit import STDiT
from tora.trajectory import flow_to_rgb, sample_sparse_tracks, splat_and_blur

__all__ = [
    "ToraConfig",
    "Tora",
    "load_base_params",
    "motion_features",
    "trainable_mask",
    "freeze",
    "motion_condition",
    "make_tora_loss_fn",
    "make_tora_sampler",
]

def check_tora_inputs(cfg: ToraConfig, x, flow_rgb) -> None:
    """ValueError with a sentence when the flow RGB does not cover the latent grid of x (shapes only)."""
    if flow_rgb is None:
        return
    check_flow_rgb(cfg.extractor, flow_rgb)
    if x.ndim != 5:
        raise ValueError(f"Tora expects latents x of shape [B, T, H, W, C]; got shape {tuple(x.shape)}.")
    e, s = cfg.extractor, cfg.stdit
    b, f, h, w, _ = flow_rgb.shape
    grid = (-(-f // e.temporal_factor), h // e.spatial_factor, w // e.spatial_factor)
    want = (x.shape[1], -(-x.shape[2] // s.patch_size[1]), -(-x.shape[3] // s.patch_size[2]))
    if b != x.shape[0] or grid != want:
        raise ValueError(
            f"flow RGB {tuple(flow_rgb.shape)} gives batch {b} and a motion grid (T', H', W') = {grid}, but the "
            f"latents {tuple(x.shape)} need batch {x.shape[0]} and a token grid {want}."
        )


class Tora(nn.Module):
    """x [B, T, H, W, C], t [B] in [0, 1], y [B, Ly, Dy], flow_rgb [B, F, H*, W*, 3] or None -> v like x.

    With flow_rgb None the motion path is skipped and Tora is its base ST-DiT.

    Tora fine-tunes a trained base: Open-Sora's temporal blocks start with zero output projections, so on
    a freshly initialised backbone the fusers in temporal blocks (and the extractor) get exactly zero
    gradient. Load the base first (`load_base_params(params, tora.load_opensora(path))` or a base trained
    here); `tora.train` warns when it sees an untrained backbone (`untrained_base_warning`).
    """

    config: ToraConfig

    @nn.compact
    def __call__(
        self, x, t, y, flow_rgb=None, y_mask=None, fps=None, x_mask=None, y_drop=None, train=False, *,
        height=None, width=None, num_frames=None,
    ):
        check_tora_inputs(self.config, x, flow_rgb)
        motion = None
        if flow_rgb is not None:
            motion = TrajectoryExtractor(self.config.extractor, name="extractor")(flow_rgb, train)
        return STDiT(self.config.stdit, name="stdit")(
            x, t, y, y_mask, fps, x_mask, motion, y_drop, height=height, width=width, num_frames=num_frames
        )


def untrained_base_warning(cfg: ToraConfig, params: Any) -> str | None:
    """A sentence when Tora's motion modules would get exactly zero gradient from these parameters, else None.

    Open-Sora zero-initialises the output projections (attn.proj) of its temporal blocks, so on a fresh,
    untrained backbone every fuser placed in a temporal block (the default) multiplies into a zero matrix:
    fusers and extractor receive zero gradient while the step still reports a loss. Tora fine-tunes a trained
    base: load one first (`load_base_params`, `tora.load_opensora`).
    """
    s = cfg.stdit
    if s.motion_position != "temporal" or cfg.trainable != "motion":
        return None
    flat = traverse_util.flatten_dict(nn.meta.unbox(params))
    projs = [v for k, v in flat.items() if "attn" in k and "proj" in k and "kernel" in k
             and any(str(p).startswith("temporal_block") for p in k)]
    if projs and all(not isinstance(v, jax.core.Tracer) and not bool(jnp.any(v != 0)) for v in projs):
        return (
            "every temporal block's attn.proj is zero (a freshly initialised backbone), so Tora's motion modules "
            "get exactly zero gradient; Tora fine-tunes a trained base: load one with tora.load_base_params or "
            "tora.load_opensora first."
        )
    return None


def motion_features(cfg: ToraConfig, variables: Any, flow_rgb: jax.Array) -> list[jax.Array]:
    """The extractor of a Tora model alone, in inference mode: flow RGB -> `depth` features."""
    ext = {"params": variables["params"]["extractor"]}
    if "batch_stats" in variables:
        ext["batch_stats"] = variables["batch_stats"]["extractor"]
    return TrajectoryExtractor(cfg.extractor).apply(ext, flow_rgb, False)


def load_base_params(tora_params: Any, base_params: Any) -> Any:
    """Tora parameters with every ST-DiT leaf replaced by the base model's (fusers and extractor kept)."""
    flat = traverse_util.flatten_dict(nn.meta.unbox(tora_params))
    base = traverse_util.flatten_dict(nn.meta.unbox(base_params))
    missing = [k for k in base if ("stdit", *k) not in flat]
    if missing:
        raise ValueError(f"the base parameters have {'/'.join(missing[0])}, which the Tora model lacks.")
    for k, v in base.items():
        if flat[("stdit", *k)].shape != v.shape:
            raise ValueError(
                f"base parameter {'/'.join(k)} has shape {v.shape}; the Tora model expects "
                f"{flat[('stdit', *k)].shape}."
            )
        flat[("stdit", *k)] = v
    return traverse_util.unflatten_dict(flat)


def trainable_mask(params: Any, trainable: str = "motion") -> Any:
    """A tree of bools like `params`: True where the parameter trains.

    "motion": extractor and fusers; "motion+temporal": also the temporal blocks; "all": everything. The
    motion VAE (extractor/motion_vae) never trains (the paper fine-tunes it separately, then freezes it).
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}; got {trainable!r}.")

    def rule(path, _):
        keys = [getattr(p, "key", str(p)) for p in path]
        if "motion_vae" in keys:
            return False
        if trainable == "all" or "extractor" in keys or "motion_fuser" in keys:
            return True
        if trainable == "motion+temporal":
            return any(k.startswith("temporal_block") for k in keys)
        return False

    return jax.tree_util.tree_map_with_path(rule, params)


def freeze(tx: optax.GradientTransformation, trainable: str = "motion") -> optax.GradientTransformation:
    """``tx`` on the trainable parameters (``trainable_mask``), zero updates and no state for the frozen ones.

    An ``optax.multi_transform``: the frozen backbone holds no Adam moments and no EMA copy (at XL that is
    three copies of 1.1B parameters saved), the global-norm clip inside ``tx`` measures the trainable
    gradients only, and weight decay touches only trainable weights. ``jaxzoo.plan_state`` shards the
    moments of the trainable parameters like their parameters.
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}; got {trainable!r}.")

    def labels(params):
        return jax.tree.map(lambda keep: "train" if keep else "frozen", trainable_mask(params, trainable))

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def motion_condition(
    rng: jax.Array, dense_flow: jax.Array, cfg: ToraConfig, stage
) -> tuple[jax.Array, jax.Array]:
    """The training condition from dense flow [B, F, H, W, 2]: (flow RGB [B, F, H, W, 3], flow [B, F, H, W, 2]).

    Stage 1: the dense flow itself. Stage 2: `sample_sparse_tracks` (1..max_tracks weighted grid points
    propagated through the flow), splatted and blurred as at inference (border `cfg.blur_padding`). Each
    clip is coloured with its own maximum norm (`flow_to_rgb` per clip), or each group of `cfg.color_chunk`
    frames with its own with `cfg.color_norm="chunk"`. `stage` is 1, 2, or an int array [B] of them (traced: one
    compiled step serves both stages). Jittable.
    """
    if isinstance(stage, int) and stage not in (1, 2):
        raise ValueError(f"stage must be 1 (dense flow) or 2 (sparse trajectories); got {stage}.")
    if dense_flow.ndim != 5 or dense_flow.shape[-1] != 2:
        raise ValueError(f"dense_flow must have shape [B, F, H, W, 2]; got {tuple(dense_flow.shape)}.")
    b, f, h, w, _ = dense_flow.shape
    if isinstance(stage, int) and stage == 1:
        flow = dense_flow
    else:

        def one(key, fl):
            tracks, mask = sample_sparse_tracks(key, fl, max_tracks=cfg.max_tracks, stride=cfg.track_stride)
            return splat_and_blur(tracks, mask, f, h, w, sigma=cfg.sigma, kernel_size=cfg.kernel_size,
                                  padding=cfg.blur_padding)

        sparse = jax.vmap(one)(jax.random.split(rng, b), dense_flow)
        if isinstance(stage, int):
            flow = sparse
        else:
            two = jnp.broadcast_to(jnp.asarray(stage), (b,)) == 2
            flow = jnp.where(two[:, None, None, None, None], sparse, dense_flow)
    return jax.vmap(functools.partial(flow_to_rgb, chunk=cfg.color_chunk_frames))(flow), flow


def make_tora_loss_fn(
    model: Tora, flow_cfg: FlowConfig = FlowConfig(), *, stage: int | None = None
) -> Callable:
    """`loss_fn(params, extra, batch, rng) -> (loss, (metrics, new_extra))` for
    `jaxzoo.make_train_step(..., has_extra=True)`; extra = {"batch_stats": the extractor's BN statistics}.

    batch: {"x": latents [B, T, H, W, C], "y": [B, Ly, Dy], "flow": dense flow [B, F, H*, W*, 2], optional
    "y_mask", and "stage" [B] (1 or 2) when `stage` is None, so one compiled step serves both stages}. Part 1's rectified-flow inputs (`tora.flow.training_inputs`: logit-normal t, optional shift,
    target v = x0 - noise); the caption is dropped to the null caption with probability
    flow_cfg.caption_dropout, the motion condition (stage 1 dense, stage 2 sparse) is never dropped.
    Frozen parameters (`trainable_mask`) sit behind `stop_gradient`, so the reported `grad_norm` is the
    norm of the trainable gradient.
    """
    if stage not in (None, 1, 2):
        raise ValueError(
            f"stage must be 1 (dense flow), 2 (sparse trajectories) or None (from the batch); got {stage}."
        )
    vae_f = model.config.stdit.vae_spatial_factor

    def loss_fn(params, extra, batch, rng):
        # frozen parameters get exactly zero gradient, so the step's grad_norm measures what trains
        keep = trainable_mask(params, model.config.trainable)
        params = jax.tree.map(lambda p, k: p if k else jax.lax.stop_gradient(p), params, keep)
        x0 = batch["x"]
        k_in, k_drop, k_cond = jax.random.split(rng, 3)
        geom = {k: batch[k] for k in ("height", "width", "num_frames") if batch.get(k) is not None}
        x_t, t, target = training_inputs(x0, k_in, flow_cfg, None, vae_f, **geom)
        drop = jax.random.bernoulli(k_drop, flow_cfg.caption_dropout, (x0.shape[0],))
        rgb, _ = motion_condition(
            k_cond, batch["flow"], model.config, batch["stage"] if stage is None else stage
        )
        v, upd = model.apply(
            {"params": params, "batch_stats": extra["batch_stats"]},
            x_t,
            t,
            batch["y"],
            rgb,
            batch.get("y_mask"),
            y_drop=drop,
            train=True,
            mutable=["batch_stats"],
            **geom,
        )
        loss = ops.masked_frame_mse(v, target)
        return loss, ({"t_mean": t.mean()}, {**extra, "batch_stats": upd["batch_stats"]})

    return loss_fn


def make_tora_sampler(model: Tora, flow_cfg: FlowConfig = FlowConfig()) -> Callable:
    """`sample(variables, rng, y, flow_rgb, y_mask=None, *, num_frames, height, width, num_steps=None,
    guidance_scale=None) -> latents [B, T, H, W, C]`.

    The extractor runs once in inference mode; its features go to part 1's Euler sampler
    (`tora.sample.make_sampler`), which feeds them into both the conditional and the unconditional CFG
    pass (guidance acts on the text only, as in the released code). flow_rgb None samples the base model.
    """
    base = make_sampler(STDiT(model.config.stdit), flow_cfg)

    def sample(variables, rng, y, flow_rgb=None, y_mask=None, **kwargs):
        motion = None
        missing = [k for k in ("num_frames", "height", "width") if k not in kwargs]
        if missing:
            raise ValueError(
                f"the Tora sampler needs the latent size as keywords num_frames, height and width; {missing} "
                "missing."
            )
        if flow_rgb is not None:
            probe = jnp.zeros((y.shape[0], kwargs["num_frames"], kwargs["height"], kwargs["width"], 1))
            check_tora_inputs(model.config, probe, flow_rgb)
            motion = _motion_jit(model.config, variables, flow_rgb)
        return base(variables["params"]["stdit"], rng, y, y_mask, motion=motion, **kwargs)

    return sample


@functools.partial(jax.jit, static_argnums=0)
def _motion_jit(cfg, variables, flow_rgb):
    return motion_features(cfg, variables, flow_rgb)
