"""Training of tora's models on jaxzoo's runtime: one `RunConfig`, one state planner, one train step.

`RunConfig.model` picks what trains: an `STDiTConfig` (rectified flow, `tora.flow.make_loss_fn`), a
`ToraConfig` (the two-stage Tora loss with the extractor's BatchNorm statistics in `TrainState.extra`, and
the frozen backbone of `ToraConfig.trainable`) or a `VAEConfig` (L1 + KL). The optimizer is
`jaxzoo.make_optimizer` with Open-Sora 1.2's settings (`tora.config.OPENSORA_OPTIMIZER`: AdamW lr 1e-4,
eps 1e-15, no weight decay, clip 1.0, warm-up then constant, EMA 0.99 of the updated weights kept in the
optimizer state; read it with `jaxzoo.ema_params(state.opt_state)`).

::

    run = tora.RunConfig.tiny()
    state, history = tora.train(run, batch_fn, workdir="runs/a")   # batch_fn(step) -> batch
    again = jaxzoo.rebuild("runs/a")                                 # config + model + state from the folder
"""

from __future__ import annotations

import pathlib
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

import jaxzoo
from tora.config import RunConfig, STDiTConfig, ToraConfig, VAEConfig
from tora.flops import flops_per_example
from tora.flow import make_loss_fn
from tora.motion import TrajectoryExtractor
from tora.stdit import STDiT
from tora.tora_model import Tora, freeze, make_tora_loss_fn, untrained_base_warning
from tora.vae import VAE3D, make_vae_loss_fn

__all__ = ["build_model", "init_state", "make_optimizer", "make_train_step", "recipe", "sample_inputs", "train"]


def build_model(config: STDiTConfig | ToraConfig | VAEConfig) -> nn.Module:
    """The Linen module of a model config: `STDiT`, `Tora` or `VAE3D`."""
    if isinstance(config, ToraConfig):
        return Tora(config=config)
    if isinstance(config, STDiTConfig):
        return STDiT(config=config)
    if isinstance(config, VAEConfig):
        return VAE3D(config=config)
    raise ValueError(f"no tora model for a {type(config).__name__}; expected STDiTConfig, ToraConfig or VAEConfig.")


def sample_inputs(config: STDiTConfig | ToraConfig | VAEConfig) -> tuple:
    """The smallest inputs that initialise the model (parameter shapes do not depend on input sizes):
    one frame of one patch, a one-token caption, and for Tora the flow RGB covering that patch."""
    if isinstance(config, VAEConfig):
        f = config.spatial_factor
        return (jnp.zeros((1, config.temporal_factor, f, f, config.in_channels)),)
    s = config.stdit if isinstance(config, ToraConfig) else config
    _, ph, pw = s.patch_size
    x = jnp.zeros((1, 1, ph, pw, s.in_channels))
    t, y = jnp.zeros((1,)), jnp.zeros((1, 1, s.caption_channels))
    if isinstance(config, STDiTConfig):
        return x, t, y
    sf = config.extractor.spatial_factor
    return x, t, y, jnp.zeros((1, 1, sf, sf, 3))


def _extra(config) -> Callable[[jax.Array], Any] | None:
    """Tora: rng -> {"batch_stats": the extractor's BatchNorm statistics}; other models: None."""
    if not isinstance(config, ToraConfig):
        return None
    flow_rgb = sample_inputs(config)[-1]

    def init(rng):
        stats = TrajectoryExtractor(config.extractor).init(rng, flow_rgb)["batch_stats"]
        return {"batch_stats": {"extractor": stats}}

    return init


def make_optimizer(run: RunConfig) -> optax.GradientTransformation:
    """`jaxzoo.make_optimizer(run.optimizer, run.steps)`; for Tora with the frozen parameters of
    `run.model.trainable` given zero updates and no optimizer state (`tora.freeze`)."""
    tx = jaxzoo.make_optimizer(run.optimizer, run.steps)
    if isinstance(run.model, ToraConfig):  # even "all" keeps the motion VAE frozen
        return freeze(tx, run.model.trainable)
    return tx


def recipe(run: RunConfig) -> jaxzoo.Recipe:
    """What `jaxzoo.rebuild` needs: model, init function, optimizer, rules and extra collections."""
    model = build_model(run.model)
    init_fn = jaxzoo.module_init(model, *sample_inputs(run.model))
    return jaxzoo.Recipe(model, init_fn, make_optimizer(run), rules=run.rules, extra=_extra(run.model))


def init_state(
    run: RunConfig,
    rng: jax.Array | None = None,
    *,
    mesh: Mesh | None = None,
    workdir: str | pathlib.Path | None = None,
    zero1: bool = False,
    params: Any = None,
) -> jaxzoo.StatePlan:
    """The training state of `run`, planned by `jaxzoo.plan_state`: parameters sharded by their logical
    names (`run.rules`), optimizer leaves like their parameters, restored from `workdir` if it holds a
    checkpoint. `params`: start from these weights (e.g. `tora.load_base_params` for Tora); rng defaults
    to `jax.random.key(run.seed)`."""
    r = recipe(run)
    rng = jax.random.key(run.seed) if rng is None else rng
    return jaxzoo.plan_state(r.init_fn, r.tx, rng, mesh=mesh, rules=r.rules, params=params, extra=r.extra,
                             workdir=workdir, config=run, zero1=zero1)


def loss_fn(run: RunConfig, model: nn.Module | None = None) -> Callable:
    """The run's loss for `jaxzoo.make_train_step` (Tora's takes and returns `extra`)."""
    model = build_model(run.model) if model is None else model
    if isinstance(run.model, ToraConfig):
        return make_tora_loss_fn(model, run.flow, stage=run.stage)
    if isinstance(run.model, VAEConfig):
        return make_vae_loss_fn(model)
    return make_loss_fn(model, run.flow)


def make_train_step(run: RunConfig, *, mesh: Mesh | None = None, state_sharding: Any = None,
                    donate: bool = True) -> Callable:
    """Jitted `step(state, batch, rng) -> (state, metrics)` of the run (see `jaxzoo.make_train_step`).

    batch: STDiT {"x", "y", optional "y_mask", "x_mask", "fps"}; Tora {"x", "y", "flow", optional "y_mask",
    "stage" when run.stage is None}; VAE {"x"}."""
    return jaxzoo.make_train_step(loss_fn(run), make_optimizer(run), mesh=mesh, state_sharding=state_sharding,
                                  has_extra=isinstance(run.model, ToraConfig), donate=donate, rules=run.rules)


def train(
    run: RunConfig,
    data: Callable[[int], Any] | Iterable[Any],
    *,
    mesh: Mesh | None = None,
    workdir: str | pathlib.Path | None = None,
    params: Any = None,
    zero1: bool = False,
    num_steps: int | None = None,
    rng: jax.Array | None = None,
    log_every: int = 10,
    checkpoint_every: int = 0,
    progress: bool = True,
    desc: str = "train",
    flops_per_step: float | None = None,
) -> tuple[jaxzoo.TrainState, list[dict]]:
    """Train `run.steps` steps on `data` (`step -> batch`, or an iterable) in one call: plan (or restore)
    the state, build the step, `jaxzoo.fit` with `config=run` (so `jaxzoo.rebuild(workdir)` works).
    Returns (state, history); batches are placed over the mesh's "data" axis when a mesh is given.
    num_steps: stop at this step instead of `run.steps` (a later call with the same workdir resumes);
    rng: the key of the training noise (default `fold_in(key(run.seed), 1)`).
    data may be a grain loader over files (`jaxzoo.data.make_loader(jaxzoo.data.ShardedArrays(dir), ...)`,
    pass `iter(loader)`): `jaxzoo.fit` saves its position with the checkpoints, so a resumed run sees the
    batches an uninterrupted one would. flops_per_step: FLOPs of one step for `fit`'s FLOP/s and MFU;
    default `run.batch_size * tora.flops_per_example(run.model, ...)` at the shapes of `data(0)` when data
    is a callable and the model an ST-DiT or Tora (not counted for an iterable, whose first batch would be
    consumed)."""
    plan = init_state(run, mesh=mesh, workdir=workdir, zero1=zero1, params=params)
    if isinstance(run.model, ToraConfig):
        msg = untrained_base_warning(run.model, plan.state.params)
        if msg:
            warnings.warn(msg, stacklevel=2)
    step = make_train_step(run, mesh=mesh, state_sharding=plan.shardings)
    rng = jax.random.fold_in(jax.random.key(run.seed), 1) if rng is None else rng
    num_steps = run.steps if num_steps is None else num_steps
    if flops_per_step is None and callable(data) and not isinstance(run.model, VAEConfig):
        first = data(0)
        flops_per_step = run.batch_size * flops_per_example(run.model, tuple(jnp.shape(first["x"])[1:4]),
                                                            jnp.shape(first["y"])[1])
    # fit places each batch over the mesh (shard_batch) and keeps a grain iterator's state with checkpoints
    return jaxzoo.fit(plan.state, step, data, num_steps=num_steps, rng=rng, workdir=workdir, config=run,
                      mesh=mesh, log_every=log_every, checkpoint_every=checkpoint_every, progress=progress, desc=desc,
                      examples_per_step=run.batch_size, flops_per_step=flops_per_step)
